"""`reasonlab scale`: arms x training-compute budgets x seeds, each arm's loss fitted against compute.

A budget is training FLOPs; each arm trains round(budget / its FLOPs per step) steps to it, so
arms of different cost meet at equal compute. With `schedule="wsd"` (the default) one
warmup-stable-decay run per arm, seed and learning rate goes to the largest budget and pauses
at each smaller budget's cooldown start; each smaller budget is a cooldown branched from there
(`training.branch`), the run of that length bit for bit. A K-budget study then costs about one
largest run plus the cooldowns per arm and seed, not the sum of all budgets. With
`schedule="independent"` every budget is trained from scratch with the arm's own schedule.

With an lr grid (multipliers of each arm's train.lr, 1 among them), the grid is first trained
on the first seed at the smallest budget, and unless told otherwise at the largest; each budget
then uses the multiplier that did best (lowest val loss) at the nearer of the two in log-compute.

The unit of work is (arm, lr multiplier, seed): a trunk and its branches, in folders
`runs/<arm>/lr<m>/s<seed>/b<budget>`. Units go through the sweep queue (`experiments/sweep.py`),
so they spread over `--workers` and over machines sharing `--storage`, resume after a kill and
reuse what finished.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonlab.config import Config, config_from_dict
from reasonlab.errors import Incomplete, UserError, WriteFailed
from reasonlab.experiments.arms import make_arms
from reasonlab.experiments.runs import Progress, with_train
from reasonlab.experiments.sweep import (
    Key,
    SweepSpec,
    finished_trials,
    open_study,
    queue,
    run_until_settled,
    shown_url,
)
from reasonlab.io import atomic_write_json
from reasonlab.model import config_step_flops
from reasonlab.outdir import claim_out
from reasonlab.training import trainer
from reasonlab.training.branch import branch
from reasonlab.training.checkpoint import latest_checkpoint, read_state
from reasonlab.training.data import prepare_data
from reasonlab.training.optim import cooldown_start

if TYPE_CHECKING:
    from reasonlab.experiments.scaling_result import ScalingResult

SCHEDULES = ("wsd", "independent")
GRID_AT = ("smallest", "both")  # where the lr grid is tried: the smallest budget, or it and the largest
PLAN = "scale_plan.json"
MIN_BUDGETS = 3
MIN_SPAN = 4.0


@dataclasses.dataclass(frozen=True)
class ScaleArm:
    """One arm of the study: its name, config (fitted to its data) and steps at each budget."""

    key: str
    name: str
    source: str
    cfg: Config
    step_flops: int  # planned training FLOPs of one step (every segment run)
    steps: tuple[int, ...]  # at each budget, smallest first
    seeds: tuple[int, ...]


def budget_points(values: list[float], span: float | None = None, max_flops: float | None = None) -> list[float]:
    """The budgets in FLOPs, smallest first: `values` themselves, or with `span` and `max_flops`
    one count K and K points log-spaced from max_flops / span to max_flops."""
    if span is not None or max_flops is not None:
        if len(values) != 1 or not float(values[0]).is_integer() or span is None or max_flops is None:
            raise UserError("--budgets K with --span and --max-flops: K log-spaced budgets (e.g. --budgets 5 "
                            "--span 32 --max-flops 5e13); or --budgets F,F,F of explicit FLOPs without them")
        count = int(values[0])
        if count < MIN_BUDGETS:
            raise UserError(f"--budgets: a fit needs at least {MIN_BUDGETS} budgets, got {count}")
        if not span >= MIN_SPAN:
            raise UserError(f"--span must be >= {MIN_SPAN:g} (a narrower range cannot show a trend), got {span:g}")
        if not max_flops > 0:
            raise UserError(f"--max-flops must be > 0, got {max_flops:g}")
        return [max_flops * span ** (i / (count - 1) - 1) for i in range(count)]
    points = sorted(set(values))
    if len(points) < MIN_BUDGETS:
        raise UserError(f"--budgets: a fit needs at least {MIN_BUDGETS} different budgets, got {len(points)}")
    if points[0] <= 0:
        raise UserError(f"--budgets must be > 0 FLOPs, got {points[0]:g}")
    if points[-1] / points[0] < MIN_SPAN:
        raise UserError(f"--budgets span {points[-1] / points[0]:.3g}x; at least {MIN_SPAN:g}x is needed to show "
                        "a trend")
    return points


def lr_multipliers(values: list[float] | None) -> list[float]:
    """The lr grid: multipliers of each arm's train.lr, 1 among them (the arm as configured)."""
    grid = sorted(set(values or [1.0]))
    if 1.0 not in grid:
        raise UserError(f"--lr-grid must include 1 (each arm's own lr), got {','.join(f'{g:g}' for g in grid)}")
    if grid[0] <= 0:
        raise UserError(f"--lr-grid multipliers must be > 0, got {grid[0]:g}")
    return grid


