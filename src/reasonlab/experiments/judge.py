"""Judging arms: the decision at the matched budget, descriptive readings at the other two, the
metric and speed tables, Holm's correction across several arms, and the advice that follows."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import numpy as np

from reasonlab.config import config_from_dict
from reasonlab.experiments.aggregate import SEED_STATS
from reasonlab.experiments.arms import REFERENCE
from reasonlab.experiments.budgets import time_ratio
from reasonlab.experiments.results import (
    Comparison,
    ComparisonArm,
    Difference,
    Estimate,
    HeadToHead,
    Metric,
    MetricRow,
    Ratio,
    ReadAt,
    Reading,
    SpeedRow,
)
from reasonlab.experiments.stats import (
    CI_LEVEL,
    detectable,
    holm,
    mean_ci,
    paired_diff,
    values_at,
    welch_diff,
)
from reasonlab.model import config_step_flops, inference_layers, param_counts

METRICS = {  # what a verdict compares: key in the eval events, label, lower is better
    "loss": Metric("loss", "val loss", lower_is_better=True),
    "exact_match": Metric("exact_match", "val exact match", lower_is_better=False, bounds=(0.0, 1.0)),
}


AXES = {"steps": "step", "flops": "flops", "time": "calibrated_time_s"}  # calibrated: step x measured step time


METRIC_ROWS = (  # the metric table: label, aggregate key, lower is better; exact match only where it is judged
    ("exact match", "final_val_exact_match", False),
    ("val loss", "final_val_loss", True),
    ("perplexity", "final_val_perplexity", True),
    ("accuracy", "final_val_accuracy", False),
)


SPEED_ROWS = (("steps_per_s", False), ("tokens_per_s", False), ("train_time_s", True))  # key, lower is better


BUDGETS = (("flops", "a fixed compute budget"), ("time", "a fixed wall-clock budget"),
           ("steps", "a fixed number of steps"))


def value_at(history: list[dict[str, float]], axis: str, point: float, key: str) -> float:
    """A validation metric at `point` on `axis`, linearly interpolated between evaluations."""
    xs = [e[axis] for e in history]
    return float(np.interp(point, xs, [e[key] for e in history]))


def difference(a: list[float], b: list[float], paired: bool) -> Difference:
    """mean(B) - mean(A) with its interval: of the per-seed differences when paired, else Welch's."""
    return Difference(**(paired_diff(a, b) if paired else welch_diff(a, b)))


def _seed_values(arm: ComparisonArm, key: str) -> list[float]:
    """One aggregate's per-seed values, in seed order (what pairs seeds between arms)."""
    path = SEED_STATS.get(key, ("final_val", key.removeprefix("final_val_")))
    return values_at([run.summary for run in arm.per_seed.values()], *path)


def metric_table(a: ComparisonArm, b: ComparisonArm, paired: bool) -> list[MetricRow]:
    """Both arms' final metrics side by side, each difference with its interval and p, the p's
    Holm-corrected over the table's rows: an arm is `better` only where the corrected p < 1 - level,
    by `advantage_pct` of the other arm's mean. Several rows tested one by one would name some
    arm better far more often than the level says, even between identical arms."""
    rows = [(label, key, lower, difference(_seed_values(a, key), _seed_values(b, key), paired))
            for label, key, lower in METRIC_ROWS if key in a.aggregate]
    tested = [i for i, row in enumerate(rows) if row[3].p is not None]
    adjusted = dict(zip(tested, holm([rows[i][3].p for i in tested]), strict=True))
    table = []
    for i, (label, key, lower, diff) in enumerate(rows):
        means = a.aggregate[key].mean, b.aggregate[key].mean
        significant = adjusted.get(i, 1.0) < 1 - CI_LEVEL
        table.append(MetricRow(metric=label, key=key, a=means[0], b=means[1], diff_b_minus_a=diff,
                               p_holm=adjusted.get(i), **_ahead_of(*means, lower if significant else None)))
    return table


