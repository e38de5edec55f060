"""`reasonlab tasks`: both arms on a generated reasoning task, judged on exact match at equal compute.

The head to head is `compare`'s (matched budgets, independent seeds, Welch verdicts), judged on
val exact match. Afterwards each run's final model is scored on the val split (the train levels)
and on the harder test split, level by level; recursive models are also scored with a fixed
number of segments from 1 to twice what they trained with, to see whether more thinking at
test time helps.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from reasonlab import api
from reasonlab.errors import UserError
from reasonlab.experiments.compare import arm_config, run_comparison
from reasonlab.experiments.stats import mean_ci
from reasonlab.io import atomic_write_json
from reasonlab.report.tasks import write_task_report
from reasonlab.runtime import autocast_factory, resolve_precision
from reasonlab.tasks.dataset import TaskData
from reasonlab.tasks.evaluate import SplitResult

RESULTS = "tasks.json"
SHARE = (0.0, 1.0)  # exact match and accuracy are shares: their intervals are clipped to it


def _grouped(data: TaskData, scored: dict[str, SplitResult], attribute: str) -> dict[str, dict[str, float]]:
    """Exact match and per-token accuracy of one model over the val and test splits, by the
    examples' `level` or `difficulty`."""
    groups: dict[int, list[tuple[bool, float]]] = {}
    for split, result in scored.items():
        for example, correct, acc in zip(data.splits[split].examples, result.correct, result.token_accuracy):
            groups.setdefault(getattr(example, attribute), []).append((correct, acc))
    return {str(level): {"exact_match": sum(c for c, _ in g) / len(g), "accuracy": sum(a for _, a in g) / len(g), "n": len(g)}
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


def _score_run(data: TaskData, run_dir: Path, batch_size: int) -> dict[str, Any]:
    loaded = api.load(run_dir / "checkpoints" / "final")
    cfg = loaded.config
    autocast = autocast_factory(resolve_precision(cfg.train.precision, loaded.device), loaded.device)
    scored = {split: data.score(loaded.model, split, batch_size, loaded.device, autocast) for split in ("val", "test")}
    out: dict[str, Any] = {split: {k: v for k, v in r.metrics.items() if k != "tokens"} for split, r in scored.items()}
    out["by_level"] = _grouped(data, scored, "level")
    examples = [e for split in ("val", "test") for e in data.splits[split].examples]
    if len({e.difficulty for e in examples}) > 1 and any(e.difficulty != e.level for e in examples):
        out["by_difficulty"] = _grouped(data, scored, "difficulty")
    out["examples"] = _examples(data, scored)
    if cfg.model.arch == "recursive":
        out["segments_curve"] = {
            k: {split: data.score(loaded.model, split, batch_size, loaded.device, autocast, segments=int(k)).metrics["exact_match"]
                for split in ("val", "test")}
            for k in map(str, range(1, 2 * cfg.recursion.max_segments + 1))
        }
    return out


def _aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Means and t-intervals over seeds of every score."""
    agg: dict[str, Any] = {split: {k: mean_ci([s[split][k] for s in per_seed], bounds=SHARE) for k in ("exact_match", "accuracy")}
                           for split in ("val", "test")}
    for grouping in ("by_level", "by_difficulty"):
        if grouping in per_seed[0]:
            agg[grouping] = {key: mean_ci([s[grouping][key]["exact_match"] for s in per_seed], bounds=SHARE)
                             for key in per_seed[0][grouping]}
    if "segments_curve" in per_seed[0]:
        agg["segments_curve"] = {k: {split: mean_ci([s["segments_curve"][k][split] for s in per_seed], bounds=SHARE)
                                     for split in ("val", "test")}
                                 for k in per_seed[0]["segments_curve"]}
    return agg


def run_task_study(task: str, a: str, b: str, steps: int, seeds: int, match: str, out: str | Path,
                   overrides: dict[str, Any] | None = None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Train both arms on `task` and write tasks.json + TASK_RESULTS.md beside the comparison's files."""
    overrides = {**(overrides or {}), "task.name": task}
    cfg_a, cfg_b = arm_config(a, overrides)[1], arm_config(b, overrides)[1]
    if cfg_a.task != cfg_b.task:
        differ = [k for k, v in vars(cfg_a.task).items() if getattr(cfg_b.task, k) != v]
        raise UserError(f"the arms must train on the same task; their configs differ in {', '.join(f'task.{k}' for k in differ)}")
    data = TaskData(cfg_a.task)
    counts = {split: len(s.examples) for split, s in data.splits.items()}
    progress(f"task {task}: {counts['train']} train, {counts['val']} val, {counts['test']} test instances; "
             f"{data.task.level_name} {data.levels['train'][0]}-{data.levels['train'][1]} in training, "
             f"{data.levels['test'][0]}-{data.levels['test'][1]} in test")
    out = Path(out)
    comparison = run_comparison(a, b, steps, seeds, match, out, progress, overrides, metric="exact_match")
    arms: dict[str, Any] = {}
    for arm, info in comparison["arms"].items():
        per_seed = {seed: _score_run(data, Path(run["run_dir"]), cfg_a.train.batch_size) for seed, run in info["per_seed"].items()}
        progress(f"arm {arm.upper()} {info['name']}: test exact match "
                 + ", ".join(f"{s['test']['exact_match']:.2%}" for s in per_seed.values()))
        recursive = info["config"]["model"]["arch"] == "recursive"
        arms[arm] = {"name": info["name"], "arch": info["config"]["model"]["arch"], "max_steps": info["max_steps"],
                     "flops": info["aggregate"]["flops"], "per_seed": per_seed, "aggregate": _aggregate(list(per_seed.values())),
                     "trained_segments": info["config"]["recursion"]["max_segments"] if recursive else None,
                     "examples": next(iter(per_seed.values()))["examples"]}
    result = {
        "task": {"name": task, "description": data.task.description, "level_name": data.task.level_name,
                 "difficulty_name": data.task.difficulty_name,
                 "format": data.cfg.format, "config": vars(data.cfg), "levels": data.levels, "instances": counts},
        "match": match, "n_seeds": seeds, "ci_level": comparison["ci_level"], "metric": comparison["metric"],
        "verdicts": comparison["verdicts"], "winner": comparison["winner"], "arms": arms,
    }
    atomic_write_json(out / RESULTS, result)
    write_task_report(result, out)
    return result