def check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise UserError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def plan_arms(specs: list[str], budgets: list[float], seeds: int, schedule: str,
              overrides: dict[str, Any] | None = None, seed_offset: int = 0) -> dict[str, ScaleArm]:
    """Every arm fitted to its data, with its steps at each budget and its seeds (arm i runs seeds
    offset + i*seeds .. : independent runs, as compare's arms)."""
    check_schedule(schedule)
    if seeds < 1:
        raise UserError(f"seeds must be >= 1, got {seeds}")
    if seed_offset < 0:
        raise UserError(f"seed_offset must be >= 0, got {seed_offset}")
    arms = {}
    for i, (key, arm) in enumerate(make_arms(specs, overrides).items()):
        # a budget is trained to its end: early stopping would leave a branch point unreached
        cfg = with_train(prepare_data(arm.cfg).adjust_config(arm.cfg), early_stop_patience=0)
        if schedule == "wsd":
            cfg = with_train(cfg, schedule="wsd")
        step = config_step_flops(cfg)
        if budgets[0] < step:
            raise UserError(f"budget {budgets[0]:.3g} FLOPs is less than one step of arm {arm.name} "
                            f"({step:.3g} FLOPs): raise the smallest budget")
        steps = tuple(max(1, round(b / step)) for b in budgets)
        if len(set(steps)) < len(steps):
            raise UserError(f"budgets {', '.join(f'{b:.3g}' for b in budgets)} give arm {arm.name} the steps "
                            f"{', '.join(map(str, steps))}; spread the budgets so that each is a different run")
        first = seed_offset + i * seeds
        arms[key] = ScaleArm(key, arm.name, arm.source, cfg, step, steps, tuple(range(first, first + seeds)))
    return arms


def branch_points(arm: ScaleArm) -> dict[int, int]:
    """Budget index -> the trunk step its cooldown branches from (every budget but the largest
    whose cooldown starts after step 0 and before its end; the others train from scratch)."""
    points = {}
    for i, steps in enumerate(arm.steps[:-1]):
        start = cooldown_start(dataclasses.replace(arm.cfg.train, max_steps=steps))
        if 1 <= start < steps:
            points[i] = start
    return points


def unit_name(key: str, lr: float, grid: bool = False) -> str:
    """The queue's name of an arm at an lr multiplier (the grid's units apart: same folders)."""
    return f"{key}@lr{lr:g}" + ("#grid" if grid else "")


def unit_dir(key: str, lr: float) -> str:
    return f"runs/{key}/lr{lr:g}"


