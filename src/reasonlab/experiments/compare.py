"""`reasonlab compare`: two arms, several seeds each, judged at equal steps, FLOPs and wall time.

`--match` sets the budgets both arms train to, each with its own full LR schedule:
- steps: both arms run `steps` steps;
- flops: both spend what the costlier arm spends in `steps` steps (the cheaper arm runs more);
- time: both get the wall time the slower arm needs for `steps` steps (step times measured first).
The other two verdicts are read off the validation curves at the largest budget both arms
reached. Arms are judged on val loss, or on exact match for reasoning tasks. Arm B's seeds
follow arm A's (A: 0..k-1, B: k..2k-1), so the runs are independent samples, as Welch's
interval for the difference assumes.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reasonlab.config import Config, resolve_config, with_overrides
from reasonlab.errors import UserError
from reasonlab.experiments.ablation import best_config
from reasonlab.experiments.stats import CI_LEVEL, mean_ci, mean_curve, welch_diff
from reasonlab.io import atomic_write_json
from reasonlab.model.flops import step_flops
from reasonlab.report.comparison import write_comparison_report
from reasonlab.training import trainer
from reasonlab.training.data import prepare_data
from reasonlab.training.engine import Engine
from reasonlab.training.runlog import run_result

MATCHES = ("steps", "flops", "time")
METRICS = {  # what a verdict compares: key in the eval events, label, lower is better
    "loss": {"key": "loss", "label": "val loss", "lower_is_better": True},
    "exact_match": {"key": "exact_match", "label": "val exact match", "lower_is_better": False, "bounds": (0.0, 1.0)},
}
AXES = {"steps": "step", "flops": "flops", "time": "time_s"}
RESULTS = "comparison.json"


def arm_config(spec: str, overrides: dict[str, Any] | None = None) -> tuple[str, Config]:
    """`DIR:best` (the best config of an ablation) or a YAML config / bundled preset name,
    with dotted-key overrides applied on top."""
    if spec.endswith(":best"):
        name, cfg = best_config(spec[: -len(":best")])
        return name, with_overrides(cfg, overrides or {})
    return Path(spec).stem, resolve_config(spec, overrides)


def measure_step_time(cfg: Config, steps: int = 5, warmup: int = 2) -> float:
    """Median seconds per training step of this config on this machine (for --match time)."""
    data = prepare_data(cfg)
    times, _ = Engine(data.fit(cfg), data).timed_steps(steps, warmup)
    return statistics.median(times)


def plan_steps(configs: dict[str, Config], steps: int, match: str, out: Path, progress: Callable[[str], None]) -> dict[str, int]:
    """Steps per arm for the matched budget; stored in plan.json so a rerun trains to the same plan."""
    key = {"steps": steps, "match": match, "configs": {arm: cfg.to_dict() for arm, cfg in configs.items()}}
    plan_file = out / "plan.json"
    if plan_file.is_file():
        stored = json.loads(plan_file.read_text())
        if stored["key"] == key:
            return stored["steps"]
    planned = _plan(configs, steps, match, progress)
    atomic_write_json(plan_file, {"key": key, "steps": planned})
    return planned


def _plan(configs: dict[str, Config], steps: int, match: str, progress: Callable[[str], None]) -> dict[str, int]:
    if match == "steps":
        return {arm: steps for arm in configs}
    if match == "flops":
        cost = {arm: step_flops(cfg.model, cfg.train.batch_size * cfg.model.seq_len, cfg.recursion)
                for arm, cfg in configs.items()}
    else:
        cost = {arm: measure_step_time(cfg) for arm, cfg in configs.items()}
        progress("measured step times: " + ", ".join(f"{arm} {t * 1000:.0f} ms" for arm, t in cost.items()))
    budget = steps * max(cost.values())
    return {arm: max(1, round(budget / c)) for arm, c in cost.items()}


def _with(cfg: Config, **train: Any) -> Config:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


def _same_run(stored: Config, wanted: Config) -> bool:
    """Equal up to the vocab size, which a run fits to its tokenizer."""
    a, b = stored.to_dict(), wanted.to_dict()
    a["model"].pop("vocab_size")
    b["model"].pop("vocab_size")
    return a == b


def _run(cfg: Config, run_dir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Train one seed of one arm, or reuse it when a finished run with the same config is there."""
    summary = run_dir / "summary.json"
    stored = run_dir / "config.yaml"
    if summary.is_file() and stored.is_file() and _same_run(resolve_config(stored), cfg):
        progress(f"{run_dir.name}: finished earlier, reused")
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        trainer.train(cfg, run_dir, quiet=True)
    result = run_result(run_dir)
    final = result["summary"]["final_val"]
    progress(f"{run_dir.name}: val loss {final['loss']:.4f}, accuracy {final['accuracy']:.2%}")
    return result


