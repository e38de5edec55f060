"""train.ema_decay: an exponential moving average of the weights, evaluated, saved for inference, resumed."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

import reasonlab
from conftest import CONFIGS, tiny_config, without_hashes
from reasonlab.cli import main
from reasonlab.runtime import runtime
from reasonlab.training import trainer
from reasonlab.training.checkpoint import read_state
from reasonlab.training.data import prepare_data
from reasonlab.training.engine import Engine
from reasonlab.training.runlog import read_metrics
from reasonlab.training.trainer import Trainer

TOKENIZER_AND_STATE = {"optimizer.safetensors", "state.json", "config.yaml", "tokenizer.json", "tokenizer_meta.json"}


def _engine(**overrides):
    cfg = tiny_config(**{"model.dropout": 0.1, "train.batch_size": 4, "model.seq_len": 32, **overrides})
    data = prepare_data(cfg)
    return Engine(data.adjust_config(cfg), data)


def _params(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_the_average_is_the_warmed_up_ema_of_the_weights_after_each_step():
    decay, steps = 0.3, 6  # the warm-up (1 + t) / (10 + t) is below 0.3 for t < 3, then 0.3 holds
    engine = _engine(**{"train.ema_decay": decay})
    trajectory = [_params(engine.model)]
    for step in range(steps):
        engine.train_step(step)
        trajectory.append(_params(engine.model))
    reference = {k: v.double() for k, v in trajectory[0].items()}
    for t, weights in enumerate(trajectory[1:]):
        d = min(decay, (1 + t) / (10 + t))
        reference = {k: d * reference[k] + (1 - d) * weights[k].double() for k in reference}
    averaged = engine.ema.state_dict()
    for name, ref in reference.items():
        torch.testing.assert_close(averaged[name].double(), ref, rtol=0, atol=1e-6)
        assert not torch.equal(averaged[name], trajectory[-1][name]), name  # it is not just the last weights
    buffers = dict(engine.model.named_buffers())
    assert set(averaged) == set(engine.model.state_dict())
    for name in set(averaged) & set(buffers):
        assert torch.equal(averaged[name], buffers[name])


def test_the_swap_shows_the_average_and_restores_the_trained_weights_in_place():
    engine = _engine(**{"train.ema_decay": 0.9})
    for step in range(3):
        engine.train_step(step)
    raw = _params(engine.model)
    storage = {name: p.data_ptr() for name, p in engine.model.named_parameters()}
    averaged = engine.ema.state_dict()
    with engine.averaged():
        for name, p in engine.model.named_parameters():
            assert torch.equal(p, averaged[name])
    for name, p in engine.model.named_parameters():
        assert torch.equal(p, raw[name]) and p.data_ptr() == storage[name]
    for name, value in engine.ema.state_dict().items():
        assert torch.equal(value, averaged[name])
    with engine.averaged():  # an error inside still restores the trained weights
        with pytest.raises(ZeroDivisionError):
            with engine.averaged():
                raise ZeroDivisionError
    for name, p in engine.model.named_parameters():
        assert torch.equal(p, raw[name])


def _run_cfg(**extra):
    return tiny_config(**{"train.max_steps": 8, "train.save_every": 4, "train.eval_every": 2, "train.log_every": 2,
                          "model.dropout": 0.1, "train.batch_size": 4, "model.seq_len": 32, "train.ema_decay": 0.9,
                          **extra})


def _evaluate(model, cfg):
    data = prepare_data(cfg)
    device, _, autocast = runtime(cfg.train)
    return data.evaluate(model, cfg, device, autocast)["loss"]


def test_evaluation_and_the_best_and_final_checkpoints_use_the_average(tmp_path, monkeypatch):
    engines = []
    real_finish = Trainer._finish

    def finish(self):
        engines.append(self.engine)
        real_finish(self)

    monkeypatch.setattr(Trainer, "_finish", finish)
    run = reasonlab.train(_run_cfg(), tmp_path / "run", quiet=True)
    engine = engines[0]
    final = run / "checkpoints" / "final"
    loaded = reasonlab.load(final)
    averaged, raw = engine.ema.state_dict(), engine.model.state_dict()
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, averaged[name]), name
    assert any(not torch.equal(averaged[k], raw[k]) for k in raw)
    for name, value in load_file(str(final / "raw_model.safetensors")).items():
        assert torch.equal(value, raw[name]), name

    evals = {e["step"]: e["loss"] for e in read_metrics(run / "metrics.jsonl") if e["kind"] == "eval"}
    cfg = loaded.config
    assert evals[8] == _evaluate(loaded.model, cfg)  # the logged evaluation is the average's
    assert evals[8] != _evaluate(engine.model, cfg)
    best = reasonlab.load(run / "checkpoints" / "best")
    best_loss = _evaluate(best.model, cfg)
    assert best_loss == read_state(run / "checkpoints" / "best").best_val_loss == min(evals.values())
    summary = (run / "summary.json").read_text()
    assert '"ema_decay": 0.9' in summary


def _records(run):
    return [{k: v for k, v in e.items() if k not in ("time_s", "tokens_per_s")}
            for e in read_metrics(run / "metrics.jsonl")]


def test_a_resumed_run_reaches_the_same_weights_average_and_losses(tmp_path):
    full = reasonlab.train(_run_cfg(), tmp_path / "full", quiet=True)

    def kill(step, _):
        if step == 6:
            raise KeyboardInterrupt

    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        trainer.train(_run_cfg(), killed, quiet=True, on_eval=kill)
    # killed after step 6: resume from step_4, with metrics beyond it (a best checkpoint could be newer)
    for ckpt in (killed / "checkpoints").iterdir():
        if ckpt.name != "step_4":
            shutil.rmtree(ckpt)
    assert not (killed / "summary.json").exists()
    reasonlab.resume(killed, quiet=True)
    assert _records(full) == _records(killed)
    for name in ("model.safetensors", "raw_model.safetensors"):  # the average, the trained weights
        a = load_file(str(full / "checkpoints/final" / name))
        b = load_file(str(killed / "checkpoints/final" / name))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def test_without_ema_the_checkpoint_holds_no_extra_file(tmp_path):
    on = reasonlab.train(_run_cfg(**{"train.max_steps": 2}), tmp_path / "on", quiet=True)
    off = reasonlab.train(_run_cfg(**{"train.max_steps": 2, "train.ema_decay": 0.0}), tmp_path / "off", quiet=True)
    for name in ("best", "final"):
        assert {p.name for p in (off / "checkpoints" / name).iterdir()} == {"model.safetensors",
                                                                             *TOKENIZER_AND_STATE}
        assert {p.name for p in (on / "checkpoints" / name).iterdir()} == {"model.safetensors",
                                                                            "raw_model.safetensors",
                                                                            *TOKENIZER_AND_STATE}
    assert "ema_decay" not in (off / "summary.json").read_text()


def test_a_checkpoint_without_an_average_resumes_with_the_average_starting_there(tmp_path):
    run = reasonlab.train(_run_cfg(**{"train.ema_decay": 0.0, "train.max_steps": 4}), tmp_path / "run", quiet=True)
    raw = load_file(str(run / "checkpoints/final/model.safetensors"))
    for path in (run / "config.yaml", *run.glob("checkpoints/*/config.yaml")):
        path.write_text(path.read_text().replace("ema_decay: 0.0", "ema_decay: 0.9"))
    for checkpoint in (run / "checkpoints").iterdir():  # edited by hand: load them as checkpoints from before hashes
        without_hashes(checkpoint)
    reasonlab.resume(run, max_steps=5, quiet=True)
    final = run / "checkpoints" / "final"
    trained = load_file(str(final / "raw_model.safetensors"))
    averaged = load_file(str(final / "model.safetensors"))
    d = min(0.9, 5 / 14)  # the update after step index 4
    for key, value in averaged.items():
        torch.testing.assert_close(value, d * raw[key] + (1 - d) * trained[key], rtol=0, atol=1e-6)


def test_cli_refuses_an_ema_decay_of_one(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--config", str(CONFIGS / "cpu-tiny.yaml"), "--set", "train.ema_decay=1.0", "--out",
                 str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and "train.ema_decay" in err, err
    assert not out.exists()


@pytest.mark.slow  # trains twice in fresh processes, one of them under torchrun: 10-20 s
def test_two_processes_keep_the_single_process_average(tmp_path):
    from test_ddp import SETTINGS, _run

    single, ddp = tmp_path / "single", tmp_path / "ddp"
    settings = [*SETTINGS, "--set", "train.ema_decay=0.9"]
    _run([*settings, "--out", str(single)], 1)
    _run([*settings, "--out", str(ddp)], 2)
    a, b = (read_metrics(run / "metrics.jsonl") for run in (single, ddp))
    assert [(e["kind"], e["step"]) for e in a] == [(e["kind"], e["step"]) for e in b]
    for ea, eb in zip(a, b):
        assert eb["loss"] == pytest.approx(ea["loss"], abs=2e-5), (ea, eb)
    wa, wb = (load_file(str(run / "checkpoints/final/model.safetensors")) for run in (single, ddp))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-5)
