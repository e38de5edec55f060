import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

import reasonlab
import reasonlab.runtime
from conftest import tiny_config
from reasonlab.training.runlog import read_metrics


def test_val_loss_falls_within_50_steps_on_the_bundled_corpus(tmp_path):
    run = reasonlab.train(tiny_config(**{"train.curves": True}), tmp_path / "run", quiet=True)
    evals = [e for e in read_metrics(run / "metrics.jsonl") if e["kind"] == "eval"]
    summary = json.loads((run / "summary.json").read_text())
    first_loss = 6.24  # ln(512): an untrained model's loss
    assert evals[-1]["step"] == 50
    assert evals[-1]["loss"] < first_loss - 0.8
    assert summary["final_val"]["loss"] == pytest.approx(evals[-1]["loss"])
    for name in ("config.yaml", "metrics.jsonl", "train.log", "curves.png", "summary.json"):
        assert (run / name).is_file(), name
    for name in ("best", "final"):
        assert (run / "checkpoints" / name / "model.safetensors").is_file()
    assert summary["params"]["active"] < summary["params"]["total"]
    assert summary["flops"] == summary["tokens"] * summary["flops_per_token"]


def _run_cfg(**extra):
    return tiny_config(**{"train.max_steps": 20, "train.save_every": 10, "train.eval_every": 5, "train.log_every": 2,
                          "model.dropout": 0.1, "train.batch_size": 4, **extra})


def _losses(run):
    return [(e["kind"], e["step"], e["loss"]) for e in read_metrics(run / "metrics.jsonl")]