def value_at(history: list[dict[str, float]], axis: str, point: float, key: str) -> float:
    """A validation metric at `point` on `axis`, linearly interpolated between evaluations."""
    xs = [e[axis] for e in history]
    return float(np.interp(point, xs, [e[key] for e in history]))


def _advantage(a: float, b: float, lower_is_better: bool) -> dict[str, Any]:
    """Which arm is ahead and by how much, relative to the other arm's value (as the original report)."""
    if a == b:
        return {"better": None, "advantage_pct": 0.0}
    better = ("a" if a < b else "b") if lower_is_better else ("a" if a > b else "b")
    best, worst = (a, b) if better == "a" else (b, a)
    return {"better": better, "advantage_pct": 100 * abs(best - worst) / abs(worst) if worst else None}


def margin(values: dict[str, list[float]], diff: float, metric: dict[str, Any]) -> float:
    """How far apart the arms are: % of the worse val loss, or points of exact match."""
    if metric["lower_is_better"]:
        return 100 * abs(diff) / max(statistics.fmean(values["a"]), statistics.fmean(values["b"]))
    return 100 * abs(diff)


def verdicts(arms: dict[str, dict[str, Any]], match: str, metric: dict[str, Any] = METRICS["loss"]) -> dict[str, Any]:
    """The judged metric of both arms at the largest budget every run reached, on each axis.

    The point must lie inside every run's evaluated range (no extrapolation before a first or
    after a last evaluation); where the ranges do not overlap the verdict is unavailable.
    """
    out: dict[str, Any] = {}
    for dim, axis in AXES.items():
        runs = [r["val_history"] for data in arms.values() for r in data["per_seed"].values()]
        point = min(h[-1][axis] for h in runs)
        earliest = max(h[0][axis] for h in runs)
        if earliest > point:
            out[dim] = {"axis": axis, "point": None, "matched": dim == match, "winner": None, "available": False,
                        "reason": f"the arms' evaluated ranges of {axis} do not overlap"}
            continue
        values = {arm: [value_at(r["val_history"], axis, point, metric["key"]) for r in data["per_seed"].values()]
                  for arm, data in arms.items()}
        diff = welch_diff(values["a"], values["b"])
        b_ahead = (diff["diff"] < 0) == metric["lower_is_better"]
        winner = None if not diff["significant"] else ("b" if b_ahead else "a")
        out[dim] = {"axis": axis, "point": point, "matched": dim == match, "available": True,
                    "a": mean_ci(values["a"], bounds=metric.get("bounds")), "b": mean_ci(values["b"], bounds=metric.get("bounds")),
                    "diff_b_minus_a": diff, "winner": winner, "margin": margin(values, diff["diff"], metric)}
    return out


