"""`reasonlab tasks`: two or more arms on a generated reasoning task, judged on exact match at equal compute.

The comparison is `compare`'s (matched budgets, independent seeds, Welch verdicts; with more than
two arms every arm against the first, Holm-corrected), judged on val exact match. Afterwards each
run's final model is scored on the val split (the train levels) and on the harder test split,
level by level; recursive models are also scored with a fixed number of segments from 1 to twice
what they trained with, and at a forced inner depth from 1 to four times the depth they trained
at, to see whether more thinking at test time helps. The curves are taken at doubling points
(1, 2, 4, ..., with the trained value and the maximum), as test-time compute is plotted in the
field: each point costs as many passes as its value, so every integer would cost about twice as
much for little.
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
from reasonlab.experiments.runs import Progress, train_arms
from reasonlab.experiments.stats import over_seeds
from reasonlab.io import atomic_write_json
from reasonlab.report.tasks import write_task_report
from reasonlab.runtime import autocast_factory, resolve_precision
from reasonlab.tasks.dataset import TaskData
from reasonlab.tasks.evaluate import SplitResult

RESULTS = "tasks.json"
METRIC = "exact_match"  # what the head to head judges
SHARE = (0.0, 1.0)  # exact match and accuracy are shares: their intervals are clipped to it
JUDGED = ("match", "n_seeds", "ci_level", "paired", "metric", "verdicts", "winner",  # repeated from comparison.json
          "reference", "pairs")  # (the last two, and no verdicts or winner, where more than two arms were judged)
SIZE = ("params", "flops_per_token", "inference_layers")  # repeated from comparison.json's arms (more than two)


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


def _examples(data: TaskData, scored: dict[str, SplitResult]) -> dict[str, dict[str, Any]]:
    """One solved and one failed instance, from the test split where it has one."""
    picked: dict[str, dict[str, Any]] = {}
    for split in ("test", "val"):
        result = scored[split]
        for example, prediction, correct in zip(data.splits[split].examples, result.predictions, result.correct):
            kind = "solved" if correct else "failed"
            if kind not in picked:
                picked[kind] = {"split": split, "level": example.level, "prompt": data.task.render(example.prompt),
                                "answer": data.task.render(example.answer), "prediction": data.task.render(prediction)}
    return picked


def curve_points(trained: int, factor: int) -> list[int]:
    """1, 2, 4, ... up to `factor` x `trained`, with `trained` and the maximum themselves."""
    top = factor * trained
    return sorted({2 ** i for i in range(top.bit_length())} | {trained, top})


def _score_run(data: TaskData, run_dir: Path, batch_size: int) -> dict[str, Any]:
    """One run's final model on val and test: overall, by level (and by difficulty where the task has its
    own), one solved and one failed example, and for a recursive model the segments and depth curves."""
    loaded = api.load(run_dir / "checkpoints" / "final")
    autocast = autocast_factory(resolve_precision(loaded.config.train.precision, loaded.device), loaded.device)

    def score(split: str, segments: int | None = None, depth: int | None = None) -> SplitResult:
        return data.score(loaded.model, split, batch_size, loaded.device, autocast, segments, depth)

    scored = {split: score(split) for split in ("val", "test")}
    out: dict[str, Any] = {split: {k: v for k, v in r.metrics.items() if k != "tokens"} for split, r in scored.items()}
    out["by_level"] = _grouped(data, scored, "level")
    examples = [e for split in ("val", "test") for e in data.splits[split].examples]
    if len({e.difficulty for e in examples}) > 1 and any(e.difficulty != e.level for e in examples):
        out["by_difficulty"] = _grouped(data, scored, "difficulty")
    out["examples"] = _examples(data, scored)
    if loaded.config.model.arch != "baseline":
        out["segments_curve"] = {str(k): {split: score(split, k).metrics["exact_match"] for split in ("val", "test")}
                                 for k in curve_points(loaded.config.recursion.max_segments, 2)}
        out["trained_depth"] = loaded.model.trained_depth
        out["depth_curve"] = {str(k): {split: score(split, depth=k).metrics["exact_match"] for split in ("val", "test")}
                              for k in curve_points(loaded.model.trained_depth, 4)}
    return out


def _aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and t-intervals over seeds of every score."""
    agg: dict[str, Any] = {split: {k: over_seeds(per_seed, split, k, bounds=SHARE) for k in ("exact_match", "accuracy")}
                           for split in ("val", "test")}
    for grouping in ("by_level", "by_difficulty"):
        if grouping in per_seed[0]:
            agg[grouping] = {key: over_seeds(per_seed, grouping, key, "exact_match", bounds=SHARE)
                             for key in per_seed[0][grouping]}
    for curve in ("segments_curve", "depth_curve"):
        if curve in per_seed[0]:
            agg[curve] = {k: {split: over_seeds(per_seed, curve, k, split, bounds=SHARE) for split in ("val", "test")}
                          for k in per_seed[0][curve]}
    return agg


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


def _task_section(task: str, data: TaskData) -> dict[str, Any]:
    return {"name": task, "description": data.task.description, "level_name": data.task.level_name,
            "difficulty_name": data.task.difficulty_name, "format": data.cfg.format, "config": vars(data.cfg),
            "levels": data.levels, "instances": _instances(data)}


def _score_arm(data: TaskData, key: str, arm: Arm, runs: dict[str, dict[str, Any]], batch_size: int,
               progress: Progress) -> dict[str, Any]:
    """Every seed's final model scored on val and test, with the means over seeds."""
    per_seed = {seed: _score_run(data, Path(run["run_dir"]), batch_size) for seed, run in runs.items()}
    progress(f"arm {key.upper()} {arm.name}: test exact match "
             + ", ".join(f"{s['test']['exact_match']:.2%}" for s in per_seed.values()))
    recursive = arm.cfg.model.arch != "baseline"
    first = next(iter(per_seed.values()))
    return {"name": arm.name, "arch": arm.cfg.model.arch, "max_steps": arm.steps, "seeds": arm.seeds,
            "flops": over_seeds([run["summary"] for run in runs.values()], "flops"), "per_seed": per_seed,
            "aggregate": _aggregate(list(per_seed.values())),
            "trained_segments": arm.cfg.recursion.max_segments if recursive else None,
            "trained_depth": first.get("trained_depth"), "examples": first["examples"]}


def run_task_study(task: str, specs: list[str], steps: int, seeds: int, match: str, out: str | Path,
                   overrides: dict[str, Any] | None = None, progress: Progress = print, seed_offset: int = 0,
                   paired: bool = False, workers: int = 1) -> dict[str, Any]:
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
    scored = {key: {**_score_arm(data, key, arm, runs[key], batch_size, progress),
                    **{k: comparison["arms"][key][k] for k in SIZE if k in comparison["arms"][key]}}
              for key, arm in arms.items()}
    result = {"task": _task_section(task, data), **{k: comparison[k] for k in JUDGED if k in comparison},
              "arms": scored}
    atomic_write_json(out / RESULTS, result)
    write_task_report(result, out)
    return result
