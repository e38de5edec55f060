"""Warmup-stable-decay: the schedule by hand, and a cooldown branched from a longer run's checkpoint
that equals the run of its own length trained from scratch."""

import json

import pytest
import torch
from safetensors.torch import load_file

import reasonlab
from conftest import tiny_config
from reasonlab.config import resolve_config
from reasonlab.errors import UserError
from reasonlab.training import trainer
from reasonlab.training.branch import branch
from reasonlab.training.optim import cooldown_start, lr_at
from reasonlab.training.runlog import read_metrics


def test_wsd_holds_the_peak_then_cools_down_over_its_last_fraction():
    t = resolve_config(None, {"train.schedule": "wsd", "train.max_steps": 100, "train.warmup_steps": 10,
                              "train.lr": 1.0, "train.min_lr_ratio": 0.1, "train.cooldown_fraction": 0.2}).train
    assert cooldown_start(t) == 80
    assert [lr_at(s, t) for s in (0, 9, 10, 79, 80)] == pytest.approx([0.1, 1.0, 1.0, 1.0, 1.0])
    assert lr_at(90, t) == pytest.approx(1 - 0.9 * 10 / 20) and lr_at(100, t) == pytest.approx(0.1)
    linear = resolve_config(None, {"train.max_steps": 100, "train.warmup_steps": 10, "train.lr": 1.0}).train
    assert lr_at(55, linear) == pytest.approx(1 - 0.9 * 45 / 90)  # the default schedule is unchanged


@pytest.mark.parametrize("key, value", [("train.schedule", "cosine"), ("train.cooldown_fraction", 0.0),
                                        ("train.cooldown_fraction", 1.0)])
def test_a_bad_schedule_names_its_key(key, value):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        resolve_config(None, {key: value})


def _cfg(steps):
    return tiny_config(**{"train.max_steps": steps, "train.schedule": "wsd", "train.eval_every": 5,
                          "train.log_every": 1, "train.batch_size": 4})


def test_a_cooldown_branch_equals_the_run_of_its_length(tmp_path):
    """A 20-step trunk paused at step 8, the cooldown start of a 10-step run, and branched there to
    10 steps: the same losses, learning rates and final weights as 10 steps trained from scratch."""
    own = reasonlab.train(_cfg(10), tmp_path / "own", quiet=True)
    trunk = trainer.train(_cfg(20), tmp_path / "trunk", quiet=True, stop_at=8)
    assert not (trunk / "summary.json").exists() and (trunk / "checkpoints" / "step_8").is_dir()
    branched = branch(trunk, 8, tmp_path / "b10", 10)
    a, b = ([(e["kind"], e["step"], e["loss"], e.get("lr", 0.0)) for e in read_metrics(run / "metrics.jsonl")]
            for run in (own, branched))
    assert [e[:2] for e in a] == [e[:2] for e in b] and len(a) == 12  # 10 train records, 2 evaluations
    assert [x for e in a for x in e[2:]] == pytest.approx([x for e in b for x in e[2:]], abs=1e-6)
    a, b = (load_file(str(run / "checkpoints/final/model.safetensors")) for run in (own, branched))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    summary = json.loads((branched / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["flops"] == json.loads((own / "summary.json").read_text())["flops"]
    reasonlab.resume(trunk, quiet=True)  # the trunk goes on to its own end
    assert json.loads((trunk / "summary.json").read_text())["steps"] == 20
    with pytest.raises(UserError, match="no checkpoint at step 9"):
        branch(trunk, 9, tmp_path / "b12", 12)
