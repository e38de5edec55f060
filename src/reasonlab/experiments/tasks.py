"""`reasonlab tasks`: two or more arms on a generated reasoning task, judged on exact match at equal compute.

The comparison is `compare`'s (matched budgets, independent seeds, Welch verdicts; with more than
two arms every arm against the first, Holm-corrected), judged on val exact match. Afterwards each
run's final model is scored on the val split (the train levels) and on the harder test split,
level by level; recursive models are also scored with a fixed number of segments from 1 to twice
what they trained with, and at a forced inner depth from 1 to four times the depth they trained
at (mor: to its routers' count, its most), to see whether more thinking at test time helps. The
curves are taken at doubling points (1, 2, 4, ..., with the trained value and the maximum), as
test-time compute is plotted in the field: each point costs as many passes as its value, so every
integer would cost about twice as much for little.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from reasonlab import api
from reasonlab.data.corpus import cache_root
from reasonlab.errors import UserError
from reasonlab.experiments.aggregate import aggregate_arms
from reasonlab.experiments.arms import Arm, make_arms
from reasonlab.experiments.budgets import check_budget, plan_arms
from reasonlab.experiments.compare import write_results
from reasonlab.experiments.judge import judge
from reasonlab.experiments.results import (
    ComparisonArm,
    Estimate,
    Example,
    Judged,
    SeedScores,
    TaskArm,
    TaskInfo,
    TaskResult,
    TaskScores,
)
from reasonlab.experiments.runs import Progress, train_arms
from reasonlab.experiments.stats import mean_ci, over_seeds
from reasonlab.io import atomic_write_json
from reasonlab.report.tasks import write_task_report
from reasonlab.runtime import autocast_factory, resolve_precision
from reasonlab.tasks.dataset import TaskData
from reasonlab.tasks.evaluate import SplitResult

RESULTS = "tasks.json"
METRIC = "exact_match"  # what the head to head judges
SHARE = (0.0, 1.0)  # exact match and accuracy are shares: their intervals are clipped to it
CURVES = ("segments_curve", "depth_curve")


def _grouped(data: TaskData, scored: dict[str, SplitResult], attribute: str) -> dict[str, dict[str, float]]:
    """Exact match and per-token accuracy of one model over the val and test splits, by the
    examples' `level` or `difficulty`."""
    groups: dict[int, list[tuple[bool, float]]] = {}
    for split, result in scored.items():
        for example, correct, acc in zip(data.splits[split].examples, result.correct, result.token_accuracy):
            groups.setdefault(getattr(example, attribute), []).append((correct, acc))
    return {str(level): {"exact_match": sum(c for c, _ in g) / len(g), "accuracy": sum(a for _, a in g) / len(g),
                         "n": len(g)}
            for level, g in sorted(groups.items())}


def _examples(data: TaskData, scored: dict[str, SplitResult]) -> dict[str, Example]:
    """One solved and one failed instance, from the test split where it has one."""
    picked: dict[str, Example] = {}
    for split in ("test", "val"):
        result = scored[split]
        for example, prediction, correct in zip(data.splits[split].examples, result.predictions, result.correct):
            kind = "solved" if correct else "failed"
            if kind not in picked:
                picked[kind] = Example(split, example.level, data.task.render(example.prompt),
                                       data.task.render(example.answer), data.task.render(prediction))
    return picked


def curve_points(trained: int, factor: int, cap: int | None = None) -> list[int]:
    """1, 2, 4, ... up to `factor` x `trained` (or `cap`, what the model can run, where lower), with
    `trained` and the maximum themselves."""
    top = factor * trained if cap is None else min(factor * trained, cap)
    return sorted({2 ** i for i in range(top.bit_length())} | {trained, top})


def _score_run(data: TaskData, run_dir: Path, batch_size: int) -> SeedScores:
    """One run's final model on val and test: overall, by level (and by difficulty where the task has its
    own), one solved and one failed example, and for a recursive model the segments and depth curves."""
    loaded = api.load(run_dir / "checkpoints" / "final")
    autocast = autocast_factory(resolve_precision(loaded.config.train.precision, loaded.device), loaded.device)

    def score(split: str, segments: int | None = None, depth: int | None = None) -> SplitResult:
        return data.score(loaded.model, split, batch_size, loaded.device, autocast, segments, depth)

    scored = {split: score(split) for split in ("val", "test")}
    splits = {split: {k: v for k, v in r.metrics.items() if k != "tokens"} for split, r in scored.items()}
    examples = [e for split in ("val", "test") for e in data.splits[split].examples]
    by_difficulty = _grouped(data, scored, "difficulty") if len({e.difficulty for e in examples}) > 1 and any(
        e.difficulty != e.level for e in examples) else None
    out = SeedScores(**splits, by_level=_grouped(data, scored, "level"), by_difficulty=by_difficulty,
                     examples=_examples(data, scored))
    if loaded.config.model.arch == "baseline":
        return out
    depth = loaded.model.trained_depth
    return dataclasses.replace(
        out, trained_depth=depth,
        segments_curve={str(k): {split: score(split, k).metrics["exact_match"] for split in ("val", "test")}
                        for k in curve_points(loaded.config.recursion.max_segments, 2)},
        depth_curve={str(k): {split: score(split, depth=k).metrics["exact_match"] for split in ("val", "test")}
                     for k in curve_points(depth, 4, loaded.model.max_depth)})


