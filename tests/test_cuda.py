"""The CUDA path: bf16 grouped experts, the padded head, causality and training under autocast.

Skipped where no CUDA device is present; run them on a GPU machine with `pytest tests/test_cuda.py`.
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from reasonlab.config import Config
from reasonlab.model import build_model
from reasonlab.model.loss import IGNORE_INDEX, head_logits, token_losses
from reasonlab.model.moe import MoE
from test_model import TINY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def test_bf16_grouped_experts_match_the_loop_over_experts():
    torch.manual_seed(0)
    grouped = MoE(d_model=64, d_ff=128, n_experts=4, top_k=2, dropout=0.0, noise_std=0.0).to(CUDA).eval()
    for p in grouped.parameters():  # the experts' weights are initialised by the model, not the layer
        torch.nn.init.normal_(p, std=0.3)
    loop = MoE(64, 128, 4, 2, 0.0, 0.0).to(CUDA).eval()
    loop.load_state_dict(grouped.state_dict())
    loop.experts.fused = False
    x = torch.randn(4, 33, 64, device=CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _ = grouped(x)
        expected, _ = loop(x)
    assert out.dtype == torch.float32
    assert (out - expected).norm() / expected.norm() < 1e-2


def test_padded_head_equals_the_plain_product_and_its_gradient():
    torch.manual_seed(0)
    h = torch.randn(40, 32, device=CUDA, requires_grad=True)
    weight = torch.randn(301, 32, device=CUDA, requires_grad=True)  # not a multiple of 128
    targets = torch.randint(0, 301, (40,), device=CUDA)
    targets[::7] = IGNORE_INDEX
    assert head_logits(h, weight).shape == (40, 301)
    torch.testing.assert_close(head_logits(h, weight), h @ weight.t())
    losses, pred = token_losses(h, weight, targets)
    expected = F.cross_entropy(h @ weight.t(), targets, reduction="none")
    torch.testing.assert_close(losses, expected)
    torch.testing.assert_close(torch.autograd.grad(losses.sum(), (h, weight)),
                               torch.autograd.grad(expected.sum(), (h, weight)))


@pytest.mark.parametrize("arch", ["baseline", "hrm", "trm", "looped"])
def test_causality_under_bf16_autocast(arch):
    torch.manual_seed(0)
    model = build_model(Config(model=dataclasses.replace(TINY, arch=arch))).to(CUDA).eval()
    x = torch.randint(0, TINY.vocab_size, (2, TINY.seq_len), device=CUDA)
    t = 9
    y = x.clone()
    y[:, t + 1 :] = torch.randint(0, TINY.vocab_size, (2, TINY.seq_len - t - 1), device=CUDA)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=2e-2)  # bf16 logits
    assert not torch.equal(a[:, t + 1 :], b[:, t + 1 :])


@pytest.mark.parametrize("compile", [False, True])
def test_bf16_training_lowers_the_loss(compile, tmp_path):
    from conftest import tiny_config
    from reasonlab.training.data import prepare_data
    from reasonlab.training.engine import Engine

    cfg = tiny_config(**{"train.device": "cuda", "train.precision": "bf16", "train.compile": compile})
    data = prepare_data(cfg)
    engine = Engine(data.adjust_config(cfg), data)
    losses = [engine.train_step(step)[0].lm_loss.item() for step in range(60)]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.5
