"""comparison.png, comparison_compute.png and FINAL_RESULTS.md, built from comparison.json alone
(`results.read_comparison`, any schema).

Two arms: a head to head, A against B. More: one table of every arm against the reference
(`many_arm_table`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from reasonlab.config import config_from_dict
from reasonlab.experiments.results import (
    Comparison,
    ComparisonArm,
    Difference,
    HeadToHead,
    Judged,
    Reading,
    SpeedRow,
)
from reasonlab.io import atomic_write_text
from reasonlab.registry import arm as registered_arm
from reasonlab.report.markdown import fci, fint, fnum, fpct, fsci, table
from reasonlab.report.plots import save_figure

PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
           "tab:olive", "tab:cyan")
MATCH_LABELS = {"steps": "steps", "flops": "FLOPs", "time": "wall time"}
METRIC_FORMATS = {"accuracy": fpct, "exact match": fpct, "perplexity": lambda x: fnum(x, 2)}  # the rest: fnum
SPEED_ROWS = (("steps_per_s", "speed (steps/s)", lambda x: fnum(x, 2)), ("tokens_per_s", "speed (tokens/s)", fint),
              ("train_time_s", "training time (s)", lambda x: fnum(x, 1)))
VERDICT_ROWS = (("steps", "equal steps", fint), ("flops", "equal FLOPs", fsci),
                ("time", "equal time (s)", lambda x: fnum(x, 1)))
_DECISION_NOTE = ("The matched budget is the decision; the other two are descriptive: each arm is read where every run "
                 "reached, often mid-schedule for one of them (its learning rate not yet decayed), which favours it. "
                 "Equal time is measured in calibrated step times (both arms timed alternately in one process), "
                 "not in the runs' wall clocks.")
_MANY_NOTE = ("The matched budget is the decision; the other two are descriptive: there an arm is read mid-schedule "
              "more often than not (its learning rate not yet decayed), which favours it. Equal time is measured in "
              "calibrated step times (the arms timed alternately in one process), not in the runs' wall clocks.")


def color(arm: str) -> str:
    """An arm's colour in every plot: A blue, B orange, C green, ..."""
    return PALETTE[(ord(arm) - ord("a")) % len(PALETTE)]


def arm_label(arm: str, name: str) -> str:
    return f"{arm.upper()}: {name}"


def _curves(ax: Any, result: Comparison, field: str, x: str, y: str) -> None:
    for key, arm in result.arms.items():
        for run in arm.per_seed.values():
            curve = getattr(run, field)
            ax.plot([e[x] for e in curve], [e[y] for e in curve], color=color(key), alpha=0.25, lw=0.8)
        mean = getattr(arm, field)
        ax.plot([e[x] for e in mean], [e[y] for e in mean], color=color(key), lw=2,
                label=arm_label(key, arm.name), marker="o" if field == "val_history" else None, ms=3)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_comparison(result: Comparison, out: Path) -> None:
    metric = result.metric
    judged_loss = metric.key == "loss"
    last = ("perplexity", "val perplexity") if judged_loss else (metric.key, metric.label)
    fig = Figure(figsize=(12, 8))
    axes = fig.subplots(2, 2)
    for ax, field, key, title in ((axes[0, 0], "train_history", "loss", "train loss"),
                                  (axes[0, 1], "val_history", "loss", "val loss"),
                                  (axes[1, 0], "val_history", "accuracy", "val next-token accuracy"),
                                  (axes[1, 1], "val_history", *last)):
        _curves(ax, result, field, "step", key)
        ax.set_title(title)
        ax.set_xlabel("step")
    if judged_loss:
        axes[1, 1].set_yscale("log")
    fig.suptitle(f"{' vs '.join(arm.upper() for arm in result.arms)}, {result.n_seeds} seeds per arm "
                 "(thin: seeds, thick: mean)")
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.07, top=0.92, wspace=0.16, hspace=0.3)  # fixed: see save_figure
    save_figure(fig, out / "comparison.png", tight=False)

    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 2)
    for ax, x, label in ((axes[0], "flops", "training FLOPs"), (axes[1], "time_s", "training wall time (s)")):
        _curves(ax, result, "val_history", x, metric.key)
        ax.set_xlabel(label)
        ax.set_ylabel(metric.label)
    axes[0].set_xscale("log")
    fig.suptitle(f"{metric.label} against compute")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.88, wspace=0.2)
    save_figure(fig, out / "comparison_compute.png", tight=False)


