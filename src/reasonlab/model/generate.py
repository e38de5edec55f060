"""Autoregressive sampling with temperature and top-k (temperature 0 = greedy)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def sample(
    model: nn.Module,
    ids: torch.Tensor,
    max_new_tokens: int,
    context: int,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    stop_id: int | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Extend ids [1, T] by up to max_new_tokens; the model sees at most the last `context` tokens.

    Also returns, for recursive models, the segment each new token's prediction came from.
    """
    segments: list[int] = []
    for _ in range(max_new_tokens):
        out = model.run(ids[:, -context:])
        logits = out.logits[:, -1, :].float()
        if out.segments is not None:
            segments.append(int(out.segments[0, -1]))
        if temperature == 0:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            next_id = torch.multinomial(logits.softmax(dim=-1).cpu(), 1, generator=generator).to(ids.device)
        ids = torch.cat([ids, next_id], dim=1)
        if stop_id is not None and next_id.item() == stop_id:
            break
    return ids, segments