def speed_table(a: ComparisonArm, b: ComparisonArm) -> dict[str, SpeedRow]:
    """Speed from the interleaved calibration, never from the runs' wall clocks (they ran at
    different moments, under different load). An arm is faster only where the calibration's
    interval of the step-time ratio excludes 1; arms given one pooled step time are level."""
    ratio = {"ratio": 1.0, "ci_low": 1.0, "ci_high": 1.0} if a.step_s == b.step_s else \
        time_ratio(a.calibration_s, b.calibration_s)  # one pooled step time: level by the calibration

    def values(arm: ComparisonArm) -> dict[str, float]:
        tokens = arm.config["train"]["batch_size"] * arm.config["model"]["seq_len"]
        return {"steps_per_s": 1 / arm.step_s, "tokens_per_s": tokens / arm.step_s,
                "train_time_s": arm.max_steps * arm.step_s}

    va, vb = values(a), values(b)
    rows = {}
    for key, lower in SPEED_ROWS:
        scale = b.max_steps / a.max_steps if key == "train_time_s" else 1.0  # B's total time: steps x step time
        interval = Ratio(**{k: None if ratio[k] is None else ratio[k] * scale for k in ("ratio", "ci_low", "ci_high")})
        differ = interval.ci_low is not None and not interval.ci_low <= 1.0 <= interval.ci_high
        rows[key] = SpeedRow(a=va[key], b=vb[key], time_ratio_b_over_a=interval,
                             **_ahead_of(va[key], vb[key], lower if differ else None))
    return rows


def _ahead_of(a: float, b: float, lower_is_better: bool | None) -> dict[str, Any]:
    """Which arm is ahead (`better`) and by how much of the other's value (`advantage_pct`); nobody
    when `lower_is_better` is None."""
    if lower_is_better is None or a == b:
        return {"better": None, "advantage_pct": None}
    better = ("a" if a < b else "b") if lower_is_better else ("a" if a > b else "b")
    worse = b if better == "a" else a
    return {"better": better, "advantage_pct": 100 * abs(a - b) / abs(worse) if worse else None}


def margin(values: dict[str, list[float]], diff: float, metric: Metric) -> float:
    """How far apart the arms are: % of the worse val loss, or points of exact match."""
    if metric.lower_is_better:
        return 100 * abs(diff) / max(statistics.fmean(values["a"]), statistics.fmean(values["b"]))
    return 100 * abs(diff)


def verdicts(arms: dict[str, ComparisonArm], match: str, metric: Metric = METRICS["loss"],
             paired: bool = False) -> dict[str, Reading]:
    """The judged metric of arms A and B at the largest budget every run of both reached, on each axis.

    Only the matched budget decides (`winner`); the others are descriptive (`ahead`). The point
    must lie inside every run's evaluated range (no extrapolation before a first or after a last
    evaluation); where the ranges do not overlap the verdict is unavailable.
    """
    out = {}
    for dim, axis in AXES.items():
        v = _verdict(arms, axis, metric, paired, shared_point(arms, axis))
        out[dim] = dataclasses.replace(v, matched=dim == match, role="decision" if dim == match else "descriptive",
                                       winner=v.ahead if dim == match else None)
    return out


def shared_point(arms: dict[str, ComparisonArm], axis: str) -> float | None:
    """The largest `axis` value every run of every arm reached; None where it lies before some
    run's first evaluation (the runs' evaluated ranges do not overlap)."""
    runs = [run.val_history for arm in arms.values() for run in arm.per_seed.values()]
    point = min(h[-1][axis] for h in runs)
    return None if max(h[0][axis] for h in runs) > point else point