def _arm_config_lines(stored: dict[str, Any]) -> list[str]:
    cfg = config_from_dict(stored)  # maps the keys and arch names of comparisons written before a rename
    m, t = vars(cfg.model), vars(cfg.train)
    ema = f", EMA of the weights {t['ema_decay']}" if t.get("ema_decay") else ""
    lines = [f"- Architecture: {m['arch']}, d_model {m['d_model']}, {m['n_layers']} layers, {m['n_heads']} heads, "
             f"{m['n_experts']} experts top-{m['top_k']}, d_ff {m['d_ff']}, context {m['seq_len']}",
             f"- Learning rate {t['lr']}, warmup {t['warmup_steps']} steps, dropout {m['dropout']}, "
             f"batch {t['batch_size']}, grad clip {t['grad_clip']}{ema}"]
    if m["arch"] != "baseline":
        lines.append(_recursion_line(cfg))
    return lines


def _recursion_line(cfg: Any) -> str:
    """A recursive arm's own config section (its `describe`) and the segments every recursive arm shares."""
    r, arch = cfg.recursion, cfg.model.arch
    act = f"ACT on, exploration {r.halt_exploration_prob}" if r.use_act else "ACT off"
    carry = ", one segment per optimizer step with the state carried" if r.carry_across_steps else ""
    own = getattr(cfg, registered_arm(arch).section).describe()
    return f"- Recursion ({arch}): {own}; up to {r.max_segments} segments, {act}{carry}"


def margin_text(result: Judged, v: Reading) -> str:
    """A verdict's margin: % of the worse loss, or points of exact match."""
    return f"{fnum(v.margin, 2)}%" if result.metric.lower_is_better else f"{fnum(v.margin, 2)} points"


def _verdict_text(result: Judged, v: Reading) -> str:
    if not v.available:
        return f"not available: {v.reason}"
    if v.role is None:  # a comparison.json written before decisions and descriptive readings were told apart
        return "no significant difference" if v.winner is None else \
            f"{result.side(v.winner).name} wins by {margin_text(result, v)}"
    if v.role == "decision":
        return f"within noise{_power(result, v)}" if v.winner is None else \
            f"{result.side(v.winner).name} wins by {margin_text(result, v)}"
    ahead = "within noise" if v.ahead is None else f"{v.ahead.upper()} ahead by {margin_text(result, v)}"
    return f"{ahead} (descriptive; {_read_at(v)})"


def _power(result: Judged, v: Reading) -> str:
    """What "within noise" could have seen: the smallest difference the seeds detect at 80% power
    (absent from comparisons written before it was recorded, and where the noise was not measured)."""
    if v.detectable is None:
        return ""
    size = fnum(v.detectable) if result.metric.lower_is_better else f"{100 * v.detectable:.1f} points"
    return f"; these seeds detect only differences of {size} or more at 80% power"


def _read_at(v: Reading) -> str:
    """Where each arm's curve was read: the step of its own schedule."""
    return ", ".join(f"{arm.upper()} at step {r.step:.0f} of {r.of}" for arm, r in (v.read_at or {}).items())


def _ahead(better: str | None, advantage_pct: float | None, ci: Difference | None, word: str) -> str:
    """Which arm a table row favours, by how much and with the interval of B minus A; or within noise."""
    by = "" if advantage_pct is None else f" by {fnum(advantage_pct, 1)}%"
    if ci is None:  # a comparison.json written before the table carried intervals
        return "tie" if better is None else f"{better.upper()} {word}{by}"
    if better is None:
        return f"within noise ({_interval(ci, missing='noise not measured')})"
    return f"{better.upper()} {word}{by} (B - A {_interval(ci)})"


def _metric_rows(pair: HeadToHead) -> list[list[str]]:
    rows = []
    for row in pair.metric_table:
        fmt = METRIC_FORMATS.get(row.metric, fnum)
        rows.append([row.metric, fmt(row.a), fmt(row.b), _ahead(row.better, row.advantage_pct, row.diff_b_minus_a,
                                                                "better")])
    for key, label, fmt in SPEED_ROWS:
        speed = pair.speed[key]
        calibrated = speed.time_ratio_b_over_a is not None
        rows.append([label + (", calibrated" if calibrated else ""), fmt(speed.a), fmt(speed.b),
                     _speed_ahead(speed) if calibrated else
                     _ahead(speed.better, speed.advantage_pct, speed.diff_b_minus_a, "faster")])
    return rows


