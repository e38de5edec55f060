"""Judging arms: the decision at the matched budget, descriptive readings at the other two, the
metric and speed tables, Holm's correction across several arms, and the advice that follows."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from reasonlab.config import config_from_dict
from reasonlab.experiments.aggregate import SEED_STATS
from reasonlab.experiments.arms import REFERENCE
from reasonlab.experiments.budgets import time_ratio
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
    "loss": {"key": "loss", "label": "val loss", "lower_is_better": True},
    "exact_match": {"key": "exact_match", "label": "val exact match", "lower_is_better": False,
                    "bounds": (0.0, 1.0)},
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


def difference(a: list[float], b: list[float], paired: bool) -> dict[str, Any]:
    """mean(B) - mean(A) with its interval: of the per-seed differences when paired, else Welch's."""
    return paired_diff(a, b) if paired else welch_diff(a, b)


def _seed_values(arm: dict[str, Any], key: str) -> list[float]:
    """One aggregate's per-seed values, in seed order (what pairs seeds between arms)."""
    path = SEED_STATS.get(key, ("final_val", key.removeprefix("final_val_")))
    return values_at([run["summary"] for run in arm["per_seed"].values()], *path)


def metric_table(arms: dict[str, dict[str, Any]], paired: bool) -> list[dict[str, Any]]:
    """Both arms' final metrics side by side, each difference with its interval and p, the p's
    Holm-corrected over the table's rows: an arm is `better` only where the corrected p < 1 - level,
    by `advantage_pct` of the other arm's mean. Several rows tested one by one would name some
    arm better far more often than the level says, even between identical arms."""
    rows = [(label, key, lower, difference(_seed_values(arms["a"], key), _seed_values(arms["b"], key), paired))
            for label, key, lower in METRIC_ROWS if key in arms["a"]["aggregate"]]
    tested = [i for i, row in enumerate(rows) if row[3]["p"] is not None]
    adjusted = dict(zip(tested, holm([rows[i][3]["p"] for i in tested]), strict=True))
    table = []
    for i, (label, key, lower, diff) in enumerate(rows):
        a, b = (arms[arm]["aggregate"][key]["mean"] for arm in ("a", "b"))
        significant = adjusted.get(i, 1.0) < 1 - CI_LEVEL
        table.append({"metric": label, "key": key, "a": a, "b": b, "diff_b_minus_a": diff, "p_holm": adjusted.get(i),
                      **_ahead_of(a, b, lower if significant else None)})
    return table


def speed_table(arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Speed from the interleaved calibration, never from the runs' wall clocks (they ran at
    different moments, under different load). An arm is faster only where the calibration's
    interval of the step-time ratio excludes 1; arms given one pooled step time are level."""
    a, b = arms["a"], arms["b"]
    level = {"ratio": 1.0, "ci_low": 1.0, "ci_high": 1.0}  # one pooled step time: level by the calibration
    ratio = level if a["step_s"] == b["step_s"] else time_ratio(a["calibration_s"], b["calibration_s"])
    tokens = {arm: data["config"]["train"]["batch_size"] * data["config"]["model"]["seq_len"]
              for arm, data in arms.items()}
    values = {"steps_per_s": {arm: 1 / arms[arm]["step_s"] for arm in arms},
              "tokens_per_s": {arm: tokens[arm] / arms[arm]["step_s"] for arm in arms},
              "train_time_s": {arm: arms[arm]["max_steps"] * arms[arm]["step_s"] for arm in arms}}
    steps_ratio = b["max_steps"] / a["max_steps"]
    rows = {}
    for key, lower in SPEED_ROWS:
        scale = steps_ratio if key == "train_time_s" else 1.0  # B's total time over A's is steps x step time
        interval = {k: None if ratio[k] is None else ratio[k] * scale for k in ("ratio", "ci_low", "ci_high")}
        differ = interval["ci_low"] is not None and not interval["ci_low"] <= 1.0 <= interval["ci_high"]
        rows[key] = {**_ahead_of(values[key]["a"], values[key]["b"], lower if differ else None),
                     "a": values[key]["a"], "b": values[key]["b"], "time_ratio_b_over_a": interval}
    return rows


def _ahead_of(a: float, b: float, lower_is_better: bool | None) -> dict[str, Any]:
    """Which arm is ahead and by how much of the other's value; nobody when `lower_is_better` is None."""
    if lower_is_better is None or a == b:
        return {"better": None, "advantage_pct": None}
    better = ("a" if a < b else "b") if lower_is_better else ("a" if a > b else "b")
    worse = b if better == "a" else a
    return {"better": better, "advantage_pct": 100 * abs(a - b) / abs(worse) if worse else None}


