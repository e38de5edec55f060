"""`reasonlab ablate`: run a suite through the sweep engine and aggregate it over seeds."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from reasonlab.config import Config, config_from_dict, reread
from reasonlab.errors import Incomplete, UserError, WriteFailed
from reasonlab.experiments.stats import CI_LEVEL, holm, mean_ci, mean_curve, welch_diff
from reasonlab.experiments.suites import Suite, load_suite
from reasonlab.experiments.sweep import (
    SweepSpec,
    finished_trials,
    open_study,
    queue,
    run_until_settled,
    shown_url,
)
from reasonlab.io import atomic_write_json
from reasonlab.outdir import claim_out
from reasonlab.report.ablation import write_ablation_report
from reasonlab.runtime import check_runtime

RESULTS = "ablation_results.json"
PLAN = "suite.json"  # the suite's configs and the optuna study a folder holds
CONFIRM_TOP = 3  # how many of the sweep's best configs a confirmation reruns
CONFIRM_SEED_START = 1_000_000  # confirmation seeds count up from here, far past any sweep's 0..seeds-1


def _claim_folder(out: Path, suite: Suite, configs: dict[str, dict[str, Any]]) -> str:
    """Claim `out` for this suite's sweep; return the name of the optuna study it holds.

    The folder keeps the configs its sweep started with (suite.json), so one written before config
    keys were added (at their defaults) is known as the same sweep and continues, as compare's
    plan.json does; the study keeps its first name, which the configs of the day named.
    """
    stored = _stored_plan(out)
    same = stored is not None and stored["suite"] == suite.name and reread(stored["configs"]) == configs
    claim_out(out, "ablation", {"suite": suite.name, "configs": suite.fingerprint()}, same_study=same)
    name = stored["study_name"] if same else f"{suite.name}-{suite.fingerprint()}"
    plan = {"suite": suite.name, "study_name": name, "configs": configs}
    if plan != stored:
        try:
            atomic_write_json(out / PLAN, plan)
        except WriteFailed as exc:
            raise UserError(str(exc)) from None
    return name


def _stored_plan(out: Path) -> dict[str, Any] | None:
    """The folder's suite.json, or None where it has none that reads as one."""
    try:
        plan = json.loads((out / PLAN).read_text())
        return plan if {"suite", "study_name", "configs"} <= set(plan) and isinstance(plan["configs"], dict) else None
    except (OSError, ValueError, TypeError):
        return None


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
    losses = {n: _final_losses(e) for n, e in table.items() if e["status"] == "complete"}
    ranked = rank(losses)
    out: dict[str, Any] = {"ci_level": round(CI_LEVEL * 100), "seeds": seeds, "configs": table, "ranking": ranked}
    if ranked:
        means = [table[n]["final_val_loss"]["mean"] for n in ranked]
        out["best"] = ranked[0]
        out["range"] = {"min": means[0], "max": means[-1], "spread": means[-1] - means[0]}
        out["vs_best"] = against_best(losses, ranked)
    return out


def rank(losses: dict[str, list[float]]) -> list[str]:
    """Config names by mean final val loss, best first."""
    return sorted(losses, key=lambda n: statistics.fmean(losses[n]))


def against_best(losses: dict[str, list[float]], ranked: list[str]) -> dict[str, dict[str, Any]]:
    """Each other config minus the best: Welch's difference, interval and p, and the p Holm-corrected
    over all these comparisons, which alone decides `significant`.

    The best is picked as the lowest of several noisy means on the very seeds it is then compared
    on, so uncorrected tests call some equal config worse most of the time. Comparisons with no
    p-value (fewer than two seeds, no spread) are never significant and leave the family.
    """
    best = losses[ranked[0]]
    raw = {n: welch_diff(best, losses[n]) for n in ranked[1:]}
    tested = [n for n, d in raw.items() if d["p"] is not None]
    adjusted = dict(zip(tested, holm([raw[n]["p"] for n in tested]), strict=True))
    return {n: {**d, "p_holm": adjusted.get(n), "significant": adjusted.get(n, 1.0) < 1 - CI_LEVEL}
            for n, d in raw.items()}


def confirmation_seeds(k: int) -> list[int]:
    """k seeds no sweep runs (a sweep runs 0..seeds-1), so the configs picked on the sweep's seeds
    meet fresh noise there."""
    return list(range(CONFIRM_SEED_START, CONFIRM_SEED_START + k))