def _speed_ahead(row: SpeedRow) -> str:
    """A speed row from the interleaved calibration: who is faster, with the interval of B's time over A's."""
    r = row.time_ratio_b_over_a
    interval = "" if r.ci_low is None else f" (B/A time {fnum(r.ci_low, 3)} to {fnum(r.ci_high, 3)})"
    if row.better is None:
        return "level" + interval
    return f"{row.better.upper()} faster by {fnum(row.advantage_pct, 1)}%{interval}"


def _table_note(result: Judged, pair: HeadToHead) -> list[str]:
    """How the table's claims were tested (tables written before they were carry no note)."""
    if pair.speed["tokens_per_s"].time_ratio_b_over_a is None:
        return []
    return [f"Final metrics: B minus A with {interval_name(result)}; an arm is called better only where the p-value, "
            f"Holm-corrected over the table's {len(pair.metric_table)} metrics, is below "
            f"{(100 - result.ci_level) / 100:g}. Speed: from the interleaved calibration (both arms timed "
            "alternately in one process), with the interval of B's step time over A's; arms whose times do not "
            "differ beyond its noise are level.", ""]


def _verdict_rows(result: Judged, pair: HeadToHead) -> list[list[str]]:
    rows = []
    for dim, label, fmt in VERDICT_ROWS:
        d = pair.verdicts[dim]
        label += f" ({d.role or 'matched'})" if d.matched or d.role else ""
        if not d.available:
            rows.append([label, "n/a", "n/a", "n/a", "n/a", "n/a", _verdict_text(result, d)])
            continue
        ci = d.diff_b_minus_a
        rows.append([label, fmt(d.point), fci(d.a), fci(d.b), fnum(ci.diff), _interval(ci),
                     _verdict_text(result, d)])
    return rows


def _interval(ci: Difference, missing: str = "n/a") -> str:
    return missing if ci.ci_low is None else f"[{fnum(ci.ci_low)}, {fnum(ci.ci_high)}]"


def decision_note(result: Judged) -> str:
    """How to read the verdict table; nothing for comparisons written before budgets had roles."""
    return f" {_DECISION_NOTE}" if result.head_to_head.verdicts[result.match].role else ""


def interval_name(result: Judged) -> str:
    level = result.ci_level
    return f"the {level}% interval of the per-seed differences (paired)" if result.paired else \
        f"Welch's {level}% interval"


def seeds_line(result: Judged) -> str:
    """Which seeds each arm ran, and what pairing assumes where it is used."""
    seeds = {key: arm.seeds for key, arm in result.arms.items()}
    if None in seeds.values():
        return "Seeds: not recorded."
    text = "Seeds: " + ", ".join(f"{key.upper()} ran {_seed_list(s)}" for key, s in seeds.items())
    if result.paired:
        pair = "B minus A difference" if len(seeds) == 2 else "difference of an arm from A"
        return (text + f"; paired: each seed's {pair} is one sample, which assumes a seed moves "
                f"{'both arms' if len(seeds) == 2 else 'every arm'} alike (same initialisation, data order and noise "
                "draws where their shapes agree).")
    return text + "; independent runs."


def _seed_list(seeds: list[int]) -> str:
    return f"seeds {seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else f"seed {seeds[0]}"


def _headers(result: Judged) -> tuple[list[str], list[str]]:
    level, label = result.ci_level, result.metric.label
    return (["metric", f"A: {result.side('a').name}", f"B: {result.side('b').name}", "advantage"],
            ["budget", "at", f"A {label}", f"B {label}", "B - A", f"{level}% CI", "verdict"])


def verdict_table(result: Judged) -> str:
    """The judged metric of both arms of a two-arm result at equal steps, FLOPs and time, with the verdicts."""
    return table(_headers(result)[1], _verdict_rows(result, result.head_to_head))


def headline(result: Comparison) -> str:
    """The metric table and the three verdicts of a two-arm result, for a terminal."""
    return table(_headers(result)[0], _metric_rows(result.head_to_head)) + "\n\n" + verdict_table(result)


