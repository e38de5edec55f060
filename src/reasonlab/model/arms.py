"""The arms `model.arch` names, and what is computed from a config alone: parameters, a step's
FLOPs, and the matched controls of a recursive arm.

A new recursive arm is one module (a `RecursiveLM` subclass), one line in `RECURSIVE_ARMS`, one
config section and one preset.
"""

from __future__ import annotations

from torch import nn

from reasonlab.config import Config, with_overrides
from reasonlab.errors import UserError
from reasonlab.model.flops import base_param_counts, step_flops
from reasonlab.model.hrm import HRM
from reasonlab.model.looped import Looped
from reasonlab.model.recursion import RecursiveLM
from reasonlab.model.transformer import MoETransformerLM
from reasonlab.model.trm import TRM

RECURSIVE_ARMS: dict[str, type[RecursiveLM]] = {"hrm": HRM, "trm": TRM, "looped": Looped}
CONTROLS = ("params", "flops")


def build_model(cfg: Config) -> nn.Module:
    """The model `cfg.model.arch` names; every arm answers run(), forward() and compute_loss()."""
    arm = RECURSIVE_ARMS.get(cfg.model.arch)
    return MoETransformerLM(cfg.model) if arm is None else arm(cfg)


def param_counts(cfg: Config) -> dict[str, int]:
    """total: every parameter; active: those one token touches (top_k of n_experts experts)."""
    arm = RECURSIVE_ARMS.get(cfg.model.arch)
    return base_param_counts(cfg.model) if arm is None else arm.param_counts(cfg)


def config_step_flops(cfg: Config) -> int:
    """Training FLOPs of one batch of `cfg` (batch_size x seq_len tokens; a recursive arm with
    every segment run, and its expected passes where the depth is drawn): what budgets are planned with."""
    tokens = cfg.train.batch_size * cfg.model.seq_len
    arm = RECURSIVE_ARMS.get(cfg.model.arch)
    return step_flops(cfg.model, tokens) if arm is None else arm.step_flops(cfg, tokens)


def control_config(cfg: Config, kind: str) -> Config:
    """A recursive config's matched control: the same block stack without recursion.

    "params": the stack once (equal parameters, less the arm's few own ones). "flops": an untied
    stack with as many layers as the recursion makes passes per token over all its segments
    (equal forward FLOPs per token, more parameters). Training FLOPs can still differ where the
    recursion runs passes without gradient; compare's equal-FLOPs budget accounts for that.
    """
    arm = RECURSIVE_ARMS.get(cfg.model.arch)
    if arm is None:
        raise UserError(f"a control needs a recursive config (model.arch {', '.join(RECURSIVE_ARMS)}), "
                        f"got model.arch {cfg.model.arch}")
    if kind not in CONTROLS:
        raise UserError(f"unknown control {kind!r} (controls: {', '.join(CONTROLS)})")
    n_layers = cfg.model.n_layers
    if kind == "flops":
        n_layers = max(1, round(arm.passes_per_token(cfg) * n_layers))
    return with_overrides(cfg, {"model.arch": "baseline", "model.n_layers": n_layers})
