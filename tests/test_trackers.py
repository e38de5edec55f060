"""train.loggers: every metrics.jsonl value reaches CSV, TensorBoard, W&B (offline) and MLflow (local
store), read back here with each library's own reader; a resumed run continues the same tracker
runs without sending a step twice."""

import csv
import json
import shutil
import subprocess
import sys
from collections import Counter

import pytest

import reasonlab
from conftest import CONFIGS, tiny_config
from reasonlab.cli import main
from reasonlab.training import trainer
from reasonlab.training.runlog import read_metrics
from reasonlab.training.trackers import scalars

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")
pytest.importorskip("mlflow")

ALL = ["csv", "tensorboard", "wandb", "mlflow"]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """W&B without a network and MLflow in a local SQLite store, both inside the test's folder."""
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def expected(run):
    """(name, step) -> value of every scalar in metrics.jsonl."""
    return {(k, e["step"]): v for e in read_metrics(run / "metrics.jsonl") if e["kind"] in ("train", "eval")
            for k, v in scalars(e).items()}


def read_csv(run):
    with (run / "metrics.csv").open() as fh:
        return [((f"{r['kind']}/{r['name']}", int(r["step"])), float(r["value"])) for r in csv.DictReader(fh)]


def read_tensorboard(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [((tag, e.step), e.value) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]


def _log_records(raw: bytes) -> list[bytes]:
    """W&B's offline transaction log: a 7-byte file header, then LevelDB log records (7-byte header:
    crc32c, length, type FULL/FIRST/MIDDLE/LAST) in 32 KiB blocks."""
    block, pos, records, part = 32768, 7, [], b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(raw[pos + 4:pos + 6], "little"), raw[pos + 6]
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        part = data if kind in (1, 2) else part + data
        if kind in (1, 4):
            records.append(part)
    return records


def read_wandb(run):
    from wandb.proto import wandb_internal_pb2

    rows, names = [], set()
    for path in (run / "wandb").glob("offline-run-*/run-*.wandb"):
        for data in _log_records(path.read_bytes()):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                names.add((record.run.display_name, record.run.run_group))
            if kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                rows += [((k, items["_step"]), v) for k, v in items.items() if "/" in k]
    return rows, names


def read_mlflow(run, uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run_id = json.loads((run / "trackers.json").read_text())["mlflow"]
    info = client.get_run(run_id)
    rows = [((key, m.step), m.value) for key in info.data.metrics for m in client.get_metric_history(run_id, key)]
    return rows, info


def check(rows, want, rel=1e-9):
    counts = Counter(key for key, _ in rows)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1][:5]  # no step sent twice
    got = dict(rows)
    assert set(got) == set(want)
    for key, value in want.items():
        if key[0].endswith(("tokens_per_s", "time_s")):  # clock readings: steps 11-15 ran twice, logged once
            continue
        assert got[key] == pytest.approx(value, rel=rel), key


@pytest.mark.slow  # starts W&B's service and MLflow's store: a few seconds
def test_a_resumed_run_logs_every_value_once_to_every_tracker(tmp_path, offline):
    """A crash at step 15 (after the step-10 checkpoint) and a resume: each tracker holds steps 1-20 once,
    with the values of the final metrics.jsonl, in the same tracker run."""
    cfg = tiny_config(**{"train.max_steps": 20, "train.save_every": 10, "train.eval_every": 5, "train.log_every": 5,
                         "train.loggers": ALL, "train.tracker_group": "study-a"})

    def crash(step, val):
        if step == 15:
            raise RuntimeError("node lost")

    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="node lost"):
        trainer.train(cfg, run, quiet=True, on_eval=crash)
    shutil.rmtree(run / "checkpoints" / "best")  # as a kill before it was written: step_10 is the latest
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_10"]
    reasonlab.resume(run, quiet=True)
    want = expected(run)
    assert {step for _, step in want} == {5, 10, 15, 20}
    check(read_csv(run), want)
    check(read_tensorboard(run), want, rel=1e-6)  # TensorBoard stores float32
    wandb_rows, wandb_runs = read_wandb(run)
    check(wandb_rows, want)
    assert wandb_runs == {("run", "study-a")}
    mlflow_rows, info = read_mlflow(run, offline)
    check(mlflow_rows, want)
    assert info.info.status == "FINISHED" and info.info.run_name == "run"
    assert info.data.params["train.tracker_group"] == "study-a" and info.data.params["model.d_model"] == "64"


def test_a_missing_tracker_package_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    out = tmp_path / "run"
    assert main(["train", "--config", "cpu-tiny", "--out", str(out), "--set", "train.loggers=csv,wandb"]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: train.loggers: wandb is not installed: pip install -e '.[wandb]' in the reasonlab checkout"
    assert not out.exists()
    assert main(["train", "--config", "cpu-tiny", "--out", str(out), "--set", "train.loggers=comet"]) == 2
    assert "train.loggers: each must be one of csv, tensorboard, wandb, mlflow, got 'comet'" in capsys.readouterr().err


def test_a_comparisons_runs_are_grouped_by_its_study(tmp_path, monkeypatch):
    """Each seed of each arm is its own tracker run, grouped under the comparison's folder name; a run
    trained before trackers existed is still reused (tracker settings do not change results)."""
    from reasonlab.config import with_overrides
    from reasonlab.experiments import runs
    from reasonlab.experiments.arms import Arm
    from reasonlab.outdir import claim_out

    trained = []
    monkeypatch.setattr(runs, "_run", lambda cfg, run_dir: trained.append((cfg, run_dir)) or {})
    cfg = tiny_config()
    studied = {"a": Arm("a", "cpu-tiny", cfg, seeds=[0, 1]), "b": Arm("b", "cpu-tiny", cfg, seeds=[2, 3])}
    claim_out(tmp_path / "study-x", "comparison", "key")
    runs.train_arms(studied, tmp_path / "study-x", lambda line: None)
    assert [(c.train.seed, c.train.tracker_group, d.name) for c, d in trained] == [
        (0, "study-x", "a-s0"), (2, "study-x", "b-s2"), (1, "study-x", "a-s1"), (3, "study-x", "b-s3")]
    logged = with_overrides(cfg, {"train.loggers": ["csv"], "train.tracker_group": "study-x"})
    assert runs._same_run(cfg, logged)


@pytest.mark.slow  # starts W&B's service and MLflow's store, twice each
@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_tracker_store_that_cannot_be_written_is_one_line(tmp_path, offline, mounts, tracker):
    """W&B's offline folder in the run, MLflow's SQLite store: each on a real read-only mount when the run
    resumes, in a fresh process (one that had the store open before the mount would keep writing to it)."""
    out = tmp_path / "run"
    train = ["train", "--config", str(CONFIGS / "cpu-tiny.yaml"), "--quiet", "--set", "train.save_every=3",
             "--set", "train.eval_every=100", "--set", "train.curves=false", "--set", f"train.loggers=[{tracker}]"]
    assert main([*train, "--max-steps", "3", "--out", str(out)]) == 0
    store = out / "wandb" if tracker == "wandb" else tmp_path / "mlflow.db"
    mounts.read_only(store)
    done = subprocess.run([sys.executable, "-m", "reasonlab", "train", "--resume", str(out), "--max-steps", "6",
                           "--quiet"], capture_output=True, text=True, timeout=300)
    err = done.stderr.strip()
    assert done.returncode in (1, 2) and err.startswith("error: ") and "\n" not in err, err
    assert str(store) in err and ("Read-only file system" in err or "readonly database" in err), err
    reasonlab.load(out / "checkpoints" / "step_3")
