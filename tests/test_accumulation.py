"""Gradient accumulation (train.micro_batch_size): one accumulated step is one full-batch step."""

import pytest
import torch

from reasonlab.config import resolve_config
from reasonlab.errors import UserError
from reasonlab.training.data import prepare_data
from reasonlab.training.engine import Engine
from test_recursion_family import ARMS, TINY

# nothing drawn at random inside a step, and no per-batch term that is not a token mean (the MoE
# balance loss, and mor's token-choice balance, are each micro-batch's own by design)
EXACT = {"model.dropout": 0.0, "model.router_noise_std": 0.0, "model.balance_loss_weight": 0.0,
         "mor.router_loss_weight": 0.0, "train.batch_size": 8, "train.grad_clip": 0.0}
CASES = {
    "baseline": {}, **ARMS,
    "trm-carry": {**ARMS["trm"], "recursion.max_segments": 2, "recursion.carry_across_steps": True},
}


def engine(case: str, micro: int, **extra) -> Engine:
    cfg = resolve_config(None, {**TINY, **CASES[case], **EXACT, "train.micro_batch_size": micro, **extra})
    data = prepare_data(cfg)
    return Engine(data.adjust_config(cfg), data)


@pytest.mark.parametrize("case", list(CASES))
def test_accumulated_steps_equal_full_batch_steps(case):
    """On addition, whose prompt tokens are not supervised (so micro-batches hold unequal shares of the
    batch's supervised tokens): each step's gradients, losses and FLOPs, and the weights after three
    steps, agree with the full batch's. AdamW's eps is raised from 1e-8 to 1e-6 here: an update
    lr * g / (|g| + eps) amplifies a rounding difference in a near-zero gradient by up to lr / eps,
    which at 1e-8 turns fp32 rounding (1e-10) into a 6e-6 weight difference in an expert that
    barely received any token."""
    full, micro = engine(case, 0, **{"train.eps": 1e-6}), engine(case, 2, **{"train.eps": 1e-6})
    # mor's gathered, masked attention rounds differently at another batch size: 1e-7 in a weight
    # after the first update, grown to 2e-6 of a 0.2 gradient by the next step
    rtol = 1e-4 if case.startswith("mor") else 1e-5
    for step in range(3):
        a, b = full._forward_backward(), micro._forward_backward()
        torch.testing.assert_close(b.lm_loss, a.lm_loss, rtol=0, atol=1e-6)
        torch.testing.assert_close(b.loss, a.loss, rtol=0, atol=1e-6)
        assert b.flops == a.flops
        for (name, p), q in zip(full.model.named_parameters(), micro.model.parameters()):
            if p.grad is not None or q.grad is not None:
                torch.testing.assert_close(q.grad, p.grad, rtol=rtol, atol=1e-7, msg=name)
        full._update(step)
        micro._update(step)
    for (name, p), q in zip(full.model.named_parameters(), micro.model.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-6, msg=name)
    if case == "looped-random":  # one depth drawn per step, not per micro-batch
        assert int(micro.model.depth_draws) == int(full.model.depth_draws) == 3


def test_the_micro_batch_must_divide_the_batch():
    with pytest.raises(UserError, match=r"train.micro_batch_size: must divide train.batch_size \(8\), got 3"):
        resolve_config(None, {**TINY, **EXACT, "train.micro_batch_size": 3})
    with pytest.raises(UserError, match=r"train.micro_batch_size: must be <= train.batch_size"):
        resolve_config(None, {**TINY, **EXACT, "train.micro_batch_size": 16})
