"""The arms a study compares: each from a spec (a YAML config, a preset, `DIR:best`, or a matched
`control:KIND:SPEC`), keyed a, b, c, ... in order, and the seeds each arm runs."""

from __future__ import annotations

import dataclasses
import json
import string
from collections import Counter
from pathlib import Path
from typing import Any

from reasonlab.config import Config, resolve_config, with_overrides
from reasonlab.errors import UserError
from reasonlab.experiments.ablation import RESULTS as ABLATION_RESULTS
from reasonlab.experiments.ablation import best_config
from reasonlab.model import control_config
from reasonlab.runtime import check_runtime

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
