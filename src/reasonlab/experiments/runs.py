"""Training a study's runs: one seed of one arm in its own folder, reused where a finished run of the
same config is there; the arms alternate, so drift in machine speed touches all alike."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reasonlab.config import BOOKKEEPING_KEYS, Config
from reasonlab.experiments.arms import REFERENCE, Arm
from reasonlab.training import trainer
from reasonlab.training.checkpoint import read_config
from reasonlab.training.runlog import run_result

Progress = Callable[[str], None]
Runs = dict[str, dict[str, dict[str, Any]]]  # arm -> seed -> that run's summary and curves


def with_train(cfg: Config, **train: Any) -> Config:
    """`cfg` with these train.* values."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))

def train_arms(arms: dict[str, Arm], out: Path, progress: Progress) -> Runs:
    """Every seed of every arm; the arms alternate, so drift in machine speed touches all alike."""
    runs: Runs = {key: {} for key in arms}
    for i in range(len(arms[REFERENCE].seeds)):
        for key, arm in arms.items():
            seed = arm.seeds[i]
            cfg = with_train(arm.cfg, seed=seed, tracker_group=arm.cfg.train.tracker_group or out.resolve().name)
            runs[key][str(seed)] = _run(cfg, out / "runs" / f"{key}-s{seed}", progress)
    return runs


def _same_run(stored: Config, wanted: Config) -> bool:
    """Equal up to the vocab size, which a run fits to its tokenizer, and the trackers it logged to."""
    a, b = stored.to_dict(), wanted.to_dict()
    for d in (a, b):
        d["model"].pop("vocab_size")
        for key in BOOKKEEPING_KEYS:
            d["train"].pop(key)
    return a == b


def _run(cfg: Config, run_dir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    """Train one seed of one arm, or reuse it when a finished run with the same config is there."""
    summary = run_dir / "summary.json"
    stored = run_dir / "config.yaml"
    if summary.is_file() and stored.is_file() and _same_run(read_config(run_dir), cfg):
        progress(f"{run_dir.name}: finished earlier, reused")
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        trainer.train(cfg, run_dir, quiet=True)
    result = run_result(run_dir)
    final = result["summary"]["final_val"]
    progress(f"{run_dir.name}: val loss {final['loss']:.4f}, accuracy {final['accuracy']:.2%}")
    return result
