"""SCALING.md and scaling.png of a scaling study, built from scaling.json alone
(`scaling_result.read_scaling`)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from reasonlab.experiments.fits import ALPHA_BOUNDS
from reasonlab.experiments.results import Estimate
from reasonlab.experiments.scaling_result import ScalingResult
from reasonlab.io import atomic_write_text
from reasonlab.report.comparison import arm_label, color
from reasonlab.report.markdown import fci, fint, fnum, fpct, fsci, table
from reasonlab.report.plots import save_figure

FIGURE = "scaling.png"
REPORT = "SCALING.md"


def _interval(v: dict[str, Any] | None, fmt: Any = fsci) -> str:
    if not v or v.get("estimate") is None:
        return "n/a"
    if v.get("low") is None:
        return fmt(v["estimate"])
    return f"{fmt(v['estimate'])} [{fmt(v['low'])}, {fmt(v['high'])}]"


def _ci(stat: Estimate | None, metric: str) -> str:
    if stat is None:
        return "n/a"
    if metric == "exact_match":
        mean, low, high = stat.mean, stat.ci_low, stat.ci_high
        return fpct(mean, 1) if low is None else f"{fpct(mean, 1)} [{fpct(low, 1)}, {fpct(high, 1)}]"
    return fci(stat)


def _size(x: float | None, metric: str) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f} points" if metric == "exact_match" else fnum(x)


def _arms_table(result: ScalingResult) -> str:
    header = ["arm", "params (active)", "train FLOPs/token", "layers/token at inference",
              "steps at each budget", "FLOPs trained at the largest (share of the budget)",
              "lr multiplier at each budget"]
    rows = []
    for key, arm in result.arms.items():
        largest = arm.readings[-1]
        trained = statistics.fmean(largest.flops) if largest.flops else None
        share = "n/a" if trained is None else f"{fsci(trained)} ({fpct(trained / largest.budget, 0)})"
        rows.append([arm_label(key, arm.name), f"{fint(arm.params['total'])} ({fint(arm.params['active'])})",
                     fsci(arm.flops_per_token), fnum(arm.inference_layers, 1),
                     ", ".join(fint(r.steps) for r in arm.readings), share,
                     ", ".join(f"{r.lr_multiplier:g}" for r in arm.readings)])
    return table(header, rows)


def _metric_table(result: ScalingResult, metric: str) -> str:
    """Each arm's metric at each budget; an arm ahead of or behind the reference is marked."""
    marks = {(v.arm, v.budget_index): v for v in result.verdicts if v.metric == metric}
    header = ["arm", *(f"{b:.3g} FLOPs" for b in result.budgets)]
    rows = []
    for key, arm in result.arms.items():
        cells = []
        for i, reading in enumerate(arm.readings):
            stat = reading.loss_ci if metric == "loss" else reading.exact_match_ci
            v = marks.get((key, i))
            mark = "" if v is None or v.ahead is None else " (ahead)" if v.ahead == "arm" else " (behind)"
            cells.append(_ci(stat, metric) + mark)
        rows.append([arm_label(key, arm.name), *cells])
    return table(header, rows)


def _verdict_table(result: ScalingResult, metric: str) -> str:
    reference = result.reference
    header = ["arm", "budget", "arm - reference [95% CI]", "Holm p", "verdict", "detectable at 80% power"]
    rows = []
    for v in result.verdicts:
        if v.metric != metric:
            continue
        scale = 100 if metric == "exact_match" else 1
        ci = "noise not measured" if v.ci_low is None else \
            f"{fnum(scale * v.diff)} [{fnum(scale * v.ci_low)}, {fnum(scale * v.ci_high)}]"
        verdict = "noise not measured" if v.p_holm is None else \
            {"arm": "ahead", "reference": "behind", None: "within noise"}[v.ahead]
        rows.append([f"{v.arm.upper()} - {reference.upper()}", f"{result.budgets[v.budget_index]:.3g}", ci,
                     "n/a" if v.p_holm is None else fnum(v.p_holm, 3), verdict, _size(v.detectable, metric)])
    return table(header, rows)


def _fit_table(result: ScalingResult) -> str:
    header = ["arm", "E", "A", "alpha", f"predicted val loss at {result.budgets[-1]:.3g} FLOPs"]
    rows = []
    for key, arm in result.arms.items():
        fit = arm.fit
        if fit is None:
            rows.append([arm_label(key, arm.name), "n/a", "n/a", "n/a", "n/a"])
            continue
        bound = " (at the fit's bound: the form does not fit)" if fit["alpha"]["estimate"] >= ALPHA_BOUNDS[1] - 1e-6 \
            else ""
        rows.append([arm_label(key, arm.name), _interval(fit["E"], fnum), _interval(fit["A"]),
                     _interval(fit["alpha"], fnum) + bound, _interval(arm.predicted[-1], fnum)])
    return table(header, rows)