def run_unit(spec: SweepSpec, name: str, seed: int) -> dict[str, Any]:
    """One (arm, lr, seed) unit of the queue: its trunk as far as its budgets need, then each budget's
    run (a branch, the trunk itself, or a run from scratch); finished runs are reused. Returns each
    budget's record (`_record`)."""
    unit = spec.plan["units"][name]
    cfg = with_train(config_from_dict(spec.configs[name]), seed=seed)
    cfg = with_train(cfg, tracker_group=cfg.train.tracker_group or spec.out.resolve().name)
    steps, wanted = unit["steps"], unit["budgets"]
    root = spec.out / unit["dir"] / f"s{seed}"
    last = len(steps) - 1
    if not wanted:
        raise UserError(f"unit {name} has no budgets to train in this stage of the study")
    points = {int(i): k for i, k in unit["branch_points"].items()}
    trunk = root / f"b{last}"
    result: dict[str, Any] = {"runs": {}}
    if points and any(i in points or i == last for i in wanted):
        until = None if last in wanted else max(points[i] for i in wanted if i in points)
        _trunk(with_train(cfg, max_steps=steps[last]), trunk, sorted(set(points.values())), until)
        result["trunk"] = _trunk_record(trunk)
    for i in wanted:
        run_dir = root / f"b{i}"
        source = None
        if i in points:
            source = trunk / "checkpoints" / f"step_{points[i]}"
            if not (run_dir / "summary.json").is_file():
                branch(trunk, points[i], run_dir, steps[i])
        elif not (run_dir / "summary.json").is_file():
            _fresh(with_train(cfg, max_steps=steps[i]), run_dir)
        result["runs"][str(i)] = _record(run_dir, source)
    return result


def _trunk(cfg: Config, run_dir: Path, stops: list[int], until: int | None) -> None:
    """Train the largest budget's run, pausing with a checkpoint at every branch point, up to
    `until` (None: to its end)."""
    for stop in [*(k for k in stops if until is None or k <= until), *([None] if until is None else [])]:
        if (run_dir / "summary.json").is_file():
            return
        if stop is not None and (run_dir / "checkpoints" / f"step_{stop}").is_dir():
            continue
        if (run_dir / "config.yaml").is_file():
            trainer.resume(run_dir, quiet=True, stop_at=stop)
        else:
            _fresh(cfg, run_dir, stop)


def _fresh(cfg: Config, run_dir: Path, stop_at: int | None = None) -> None:
    """Train `run_dir` from scratch, or resume it where a kill left it."""
    if (run_dir / "config.yaml").is_file():
        trainer.resume(run_dir, quiet=True, stop_at=stop_at)
        return
    if run_dir.exists():  # what a kill left before the run wrote its config: nothing to resume
        shutil.rmtree(run_dir)
    trainer.train(cfg, run_dir, quiet=True, stop_at=stop_at)


def _trunk_record(run_dir: Path) -> dict[str, Any]:
    """What a trunk has trained so far (to its end, or to the pause its unit needed): a trunk that
    stops short of the largest budget is in no budget's record, and its steps were spent all the same."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        done = json.loads(summary.read_text())
        return {"run_dir": str(run_dir), "spent_flops": done["flops"], "spent_time_s": done["train_time_s"]}
    state = read_state(latest_checkpoint(run_dir))
    return {"run_dir": str(run_dir), "spent_flops": state.flops, "spent_time_s": state.train_time_s}


def _record(run_dir: Path, source: Path | None) -> dict[str, Any]:
    """A budget's run as the study reads it: steps, training FLOPs, final val metrics, and what this
    run itself spent (a branch did not train the steps it took from its trunk)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    before = read_state(source) if source is not None else None
    return {"run_dir": str(run_dir), "steps": summary["steps"], "flops": summary["flops"],
            "final_val": summary["final_val"],
            "train_time_s": summary["train_time_s"],
            "spent_flops": summary["flops"] - (before.flops if before else 0),
            "spent_time_s": summary["train_time_s"] - (before.train_time_s if before else 0.0)}


@dataclasses.dataclass(frozen=True)
class Stage:
    """The units one round of the queue runs: name -> (arm key, lr multiplier, budgets), and the seeds."""

    units: dict[str, tuple[str, float, tuple[int, ...]]]
    seeds: dict[str, tuple[int, ...]]

    def keys(self) -> list[Key]:
        return [(name, seed) for name in self.units for seed in self.seeds[name]]


def grid_stage(arms: dict[str, ScaleArm], grid: list[float], at: str = "both") -> Stage:
    """Every lr multiplier of every arm at the smallest budget (and with `at` "both" the largest), on
    the arm's first seed. At the smallest alone a wsd grid costs a short trunk and a cooldown per
    multiplier; at the largest, a whole run."""
    units, seeds = {}, {}
    for key, arm in arms.items():
        for lr in grid:
            name = unit_name(key, lr, grid=True)
            units[name] = (key, lr, _grid_ends(len(arm.steps), at))
            seeds[name] = arm.seeds[:1]
    return Stage(units, seeds)