def margin(values: dict[str, list[float]], diff: float, metric: dict[str, Any]) -> float:
    """How far apart the arms are: % of the worse val loss, or points of exact match."""
    if metric["lower_is_better"]:
        return 100 * abs(diff) / max(statistics.fmean(values["a"]), statistics.fmean(values["b"]))
    return 100 * abs(diff)


def verdicts(arms: dict[str, dict[str, Any]], match: str, metric: dict[str, Any] = METRICS["loss"],
             paired: bool = False) -> dict[str, Any]:
    """The judged metric of arms A and B at the largest budget every run of both reached, on each axis.

    Only the matched budget decides (`winner`); the others are descriptive (`ahead`). The point
    must lie inside every run's evaluated range (no extrapolation before a first or after a last
    evaluation); where the ranges do not overlap the verdict is unavailable.
    """
    out = {}
    for dim, axis in AXES.items():
        v = _verdict(arms, axis, metric, paired, shared_point(arms, axis))
        out[dim] = {**v, "matched": dim == match, "role": "decision" if dim == match else "descriptive",
                    "winner": v["ahead"] if dim == match else None}
    return out


def shared_point(arms: dict[str, dict[str, Any]], axis: str) -> float | None:
    """The largest `axis` value every run of every arm reached; None where it lies before some
    run's first evaluation (the runs' evaluated ranges do not overlap)."""
    runs = [run["val_history"] for data in arms.values() for run in data["per_seed"].values()]
    point = min(h[-1][axis] for h in runs)
    return None if max(h[0][axis] for h in runs) > point else point


def _verdict(arms: dict[str, dict[str, Any]], axis: str, metric: dict[str, Any], paired: bool,
             point: float | None) -> dict[str, Any]:
    """Both arms at `point` on `axis`, whether they differ beyond the noise, and at which step of
    how many each arm was read there."""
    if point is None:
        return {"axis": axis, "point": None, "available": False, "ahead": None,
                "reason": f"the arms' evaluated ranges of {axis} do not overlap"}
    histories = {arm: [r["val_history"] for r in data["per_seed"].values()] for arm, data in arms.items()}
    values = {arm: [value_at(h, axis, point, metric["key"]) for h in arm_runs] for arm, arm_runs in histories.items()}
    diff = difference(values["a"], values["b"], paired)
    bounds = metric.get("bounds")
    read_at = {arm: {"step": statistics.fmean(value_at(h, axis, point, "step") for h in arm_runs),
                     "of": arms[arm]["max_steps"]} for arm, arm_runs in histories.items()}
    return {"axis": axis, "point": point, "available": True,
            "a": mean_ci(values["a"], bounds=bounds), "b": mean_ci(values["b"], bounds=bounds),
            "diff_b_minus_a": diff, "detectable": diff["detectable"],
            "ahead": _ahead_by_diff(diff, metric) if diff["significant"] else None,
            "margin": margin(values, diff["diff"], metric), "read_at": read_at}


def _ahead_by_diff(diff: dict[str, Any], metric: dict[str, Any]) -> str:
    """The arm ("a" or "b") a difference B minus A favours."""
    return "b" if (diff["diff"] < 0) == metric["lower_is_better"] else "a"