@pytest.mark.parametrize("extra", [{}, {"train.micro_batch_size": 2}], ids=["batch", "micro-batches"])
def test_kill_and_resume_equals_uninterrupted(tmp_path, extra):
    full = reasonlab.train(_run_cfg(**extra), tmp_path / "full", quiet=True)
    killed = reasonlab.train(_run_cfg(**extra), tmp_path / "killed", quiet=True)
    # what a kill after step 10 leaves behind: only the step_10 checkpoint, metrics beyond it
    for ckpt in (killed / "checkpoints").iterdir():
        if ckpt.name != "step_10":
            shutil.rmtree(ckpt)
    (killed / "summary.json").unlink()
    reasonlab.resume(killed, quiet=True)
    a, b = _losses(full), _losses(killed)
    assert [x[:2] for x in a] == [x[:2] for x in b]
    for (_, _, la), (_, _, lb) in zip(a, b):
        assert la == pytest.approx(lb, abs=1e-6)
    wa = load_file(str(full / "checkpoints/final/model.safetensors"))
    wb = load_file(str(killed / "checkpoints/final/model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=1e-6)


def test_extending_a_finished_run_stretches_the_schedule(tmp_path):
    run = reasonlab.train(_run_cfg(), tmp_path / "run", quiet=True)
    reasonlab.resume(run, max_steps=30, quiet=True)
    events = read_metrics(run / "metrics.jsonl")
    train = [e for e in events if e["kind"] == "train"]
    assert train[-1]["step"] == 30
    lr_at_20 = next(e["lr"] for e in train if e["step"] == 20)
    lr_at_22 = next(e["lr"] for e in train if e["step"] == 22)
    assert lr_at_22 > lr_at_20  # the decay now ends at step 30, not 20
    assert json.loads((run / "summary.json").read_text())["steps"] == 30
    assert "max_steps: 30" in (run / "config.yaml").read_text()
    assert not (run / "curves.png").exists()  # train.curves off


def test_load_and_generate(tmp_path):
    run = reasonlab.train(tiny_config(**{"train.max_steps": 5}), tmp_path / "run", quiet=True)
    loaded = reasonlab.load(run / "checkpoints" / "best")
    assert not loaded.model.training
    ids = loaded.tokenizer.encode("To be, or not")
    assert loaded.tokenizer.decode(ids) == "To be, or not"
    logits = loaded.model(torch.tensor([ids]))
    assert logits.shape == (1, len(ids), loaded.config.model.vocab_size)
    a = loaded.generate("To be, or not", max_new_tokens=10, temperature=0.8, top_k=40, seed=0)
    b = loaded.generate("To be, or not", max_new_tokens=10, temperature=0.8, top_k=40, seed=0)
    assert a == b and a.startswith("To be, or not") and len(a) > len("To be, or not")


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    run = reasonlab.train(_run_cfg(), tmp_path / "run", quiet=True)
    before = (run / "checkpoints/final/model.safetensors").read_bytes()
    from reasonlab.training.engine import Engine, TrainingDiverged

    real_step = Engine.train_step

    def poisoned(self, step):
        if step == 24:
            for p in self.model.parameters():
                p.data.fill_(float("nan"))
        return real_step(self, step)

    monkeypatch.setattr(Engine, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"step 25.*its latest checkpoint, final \(step 20\), is unchanged"):
        reasonlab.resume(run, max_steps=40, quiet=True)
    assert (run / "checkpoints/final/model.safetensors").read_bytes() == before
    assert read_metrics(run / "metrics.jsonl")[-1]["kind"] == "diverged"


def test_compile_warm_up_leaves_training_as_it_was(tmp_path):
    from reasonlab.training.data import prepare_data
    from reasonlab.training.engine import Engine

    cfg = tiny_config(**{"model.dropout": 0.1})
    data = prepare_data(cfg)
    cfg = data.adjust_config(cfg)
    warm, plain = Engine(cfg, data), Engine(cfg, data)
    start = torch.get_rng_state()
    for engine in (warm, plain):
        torch.set_rng_state(start)
        engine.train_step(0)  # so that the optimizer has state to keep
    rng = torch.get_rng_state()
    sampler = warm.sampler.state_dict()
    assert warm.compile_warm_up() > 0
    assert torch.equal(torch.get_rng_state(), rng) and warm.sampler.state_dict() == sampler
    assert all(p.grad is None for p in warm.model.parameters())
    torch.set_rng_state(rng)
    a = warm.train_step(1)[0].loss.item()
    torch.set_rng_state(rng)
    b = plain.train_step(1)[0].loss.item()
    assert a == b
    for p, q in zip(warm.model.parameters(), plain.model.parameters()):
        assert torch.equal(p, q)


def test_only_the_command_sets_the_process_allocator(monkeypatch, capsys):
    import ctypes

    import reasonlab.cli
    from reasonlab.training.data import prepare_data
    from reasonlab.training.engine import Engine

    libraries = []
    monkeypatch.setattr(ctypes, "CDLL", lambda *args, **kwargs: libraries.append(args))
    cfg = tiny_config()
    data = prepare_data(cfg)
    Engine(data.adjust_config(cfg), data).train_step(0)
    assert libraries == []  # building and stepping an engine leaves glibc alone
    calls = []
    monkeypatch.setattr(reasonlab.runtime, "keep_freed_memory", lambda: calls.append(1))
    assert reasonlab.cli.main(["tasks", "--list"]) == 0
    assert calls == [1]


def test_task_runs_keep_the_best_val_exact_match_and_stop_when_it_stalls(tmp_path):
    """The best checkpoint is the evaluation of highest val exact match (lower loss breaking ties), and
    early_stop_patience ends the run after that many evaluations without a better one."""
    cfg = tiny_config(**{"task.name": "addition", "task.train_examples": 256, "task.eval_examples": 32,
                         "train.max_steps": 400, "train.eval_every": 10, "train.batch_size": 16, "train.lr": 3e-3,
                         "train.early_stop_patience": 3})
    run = reasonlab.train(cfg, tmp_path / "run", quiet=True)
    evals = [e for e in read_metrics(run / "metrics.jsonl") if e["kind"] == "eval"]
    best = max(evals, key=lambda e: (e["exact_match"], -e["loss"]))
    state = json.loads((run / "checkpoints" / "best" / "state.json").read_text())
    assert state["step"] == best["step"] and state["best_val_exact"] == best["exact_match"]
    last = evals[-1]["step"]
    assert last < 400 and last - best["step"] == 3 * 10  # three evaluations without a better checkpoint
    assert json.loads((run / "summary.json").read_text())["steps"] == last


def test_the_api_applies_overrides_to_a_config_object_too(tmp_path):
    run = reasonlab.train(tiny_config(), tmp_path / "run", overrides={"train.max_steps": 3}, quiet=True)
    assert json.loads((run / "summary.json").read_text())["steps"] == 3
