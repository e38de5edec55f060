"""accuracy_by_level.png, test_time_segments.png and TASK_RESULTS.md, built from tasks.json alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from reasonlab.io import atomic_write_text
from reasonlab.report.comparison import (
    COLORS,
    MATCH_LABELS,
    decision_note,
    interval_name,
    seeds_line,
    verdict_table,
)
from reasonlab.report.markdown import fci, fpct, fsci, table
from reasonlab.report.plots import save_figure


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
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
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
    ax.set_title(f"{result['task']['name']}: exact match by {result['task']['level_name']} "
                 f"(mean over seeds, {result['ci_level']}% CI)")
    save_figure(fig, out / "accuracy_by_level.png")


def plot_segments(result: dict[str, Any], out: Path) -> bool:
    """Exact match against segments run at test time, for the recursive arms; False if there are none."""
    recursive = {arm: data for arm, data in result["arms"].items() if "segments_curve" in data["aggregate"]}
    if not recursive:
        return False
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
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


def _aggregates(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Both arms' means over seeds, A then B: one table column each."""
    return [result["arms"][arm]["aggregate"] for arm in ("a", "b")]


def _level_rows(result: dict[str, Any]) -> list[list[str]]:
    aggs = _aggregates(result)
    return [[level, _split_of(result, level), *(_pct_ci(agg["by_level"][level]) for agg in aggs)]
            for level in _levels(result)]


def _score_rows(result: dict[str, Any]) -> list[list[str]]:
    """Exact match with its interval, then per-token accuracy, on the val and the test split."""
    aggs = _aggregates(result)
    exact = [[f"{split} exact match", *(_pct_ci(agg[split]["exact_match"]) for agg in aggs)]
             for split in ("val", "test")]
    tokens = [[f"{split} per-token accuracy", *(fpct(agg[split]["accuracy"]["mean"]) for agg in aggs)]
              for split in ("val", "test")]
    return exact + tokens


def _difficulty_lines(result: dict[str, Any]) -> list[str]:
    """Exact match by the task's own difficulty, where it differs from the level."""
    a, b = result["arms"]["a"], result["arms"]["b"]
    if "by_difficulty" not in a["aggregate"]:
        return []
    aggs, name = _aggregates(result), result["task"]["difficulty_name"]
    rows = [[key, *(_pct_ci(agg["by_difficulty"][key]) for agg in aggs)]
            for key in sorted(a["aggregate"]["by_difficulty"], key=int)]
    return ["## Exact match by difficulty", "",
            f"The task's own measure of how hard an instance is ({name}), over val and test together.", "",
            table([name, f"A: {a['name']}", f"B: {b['name']}"], rows), ""]


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
            where = f"{ex['split']} split, {result['task']['level_name']} {ex['level']}"
            lines += [f"**{arm.upper()} {data['name']}, {kind}** ({where})", "", "```",
                      "prompt:", ex["prompt"], "", "expected:", ex["answer"], "", "model:", ex["prediction"], "```", ""]
    return lines


def _summary(result: dict[str, Any]) -> str:
    label = MATCH_LABELS[result["match"]]
    winner = result["verdicts"][result["match"]]["winner"]
    if winner:
        return f"**At equal {label}, {result['arms'][winner]['name']} wins on val exact match.**"
    return f"**At equal {label}, the arms are not distinguishable on val exact match at {result['n_seeds']} seeds.**"


def _setup_lines(result: dict[str, Any]) -> list[str]:
    """The task's format, splits and levels, and the budget each arm ran."""
    task, a, b = result["task"], result["arms"]["a"], result["arms"]["b"]
    train_lo, train_hi = task["levels"]["train"]
    test_lo, test_hi = task["levels"]["test"]
    n = task["instances"]
    return [f"- Format: {task['format']}; trained on {task['level_name']} {train_lo}-{train_hi}, "
            f"tested also on {test_lo}-{test_hi}",
            f"- Instances: {n['train']} train, {n['val']} val, {n['test']} test (no instance in two splits)",
            f"- Budget matched on {MATCH_LABELS[result['match']]}: A ran {a['max_steps']} steps "
            f"({fsci(a['flops']['mean'])} FLOPs), B ran {b['max_steps']} steps ({fsci(b['flops']['mean'])} FLOPs), "
            f"{result['n_seeds']} seeds per arm", f"- {seeds_line(result)}"]


def task_markdown(result: dict[str, Any]) -> str:
    task, a, b = result["task"], result["arms"]["a"], result["arms"]["b"]
    lines = [
        f"# Reasoning task: {task['name']}", "", task["description"], "", *_setup_lines(result),
        "", _summary(result), "", "## Verdicts", "",
        "Val exact match (train levels) of each arm at the same budget, interpolated along its eval curve; "
        f"difference B minus A with {interval_name(result)}.{decision_note(result)}", "",
        verdict_table(result), "",
        "## Final scores", "",
        table(["split", f"A: {a['name']}", f"B: {b['name']}"], _score_rows(result)), "",
        f"## Exact match by {task['level_name']}", "",
        table([task["level_name"], "range", f"A: {a['name']}", f"B: {b['name']}"], _level_rows(result)), "",
        *_difficulty_lines(result),
    ]
    segment_lines = _segment_lines(result)
    if segment_lines:
        lines += ["## Test-time segments", "",
                  "Each recursive model run with a fixed number of segments for every token, halting off.", "",
                  *segment_lines]
    lines += ["## Examples", "", *_example_lines(result),
              "Plots: `accuracy_by_level.png`, `test_time_segments.png` (recursive arms), `comparison.png` and "
              "`comparison_compute.png` (exact match against steps, FLOPs and time). "
              "The full head to head: `FINAL_RESULTS.md`."]
    return "\n".join(lines) + "\n"


def write_task_report(result: dict[str, Any], out: Path) -> None:
    plot_by_level(result, out)
    plot_segments(result, out)
    atomic_write_text(out / "TASK_RESULTS.md", task_markdown(result))