def recommendations(result: dict[str, Any]) -> list[str]:
    """Advice that follows from the decision (the matched budget) alone, nothing canned."""
    notes = []
    if result["n_seeds"] < 2:
        notes.append("One seed per arm measures no noise: rerun with --seeds 3 before acting on any difference.")
    match = result["match"]
    notes.append(_decision_note(result, match, dict(BUDGETS)[match]))
    others = [dim for dim, _ in BUDGETS if dim != match]
    names = {"steps": "steps", "flops": "FLOPs", "time": "time"}
    notes.append(f"Equal {names[others[0]]} and equal {names[others[1]]} are descriptive, not decisions: there an "
                 "arm is read where every run reached, often mid-schedule, which favours it. To decide there, "
                 f"compare with --match {others[0]} (or {others[1]}).")
    speed = result["speed"]["tokens_per_s"]
    if result["winner"] is None and speed["better"] is not None:
        ratio = speed["time_ratio_b_over_a"]
        notes.append(f"{result['arms'][speed['better']]['name']} trains {speed['advantage_pct']:.1f}% more tokens "
                     f"per second on this machine (B's step time is {ratio['ci_low']:.3f} to {ratio['ci_high']:.3f} "
                     f"x A's, {result['ci_level']}% CI of the interleaved calibration); as the decision ties, it "
                     "is the cheaper choice.")
    return notes


def _decision_note(result: dict[str, Any], dim: str, label: str, names: tuple[str, str] = ("A", "B")) -> str:
    """What to train under the matched budget, or why the decision says nothing; `names` are what
    the text calls arms A and B of `result`."""
    v, metric = result["verdicts"][dim], result["metric"]
    if not v["available"]:
        return f"Under {label} no verdict: {v['reason']}."
    if not v["winner"]:
        return (f"Under {label} the arms are not distinguishable at {result['n_seeds']} seeds; "
                "more seeds or a longer budget are needed to separate them.")
    ahead = (f"a val loss {v['margin']:.2f}% lower" if metric["lower_is_better"]
             else f"a {metric['label']} {v['margin']:.2f} points higher")
    ci = v["diff_b_minus_a"]
    return (f"Under {label}, train {result['arms'][v['winner']]['name']}: it reaches {ahead} "
            f"({ci['ci_low']:.4f} to {ci['ci_high']:.4f} is the {result['ci_level']}% CI of {names[1]} minus "
            f"{names[0]}).")


def _setting(arms: dict[str, dict[str, Any]], steps: int, match: str, metric: str, paired: bool) -> dict[str, Any]:
    """What a comparison.json says first: the budget, the seeds, how it judges."""
    return {"match": match, "steps": steps, "n_seeds": len(arms[REFERENCE]["seeds"]),
            "ci_level": round(CI_LEVEL * 100), "paired": paired, "metric": METRICS[metric]}


def _head_to_head(pair: dict[str, dict[str, Any]], match: str, metric: str, paired: bool) -> dict[str, Any]:
    """Arm B against arm A: the metric table, speeds and verdicts."""
    v = verdicts(pair, match, METRICS[metric], paired)
    return {"metric_table": metric_table(pair, paired), "speed": speed_table(pair), "verdicts": v,
            "winner": v[match]["winner"]}


def judge(arms: dict[str, dict[str, Any]], steps: int, match: str, metric: str, paired: bool = False) -> dict[str, Any]:
    """comparison.json: the arms side by side, the decision at the matched budget, the descriptive
    readings at the other two, the advice. More than two arms: `judge_many`."""
    if len(arms) > 2:
        return judge_many(arms, steps, match, metric, paired)
    result = {**_setting(arms, steps, match, metric, paired), "arms": arms,
              **_head_to_head(arms, match, metric, paired)}
    result["recommendations"] = recommendations(result)
    return result


