"""AdamW on fp32 master weights and the learning-rate schedules: warmup, then linear decay or
warmup-stable-decay."""

from __future__ import annotations

import torch
from torch import nn

from reasonlab.config import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """Weight decay on matrices (and expert stacks), none on norms and biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=device.type == "cuda"
    )


def cooldown_start(cfg: TrainConfig) -> int:
    """The first step of a wsd schedule's cooldown: the last cooldown_fraction of max_steps (never
    inside the warmup). A run to a larger max_steps is at the same lr up to here, which is what lets
    a cooldown branch from its checkpoint stand for a run of this length (`scale`)."""
    return max(cfg.warmup_steps, cfg.max_steps - round(cfg.cooldown_fraction * cfg.max_steps))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for update number `step` (0-based): linear warmup, then linear decay to
    min_lr_ratio * lr, over every later step (linear) or over the cooldown alone after a stable
    phase at lr (wsd: warmup-stable-decay, Hu et al. 2024, Hägele et al. 2024)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    start = cooldown_start(cfg) if cfg.schedule == "wsd" else cfg.warmup_steps
    if step < start:
        return cfg.lr
    progress = (step - start) / max(1, cfg.max_steps - start)
    return cfg.lr * (1.0 - (1.0 - cfg.min_lr_ratio) * min(1.0, progress))
