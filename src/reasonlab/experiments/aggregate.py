"""Each arm's runs gathered over seeds: the means and intervals the reports show, the mean curves,
and every seed's run with its calibrated time axis."""

from __future__ import annotations

from typing import Any

from reasonlab.experiments.arms import Arm
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


def seed_stats(summaries: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Every summary number the reports show, over seeds; exact match only where it is judged."""
    stats = {key: over_seeds(summaries, *path) for key, path in SEED_STATS.items()}
    if metric == "exact_match":
        stats["final_val_exact_match"] = over_seeds(summaries, "final_val", "exact_match")
    return stats


def _headline(stats: dict[str, Any]) -> dict[str, Any]:
    """The means under the keys the original report used."""
    return {"total_time": stats["total_time_s"]["mean"], "best_val_loss": stats["best_val_loss"]["mean"],
            "final_val_metrics": {k: stats[f"final_val_{k}"]["mean"] for k in ("loss", "perplexity", "accuracy")}}


def _with_calibrated_time(run: dict[str, Any], step_s: float) -> dict[str, Any]:
    """A run's curves with `calibrated_time_s` = step x the arm's calibrated step time: the time
    axis verdicts read, free of the load the machine carried while this run trained."""
    return {**run, **{field: [{**e, "calibrated_time_s": e["step"] * step_s} for e in run[field]]
                      for field in ("train_history", "val_history")}}


def _arm_results(arm: Arm, per_seed: dict[str, dict[str, Any]], metric: str) -> dict[str, Any]:
    """One arm's part of comparison.json: its plan, its means over seeds and every seed's run."""
    per_seed = {seed: _with_calibrated_time(run, arm.step_s) for seed, run in per_seed.items()}
    runs = list(per_seed.values())
    stats = seed_stats([r["summary"] for r in runs], metric)
    return {"name": arm.name, "source": arm.source, "config": arm.cfg.to_dict(), "max_steps": arm.steps,
            "seeds": arm.seeds, "step_s": arm.step_s, "calibration_s": arm.calibration_s,
            "results": _headline(stats),
            "train_history": mean_curve([r["train_history"] for r in runs]),
            "val_history": mean_curve([r["val_history"] for r in runs]),
            "aggregate": stats, "per_seed": per_seed}


def aggregate_arms(arms: dict[str, Arm], runs: Runs, metric: str) -> dict[str, dict[str, Any]]:
    """The "arms" part of comparison.json."""
    return {key: _arm_results(arm, runs[key], metric) for key, arm in arms.items()}
