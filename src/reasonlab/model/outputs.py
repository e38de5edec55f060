"""What models return: inference outputs and one training step's losses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

State = tuple[torch.Tensor, ...]  # a recursive arm's per-position states, each [B, T, d]


@dataclass
class ModelOutput:
    """Logits [B, T, V], the MoE balance loss (mean over passes), and for recursive models
    the segment each token's prediction came from ([B, T])."""

    logits: torch.Tensor
    balance_loss: torch.Tensor
    segments: torch.Tensor | None = None


@dataclass
class StepLoss:
    """loss: the objective to backpropagate; lm_loss: the reported next-token cross-entropy;
    metrics: auxiliary scalars logged on their own; flops: what the step really computed; carry:
    what the next step continues from (recursion.carry_across_steps), else None. loss_count and
    lm_count: how many token terms `loss` and `lm_loss` are means over, the weights that combine
    micro-batches into the batch's means."""

    loss: torch.Tensor
    lm_loss: torch.Tensor
    flops: int
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    carry: Any = None
    loss_count: torch.Tensor | None = None
    lm_count: torch.Tensor | None = None
