"""`reasonlab calibrate`: how often `compare` names a winner where there is none, and finds one where there is.

A/A comparisons (one preset as both arms) measure the false-winner rate of the decision;
comparisons against the preset with its learning rate divided by a factor measure power (how
often the unhandicapped arm A is named). Every comparison trains on seeds no other comparison
of the calibration uses, so repetitions are independent samples, and each gets its own folder,
so a killed calibration resumes where it stopped.

From the same runs it also replays the rule `compare` used before it made one decision: a
winner under any of the three budgets where Welch's interval excluded zero, equal time read off
the runs' own wall clocks. Both rates side by side show what that change bought.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from scipy.stats import binomtest

from reasonlab.config import preset_path, resolve_config
from reasonlab.errors import UserError
from reasonlab.experiments.arms import arm_config
from reasonlab.experiments.budgets import check_budget
from reasonlab.experiments.compare import run_comparison
from reasonlab.experiments.judge import METRICS, value_at
from reasonlab.experiments.results import ComparisonArm, Metric
from reasonlab.experiments.runs import Progress
from reasonlab.experiments.stats import CI_LEVEL, welch_diff
from reasonlab.io import atomic_write_json, atomic_write_text
from reasonlab.runtime import check_runtime

RESULTS = "calibration.json"
REPETITION = "repetition.json"
OLD_AXES = {"steps": "step", "flops": "flops", "time": "time_s"}  # the old rule's time: each run's own wall clock
AA = "aa"


def check_calibration(repeats: int, handicaps: Sequence[float], overrides: dict[str, Any] | None) -> None:
    """Refuse a calibration that cannot measure what it claims, before anything trains."""
    if repeats < 1:
        raise UserError(f"repeats must be >= 1, got {repeats}")
    for factor in handicaps:
        if not factor > 1:
            raise UserError(f"a handicap divides the learning rate by a factor > 1, got {factor}")
    if len(set(handicaps)) < len(handicaps):
        raise UserError(f"handicaps must differ, got {', '.join(f'{f:g}' for f in handicaps)}")
    if "train.lr" in (overrides or {}):
        raise UserError("train.lr is what a handicap divides: set it in the preset, not as an override")


def condition_name(factor: float | None) -> str:
    """The folder and JSON key of a condition: `aa`, or `lr-div-<factor>`."""
    return AA if factor is None else f"lr-div-{factor:g}"


def handicapped_arm(preset: str, factor: float, folder: Path) -> str:
    """A YAML that extends `preset` with its learning rate divided by `factor`: arm B of a handicap
    condition (overrides would reach both arms)."""
    lr = resolve_config(preset).train.lr / factor
    path = folder / f"{condition_name(factor)}.yaml"
    atomic_write_text(path, yaml.safe_dump({"extends": str(preset_path(preset).resolve()), "train": {"lr": lr}}))
    return str(path)


def old_rule(arms: dict[str, ComparisonArm], metric: Metric = METRICS["loss"]) -> dict[str, str | None]:
    """The winner the old rule named at each budget (None: none there), from the per-seed val histories."""
    histories = {key: [run.val_history for run in arm.per_seed.values()] for key, arm in arms.items()}
    return {dim: _old_winner(histories, axis, metric) for dim, axis in OLD_AXES.items()}


def _old_winner(histories: dict[str, list[list[dict[str, float]]]], axis: str, metric: Metric) -> str | None:
    """The old verdict on one axis: Welch at the largest point every run reached, none where the
    runs' evaluated ranges do not overlap."""
    runs = [h for arm_runs in histories.values() for h in arm_runs]
    point = min(h[-1][axis] for h in runs)
    if max(h[0][axis] for h in runs) > point:
        return None
    values = {arm: [value_at(h, axis, point, metric.key) for h in arm_runs] for arm, arm_runs in histories.items()}
    diff = welch_diff(values["a"], values["b"])
    if not diff["significant"]:
        return None
    return "b" if (diff["diff"] < 0) == metric.lower_is_better else "a"


def counted(repetition: dict[str, Any], factor: float | None) -> dict[str, bool]:
    """Whether each rule named what a condition counts: any winner between identical arms (a false
    winner), arm A against a handicapped B (power; for the old rule, A at any budget)."""
    old = set(repetition["old_rule"].values()) - {None}
    if factor is None:
        return {"new_rule": repetition["winner"] is not None, "old_rule": bool(old)}
    return {"new_rule": repetition["winner"] == "a", "old_rule": "a" in old}


def rate(k: int, n: int) -> dict[str, Any]:
    """k of n with its Clopper-Pearson interval."""
    ci = binomtest(k, n).proportion_ci(CI_LEVEL)
    return {"k": k, "n": n, "rate": k / n, "ci_low": ci.low, "ci_high": ci.high}


