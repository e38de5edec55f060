"""Token-weighted validation metrics over a fixed slice of the val split."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reasonlab.data.sampler import eval_batches


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tokens: np.ndarray,
    seq_len: int,
    batch_size: int,
    n_batches: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """Summed cross-entropy and correct next-token predictions over every target token in the slice;
    for recursive models also the mean number of segments a token's prediction used."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count, segments = 0.0, 0, 0, 0.0
    for x, y in eval_batches(tokens, seq_len, batch_size, n_batches):
        x, y = x.to(device), y.to(device)
        with autocast():
            out = model.run(x)
        logits = out.logits.float()
        loss_sum += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        correct += (logits.argmax(dim=-1) == y).sum().item()
        count += y.numel()
        if out.segments is not None:
            segments += out.segments.float().sum().item()
    model.train(was_training)
    loss = loss_sum / count
    metrics = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "accuracy": correct / count, "tokens": count}
    if segments:
        metrics["segments"] = segments / count
    return metrics