def _verdict(arms: dict[str, ComparisonArm], axis: str, metric: Metric, paired: bool,
             point: float | None) -> Reading:
    """Both arms at `point` on `axis`, whether they differ beyond the noise, and at which step of
    how many each arm was read there."""
    if point is None:
        return Reading(axis=axis, point=None, available=False,
                       reason=f"the arms' evaluated ranges of {axis} do not overlap")
    histories = {key: [r.val_history for r in arm.per_seed.values()] for key, arm in arms.items()}
    values = {key: [value_at(h, axis, point, metric.key) for h in runs] for key, runs in histories.items()}
    diff = difference(values["a"], values["b"], paired)
    read_at = {key: ReadAt(step=statistics.fmean(value_at(h, axis, point, "step") for h in runs),
                           of=arms[key].max_steps) for key, runs in histories.items()}
    return Reading(axis=axis, point=point, available=True,
                   a=Estimate(**mean_ci(values["a"], bounds=metric.bounds)),
                   b=Estimate(**mean_ci(values["b"], bounds=metric.bounds)),
                   diff_b_minus_a=diff, detectable=diff.detectable,
                   ahead=_ahead_by_diff(diff, metric) if diff.significant else None,
                   margin=margin(values, diff.diff, metric), read_at=read_at)


def _ahead_by_diff(diff: Difference, metric: Metric) -> str:
    """The arm ("a" or "b") a difference B minus A favours."""
    return "b" if (diff.diff < 0) == metric.lower_is_better else "a"


def _head_to_head(a: ComparisonArm, b: ComparisonArm, match: str, metric: Metric, paired: bool) -> HeadToHead:
    """Arm B against arm A: the metric table, speeds and verdicts."""
    v = verdicts({"a": a, "b": b}, match, metric, paired)
    return HeadToHead(metric_table=metric_table(a, b, paired), speed=speed_table(a, b), verdicts=v,
                      winner=v[match].winner)


def judge(arms: dict[str, ComparisonArm], steps: int, match: str, metric: str,
          paired: bool = False) -> Comparison:
    """comparison.json: every other arm against the reference (the first) as a head to head, under
    `pairs` (there A is the reference and B the arm); the decision at the matched budget, the
    descriptive readings at the other two, the advice; each arm's parameters, training FLOPs per
    token and inference depth beside its results. With more than two arms each verdict's p is
    Holm-corrected across the comparisons on its axis (`holm_across`).

    Each pair is read at the largest budget both of its arms reached, not at one point for all:
    an arm that spends less than planned (ACT halting early) would otherwise pull every other
    arm back to mid-schedule."""
    judged = METRICS[metric]
    pairs = {key: _head_to_head(arms[REFERENCE], arm, match, judged, paired)
             for key, arm in arms.items() if key != REFERENCE}
    if len(pairs) > 1:
        pairs = holm_across(pairs, match, judged)
    result = Comparison(match=match, steps=steps, n_seeds=len(arms[REFERENCE].seeds), ci_level=round(CI_LEVEL * 100),
                        paired=paired, metric=judged, reference=REFERENCE,
                        arms={key: dataclasses.replace(arm, **arm_size(arm.config)) for key, arm in arms.items()},
                        pairs=pairs, recommendations=[])
    return dataclasses.replace(result, recommendations=recommendations(result))


def arm_size(stored: dict[str, Any]) -> dict[str, Any]:
    """An arm's parameters (total, active, embedding), training FLOPs per token of one step and the
    layers a token passes through at inference."""
    cfg = config_from_dict(stored)
    tokens = cfg.train.batch_size * cfg.model.seq_len
    return {"params": param_counts(cfg), "flops_per_token": config_step_flops(cfg) / tokens,
            "inference_layers": inference_layers(cfg)}