def _aggregate(per_seed: list[SeedScores]) -> TaskScores:
    """Means and t-intervals over seeds of every score."""
    def over(values: Any) -> Estimate:
        return Estimate(**mean_ci(list(values), bounds=SHARE))

    first = per_seed[0]
    splits = {split: {k: over(getattr(s, split)[k] for s in per_seed) for k in ("exact_match", "accuracy")}
              for split in ("val", "test")}
    groups = {g: None if getattr(first, g) is None else
              {key: over(getattr(s, g)[key]["exact_match"] for s in per_seed) for key in getattr(first, g)}
              for g in ("by_level", "by_difficulty")}
    curves = {c: None if getattr(first, c) is None else
              {k: {split: over(getattr(s, c)[k][split] for s in per_seed) for split in ("val", "test")}
               for k in getattr(first, c)} for c in CURVES}
    return TaskScores(**splits, **groups, **curves)


def _task_data(arms: dict[str, Arm]) -> TaskData:
    """The splits every arm trains and is scored on; the arms must agree on every task setting but
    `task.augment`, which changes how the train split is seen, not the instances (so augmentation
    on against off is a comparison of arms)."""
    first, *others = (dataclasses.replace(arm.cfg.task, augment=False) for arm in arms.values())
    data = next(iter(arms.values())).cfg.data
    for other in others:
        if other != first:
            differ = ", ".join(f"task.{k}" for k, v in vars(first).items() if getattr(other, k) != v)
            raise UserError(f"the arms must train on the same task; their configs differ in {differ}")
    return TaskData(first, cache_root(data))


def _instances(data: TaskData) -> dict[str, int]:
    return {split: len(s.examples) for split, s in data.splits.items()}


def _describe(task: str, data: TaskData) -> str:
    """How many instances each split holds, and which levels train and which test."""
    n, levels = _instances(data), data.levels
    return (f"task {task}: {n['train']} train, {n['val']} val, {n['test']} test instances; "
            f"{data.task.level_name} {levels['train'][0]}-{levels['train'][1]} in training, "
            f"{levels['test'][0]}-{levels['test'][1]} in test")


def _task_section(task: str, data: TaskData) -> TaskInfo:
    return TaskInfo(task, data.task.description, data.task.level_name, data.task.difficulty_name, data.cfg.format,
                    vars(data.cfg), data.levels, _instances(data))


def _score_arm(data: TaskData, key: str, arm: Arm, judged: ComparisonArm, batch_size: int,
               progress: Progress) -> TaskArm:
    """Every seed's final model scored on val and test, with the means over seeds."""
    per_seed = {seed: _score_run(data, Path(run.run_dir), batch_size) for seed, run in judged.per_seed.items()}
    progress(f"arm {key.upper()} {arm.name}: test exact match "
             + ", ".join(f"{s.test['exact_match']:.2%}" for s in per_seed.values()))
    recursive = arm.cfg.model.arch != "baseline"
    first = next(iter(per_seed.values()))
    return TaskArm(name=arm.name, arch=arm.cfg.model.arch, max_steps=arm.steps, seeds=arm.seeds,
                   params=judged.params, flops_per_token=judged.flops_per_token,
                   inference_layers=judged.inference_layers,
                   flops=Estimate(**over_seeds([run.summary for run in judged.per_seed.values()], "flops")),
                   per_seed=per_seed, aggregate=_aggregate(list(per_seed.values())),
                   trained_segments=arm.cfg.recursion.max_segments if recursive else None,
                   trained_depth=first.trained_depth, examples=first.examples)


def run_task_study(task: str, specs: list[str], steps: int, seeds: int, match: str, out: str | Path,
                   overrides: dict[str, Any] | None = None, progress: Progress = print, seed_offset: int = 0,
                   paired: bool = False, workers: int = 1) -> TaskResult:
    """Train the arms (`specs`, the first the reference) on `task` and write tasks.json + TASK_RESULTS.md
    beside the comparison's files; `workers` local processes share the runs (their checkpoints are
    scored here, so the runs stay on this machine)."""
    check_budget(steps, seeds, match, seed_offset)
    arms = make_arms(specs, {**(overrides or {}), "task.name": task})
    data = _task_data(arms)
    progress(_describe(task, data))
    out = Path(out)
    arms = plan_arms(arms, steps, seeds, match, out, progress, seed_offset, paired)
    runs = train_arms(arms, out, progress, workers)
    comparison = judge(aggregate_arms(arms, runs, METRIC), steps, match, METRIC, paired)
    write_results(comparison, out)
    batch_size = arms["a"].cfg.train.batch_size
    scored = {key: _score_arm(data, key, arm, comparison.arms[key], batch_size, progress) for key, arm in arms.items()}
    judged = {f.name: getattr(comparison, f.name) for f in dataclasses.fields(Judged) if f.name != "arms"}
    result = TaskResult(**judged, task=_task_section(task, data), arms=scored)
    atomic_write_json(out / RESULTS, result.to_dict())
    write_task_report(result, out)
    return result
