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
from reasonlab.experiments.stats import CI_LEVEL, mean_ci, mean_curve, over_seeds, welch_diff
from reasonlab.io import atomic_write_json
from reasonlab.model.flops import step_flops
from reasonlab.report.comparison import write_comparison_report
from reasonlab.training import trainer
from reasonlab.training.data import prepare_data
from reasonlab.training.engine import Engine
from reasonlab.training.runlog import run_result

Progress = Callable[[str], None]
Runs = dict[str, dict[str, dict[str, Any]]]  # arm -> seed -> that run's summary and curves

MATCHES = ("steps", "flops", "time")
METRICS = {  # what a verdict compares: key in the eval events, label, lower is better
    "loss": {"key": "loss", "label": "val loss", "lower_is_better": True},
    "exact_match": {"key": "exact_match", "label": "val exact match", "lower_is_better": False,
                    "bounds": (0.0, 1.0)},
}
AXES = {"steps": "step", "flops": "flops", "time": "time_s"}
RESULTS = "comparison.json"
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
METRIC_ROWS = (  # the metric table: label, aggregate key, lower is better; exact match only where it is judged
    ("exact match", "final_val_exact_match", False),
    ("val loss", "final_val_loss", True),
    ("perplexity", "final_val_perplexity", True),
    ("accuracy", "final_val_accuracy", False),
)
SPEED_ROWS = (("steps_per_s", False), ("tokens_per_s", False), ("train_time_s", True))  # key, lower is better
BUDGETS = (("flops", "a fixed compute budget"), ("time", "a fixed wall-clock budget"),
           ("steps", "a fixed number of steps"))


@dataclasses.dataclass(frozen=True)
class Arm:
    """One side of the head to head: its name, the spec its config came from, what each of its seeds trains."""

    name: str
    source: str
    cfg: Config
    seeds: list[int] = dataclasses.field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.cfg.train.max_steps


