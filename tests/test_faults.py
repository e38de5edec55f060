"""I/O faults are bad input too: one line naming the path and the cause, never a traceback, and
what was written before intact."""

import errno
import json
import shutil
from pathlib import Path

import pytest
from filelock import FileLock
from safetensors.torch import load_file, save_file

import reasonlab
from conftest import CONFIGS, without_hashes
from reasonlab.cli import main
from reasonlab.training import checkpoint
from reasonlab.training.runlog import read_metrics

TRAIN = ["train", "--config", str(CONFIGS / "cpu-tiny.yaml"), "--quiet", "--max-steps", "6",
         "--set", "train.save_every=3", "--set", "train.eval_every=100"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_disk_full_at_a_checkpoint_stops_with_one_line_and_keeps_the_earlier_one(tmp_path, monkeypatch, capsys):
    save_file = checkpoint.save_file

    def full_at_step_6(tensors, path):
        if ".step_6." in path:
            raise OSError(errno.ENOSPC, "No space left on device")
        save_file(tensors, path)

    monkeypatch.setattr(checkpoint, "save_file", full_at_step_6)
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 1
    err = _one_line(capsys)
    assert "step_6" in err and "No space left on device" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "step_3"]  # nothing half-written
    reasonlab.load(out / "checkpoints" / "step_3")


def test_a_read_only_out_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    read_only = tmp_path / "ro"
    mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self == read_only or read_only in self.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    for command in ([*TRAIN, "--out", str(read_only / "run")],
                    ["compare", "--a", "cpu-tiny", "--b", "cpu-tiny", "--steps", "2", "--seeds", "1",
                     "--out", str(read_only / "cmp")],
                    ["ablate", "--suite", "baseline", "--steps", "2", "--seeds", "1", "--out", str(read_only / "abl")]):
        assert main(command) == 2
        err = _one_line(capsys)
        assert str(read_only) in err and "Read-only file system" in err


@pytest.mark.parametrize("cause", ["No space left on device", "Read-only file system"])
def test_a_run_that_cannot_write_its_log_on_resume_is_one_line(tmp_path, monkeypatch, capsys, cause):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    before = (out / "checkpoints" / "final" / "model.safetensors").read_bytes()
    capsys.readouterr()
    code = errno.ENOSPC if cause.startswith("No space") else errno.EROFS
    real_open = Path.open

    def failing_open(self, mode="r", *args, **kwargs):
        if self.name == "metrics.jsonl" and "a" in mode:
            raise OSError(code, cause, str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", failing_open)
    assert main(["train", "--resume", str(out), "--max-steps", "8", "--quiet"]) == 2
    err = _one_line(capsys)
    assert "metrics.jsonl" in err and cause in err
    assert (out / "checkpoints" / "final" / "model.safetensors").read_bytes() == before


def test_compare_and_ablate_refuse_an_out_that_holds_something_else(tmp_path, capsys):
    compare = ["compare", "--a", "cpu-tiny", "--b", "cpu-tiny", "--steps", "2", "--seeds", "1", "--out"]
    ablate = ["ablate", "--suite", "baseline", "--steps", "2", "--seeds", "1", "--out"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: {}\n")
    for command in (compare, ablate):
        assert main([*command, str(run)]) == 2
        assert "already holds files" in _one_line(capsys)
    other = tmp_path / "other"
    other.mkdir()
    for kind, command, message in (("comparison", compare, "of other arms"), ("ablation", compare, "not a comparison"),
                                   ("ablation", ablate, "of other arms"), ("comparison", ablate, "not an ablation")):
        (other / ".reasonlab.json").write_text(f'{{"kind": "{kind}", "fingerprint": "0"}}')
        assert main([*command, str(other)]) == 2
        assert message in _one_line(capsys)
    assert sorted(p.name for p in other.iterdir()) == [".reasonlab.json"] and (run / "config.yaml").is_file()


def test_one_writer_per_run_and_a_killed_writer_s_lock_is_free(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    capsys.readouterr()
    held = FileLock(out / ".lock", timeout=0)
    with held:  # another process training it
        assert main(["train", "--resume", str(out), "--max-steps", "8", "--quiet"]) == 2
        assert "being trained by another reasonlab process" in _one_line(capsys)
    assert (out / ".lock").exists()  # left behind, as by a killed process: the next writer takes it
    assert main(["train", "--resume", str(out), "--max-steps", "8", "--quiet"]) == 0


def test_resume_clears_killed_writes_and_restarts_a_run_killed_before_its_first_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out), "--set", "train.save_every=0"]) == 0
    final = (out / "checkpoints" / "final" / "model.safetensors").read_bytes()
    first = [(e["kind"], e["step"], e["loss"]) for e in read_metrics(out / "metrics.jsonl")]
    for litter in (out / "checkpoints" / ".step_9.x1.tmp", out / "checkpoints" / ".final.old"):
        litter.mkdir()
    (out / ".summary.json.x2.tmp").write_text("{")
    assert main(["train", "--resume", str(out), "--quiet"]) == 0  # already finished: nothing to train
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "final"]
    assert not list(out.glob(".*.tmp"))
    assert (out / "checkpoints" / "final" / "model.safetensors").read_bytes() == final

    shutil.rmtree(out / "checkpoints")  # as if killed after config.yaml, before the first checkpoint
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert [(e["kind"], e["step"], e["loss"]) for e in read_metrics(out / "metrics.jsonl")] == first  # from step 0
    assert (out / "checkpoints" / "final" / "model.safetensors").read_bytes() == final  # the same run again



