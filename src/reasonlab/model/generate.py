"""Autoregressive sampling with temperature and top-k (temperature 0 = greedy), with a KV cache.

With the cache, the prompt runs once (the prefill) and each new token runs alone against the
keys and values of every attention call kept from before (layers.KVCache): per pass and segment
for the recursive arms. While the text fits the context, the tokens are those of the uncached
path, which recomputes the whole text for every token. Past the context the uncached path slides
a window of `context` tokens, recomputed each time; the cached path instead starts its cache
again from the last half context and fills it up, so its predictions see between half and a
whole context, at a prefill per half context rather than a full forward per token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from reasonlab.model.layers import KVCache
from reasonlab.model.outputs import ModelOutput
from reasonlab.model.protocol import LanguageModel


def forced_compute(segments: int | None, depth: int | None) -> dict[str, int]:
    """The test-time compute overrides `RecursiveLM.run` takes, those that are set."""
    return {k: v for k, v in (("segments", segments), ("depth", depth)) if v is not None}


def _pick(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator | None) -> torch.Tensor:
    """The next token [1, 1] from the last position's logits [1, V]."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1).cpu(), 1, generator=generator).to(logits.device)


@contextlib.contextmanager
def _cached(model: LanguageModel) -> Iterator[None]:
    """Within: the model's stack attends through `cache`, and the model runs every pass."""
    if not model.core.cfg.causal:
        raise ValueError("a KV cache needs a causal model")
    model.every_pass = True
    try:
        yield
    finally:
        model.core.kv_cache = None
        model.every_pass = False


def _run_cached(model: LanguageModel, cache: KVCache, ids: torch.Tensor, **forced: int) -> ModelOutput:
    model.core.kv_cache = cache
    cache.begin(ids.shape[1])
    out = model.run(ids, **forced)
    cache.end()
    return out


@torch.inference_mode()  # not no_grad: it also skips the version counters and view tracking of every op
def sample(
    model: LanguageModel,
    ids: torch.Tensor,
    max_new_tokens: int,
    context: int,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
    stop_id: int | None = None,
    use_cache: bool = True,
    segments: int | None = None,
    depth: int | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """Extend ids [1, T] by up to max_new_tokens; the model sees at most the last `context` tokens.
    `segments` and `depth` set a recursive model's test-time compute (`RecursiveLM.run`). The
    returned ids are inference tensors: read them, or clone them before an in-place op or autograd.

    Also returns, for recursive models, the segment each new token's prediction came from.
    """
    forced = forced_compute(segments, depth)
    exits: list[int] = []
    with _cached(model) if use_cache else contextlib.nullcontext():
        cache = KVCache(context) if use_cache else None
        for i in range(max_new_tokens):
            if cache is None:
                out = model.run(ids[:, -context:], **forced)
            elif i == 0 or cache.length == context:  # the prefill, or the cache starts again
                cache = KVCache(context)
                out = _run_cached(model, cache, ids[:, -(max(1, context // 2) if i else context):], **forced)
            else:
                out = _run_cached(model, cache, ids[:, -1:], **forced)
            if out.segments is not None:
                exits.append(int(out.segments[0, -1]))
            next_id = _pick(out.logits[:, -1, :].float(), temperature, top_k, generator)
            ids = torch.cat([ids, next_id], dim=1)
            if stop_id is not None and next_id.item() == stop_id:
                break
    return ids, exits


@torch.inference_mode()
def greedy(model: LanguageModel, ids: torch.Tensor, new_tokens: int, segments: int | None = None,
           depth: int | None = None) -> torch.Tensor:
    """The greedy continuation [B, new_tokens] of every row of ids [B, T]: `sample` at temperature 0
    for a batch of prompts of one length whose continuation fits the model's context (the answers
    of task scoring, tasks/evaluate.py). A causal model decodes through a KV cache of just that
    length; a bidirectional one, whose earlier positions change as the text grows, recomputes it."""
    forced = forced_compute(segments, depth)
    text = ids
    if not model.core.cfg.causal:
        for _ in range(new_tokens):
            text = torch.cat([text, model.run(text, **forced).logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
        return text[:, ids.shape[1]:]
    with _cached(model):
        cache = KVCache(ids.shape[1] + new_tokens)
        step = ids
        for _ in range(new_tokens):
            step = _run_cached(model, cache, step, **forced).logits[:, -1].argmax(dim=-1, keepdim=True)
            text = torch.cat([text, step], dim=1)
    return text[:, ids.shape[1]:]
