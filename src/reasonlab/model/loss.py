"""Next-token cross-entropy through the tied head, optionally in checkpointed chunks.

At full vocabulary size the fp32 logits of a batch dominate memory (16 x 512 tokens x 49,152
entries = 1.6 GB, with as much again for their gradient). In chunks, only `chunk_tokens` x V
logits exist at a time; backward recomputes each chunk's logits instead of keeping them.

Targets equal to IGNORE_INDEX (prompt tokens and padding of reasoning tasks) add no loss and
are left out of every mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` holds; 0 when it holds nowhere."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def _chunk_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = (h @ weight.t()).float()
    return F.cross_entropy(logits, targets, reduction="none"), logits.argmax(dim=-1)


def token_losses(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy and greedy prediction for normalised states h [..., d] and targets [...].

    chunk_tokens = 0 computes all logits at once (fastest when they fit).
    """
    flat_h, flat_t = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    if not chunk_tokens or flat_t.numel() <= chunk_tokens:
        loss, pred = _chunk_loss(flat_h, weight, flat_t)
    else:
        parts = [checkpoint(_chunk_loss, hc, weight, tc, use_reentrant=False)
                 for hc, tc in zip(flat_h.split(chunk_tokens), flat_t.split(chunk_tokens))]
        loss, pred = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    return loss.view_as(targets), pred.view_as(targets)
