"""recursion.carry_across_steps: one segment per optimizer step, the state carried to the same rows."""

import json
import shutil

import pytest
import torch

import reasonlab
from conftest import CONFIGS
from reasonlab.config import resolve_config, with_overrides
from reasonlab.errors import UserError
from reasonlab.model import build_model, config_step_flops
from reasonlab.model.loss import IGNORE_INDEX, token_losses
from reasonlab.training.runlog import read_metrics
from test_recursion_family import ARMS, TINY, tokens

QUIET = {"model.dropout": 0.0, "model.router_noise_std": 0.0}  # steps that draw nothing at random


def carried_model(arm: str, n: int = 3, act: bool = False):
    torch.manual_seed(0)
    cfg = resolve_config(None, {**TINY, **ARMS[arm], **QUIET, "recursion.max_segments": n, "recursion.use_act": act,
                                "recursion.carry_across_steps": True})
    return build_model(cfg).train()


@pytest.mark.parametrize("arm", ["hrm", "trm", "looped"])
def test_carried_steps_follow_the_segments_of_one_recursion(arm):
    """With the weights held, step k of the carry scores what segment k of a full recursion does,
    and after max_segments steps every row starts afresh from the new batch."""
    model = carried_model(arm)
    x, y, fresh = tokens(), tokens(seed=4), tokens(seed=7)
    y[0, :5] = IGNORE_INDEX
    with torch.no_grad():
        r = model.recur(model.core.embed_tokens(x), 3, False, y != IGNORE_INDEX)
        expected = [token_losses(h, model.core.embed.weight, y)[0][y != IGNORE_INDEX].mean() for h in r.states]
        carry = None
        for k in range(3):
            out = model(x if k == 0 else fresh, y if k == 0 else fresh, carry=carry)
            carry = out.carry
            torch.testing.assert_close(out.lm_loss, expected[k], rtol=1e-5, atol=1e-5)
            assert torch.equal(carry.input_ids, x) and carry.segments.tolist() == [k + 1, k + 1]
        assert not carry.live.any()  # every token exited at the last segment
        out = model(fresh, fresh, carry=carry)
        assert torch.equal(out.carry.input_ids, fresh) and out.carry.segments.tolist() == [1, 1]


def test_only_finished_rows_are_replaced():
    model = carried_model("trm", n=4)
    x, fresh = tokens(B=3), tokens(B=3, seed=7)
    with torch.no_grad():
        carry = model(x, x, carry=None).carry
        carry.live[1] = False  # row 1 finished (e.g. all its tokens halted)
        after = model(fresh, fresh, carry=carry).carry
    assert torch.equal(after.input_ids[1], fresh[1]) and after.segments.tolist() == [2, 1, 2]
    assert torch.equal(after.input_ids[[0, 2]], x[[0, 2]])


def test_a_carried_step_costs_one_segment():
    cfg = resolve_config(None, {**TINY, **ARMS["trm"], "recursion.max_segments": 3})
    carried = with_overrides(cfg, {"recursion.carry_across_steps": True})
    assert config_step_flops(cfg) == 3 * config_step_flops(carried)
    model = build_model(carried).train()
    model.halt_head.bias.data.fill_(-50.0)
    assert model(tokens(), tokens(seed=4)).flops == config_step_flops(carried)


def test_carry_needs_a_recursive_arm():
    with pytest.raises(UserError, match=r"recursion\.carry_across_steps: needs a recursive model\.arch"):
        resolve_config(None, {"recursion.carry_across_steps": True})


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["trm", "looped-random"])
def test_resume_with_carry_and_ema_equals_uninterrupted(tmp_path, arm):
    overrides = {**ARMS[arm], "recursion.carry_across_steps": True, "recursion.max_segments": 3,
                 "train.ema_decay": 0.9, "train.max_steps": 12, "train.save_every": 5, "train.eval_every": 4}
    cfg = resolve_config(CONFIGS / "cpu-tiny.yaml", overrides)
    full = reasonlab.train(cfg, tmp_path / "full", quiet=True)
    killed = reasonlab.train(cfg, tmp_path / "killed", quiet=True)
    for ckpt in (killed / "checkpoints").iterdir():
        if ckpt.name != "step_5":
            shutil.rmtree(ckpt)
    assert (killed / "checkpoints" / "step_5" / "carry.safetensors").is_file()
    reasonlab.resume(killed, quiet=True)
    a, b = read_metrics(full / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert [(e["kind"], e["step"]) for e in a] == [(e["kind"], e["step"]) for e in b]
    for ea, eb in zip(a, b):
        assert ea["loss"] == eb["loss"], (ea, eb)
    summary = json.loads((full / "summary.json").read_text())
    assert summary["flops"] < 12 * config_step_flops(with_overrides(cfg, {"recursion.carry_across_steps": False}))
