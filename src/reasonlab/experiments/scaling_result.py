"""A scaling study's result: typed, versioned, built from the finished units and written as
scaling.json, SCALING.md and scaling.png.

Per arm and budget, the seeds' final val loss (and exact match on a task) with t-intervals; per
budget, each arm against the reference (the first arm) with Welch's interval, Holm-corrected
across the arms, and the smallest difference the seeds could detect; per arm, the fit
L(C) = E + A C^-alpha with seed-bootstrap intervals; per arm, where its fit crosses the
reference's. Exact match is compared per budget only: no power law is fitted to a share.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from reasonlab.experiments.fits import ArmFit, crossover, fit_arm, resolution
from reasonlab.experiments.results import Estimate, check_version, each, from_dict
from reasonlab.experiments.scale import ScaleArm, unit_name
from reasonlab.experiments.stats import CI_LEVEL, detectable, holm, mean_ci, welch_diff
from reasonlab.experiments.sweep import Key
from reasonlab.io import atomic_write_json
from reasonlab.model import inference_layers, param_counts

SCHEMA_VERSION = 1
RESULTS = "scaling.json"
CURVE_POINTS = 64
METRICS = {"loss": {"label": "val loss", "lower_is_better": True},
           "exact_match": {"label": "val exact match", "lower_is_better": False}}


@dataclasses.dataclass(frozen=True)
class Reading:
    """One arm at one budget over its seeds: what each run trained and scored, and what it cost."""

    budget: float
    steps: int
    lr_multiplier: float
    seeds: list[int]
    flops: list[float]
    loss: list[float]
    exact_match: list[float] | None
    spent_flops: list[float]  # what each run itself trained (a cooldown branch: its cooldown)
    spent_time_s: list[float]
    loss_ci: Estimate | None  # None where no seed finished this budget
    exact_match_ci: Estimate | None


@dataclasses.dataclass(frozen=True)
class Curve:
    """A fitted law on a log grid of FLOPs with its pointwise bootstrap band: what the plot draws."""

    flops: list[float]
    estimate: list[float]
    low: list[float | None]
    high: list[float | None]


@dataclasses.dataclass(frozen=True)
class ArmResult:
    key: str
    name: str
    source: str
    config: dict[str, Any]
    params: dict[str, int]
    flops_per_token: float
    inference_layers: float
    readings: list[Reading]
    fit: dict[str, Any] | None  # fits.ArmFit.to_dict(); None where the arm has too few budgets finished
    predicted: list[dict[str, float | None]] | None  # the fit's val loss at each (planned) budget, with its interval
    curve: Curve | None


@dataclasses.dataclass(frozen=True)
class Verdict:
    """An arm minus the reference at one budget on one metric (Welch), Holm-corrected across the arms."""

    arm: str
    budget_index: int
    metric: str
    diff: float
    ci_low: float | None
    ci_high: float | None
    p: float | None
    p_holm: float | None
    detectable: float | None  # smallest difference these seeds find at 80% power, at Holm's strictest step
    ahead: str | None  # "arm", "reference", or None: within noise


@dataclasses.dataclass(frozen=True)
class Cost:
    runs: int
    spent_flops: float  # what the study trained, the lr grid included
    independent_flops: float  # what training every reading's runs from scratch would have taken
    spent_hours: float


@dataclasses.dataclass(frozen=True)
class ScalingResult:
    schema_version: int
    reference: str
    budgets: list[float]
    schedule: str
    lr_grid: list[float]
    lr_search: dict[str, Any] | None
    metrics: list[str]
    arms: dict[str, ArmResult]
    verdicts: list[Verdict]
    crossovers: list[dict[str, Any]]  # fits.Crossover.to_dict() per arm against the reference
    cost: Cost
    ci_level: float = CI_LEVEL
    resamples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "scaling", **dataclasses.asdict(self)}


def _readings(arm: ScaleArm, budgets: list[float], chosen: list[float],
              finished: dict[Key, dict[str, Any]]) -> list[Reading]:
    readings = []
    for i, budget in enumerate(budgets):
        runs = [(seed, finished[(unit_name(arm.key, chosen[i]), seed)]["runs"][str(i)]) for seed in arm.seeds
                if (unit_name(arm.key, chosen[i]), seed) in finished]
        loss = [r["final_val"]["loss"] for _, r in runs]
        exact = [r["final_val"]["exact_match"] for _, r in runs] if runs and all(
            "exact_match" in r["final_val"] for _, r in runs) else None
        readings.append(Reading(
            budget, arm.steps[i], chosen[i], [s for s, _ in runs], [r["flops"] for _, r in runs], loss, exact,
            [r["spent_flops"] for _, r in runs], [r["spent_time_s"] for _, r in runs],
            Estimate(**mean_ci(loss)) if loss else None,
            Estimate(**mean_ci(exact, bounds=(0.0, 1.0))) if exact else None))
    return readings


def _fit(readings: list[Reading], resamples: int, seed: int) -> ArmFit | None:
    """The arm's law, against the FLOPs each run really trained, from its seeds that finished every
    budget (a seed is the bootstrap's unit); `seed` draws the resamples, one of its own per arm, as
    the arms' seeds are independent."""
    complete = set.intersection(*(set(r.seeds) for r in readings))
    per_seed = {seed: [(r.flops[r.seeds.index(seed)], r.loss[r.seeds.index(seed)]) for r in readings]
                for seed in sorted(complete)}
    return fit_arm(per_seed, resamples, seed) if per_seed else None


def _curve(fit: ArmFit, flops: list[float]) -> Curve:
    """The fitted law and its pointwise 95% bootstrap band at these FLOPs."""
    grid = np.asarray(flops, dtype=float)
    draws = np.array([law.predict(grid) for law in fit.resamples]) if fit.resamples else None
    band = np.percentile(draws, (2.5, 97.5), axis=0) if draws is not None else None
    return Curve(grid.tolist(), fit.law.predict(grid).tolist(),
                 band[0].tolist() if band is not None else [None] * len(grid),
                 band[1].tolist() if band is not None else [None] * len(grid))


def _verdicts(arms: dict[str, ArmResult], reference: str, metric: str, n_budgets: int) -> list[Verdict]:
    """Each arm against the reference at each budget, Holm-corrected across the arms at that budget."""
    lower = METRICS[metric]["lower_is_better"]
    out = []
    for i in range(n_budgets):
        ref = getattr(arms[reference].readings[i], metric)
        tests = {key: welch_diff(ref, getattr(arm.readings[i], metric)) for key, arm in arms.items()
                 if key != reference and ref and getattr(arm.readings[i], metric)}
        tested = [key for key, d in tests.items() if d["p"] is not None]
        adjusted = dict(zip(tested, holm([tests[key]["p"] for key in tested]), strict=True))
        for key, d in tests.items():
            p_holm = adjusted.get(key)
            ahead = None
            if p_holm is not None and p_holm < 1 - CI_LEVEL:
                ahead = "arm" if (d["diff"] < 0) == lower else "reference"
            power = detectable(d["se"], d["df"], tests=len(tested)) if p_holm is not None else None
            out.append(Verdict(key, i, metric, d["diff"], d["ci_low"], d["ci_high"], d["p"], p_holm, power, ahead))
    return out


def _cost(readings: dict[str, list[Reading]], finished: dict[Key, dict[str, Any]]) -> Cost:
    """Every run folder once, at the most it has trained (a trunk paused for a cooldown, later run on),
    the lr grid's included; against the readings' runs trained from scratch."""
    runs: dict[tuple[str, ...], dict[str, Any]] = {}
    for result in finished.values():
        for r in [*result["runs"].values(), *([result["trunk"]] if "trunk" in result else [])]:
            key = Path(r["run_dir"]).parts[-4:]  # <arm>/lr<m>/s<seed>/b<i>: the same run if the study folder moved
            if r["spent_flops"] >= runs.get(key, {"spent_flops": -1})["spent_flops"]:
                runs[key] = r
    return Cost(len(runs), float(sum(r["spent_flops"] for r in runs.values())),
                float(sum(f for arm in readings.values() for r in arm for f in r.flops)),
                sum(r["spent_time_s"] for r in runs.values()) / 3600)


def build_result(arms: dict[str, ScaleArm], budgets: list[float], schedule: str, grid: list[float],
                 chosen: dict[str, list[float]], lr_search: dict[str, Any] | None,
                 finished: dict[Key, dict[str, Any]], resamples: int = 1000) -> ScalingResult:
    """The study's result from its finished units: readings, verdicts, fits and crossovers."""
    reference = next(iter(arms))
    readings = {key: _readings(arm, budgets, chosen[key], finished) for key, arm in arms.items()}
    fits = {key: _fit(r, resamples, i) if all(x.loss for x in r) else None
            for i, (key, r) in enumerate(readings.items())}
    curve_flops = np.geomspace(budgets[0], 4 * budgets[-1], CURVE_POINTS).tolist()
    results = {}
    for key, arm in arms.items():
        fit = fits[key]
        at_budgets = None if fit is None else _curve(fit, budgets)
        results[key] = ArmResult(
            key, arm.name, arm.source, arm.cfg.to_dict(), param_counts(arm.cfg),
            arm.step_flops / (arm.cfg.train.batch_size * arm.cfg.model.seq_len), inference_layers(arm.cfg),
            readings[key], None if fit is None else fit.to_dict(),
            None if at_budgets is None else [{"estimate": e, "low": lo, "high": hi} for e, lo, hi in
                                             zip(at_budgets.estimate, at_budgets.low, at_budgets.high)],
            None if fit is None else _curve(fit, curve_flops))
    metrics = ["loss"] + (["exact_match"] if all(r.exact_match for rs in readings.values() for r in rs) else [])
    verdicts = [v for metric in metrics for v in _verdicts(results, reference, metric, len(budgets))]
    crossings = [crossover(fits[key], fits[reference], key, reference,
                           resolution([r.loss for r in readings[key]], [r.loss for r in readings[reference]])).to_dict()
                 for key in arms if key != reference and fits[key] is not None and fits[reference] is not None]
    return ScalingResult(SCHEMA_VERSION, reference, budgets, schedule, grid, lr_search, metrics, results, verdicts,
                         crossings, _cost(readings, finished), resamples=resamples)


def write_result(result: ScalingResult, out: Path) -> None:
    """scaling.json, then SCALING.md and scaling.png from it."""
    from reasonlab.report.scaling import write_scaling_report

    atomic_write_json(out / RESULTS, result.to_dict())
    write_scaling_report(result, out)


def read_scaling(data: dict[str, Any]) -> ScalingResult:
    """A scaling.json, typed."""
    check_version(data, RESULTS, SCHEMA_VERSION)
    return from_dict(ScalingResult, data, arms=each(_arm_result), cost=lambda c: from_dict(Cost, c),
                     verdicts=lambda verdicts: [from_dict(Verdict, v) for v in verdicts])


def _arm_result(data: dict[str, Any]) -> ArmResult:
    return from_dict(ArmResult, data, readings=lambda rs: [_reading(r) for r in rs],
                     curve=lambda c: from_dict(Curve, c))


def _reading(data: dict[str, Any]) -> Reading:
    """Schema 1 wrote a budget no seed finished as an empty `loss_ci`."""
    return from_dict(Reading, data, loss_ci=lambda ci: from_dict(Estimate, ci) if ci else None,
                     exact_match_ci=lambda ci: from_dict(Estimate, ci))