def _crossover_table(result: ScalingResult) -> str:
    header = ["arm", "crosses the reference at (FLOPs) [95% CI]", "resamples with no crossing", "extrapolated"]
    rows = []
    for c in result.crossovers:
        at = "no crossing in range" if c["flops"]["estimate"] is None else _interval(c["flops"])
        share = "n/a" if c["no_crossing_share"] is None else fpct(c["no_crossing_share"], 1)
        extrapolated = "yes" if c["extrapolated"] else "no"
        rows.append([f"{c['arm'].upper()} vs {c['reference'].upper()}", at, share, extrapolated])
    return table(header, rows)


def _lr_lines(result: ScalingResult) -> list[str]:
    search = result.lr_search
    if not search:
        return ["Every arm trained at its own train.lr (no --lr-grid)."]
    both = any(s["losses"]["largest"] is not None for s in search.values())
    where = ("at the smallest and the largest budget; each budget used the best at the nearer of the two (in "
             "log-compute)." if both else "at the smallest budget only (not at the largest: whether the best moves "
             "with budget is not measured); every budget used its best.")
    unfinished = [f"{key.upper()} x{m}" for key, s in search.items() for m in s.get("unfinished", [])]
    lines = [f"Multipliers {', '.join(f'{g:g}' for g in result.lr_grid)} of each arm's train.lr, trained on its "
             f"first seed {where} That seed's reading at the chosen multiplier is the run that won the grid, which "
             "favours it a little." + (f" Not finished, so not among the choices: {', '.join(unfinished)}."
                                       if unfinished else ""), ""]
    rows = [[arm_label(key, result.arms[key].name),
             ", ".join(f"{m}: {fnum(v)}" for m, v in s["losses"]["smallest"].items()),
             "not tried" if s["losses"]["largest"] is None else
             ", ".join(f"{m}: {fnum(v)}" for m, v in s["losses"]["largest"].items()),
             "not measured" if s["moved"] is None else "yes" if s["moved"] else "no"] for key, s in search.items()]
    lines.append(table(["arm", "val loss by multiplier, smallest budget", "largest budget", "best moved"], rows))
    grid = result.lr_grid
    at_edge = [key.upper() for key, s in search.items()
               for best in s["best"].values() if best is not None and best in (grid[0], grid[-1])]
    if at_edge:
        lines += ["", f"The best multiplier lies at the grid's edge for {', '.join(sorted(set(at_edge)))}: the grid "
                      "does not bracket that arm's best learning rate, which may lie further out."]
    return lines


def _coarseness(result: ScalingResult) -> str:
    """What the fits' intervals can and cannot be with this many seeds and budgets."""
    seeds = min(len(r.seeds) for arm in result.arms.values() for r in arm.readings)
    notes = []
    if seeds > 1:
        notes.append(f"With {seeds} seeds a resample is one of only {math.comb(2 * seeds - 1, seeds)} multisets of "
                     "them, so these intervals are coarse.")
    if len(result.budgets) <= 3:
        notes.append("With 3 budgets the law's 3 parameters pass through the points: the fit summarises them, "
                     "it cannot test the form.")
    return "".join(f"{n} " for n in notes)


