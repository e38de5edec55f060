"""comparison.json and tasks.json as typed results: one shape for two arms or many, a schema
version, and one reader for every file an earlier reasonlab wrote.

Every comparison is a reference (arm A) and one head to head per other arm (`pairs`); two arms
are the case of one pair. Schema 1 is what was written before the results were typed (no
`schema_version`): with two arms, the head to head sat at the top level. Fields that older files
did not record are None, and the reports say so rather than guess.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from reasonlab.errors import UserError

SCHEMA_VERSION = 2
Curve = list[dict[str, float]]  # eval or train events, one dict per step: what the run logged


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean over seeds with its t-interval (none from one seed)."""

    mean: float
    std: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None


@dataclasses.dataclass(frozen=True)
class Difference:
    """B minus A with its interval and two-sided p (`stats.welch_diff` or `stats.paired_diff`)."""

    diff: float
    ci_low: float | None = None
    ci_high: float | None = None
    p: float | None = None
    significant: bool = False
    se: float | None = None
    df: float | None = None
    detectable: float | None = None


@dataclasses.dataclass(frozen=True)
class Ratio:
    """B's step time over A's, with the calibration's interval."""

    ratio: float | None
    ci_low: float | None
    ci_high: float | None


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str
    label: str
    lower_is_better: bool
    bounds: tuple[float, float] | None = None


@dataclasses.dataclass(frozen=True)
class ReadAt:
    step: float  # mean over seeds of the step where the arm was read
    of: int  # the steps it trained


@dataclasses.dataclass(frozen=True)
class Reading:
    """Both arms of a pair at one budget on one axis: the decision where it is the matched budget,
    descriptive elsewhere. `role` is None in files written before the two were told apart."""

    axis: str
    point: float | None
    available: bool
    matched: bool = False
    role: str | None = None
    reason: str | None = None
    a: Estimate | None = None
    b: Estimate | None = None
    diff_b_minus_a: Difference | None = None
    detectable: float | None = None
    ahead: str | None = None  # "a", "b", or None: within noise
    winner: str | None = None  # `ahead` at the matched budget
    margin: float | None = None  # % of the worse val loss, or points of exact match
    read_at: dict[str, ReadAt] | None = None
    p_holm: float | None = None  # with more than two arms: corrected across the pairs


@dataclasses.dataclass(frozen=True)
class MetricRow:
    metric: str
    a: float
    b: float
    key: str | None = None
    diff_b_minus_a: Difference | None = None
    p_holm: float | None = None
    better: str | None = None
    advantage_pct: float | None = None


@dataclasses.dataclass(frozen=True)
class SpeedRow:
    a: float
    b: float
    better: str | None = None
    advantage_pct: float | None = None
    time_ratio_b_over_a: Ratio | None = None  # None: from the runs' wall clocks, before calibration
    diff_b_minus_a: Difference | None = None


@dataclasses.dataclass(frozen=True)
class HeadToHead:
    """One arm (B) against the reference (A): final metrics, speeds, and the readings at each budget."""

    metric_table: list[MetricRow]
    speed: dict[str, SpeedRow]
    verdicts: dict[str, Reading]
    winner: str | None


@dataclasses.dataclass(frozen=True)
class SeedRun:
    """One seed's run as its folder records it; `summary` is its summary.json."""

    run_dir: str
    train_history: Curve
    val_history: Curve
    summary: dict[str, Any]
    nan_encountered: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArmInfo:
    """What every report says of an arm. The sizes are None in two-arm files of schema 1."""

    name: str
    max_steps: int
    seeds: list[int] | None = None
    params: dict[str, int] | None = None
    flops_per_token: float | None = None
    inference_layers: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ComparisonArm(ArmInfo):
    config: dict[str, Any]
    source: str | None = None
    step_s: float | None = None  # the calibrated step time
    calibration_s: list[float] | None = None  # the calibration's interleaved timings
    aggregate: dict[str, Estimate]  # the summaries' numbers over seeds (`aggregate.SEED_STATS`)
    train_history: Curve  # mean over seeds
    val_history: Curve
    per_seed: dict[str, SeedRun]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Judged:
    """What judging arms decides: the setting, the arms, the reference and each other arm's head to
    head. The kinds of result narrow `arms` to what they record of an arm."""

    schema_version: int = SCHEMA_VERSION
    match: str
    n_seeds: int
    ci_level: int
    paired: bool
    metric: Metric
    reference: str
    arms: dict[str, ArmInfo]
    pairs: dict[str, HeadToHead]

    @property
    def head_to_head(self) -> HeadToHead | None:
        """The one pair of a two-arm result; None with more arms."""
        return next(iter(self.pairs.values())) if len(self.pairs) == 1 else None

    def side(self, letter: str, key: str | None = None) -> ArmInfo:
        """The arm a head to head's "a" names (the reference) or its "b" (arm `key`; without it, the
        one other arm of a two-arm result)."""
        return self.arms[self.reference if letter == "a" else key or next(iter(self.pairs))]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Comparison(Judged):
    arms: dict[str, ComparisonArm]
    steps: int
    recommendations: list[str]


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    name: str
    description: str
    level_name: str
    difficulty_name: str | None
    format: str
    config: dict[str, Any]
    levels: dict[str, list[int]]
    instances: dict[str, int]


@dataclasses.dataclass(frozen=True)
class Example:
    split: str
    level: int
    prompt: str
    answer: str
    prediction: str


