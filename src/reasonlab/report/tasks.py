"""accuracy_by_level.png, test_time_segments.png and TASK_RESULTS.md, built from tasks.json alone
(`results.read_tasks`, any schema)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from reasonlab.experiments.results import Estimate, TaskResult, TaskScores
from reasonlab.io import atomic_write_text
from reasonlab.report.comparison import (
    MATCH_LABELS,
    arm_label,
    color,
    decision_note,
    interval_name,
    many_arm_note,
    many_arm_table,
    many_verdict_text,
    seeds_line,
    verdict_table,
)
from reasonlab.report.markdown import fci, fpct, fsci, table
from reasonlab.report.plots import save_figure


def _levels(result: TaskResult) -> list[str]:
    return sorted(next(iter(result.arms.values())).aggregate.by_level, key=int)


def _split_of(result: TaskResult, level: str) -> str:
    lo, hi = result.task.levels["train"]
    return "train" if lo <= int(level) <= hi else "test"


def _pct_ci(stat: Estimate) -> str:
    """An exact-match mean with its interval, as percentages."""
    return fci(Estimate(*(None if x is None else 100 * x for x in (stat.mean, None, stat.ci_low, stat.ci_high))),
               1) + "%"


def plot_by_level(result: TaskResult, out: Path) -> None:
    levels = _levels(result)
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for key, arm in result.arms.items():
        stats = [arm.aggregate.by_level[level] for level in levels]
        means = [100 * s.mean for s in stats]
        low = [100 * (s.mean - s.ci_low) if s.ci_low is not None else 0 for s in stats]
        high = [100 * (s.ci_high - s.mean) if s.ci_high is not None else 0 for s in stats]
        ax.errorbar([int(x) for x in levels], means, yerr=[low, high], color=color(key), marker="o", capsize=3,
                    label=arm_label(key, arm.name))
    lo, hi = result.task.levels["test"]
    ax.axvspan(lo - 0.5, hi + 0.5, color="grey", alpha=0.12, label="harder than training")
    ax.set_xlabel(result.task.level_name)
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{result.task.name}: exact match by {result.task.level_name} "
                 f"(mean over seeds, {result.ci_level}% CI)")
    save_figure(fig, out / "accuracy_by_level.png")


CURVES = (("segments_curve", "segments run at test time"), ("depth_curve", "inner depth forced at test time"))


def plot_segments(result: TaskResult, out: Path) -> bool:
    """Exact match against segments run at test time and, beside it, against the inner depth forced
    at test time, for the recursive arms; False if there are none."""
    curves = [(curve, label) for curve, label in CURVES
              if any(getattr(arm.aggregate, curve) for arm in result.arms.values())]
    if not curves:
        return False
    fig = Figure(figsize=(8 * len(curves), 4.5))
    for ax, (curve, label) in zip(fig.subplots(1, len(curves), squeeze=False)[0], curves):
        for key, arm in result.arms.items():
            points = getattr(arm.aggregate, curve)
            if not points:
                continue
            ks = sorted(points, key=int)
            for split, style in (("val", "-"), ("test", "--")):
                ax.plot([int(k) for k in ks], [100 * points[k][split].mean for k in ks], style, marker="o",
                        color=color(key), label=f"{arm_label(key, arm.name)} ({split})")
        ax.set_xscale("log", base=2)  # the points double (experiments/tasks.py)
        ax.xaxis.set_major_formatter("{x:g}")
        ax.set_xlabel(label)
        ax.set_ylabel("exact match (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("more thinking at test time than in training")
    save_figure(fig, out / "test_time_segments.png")
    return True


def _aggregates(result: TaskResult) -> list[TaskScores]:
    """Every arm's means over seeds, A, B, ...: one table column each."""
    return [arm.aggregate for arm in result.arms.values()]


def _arm_headers(result: TaskResult) -> list[str]:
    return [arm_label(key, arm.name) for key, arm in result.arms.items()]


def _level_rows(result: TaskResult) -> list[list[str]]:
    aggs = _aggregates(result)
    return [[level, _split_of(result, level), *(_pct_ci(agg.by_level[level]) for agg in aggs)]
            for level in _levels(result)]


def _score_rows(result: TaskResult) -> list[list[str]]:
    """Exact match with its interval, then per-token accuracy, on the val and the test split."""
    aggs = _aggregates(result)
    exact = [[f"{split} exact match", *(_pct_ci(getattr(agg, split)["exact_match"]) for agg in aggs)]
             for split in ("val", "test")]
    tokens = [[f"{split} per-token accuracy", *(fpct(getattr(agg, split)["accuracy"].mean) for agg in aggs)]
              for split in ("val", "test")]
    return exact + tokens


def _difficulty_lines(result: TaskResult) -> list[str]:
    """Exact match by the task's own difficulty, where it differs from the level."""
    aggs, name = _aggregates(result), result.task.difficulty_name
    if aggs[0].by_difficulty is None:
        return []
    rows = [[key, *(_pct_ci(agg.by_difficulty[key]) for agg in aggs)]
            for key in sorted(aggs[0].by_difficulty, key=int)]
    return ["## Exact match by difficulty", "",
            f"The task's own measure of how hard an instance is ({name}), over val and test together.", "",
            table([name, *_arm_headers(result)], rows), ""]