def confirm_ranking(
    configs: dict[str, Config],
    top: list[str],
    seeds: list[int],
    results: dict[tuple[str, int], dict[str, Any]],
) -> dict[str, Any]:
    """The sweep's top configs ranked on the fresh seeds alone: seeds that took no part in picking
    them, so this ranking and its best carry no winner's curse."""
    fresh = aggregate({n: configs[n] for n in top}, seeds, results)
    return {"seeds": seeds, "candidates": top,
            "configs": {n: fresh["configs"][n]["final_val_loss"] for n in top},
            "ranking": fresh["ranking"], **{k: fresh[k] for k in ("best", "vs_best") if k in fresh}}


def _run_confirmation(
    study: optuna.Study,
    spec: SweepSpec,
    configs: dict[str, Config],
    ranking: list[str],
    k: int,
    workers: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Rerun the sweep's top configs on k fresh seeds as more trials of the same study, so an
    interrupted confirmation resumes like the sweep."""
    top, seeds = ranking[:CONFIRM_TOP], confirmation_seeds(k)
    queued = queue(spec, study, [(name, seed) for name in top for seed in seeds])
    progress(f"confirmation: top {len(top)} configs ({', '.join(top)}) x {k} fresh seeds {seeds[0]}..{seeds[-1]}, "
             f"{len(top) * k - queued} already done or running, {queued} queued")
    run_until_settled(spec, study, [(name, seed) for name in top for seed in seeds], workers, progress)
    return confirm_ranking(configs, top, seeds, finished_trials(study))


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
    confirm: int = 0,
    seed_offset: int = 0,
) -> dict[str, Any]:
    """Run (or resume) a suite and write ablation_results.json, ablation.png and ABLATION_SUMMARY.md.

    Every config runs seeds `seed_offset`..`seed_offset + seeds - 1`. `confirm` > 0 then reruns the
    top configs on that many fresh seeds and ranks them there.
    """
    for name, value in (("steps", steps), ("seeds", seeds), ("workers", workers)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    if confirm < 0:
        raise UserError(f"confirm must be >= 0, got {confirm}")
    if not 0 <= seed_offset <= CONFIRM_SEED_START - seeds:
        raise UserError(f"seed_offset must be in [0, {CONFIRM_SEED_START - seeds}] (higher seeds are the "
                        f"confirmation's), got {seed_offset}")
    loaded = load_suite(suite, base, {**sweep_overrides(steps), **(overrides or {})}, only)
    for cfg in loaded.configs.values():
        check_runtime(cfg.train)
    out = Path(out)
    configs = {name: cfg.to_dict() for name, cfg in loaded.configs.items()}
    spec = SweepSpec(
        storage_url=storage or f"sqlite:///{(out / 'study.db').resolve()}",
        study_name=_claim_folder(out, loaded, configs),
        out=out,
        configs=configs,
        prune=prune,
    )
    study = open_study(spec)
    seed_list = list(range(seed_offset, seed_offset + seeds))
    queued = queue(spec, study, [(name, seed) for name in loaded.configs for seed in seed_list])
    total = len(loaded.configs) * seeds
    progress(f"suite {loaded.name}: {total} trials ({len(loaded.configs)} configs x {seeds} seeds), "
             f"{total - queued} already done or running, {queued} queued; "
             f"study {spec.study_name} in {shown_url(spec.storage_url)}")
    run_until_settled(spec, study, [(name, seed) for name in loaded.configs for seed in seed_list], workers, progress)
    finished = finished_trials(study)
    results = aggregate(loaded.configs, seed_list, finished)
    if confirm and results["ranking"]:
        results["confirmation"] = _run_confirmation(study, spec, loaded.configs, results["ranking"], confirm, workers,
                                                    progress)
    elif confirm:
        progress("confirmation skipped: no config finished every seed of the sweep")
    results.update({"suite": loaded.name, "base": str(loaded.base), "steps": steps, "study": spec.study_name,
                    "storage": shown_url(spec.storage_url)})
    atomic_write_json(out / RESULTS, results)
    write_ablation_report(results, out)
    missing = [f"{name} seed {seed}" for name in loaded.configs for seed in seed_list if (name, seed) not in finished]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise Incomplete(f"{len(missing)} of {total} trials did not finish ({shown}); {out / RESULTS} reports the "
                         "rest; rerun the command to retry them")
    return results


def best_config(sweep_dir: str | Path) -> tuple[str, Config]:
    """The name and config of the best config of a finished ablation (`DIR:best` on the command line):
    the best on fresh seeds where the ablation ran a confirmation, else the sweep's best."""
    path = Path(sweep_dir) / RESULTS
    if not path.is_file():
        raise UserError(f"no {RESULTS} in {sweep_dir}: run reasonlab ablate there first")
    results = json.loads(path.read_text())
    name = results.get("confirmation", {}).get("best", results.get("best"))
    if name is None:
        raise UserError(f"{path} has no finished config to take as best")
    return name, config_from_dict(results["configs"][name]["config"])