def recommendations(result: dict[str, Any]) -> list[str]:
    """Advice that follows from the verdicts and the measured speeds, nothing canned."""
    names = {arm: result["arms"][arm]["name"] for arm in ("a", "b")}
    v, metric = result["verdicts"], result["metric"]
    notes = []
    if result["n_seeds"] < 2:
        notes.append("One seed per arm measures no noise: rerun with --seeds 3 before acting on any difference.")
    for dim, label in (("flops", "a fixed compute budget"), ("time", "a fixed wall-clock budget"), ("steps", "a fixed number of steps")):
        winner = v[dim]["winner"]
        if not v[dim]["available"]:
            notes.append(f"Under {label} no verdict: {v[dim]['reason']}; match on {dim} to compare there.")
        elif winner:
            ahead = (f"a val loss {v[dim]['margin']:.2f}% lower" if metric["lower_is_better"]
                     else f"a {metric['label']} {v[dim]['margin']:.2f} points higher")
            notes.append(f"Under {label}, train {names[winner]}: it reaches {ahead} "
                         f"({v[dim]['diff_b_minus_a']['ci_low']:.4f} to {v[dim]['diff_b_minus_a']['ci_high']:.4f} is the "
                         f"{result['ci_level']}% CI of B minus A).")
        else:
            notes.append(f"Under {label} the arms are not distinguishable at {result['n_seeds']} seeds; "
                         f"more seeds or a longer budget are needed to separate them.")
    speed = result["speed"]["tokens_per_s"]
    if speed["better"] and speed["advantage_pct"] is not None:
        notes.append(f"{names[speed['better']]} trains {speed['advantage_pct']:.2f}% faster per token on this machine; "
                     "where the loss verdicts tie, it is the cheaper choice.")
    return notes


