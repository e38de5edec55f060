import dataclasses

import pytest
import torch
import torch.nn.functional as F

from reasonlab.config import Config, ModelConfig
from reasonlab.model import build_model, flops_per_token, param_counts
from reasonlab.model.dropout import add_dropout, dropout
from reasonlab.model.layers import apply_rope, rope_tables
from reasonlab.model.loss import IGNORE_INDEX, token_losses
from reasonlab.model.moe import GroupedExperts, MoE, balance_loss, row_multiple, slot_layout

TINY = ModelConfig(vocab_size=300, seq_len=32, d_model=32, n_layers=2, n_heads=4, d_ff=64, n_experts=4, top_k=2,
                   dropout=0.0)


def naive_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Reference: route, then loop over experts with boolean masks, one token set per expert."""
    flat = x.reshape(-1, x.shape[-1])
    probs = moe.router(flat).float().softmax(-1)
    top_p, top_idx = probs.topk(moe.top_k, dim=-1)
    top_p = top_p / top_p.sum(-1, keepdim=True)
    ex = moe.experts
    out = torch.zeros_like(flat)
    for e in range(ex.w1.shape[0]):
        for slot in range(moe.top_k):
            mask = top_idx[:, slot] == e
            h = F.silu(flat[mask] @ ex.w1[e] + ex.b1[e]) @ ex.w2[e] + ex.b2[e]
            out[mask] += top_p[mask, slot, None] * h
    return out.view_as(x)


@pytest.mark.parametrize("row_multiple", [1, 8])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_moe_matches_naive_per_expert_loop(fused, top_k, row_multiple):
    torch.manual_seed(0)
    moe = MoE(d_model=16, d_ff=24, n_experts=4, top_k=top_k, dropout=0.0, noise_std=0.1).eval()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    moe.experts.fused = fused
    moe.experts.row_multiple = row_multiple
    ref = MoE(16, 24, 4, top_k, 0.0, 0.1).eval()
    ref.load_state_dict(moe.state_dict())
    x = torch.randn(3, 11, 16, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, _ = moe(x)
    expected = naive_moe(ref, x_ref)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    for (name, p), p_ref in zip(moe.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("tokens", [1, 2, 4])
def test_a_few_tokens_at_inference_skip_the_grouped_dispatch_with_the_same_output(tokens, monkeypatch):
    """Decoding routes one token at a time through `GroupedExperts.few`; it agrees with the loop and
    with the grouped dispatch the same tokens take in a larger batch."""
    torch.manual_seed(0)
    moe = MoE(d_model=16, d_ff=24, n_experts=4, top_k=2, dropout=0.0, noise_std=0.1).eval()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(1, tokens, 16)
    calls, few = [], GroupedExperts.few
    monkeypatch.setattr(GroupedExperts, "few", lambda self, *a: calls.append(1) or few(self, *a))
    with torch.no_grad():
        out, _ = moe(x)
        grouped, _ = moe(torch.cat([x, torch.randn(1, 8, 16)], dim=1))
    assert calls == [1]  # the few-token path ran for the small batch only
    torch.testing.assert_close(out, naive_moe(moe, x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, grouped[:, :tokens], rtol=1e-5, atol=1e-5)


def test_a_few_tokens_in_eval_mode_with_gradients_on_still_train_the_router():
    """The few-token path takes the routing weights as numbers, so it serves inference only."""
    torch.manual_seed(0)
    moe = MoE(d_model=16, d_ff=24, n_experts=4, top_k=2, dropout=0.0, noise_std=0.0).eval()
    out, _ = moe(torch.randn(1, 1, 16))
    out.square().sum().backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("multiple", [1, 8])
def test_slot_layout_groups_slots_by_expert_in_padded_groups(multiple):
    flat_expert = torch.tensor([2, 0, 2, 3, 2, 0, 0, 2, 2, 2, 2, 2, 2, 2])
    layout = slot_layout(flat_expert, n_experts=4, multiple=multiple)
    n_slots = len(flat_expert)
    counts = torch.bincount(flat_expert, minlength=4)
    assert torch.equal(layout.rows_per_expert, (counts + multiple - 1) // multiple * multiple)
    assert len(layout.slot_of_row) == len(layout.expert_of_row) == layout.rows_per_expert.sum()
    assert torch.equal(layout.slot_of_row[layout.row_of_slot], torch.arange(n_slots))
    assert torch.equal(layout.expert_of_row[layout.row_of_slot], flat_expert)
    padding = layout.slot_of_row == n_slots
    assert padding.sum() == layout.rows_per_expert.sum() - n_slots
    real_rows = layout.slot_of_row[~padding]
    assert torch.equal(real_rows, torch.argsort(flat_expert, stable=True))  # stable order within a group


def test_moe_in_cpu_bf16_pads_groups_and_matches_the_loop():
    torch.manual_seed(0)
    moe = MoE(d_model=32, d_ff=48, n_experts=4, top_k=2, dropout=0.0, noise_std=0.0).eval()
    for p in moe.parameters():
        torch.nn.init.normal_(p, std=0.3)
    loop = MoE(32, 48, 4, 2, 0.0, 0.0).eval()
    loop.load_state_dict(moe.state_dict())
    loop.experts.fused = False
    loop.experts.row_multiple = 1
    x = torch.randn(2, 40, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert row_multiple(x.device, torch.get_autocast_dtype("cpu")) > 1
        out, _ = moe(x)
        expected, _ = loop(x)
    torch.testing.assert_close(out, expected, rtol=2e-2, atol=2e-2)


def test_grouped_experts_initialise_their_weights_and_leave_the_global_generator_alone():
    torch.manual_seed(0)
    experts = GroupedExperts(n_experts=4, d_model=64, d_ff=128, dropout=0.0)
    drawn_after = torch.randn(4)
    torch.manual_seed(0)
    assert torch.equal(drawn_after, torch.randn(4))  # a seeded model's later draws do not depend on the layer
    assert experts.w1.std().item() == pytest.approx(0.02, rel=0.02)
    experts.b1.data.fill_(1.0)
    experts.reset_parameters(std=0.1, out_std=0.01)
    assert experts.w1.std().item() == pytest.approx(0.1, rel=0.02)
    assert experts.w2.std().item() == pytest.approx(0.01, rel=0.02)
    assert not experts.b1.any() and not experts.b2.any()


def test_balance_loss_hand_computed():
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0], [0.1, 0.6, 0.3, 0.0], [0.5, 0.1, 0.1, 0.3]])
    top_idx = torch.tensor([[0, 1], [1, 2], [0, 3]])
    # slot shares: e0 2/6, e1 2/6, e2 1/6, e3 1/6; mean probs: e0 1.3/3, e1 0.9/3, e2 0.5/3, e3 0.3/3
    expected = 4 * (2 / 6 * 1.3 / 3 + 2 / 6 * 0.9 / 3 + 1 / 6 * 0.5 / 3 + 1 / 6 * 0.3 / 3)
    assert balance_loss(probs, top_idx, 4).item() == pytest.approx(expected)
    uniform = torch.full((8, 4), 0.25)
    assert balance_loss(uniform, torch.arange(8).remainder(4).view(8, 1), 4).item() == pytest.approx(1.0)


@pytest.mark.parametrize("train_mode", [False, True])
def test_causality(train_mode):
    torch.manual_seed(0)
    model = build_model(Config(model=dataclasses.replace(TINY, dropout=0.1))).train(train_mode)
    x = torch.randint(0, TINY.vocab_size, (2, TINY.seq_len))
    for t in (0, 7, TINY.seq_len - 2):
        y = x.clone()
        y[:, t + 1 :] = torch.randint(0, TINY.vocab_size, (2, TINY.seq_len - t - 1))
        torch.manual_seed(1)  # the same router noise in both passes
        a = model(x)
        torch.manual_seed(1)
        b = model(y)
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-5)
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_logits_shape_and_context_limit():
    model = build_model(Config(model=TINY)).eval()
    assert model(torch.zeros(3, 5, dtype=torch.long)).shape == (3, 5, TINY.vocab_size)
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, TINY.seq_len + 1, dtype=torch.long))


def test_param_counts_match_the_module():
    model = build_model(Config(model=TINY))
    counts = param_counts(Config(model=TINY))
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    expert = sum(p[0].numel() for p in model.blocks[0].moe.experts.parameters())
    assert counts["active"] == counts["total"] - TINY.n_layers * (TINY.n_experts - TINY.top_k) * expert


def test_flops_hand_count():
    # per layer: qkv 3*32*32 + proj 32*32 + router 32*4 + 2 experts * (32*64 + 64*32) = 4096 + 128 + 8192
    matmul_params = 2 * (4096 + 128 + 8192)
    expected = 6 * matmul_params + 6 * 32 * 300 + 12 * 2 * 32 * 32
    assert flops_per_token(TINY) == expected


def test_bf16_autocast_keeps_fp32_weights():
    model = build_model(Config(model=TINY))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.run(torch.randint(0, 300, (2, 16)))
    assert out.logits.dtype == torch.bfloat16
    out.logits.float().mean().backward()
    assert all(p.dtype == torch.float32 and p.grad is not None for p in model.parameters())


def test_token_losses_match_torch_cross_entropy_with_ignored_targets():
    torch.manual_seed(0)
    h = torch.randn(24, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (24,))
    targets[::5] = IGNORE_INDEX
    for chunk in (0, 7):
        losses, pred = token_losses(h, weight, targets, chunk)
        expected = F.cross_entropy(h @ weight.t(), targets, reduction="none")
        torch.testing.assert_close(losses, expected)
        assert torch.equal(pred, (h @ weight.t()).argmax(-1))
        grads = torch.autograd.grad(losses.sum(), (h, weight))
        torch.testing.assert_close(grads, torch.autograd.grad(expected.sum(), (h, weight)))


def test_dropout_keeps_the_asked_share_and_scales_the_rest():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, 0.1, training=True)
    assert y.unique().tolist() == [0.0, pytest.approx(1 / 0.9)]
    assert (y == 0).float().mean().item() == pytest.approx(0.1, abs=0.002)
    assert torch.equal(dropout(x, 0.1, training=False), x)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("keep_all", [True, False])
def test_explicit_attention_is_attention_with_dropped_probabilities(monkeypatch, causal, keep_all):
    """The CPU path written out for dropout against the definition, SDPA's math with the mask applied
    to the probabilities and the kept ones scaled by 1 / (1 - p); with nothing dropped, SDPA / (1 - p)."""
    import reasonlab.model.layers as layers

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, requires_grad=True) for _ in range(3))
    mask = torch.ones(6, 17, 17, dtype=torch.uint8) if keep_all else (torch.rand(6, 17, 17) >= 0.3).to(torch.uint8)
    monkeypatch.setattr(layers, "dropout_mask", lambda shape, p, device: mask)
    out = layers.attention(q, k, v, causal, dropout_p=0.3)
    scores = (q @ k.transpose(-1, -2)) / 8**0.5
    if causal:
        scores = scores.masked_fill(torch.ones(17, 17, dtype=torch.bool).triu(1), float("-inf"))
    expected = (scores.softmax(-1) * mask.view(2, 3, 17, 17) / 0.7) @ v
    if keep_all:
        torch.testing.assert_close(expected, F.scaled_dot_product_attention(q, k, v, is_causal=causal) / 0.7)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    expected_grads = torch.autograd.grad(expected.sum(), (q, k, v))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_the_residual_add_of_a_dropped_branch_is_the_add_of_dropout_bit_for_bit():
    x, y = (torch.randn(4, 33, 16, requires_grad=True) for _ in range(2))
    torch.manual_seed(3)
    fused = add_dropout(x, y, 0.1, training=True)
    torch.manual_seed(3)
    plain = x + dropout(y, 0.1, training=True)
    assert torch.equal(fused, plain) and not torch.equal(fused, x + y)
    g = torch.randn_like(fused)
    for a, b in zip(torch.autograd.grad(fused, (x, y), g), torch.autograd.grad(plain, (x, y), g)):
        assert torch.equal(a, b)
    assert torch.equal(add_dropout(x, y, 0.1, training=False), x + y)


def test_rope_is_the_rotate_half_form_and_scores_depend_only_on_relative_position():
    cos, sin = rope_tables(16, 8)
    x = torch.randn(2, 3, 16, 8)
    angles = torch.outer(torch.arange(16.0), 1.0 / 10000 ** (torch.arange(0, 8, 2) / 8))
    c, s = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    rotate_half = torch.cat([-x[..., 4:], x[..., :4]], dim=-1)
    assert torch.equal(apply_rope(x, cos, sin), x * c + rotate_half * s)
    q, k = torch.randn(8), torch.randn(8)

    def at(v: torch.Tensor, p: int) -> torch.Tensor:
        return apply_rope(v.expand(16, 8), cos, sin)[p]

    assert torch.allclose(at(q, 5) @ at(k, 2), at(q, 13) @ at(k, 10), atol=1e-5)
    assert not torch.allclose(at(q, 5) @ at(k, 2), at(q, 5) @ at(k, 3), atol=1e-3)


def test_2d_rope_turns_half_the_pairs_by_row_and_half_by_column():
    side, D = 4, 8
    cos, sin = rope_tables(side * side, D, grid=True)
    x = torch.randn(3, side * side, D)
    pairs = torch.complex(x[..., : D // 2], x[..., D // 2:])  # pair i is (x_i, x_{i + D/2})
    inv_freq = 1.0 / 10000 ** (torch.arange(2) / 2)
    row, col = torch.arange(side * side) // side, torch.arange(side * side) % side
    angles = torch.cat([torch.outer(row.float(), inv_freq), torch.outer(col.float(), inv_freq)], dim=-1)
    turned = pairs * torch.polar(torch.ones_like(angles), angles)
    torch.testing.assert_close(apply_rope(x, cos, sin), torch.cat([turned.real, turned.imag], dim=-1))

    q, k = torch.randn(D), torch.randn(D)

    def score(a: tuple[int, int], b: tuple[int, int]) -> torch.Tensor:
        rotated = apply_rope(torch.stack([q, k]).unsqueeze(1).expand(2, side * side, D), cos, sin)
        return rotated[0, a[0] * side + a[1]] @ rotated[1, b[0] * side + b[1]]

    assert torch.allclose(score((0, 1), (2, 0)), score((1, 3), (3, 2)), atol=1e-5)  # same (row, column) offset
    assert not torch.allclose(score((0, 3), (1, 0)), score((0, 0), (0, 1)), atol=1e-3)  # 1D offset 1 both
    with pytest.raises(ValueError, match="square"):
        rope_tables(15, D, grid=True)