def test_damaged_checkpoints_are_refused_and_old_ones_still_load(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    capsys.readouterr()
    final = out / "checkpoints" / "final"
    reasonlab.load(final)
    weights = final / "model.safetensors"
    good = weights.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01  # inside a tensor: safetensors itself would load it
    weights.write_bytes(bytes(flipped))
    for command in (["eval", str(final), "--batches", "1"], ["generate", str(final), "--prompt", "To be"],
                    ["train", "--resume", str(out), "--max-steps", "8"]):
        assert main(command) == 2
        assert "is damaged: model.safetensors" in _one_line(capsys)
    weights.write_bytes(good)

    without_hashes(final)
    reasonlab.load(final)  # no hashes recorded: loads as before
    vocab = json.loads((final / "tokenizer.json").read_text())
    vocab["model"]["vocab"].update({f"extra{i}": 100_000 + i for i in range(3)})
    (final / "tokenizer.json").write_text(json.dumps(vocab))
    assert main(["eval", str(final), "--batches", "1"]) == 2
    assert "not the model's tokenizer" in _one_line(capsys)

    shutil.rmtree(out / "checkpoints" / "best")
    step_3 = out / "checkpoints" / "step_3"
    shutil.rmtree(step_3)
    shutil.rmtree(final)
    step_6 = out / "checkpoints" / "step_6"
    without_hashes(step_6)
    tensors = load_file(str(step_6 / "optimizer.safetensors"))
    del tensors["rng.cpu"]
    save_file(tensors, str(step_6 / "optimizer.safetensors"))
    assert main(["train", "--resume", str(out), "--max-steps", "8", "--quiet"]) == 2
    assert "optimizer.safetensors has no rng.cpu entry" in _one_line(capsys)


def test_sizes_beyond_the_corpus_and_odd_arguments_are_refused_up_front(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    capsys.readouterr()
    final = str(out / "checkpoints" / "final")
    for args, fragment in ((["--max-new-tokens", "-5"], "--max-new-tokens must be in [1, 100000]"),
                           (["--max-new-tokens", "1000000000"], "--max-new-tokens must be in [1, 100000]"),
                           (["--temperature", "nan"], "--temperature must be a number >= 0"),
                           (["--temperature", "inf"], "--temperature must be a number >= 0")):
        assert main(["generate", final, "--prompt", "To be", *args]) == 2
        assert fragment in _one_line(capsys)
    assert main(["generate", final, "--prompt", "To be \udcff"]) == 2  # a non-UTF-8 byte, as argv decodes it
    assert "--prompt is not valid UTF-8" in _one_line(capsys)
    assert main(["eval", final, "--batches", "100000"]) == 2
    assert "is more than the val split holds" in _one_line(capsys)
    long = ["--set", "model.seq_len=100000", "--set", "train.batch_size=64"]
    assert main([*TRAIN, *long, "--out", str(tmp_path / "long")]) == 2
    assert "model.seq_len 100000: the train split has" in _one_line(capsys)
    assert not (tmp_path / "long").exists()
