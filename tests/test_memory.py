"""Memory options change what is kept for backward, never the numbers."""

import dataclasses

import pytest
import torch

from reasonlab.config import Config, HRMConfig, LoopedConfig, ModelConfig, TRMConfig
from reasonlab.model import build_model

TINY = ModelConfig(vocab_size=300, seq_len=32, d_model=32, n_layers=2, n_heads=4, d_ff=64, dropout=0.1)


def _loss_and_grads(arch, checkpointing, chunk):
    torch.manual_seed(0)
    cfg = Config(model=dataclasses.replace(TINY, arch=arch), hrm=HRMConfig(H_cycles=2, L_cycles=1),
                 trm=TRMConfig(latent_steps=1, recursions=2), looped=LoopedConfig(depth=3, act=True))
    model = build_model(cfg).train()
    model.configure_memory(checkpointing, chunk)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 300, (3, 32), generator=gen), torch.randint(0, 300, (3, 32), generator=gen)
    torch.manual_seed(2)  # the same dropout masks and router noise in every variant
    out = model(x, y)
    out.loss.backward()
    return out.loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["baseline", "hrm", "trm", "looped"])
@pytest.mark.parametrize("checkpointing, chunk", [(True, 0), (False, 40), (True, 17)])
def test_memory_options_leave_loss_and_gradients_unchanged(arch, checkpointing, chunk):
    ref_loss, ref_grads = _loss_and_grads(arch, False, 0)
    loss, grads = _loss_and_grads(arch, checkpointing, chunk)
    assert loss == pytest.approx(ref_loss, abs=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
