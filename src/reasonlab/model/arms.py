"""The models of the arms `model.arch` names (reasonlab/registry.py), and what is computed from a
config alone: parameters, a step's FLOPs, and the matched controls of a recursive arm."""

from __future__ import annotations

import dataclasses

from torch import nn

from reasonlab.config import Config, ModelConfig, with_overrides
from reasonlab.errors import UserError
from reasonlab.model.flops import base_param_counts, recursion_step_flops, step_flops
from reasonlab.model.recursion import RecursiveLM
from reasonlab.model.transformer import MoETransformerLM
from reasonlab.registry import RECURSIVE, arm, model_class

RECURSIVE_ARMS: dict[str, type[RecursiveLM]] = {arch: model_class(arch) for arch in RECURSIVE}
CONTROLS = ("params", "flops", "depth", "outer")


def build_model(cfg: Config) -> nn.Module:
    """The model `cfg.model.arch` names (an unknown arch is an error), a `LanguageModel`, built
    from its own config sections."""
    cls = model_class(cfg.model.arch)
    if cls is MoETransformerLM:
        return cls(cfg.model)
    return cls(cfg.model, cfg.recursion, section(cfg), seed=cfg.train.seed)


def section(cfg: Config) -> object:
    """The config section of a recursive arm's own keys."""
    return getattr(cfg, arm(cfg.model.arch).section)


def _passes(cfg: Config) -> tuple[float, float]:
    return RECURSIVE_ARMS[cfg.model.arch].passes(section(cfg))


def param_counts(cfg: Config) -> dict[str, int]:
    """total: every parameter; active: those one token touches (top_k of n_experts experts)."""
    counts = base_param_counts(cfg.model)
    if cfg.model.arch not in RECURSIVE_ARMS:
        return counts
    own = RECURSIVE_ARMS[cfg.model.arch].own_params(cfg.model, section(cfg))
    return {**counts, "total": counts["total"] + own, "active": counts["active"] + own}


def config_step_flops(cfg: Config) -> int:
    """Training FLOPs of one batch of `cfg` (batch_size x seq_len tokens), what budgets are planned
    with: a recursive arm with no token exiting early (ACT can only spend less), its expected passes
    where the depth is drawn, every segment or one where the state is carried across steps."""
    tokens = cfg.train.batch_size * cfg.model.seq_len
    cls = RECURSIVE_ARMS.get(cfg.model.arch)
    if cls is None:
        return step_flops(cfg.model, tokens)
    grad, free = _passes(cfg)
    n = 1 if cfg.recursion.carry_across_steps else cfg.recursion.max_segments
    own = section(cfg)
    return recursion_step_flops(cfg.model, tokens, n * grad, n * free, n, cls.pass_params(cfg.model, own),
                                cfg.recursion.use_act, cls.segment_params(cfg.model, own))


def passes_per_token(cfg: Config) -> float:
    """Stack passes one token goes through over every segment: the depth of the FLOP control."""
    return cfg.recursion.max_segments * sum(_passes(cfg)) if cfg.model.arch in RECURSIVE_ARMS else 1


def inference_layers(cfg: Config) -> float:
    """Layers one token passes through to be answered, every segment run (halting can only stop
    sooner): what an arm spends at inference, beside its training FLOPs."""
    return cfg.model.n_layers * passes_per_token(cfg)


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
    if cfg.model.arch not in RECURSIVE_ARMS:
        raise UserError(f"a control needs a recursive config (model.arch {', '.join(RECURSIVE_ARMS)}), "
                        f"got model.arch {cfg.model.arch}")
    if kind not in CONTROLS:
        raise UserError(f"unknown control {kind!r} (controls: {', '.join(CONTROLS)})")
    if kind == "outer":
        return with_overrides(cfg, {"model.arch": "looped", "looped.depth": 1, "looped.act": False,
                                    "looped.mean_depth": 0.0, "looped.backprop_depth": 0})
    n_layers = cfg.model.n_layers
    if kind == "flops":
        n_layers = max(1, round(passes_per_token(cfg) * n_layers))
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
