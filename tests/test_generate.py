"""Cached generation: the prefill and one token at a time against the kept keys and values (per pass
for the recursive arms) give the tokens and logits of recomputing the whole text for every token."""

import pytest
import torch

from reasonlab.config import resolve_config
from reasonlab.model import build_model
from reasonlab.model.generate import greedy, sample
from reasonlab.model.layers import KVCache
from test_recursion_family import ARMS, TINY, make, tokens


def model_of(arm: str):
    if arm == "baseline":
        torch.manual_seed(0)
        return build_model(resolve_config(None, TINY)).eval()
    return make(arm, 3, True).eval()  # 3 segments, halting that lets tokens exit at different segments


@pytest.mark.parametrize("arm", ["baseline", *ARMS])
def test_cached_decoding_gives_the_logits_and_tokens_of_the_uncached_path(arm):
    model = model_of(arm)
    prompt = tokens(B=1, T=6, seed=3)
    uncached, segments = sample(model, prompt, 26, context=32, temperature=0, use_cache=False)
    cached, cached_segments = sample(model, prompt, 26, context=32, temperature=0)
    assert torch.equal(cached, uncached) and cached_segments == segments
    core = model.core
    with torch.no_grad():  # every position's logits, one token at a time, against one full forward
        full = model.run(uncached)
        model.every_pass = True
        core.kv_cache = cache = KVCache(32)
        steps = []
        for t in range(uncached.shape[1]):
            cache.begin(1)
            steps.append(model.run(uncached[:, t:t + 1]).logits)
            cache.end()
        core.kv_cache = None
    torch.testing.assert_close(torch.cat(steps, dim=1), full.logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("arm", ["baseline", *ARMS])
def test_batched_greedy_decoding_through_the_cache_gives_the_uncached_tokens(arm):
    model = model_of(arm)
    settings = [{}] if arm == "baseline" else [{}, {"segments": 2}, {"depth": 3}]
    for forced in settings:
        ids = tokens(B=4, T=5, seed=7)
        decoded = greedy(model, ids, 9, **forced)
        with torch.no_grad():
            for _ in range(9):  # the reference: the whole text again for every token
                ids = torch.cat([ids, model.run(ids, **forced).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        assert torch.equal(decoded, ids[:, 5:]), forced


def test_greedy_decoding_of_a_bidirectional_model_recomputes_the_text_and_of_nothing_is_empty():
    torch.manual_seed(0)
    lm = {k: v for k, v in TINY.items() if not k.startswith("task.")}
    model = build_model(resolve_config(None, {**lm, "model.causal": False})).eval()
    ids = tokens(B=2, T=5, seed=7)
    decoded = greedy(model, ids, 4)
    with torch.no_grad():
        for _ in range(4):  # a bidirectional model's earlier positions change as the text grows
            ids = torch.cat([ids, model.run(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(decoded, ids[:, 5:])
    assert greedy(model_of("baseline"), ids, 0).shape == (2, 0)


@pytest.mark.parametrize("arm", ["baseline", "hrm"])
def test_past_the_context_the_cache_starts_again_from_the_last_half(arm):
    model = model_of(arm)
    prompt = tokens(B=1, T=6, seed=3)
    out, _ = sample(model, prompt, 60, context=32, temperature=0)
    within, _ = sample(model, prompt, 26, context=32, temperature=0, use_cache=False)
    assert out.shape == (1, 66) and torch.equal(out[:, :32], within)
    # the 34th token: its cache was restarted from the last 16 tokens, as an uncached run of them predicts
    again, _ = sample(model, out[:, 17:33], 1, context=32, temperature=0, use_cache=False)
    assert torch.equal(again[:, -1], out[:, 33])


def test_a_cache_takes_one_token_at_a_time_within_its_capacity():
    cache = KVCache(4)
    cache.begin(3)
    cache.end()
    with pytest.raises(ValueError, match="one token at a time"):
        cache.begin(2)
    cache.begin(1)
    cache.end()
    with pytest.raises(ValueError, match="exceed the cache's 4"):
        cache.begin(1)