def _grid_ends(budgets: int, at: str) -> tuple[int, ...]:
    if at not in GRID_AT:
        raise UserError(f"the lr grid is tried at one of {', '.join(GRID_AT)}, got {at!r}")
    return (0, budgets - 1) if at == "both" else (0,)


def study_stage(arms: dict[str, ScaleArm], chosen: dict[str, list[float]]) -> Stage:
    """Every arm at every budget on every seed, each budget at its chosen lr multiplier."""
    units, seeds = {}, {}
    for key, arm in arms.items():
        for lr in sorted(set(chosen[key])):
            name = unit_name(key, lr)
            units[name] = (key, lr, tuple(i for i, m in enumerate(chosen[key]) if m == lr))
            seeds[name] = arm.seeds
    return Stage(units, seeds)


def choose_lr(arms: dict[str, ScaleArm], grid: list[float], budgets: list[float],
              finished: dict[Key, dict[str, Any]], at: str = "both") -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Each budget's lr multiplier per arm, from the grid's val losses at the smallest budget and, where
    it was tried there, the largest (the nearer in log-compute decides); and the grid's record."""
    chosen, record = {}, {}
    ends = _grid_ends(len(budgets), at)
    for key, arm in arms.items():
        losses: dict[int, dict[str, float]] = {end: {} for end in ends}
        for lr in grid:
            result = finished.get((unit_name(key, lr, grid=True), arm.seeds[0]))
            for end in ends:
                if result is not None:
                    losses[end][f"{lr:g}"] = result["runs"][str(end)]["final_val"]["loss"]
        best = {end: float(min(found, key=found.get)) if (found := losses[end]) else 1.0 for end in ends}
        chosen[key] = [best[0] if _nearer_the_smallest(b, budgets) else best[ends[-1]] for b in budgets]
        unfinished = [f"{lr:g}" for lr in grid if (unit_name(key, lr, grid=True), arm.seeds[0]) not in finished]
        record[key] = {"losses": {"smallest": losses[0], "largest": losses.get(ends[-1]) if at == "both" else None},
                       "unfinished": unfinished,
                       "best": {"smallest": best[0], "largest": best[ends[-1]] if at == "both" else None},
                       "moved": best[0] != best[ends[-1]] if at == "both" else None, "seed": arm.seeds[0]}
    return chosen, record


def _nearer_the_smallest(budget: float, budgets: list[float]) -> bool:
    """Whether `budget` is nearer the smallest budget than the largest in log-compute; a budget midway
    (to a relative 1e-9, as the middle of an odd number of log-spaced budgets is) goes to the largest."""
    below, above = math.log(budget / budgets[0]), math.log(budgets[-1] / budget)
    return below < above - 1e-9 * max(1.0, abs(above))


def sweep_spec(arms: dict[str, ScaleArm], grid: list[float], stage: Stage, schedule: str, out: Path,
               storage: str | None, study_name: str) -> SweepSpec:
    """The queue's spec for one stage. It names every unit the study can have (each arm at each lr,
    grid and study), not just this stage's: the queue's trials choose among the names, and one study
    keeps one set of them from stage to stage and run to run. Its workers claim this stage's units
    only (a unit of the other stage may be waiting after a kill, or queued by another machine)."""
    configs, units = {}, {}
    for key, arm in arms.items():
        points = {str(i): k for i, k in branch_points(arm).items()} if schedule == "wsd" else {}
        for lr in grid:
            for name in (unit_name(key, lr), unit_name(key, lr, grid=True)):
                configs[name] = with_train(arm.cfg, lr=arm.cfg.train.lr * lr).to_dict()
                wanted = stage.units[name][2] if name in stage.units else ()
                units[name] = {"dir": unit_dir(key, lr), "steps": list(arm.steps), "budgets": list(wanted),
                               "branch_points": points}
    return SweepSpec(storage or f"sqlite:///{(out / 'study.db').resolve()}", study_name, out, configs,
                     job=run_unit, plan={"units": units}, keys=stage.keys())


