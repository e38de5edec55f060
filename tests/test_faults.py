"""I/O faults are bad input too: one line naming the path and the cause, never a traceback, and
what was written before intact."""

import json
import shutil
from pathlib import Path

import pytest
from filelock import FileLock
from safetensors.torch import load_file, save_file

import reasonlab
from conftest import CONFIGS, fill_disk, tiny_config, without_hashes
from reasonlab.cli import main
from reasonlab.errors import WriteFailed
from reasonlab.training import trainer
from reasonlab.training.runlog import read_metrics

TRAIN = ["train", "--config", str(CONFIGS / "cpu-tiny.yaml"), "--quiet", "--max-steps", "6",
         "--set", "train.save_every=3", "--set", "train.eval_every=100", "--set", "train.curves=false"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _no_litter(folder: Path) -> None:
    """Nothing half-written is left: no temp file or folder of an atomic write, no export in progress."""
    assert not [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".old"))]


def test_a_disk_that_fills_stops_at_the_checkpoint_with_one_line_and_keeps_the_earlier_ones(tmp_path, mounts, capsys):
    disk = mounts.small_disk(tmp_path / "disk")
    out = disk / "run"
    assert main([*TRAIN, "--max-steps", "3", "--out", str(out)]) == 0
    fill_disk(disk, leave=256 << 10)  # room for the logs, not for a 2.4 MB checkpoint
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--max-steps", "6", "--quiet"]) == 1
    err = _one_line(capsys)
    assert str(out / "checkpoints") in err and "No space left on device" in err  # safetensors' own error, mapped
    _no_litter(out)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "final", "step_3"]
    for name in ("step_3", "final"):
        reasonlab.load(out / "checkpoints" / name)
    (disk / "filler").unlink()  # space again: the run resumes from its intact final checkpoint
    assert main(["train", "--resume", str(out), "--max-steps", "6", "--quiet"]) == 0


def test_a_disk_that_fills_during_training_stops_at_the_next_log_line(tmp_path, mounts):
    disk = mounts.small_disk(tmp_path / "disk")
    cfg = tiny_config(**{"train.max_steps": 60, "train.log_every": 1, "train.eval_every": 30, "train.save_every": 0})
    with pytest.raises(WriteFailed, match="No space left on device") as failed:
        trainer.train(cfg, disk / "run", quiet=True, on_eval=lambda step, val: fill_disk(disk))
    assert str(disk / "run" / "metrics.jsonl") in str(failed.value) or str(disk / "run" / "train.log") in str(
        failed.value)
    events = read_metrics(disk / "run" / "metrics.jsonl")
    assert events[-1]["step"] < 60 and [e["step"] for e in events if e["kind"] == "eval"] == [30]
    reasonlab.load(disk / "run" / "checkpoints" / "best")  # written before the disk filled


def test_a_read_only_folder_is_one_line_for_every_command_that_writes_there(tmp_path, mounts, capsys):
    run = tmp_path / "run"
    assert main([*TRAIN, "--out", str(run)]) == 0
    (tmp_path / "ro").mkdir()
    read_only = mounts.read_only(tmp_path / "ro")
    for command in ([*TRAIN, "--out", str(read_only / "run")],
                    ["compare", "--a", "cpu-tiny", "--b", "cpu-tiny", "--steps", "2", "--seeds", "1",
                     "--out", str(read_only / "cmp")],
                    ["tasks", "--task", "parity", "--a", "cpu-tiny", "--b", "cpu-tiny", "--steps", "2", "--seeds", "1",
                     "--set", "task.train_examples=64", "--out", str(read_only / "tasks")],
                    ["ablate", "--suite", "baseline", "--steps", "2", "--seeds", "1", "--out", str(read_only / "abl")],
                    ["calibrate", "--preset", "cpu-tiny", "--repeats", "1", "--handicaps", "", "--steps", "2",
                     "--seeds", "1", "--out", str(read_only / "cal")],
                    ["export", str(run / "checkpoints" / "final"), "--hf", str(read_only / "hf")]):
        capsys.readouterr()
        assert main(command) in (1, 2), command
        err = capsys.readouterr().err.strip()  # tasks says first which task it generated
        assert "Traceback" not in err and err.count("error") == 1, err
        assert str(read_only) in err.splitlines()[-1] and "Read-only file system" in err, command
    assert not any(read_only.iterdir())


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # no thread's traceback either
@pytest.mark.parametrize("target", ["checkpoints", "train.log", "metrics.csv", "tensorboard", "."])
def test_a_run_that_cannot_write_one_of_its_files_on_resume_is_one_line(tmp_path, mounts, capsys, target):
    """Each of a run's writers against its own real read-only mount: the checkpoints, the log, each tracker's files,
    the whole run folder."""
    out = tmp_path / "run"
    loggers = ["--set", "train.loggers=[csv,tensorboard]"]
    assert main([*TRAIN, *loggers, "--max-steps", "3", "--out", str(out)]) == 0
    final = (out / "checkpoints" / "final" / "model.safetensors").read_bytes()
    mounts.read_only(out / target)
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--max-steps", "6", "--quiet"]) in (1, 2)
    err = _one_line(capsys)
    assert str((out / target).resolve() if target == "." else out / target) in err and "Read-only file system" in err
    assert (out / "checkpoints" / "final" / "model.safetensors").read_bytes() == final
    reasonlab.load(out / "checkpoints" / "step_3")


def test_a_report_or_export_onto_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, mounts, capsys):
    disk = mounts.small_disk(tmp_path / "disk")
    study = disk / "cmp"
    assert main(["compare", "--a", "cpu-tiny", "--b", "cpu-tiny", "--steps", "2", "--seeds", "1", "--match", "steps",
                 "--set", "train.save_every=0", "--out", str(study)]) == 0
    report = (study / "FINAL_RESULTS.md").read_text()
    run = next(study.rglob("checkpoints/final"))
    fill_disk(disk)
    capsys.readouterr()
    for command in (["report", str(study)], ["export", str(run), "--hf", str(disk / "hf")]):
        assert main(command) == 1, command
        err = _one_line(capsys)
        assert str(disk) in err and "No space left on device" in err, command
    _no_litter(disk)
    assert not (disk / "hf").exists() and (study / "FINAL_RESULTS.md").read_text() == report


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