def _summary_lines(result: Comparison) -> list[str]:
    """The verdict at the matched budget, then what was matched."""
    level, label, metric = result.ci_level, MATCH_LABELS[result.match], result.metric
    v, a, b = result.head_to_head.verdicts[result.match], result.side("a"), result.side("b")
    if v.winner:
        ahead = "lower" if metric.lower_is_better else "higher"
        verdict = (f"**Winner at equal {label}: {result.side(v.winner).name}**, with a {margin_text(result, v)} "
                   f"{ahead} {metric.label} ({fnum(v.a.mean)} vs {fnum(v.b.mean)}; {level}% CI of B minus A: "
                   f"{_interval(v.diff_b_minus_a)}).")
    else:
        interval = _interval(v.diff_b_minus_a, missing="not measured (one seed, or no spread between seeds)")
        verdict = (f"**No significant difference at equal {label}**: {metric.label} {fnum(v.a.mean)} (A) vs "
                   f"{fnum(v.b.mean)} (B); the {level}% CI of B minus A is {interval}.")
    return [verdict, "", f"Budgets matched on {label}: A ran {a.max_steps} steps, "
            f"B ran {b.max_steps} steps, {result.n_seeds} seeds per arm. "
            f"Means over seeds; {level}% t-intervals in brackets. {seeds_line(result)}", ""]


def _arm_lines(arm: ComparisonArm) -> list[str]:
    """One arm's configuration and its final metrics, means over seeds."""
    agg = arm.aggregate
    exact = [f"- Exact match: {fpct(agg['final_val_exact_match'].mean)}"] if "final_val_exact_match" in agg else []
    return [f"## {arm.name}", "", "**Configuration**", "", *_arm_config_lines(arm.config), "",
            f"**Final metrics ({arm.max_steps} steps)**", "",
            f"- Val loss: {fci(agg['final_val_loss'])}",
            f"- Perplexity: {fci(agg['final_val_perplexity'], 2)}",
            f"- Accuracy: {fpct(agg['final_val_accuracy'].mean)}",
            *exact,
            f"- Best val loss: {fci(agg['best_val_loss'])}",
            f"- Training time: {fnum(agg['train_time_s'].mean, 1)} s "
            f"of {fnum(agg['total_time_s'].mean, 1)} s wall",
            f"- Training FLOPs: {fsci(agg['flops'].mean)}", ""]


def comparison_markdown(result: Comparison) -> str:
    if (pair := result.head_to_head) is None:
        return many_arm_markdown(result)
    a, b = result.side("a"), result.side("b")
    lines = [f"# Final Results: {a.name} vs {b.name}", "", "## Executive summary", "",
             *_summary_lines(result), *_arm_lines(a), *_arm_lines(b),
             "## Comparison", "", table(_headers(result)[0], _metric_rows(pair)), "", *_table_note(result, pair),
             "## Verdicts", "",
             f"{result.metric.label.capitalize()} of each arm at the same budget (interpolated along its eval curve "
             f"where that budget falls mid-run); difference B minus A with {interval_name(result)}."
             f"{decision_note(result)}", "",
             verdict_table(result), "",
             "## Recommendations", "", *[f"- {note}" for note in result.recommendations], "",
             "Plots: `comparison.png` (against step), `comparison_compute.png` (against FLOPs and wall time)."]
    return "\n".join(lines) + "\n"


def _budget_header(readings: list[Reading], label: str, fmt: Any) -> str:
    """A budget's column: its point when every pair is read at one, else each cell names its own."""
    points = {v.point for v in readings if v.available}
    return f"{label} ({readings[0].role})" + (f" at {fmt(points.pop())}" if len(points) == 1 else "")


def _budget_cell(v: Reading, side: str, fmt: Any, own_point: bool) -> str:
    """One arm's judged metric at a budget; a non-reference arm ahead of or behind the reference is
    marked; `own_point` where the pairs are read at different points."""
    if not v.available:
        return "n/a"
    mark = "" if side == "a" or v.ahead is None else " (ahead)" if v.ahead == "b" else " (behind)"
    return fci(getattr(v, side)) + mark + (f" at {fmt(v.point)}" if own_point else "")


def many_verdict_text(result: Judged, arm: str) -> str:
    """An arm's decision against the reference at the matched budget, with its interval and corrected p."""
    v = result.pairs[arm].verdicts[result.match]
    if not v.available:
        return f"not available: {v.reason}"
    ci, reference = v.diff_b_minus_a, result.reference.upper()
    if v.p_holm is None:
        return f"within noise ({arm.upper()} - {reference} {fnum(ci.diff)}, noise not measured)"
    p = fnum(v.p_holm, 3) if v.p_holm >= 1e-3 else f"{v.p_holm:.1e}"
    test = f"{arm.upper()} - {reference} {_interval(ci)}, Holm p {p}"
    if v.winner is None:
        return f"within noise ({test}{_power(result, v)})"
    return f"{'wins' if v.winner == 'b' else 'loses'} by {margin_text(result, v)} ({test})"


