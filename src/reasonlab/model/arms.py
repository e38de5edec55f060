"""The models of the arms `model.arch` names (reasonlab/registry.py), and what is computed from a
config alone: parameters, a step's FLOPs, and the matched controls of a recursive arm."""

from __future__ import annotations

import dataclasses

from torch import nn

from reasonlab.config import Config, ModelConfig, with_overrides
from reasonlab.errors import UserError
from reasonlab.model.flops import base_param_counts, step_flops
from reasonlab.model.recursion import RecursiveLM
from reasonlab.model.transformer import MoETransformerLM
from reasonlab.registry import RECURSIVE, model_class

RECURSIVE_ARMS: dict[str, type[RecursiveLM]] = {arch: model_class(arch) for arch in RECURSIVE}
CONTROLS = ("params", "flops", "depth", "outer")


def build_model(cfg: Config) -> nn.Module:
    """The model `cfg.model.arch` names (an unknown arch is an error); every arm answers run(),
    forward() and compute_loss()."""
    cls = model_class(cfg.model.arch)
    return cls(cfg.model) if cls is MoETransformerLM else cls(cfg)


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


def inference_layers(cfg: Config) -> float:
    """Layers one token passes through to be answered, every segment run (halting can only stop
    sooner): what an arm spends at inference, beside its training FLOPs."""
    arm = RECURSIVE_ARMS.get(cfg.model.arch)
    return cfg.model.n_layers * (1 if arm is None else arm.passes_per_token(cfg))


def control_config(cfg: Config, kind: str) -> Config:
    """A recursive config's matched control: the same block stack without its inner recursion.

    "params": the stack once (equal parameters, less the arm's few own ones). "flops": an untied
    stack with as many layers as the recursion makes passes per token over all its segments
    (equal forward FLOPs per token, more parameters). "depth": an untied stack with the recursion's
    training FLOPs per step (the nearest whole number of layers): the "just make it deeper"
    competitor, which a recursion's passes without gradient make shallower than "flops".
    "outer": the stack once per segment inside the arm's outer loop (`looped` at depth 1, no
    per-pass ACT): the same segments, deep supervision, carry, halting and EMA, so what the arm
    gains over it is its inner recursion's.
    """
    arm = RECURSIVE_ARMS.get(cfg.model.arch)
    if arm is None:
        raise UserError(f"a control needs a recursive config (model.arch {', '.join(RECURSIVE_ARMS)}), "
                        f"got model.arch {cfg.model.arch}")
    if kind not in CONTROLS:
        raise UserError(f"unknown control {kind!r} (controls: {', '.join(CONTROLS)})")
    if kind == "outer":
        return with_overrides(cfg, {"model.arch": "looped", "looped.depth": 1, "looped.act": False,
                                    "looped.mean_depth": 0.0, "looped.backprop_depth": 0})
    n_layers = cfg.model.n_layers
    if kind == "flops":
        n_layers = max(1, round(arm.passes_per_token(cfg) * n_layers))
    if kind == "depth":
        n_layers = _layers_for_step_flops(cfg.model, cfg.train.batch_size * cfg.model.seq_len, config_step_flops(cfg))
    # a plain stack has no state to carry between optimizer steps: its rows take new examples every step
    return with_overrides(cfg, {"model.arch": "baseline", "model.n_layers": n_layers,
                                "recursion.carry_across_steps": False})


def _layers_for_step_flops(m: ModelConfig, tokens: int, target: int) -> int:
    """The whole number of baseline layers whose training step costs nearest `target` FLOPs (a
    step's FLOPs are the head's plus the same amount per layer)."""
    one, two = (step_flops(dataclasses.replace(m, n_layers=n), tokens) for n in (1, 2))
    return max(1, round((target - (2 * one - two)) / (two - one)))
