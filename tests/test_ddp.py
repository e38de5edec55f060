"""Two gloo processes under torchrun follow the single-process loss curve with the same global batch."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from reasonlab.training.checkpoint import read_carry
from reasonlab.training.runlog import read_metrics

pytestmark = pytest.mark.slow  # each test trains twice in fresh processes, under torchrun: 10-20 s

# per-process randomness (dropout, router noise) and the per-process balance loss are the only
# things data parallelism changes on purpose; switch them off to compare the curves exactly
SETTINGS = ["--config", "cpu-tiny", "--max-steps", "12", "--quiet", "--set", "model.dropout=0.0",
            "--set", "model.router_noise_std=0.0", "--set", "model.balance_loss_weight=0.0",
            "--set", "recursion.halt_exploration_prob=0.0", "--set", "train.log_every=1", "--set", "train.eval_every=6",
            "--set", "train.save_every=6"]


def _run(args, nproc):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command = [*launcher, "-m", "reasonlab", "train", *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize(("arch", "micro"), [("baseline", 0), ("recursive", 0), ("baseline", 2)],
                         ids=["baseline", "recursive", "baseline-micro-batches"])
def test_two_processes_follow_the_single_process_curve(tmp_path, arch, micro):
    """The global batch is the same, also when each process accumulates it in micro-batches."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    _run([*SETTINGS, "--model", arch, "--out", str(single)], 1)
    _run([*SETTINGS, "--model", arch, "--set", f"train.micro_batch_size={micro}", "--out", str(ddp)], 2)
    a, b = read_metrics(single / "metrics.jsonl"), read_metrics(ddp / "metrics.jsonl")
    assert [(e["kind"], e["step"]) for e in a] == [(e["kind"], e["step"]) for e in b]
    for ea, eb in zip(a, b):
        assert eb["loss"] == pytest.approx(ea["loss"], abs=2e-5), (ea, eb)
        assert eb["flops"] == ea["flops"] and eb["tokens"] == ea["tokens"]
    assert (ddp / "checkpoints" / "final" / "model.safetensors").is_file()


def test_ddp_run_resumes_from_its_checkpoint(tmp_path):
    out = tmp_path / "ddp"
    _run([*SETTINGS, "--out", str(out)], 2)
    for name in ("final", "best", "step_12"):
        shutil.rmtree(out / "checkpoints" / name, ignore_errors=True)
    _run(["--resume", str(out), "--max-steps", "14"], 2)
    steps = [e["step"] for e in read_metrics(out / "metrics.jsonl") if e["kind"] == "train"]
    assert steps == list(range(1, 15))


def test_ddp_resume_with_carry_equals_uninterrupted(tmp_path):
    carried = [*SETTINGS, "--model", "trm", "--set", "recursion.carry_across_steps=true",
               "--set", "recursion.max_segments=3"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    _run([*carried, "--out", str(full)], 2)
    _run([*carried, "--out", str(killed)], 2)
    for ckpt in (killed / "checkpoints").iterdir():
        if ckpt.name != "step_6":
            shutil.rmtree(ckpt)
    step_6 = killed / "checkpoints" / "step_6"
    own = [read_carry(step_6, rank, 2) for rank in (0, 1)]
    assert own[0].keys() == own[1].keys() and not torch.equal(own[0]["input_ids"], own[1]["input_ids"])
    assert read_carry(step_6, 0, 1) is None  # saved by two processes: one process starts its rows afresh
    _run(["--resume", str(killed)], 2)
    a, b = read_metrics(full / "metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    assert [(e["kind"], e["step"]) for e in a] == [(e["kind"], e["step"]) for e in b]
    for ea, eb in zip(a, b):
        assert eb["loss"] == pytest.approx(ea["loss"], abs=1e-6), (ea, eb)