def holm_across(pairs: dict[str, HeadToHead], match: str, metric: Metric) -> dict[str, HeadToHead]:
    """On each axis, the verdicts' p-values Holm-corrected across the pairs (`p_holm`): an arm is
    ahead of the reference, or behind it, only where its corrected p < 1 - level. With several
    arms tested one by one some arm would read better far more often than the level says."""
    readings = {key: dict(pair.verdicts) for key, pair in pairs.items()}
    for dim in AXES:
        judged = {key: r[dim] for key, r in readings.items() if r[dim].available}
        tested = [key for key, v in judged.items() if v.diff_b_minus_a.p is not None]
        adjusted = dict(zip(tested, holm([judged[key].diff_b_minus_a.p for key in tested]), strict=True))
        for key, v in judged.items():
            significant = adjusted.get(key, 1.0) < 1 - CI_LEVEL
            ahead = _ahead_by_diff(v.diff_b_minus_a, metric) if significant else None
            detectable_now = v.detectable
            if key in adjusted:  # at Holm's strictest step: what an arm needs when no other differs
                detectable_now = detectable(v.diff_b_minus_a.se, v.diff_b_minus_a.df, tests=len(tested))
            readings[key][dim] = dataclasses.replace(v, p_holm=adjusted.get(key), detectable=detectable_now,
                                                     ahead=ahead, winner=ahead if v.matched else None)
    return {key: dataclasses.replace(pair, verdicts=readings[key], winner=readings[key][match].winner)
            for key, pair in pairs.items()}


def recommendations(result: Comparison) -> list[str]:
    """Advice that follows from the decisions (the matched budget) alone, nothing canned."""
    notes = []
    if result.n_seeds < 2:
        notes.append("One seed per arm measures no noise: rerun with --seeds 3 before acting on any difference.")
    match, label = result.match, dict(BUDGETS)[result.match]
    if (pair := result.head_to_head) is not None:
        notes.append(_decision_note(result, pair, label))
        others = [dim for dim, _ in BUDGETS if dim != match]
        names = {"steps": "steps", "flops": "FLOPs", "time": "time"}
        notes.append(f"Equal {names[others[0]]} and equal {names[others[1]]} are descriptive, not decisions: there "
                     "an arm is read where every run reached, often mid-schedule, which favours it. To decide "
                     f"there, compare with --match {others[0]} (or {others[1]}).")
        speed = pair.speed["tokens_per_s"]
        if pair.winner is None and speed.better is not None:
            ratio = speed.time_ratio_b_over_a
            faster = result.side(speed.better)
            notes.append(f"{faster.name} trains {speed.advantage_pct:.1f}% more tokens per second on this machine "
                         f"(B's step time is {ratio.ci_low:.3f} to {ratio.ci_high:.3f} x A's, {result.ci_level}% "
                         "CI of the interleaved calibration); as the decision ties, it is the cheaper choice.")
        return notes
    for key, pair in result.pairs.items():
        note = _decision_note(result, pair, label, key, names=("the reference", key.upper()))
        notes.append(f"{key.upper()} ({result.arms[key].name}) against the reference: {note}")
    notes.append(f"Each verdict's p is Holm-corrected across the {len(result.pairs)} comparisons with the "
                 "reference; the other two budgets are descriptive, as in a head to head.")
    return notes


def _decision_note(result: Comparison, pair: HeadToHead, label: str, key: str = "b",
                   names: tuple[str, str] = ("A", "B")) -> str:
    """What to train under the matched budget, or why the decision says nothing; `names` are what
    the text calls the reference and arm `key`."""
    v, metric = pair.verdicts[result.match], result.metric
    if not v.available:
        return f"Under {label} no verdict: {v.reason}."
    if not v.winner:
        return (f"Under {label} the arms are not distinguishable at {result.n_seeds} seeds; "
                "more seeds or a longer budget are needed to separate them.")
    ahead = (f"a val loss {v.margin:.2f}% lower" if metric.lower_is_better
             else f"a {metric.label} {v.margin:.2f} points higher")
    winner = result.side(v.winner, key)
    ci = v.diff_b_minus_a
    return (f"Under {label}, train {winner.name}: it reaches {ahead} "
            f"({ci.ci_low:.4f} to {ci.ci_high:.4f} is the {result.ci_level}% CI of {names[1]} minus {names[0]}).")
