"""Mixture-of-Recursions (model.arch mor) against what it claims: causal at inference under both
routers, a router that learns, only the chosen tokens computed and counted, the looped arm when
every token is chosen, and decoding through its own keys equal to recomputing the text."""

import pytest
import torch

from reasonlab.config import resolve_config
from reasonlab.errors import UserError
from reasonlab.model import build_model, config_step_flops, control_config
from reasonlab.model.generate import greedy, sample
from test_recursion_family import GRAD_PASS, HEAD, TINY, tokens

ROUTERS = [("expert", "cache"), ("expert", "share"), ("token", "cache"), ("token", "share")]


def config(router="expert", kv="cache", **extra):
    return resolve_config(None, {**TINY, "model.arch": "mor", "mor.recursions": 4, "mor.capacity_last": 0.25,
                                 "mor.router": router, "mor.kv": kv, "recursion.max_segments": 1,
                                 "recursion.use_act": False, "model.dropout": 0.0, **extra})


def make(router="expert", kv="cache", spread=True, **extra):
    """A tiny mor whose routers send tokens different ways: about half go on at each expert-choice
    router at inference, and token-choice depths spread over 1..4."""
    torch.manual_seed(0)
    model = build_model(config(router, kv, **extra))
    if spread:
        torch.nn.init.normal_(model.router.weight, std=1.0)
    return model


def tokens_through(model):
    """A list that collects how many tokens each pass of the first block's experts computes."""
    seen = []
    model.core.blocks[0].moe.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].reshape(-1, 32).shape[0]))
    return seen


@pytest.mark.parametrize("router, kv", ROUTERS)
def test_inference_is_causal_for_both_routers(router, kv):
    model = make(router, kv).eval()
    x = tokens()
    for t in (0, 13, 30):
        y = x.clone()
        y[:, t + 1:] = torch.randint(0, 300, (2, 31 - t))
        torch.testing.assert_close(model.run(x).logits[:, : t + 1], model.run(y).logits[:, : t + 1], rtol=0, atol=1e-5)


def test_expert_choice_top_k_sees_later_tokens_which_is_why_inference_thresholds():
    """The leak the auxiliary loss exists for: in training, which tokens of a row go on depends on the
    scores of the tokens after them, so earlier outputs move when only later tokens change."""
    model = make("expert", **{"model.router_noise_std": 0.0}).train()  # nothing drawn: only routing differs
    x = tokens()
    y = x.clone()
    y[:, 16:] = torch.randint(0, 300, (2, 16))
    torch.testing.assert_close(model.eval().run(x).logits[:, :16], model.run(y).logits[:, :16], rtol=0, atol=1e-5)
    model.train()
    assert not torch.allclose(model.run(x).logits[:, :16], model.run(y).logits[:, :16], atol=1e-5)


@pytest.mark.parametrize("router, kv", ROUTERS)
def test_the_router_and_every_parameter_learn(router, kv):
    model = make(router, kv).train()
    out = model(tokens(), tokens(seed=4))
    out.loss.backward()
    assert model.router.weight.grad.abs().sum() > 0 and model.s_init.grad.abs().sum() > 0
    assert out.metrics["router_loss"] > 0
    silent = {name for name, p in model.named_parameters()
              if (p.grad is None or not p.grad.abs().sum() > 0) and "experts" not in name and "halt_head" not in name}
    assert not silent, silent


def test_expert_choice_flops_hand_count_and_only_chosen_tokens_run():
    """4 recursions keep 32, 24, 16 and 8 of a row's 32 tokens: 2.5 passes a token, each with its
    d-weight router unit (2 * 32 forward, 3x with gradient), and the head once."""
    model = make("expert").train()
    seen = tokens_through(model)
    out = model(tokens(), tokens(seed=4))
    assert seen == [64, 48, 32, 16]  # two rows
    per_token = 2.5 * (GRAD_PASS + 3 * 64) + HEAD
    assert out.flops == round(2 * 32 * per_token) == config_step_flops(config("expert"))


def test_token_choice_counts_the_depth_each_token_chose():
    model = make("token").train()
    x = tokens()
    depth_BT = model.router(model.core.embed_tokens(x)[0]).argmax(dim=-1) + 1
    assert len(depth_BT.unique()) > 1
    seen = tokens_through(model)
    out = model(x, tokens(seed=4))
    assert seen == [int((depth_BT > r).sum()) for r in range(4)]
    router = 3 * 2 * 32 * 4  # d x N weights once a token, with gradient
    assert out.flops == round(int(depth_BT.sum()) * GRAD_PASS + 2 * 32 * (HEAD + router))
    assert out.flops < config_step_flops(config("token"))  # planned at full depth


@pytest.mark.parametrize("router", ["expert", "token"])
def test_a_token_that_stopped_costs_nothing_more(router):
    """Routers that stop every token after the first pass: the later passes compute nothing."""
    model = make(router, spread=False).eval()
    torch.nn.init.zeros_(model.router.weight)
    bias = [-50.0] * 3 if router == "expert" else [50.0, -50.0, -50.0, -50.0]
    model.router.bias.data = torch.tensor(bias)
    seen = tokens_through(model)
    model.run(tokens())
    assert seen == [64]


