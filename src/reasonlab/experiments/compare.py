"""`reasonlab compare`: two or more arms, several seeds each, judged at equal steps, FLOPs and wall time.

`--match` sets the budgets every arm trains to, each with its own full LR schedule:
- steps: every arm runs `steps` steps;
- flops: every arm spends what the costliest arm spends in `steps` steps (cheaper arms run more);
- time: every arm gets the time the slowest arm needs for `steps` steps, in step times measured
  by one interleaved calibration (the arms alternating in one process), never by the runs' wall clocks.
The verdict at the matched budget is the comparison's one decision. The other two budgets are
read off the validation curves where every run reached them, usually mid-schedule for one arm
(which favours it: its learning rate has not decayed yet), so they are descriptive and the
report says at which step of how many each arm was read.

Arms are judged on val loss, or on exact match for reasoning tasks. Two arms are a head to head
(A against B). With more, the first is the reference and every other arm is judged against it as
in a head to head, every arm read at the same point of each axis, the p-values Holm-corrected
across the comparisons on each axis (`judge_many`).

Seeds: A runs k seeds from `seed_offset` on, B the next k, C the next, and so on: independent
samples, as Welch's interval assumes; with `paired` every arm runs A's seeds and the interval is
of the per-seed differences. A `DIR:best` arm's seeds start past every seed its ablation ran, so
the best is not judged on the seeds it was selected on.

An arm is a YAML config, a preset name, `DIR:best`, or `control:params:SPEC` /
`control:flops:SPEC` / `control:depth:SPEC`: the baseline control of the recursive arm SPEC with
its parameters, its forward FLOPs per token, or its training FLOPs per step; or
`control:outer:SPEC`: SPEC's outer loop around the stack run once per segment
(`reasonlab.model.control_config`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import string
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reasonlab.config import BOOKKEEPING_KEYS, Config, config_from_dict, reread, resolve_config, with_overrides
from reasonlab.errors import UserError
from reasonlab.experiments.ablation import RESULTS as ABLATION_RESULTS
from reasonlab.experiments.ablation import best_config
from reasonlab.experiments.stats import (
    CI_LEVEL,
    detectable,
    holm,
    mean_ci,
    mean_curve,
    over_seeds,
    paired_diff,
    values_at,
    welch_diff,
)
from reasonlab.io import atomic_write_json
from reasonlab.model import config_step_flops, control_config, inference_layers, param_counts
from reasonlab.outdir import claim_out, other_study
from reasonlab.report.comparison import write_comparison_report
from reasonlab.runtime import check_runtime
from reasonlab.training import trainer
from reasonlab.training.checkpoint import read_config
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
AXES = {"steps": "step", "flops": "flops", "time": "calibrated_time_s"}  # calibrated: step x measured step time
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
ARM_KEYS = string.ascii_lowercase  # the arms' keys in order: a, b, c, ...
REFERENCE = "a"  # with more than two arms, every other arm is judged against this one


@dataclasses.dataclass(frozen=True)
class Arm:
    """One side of the head to head: its name, the spec its config came from, what each of its seeds trains."""

    name: str
    source: str
    cfg: Config
    seeds: list[int] = dataclasses.field(default_factory=list)
    step_s: float | None = None  # seconds per step, from the interleaved calibration
    calibration_s: list[float] = dataclasses.field(default_factory=list)  # its mean step time in each round

    @property
    def steps(self) -> int:
        return self.cfg.train.max_steps


def check_budget(steps: int, seeds: int, match: str, seed_offset: int = 0) -> None:
    """Refuse a budget no comparison can run, before anything is built."""
    if match not in MATCHES:
        raise UserError(f"match must be one of {', '.join(MATCHES)}, got {match!r}")
    for name, value in (("steps", steps), ("seeds", seeds)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    if seed_offset < 0:
        raise UserError(f"seed_offset must be >= 0, got {seed_offset}")


def arm_config(spec: str, overrides: dict[str, Any] | None = None) -> tuple[str, Config]:
    """`DIR:best` (the best config of an ablation), a YAML config / bundled preset name, or
    `control:KIND:SPEC` (the baseline control of the recursive arm SPEC, `control_spec`), with
    dotted-key overrides applied on top (to SPEC, for a control)."""
    if spec.startswith("control:"):
        return control_arm(spec, overrides)
    if spec.endswith(":best"):
        name, cfg = best_config(spec[: -len(":best")])
        return name, with_overrides(cfg, overrides or {})
    return Path(spec).stem, resolve_config(spec, overrides)


def control_spec(spec: str) -> tuple[str, str]:
    """`control:KIND:SPEC` -> (KIND, SPEC); KIND is params (same parameters, no recursion), flops
    (as many layers as the recursion makes passes: same FLOPs per token), depth (same training
    FLOPs per step) or outer (the stack once per segment of SPEC's outer loop), checked by
    control_config."""
    kind, _, inner = spec.removeprefix("control:").partition(":")
    if not kind or not inner:
        raise UserError(f"arm {spec!r}: a control is control:KIND:SPEC, KIND params, flops, depth or outer, "
                        "SPEC a recursive arm's YAML config, preset name or DIR:best")
    return kind, inner


def control_arm(spec: str, overrides: dict[str, Any] | None = None) -> tuple[str, Config]:
    """The matched baseline control of a recursive arm, named `control:KIND:NAME`."""
    kind, inner = control_spec(spec)
    name, cfg = arm_config(inner, overrides)
    try:
        return f"control:{kind}:{name}", control_config(cfg, kind)
    except UserError as exc:
        raise UserError(f"arm {spec!r}: {exc}") from None


def base_spec(spec: str) -> str:
    """The spec a control is built from (the spec itself for any other arm)."""
    return control_spec(spec)[1] if spec.startswith("control:") else spec


def make_arms(specs: list[str], overrides: dict[str, Any] | None = None) -> dict[str, Arm]:
    """The arms as given, keyed a, b, c, ... in order, before any budget; arms of one name are
    told apart by their key, as in "cpu-tiny (A)"."""
    if not 2 <= len(specs) <= len(ARM_KEYS):
        raise UserError(f"a comparison takes 2 to {len(ARM_KEYS)} arms, got {len(specs)}")
    named = {key: (spec, *arm_config(spec, overrides)) for key, spec in zip(ARM_KEYS, specs)}
    for _, _, cfg in named.values():
        check_runtime(cfg.train)
    repeated = Counter(name for _, name, _ in named.values())
    return {key: Arm(f"{name} ({key.upper()})" if repeated[name] > 1 else name, spec, cfg)
            for key, (spec, name, cfg) in named.items()}


def pair_arms(a: str, b: str, overrides: dict[str, Any] | None = None) -> dict[str, Arm]:
    """Two arms, A and B (`make_arms`)."""
    return make_arms([a, b], overrides)


def selection_seeds(spec: str) -> list[int]:
    """The seeds the ablation behind a `DIR:best` spec ran (its sweep and any confirmation)."""
    results = json.loads((Path(spec.removesuffix(":best")) / ABLATION_RESULTS).read_text())
    return [*results.get("seeds", []), *results.get("confirmation", {}).get("seeds", [])]


def seed_lists(arms: dict[str, Arm], seeds: int, seed_offset: int, paired: bool) -> dict[str, list[int]]:
    """A runs `seeds` seeds from `seed_offset` on; B the next `seeds`, C the next, and so on
    (independent runs), or every arm A's own (paired). All start past every seed an ablation arm
    (or the arm a control is built from) was selected on: rerunning those would favour the arm
    that won on them."""
    sources = [base_spec(arm.source) for arm in arms.values()]
    used = [seed for source in sources if source.endswith(":best") for seed in selection_seeds(source)]
    start = seed_offset + (max(used) + 1 if used else 0)
    return {key: list(range(start + (0 if paired else i * seeds), start + (1 if paired else i + 1) * seeds))
            for i, key in enumerate(arms)}


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


def _with(cfg: Config, **train: Any) -> Config:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


def _budgeted(cfg: Config, steps: int) -> Config:
    """`steps` steps with about ten evaluations and twenty log lines; no checkpoints but the final one."""
    return _with(cfg, max_steps=steps, eval_every=max(1, steps // 10), log_every=max(1, steps // 20), save_every=0)


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


def train_arms(arms: dict[str, Arm], out: Path, progress: Progress) -> Runs:
    """Every seed of every arm; the arms alternate, so drift in machine speed touches all alike."""
    runs: Runs = {key: {} for key in arms}
    for i in range(len(arms[REFERENCE].seeds)):
        for key, arm in arms.items():
            seed = arm.seeds[i]
            cfg = _with(arm.cfg, seed=seed, tracker_group=arm.cfg.train.tracker_group or out.resolve().name)
            runs[key][str(seed)] = _run(cfg, out / "runs" / f"{key}-s{seed}", progress)
    return runs


def _same_run(stored: Config, wanted: Config) -> bool:
    """Equal up to the vocab size, which a run fits to its tokenizer, and the trackers it logged to."""
    a, b = stored.to_dict(), wanted.to_dict()
    for d in (a, b):
        d["model"].pop("vocab_size")
        for key in BOOKKEEPING_KEYS:
            d["train"].pop(key)
    return a == b


def _run(cfg: Config, run_dir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Train one seed of one arm, or reuse it when a finished run with the same config is there."""
    summary = run_dir / "summary.json"
    stored = run_dir / "config.yaml"
    if summary.is_file() and stored.is_file() and _same_run(read_config(run_dir), cfg):
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


def _with_calibrated_time(run: dict[str, Any], step_s: float) -> dict[str, Any]:
    """A run's curves with `calibrated_time_s` = step x the arm's calibrated step time: the time
    axis verdicts read, free of the load the machine carried while this run trained."""
    return {**run, **{field: [{**e, "calibrated_time_s": e["step"] * step_s} for e in run[field]]
                      for field in ("train_history", "val_history")}}


def _arm_results(arm: Arm, per_seed: dict[str, dict[str, Any]], metric: str) -> dict[str, Any]:
    """One arm's part of comparison.json: its plan, its means over seeds and every seed's run."""
    per_seed = {seed: _with_calibrated_time(run, arm.step_s) for seed, run in per_seed.items()}
    runs = list(per_seed.values())
    stats = seed_stats([r["summary"] for r in runs], metric)
    return {"name": arm.name, "source": arm.source, "config": arm.cfg.to_dict(), "max_steps": arm.steps,
            "seeds": arm.seeds, "step_s": arm.step_s, "calibration_s": arm.calibration_s,
            "results": _headline(stats),
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


def difference(a: list[float], b: list[float], paired: bool) -> dict[str, Any]:
    """mean(B) - mean(A) with its interval: of the per-seed differences when paired, else Welch's."""
    return paired_diff(a, b) if paired else welch_diff(a, b)


def _seed_values(arm: dict[str, Any], key: str) -> list[float]:
    """One aggregate's per-seed values, in seed order (what pairs seeds between arms)."""
    path = SEED_STATS.get(key, ("final_val", key.removeprefix("final_val_")))
    return values_at([run["summary"] for run in arm["per_seed"].values()], *path)


def metric_table(arms: dict[str, dict[str, Any]], paired: bool) -> list[dict[str, Any]]:
    """Both arms' final metrics side by side, each difference with its interval and p, the p's
    Holm-corrected over the table's rows: an arm is `better` only where the corrected p < 1 - level,
    by `advantage_pct` of the other arm's mean. Several rows tested one by one would name some
    arm better far more often than the level says, even between identical arms."""
    rows = [(label, key, lower, difference(_seed_values(arms["a"], key), _seed_values(arms["b"], key), paired))
            for label, key, lower in METRIC_ROWS if key in arms["a"]["aggregate"]]
    tested = [i for i, row in enumerate(rows) if row[3]["p"] is not None]
    adjusted = dict(zip(tested, holm([rows[i][3]["p"] for i in tested]), strict=True))
    table = []
    for i, (label, key, lower, diff) in enumerate(rows):
        a, b = (arms[arm]["aggregate"][key]["mean"] for arm in ("a", "b"))
        significant = adjusted.get(i, 1.0) < 1 - CI_LEVEL
        table.append({"metric": label, "key": key, "a": a, "b": b, "diff_b_minus_a": diff, "p_holm": adjusted.get(i),
                      **_ahead_of(a, b, lower if significant else None)})
    return table


def speed_table(arms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Speed from the interleaved calibration, never from the runs' wall clocks (they ran at
    different moments, under different load). An arm is faster only where the calibration's
    interval of the step-time ratio excludes 1; arms given one pooled step time are level."""
    a, b = arms["a"], arms["b"]
    level = {"ratio": 1.0, "ci_low": 1.0, "ci_high": 1.0}  # one pooled step time: level by the calibration
    ratio = level if a["step_s"] == b["step_s"] else time_ratio(a["calibration_s"], b["calibration_s"])
    tokens = {arm: data["config"]["train"]["batch_size"] * data["config"]["model"]["seq_len"]
              for arm, data in arms.items()}
    values = {"steps_per_s": {arm: 1 / arms[arm]["step_s"] for arm in arms},
              "tokens_per_s": {arm: tokens[arm] / arms[arm]["step_s"] for arm in arms},
              "train_time_s": {arm: arms[arm]["max_steps"] * arms[arm]["step_s"] for arm in arms}}
    steps_ratio = b["max_steps"] / a["max_steps"]
    rows = {}
    for key, lower in SPEED_ROWS:
        scale = steps_ratio if key == "train_time_s" else 1.0  # B's total time over A's is steps x step time
        interval = {k: None if ratio[k] is None else ratio[k] * scale for k in ("ratio", "ci_low", "ci_high")}
        differ = interval["ci_low"] is not None and not interval["ci_low"] <= 1.0 <= interval["ci_high"]
        rows[key] = {**_ahead_of(values[key]["a"], values[key]["b"], lower if differ else None),
                     "a": values[key]["a"], "b": values[key]["b"], "time_ratio_b_over_a": interval}
    return rows


def _ahead_of(a: float, b: float, lower_is_better: bool | None) -> dict[str, Any]:
    """Which arm is ahead and by how much of the other's value; nobody when `lower_is_better` is None."""
    if lower_is_better is None or a == b:
        return {"better": None, "advantage_pct": None}
    better = ("a" if a < b else "b") if lower_is_better else ("a" if a > b else "b")
    worse = b if better == "a" else a
    return {"better": better, "advantage_pct": 100 * abs(a - b) / abs(worse) if worse else None}


def margin(values: dict[str, list[float]], diff: float, metric: dict[str, Any]) -> float:
    """How far apart the arms are: % of the worse val loss, or points of exact match."""
    if metric["lower_is_better"]:
        return 100 * abs(diff) / max(statistics.fmean(values["a"]), statistics.fmean(values["b"]))
    return 100 * abs(diff)


def verdicts(arms: dict[str, dict[str, Any]], match: str, metric: dict[str, Any] = METRICS["loss"],
             paired: bool = False) -> dict[str, Any]:
    """The judged metric of arms A and B at the largest budget every run of both reached, on each axis.

    Only the matched budget decides (`winner`); the others are descriptive (`ahead`). The point
    must lie inside every run's evaluated range (no extrapolation before a first or after a last
    evaluation); where the ranges do not overlap the verdict is unavailable.
    """
    out = {}
    for dim, axis in AXES.items():
        v = _verdict(arms, axis, metric, paired, shared_point(arms, axis))
        out[dim] = {**v, "matched": dim == match, "role": "decision" if dim == match else "descriptive",
                    "winner": v["ahead"] if dim == match else None}
    return out


def shared_point(arms: dict[str, dict[str, Any]], axis: str) -> float | None:
    """The largest `axis` value every run of every arm reached; None where it lies before some
    run's first evaluation (the runs' evaluated ranges do not overlap)."""
    runs = [run["val_history"] for data in arms.values() for run in data["per_seed"].values()]
    point = min(h[-1][axis] for h in runs)
    return None if max(h[0][axis] for h in runs) > point else point


def _verdict(arms: dict[str, dict[str, Any]], axis: str, metric: dict[str, Any], paired: bool,
             point: float | None) -> dict[str, Any]:
    """Both arms at `point` on `axis`, whether they differ beyond the noise, and at which step of
    how many each arm was read there."""
    if point is None:
        return {"axis": axis, "point": None, "available": False, "ahead": None,
                "reason": f"the arms' evaluated ranges of {axis} do not overlap"}
    histories = {arm: [r["val_history"] for r in data["per_seed"].values()] for arm, data in arms.items()}
    values = {arm: [value_at(h, axis, point, metric["key"]) for h in arm_runs] for arm, arm_runs in histories.items()}
    diff = difference(values["a"], values["b"], paired)
    bounds = metric.get("bounds")
    read_at = {arm: {"step": statistics.fmean(value_at(h, axis, point, "step") for h in arm_runs),
                     "of": arms[arm]["max_steps"]} for arm, arm_runs in histories.items()}
    return {"axis": axis, "point": point, "available": True,
            "a": mean_ci(values["a"], bounds=bounds), "b": mean_ci(values["b"], bounds=bounds),
            "diff_b_minus_a": diff, "detectable": diff["detectable"],
            "ahead": _ahead_by_diff(diff, metric) if diff["significant"] else None,
            "margin": margin(values, diff["diff"], metric), "read_at": read_at}


def _ahead_by_diff(diff: dict[str, Any], metric: dict[str, Any]) -> str:
    """The arm ("a" or "b") a difference B minus A favours."""
    return "b" if (diff["diff"] < 0) == metric["lower_is_better"] else "a"


def recommendations(result: dict[str, Any]) -> list[str]:
    """Advice that follows from the decision (the matched budget) alone, nothing canned."""
    notes = []
    if result["n_seeds"] < 2:
        notes.append("One seed per arm measures no noise: rerun with --seeds 3 before acting on any difference.")
    match = result["match"]
    notes.append(_decision_note(result, match, dict(BUDGETS)[match]))
    others = [dim for dim, _ in BUDGETS if dim != match]
    names = {"steps": "steps", "flops": "FLOPs", "time": "time"}
    notes.append(f"Equal {names[others[0]]} and equal {names[others[1]]} are descriptive, not decisions: there an "
                 "arm is read where every run reached, often mid-schedule, which favours it. To decide there, "
                 f"compare with --match {others[0]} (or {others[1]}).")
    speed = result["speed"]["tokens_per_s"]
    if result["winner"] is None and speed["better"] is not None:
        ratio = speed["time_ratio_b_over_a"]
        notes.append(f"{result['arms'][speed['better']]['name']} trains {speed['advantage_pct']:.1f}% more tokens "
                     f"per second on this machine (B's step time is {ratio['ci_low']:.3f} to {ratio['ci_high']:.3f} "
                     f"x A's, {result['ci_level']}% CI of the interleaved calibration); as the decision ties, it "
                     "is the cheaper choice.")
    return notes


def _decision_note(result: dict[str, Any], dim: str, label: str, names: tuple[str, str] = ("A", "B")) -> str:
    """What to train under the matched budget, or why the decision says nothing; `names` are what
    the text calls arms A and B of `result`."""
    v, metric = result["verdicts"][dim], result["metric"]
    if not v["available"]:
        return f"Under {label} no verdict: {v['reason']}."
    if not v["winner"]:
        return (f"Under {label} the arms are not distinguishable at {result['n_seeds']} seeds; "
                "more seeds or a longer budget are needed to separate them.")
    ahead = (f"a val loss {v['margin']:.2f}% lower" if metric["lower_is_better"]
             else f"a {metric['label']} {v['margin']:.2f} points higher")
    ci = v["diff_b_minus_a"]
    return (f"Under {label}, train {result['arms'][v['winner']]['name']}: it reaches {ahead} "
            f"({ci['ci_low']:.4f} to {ci['ci_high']:.4f} is the {result['ci_level']}% CI of {names[1]} minus "
            f"{names[0]}).")


def _setting(arms: dict[str, dict[str, Any]], steps: int, match: str, metric: str, paired: bool) -> dict[str, Any]:
    """What a comparison.json says first: the budget, the seeds, how it judges."""
    return {"match": match, "steps": steps, "n_seeds": len(arms[REFERENCE]["seeds"]),
            "ci_level": round(CI_LEVEL * 100), "paired": paired, "metric": METRICS[metric]}


def _head_to_head(pair: dict[str, dict[str, Any]], match: str, metric: str, paired: bool) -> dict[str, Any]:
    """Arm B against arm A: the metric table, speeds and verdicts."""
    v = verdicts(pair, match, METRICS[metric], paired)
    return {"metric_table": metric_table(pair, paired), "speed": speed_table(pair), "verdicts": v,
            "winner": v[match]["winner"]}


def judge(arms: dict[str, dict[str, Any]], steps: int, match: str, metric: str, paired: bool = False) -> dict[str, Any]:
    """comparison.json: the arms side by side, the decision at the matched budget, the descriptive
    readings at the other two, the advice. More than two arms: `judge_many`."""
    if len(arms) > 2:
        return judge_many(arms, steps, match, metric, paired)
    result = {**_setting(arms, steps, match, metric, paired), "arms": arms,
              **_head_to_head(arms, match, metric, paired)}
    result["recommendations"] = recommendations(result)
    return result


def judge_many(arms: dict[str, dict[str, Any]], steps: int, match: str, metric: str,
               paired: bool = False) -> dict[str, Any]:
    """comparison.json of more than two arms: every other arm against the reference (the first)
    as in a head to head, under `pairs` (there A is the reference and B the arm), each verdict's p
    Holm-corrected across the comparisons on its axis (`holm_across`); each arm's parameters and
    training FLOPs per token beside its results.

    Each pair is read at the largest budget both of its arms reached, not at one point for all:
    an arm that spends less than planned (ACT halting early) would otherwise pull every other
    arm back to mid-schedule."""
    pairs = {key: _head_to_head({"a": arms[REFERENCE], "b": data}, match, metric, paired)
             for key, data in arms.items() if key != REFERENCE}
    holm_across(pairs, match, METRICS[metric])
    result = {**_setting(arms, steps, match, metric, paired), "reference": REFERENCE,
              "arms": {key: {**data, **arm_size(data["config"])} for key, data in arms.items()}, "pairs": pairs}
    result["recommendations"] = many_recommendations(result)
    return result


def arm_size(stored: dict[str, Any]) -> dict[str, Any]:
    """An arm's parameters (total, active, embedding), training FLOPs per token of one step and the
    layers a token passes through at inference."""
    cfg = config_from_dict(stored)
    tokens = cfg.train.batch_size * cfg.model.seq_len
    return {"params": param_counts(cfg), "flops_per_token": config_step_flops(cfg) / tokens,
            "inference_layers": inference_layers(cfg)}


def holm_across(pairs: dict[str, dict[str, Any]], match: str, metric: dict[str, Any]) -> None:
    """On each axis, the verdicts' p-values Holm-corrected across the pairs (`p_holm`): an arm is
    ahead of the reference, or behind it, only where its corrected p < 1 - level. With several
    arms tested one by one some arm would read better far more often than the level says."""
    for dim in AXES:
        judged = {key: pair["verdicts"][dim] for key, pair in pairs.items() if pair["verdicts"][dim]["available"]}
        tested = [key for key, v in judged.items() if v["diff_b_minus_a"]["p"] is not None]
        adjusted = dict(zip(tested, holm([judged[key]["diff_b_minus_a"]["p"] for key in tested]), strict=True))
        for key, v in judged.items():
            significant = adjusted.get(key, 1.0) < 1 - CI_LEVEL
            v["p_holm"] = adjusted.get(key)
            if key in adjusted:  # at Holm's strictest step: what an arm needs when no other differs
                diff = v["diff_b_minus_a"]
                v["detectable"] = detectable(diff["se"], diff["df"], tests=len(tested))
            v["ahead"] = _ahead_by_diff(v["diff_b_minus_a"], metric) if significant else None
            v["winner"] = v["ahead"] if v["matched"] else None
    for pair in pairs.values():
        pair["winner"] = pair["verdicts"][match]["winner"]


def many_recommendations(result: dict[str, Any]) -> list[str]:
    """Advice from each arm's decision against the reference (Holm-corrected), nothing canned."""
    notes = []
    if result["n_seeds"] < 2:
        notes.append("One seed per arm measures no noise: rerun with --seeds 3 before acting on any difference.")
    match, reference = result["match"], result["arms"][result["reference"]]
    for key, pair in result["pairs"].items():
        view = {**result, "arms": {"a": reference, "b": result["arms"][key]}, "verdicts": pair["verdicts"]}
        note = _decision_note(view, match, dict(BUDGETS)[match], names=("the reference", key.upper()))
        notes.append(f"{key.upper()} ({result['arms'][key]['name']}) against the reference: {note}")
    notes.append(f"Each verdict's p is Holm-corrected across the {len(result['pairs'])} comparisons with the "
                 "reference; the other two budgets are descriptive, as in a head to head.")
    return notes


def write_results(result: dict[str, Any], out: Path) -> None:
    """comparison.json, then the plots and FINAL_RESULTS.md, which are built from it alone."""
    atomic_write_json(out / RESULTS, result)
    write_comparison_report(result, out)


def run_comparison(a: str, b: str, steps: int, seeds: int, match: str, out: str | Path,
                   progress: Progress = print, overrides: dict[str, Any] | None = None,
                   metric: str = "loss", seed_offset: int = 0, paired: bool = False) -> dict[str, Any]:
    """A against B: `compare_arms` of two arms."""
    return compare_arms([a, b], steps, seeds, match, out, progress, overrides, metric, seed_offset, paired)


def compare_arms(specs: list[str], steps: int, seeds: int, match: str, out: str | Path,
                 progress: Progress = print, overrides: dict[str, Any] | None = None,
                 metric: str = "loss", seed_offset: int = 0, paired: bool = False) -> dict[str, Any]:
    """Train every arm over seeds and write comparison.json, comparison.png, comparison_compute.png and
    FINAL_RESULTS.md; with more than two arms, the first is the reference (`judge_many`).

    `overrides` (dotted keys) apply to every arm; `metric` is what the verdicts judge; `seed_offset`
    shifts every seed (a repeat with fresh seeds); `paired` runs every arm on A's seeds.
    """
    check_budget(steps, seeds, match, seed_offset)
    out = Path(out)
    arms = plan_arms(make_arms(specs, overrides), steps, seeds, match, out, progress, seed_offset, paired)
    runs = train_arms(arms, out, progress)
    result = judge(aggregate_arms(arms, runs, metric), steps, match, metric, paired)
    write_results(result, out)
    return result
