"""What each arm of a comparison trains: the matched budget (equal steps, FLOPs or calibrated
time) in steps per arm, from one interleaved step-time calibration, stored in the study's
plan.json so that a rerun trains to the same plan."""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

from reasonlab.config import Config, reread
from reasonlab.errors import UserError
from reasonlab.experiments.arms import Arm, seed_lists
from reasonlab.experiments.runs import Progress, with_train
from reasonlab.experiments.stats import (
    mean_ci,
)
from reasonlab.io import atomic_write_json
from reasonlab.model import config_step_flops
from reasonlab.outdir import claim_out, other_study
from reasonlab.training.data import prepare_data
from reasonlab.training.engine import Engine

MATCHES = ("steps", "flops", "time")


def check_budget(steps: int, seeds: int, match: str, seed_offset: int = 0) -> None:
    """Refuse a budget no comparison can run, before anything is built."""
    if match not in MATCHES:
        raise UserError(f"match must be one of {', '.join(MATCHES)}, got {match!r}")
    for name, value in (("steps", steps), ("seeds", seeds)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    if seed_offset < 0:
        raise UserError(f"seed_offset must be >= 0, got {seed_offset}")


def calibrate_step_times(configs: dict[str, Config], rounds: int = 4, steps: int = 3,
                         warmup: int = 2) -> dict[str, Any]:
    """Seconds per training step of each arm, from one interleaved calibration in this process.

    Every arm's engine is built once, warmed up, then timed in `rounds` alternating rounds of
    `steps` steps, so machine load and drift touch all alike. Returns each round's mean step
    time per arm (`rounds`) and the step time each arm is planned and judged with (`step_s`,
    `pooled_step_times`).
    """
    engines = {}
    for arm, cfg in configs.items():
        data = prepare_data(cfg)
        engines[arm] = Engine(data.adjust_config(cfg), data)
        engines[arm].timed_steps(0, warmup)
    per_round: dict[str, list[float]] = {arm: [] for arm in configs}
    for _ in range(rounds):
        for arm, engine in engines.items():
            per_round[arm].append(statistics.fmean(engine.timed_steps(steps, 0)[0]))
    return {"rounds": per_round, "step_s": pooled_step_times(configs, per_round)}


def pooled_step_times(configs: dict[str, Config], per_round: dict[str, list[float]]) -> dict[str, float]:
    """The step time of each arm: the median of its rounds, pooled over arms of one config, and
    over the first (reference) arm and every arm whose per-round time ratio to it does not differ
    from 1 beyond the rounds' spread; so identical arms get identical budgets."""
    groups: list[list[str]] = []  # arms of one config, in order: the reference's group first
    for arm, cfg in configs.items():
        group = next((g for g in groups if configs[g[0]] == cfg), None)
        if group is None:
            groups.append([arm])
        else:
            group.append(arm)

    def rounds_of(group: list[str]) -> list[float]:
        return [statistics.fmean(times) for times in zip(*(per_round[arm] for arm in group))]

    shared, separate = list(groups[0]), []
    for group in groups[1:]:
        if time_ratio(rounds_of(groups[0]), rounds_of(group))["differ"]:
            separate.append(group)
        else:
            shared += group
    step_s = {}
    for group in (shared, *separate):
        median = statistics.median([t for arm in group for t in per_round[arm]])
        step_s.update(dict.fromkeys(group, median))
    return {arm: step_s[arm] for arm in configs}


def time_ratio(a: list[float], b: list[float]) -> dict[str, Any]:
    """B's step time over A's from paired calibration rounds: geometric mean and t-interval of the
    per-round ratios; `differ` when the interval excludes 1."""
    log_ratio = mean_ci([math.log(tb / ta) for ta, tb in zip(a, b)])
    if log_ratio["ci_low"] is None:
        return {"ratio": math.exp(log_ratio["mean"]), "ci_low": None, "ci_high": None, "differ": False}
    low, high = math.exp(log_ratio["ci_low"]), math.exp(log_ratio["ci_high"])
    return {"ratio": math.exp(log_ratio["mean"]), "ci_low": low, "ci_high": high, "differ": not low <= 1.0 <= high}


def plan_steps(configs: dict[str, Config], steps: int, match: str, out: Path,
               progress: Progress) -> tuple[dict[str, int], dict[str, Any]]:
    """Steps per arm for the matched budget and the step-time calibration (`calibrate_step_times`);
    stored in plan.json, so a rerun trains to the same plan and reads time on the same scale.
    `out` is claimed first (`claim_out`): a folder of another study, or of other arms or budgets,
    is refused before any work."""
    key = {"steps": steps, "match": match, "configs": {arm: cfg.to_dict() for arm, cfg in configs.items()}}
    plan_file = out / "plan.json"
    stored = json.loads(plan_file.read_text()) if plan_file.is_file() else None
    renewed = (stored is not None and stored["key"] != key
               and {**stored["key"], "configs": reread(stored["key"]["configs"])} == key)
    claim_out(out, "comparison", key, same_study=renewed)
    if renewed:
        stored["key"] = key
        atomic_write_json(plan_file, stored)
    if stored is not None:
        if stored["key"] != key:  # a folder from before folders were claimed
            raise other_study(out, "comparison")
        if "calibration" in stored:
            return stored["steps"], stored["calibration"]
    calibration = calibrate_step_times(configs)
    progress("calibrated step times: "
             + ", ".join(f"{arm} {t * 1000:.0f} ms" for arm, t in calibration["step_s"].items()))
    planned = matched_steps(configs, steps, match, calibration["step_s"])
    atomic_write_json(plan_file, {"key": key, "steps": planned, "calibration": calibration})
    return planned, calibration


def arm_step_flops(arm: Arm) -> int:
    """Training FLOPs of one step of an arm, as it will run (its vocabulary adjusted to its data)."""
    cfg = prepare_data(arm.cfg).adjust_config(arm.cfg)
    return config_step_flops(cfg)


def matched_steps(configs: dict[str, Config], steps: int, match: str, step_s: dict[str, float]) -> dict[str, int]:
    """Steps per arm such that each spends what the costliest arm spends in `steps` steps."""
    if match == "steps":
        return {arm: steps for arm in configs}
    if match == "flops":
        cost = {arm: config_step_flops(cfg) for arm, cfg in configs.items()}
    else:
        cost = dict(step_s)
    budget = steps * max(cost.values())
    return {arm: max(1, round(budget / c)) for arm, c in cost.items()}


def _budgeted(cfg: Config, steps: int) -> Config:
    """`steps` steps with about ten evaluations and twenty log lines; no checkpoints but the final one."""
    return with_train(cfg, max_steps=steps, eval_every=max(1, steps // 10), log_every=max(1, steps // 20), save_every=0)


def plan_arms(arms: dict[str, Arm], steps: int, seeds: int, match: str, out: Path, progress: Progress,
              seed_offset: int = 0, paired: bool = False) -> dict[str, Arm]:
    """Each arm adjusted to its data (the budgets are of what will run), set to its share of the
    matched budget, with its calibrated step time and its seeds (`seed_lists`)."""
    adjusted = {key: prepare_data(arm.cfg).adjust_config(arm.cfg) for key, arm in arms.items()}
    planned, calibration = plan_steps(adjusted, steps, match, out, progress)
    seeds_of = seed_lists(arms, seeds, seed_offset, paired)
    budgeted = {key: dataclasses.replace(arm, cfg=_budgeted(adjusted[key], planned[key]), seeds=seeds_of[key],
                                         step_s=calibration["step_s"][key], calibration_s=calibration["rounds"][key])
                for key, arm in arms.items()}
    for key, arm in budgeted.items():
        progress(f"arm {key.upper()} {arm.name}: {arm.steps} steps x seeds {_seed_range(arm.seeds)}")
    return budgeted


def _seed_range(seeds: list[int]) -> str:
    return f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])