def claim(out: Path, arms: dict[str, ScaleArm], budgets: list[float], schedule: str, grid: list[float],
          grid_at: str) -> str:
    """Claim `out` for this study (refusing one of other arms, budgets or schedule); the study's name."""
    key = {"arms": {k: a.cfg.to_dict() for k, a in arms.items()}, "seeds": {k: a.seeds for k, a in arms.items()},
           "budgets": budgets, "schedule": schedule, "lr_grid": grid, "lr_grid_at": grid_at}
    claim_out(out, "scaling", key)
    name = f"scale-{json.loads((out / '.reasonlab.json').read_text())['fingerprint']}"
    try:
        atomic_write_json(out / PLAN, {**key, "study_name": name})
    except WriteFailed as exc:
        raise UserError(str(exc)) from None
    return name


def run_stage(arms: dict[str, ScaleArm], grid: list[float], stage: Stage, schedule: str, out: Path,
              storage: str | None, study_name: str, workers: int, progress: Progress) -> dict[Key, dict[str, Any]]:
    spec = sweep_spec(arms, grid, stage, schedule, out, storage, study_name)
    study = open_study(spec)
    queued = queue(spec, study, stage.keys())
    progress(f"{len(stage.keys())} units (arm x lr x seed): {len(stage.keys()) - queued} done or in the queue, "
             f"{queued} queued now, in study {study_name} in {shown_url(spec.storage_url)}")
    run_until_settled(spec, study, stage.keys(), workers, progress)
    return finished_trials(study)


def run_scale(specs: list[str], budgets: list[float], seeds: int, out: str | Path, schedule: str = "wsd",
              grid: list[float] | None = None, overrides: dict[str, Any] | None = None, workers: int = 1,
              storage: str | None = None, seed_offset: int = 0, resamples: int = 1000, grid_at: str = "both",
              progress: Progress = print) -> ScalingResult:
    """Train every arm at every budget on every seed, fit each arm's loss against compute, compare
    the arms at each budget and where their fits cross; write scaling.json, SCALING.md and
    scaling.png to `out`. Returns the result as written."""
    from reasonlab.experiments.scaling_result import build_result, write_result

    grid = lr_multipliers(grid)
    _grid_ends(len(budgets), grid_at)
    if workers < 1:
        raise UserError(f"workers must be >= 1, got {workers}")
    arms = plan_arms(specs, budgets, seeds, schedule, overrides, seed_offset)
    out = Path(out)
    study_name = claim(out, arms, budgets, schedule, grid, grid_at)
    for arm in arms.values():
        progress(f"arm {arm.key.upper()} {arm.name}: steps {', '.join(map(str, arm.steps))} at budgets "
                 f"{', '.join(f'{b:.3g}' for b in budgets)} FLOPs, seeds {arm.seeds[0]}..{arm.seeds[-1]}")
    lr_record = None
    chosen = {key: [1.0] * len(budgets) for key in arms}
    if len(grid) > 1:
        where = "the smallest and the largest budget" if grid_at == "both" else "the smallest budget"
        progress(f"lr grid {', '.join(f'{g:g}' for g in grid)} at {where}")
        finished = run_stage(arms, grid, grid_stage(arms, grid, grid_at), schedule, out, storage, study_name,
                             workers, progress)
        chosen, lr_record = choose_lr(arms, grid, budgets, finished, grid_at)
    stage = study_stage(arms, chosen)
    finished = run_stage(arms, grid, stage, schedule, out, storage, study_name, workers, progress)
    grid_keys = grid_stage(arms, grid, grid_at).keys() if len(grid) > 1 else []
    missing = [f"{name} seed {seed}" for name, seed in [*grid_keys, *stage.keys()] if (name, seed) not in finished]
    result = build_result(arms, budgets, schedule, grid, chosen, lr_record, finished, resamples)
    write_result(result, out)
    if missing:
        total = len(grid_keys) + len(stage.keys())
        raise Incomplete(f"{len(missing)} of {total} units did not finish ({', '.join(missing[:5])}); {out} reports "
                         "the rest; rerun the command to retry them")
    return result
