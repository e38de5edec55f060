"""The sweep engine: every (config, seed) of a suite is one trial of one Optuna study.

Trials are enqueued with fixed parameters (no sampler guesswork); workers claim waiting
trials atomically through the study's storage, so any number of local processes or machines
can share one study: a SQLite file in the sweep folder by default, or any Optuna RDB URL
(`postgresql://...`) for several machines. Each trial's result (summary and curves) is stored
in the study itself, so whichever machine builds the report sees every trial.

Re-running the same command resumes: finished trials are not run again, and trials whose
worker died (a heartbeat older than the grace period, or failed with an error) are retried.
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import optuna
import sqlalchemy.exc
import torch
from optuna.trial import TrialState

from reasonlab.config import Config, config_from_dict
from reasonlab.errors import Interrupted, UserError
from reasonlab.training import trainer
from reasonlab.training.runlog import run_result

HEARTBEAT_S = 10
GRACE_S = 60
SCHEMA_ATTEMPTS = 5  # tries to open a fresh database whose tables another machine is creating
SEED_RANGE = (0, 2**31 - 1)
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


Key = tuple[str, int]  # a trial's (config name, seed)


@dataclass
class SweepSpec:
    """What a worker needs to run any trial of the study.

    By default a trial trains its config once, in a fresh folder under `trials/`. A study whose
    unit of work is more than one run (`scale`: a trunk and its cooldown branches) gives `job`, a
    module-level function (workers are spawned processes) that runs (config name, seed) in
    folders of its own, resumes what a killed worker left, and returns the trial's result.
    """

    storage_url: str
    study_name: str
    out: Path
    configs: dict[str, dict[str, Any]]  # name -> resolved config as a dict (picklable, JSON-able)
    prune: bool = False
    job: Callable[[SweepSpec, str, int], dict[str, Any]] | None = None
    plan: dict[str, Any] = field(default_factory=dict)  # what `job` needs beyond the configs (JSON-able)
    keys: list[Key] | None = None  # the (config, seed) this command's stage claims; None: any waiting trial


@contextlib.contextmanager
def _heartbeat_api() -> Iterator[None]:
    """Silence optuna's ExperimentalWarning about heartbeats (stable in practice) for the calls that
    raise it, the heartbeat arguments of RDBStorage and fail_stale_trials, and nowhere else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the running trials whose worker stopped beating, so that they are queued again."""
    with _heartbeat_api():
        optuna.storages.fail_stale_trials(study)


def shown_url(url: str) -> str:
    """A storage URL as logs, reports and errors show it: with its password masked."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def _without_password(text: str, url: str) -> str:
    password = urlsplit(url).password
    return text.replace(url, shown_url(url)).replace(password, "***") if password else text


def make_storage(url: str) -> optuna.storages.RDBStorage:
    kwargs: dict[str, Any] = {"heartbeat_interval": HEARTBEAT_S, "grace_period": GRACE_S}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    try:
        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                with _heartbeat_api():
                    return optuna.storages.RDBStorage(url, **kwargs)
            except sqlalchemy.exc.DBAPIError as exc:
                # machines started together on a fresh database race to create its tables: the
                # losers see "already exists" (or a unique violation), and the schema is there then
                if "already exists" not in str(exc) and "unique" not in str(exc).lower():
                    raise
                if attempt == SCHEMA_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
    except Exception as exc:  # bad URL, missing driver, unreachable server
        reason = _without_password(str(exc).splitlines()[0], url)
        raise UserError(f"cannot open sweep storage {shown_url(url)}: {reason}") from None


def _pruner(prune: bool) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0) if prune else optuna.pruners.NopPruner()


@contextlib.contextmanager
def storage_lock(url: str):
    """Serialise claims and enqueues on a SQLite study: SQLite ignores SELECT ... FOR UPDATE, which
    server databases (PostgreSQL, MySQL) honour, so only SQLite needs a file lock beside it."""
    if not url.startswith("sqlite:///"):
        yield
        return
    with open(url[len("sqlite:///"):] + ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def open_study(spec: SweepSpec) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=spec.study_name, storage=make_storage(spec.storage_url),
                               direction="minimize", pruner=_pruner(spec.prune), load_if_exists=True)


def trial_key(trial: optuna.trial.FrozenTrial) -> tuple[str, int] | None:
    """The (config, seed) a trial runs. Read from the pair it was enqueued with: a running trial's
    own params appear one suggest at a time, and another worker may read them in between."""
    params = trial.system_attrs.get("fixed_params") or trial.params
    return (params["config"], int(params["seed"])) if "config" in params and "seed" in params else None