def many_arm_table(result: Judged) -> str:
    """One row per arm: its size, its steps, the judged metric at each budget, its verdict against the
    reference. Each pair is read at its own point; the reference's row shows it at the furthest one."""
    reference, pairs, label = result.reference, result.pairs, result.metric.label
    readings = {dim: [pair.verdicts[dim] for pair in pairs.values()] for dim, _, _ in VERDICT_ROWS}
    own_point = {dim: len({v.point for v in vs if v.available}) > 1 for dim, vs in readings.items()}
    furthest = {dim: max(vs, key=lambda v: v.point if v.available else -math.inf) for dim, vs in readings.items()}
    header = ["arm", "params (active)", "train FLOPs/token", "layers/token at inference", "steps",
              *(_budget_header(readings[dim], f"{label} at {name}", fmt) for dim, name, fmt in VERDICT_ROWS),
              f"verdict vs {reference.upper()} at equal {MATCH_LABELS[result.match]}"]
    rows = []
    for key, arm in result.arms.items():
        own = furthest if key == reference else pairs[key].verdicts
        side = "a" if key == reference else "b"
        rows.append([arm_label(key, arm.name),
                     f"{fint(arm.params['total'])} ({fint(arm.params['active'])})",
                     fsci(arm.flops_per_token), fnum(arm.inference_layers, 1), fint(arm.max_steps),
                     *(_budget_cell(own[dim], side, fmt, own_point[dim]) for dim, _, fmt in VERDICT_ROWS),
                     "reference" if key == reference else many_verdict_text(result, key)])
    return table(header, rows)


def many_arm_note(result: Judged) -> str:
    n = len(result.pairs)
    return (f"{result.metric.label.capitalize()} of each arm on each axis at the largest budget every run of it "
            "and of the reference reached (interpolated along its eval curve where that falls mid-run); the "
            "reference's row is read at the furthest of these points. Params: total "
            "(active per token); training FLOPs per token of one step; layers a token passes through to be "
            "answered (every segment run; n/a in comparisons written before it was recorded). Each arm minus the "
            "reference with "
            f"{interval_name(result)}; its p Holm-corrected across the {n} comparisons with the reference on each "
            f"axis: an arm wins, loses, is ahead or behind only where the corrected p is below "
            f"{(100 - result.ci_level) / 100:g}. {_MANY_NOTE}")


def _many_summary_lines(result: Comparison) -> list[str]:
    arms, label, reference = result.arms, MATCH_LABELS[result.match], result.reference
    steps = ", ".join(f"{key.upper()} ran {arm.max_steps} steps" for key, arm in arms.items())
    verdicts = [f"- **{arm_label(key, arms[key].name)}**: {many_verdict_text(result, key)}" for key in result.pairs]
    return [f"Every arm against the reference, {arm_label(reference, arms[reference].name)}, at equal {label} "
            "(the decision):", "", *verdicts,
            "", f"Budgets matched on {label}: {steps}, {result.n_seeds} seeds per arm. Means over seeds; "
            f"{result.ci_level}% t-intervals in brackets. {seeds_line(result)}", ""]


def many_arm_markdown(result: Comparison) -> str:
    arms = result.arms
    lines = [f"# Final Results: {' vs '.join(arm.name for arm in arms.values())}", "", "## Executive summary", "",
             *_many_summary_lines(result), "## Arms", "", many_arm_table(result), "", many_arm_note(result), "",
             *(line for arm in arms.values() for line in _arm_lines(arm)),
             "## Recommendations", "", *[f"- {note}" for note in result.recommendations], "",
             "Plots: `comparison.png` (against step), `comparison_compute.png` (against FLOPs and wall time). "
             "Each arm's head to head with the reference (final metrics, speeds): `pairs` in `comparison.json`."]
    return "\n".join(lines) + "\n"


def write_comparison_report(result: Comparison, out: Path) -> None:
    plot_comparison(result, out)
    atomic_write_text(out / "FINAL_RESULTS.md", comparison_markdown(result))