def check_budget(steps: int, seeds: int, match: str) -> None:
    """Refuse a budget no comparison can run, before anything is built."""
    if match not in MATCHES:
        raise UserError(f"match must be one of {', '.join(MATCHES)}, got {match!r}")
    for name, value in (("steps", steps), ("seeds", seeds)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")


def arm_config(spec: str, overrides: dict[str, Any] | None = None) -> tuple[str, Config]:
    """`DIR:best` (the best config of an ablation) or a YAML config / bundled preset name,
    with dotted-key overrides applied on top."""
    if spec.endswith(":best"):
        name, cfg = best_config(spec[: -len(":best")])
        return name, with_overrides(cfg, overrides or {})
    return Path(spec).stem, resolve_config(spec, overrides)


def pair_arms(a: str, b: str, overrides: dict[str, Any] | None = None) -> dict[str, Arm]:
    """Both arms as given, before any budget; arms of one name are told apart as (A) and (B)."""
    (name_a, cfg_a), (name_b, cfg_b) = arm_config(a, overrides), arm_config(b, overrides)
    if name_a == name_b:
        name_a, name_b = f"{name_a} (A)", f"{name_b} (B)"
    return {"a": Arm(name_a, a, cfg_a), "b": Arm(name_b, b, cfg_b)}


def measure_step_time(cfg: Config, steps: int = 5, warmup: int = 2) -> float:
    """Median seconds per training step of this config on this machine (for --match time)."""
    data = prepare_data(cfg)
    times, _ = Engine(data.adjust_config(cfg), data).timed_steps(steps, warmup)
    return statistics.median(times)


def plan_steps(configs: dict[str, Config], steps: int, match: str, out: Path, progress: Progress) -> dict[str, int]:
    """Steps per arm for the matched budget; stored in plan.json so a rerun trains to the same plan."""
    key = {"steps": steps, "match": match, "configs": {arm: cfg.to_dict() for arm, cfg in configs.items()}}
    plan_file = out / "plan.json"
    if plan_file.is_file():
        stored = json.loads(plan_file.read_text())
        if stored["key"] == key:
            return stored["steps"]
    planned = _matched_steps(configs, steps, match, progress)
    atomic_write_json(plan_file, {"key": key, "steps": planned})
    return planned


def _matched_steps(configs: dict[str, Config], steps: int, match: str, progress: Progress) -> dict[str, int]:
    """Steps per arm such that each spends what the costlier arm spends in `steps` steps."""
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


def _budgeted(cfg: Config, steps: int) -> Config:
    """`steps` steps with about ten evaluations and twenty log lines; no checkpoints but the final one."""
    return _with(cfg, max_steps=steps, eval_every=max(1, steps // 10), log_every=max(1, steps // 20), save_every=0)


def plan_arms(arms: dict[str, Arm], steps: int, seeds: int, match: str, out: Path,
              progress: Progress) -> dict[str, Arm]:
    """Each arm adjusted to its data (the budgets are of what will run) and set to its share of the
    matched budget, with its seeds (A: 0..k-1, B: k..2k-1)."""
    adjusted = {key: prepare_data(arm.cfg).adjust_config(arm.cfg) for key, arm in arms.items()}
    planned = plan_steps(adjusted, steps, match, out, progress)
    seed_lists = {"a": list(range(seeds)), "b": list(range(seeds, 2 * seeds))}
    budgeted = {key: dataclasses.replace(arm, cfg=_budgeted(adjusted[key], planned[key]), seeds=seed_lists[key])
                for key, arm in arms.items()}
    for key, arm in budgeted.items():
        progress(f"arm {key.upper()} {arm.name}: {arm.steps} steps x {seeds} seeds")
    return budgeted


def train_arms(arms: dict[str, Arm], out: Path, progress: Progress) -> Runs:
    """Every seed of both arms; the arms alternate, so drift in machine speed touches both alike."""
    runs: Runs = {key: {} for key in arms}
    for i in range(len(arms["a"].seeds)):
        for key, arm in arms.items():
            seed = arm.seeds[i]
            runs[key][str(seed)] = _run(_with(arm.cfg, seed=seed), out / "runs" / f"{key}-s{seed}", progress)
    return runs


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


def _arm_results(arm: Arm, per_seed: dict[str, dict[str, Any]], metric: str) -> dict[str, Any]:
    """One arm's part of comparison.json: its plan, its means over seeds and every seed's run."""
    runs = list(per_seed.values())
    stats = seed_stats([r["summary"] for r in runs], metric)
    return {"name": arm.name, "source": arm.source, "config": arm.cfg.to_dict(), "max_steps": arm.steps,
            "seeds": arm.seeds, "results": _headline(stats),
            "train_history": mean_curve([r["train_history"] for r in runs]),
            "val_history": mean_curve([r["val_history"] for r in runs]),
            "aggregate": stats, "per_seed": per_seed}


def aggregate_arms(arms: dict[str, Arm], runs: Runs, metric: str) -> dict[str, dict[str, Any]]:
    """The "arms" part of comparison.json."""
    return {key: _arm_results(arm, runs[key], metric) for key, arm in arms.items()}


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


def _side_by_side(fa: dict[str, Any], fb: dict[str, Any], key: str, lower_is_better: bool) -> dict[str, Any]:
    """Both arms' means of one aggregate, and which is ahead."""
    a, b = fa[key]["mean"], fb[key]["mean"]
    return {"a": a, "b": b, **_advantage(a, b, lower_is_better)}


def metric_table(fa: dict[str, Any], fb: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"metric": label, "key": key, **_side_by_side(fa, fb, key, lower)}
            for label, key, lower in METRIC_ROWS if key in fa]


def speed_table(fa: dict[str, Any], fb: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {key: _side_by_side(fa, fb, key, lower) for key, lower in SPEED_ROWS}


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
    histories = {arm: [r["val_history"] for r in data["per_seed"].values()] for arm, data in arms.items()}
    return {dim: _verdict(histories, axis, dim == match, metric) for dim, axis in AXES.items()}


def _verdict(histories: dict[str, list[list[dict[str, float]]]], axis: str, matched: bool,
             metric: dict[str, Any]) -> dict[str, Any]:
    """Both arms at the largest `axis` value every run reached, and whether they differ beyond the noise."""
    runs = [h for arm_runs in histories.values() for h in arm_runs]
    point = min(h[-1][axis] for h in runs)
    if max(h[0][axis] for h in runs) > point:
        return {"axis": axis, "point": None, "matched": matched, "winner": None, "available": False,
                "reason": f"the arms' evaluated ranges of {axis} do not overlap"}
    values = {arm: [value_at(h, axis, point, metric["key"]) for h in arm_runs] for arm, arm_runs in histories.items()}
    diff = welch_diff(values["a"], values["b"])
    b_ahead = (diff["diff"] < 0) == metric["lower_is_better"]
    winner = None if not diff["significant"] else ("b" if b_ahead else "a")
    bounds = metric.get("bounds")
    return {"axis": axis, "point": point, "matched": matched, "available": True,
            "a": mean_ci(values["a"], bounds=bounds), "b": mean_ci(values["b"], bounds=bounds),
            "diff_b_minus_a": diff, "winner": winner, "margin": margin(values, diff["diff"], metric)}


def recommendations(result: dict[str, Any]) -> list[str]:
    """Advice that follows from the verdicts and the measured speeds, nothing canned."""
    notes = []
    if result["n_seeds"] < 2:
        notes.append("One seed per arm measures no noise: rerun with --seeds 3 before acting on any difference.")
    notes += [_budget_note(result, dim, label) for dim, label in BUDGETS]
    speed = result["speed"]["tokens_per_s"]
    if speed["better"] and speed["advantage_pct"] is not None:
        notes.append(f"{result['arms'][speed['better']]['name']} trains {speed['advantage_pct']:.2f}% faster per "
                     "token on this machine; where the loss verdicts tie, it is the cheaper choice.")
    return notes


def _budget_note(result: dict[str, Any], dim: str, label: str) -> str:
    """What to train under one kind of budget, or why the verdict there says nothing."""
    v, metric = result["verdicts"][dim], result["metric"]
    if not v["available"]:
        return f"Under {label} no verdict: {v['reason']}; match on {dim} to compare there."
    if not v["winner"]:
        return (f"Under {label} the arms are not distinguishable at {result['n_seeds']} seeds; "
                "more seeds or a longer budget are needed to separate them.")
    ahead = (f"a val loss {v['margin']:.2f}% lower" if metric["lower_is_better"]
             else f"a {metric['label']} {v['margin']:.2f} points higher")
    ci = v["diff_b_minus_a"]
    return (f"Under {label}, train {result['arms'][v['winner']]['name']}: it reaches {ahead} "
            f"({ci['ci_low']:.4f} to {ci['ci_high']:.4f} is the {result['ci_level']}% CI of B minus A).")


def judge(arms: dict[str, dict[str, Any]], steps: int, match: str, metric: str) -> dict[str, Any]:
    """comparison.json: the arms side by side, the verdicts at equal steps, FLOPs and time, the advice."""
    fa, fb = arms["a"]["aggregate"], arms["b"]["aggregate"]
    result: dict[str, Any] = {
        "match": match, "steps": steps, "n_seeds": len(arms["a"]["seeds"]), "ci_level": round(CI_LEVEL * 100),
        "metric": METRICS[metric], "arms": arms, "metric_table": metric_table(fa, fb), "speed": speed_table(fa, fb),
    }
    result["verdicts"] = verdicts(arms, match, METRICS[metric])
    result["winner"] = result["verdicts"][match]["winner"]
    result["recommendations"] = recommendations(result)
    return result


def write_results(result: dict[str, Any], out: Path) -> None:
    """comparison.json, then the plots and FINAL_RESULTS.md, which are built from it alone."""
    atomic_write_json(out / RESULTS, result)
    write_comparison_report(result, out)


def run_comparison(a: str, b: str, steps: int, seeds: int, match: str, out: str | Path,
                   progress: Progress = print, overrides: dict[str, Any] | None = None,
                   metric: str = "loss") -> dict[str, Any]:
    """Train both arms over seeds and write comparison.json, comparison.png, comparison_compute.png and
    FINAL_RESULTS.md.

    `overrides` (dotted keys) apply to both arms; `metric` is what the verdicts judge.
    """
    check_budget(steps, seeds, match)
    out = Path(out)
    arms = plan_arms(pair_arms(a, b, overrides), steps, seeds, match, out, progress)
    runs = train_arms(arms, out, progress)
    result = judge(aggregate_arms(arms, runs, metric), steps, match, metric)
    write_results(result, out)
    return result
