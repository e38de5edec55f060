"""Ctrl-C and SIGTERM: the run checkpoints its current step and stops; --resume loses nothing."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import CONFIGS
from reasonlab.training.interrupt import StopRequest
from reasonlab.training.runlog import read_metrics

RUN = ["--config", str(CONFIGS / "cpu-tiny.yaml"), "--max-steps", "60", "--quiet", "--set", "train.log_every=1",
       "--set", "train.eval_every=20"]


def test_the_first_signal_asks_and_the_second_stops_at_once():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest().installed() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before


def _reasonlab(*args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "reasonlab", "train", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.slow  # three runs in fresh interpreters
def test_sigterm_checkpoints_and_the_resumed_run_equals_the_uninterrupted_one(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _reasonlab(*RUN, "--out", str(full)).wait(timeout=300) == 0
    proc = _reasonlab(*RUN, "--out", str(cut))
    deadline = time.monotonic() + 120
    while not any(e["kind"] == "train" and e["step"] >= 5 for e in read_metrics(cut / "metrics.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    step = max(e["step"] for e in read_metrics(cut / "metrics.jsonl") if e["kind"] == "train")
    assert step < 60 and stderr.strip().splitlines()[-1] == (
        f"interrupted: SIGTERM: stopped at step {step} of 60 after writing checkpoint step_{step}; "
        f"`reasonlab train --resume {cut}` continues the run")
    assert (cut / "checkpoints" / f"step_{step}").is_dir() and not (cut / "checkpoints" / "final").exists()

    assert _reasonlab("--resume", str(cut), "--quiet").wait(timeout=300) == 0
    a, b = read_metrics(full / "metrics.jsonl"), read_metrics(cut / "metrics.jsonl")
    assert [(e["kind"], e["step"]) for e in a] == [(e["kind"], e["step"]) for e in b]
    for ea, eb in zip(a, b):
        assert eb["loss"] == pytest.approx(ea["loss"], abs=1e-6)
    wa = load_file(str(full / "checkpoints/final/model.safetensors"))
    wb = load_file(str(cut / "checkpoints/final/model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=1e-6)
