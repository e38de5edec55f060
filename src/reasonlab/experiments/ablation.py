"""`reasonlab ablate`: run a suite through the sweep engine and aggregate it over seeds."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reasonlab.config import Config, config_from_dict
from reasonlab.errors import UserError
from reasonlab.experiments.stats import CI_LEVEL, mean_ci, mean_curve, welch_diff
from reasonlab.experiments.suites import load_suite
from reasonlab.experiments.sweep import (
    SweepSpec,
    enqueue_missing,
    finished_trials,
    open_study,
    run_workers,
    storage_lock,
)
from reasonlab.io import atomic_write_json
from reasonlab.report.ablation import write_ablation_report

RESULTS = "ablation_results.json"


def sweep_overrides(steps: int) -> dict[str, Any]:
    """Short runs: about ten evaluations and ten log lines each, no periodic checkpoints."""
    every = max(1, steps // 10)
    return {"train.max_steps": steps, "train.eval_every": every, "train.log_every": every, "train.save_every": 0}


def _seed_row(result: dict[str, Any]) -> dict[str, Any]:
    summary = result.get("summary", {})
    last_val = result["val_history"][-1] if result["val_history"] else {}
    final = summary.get("final_val") or {k: last_val.get(k) for k in ("loss", "perplexity", "accuracy")}
    return {
        "status": result["status"],
        "nan_encountered": result["nan_encountered"],
        "final_val": final,
        "best_val_loss": summary.get("best_val_loss", min((e["loss"] for e in result["val_history"]), default=None)),
        "total_time_s": summary.get("total_time_s"),
        "tokens_per_s": summary.get("tokens_per_s"),
        "flops": summary.get("flops", last_val.get("flops")),
        "val_history": result["val_history"],
        "train_history": result["train_history"],
        "run_dir": result["run_dir"],
    }


def _finite(values: list[Any]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _final_losses(entry: dict[str, Any]) -> list[float]:
    """The final val losses of a config's completed seeds: the samples its noise verdicts compare."""
    return _finite([r["final_val"]["loss"] for r in entry["seeds"].values() if r["status"] == "complete"])


def aggregate(
    configs: dict[str, Config],
    seeds: list[int],
    results: dict[tuple[str, int], dict[str, Any]],
) -> dict[str, Any]:
    """Per config: per-seed rows, mean and CI of each metric, status; then the ranking and noise verdicts."""
    table: dict[str, Any] = {}
    for name, cfg in configs.items():
        rows = {seed: _seed_row(results[(name, seed)]) for seed in seeds if (name, seed) in results}
        complete = [r for r in rows.values() if r["status"] == "complete"]
        statuses = {r["status"] for r in rows.values()}
        status = "missing" if not rows else ("complete" if len(complete) == len(seeds) else
                                             "pruned" if "pruned" in statuses else
                                             "diverged" if "diverged" in statuses else "partial")
        entry: dict[str, Any] = {"config": cfg.to_dict(), "status": status,
                                 "nan_encountered": any(r["nan_encountered"] for r in rows.values()),
                                 "seeds": {str(s): r for s, r in rows.items()}}
        metrics = {
            "final_val_loss": [r["final_val"]["loss"] for r in complete],
            "final_val_perplexity": [r["final_val"]["perplexity"] for r in complete],
            "final_val_accuracy": [r["final_val"]["accuracy"] for r in complete],
            "best_val_loss": [r["best_val_loss"] for r in complete],
            "total_time_s": [r["total_time_s"] for r in complete],
            "tokens_per_s": [r["tokens_per_s"] for r in complete],
            "flops": [r["flops"] for r in complete],
        }
        for key, values in metrics.items():
            finite = _finite(values)
            entry[key] = mean_ci(finite, CI_LEVEL) if finite else None
        entry["val_curve"] = mean_curve([r["val_history"] for r in complete])
        table[name] = entry
    # only configs whose every seed completed are ranked: a mean over the surviving seeds of a
    # partly pruned or diverged config would be biased towards its luckier runs
    finished = [n for n, e in table.items() if e["status"] == "complete"]
    ranked = sorted(finished, key=lambda n: table[n]["final_val_loss"]["mean"])
    out: dict[str, Any] = {"ci_level": round(CI_LEVEL * 100), "seeds": seeds, "configs": table, "ranking": ranked}
    if ranked:
        best = ranked[0]
        losses = [table[n]["final_val_loss"]["mean"] for n in ranked]
        out["best"] = best
        out["range"] = {"min": losses[0], "max": losses[-1], "spread": losses[-1] - losses[0]}
        best_losses = _final_losses(table[best])
        out["vs_best"] = {n: welch_diff(best_losses, _final_losses(table[n])) for n in ranked[1:]}
    return out


def run_ablation(
    suite: str,
    steps: int,
    seeds: int,
    out: str | Path,
    workers: int = 1,
    storage: str | None = None,
    prune: bool = False,
    base: str | None = None,
    overrides: dict[str, Any] | None = None,
    only: list[str] | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) a suite and write ablation_results.json, ablation.png and ABLATION_SUMMARY.md."""
    for name, value in (("steps", steps), ("seeds", seeds), ("workers", workers)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    loaded = load_suite(suite, base, {**sweep_overrides(steps), **(overrides or {})}, only)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = SweepSpec(
        storage_url=storage or f"sqlite:///{(out / 'study.db').resolve()}",
        study_name=f"{loaded.name}-{loaded.fingerprint()}",
        out=out,
        configs={name: cfg.to_dict() for name, cfg in loaded.configs.items()},
        prune=prune,
    )
    study = open_study(spec)
    seed_list = list(range(seeds))
    with storage_lock(spec.storage_url):
        queued = enqueue_missing(study, list(loaded.configs), seed_list)
    total = len(loaded.configs) * seeds
    progress(f"suite {loaded.name}: {total} trials ({len(loaded.configs)} configs x {seeds} seeds), "
             f"{total - queued} already done or running, {queued} queued; "
             f"study {spec.study_name} in {spec.storage_url}")
    run_workers(spec, workers, progress)
    results = aggregate(loaded.configs, seed_list, finished_trials(study))
    results.update({"suite": loaded.name, "base": str(loaded.base), "steps": steps, "study": spec.study_name,
                    "storage": spec.storage_url})
    atomic_write_json(out / RESULTS, results)
    write_ablation_report(results, out)
    return results


def best_config(sweep_dir: str | Path) -> tuple[str, Config]:
    """The name and config of the best config of a finished ablation (`DIR:best` on the command line)."""
    path = Path(sweep_dir) / RESULTS
    if not path.is_file():
        raise UserError(f"no {RESULTS} in {sweep_dir}: run reasonlab ablate there first")
    results = json.loads(path.read_text())
    if "best" not in results:
        raise UserError(f"{path} has no finished config to take as best")
    return results["best"], config_from_dict(results["configs"][results["best"]]["config"])