def _comparison_key(a: str, b: str, steps: int, seeds: int, match: str, overrides: dict[str, Any] | None,
                    seed_offset: int) -> dict[str, Any]:
    """What a stored repetition must match to be reused: both arms' configs and the budget."""
    return {"a": arm_config(a, overrides)[1].to_dict(), "b": arm_config(b, overrides)[1].to_dict(),
            "steps": steps, "seeds": seeds, "match": match, "seed_offset": seed_offset}


def repetition(a: str, b: str, steps: int, seeds: int, match: str, out: Path, progress: Progress,
               overrides: dict[str, Any] | None, seed_offset: int) -> dict[str, Any]:
    """One comparison's winners under both rules and its wall seconds; read back from its folder when
    it finished earlier (its wall seconds are those of the first run), else run (reusing its finished runs)."""
    key = _comparison_key(a, b, steps, seeds, match, overrides, seed_offset)
    stored = out / REPETITION
    if stored.is_file() and (record := json.loads(stored.read_text()))["key"] == key:
        return record
    tic = time.perf_counter()
    result = run_comparison(a, b, steps, seeds, match, out, progress, overrides, seed_offset=seed_offset)
    record = {"key": key, "seed_offset": seed_offset, "winner": result.head_to_head.winner,
              "old_rule": old_rule(result.arms),
              "wall_s": time.perf_counter() - tic}
    atomic_write_json(stored, record)
    return record


def summarize(factor: float | None, b: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One condition: what it counts, both rules' rates with intervals, and every repetition."""
    hits = [counted(r, factor) for r in records]
    return {"handicap": factor, "b": b, "counts": "false winners" if factor is None else "power (A named)",
            "repetitions": len(records),
            **{rule: rate(sum(h[rule] for h in hits), len(hits)) for rule in ("new_rule", "old_rule")},
            "median_wall_s": statistics.median(r["wall_s"] for r in records),
            "runs": [{k: v for k, v in r.items() if k != "key"} for r in records]}


def run_calibration(preset: str = "cpu-tiny", repeats: int = 20, handicaps: Sequence[float] = (100.0, 3.0, 1.5),
                    steps: int | None = None, seeds: int = 3, match: str = "steps",
                    out: str | Path = "runs/calibration", progress: Progress = print,
                    overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """`repeats` A/A comparisons of `preset` and `repeats` against each handicap (B's lr / factor), each
    in `out/<condition>/r<k>` on seeds of its own; writes and returns calibration.json.

    `steps` defaults to the preset's train.max_steps; `overrides` (dotted keys) apply to both arms.
    """
    check_calibration(repeats, handicaps, overrides)
    cfg = resolve_config(preset, overrides)
    check_runtime(cfg.train)
    steps = cfg.train.max_steps if steps is None else steps
    check_budget(steps, seeds, match)
    out = Path(out)
    factors: list[float | None] = [None, *handicaps]
    conditions = {}
    for c, factor in enumerate(factors):
        name = condition_name(factor)
        b = preset if factor is None else handicapped_arm(preset, factor, out / "arms")
        records = []
        for r in range(repeats):
            tag = f"[{name} {r + 1}/{repeats}]"
            record = repetition(preset, b, steps, seeds, match, out / name / f"r{r}",
                                lambda line, tag=tag: progress(f"{tag} {line}"), overrides,
                                seed_offset=(r * len(factors) + c) * 2 * seeds)
            progress(f"{tag} winner {record['winner']}, old rule {record['old_rule']}, {record['wall_s']:.1f} s")
            records.append(record)
        conditions[name] = summarize(factor, b, records)
    result = {"preset": preset, "steps": steps, "seeds": seeds, "match": match, "repeats": repeats,
              "handicaps": list(handicaps), "overrides": overrides or {}, "ci_level": round(CI_LEVEL * 100),
              "median_wall_s": statistics.median(r["wall_s"] for c in conditions.values() for r in c["runs"]),
              "conditions": conditions}
    atomic_write_json(out / RESULTS, result)
    return result


def _label(condition: dict[str, Any]) -> str:
    return "A/A" if condition["handicap"] is None else f"B: lr / {condition['handicap']:g}"


def _rate_cell(counts: str, r: dict[str, Any]) -> str:
    return f"{counts} {r['k']}/{r['n']} = {r['rate']:.0%} [{r['ci_low']:.0%}, {r['ci_high']:.0%}]"


def format_calibration(result: dict[str, Any]) -> str:
    """The calibration as a Markdown table, both rules side by side, and the budget it was measured at."""
    level = result["ci_level"]
    lines = [f"| condition | repetitions | new rule: winner rate [{level}% CI] "
             f"| old rule (any budget): winner rate [{level}% CI] |", "|---|---|---|---|"]
    for c in result["conditions"].values():
        lines.append(f"| {_label(c)} | {c['repetitions']} | {_rate_cell(c['counts'], c['new_rule'])} "
                     f"| {_rate_cell(c['counts'], c['old_rule'])} |")
    lines.append(f"\n{result['preset']}, {result['steps']} steps x {result['seeds']} seeds per arm, match "
                 f"{result['match']}; median {result['median_wall_s']:.1f} s per comparison")
    return "\n".join(lines)
