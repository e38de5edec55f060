"""The arms `model.arch` names, in one torch-free table: for each, its config section, the class that
builds it and what it is. The config check, the CLI's choices, the model builder, the reports and
the docs read this table, so an arm is known everywhere or nowhere.

A new recursive arm is its model module (a `RecursiveLM` subclass, built from the model's, the
recursion's and its own config sections), its config section (a dataclass in config.py with
`check` and `describe`, and its field in `Config`), an entry here, and a preset.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from reasonlab.errors import UserError


@dataclass(frozen=True)
class Arm:
    arch: str  # the model.arch value
    section: str | None  # the config section of its own keys; None for the baseline, which has none
    model: str  # "module:Class" that builds it, imported only when a model is built
    summary: str  # one line: what one segment does


ARMS: dict[str, Arm] = {arm.arch: arm for arm in (
    Arm("baseline", None, "reasonlab.model.transformer:MoETransformerLM", "the MoE transformer stack, run once"),
    Arm("hrm", "hrm", "reasonlab.model.hrm:HRM", "HRM's high- and low-level cycles over the stack"),
    Arm("trm", "trm", "reasonlab.model.trm:TRM", "TRM's latent and answer updates over the stack"),
    Arm("looped", "looped", "reasonlab.model.looped:Looped",
        "the stack applied `depth` times (a looped or Universal Transformer), per-token ACT optional"),
    Arm("mor", "mor", "reasonlab.model.mor:MoR",
        "Mixture-of-Recursions: routers choose which tokens each of up to `recursions` passes computes"),
)}
ARCHS = tuple(ARMS)
RECURSIVE = tuple(arch for arch, arm in ARMS.items() if arm.section is not None)
ALIASES = {"recursive": "hrm"}  # old name -> arm: old configs and checkpoints keep loading


def arm(arch: str) -> Arm:
    """The registered arm of `arch`, or one line naming the registered ones."""
    try:
        return ARMS[arch]
    except KeyError:
        raise UserError(f"model.arch: unknown arm {arch!r}; the registered arms are {', '.join(ARMS)}") from None


def model_class(arch: str) -> type:
    """The class that builds the arm (imports torch)."""
    module, _, name = arm(arch).model.partition(":")
    return getattr(importlib.import_module(module), name)
