"""What a study will cost before it runs (`--dry-run`): each arm's steps, seeds and FLOPs, the wall
time its calibrated step time predicts, and the disk its checkpoints take. Nothing is written to
the study's folder; the data caches (a tokenized corpus, a generated task) are built as a run
would build them."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from reasonlab.config import Config
from reasonlab.experiments.ablation import sweep_overrides
from reasonlab.experiments.arms import make_arms, seed_lists
from reasonlab.experiments.budgets import calibrate_step_times, check_budget, matched_steps
from reasonlab.experiments.suites import load_suite
from reasonlab.model import config_step_flops, param_counts
from reasonlab.training.data import prepare_data

CHECKPOINTS_PER_RUN = 2  # a study's runs keep best and final only


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One arm (or suite config): `len(seeds)` runs of `steps` steps each."""

    name: str
    steps: int
    seeds: list[int]
    flops_per_run: int
    step_s: float  # seconds a step, from a short calibration in this process
    checkpoint_bytes: int  # one checkpoint: the fp32 weights, AdamW's two moments, and an EMA copy if any

    @property
    def train_s(self) -> float:
        return self.steps * self.step_s * len(self.seeds)

    @property
    def disk_bytes(self) -> int:
        return self.checkpoint_bytes * CHECKPOINTS_PER_RUN * len(self.seeds)


def checkpoint_bytes(cfg: Config) -> int:
    copies = 3 + (1 if cfg.train.ema_decay > 0 else 0)
    return 4 * param_counts(cfg)["total"] * copies


def _step_times(configs: dict[str, Config]) -> dict[str, float]:
    """Seconds a step of each config, from a short interleaved calibration: each config's own mean.
    (One round measures no spread, so `compare`'s pooling of arms whose times do not differ beyond
    it would give every arm the first arm's time.)"""
    rounds = calibrate_step_times(configs, rounds=1, steps=2, warmup=1)["rounds"]
    return {key: statistics.fmean(times) for key, times in rounds.items()}


def _plans(names: dict[str, str], configs: dict[str, Config], steps: dict[str, int], seeds: dict[str, list[int]],
           step_s: dict[str, float]) -> list[RunPlan]:
    return [RunPlan(names[key], steps[key], seeds[key], config_step_flops(cfg) * steps[key], step_s[key],
                    checkpoint_bytes(cfg)) for key, cfg in configs.items()]


def plan_comparison(specs: list[str], steps: int, seeds: int, match: str, overrides: dict[str, Any] | None = None,
                    seed_offset: int = 0, paired: bool = False) -> list[RunPlan]:
    """The runs `compare` (or `tasks`, with task.name among the overrides) would train."""
    check_budget(steps, seeds, match, seed_offset)
    arms = make_arms(specs, overrides)
    adjusted = {key: prepare_data(arm.cfg).adjust_config(arm.cfg) for key, arm in arms.items()}
    step_s = _step_times(adjusted)
    return _plans({key: arm.name for key, arm in arms.items()}, adjusted, matched_steps(adjusted, steps, match, step_s),
                  seed_lists(arms, seeds, seed_offset, paired), step_s)


def plan_ablation(suite: str, steps: int, seeds: int, base: str | None = None,
                  overrides: dict[str, Any] | None = None, only: list[str] | None = None,
                  seed_offset: int = 0) -> list[RunPlan]:
    """The trials `ablate` would run: every config of the suite on every seed."""
    loaded = load_suite(suite, base, {**sweep_overrides(steps), **(overrides or {})}, only)
    adjusted = {name: prepare_data(cfg).adjust_config(cfg) for name, cfg in loaded.configs.items()}
    return _plans({name: name for name in adjusted}, adjusted, {name: steps for name in adjusted},
                  {name: list(range(seed_offset, seed_offset + seeds)) for name in adjusted}, _step_times(adjusted))


def plan_scale(specs: list[str], budgets: list[float], seeds: int, schedule: str, grid: list[float],
               overrides: dict[str, Any] | None = None, seed_offset: int = 0, grid_at: str = "both") -> list[RunPlan]:
    """The steps `scale` would train per arm and seed (a wsd trunk and its cooldowns, or every budget
    from scratch), and the lr grid's extra runs on each arm's first seed."""
    from reasonlab.experiments.scale import branch_points, lr_multipliers, plan_arms

    grid = lr_multipliers(grid)
    arms = plan_arms(specs, budgets, seeds, schedule, overrides, seed_offset)
    step_s = _step_times({key: arm.cfg for key, arm in arms.items()})
    plans = []
    for key, arm in arms.items():
        points = branch_points(arm) if schedule == "wsd" else {}
        per_seed = arm.steps[-1] + sum(s - points.get(i, 0) for i, s in enumerate(arm.steps[:-1]))
        size = checkpoint_bytes(arm.cfg)
        plans.append(RunPlan(arm.name, per_seed, list(arm.seeds), per_seed * arm.step_flops, step_s[key], size))
        if len(grid) > 1:  # the other multipliers at the smallest budget (and the largest), on the first seed
            trunk = arm.steps[-1] if grid_at == "both" else points.get(0, 0)
            extra = (len(grid) - 1) * (trunk + arm.steps[0] - points.get(0, 0))
            plans.append(RunPlan(f"{arm.name}, lr grid", extra, list(arm.seeds[:1]), extra * arm.step_flops,
                                 step_s[key], size))
    return plans


def format_plan(title: str, plans: list[RunPlan], repeats: int = 1) -> str:
    """The plan as a table and its totals; `repeats`: how many times the whole table runs (calibrate)."""
    header = ["arm", "steps", "seeds", "FLOPs a run", "step ms", "training time", "disk"]
    rows = [[p.name, f"{p.steps:,}", _seeds(p.seeds), f"{p.flops_per_run:.2e}", f"{1000 * p.step_s:.0f}",
             _duration(p.train_s), _size(p.disk_bytes)] for p in plans]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    runs = repeats * sum(len(p.seeds) for p in plans)
    total_s = repeats * sum(p.train_s for p in plans)
    disk = repeats * sum(p.disk_bytes for p in plans)
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths)),
             *("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows),
             f"{'every row ' + str(repeats) + ' times: ' if repeats > 1 else ''}{runs} runs, about "
             f"{_duration(total_s)} of training (step times from a short calibration here; evaluations come on "
             f"top), {_size(disk)} of checkpoints; nothing was written"]
    return "\n".join(lines)


def _seeds(seeds: list[int]) -> str:
    return f"{seeds[0]}..{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{seconds:.0f} s" if seconds < 120 else f"{minutes // 60} h {minutes % 60:02d} min"


def _size(n: int) -> str:
    return f"{n / 2**20:,.0f} MB" if n < 2**30 else f"{n / 2**30:,.1f} GB"