def run_comparison(a: str, b: str, steps: int, seeds: int, match: str, out: str | Path,
                   progress: Callable[[str], None] = print, overrides: dict[str, Any] | None = None,
                   metric: str = "loss") -> dict[str, Any]:
    """Train both arms over seeds and write comparison.json, comparison.png, comparison_compute.png, FINAL_RESULTS.md.

    `overrides` (dotted keys) apply to both arms; `metric` is what the verdicts judge.
    """
    if match not in MATCHES:
        raise UserError(f"--match must be one of {', '.join(MATCHES)}, got {match!r}")
    if steps < 1 or seeds < 1:
        raise UserError("--steps and --seeds must be >= 1")
    (name_a, cfg_a), (name_b, cfg_b) = arm_config(a, overrides), arm_config(b, overrides)
    if name_a == name_b:
        name_a, name_b = f"{name_a} (A)", f"{name_b} (B)"
    configs = {"a": prepare_data(cfg_a).fit(cfg_a), "b": prepare_data(cfg_b).fit(cfg_b)}  # budgets of what will run
    out = Path(out)
    planned = plan_steps(configs, steps, match, out, progress)
    seed_lists = {"a": list(range(seeds)), "b": list(range(seeds, 2 * seeds))}
    arms: dict[str, dict[str, Any]] = {}
    names, sources = {"a": name_a, "b": name_b}, {"a": a, "b": b}
    arm_cfgs = {arm: _with(configs[arm], max_steps=n, eval_every=max(1, n // 10), log_every=max(1, n // 20), save_every=0)
                for arm, n in planned.items()}
    for arm in ("a", "b"):
        progress(f"arm {arm.upper()} {names[arm]}: {planned[arm]} steps x {seeds} seeds")
    per_arm: dict[str, dict[str, Any]] = {"a": {}, "b": {}}
    for i in range(seeds):  # alternate the arms, so drift in machine speed touches both alike
        for arm in ("a", "b"):
            seed = seed_lists[arm][i]
            per_arm[arm][str(seed)] = _run(_with(arm_cfgs[arm], seed=seed), out / "runs" / f"{arm}-s{seed}", progress)
    for arm in ("a", "b"):
        name, source, cfg, n, per_seed = names[arm], sources[arm], arm_cfgs[arm], planned[arm], per_arm[arm]
        runs = list(per_seed.values())
        summaries = [r["summary"] for r in runs]
        agg = {
            "final_val_loss": mean_ci([s["final_val"]["loss"] for s in summaries]),
            "final_val_perplexity": mean_ci([s["final_val"]["perplexity"] for s in summaries]),
            "final_val_accuracy": mean_ci([s["final_val"]["accuracy"] for s in summaries]),
            "best_val_loss": mean_ci([s["best_val_loss"] for s in summaries]),
            "train_time_s": mean_ci([s["train_time_s"] for s in summaries]),
            "total_time_s": mean_ci([s["total_time_s"] for s in summaries]),
            "steps_per_s": mean_ci([s["steps_per_s"] for s in summaries]),
            "tokens_per_s": mean_ci([s["tokens_per_s"] for s in summaries]),
            "flops": mean_ci([s["flops"] for s in summaries]),
        }
        if metric == "exact_match":
            agg["final_val_exact_match"] = mean_ci([s["final_val"]["exact_match"] for s in summaries])
        arms[arm] = {
            "name": name, "source": source, "config": cfg.to_dict(), "max_steps": n, "seeds": seed_lists[arm],
            "results": {"total_time": agg["total_time_s"]["mean"], "best_val_loss": agg["best_val_loss"]["mean"],
                        "final_val_metrics": {k: agg[f"final_val_{k}"]["mean"] for k in ("loss", "perplexity", "accuracy")}},
            "train_history": mean_curve([r["train_history"] for r in runs]),
            "val_history": mean_curve([r["val_history"] for r in runs]),
            "aggregate": agg, "per_seed": per_seed,
        }
    fa, fb = arms["a"]["aggregate"], arms["b"]["aggregate"]
    result: dict[str, Any] = {
        "match": match, "steps": steps, "n_seeds": seeds, "ci_level": round(CI_LEVEL * 100), "metric": METRICS[metric], "arms": arms,
        "metric_table": [
            {"metric": "val loss", "key": "final_val_loss", "a": fa["final_val_loss"]["mean"], "b": fb["final_val_loss"]["mean"],
             **_advantage(fa["final_val_loss"]["mean"], fb["final_val_loss"]["mean"], True)},
            {"metric": "perplexity", "key": "final_val_perplexity", "a": fa["final_val_perplexity"]["mean"],
             "b": fb["final_val_perplexity"]["mean"],
             **_advantage(fa["final_val_perplexity"]["mean"], fb["final_val_perplexity"]["mean"], True)},
            {"metric": "accuracy", "key": "final_val_accuracy", "a": fa["final_val_accuracy"]["mean"],
             "b": fb["final_val_accuracy"]["mean"],
             **_advantage(fa["final_val_accuracy"]["mean"], fb["final_val_accuracy"]["mean"], False)},
        ],
        "speed": {
            "steps_per_s": {"a": fa["steps_per_s"]["mean"], "b": fb["steps_per_s"]["mean"],
                            **_advantage(fa["steps_per_s"]["mean"], fb["steps_per_s"]["mean"], False)},
            "tokens_per_s": {"a": fa["tokens_per_s"]["mean"], "b": fb["tokens_per_s"]["mean"],
                             **_advantage(fa["tokens_per_s"]["mean"], fb["tokens_per_s"]["mean"], False)},
            "train_time_s": {"a": fa["train_time_s"]["mean"], "b": fb["train_time_s"]["mean"],
                             **_advantage(fa["train_time_s"]["mean"], fb["train_time_s"]["mean"], True)},
        },
    }
    if metric == "exact_match":
        result["metric_table"].insert(0, {
            "metric": "exact match", "key": "final_val_exact_match", "a": fa["final_val_exact_match"]["mean"],
            "b": fb["final_val_exact_match"]["mean"],
            **_advantage(fa["final_val_exact_match"]["mean"], fb["final_val_exact_match"]["mean"], False)})
    result["verdicts"] = verdicts(arms, match, METRICS[metric])
    result["winner"] = result["verdicts"][match]["winner"]
    result["recommendations"] = recommendations(result)
    atomic_write_json(out / RESULTS, result)
    write_comparison_report(result, out)
    return result