def test_with_every_token_chosen_it_is_the_looped_arm():
    mor = make("expert", spread=False, **{"mor.capacity_last": 1.0}).train()
    torch.manual_seed(1)
    looped = build_model(resolve_config(None, {**TINY, "model.arch": "looped", "looped.depth": 4,
                                                "recursion.max_segments": 1, "recursion.use_act": False,
                                                "model.dropout": 0.0}))
    assert looped.load_state_dict(mor.state_dict(), strict=False).unexpected_keys == ["router.weight", "router.bias"]
    x, y = tokens(), tokens(seed=4)
    torch.manual_seed(2)  # the same router noise in the experts
    a = mor(x, y)
    torch.manual_seed(2)
    b = looped.train()(x, y)
    torch.testing.assert_close(a.lm_loss, b.lm_loss, rtol=0, atol=1e-5)
    torch.manual_seed(3)
    logits = mor.run(x).logits
    torch.manual_seed(3)
    torch.testing.assert_close(logits, looped.run(x).logits, rtol=0, atol=1e-4)
    torch.nn.init.constant_(mor.router.bias, -50.0)  # scores that would stop every token at a lower capacity
    torch.testing.assert_close(mor.eval().run(x).logits, looped.eval().run(x).logits, rtol=0, atol=1e-4)
    assert a.flops == b.flops + round(2 * 32 * 4 * 3 * 64)  # but for the router unit at each pass


# test_generate.py decodes mor (expert, cache) and mor-token (token, share) through the cache, with 3 segments,
# halting, forced segments and depth, one row and four; here the two other settings
OTHER = [("expert", "share"), ("token", "cache")]


@pytest.mark.parametrize("router, kv", OTHER)
def test_decoding_through_the_kept_keys_equals_recomputing_the_text(router, kv):
    model = make(router, kv).eval()
    prompt = tokens(B=1, T=9)
    cached, _ = sample(model, prompt, 20, context=32, temperature=0, use_cache=True)
    recomputed, _ = sample(model, prompt, 20, context=32, temperature=0, use_cache=False)
    assert torch.equal(cached, recomputed)


@pytest.mark.parametrize("router, kv", OTHER)
def test_a_batch_decodes_as_its_rows_alone(router, kv, monkeypatch):
    """Rows whose new token stopped take no part in a later pass; every row's answer is the one
    recomputing its text token by token gives."""
    from reasonlab.model import mor

    subsets = []
    of = mor.Chosen.of
    monkeypatch.setattr(mor.Chosen, "of", lambda active: subsets.append(of(active).rows is not None) or of(active))
    model = make(router, kv).eval()
    prompts = tokens(B=4, T=6, seed=3)
    batch = greedy(model, prompts, 10)
    assert any(subsets)  # some decoding pass left rows out
    for i in range(4):
        recomputed, _ = sample(model, prompts[i: i + 1], 10, context=32, temperature=0, use_cache=False)
        assert torch.equal(batch[i], recomputed[0, 6:])


def test_decoding_under_bf16_autocast():
    """The experts' few-token path answers in bf16 under autocast; mor puts it back in the stream's dtype."""
    model = make("expert").eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert greedy(model, tokens(B=2, T=6), 4).shape == (2, 4)


def test_test_time_depth_stops_at_the_routers_it_has():
    model = make("expert").eval()
    x = tokens()
    assert torch.equal(model.run(x).logits, model.run(x, depth=4).logits)
    assert model.run(x, depth=1).logits.isfinite().all()
    with pytest.raises(ValueError, match="1 to 4 passes"):
        model.run(x, depth=5)


def test_controls_and_bad_settings():
    cfg = config("expert")
    assert control_config(cfg, "flops").model.n_layers == 5  # 2.5 passes a token of 2 layers
    assert control_config(cfg, "depth").model.arch == "baseline"
    for key, value in (("mor.router", "random"), ("mor.kv", "none"), ("mor.capacity_last", 0.0),
                       ("mor.recursions", 0)):
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            config(**{key: value})


@pytest.mark.slow  # imports transformers
@pytest.mark.parametrize("router, kv, causal", [*((r, k, True) for r, k in ROUTERS), ("expert", "cache", False)])
def test_the_hugging_face_model_file_computes_the_same_logits(router, kv, causal):
    """export/modeling_reasonlab.py computes mor densely under masks; reasonlab gathers the chosen
    tokens. Both give every token the same logits, with or without causal attention."""
    pytest.importorskip("transformers")
    import importlib.util

    from reasonlab.export.hf import MODELING

    spec = importlib.util.spec_from_file_location("modeling_reasonlab", MODELING)
    modeling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(modeling)
    grid = {} if causal else {"model.causal": False, "task.format": "grid"}
    cfg = config(router, kv, **grid)
    model = make(router, kv, **grid).eval()
    theirs = modeling.MoR(cfg.to_dict())
    theirs.load_state_dict(model.state_dict(), strict=False)
    x = tokens()
    with torch.no_grad():
        torch.testing.assert_close(theirs.run(x), model.run(x).logits, rtol=0, atol=1e-5)