@dataclasses.dataclass(frozen=True)
class TaskScores:
    """One model's scores, or their means over seeds: exact match and accuracy per split, exact
    match by level (and by difficulty), and for a recursive model at each forced segment count
    and depth, per split."""

    val: dict[str, Any]
    test: dict[str, Any]
    by_level: dict[str, Any]
    by_difficulty: dict[str, Any] | None = None
    segments_curve: dict[str, dict[str, Any]] | None = None
    depth_curve: dict[str, dict[str, Any]] | None = None


@dataclasses.dataclass(frozen=True)
class SeedScores(TaskScores):
    examples: dict[str, Example] | None = None
    trained_depth: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskArm(ArmInfo):
    arch: str
    flops: Estimate
    per_seed: dict[str, SeedScores]
    aggregate: TaskScores  # of Estimates
    trained_segments: int | None
    trained_depth: int | None
    examples: dict[str, Example]  # "solved", "failed"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskResult(Judged):
    task: TaskInfo
    arms: dict[str, TaskArm]


def _fields(cls: type, data: dict[str, Any], **convert: Any) -> dict[str, Any]:
    """`data`'s keys that `cls` has, with `convert[key]` applied where given and the value not None."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: (convert[k](v) if k in convert and v is not None else v) for k, v in data.items() if k in names}


def from_dict(cls: type, data: dict[str, Any], **convert: Any) -> Any:
    """A `cls` from the keys of `data` it has (keys an older file lacks take the field's default,
    keys it no longer has are dropped), nested fields typed by `convert`."""
    return cls(**_fields(cls, data, **convert))


def each(convert: Any) -> Any:
    """A converter of a dict's values."""
    return lambda items: {k: convert(v) for k, v in items.items()}


def _estimate(d: dict[str, Any]) -> Estimate:
    return from_dict(Estimate, d)


def _difference(d: dict[str, Any]) -> Difference:
    return from_dict(Difference, d)


def _reading(d: dict[str, Any]) -> Reading:
    return from_dict(Reading, d, a=_estimate, b=_estimate, diff_b_minus_a=_difference,
                     read_at=each(lambda r: from_dict(ReadAt, r)))


def _speed_row(d: dict[str, Any]) -> SpeedRow:
    return from_dict(SpeedRow, d, diff_b_minus_a=_difference, time_ratio_b_over_a=lambda r: from_dict(Ratio, r))


def _head_to_head(d: dict[str, Any]) -> HeadToHead:
    return HeadToHead(metric_table=[from_dict(MetricRow, row, diff_b_minus_a=_difference)
                                    for row in d.get("metric_table", [])],
                      speed=each(_speed_row)(d.get("speed", {})), verdicts=each(_reading)(d["verdicts"]),
                      winner=d.get("winner"))


def _judged(data: dict[str, Any]) -> dict[str, Any]:
    """The setting and the pairs of either schema: schema 1's two-arm files hold their one head to
    head at the top level."""
    pairs = data["pairs"] if "pairs" in data else {"b": data}
    metric = data["metric"]
    return {"schema_version": SCHEMA_VERSION, "match": data["match"], "n_seeds": data["n_seeds"],
            "ci_level": data["ci_level"], "paired": data.get("paired", False),
            "metric": Metric(metric.get("key", "loss"), metric["label"], metric["lower_is_better"],
                             tuple(metric["bounds"]) if metric.get("bounds") else None),
            "reference": data.get("reference", "a"), "pairs": each(_head_to_head)(pairs)}


def _comparison_arm(d: dict[str, Any]) -> ComparisonArm:
    return from_dict(ComparisonArm, d, aggregate=each(_estimate),
                     per_seed=each(lambda run: from_dict(SeedRun, run)))


_examples = each(lambda e: from_dict(Example, e))


def _aggregate(d: dict[str, Any]) -> TaskScores:
    estimates = each(_estimate)
    return from_dict(TaskScores, d, val=estimates, test=estimates, by_level=estimates, by_difficulty=estimates,
                     segments_curve=each(estimates), depth_curve=each(estimates))


def _task_arm(d: dict[str, Any]) -> TaskArm:
    return from_dict(TaskArm, d, flops=_estimate, aggregate=_aggregate, examples=_examples,
                     per_seed=each(lambda run: from_dict(SeedScores, run, examples=_examples)))


def check_version(data: dict[str, Any], name: str, newest: int = SCHEMA_VERSION) -> None:
    """A file from a newer reasonlab is refused rather than misread."""
    version = data.get("schema_version", 1)
    if version > newest:
        raise UserError(f"{name} has schema version {version}, newer than this reasonlab reads ({newest}); "
                        "upgrade reasonlab")


def read_comparison(data: dict[str, Any]) -> Comparison:
    """A comparison.json of any schema, typed."""
    check_version(data, "comparison.json")
    return Comparison(**_judged(data), steps=data.get("steps", max(a["max_steps"] for a in data["arms"].values())),
                      arms=each(_comparison_arm)(data["arms"]), recommendations=data.get("recommendations", []))


def read_tasks(data: dict[str, Any]) -> TaskResult:
    """A tasks.json of any schema, typed."""
    check_version(data, "tasks.json")
    return TaskResult(**_judged(data), task=from_dict(TaskInfo, data["task"]), arms=each(_task_arm)(data["arms"]))