def enqueue_missing(study: optuna.Study, names: list[str], seeds: list[int], retry_errors: bool = True) -> int:
    """Queue every (config, seed) of names x seeds that has no finished, running or waiting trial."""
    return enqueue_keys(study, [(name, seed) for name in names for seed in seeds], retry_errors)


def queue(spec: SweepSpec, study: optuna.Study, keys: list[Key]) -> int:
    """Queue every (config, seed) of `keys` not yet finished, running or waiting, those that failed
    with an error of their own included (a new run of the command retries them); return how many."""
    with storage_lock(spec.storage_url):
        return enqueue_keys(study, keys)


def enqueue_keys(study: optuna.Study, keys: list[Key], retry_errors: bool = True) -> int:
    """Queue every (config, seed) that has no finished, running or waiting trial; return how many.
    Without `retry_errors`, a (config, seed) whose trial raised is left failed (a trial whose worker
    died is still queued again)."""
    fail_stale_trials(study)
    queued = study.get_trials(deepcopy=False, states=(*DONE, TrialState.RUNNING, TrialState.WAITING))
    live = {trial_key(t) for t in queued}
    if not retry_errors:
        live |= {trial_key(t) for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                 if "error" in t.user_attrs}
    added = 0
    for name, seed in keys:
        if (name, seed) not in live:
            study.enqueue_trial({"config": name, "seed": seed})
            added += 1
    return added


def _claim(study: optuna.Study, keys: list[Key] | None = None) -> optuna.Trial | None:
    """Move one waiting trial (of `keys`, where given) to RUNNING (call under `storage_lock`); None
    when there is none.

    A waiting trial whose (config, seed) already finished or runs elsewhere (two launches that
    enqueued at once) is closed as a duplicate instead of run again.
    """
    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    taken = {trial_key(t) for t in trials if t.state in (*DONE, TrialState.RUNNING)}
    wanted = None if keys is None else set(keys)
    for frozen in trials:
        if frozen.state != TrialState.WAITING or (wanted is not None and trial_key(frozen) not in wanted):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study._study_id, frozen.number)
        # the first heartbeat comes before the claim: a worker killed right after claiming leaves a
        # trial that goes stale, never one that stays RUNNING for ever
        storage.record_heartbeat(trial_id)
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        if trial_key(frozen) in taken:
            storage.set_trial_user_attr(trial_id, "duplicate", True)
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            continue
        return optuna.Trial(study, trial_id)
    return None


class _Heartbeat:
    """Marks a trial alive every HEARTBEAT_S seconds while it runs."""

    def __init__(self, storage: Any, trial_id: int):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, args=(storage, trial_id), daemon=True)

    def _beat(self, storage: Any, trial_id: int) -> None:
        while True:
            storage.record_heartbeat(trial_id)
            if self.stop.wait(HEARTBEAT_S):
                return

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def run_trial(cfg: Config, run_dir: Path, on_eval: Callable[[int, dict[str, float]], None] | None = None) -> str:
    """Train one trial in a fresh folder; returns its status: complete, pruned or diverged."""
    try:
        trainer.train(cfg, run_dir, quiet=True, on_eval=on_eval)
    except optuna.TrialPruned:
        return "pruned"
    except trainer.TrainingDiverged:
        return "diverged"
    return "complete"


def work(spec: SweepSpec, threads: int | None = None, progress: Callable[[str], None] | None = None) -> int:
    """Run waiting trials until none are left; return how many this worker finished.

    A trial that raises is recorded as failed (with its error) and the worker moves on; the
    next run of the command retries it.
    """
    say = progress or (lambda line: None)
    if threads:
        torch.set_num_threads(threads)
    study = open_study(spec)
    fail_stale_trials(study)
    names = sorted(spec.configs)
    done = 0
    while True:
        with storage_lock(spec.storage_url):
            trial = _claim(study, spec.keys)
        if trial is None:
            return done
        with _Heartbeat(study._storage, trial._trial_id):
            name = trial.suggest_categorical("config", names)
            seed = trial.suggest_int("seed", *SEED_RANGE)
            try:
                status, result, final = _run_one(spec, trial, name, seed)
            except Interrupted:  # Ctrl-C or SIGTERM: stop, and leave the trial to be run again
                study.tell(trial, state=TrialState.FAIL)
                raise
            except Exception as exc:
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                study.tell(trial, state=TrialState.FAIL)
                say(f"trial {name} seed {seed}: failed ({type(exc).__name__}: {exc}); rerun the command to retry it")
                continue
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            trial.set_user_attr("result", result)
            if status == "pruned":
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, float("inf") if final is None else final)
        done += 1
        say(f"trial {name} seed {seed}: {status}" + (f", val loss {final:.4f}" if final is not None else ""))