def scaling_markdown(result: ScalingResult) -> str:
    ref, cost, budgets = result.reference, result.cost, result.budgets
    how = ("one warmup-stable-decay run per arm, lr and seed to the largest budget, each smaller budget a cooldown "
           "branched from its checkpoint" if result.schedule == "wsd"
           else "every budget trained from scratch with the arm's own schedule")
    lines = [
        "# Scaling study", "",
        f"{len(result.arms)} arms at {len(budgets)} training-compute budgets from {budgets[0]:.3g} to "
        f"{budgets[-1]:.3g} FLOPs ({budgets[-1] / budgets[0]:.3g}x), {how}. Every arm is judged against "
        f"{arm_label(ref, result.arms[ref].name)}.", "",
        "## Arms", "", _arms_table(result), "",
        "Params: total (active per token); training FLOPs per token of one step; layers a token passes through to "
        "be answered (every segment run).", "",
    ]
    for metric in result.metrics:
        label = "Val loss" if metric == "loss" else "Val exact match"
        lines += [f"## {label} at each budget", "", _metric_table(result, metric), "",
                  f"Mean over seeds with its {int(100 * result.ci_level)}% t-interval; (ahead) and (behind) mark an "
                  "arm that differs from the reference beyond the noise (Welch, Holm-corrected across the arms at "
                  "that budget).", "", _verdict_table(result, metric), ""]
    lines += [
        "## Fits: L(C) = E + A C^-alpha", "", _fit_table(result), "",
        f"Val loss against the training FLOPs each run really spent, fitted per arm (Huber on log L, delta 1e-3); "
        "the prediction is at the planned budget; intervals from "
        f"{result.resamples} bootstrap resamples of whole seeds. {_coarseness(result)}No law is fitted to exact "
        "match.", "",
        "## Crossovers", "", _crossover_table(result) if result.crossovers else "No arm has a fit to compare.", "",
        f"Where an arm's fitted curve crosses the reference's, searched from the smallest budget to 4x the largest "
        f"({budgets[-1]:.3g} FLOPs); a crossing counts only where the curves differ by more than the seeds resolve "
        "(3 standard errors of the arms' mean-loss difference) on both sides of it. Extrapolated: the estimate "
        "or its interval's high end lies beyond the largest budget, where no arm was trained and the fitted form "
        "alone speaks.", "",
        "## Learning rate", "", *_lr_lines(result), "",
        "## Cost", "",
        f"{cost.runs} run folders (the lr grid's included), {cost.spent_flops:.3g} training FLOPs and "
        f"{cost.spent_hours:.2f} hours of training (a paused run's wall clock included); training the readings' "
        f"runs alone, each from scratch, would have taken {cost.independent_flops:.3g} FLOPs.", "",
        "## What this is not evidence of", "",
        "- Anything beyond the budgets trained: a crossover marked extrapolated is the fitted form's prediction.",
        "- Anything at another model scale, data set or task: every budget here trains the same architectures "
        "longer, it does not grow them.",
        "- Equality where a verdict is within noise: its detectable difference says what the seeds could see.", "",
    ]
    return "\n".join(lines)


def plot_scaling(result: ScalingResult, path: Path) -> None:
    """Val loss against training FLOPs (log-log) per arm with intervals, fitted curves with bands and
    crossovers with theirs; for a task, exact match against FLOPs beside it."""
    panels = len(result.metrics)
    fig = Figure(figsize=(6.5 * panels, 5))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for key, arm in result.arms.items():
        for ax, metric in zip(axes, result.metrics):
            points = [(statistics.fmean(r.flops) if r.flops else r.budget,
                       r.loss_ci if metric == "loss" else r.exact_match_ci) for r in arm.readings]
            points = [(b, s) for b, s in points if s is not None]
            xs = [b for b, _ in points]
            ys = [s.mean for _, s in points]
            errs = [[s.mean - (s.ci_low if s.ci_low is not None else s.mean) for _, s in points],
                    [(s.ci_high if s.ci_high is not None else s.mean) - s.mean for _, s in points]]
            ax.errorbar(xs, ys, yerr=errs, fmt="o", color=color(key), label=arm_label(key, arm.name), capsize=3)
            if metric == "loss" and arm.curve is not None:
                curve = arm.curve
                ax.plot(curve.flops, curve.estimate, color=color(key), lw=1)
                if curve.low[0] is not None:
                    ax.fill_between(curve.flops, curve.low, curve.high, color=color(key), alpha=0.15)
    loss_ax = axes[0]
    for c in result.crossovers:
        flops = c["flops"]
        if flops["estimate"] is not None:
            loss_ax.axvline(flops["estimate"], color=color(c["arm"]), ls="--", lw=1)
            if flops["low"] is not None:
                loss_ax.axvspan(flops["low"], flops["high"], color=color(c["arm"]), alpha=0.08)
    loss_ax.axvline(result.budgets[-1], color="grey", ls=":", lw=1)
    for ax, metric in zip(axes, result.metrics):
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs")
        ax.grid(alpha=0.3, which="both")
        ax.set_ylabel("val loss" if metric == "loss" else "val exact match")
    loss_ax.set_yscale("log")
    for formatter in (loss_ax.yaxis.set_major_formatter, loss_ax.yaxis.set_minor_formatter):
        formatter(ScalarFormatter())
    loss_ax.set_title("val loss; fits with bootstrap bands; dashed: crossovers; dotted: largest budget", fontsize=9)
    loss_ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.11 / panels, right=0.98, bottom=0.12, top=0.9, wspace=0.25)
    save_figure(fig, path, tight=False)


def write_scaling_report(result: ScalingResult, out: Path) -> None:
    plot_scaling(result, out / FIGURE)
    atomic_write_text(out / REPORT, scaling_markdown(result))
