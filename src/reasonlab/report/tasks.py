"""accuracy_by_level.png, test_time_segments.png and TASK_RESULTS.md, built from tasks.json alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from reasonlab.io import atomic_write_text  # noqa: E402
from reasonlab.report.comparison import COLORS, MATCH_LABELS, verdict_table  # noqa: E402
from reasonlab.report.markdown import fci, fpct, fsci, table  # noqa: E402
from reasonlab.report.plots import save_figure  # noqa: E402


def _levels(result: dict[str, Any]) -> list[str]:
    return sorted(result["arms"]["a"]["aggregate"]["by_level"], key=int)


def _split_of(result: dict[str, Any], level: str) -> str:
    lo, hi = result["task"]["levels"]["train"]
    return "train" if lo <= int(level) <= hi else "test"


def _pct_ci(stat: dict[str, Any]) -> str:
    """An exact-match mean with its interval, as percentages."""
    scaled = {k: None if stat.get(k) is None else 100 * stat[k] for k in ("mean", "ci_low", "ci_high")}
    return fci(scaled, 1) + "%"


def plot_by_level(result: dict[str, Any], out: Path) -> None:
    levels = _levels(result)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arm, data in result["arms"].items():
        stats = [data["aggregate"]["by_level"][level] for level in levels]
        means = [100 * s["mean"] for s in stats]
        low = [100 * (s["mean"] - s["ci_low"]) if s["ci_low"] is not None else 0 for s in stats]
        high = [100 * (s["ci_high"] - s["mean"]) if s["ci_high"] is not None else 0 for s in stats]
        ax.errorbar([int(x) for x in levels], means, yerr=[low, high], color=COLORS[arm], marker="o", capsize=3,
                    label=f"{arm.upper()}: {data['name']}")
    lo, hi = result["task"]["levels"]["test"]
    ax.axvspan(lo - 0.5, hi + 0.5, color="grey", alpha=0.12, label="harder than training")
    ax.set_xlabel(result["task"]["level_name"])
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{result['task']['name']}: exact match by {result['task']['level_name']} (mean over seeds, {result['ci_level']}% CI)")
    save_figure(fig, out / "accuracy_by_level.png")


def plot_segments(result: dict[str, Any], out: Path) -> bool:
    """Exact match against segments run at test time, for the recursive arms; False if there are none."""
    recursive = {arm: data for arm, data in result["arms"].items() if "segments_curve" in data["aggregate"]}
    if not recursive:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for arm, data in recursive.items():
        curve = data["aggregate"]["segments_curve"]
        ks = sorted(curve, key=int)
        for split, style in (("val", "-"), ("test", "--")):
            ax.plot([int(k) for k in ks], [100 * curve[k][split]["mean"] for k in ks], style, marker="o",
                    color=COLORS[arm], label=f"{arm.upper()}: {data['name']} ({split})")
    ax.set_xlabel("segments run at test time")
    ax.set_ylabel("exact match (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("more thinking at test time than in training")
    save_figure(fig, out / "test_time_segments.png")
    return True


def _level_rows(result: dict[str, Any]) -> list[list[str]]:
    arms = result["arms"]
    return [[level, _split_of(result, level), *(_pct_ci(arms[arm]["aggregate"]["by_level"][level]) for arm in ("a", "b"))]
            for level in _levels(result)]


def _segment_lines(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for arm, data in result["arms"].items():
        curve = data["aggregate"].get("segments_curve")
        if not curve:
            continue
        rows = [[k, _pct_ci(curve[k]["val"]), _pct_ci(curve[k]["test"])] for k in sorted(curve, key=int)]
        lines += [f"**{arm.upper()}: {data['name']}** (trained with up to {data['trained_segments']} segments)", "",
                  table(["segments", "val exact match", "test exact match"], rows), ""]
    return lines


def _example_lines(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for arm, data in result["arms"].items():
        for kind in ("solved", "failed"):
            ex = data["examples"].get(kind)
            if ex is None:
                continue
            lines += [f"**{arm.upper()} {data['name']}, {kind}** ({ex['split']} split, {result['task']['level_name']} {ex['level']})",
                      "", "```", "prompt:", ex["prompt"], "", "expected:", ex["answer"], "", "model:", ex["prediction"], "```", ""]
    return lines


def task_markdown(result: dict[str, Any]) -> str:
    task, arms = result["task"], result["arms"]
    a, b = arms["a"], arms["b"]
    train_lo, train_hi = task["levels"]["train"]
    test_lo, test_hi = task["levels"]["test"]
    label = MATCH_LABELS[result["match"]]
    v = result["verdicts"][result["match"]]
    if v["winner"]:
        summary = f"**At equal {label}, {arms[v['winner']]['name']} wins on val exact match.**"
    else:
        summary = f"**At equal {label}, the arms are not distinguishable on val exact match at {result['n_seeds']} seeds.**"
    n = task["instances"]
    lines = [
        f"# Reasoning task: {task['name']}", "", task["description"], "",
        f"- Format: {task['format']}; trained on {task['level_name']} {train_lo}-{train_hi}, "
        f"tested also on {test_lo}-{test_hi}",
        f"- Instances: {n['train']} train, {n['val']} val, {n['test']} test (no instance in two splits)",
        f"- Budget matched on {label}: A ran {a['max_steps']} steps ({fsci(a['flops']['mean'])} FLOPs), "
        f"B ran {b['max_steps']} steps ({fsci(b['flops']['mean'])} FLOPs), {result['n_seeds']} seeds per arm",
        "", summary, "", "## Verdicts", "",
        "Val exact match (train levels) of each arm at the same budget, interpolated along its eval curve; "
        f"difference B minus A with Welch's {result['ci_level']}% interval.", "",
        verdict_table(result), "",
        "## Final scores", "",
        table(["split", f"A: {a['name']}", f"B: {b['name']}"],
              [[f"{split} exact match", *(_pct_ci(arms[arm]["aggregate"][split]["exact_match"]) for arm in ("a", "b"))]
               for split in ("val", "test")]
              + [[f"{split} per-token accuracy", *(fpct(arms[arm]["aggregate"][split]["accuracy"]["mean"]) for arm in ("a", "b"))]
                 for split in ("val", "test")]), "",
        f"## Exact match by {task['level_name']}", "",
        table([task["level_name"], "range", f"A: {a['name']}", f"B: {b['name']}"], _level_rows(result)), "",
    ]
    if "by_difficulty" in a["aggregate"]:
        keys = sorted(a["aggregate"]["by_difficulty"], key=int)
        lines += ["## Exact match by difficulty", "",
                  f"The task's own measure of how hard an instance is ({task['difficulty_name']}), over val and test together.", "",
                  table([task["difficulty_name"], f"A: {a['name']}", f"B: {b['name']}"],
                        [[key, *(_pct_ci(arms[arm]["aggregate"]["by_difficulty"][key]) for arm in ("a", "b"))] for key in keys]), ""]
    segment_lines = _segment_lines(result)
    if segment_lines:
        lines += ["## Test-time segments", "",
                  "Each recursive model run with a fixed number of segments for every token, halting off.", "", *segment_lines]
    lines += ["## Examples", "", *_example_lines(result),
              "Plots: `accuracy_by_level.png`, `test_time_segments.png` (recursive arms), `comparison.png` and "
              "`comparison_compute.png` (exact match against steps, FLOPs and time). The full head to head: `FINAL_RESULTS.md`."]
    return "\n".join(lines) + "\n"


def write_task_report(result: dict[str, Any], out: Path) -> None:
    plot_by_level(result, out)
    plot_segments(result, out)
    atomic_write_text(out / "TASK_RESULTS.md", task_markdown(result))