def judge_many(arms: dict[str, dict[str, Any]], steps: int, match: str, metric: str,
               paired: bool = False) -> dict[str, Any]:
    """comparison.json of more than two arms: every other arm against the reference (the first)
    as in a head to head, under `pairs` (there A is the reference and B the arm), each verdict's p
    Holm-corrected across the comparisons on its axis (`holm_across`); each arm's parameters and
    training FLOPs per token beside its results.

    Each pair is read at the largest budget both of its arms reached, not at one point for all:
    an arm that spends less than planned (ACT halting early) would otherwise pull every other
    arm back to mid-schedule."""
    pairs = {key: _head_to_head({"a": arms[REFERENCE], "b": data}, match, metric, paired)
             for key, data in arms.items() if key != REFERENCE}
    holm_across(pairs, match, METRICS[metric])
    result = {**_setting(arms, steps, match, metric, paired), "reference": REFERENCE,
              "arms": {key: {**data, **arm_size(data["config"])} for key, data in arms.items()}, "pairs": pairs}
    result["recommendations"] = many_recommendations(result)
    return result


def arm_size(stored: dict[str, Any]) -> dict[str, Any]:
    """An arm's parameters (total, active, embedding), training FLOPs per token of one step and the
    layers a token passes through at inference."""
    cfg = config_from_dict(stored)
    tokens = cfg.train.batch_size * cfg.model.seq_len
    return {"params": param_counts(cfg), "flops_per_token": config_step_flops(cfg) / tokens,
            "inference_layers": inference_layers(cfg)}


def holm_across(pairs: dict[str, dict[str, Any]], match: str, metric: dict[str, Any]) -> None:
    """On each axis, the verdicts' p-values Holm-corrected across the pairs (`p_holm`): an arm is
    ahead of the reference, or behind it, only where its corrected p < 1 - level. With several
    arms tested one by one some arm would read better far more often than the level says."""
    for dim in AXES:
        judged = {key: pair["verdicts"][dim] for key, pair in pairs.items() if pair["verdicts"][dim]["available"]}
        tested = [key for key, v in judged.items() if v["diff_b_minus_a"]["p"] is not None]
        adjusted = dict(zip(tested, holm([judged[key]["diff_b_minus_a"]["p"] for key in tested]), strict=True))
        for key, v in judged.items():
            significant = adjusted.get(key, 1.0) < 1 - CI_LEVEL
            v["p_holm"] = adjusted.get(key)
            if key in adjusted:  # at Holm's strictest step: what an arm needs when no other differs
                diff = v["diff_b_minus_a"]
                v["detectable"] = detectable(diff["se"], diff["df"], tests=len(tested))
            v["ahead"] = _ahead_by_diff(v["diff_b_minus_a"], metric) if significant else None
            v["winner"] = v["ahead"] if v["matched"] else None
    for pair in pairs.values():
        pair["winner"] = pair["verdicts"][match]["winner"]


def many_recommendations(result: dict[str, Any]) -> list[str]:
    """Advice from each arm's decision against the reference (Holm-corrected), nothing canned."""
    notes = []
    if result["n_seeds"] < 2:
        notes.append("One seed per arm measures no noise: rerun with --seeds 3 before acting on any difference.")
    match, reference = result["match"], result["arms"][result["reference"]]
    for key, pair in result["pairs"].items():
        view = {**result, "arms": {"a": reference, "b": result["arms"][key]}, "verdicts": pair["verdicts"]}
        note = _decision_note(view, match, dict(BUDGETS)[match], names=("the reference", key.upper()))
        notes.append(f"{key.upper()} ({result['arms'][key]['name']}) against the reference: {note}")
    notes.append(f"Each verdict's p is Holm-corrected across the {len(result['pairs'])} comparisons with the "
                 "reference; the other two budgets are descriptive, as in a head to head.")
    return notes
