"""Experiment trackers (`train.loggers`): every metrics.jsonl event also goes to CSV, TensorBoard,
Weights & Biases and MLflow, through their own libraries.

Each tracker sees the run's train and eval records as scalars named `<kind>/<metric>` at the
record's step, the resolved config as hyperparameters, the run directory's name as the run's name
and `train.tracker_group` (the study a comparison's seed or a sweep's trial belongs to) as its
group: W&B's group, MLflow's experiment, and for TensorBoard and CSV the study's folder that holds
the runs. Where each writes:

- csv: `<run>/metrics.csv`, one row per scalar (step, kind, name, value);
- tensorboard: `<run>/tensorboard/` (`tensorboard --logdir STUDY` shows a study's runs together);
- wandb: `<run>/wandb/`, project `train.tracker_project`; `WANDB_MODE=offline` works without a network;
- mlflow: MLflow's tracking URI (`MLFLOW_TRACKING_URI`, else MLflow's default, `./mlflow.db`).

A resumed run continues the same tracker runs (their ids are in `<run>/trackers.json`) and does
not send again what they already hold: the events of metrics.jsonl before the resume truncated it
(`already_logged`). An exact resume recomputes those events identically anyway.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import logging
import math
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from reasonlab.config import Config
from reasonlab.errors import UserError, WriteFailed
from reasonlab.io import atomic_write_json, writing

PACKAGES = {"csv": None, "tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # logger -> import
WRITES = {"csv": "metrics.csv", "tensorboard": "tensorboard", "wandb": "wandb"}  # in the run; mlflow: at its URI
IDS = "trackers.json"


def require_trackers(names: list[str]) -> None:
    """Refuse a missing tracker package before anything is trained (`validate` refused unknown names)."""
    for name in names:
        package = PACKAGES[name]
        if package is not None and importlib.util.find_spec(package) is None:
            raise UserError(f"train.loggers: {name} is not installed: "
                            f"pip install -e '.[{name}]' in the reasonlab checkout")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics record, as `<kind>/<metric>`."""
    kind = record["kind"]
    return {f"{kind}/{k}": float(v) for k, v in record.items()
            if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


def hyperparameters(cfg: Config) -> dict[str, Any]:
    """The config as flat `section.key` values of the kinds trackers store."""
    flat = {}
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


class Tracker(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...
    def close(self, ok: bool) -> None: ...


class CSVTracker:
    def __init__(self, run_dir: Path, cfg: Config, ids: dict[str, str]):
        path = run_dir / "metrics.csv"
        new = not path.exists()
        self.file = path.open("a", newline="")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(["step", "kind", "name", "value"])

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            kind, name = key.split("/", 1)
            self.writer.writerow([step, kind, name, repr(value)])
        self.file.flush()

    def close(self, ok: bool) -> None:
        self.file.close()


class TensorBoardTracker:
    def __init__(self, run_dir: Path, cfg: Config, ids: dict[str, str]):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if "tensorboard" not in ids:  # hyperparameters once, with the run's first events
            for summary in hparams(hyperparameters(cfg), {}):
                self.writer.file_writer.add_summary(summary)
            ids["tensorboard"] = "tensorboard"

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self, ok: bool) -> None:
        self.writer.flush()  # raises what its writer thread failed to write, where close would not
        self.writer.close()


class WandbTracker:
    def __init__(self, run_dir: Path, cfg: Config, ids: dict[str, str]):
        import wandb

        ids.setdefault("wandb", secrets.token_hex(4))  # a W&B run id: 8 lowercase alphanumerics
        self.run = wandb.init(
            project=cfg.train.tracker_project, group=cfg.train.tracker_group or None, name=run_dir.name,
            dir=str(run_dir), id=ids["wandb"], resume="allow", config=hyperparameters(cfg),
            settings=wandb.Settings(console="off", silent=True), reinit="create_new",
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


class MLflowTracker:
    def __init__(self, run_dir: Path, cfg: Config, ids: dict[str, str]):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        # a store's failure reaches the user as one line (mlflow_writing); MLflow would log its traceback first
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.client = MlflowClient()
        if "mlflow" in ids:
            self.run_id = ids["mlflow"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = cfg.train.tracker_group or cfg.train.tracker_project
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = ids["mlflow"] = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        params = [Param(k, str(v)) for k, v in hyperparameters(cfg).items()]
        for i in range(0, len(params), 100):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if ok else "KILLED")


@contextlib.contextmanager
def mlflow_writing() -> Iterator[None]:
    """MLflow's store refusing a write (a read-only or full SQLite file, a database or server it
    cannot reach) as WriteFailed naming the store and the cause: MLflow raises its own exception,
    whose cause chain ends in the database's or the OS's error."""
    import sqlite3

    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        root: BaseException = exc
        while root.__cause__ is not None:
            root = root.__cause__
        # a DB-API database's OperationalError (SQLite's, PostgreSQL's), or the OS's (a server's connection)
        if not (isinstance(root, sqlite3.Error | OSError) or type(root).__name__ == "OperationalError"):
            raise
        import mlflow

        cause = (str(root).splitlines() or [type(root).__name__])[0]
        raise WriteFailed(f"cannot write the MLflow store {mlflow.get_tracking_uri()}: {cause}") from None


TRACKERS: dict[str, type] = {"csv": CSVTracker, "tensorboard": TensorBoardTracker, "wandb": WandbTracker,
                             "mlflow": MLflowTracker}


class Trackers:
    """The run's trackers, fed every metrics.jsonl record; `already_logged` maps each event kind to
    the last step the trackers hold from before a resume."""

    def __init__(self, cfg: Config, run_dir: Path, already_logged: dict[str, int] | None = None):
        require_trackers(cfg.train.loggers)
        path = run_dir / IDS
        ids = json.loads(path.read_text()) if path.is_file() else {}
        known = dict(ids)
        self.where = {name: run_dir / WRITES[name] if name in WRITES else None for name in cfg.train.loggers}
        self.trackers: dict[str, Tracker] = {}
        for name in cfg.train.loggers:
            with self._writing(name):
                self.trackers[name] = TRACKERS[name](run_dir, cfg, ids)
        if ids != known:
            atomic_write_json(path, ids)
        self.already_logged = already_logged or {}

    def _writing(self, name: str) -> contextlib.AbstractContextManager:
        """A tracker's failure to write its files (a full disk) as WriteFailed naming them."""
        if name == "mlflow":
            return mlflow_writing()
        where = self.where[name]
        return contextlib.nullcontext() if where is None else writing(where)

    def log(self, record: dict[str, Any]) -> None:
        if record["kind"] not in ("train", "eval") or record["step"] <= self.already_logged.get(record["kind"], 0):
            return
        values = scalars(record)
        for name, tracker in self.trackers.items():
            with self._writing(name):
                tracker.log(record["step"], values)

    def close(self, ok: bool) -> None:
        for name, tracker in self.trackers.items():
            with self._writing(name):
                tracker.close(ok)


def logged_steps(events: list[dict[str, Any]]) -> dict[str, int]:
    """The last step of each event kind in a run's metrics, which its trackers already hold."""
    last: dict[str, int] = {}
    for e in events:
        last[e["kind"]] = max(last.get(e["kind"], 0), e.get("step", 0))
    return last