def _run_one(spec: SweepSpec, trial: optuna.Trial, name: str, seed: int) -> tuple[str, dict[str, Any], float | None]:
    """Run one claimed trial: the study's own job, or one training run. Returns its status, its
    result and the value the study records (the final val loss of a training run)."""
    if spec.job is not None:
        result = spec.job(spec, name, seed)
        return "complete", result, result.get("summary", {}).get("final_val", {}).get("loss")
    cfg = config_from_dict(spec.configs[name])
    cfg.train.seed = seed
    cfg.train.tracker_group = cfg.train.tracker_group or spec.out.resolve().name
    run_dir = spec.out / "trials" / f"{name}-s{seed}-t{trial.number}"

    def report(step: int, metrics: dict[str, float]) -> None:
        trial.report(metrics["loss"], step)
        if trial.should_prune():
            raise optuna.TrialPruned()

    status = run_trial(cfg, run_dir, report if spec.prune else None)
    result = {"status": status, **run_result(run_dir)}
    return status, result, result.get("summary", {}).get("final_val", {}).get("loss")


def worker_gpus(workers: int, visible: str | None, count: int) -> list[str | None]:
    """Each local worker's CUDA_VISIBLE_DEVICES: the machine's GPUs (those `visible` names, else
    0..count-1) dealt round-robin, so two workers on a 2-GPU machine train on different GPUs; None
    for every worker where there is no GPU."""
    if count < 1:
        return [None] * workers
    ids = [d.strip() for d in visible.split(",") if d.strip()][:count] if visible else [str(i) for i in range(count)]
    return [ids[i % len(ids)] for i in range(workers)]


def _worker_main(spec: SweepSpec, threads: int, gpu: str | None) -> None:
    if gpu is not None:  # before this process touches CUDA: "cuda" is then this worker's own GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    work(spec, threads, progress=lambda line: print(line, flush=True))


def run_workers(spec: SweepSpec, workers: int, progress: Callable[[str], None]) -> None:
    """Run the queue with `workers` local processes (1 = in this process). A worker that stops
    early is reported; its trial goes stale and `run_until_settled` runs it again."""
    if workers <= 1:
        work(spec, progress=progress)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    gpus = worker_gpus(workers, os.environ.get("CUDA_VISIBLE_DEVICES"),
                       torch.cuda.device_count() if torch.cuda.is_available() else 0)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(spec, threads, gpu)) for gpu in gpus]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    failed = [p.exitcode for p in procs if p.exitcode]
    if failed:
        progress(f"{len(failed)} of {workers} sweep workers stopped early (exit codes {failed}; negative = killed "
                 "by that signal); their trials are run again once their heartbeats go stale")


def run_until_settled(spec: SweepSpec, study: optuna.Study, keys: list[Key], workers: int,
                      progress: Callable[[str], None]) -> None:
    """Run the queue, then wait for trials running elsewhere (other machines, or workers that died:
    their heartbeats go stale after GRACE_S and the trials are queued and run again) until every
    (config, seed) of `keys` is finished or has failed with an error of its own."""
    wanted = set(keys)
    waiting_said = False
    run_workers(spec, workers, progress)
    while True:
        with storage_lock(spec.storage_url):
            enqueue_keys(study, keys, retry_errors=False)
        if any(trial_key(t) in wanted for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))):
            run_workers(spec, workers, progress)
            continue
        running = sum(trial_key(t) in wanted for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        if not running:
            return
        if not waiting_said:
            progress(f"waiting for {running} trials running elsewhere (a dead worker's trial is run again "
                     f"once its heartbeat is {GRACE_S} s old)")
            waiting_said = True
        time.sleep(HEARTBEAT_S)


def finished_trials(study: optuna.Study) -> dict[tuple[str, int], dict[str, Any]]:
    """The latest finished result of each (config, seed)."""
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for trial in study.get_trials(deepcopy=False, states=DONE):
        key = trial_key(trial)
        if key is not None and "result" in trial.user_attrs:
            results[key] = trial.user_attrs["result"]
    return results
