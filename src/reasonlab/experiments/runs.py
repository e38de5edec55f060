"""Training a comparison's runs: one seed of one arm in its own folder, reused where a finished run of
the same config is there, queued so that local workers and other machines share them."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reasonlab.config import BOOKKEEPING_KEYS, Config, config_from_dict
from reasonlab.errors import Incomplete, UserError
from reasonlab.experiments.arms import REFERENCE, Arm
from reasonlab.experiments.sweep import SweepSpec, finished_trials, open_study, queue, run_until_settled, shown_url
from reasonlab.outdir import MARKER
from reasonlab.training import trainer
from reasonlab.training.checkpoint import read_config
from reasonlab.training.runlog import run_result

Progress = Callable[[str], None]
Runs = dict[str, dict[str, dict[str, Any]]]  # arm -> seed -> that run's summary and curves


def with_train(cfg: Config, **train: Any) -> Config:
    """`cfg` with these train.* values."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


def train_arms(arms: dict[str, Arm], out: Path, progress: Progress, workers: int = 1,
               storage: str | None = None) -> Runs:
    """Every seed of every arm, through the sweep queue: `workers` local processes, and any machine
    that runs the same study with the same `storage` takes its share. Runs are queued with the arms
    alternating (seed 0 of A, B, C, then seed 1, ...), so drift in machine speed touches all alike;
    each result is stored in the queue, so the machine that judges sees every run."""
    keys = [(key, arm.seeds[i]) for i in range(len(arms[REFERENCE].seeds)) for key, arm in arms.items()]
    spec = SweepSpec(storage or f"sqlite:///{(out / 'study.db').resolve()}", _study_name(out), out,
                     {key: arm.cfg.to_dict() for key, arm in arms.items()}, job=run_arm_seed, keys=keys)
    study = open_study(spec)
    planned = study.user_attrs.get("configs")
    if planned is None:
        study.set_user_attr("configs", spec.configs)
    elif planned != spec.configs:
        raise UserError(f"the queue in {shown_url(spec.storage_url)} holds this study with other budgets: plan it "
                        "once (--match time calibrates on each machine) and copy its plan.json into every "
                        "machine's --out")
    queued = queue(spec, study, keys)
    progress(f"{len(keys)} runs: {len(keys) - queued} done or in the queue, {queued} queued now (a finished run in "
             f"runs/ is kept) in {spec.study_name} in {shown_url(spec.storage_url)}")
    run_until_settled(spec, study, keys, workers, progress)
    finished = finished_trials(study)
    missing = [f"{key} seed {seed}" for key, seed in keys if (key, seed) not in finished]
    if missing:
        raise Incomplete(f"{len(missing)} of {len(keys)} runs did not finish ({', '.join(missing[:5])}); rerun the "
                         "command to retry them")
    return {key: {str(seed): finished[(key, seed)] for seed in arm.seeds} for key, arm in arms.items()}


def _study_name(out: Path) -> str:
    """The queue's study: one per study folder, named by the folder's claim (`outdir.claim_out`)."""
    return f"runs-{json.loads((out / MARKER).read_text())['fingerprint']}"


def run_arm_seed(spec: SweepSpec, key: str, seed: int) -> dict[str, Any]:
    """One queued run: arm `key` on `seed`, in `runs/<key>-s<seed>` of the study's folder."""
    cfg = config_from_dict(spec.configs[key])
    cfg = with_train(cfg, seed=seed, tracker_group=cfg.train.tracker_group or spec.out.resolve().name)
    return _run(cfg, spec.out / "runs" / f"{key}-s{seed}")


def _same_run(stored: Config, wanted: Config) -> bool:
    """Equal up to the vocab size, which a run fits to its tokenizer, and the trackers it logged to."""
    a, b = stored.to_dict(), wanted.to_dict()
    for d in (a, b):
        d["model"].pop("vocab_size")
        for key in BOOKKEEPING_KEYS:
            d["train"].pop(key)
    return a == b


def _run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Train one seed of one arm: reuse a finished run of the same config, continue one killed midway
    from its latest checkpoint (as `reasonlab resume` would, so a study stopped for the night loses
    at most the steps since a checkpoint), else start afresh; the queue's worker reports it."""
    same = (run_dir / "config.yaml").is_file() and _same_run(read_config(run_dir), cfg)
    if same and not (run_dir / "summary.json").is_file():
        trainer.resume(run_dir, quiet=True)
    elif not same:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        trainer.train(cfg, run_dir, quiet=True)
    return run_result(run_dir)
