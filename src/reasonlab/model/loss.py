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


class _CrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy of fp32 logits [N, V] against targets [N].

    Same values as F.cross_entropy(reduction="none"); its backward is one pass over the saved
    log-probabilities (exp(log p) * g, minus g at the target) instead of a zero-filled
    [N, V] gradient, a scatter and log_softmax's backward: 40% less time at [2048, 8192] on
    the CPU, where the head's loss is a sizeable share of a step.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=-1)
        valid = targets != IGNORE_INDEX
        index = torch.where(valid, targets, 0).unsqueeze(1)
        ctx.save_for_backward(logp, index, valid)
        return -logp.gather(1, index).squeeze(1) * valid

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None]:
        logp, index, valid = ctx.saved_tensors
        scale = (grad_loss * valid).unsqueeze(1)
        grad = logp.exp().mul_(scale)
        return grad.scatter_(1, index, grad.gather(1, index) - scale), None


def head_logits(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Logits h @ weight.T of the tied head, [..., V].

    cuBLAS has fast tensor-core kernels only for aligned shapes: at a vocabulary of 44,125 the
    head's products fell back to a generic kernel, and an H100 spent 11.1 ms of a seed-gpu step
    in matmuls against 3.3 ms with the padding. On CUDA the weight is therefore zero-padded to a
    multiple of 128 rows for the product and the padding sliced off the result, a view that
    costs nothing. Parameters and checkpoints keep the true size.
    """
    pad = -weight.shape[0] % 128
    if pad and h.device.type == "cuda":
        return (h @ F.pad(weight, (0, 0, 0, pad)).t())[..., : weight.shape[0]]
    return h @ weight.t()


def _chunk_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                predict: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    logits = head_logits(h, weight).float()
    return _CrossEntropy.apply(logits, targets), logits.argmax(dim=-1) if predict else None


def token_losses(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_tokens: int = 0,
                 predict: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token cross-entropy and (if `predict`) greedy prediction for normalised states h [..., d]
    and targets [...].

    chunk_tokens = 0 computes all logits at once (fastest when they fit).
    """
    flat_h, flat_t = h.reshape(-1, h.shape[-1]), targets.reshape(-1)
    if not chunk_tokens or flat_t.numel() <= chunk_tokens:
        loss, pred = _chunk_loss(flat_h, weight, flat_t, predict)
    else:
        parts = [checkpoint(_chunk_loss, hc, weight, tc, predict, use_reentrant=False)
                 for hc, tc in zip(flat_h.split(chunk_tokens), flat_t.split(chunk_tokens))]
        loss = torch.cat([p[0] for p in parts])
        pred = torch.cat([p[1] for p in parts]) if predict else None
    return loss.view_as(targets), pred.view_as(targets) if predict else None