def _curve_lines(result: TaskResult, curve: str, column: str, trained: str) -> list[str]:
    """One table per recursive arm: exact match on val and test at each test-time setting of `curve`."""
    lines: list[str] = []
    for key, arm in result.arms.items():
        points = getattr(arm.aggregate, curve)
        if not points:
            continue
        rows = [[k, _pct_ci(points[k]["val"]), _pct_ci(points[k]["test"])] for k in sorted(points, key=int)]
        lines += [f"**{arm_label(key, arm.name)}** ({trained.format(**vars(arm))})", "",
                  table([column, "val exact match", "test exact match"], rows), ""]
    return lines


def _test_time_lines(result: TaskResult) -> list[str]:
    """The segments and depth curves of the recursive arms, where there are any."""
    lines: list[str] = []
    segments = _curve_lines(result, "segments_curve", "segments", "trained with up to {trained_segments} segments")
    if segments:
        lines += ["## Test-time segments", "",
                  "Each recursive model run with a fixed number of segments for every token, halting off.", "",
                  *segments]
    depth = _curve_lines(result, "depth_curve", "depth", "trained at depth {trained_depth}")
    if depth:
        lines += ["## Test-time depth", "",
                  "Each recursive model run with its inner recursion forced to a fixed depth, segments as trained.",
                  "", *depth]
    return lines


def _example_lines(result: TaskResult) -> list[str]:
    lines: list[str] = []
    for key, arm in result.arms.items():
        for kind in ("solved", "failed"):
            ex = arm.examples.get(kind)
            if ex is None:
                continue
            where = f"{ex.split} split, {result.task.level_name} {ex.level}"
            lines += [f"**{key.upper()} {arm.name}, {kind}** ({where})", "", "```",
                      "prompt:", ex.prompt, "", "expected:", ex.answer, "", "model:", ex.prediction, "```", ""]
    return lines


def _summary(result: TaskResult) -> str:
    label, arms = MATCH_LABELS[result.match], result.arms
    if (pair := result.head_to_head) is None:
        return "\n".join([f"At equal {label}, on val exact match, against the reference "
                          f"{arm_label(result.reference, arms[result.reference].name)}:", "",
                          *(f"- **{arm_label(key, arms[key].name)}**: {many_verdict_text(result, key)}"
                            for key in result.pairs)])
    winner = pair.verdicts[result.match].winner
    if winner:
        return f"**At equal {label}, {result.side(winner).name} wins on val exact match.**"
    return f"**At equal {label}, the arms are not distinguishable on val exact match at {result.n_seeds} seeds.**"


def _setup_lines(result: TaskResult) -> list[str]:
    """The task's format, splits and levels, and the budget each arm ran."""
    task = result.task
    train_lo, train_hi = task.levels["train"]
    test_lo, test_hi = task.levels["test"]
    n = task.instances
    return [f"- Format: {task.format}; trained on {task.level_name} {train_lo}-{train_hi}, "
            f"tested also on {test_lo}-{test_hi}",
            f"- Instances: {n['train']} train, {n['val']} val, {n['test']} test (no instance in two splits)",
            f"- Budget matched on {MATCH_LABELS[result.match]}: "
            + ", ".join(f"{key.upper()} ran {arm.max_steps} steps ({fsci(arm.flops.mean)} FLOPs)"
                        for key, arm in result.arms.items())
            + f", {result.n_seeds} seeds per arm", f"- {seeds_line(result)}"]


def _verdict_lines(result: TaskResult) -> list[str]:
    """The head to head's verdict table, or with more than two arms the one table of every arm."""
    if result.head_to_head is None:
        return [many_arm_note(result), "", many_arm_table(result), ""]
    return ["Val exact match (train levels) of each arm at the same budget, interpolated along its eval curve; "
            f"difference B minus A with {interval_name(result)}.{decision_note(result)}", "",
            verdict_table(result), ""]


def task_markdown(result: TaskResult) -> str:
    task = result.task
    lines = [
        f"# Reasoning task: {task.name}", "", task.description, "", *_setup_lines(result),
        "", _summary(result), "", "## Verdicts", "", *_verdict_lines(result),
        "## Final scores", "",
        table(["split", *_arm_headers(result)], _score_rows(result)), "",
        f"## Exact match by {task.level_name}", "",
        table([task.level_name, "range", *_arm_headers(result)], _level_rows(result)), "",
        *_difficulty_lines(result), *_test_time_lines(result),
    ]
    lines += ["## Examples", "", *_example_lines(result),
              "Plots: `accuracy_by_level.png`, `test_time_segments.png` (recursive arms: segments and depth), "
              "`comparison.png` and `comparison_compute.png` (exact match against steps, FLOPs and time). "
              f"The full {'head to head' if result.head_to_head else 'comparison'}: `FINAL_RESULTS.md`."]
    return "\n".join(lines) + "\n"


def write_task_report(result: TaskResult, out: Path) -> None:
    plot_by_level(result, out)
    plot_segments(result, out)
    atomic_write_text(out / "TASK_RESULTS.md", task_markdown(result))
