"""Each arm's runs gathered over seeds: the means and intervals the reports show, the mean curves,
and every seed's run with its calibrated time axis."""

from __future__ import annotations

from typing import Any

from reasonlab.experiments.arms import Arm
from reasonlab.experiments.results import ComparisonArm, Estimate, SeedRun
from reasonlab.experiments.runs import Runs
from reasonlab.experiments.stats import (
    mean_curve,
    over_seeds,
)

SEED_STATS = {  # aggregate key: where each seed's value sits in its summary.json
    "final_val_loss": ("final_val", "loss"),
    "final_val_perplexity": ("final_val", "perplexity"),
    "final_val_accuracy": ("final_val", "accuracy"),
    "best_val_loss": ("best_val_loss",),
    "train_time_s": ("train_time_s",),
    "total_time_s": ("total_time_s",),
    "steps_per_s": ("steps_per_s",),
    "tokens_per_s": ("tokens_per_s",),
    "flops": ("flops",),
}


def seed_stats(summaries: list[dict[str, Any]], metric: str) -> dict[str, Estimate]:
    """Every summary number the reports show, over seeds; exact match only where it is judged."""
    paths = {**SEED_STATS, **({"final_val_exact_match": ("final_val", "exact_match")} if metric == "exact_match"
                              else {})}
    return {key: Estimate(**over_seeds(summaries, *path)) for key, path in paths.items()}


def _seed_run(run: dict[str, Any], step_s: float) -> SeedRun:
    """A run with `calibrated_time_s` = step x the arm's calibrated step time on its curves: the time
    axis verdicts read, free of the load the machine carried while this run trained."""
    curves = {field: [{**e, "calibrated_time_s": e["step"] * step_s} for e in run[field]]
              for field in ("train_history", "val_history")}
    return SeedRun(run_dir=run["run_dir"], summary=run["summary"], nan_encountered=run["nan_encountered"], **curves)


def _arm_results(arm: Arm, per_seed: dict[str, dict[str, Any]], metric: str) -> ComparisonArm:
    """One arm of comparison.json: its plan, its means over seeds and every seed's run."""
    runs = {seed: _seed_run(run, arm.step_s) for seed, run in per_seed.items()}
    return ComparisonArm(name=arm.name, source=arm.source, config=arm.cfg.to_dict(), max_steps=arm.steps,
                         seeds=arm.seeds, step_s=arm.step_s, calibration_s=arm.calibration_s,
                         train_history=mean_curve([r.train_history for r in runs.values()]),
                         val_history=mean_curve([r.val_history for r in runs.values()]),
                         aggregate=seed_stats([r.summary for r in runs.values()], metric), per_seed=runs)


def aggregate_arms(arms: dict[str, Arm], runs: Runs, metric: str) -> dict[str, ComparisonArm]:
    """The arms of comparison.json."""
    return {key: _arm_results(arm, runs[key], metric) for key, arm in arms.items()}
