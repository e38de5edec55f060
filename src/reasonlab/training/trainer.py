"""The run lifecycle: a run directory trained by the step engine, evaluated, checkpointed, resumed.

A run directory holds config.yaml, metrics.jsonl, train.log, checkpoints/{best,final,step_N},
curves.png (unless train.curves is off) and summary.json. `train` starts a run, `resume`
continues or extends one; with the same seed on CPU a resumed run reproduces the uninterrupted
one exactly. The step itself (forward, backward, clip, AdamW) is `engine.Engine`'s.

With `train.ema_decay` > 0 the evaluations (and so the best checkpoint) are of the EMA weights,
and every checkpoint's inference weights are the EMA ones; train records stay the trained
weights' own losses.

Ctrl-C or SIGTERM stops a run at the end of its current step, after a checkpoint of that step
(`interrupt`); a second signal stops it at once.

Under torchrun each process takes its slice of the configured (global) batch, and only the main
process evaluates and writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from reasonlab.config import Config
from reasonlab.data.tokenizer import Tokenizer
from reasonlab.distributed import World, all_reduce, barrier, gather, init_world, shutdown
from reasonlab.errors import Interrupted, UserError
from reasonlab.io import atomic_write_json, atomic_write_text, resolve_dir
from reasonlab.model import param_counts
from reasonlab.model.outputs import StepLoss
from reasonlab.model.supervision import Carry
from reasonlab.report.plots import plot_run_curves
from reasonlab.runtime import check_runtime, resolve_device
from reasonlab.training.checkpoint import (
    TrainingState,
    latest_checkpoint,
    load_training_state,
    read_averaged_weights,
    read_carry,
    read_config,
    read_state,
    remove_checkpoint_litter,
    save_checkpoint,
)
from reasonlab.training.data import TrainingData, prepare_data
from reasonlab.training.engine import Engine, TrainingDiverged
from reasonlab.training.interrupt import StopRequest
from reasonlab.training.optim import lr_at
from reasonlab.training.runlog import RunLog, eval_line, read_metrics, train_line, truncate_metrics
from reasonlab.training.trackers import Trackers, logged_steps, require_trackers

EvalCallback = Callable[[int, dict], None]

__all__ = ["Trainer", "TrainingDiverged", "resume", "train"]


class Trainer:
    """One run directory: the engine's steps, the metric log, evaluations, checkpoints, the summary."""

    def __init__(self, cfg: Config, run_dir: Path, data: TrainingData, world: World | None = None,
                 quiet: bool = False):
        """`cfg` must already be adjusted to the data (`data.adjust_config`)."""
        self.cfg, self.run_dir, self.data, self.quiet = cfg, run_dir, data, quiet
        self.engine = Engine(cfg, data, world)
        self.world = self.engine.world
        self.state = TrainingState(
            step=0, max_steps=cfg.train.max_steps, sampler=self.engine.sampler.state_dict(),
            best_val_loss=math.inf, tokens=0, flops=0, train_time_s=0.0, wall_time_s=0.0, log_window={},
        )
        self.tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
        self.final_val: dict[str, float] | None = None
        self.already_logged: dict[str, int] = {}  # what the trackers hold from before a resume
        self._wall_start = 0.0

    def restore(self, checkpoint: Path) -> None:
        max_steps = self.state.max_steps
        self.state = load_training_state(checkpoint, self.engine.model, self.engine.optimizer)
        self.state.max_steps = max_steps
        if self.engine.ema is not None:
            averaged = read_averaged_weights(checkpoint)
            if averaged is None:  # saved without EMA: the average starts from the weights it resumes
                self.engine.ema.reset()
            else:
                self.engine.ema.load_state_dict(averaged)
        self.engine.sampler.load_state_dict(self.state.sampler)
        carry = read_carry(checkpoint, self.world.rank, self.world.size)
        self.engine.carry = None if carry is None else Carry.from_tensors(carry, self.engine.device)
        self.engine.reseed(self.state.step)

    def run(self, on_eval: EvalCallback | None = None, stop_at: int | None = None) -> dict:
        """Train to max_steps; `on_eval(step, val_metrics)` runs after each evaluation and may raise to stop.

        `stop_at` pauses the run at that step instead, with a checkpoint `step_N` to resume or branch
        from (no final checkpoint, no summary: the run is not finished); returns {} then.
        """
        st = self.state
        trackers = Trackers(self.cfg, self.run_dir, self.already_logged) if self.world.is_main else None
        log = RunLog(self.run_dir, st.max_steps, st.step, self.quiet, enabled=self.world.is_main, trackers=trackers)
        self._wall_start = time.perf_counter() - st.wall_time_s
        target = st.max_steps if stop_at is None else min(stop_at, st.max_steps)
        finished = paused = False
        try:
            with StopRequest().installed() as stop:
                self._start(log)
                spent = self._patience_spent()  # a resumed run may have stopped early already
                while st.step < target and not spent:
                    self._step(log)
                    self._log_if_due(log)
                    self._evaluate_if_due(log, on_eval)
                    self._save_if_due()
                    interrupted, spent = self._agreed(stop.signum is not None, self._patience_spent())
                    if interrupted and st.step < st.max_steps:
                        self._interrupt(log, stop.signum or signal.SIGTERM)
                paused = st.step < st.max_steps and not spent
                if paused:
                    self._pause(log)
                else:
                    self._finish()
            finished = True
        except TrainingDiverged as exc:
            log.event({"kind": "diverged", "step": st.step + 1, "message": str(exc)})
            log.info(f"stopped: {exc}")
            raise TrainingDiverged(f"{exc}; {checkpoints_note(self.run_dir)}") from None
        finally:
            log.close(ok=finished)
        return self._write_summary() if self.world.is_main and not paused else {}

    def _start(self, log: RunLog) -> None:
        st = self.state
        if st.step == 0:
            log.info(f"training {self.cfg.model.arch}: {param_counts(self.cfg)['total']:,} params, "
                     f"{st.max_steps} steps on {self.engine.device} ({self.engine.precision})")
        if self.cfg.train.compile and st.step < st.max_steps:
            seconds = self.engine.compile_warm_up()
            log.info(f"compiled in {seconds:.1f} s (not counted as training time)")

    def _step(self, log: RunLog) -> None:
        """One engine step; its metrics join the window the next train record averages."""
        st = self.state
        tic = time.perf_counter()
        out, grad_norm = self.engine.train_step(st.step)
        values = self._reduced_metrics(out, grad_norm)
        flops = all_reduce(torch.tensor(out.flops, dtype=torch.float64, device=self.engine.device), self.world,
                           mean=False)
        dt = time.perf_counter() - tic
        st.step += 1
        st.tokens += self.tokens_per_step
        st.flops += int(flops.item())
        st.train_time_s += dt
        for key, value in (*values.items(), ("time", dt), ("n", 1)):
            st.log_window[key] = st.log_window.get(key, 0.0) + value
        log.progress(1, loss=f"{values['loss']:.3f}", tok_s=f"{self.tokens_per_step / dt:,.0f}")

    def _reduced_metrics(self, out: StepLoss, grad_norm: torch.Tensor) -> dict[str, float]:
        """The step's LM loss, auxiliary metrics and gradient norm, averaged over processes in one host sync."""
        names = ["loss", *out.metrics, "grad_norm"]
        logged = torch.stack([out.lm_loss, *out.metrics.values(), grad_norm]).detach().float()
        return dict(zip(names, all_reduce(logged, self.world).tolist()))

    def _log_if_due(self, log: RunLog) -> None:
        st, t = self.state, self.cfg.train
        if st.step % t.log_every and st.step != st.max_steps:
            return
        window = st.log_window
        n, elapsed = window.pop("n"), window.pop("time")
        record = {
            "kind": "train", "step": st.step, **{k: v / n for k, v in window.items()}, "lr": lr_at(st.step - 1, t),
            "tokens_per_s": n * self.tokens_per_step / elapsed, "tokens": st.tokens, "flops": st.flops,
            "time_s": st.train_time_s,
        }
        window.clear()
        log.event(record)
        log.info(train_line(record, st.max_steps))

    def _evaluate_if_due(self, log: RunLog, on_eval: EvalCallback | None) -> None:
        st = self.state
        if st.step % self.cfg.train.eval_every and st.step != st.max_steps:
            return
        carries = self._gathered_carry()  # every process joins, though only the main one may save "best"
        if not self.world.is_main:
            return
        val = self.final_val = self._evaluate()
        log.event({"kind": "eval", "step": st.step, **{k: v for k, v in val.items() if k != "tokens"},
                   "eval_tokens": val["tokens"], "tokens": st.tokens, "flops": st.flops, "time_s": st.train_time_s})
        log.info(eval_line(st.step, val))
        better = self._better(val)
        st.best_val_loss = min(st.best_val_loss, val["loss"])
        st.evals_since_best = 0 if better else st.evals_since_best + 1
        if better:
            self._save("best", carries)
        if self._patience_spent() and st.step < st.max_steps:
            log.info(f"early stop at step {st.step}: no better checkpoint in {st.evals_since_best} evaluations")
        if on_eval is not None:
            on_eval(st.step, val)

    def _better(self, val: dict[str, float]) -> bool:
        """Whether this evaluation makes a better `best` checkpoint: a lower val loss, or for reasoning
        tasks a higher val exact match (the lower loss breaking ties), as the field picks checkpoints."""
        st = self.state
        if "exact_match" not in val:
            return val["loss"] < st.best_val_loss
        if (val["exact_match"], -val["loss"]) <= (st.best_val_exact, -st.best_val_exact_loss):
            return False
        st.best_val_exact, st.best_val_exact_loss = val["exact_match"], val["loss"]
        return True

    def _patience_spent(self) -> bool:
        """Whether train.early_stop_patience evaluations passed without a better checkpoint, as this
        process knows it (only the main one evaluates: `_agreed` makes it every process's word)."""
        patience = self.cfg.train.early_stop_patience
        return bool(patience) and self.state.evals_since_best >= patience

    def _agreed(self, *flags: bool) -> list[bool]:
        """Each flag, true where any process raised it: under torchrun one collective a step, so
        every process stops at the same step (on a signal, or when patience is spent)."""
        if not self.world.active:
            return list(flags)
        raised = torch.tensor([float(flag) for flag in flags], device=self.engine.device)
        return [bool(v) for v in all_reduce(raised, self.world, mean=False).tolist()]

    def _save_if_due(self) -> None:
        every = self.cfg.train.save_every
        if every and self.state.step % every == 0:
            self._save(f"step_{self.state.step}", self._gathered_carry())

    def _interrupt(self, log: RunLog, signum: int) -> None:
        """Checkpoint the step just finished (unless save_every just did), then stop."""
        name = f"step_{self.state.step}"
        if not (self.run_dir / "checkpoints" / name).is_dir():
            self._save(name, self._gathered_carry())
        message = (f"{signal.Signals(signum).name}: stopped at step {self.state.step} of {self.state.max_steps} "
                   f"after writing checkpoint {name}; `reasonlab train --resume {self.run_dir}` continues the run")
        log.info(f"interrupted by {message}")
        raise Interrupted(message, signum)

    def _pause(self, log: RunLog) -> None:
        """Checkpoint the step a run was asked to stop at (unless save_every just did)."""
        name = f"step_{self.state.step}"
        if not (self.run_dir / "checkpoints" / name).is_dir():
            self._save(name, self._gathered_carry())
        log.info(f"paused at step {self.state.step} of {self.state.max_steps} with checkpoint {name}")

    def _finish(self) -> None:
        if self.world.is_main and self.final_val is None:  # resumed at an already finished step count
            self.final_val = self._evaluate()
        self._save("final", self._gathered_carry())

    def _evaluate(self) -> dict[str, float]:
        e = self.engine
        with e.averaged():
            return self.data.evaluate(e.model, self.cfg, e.device, e.autocast)

    def _gathered_carry(self) -> list[dict[str, torch.Tensor]] | None:
        """Every process's carried rows and state, in rank order (a collective: all processes call it)."""
        carry = self.engine.carry
        return None if carry is None else gather(carry.tensors(), self.world)

    def _save(self, name: str, carries: list[dict[str, torch.Tensor]] | None) -> None:
        self.state.wall_time_s = time.perf_counter() - self._wall_start
        if not self.world.is_main:
            return
        self.state.sampler = self.engine.sampler.state_dict()
        e = self.engine
        save_checkpoint(self.run_dir / "checkpoints" / name, e.model, e.optimizer, self.state, self.cfg,
                        self.data.tokenizer, averaged=e.ema.state_dict() if e.ema is not None else None,
                        carries=carries)

    def _write_summary(self) -> dict:
        st, val = self.state, self.final_val
        summary = {
            "arch": self.cfg.model.arch,
            "steps": st.step,
            "best_val_loss": st.best_val_loss,
            "final_val": {k: v for k, v in val.items() if k != "tokens"},
            "total_time_s": st.wall_time_s,
            "train_time_s": st.train_time_s,
            "steps_per_s": st.step / st.train_time_s,
            "tokens_per_s": st.tokens / st.train_time_s,
            "tokens": st.tokens,
            "flops": st.flops,
            "flops_per_token": st.flops / st.tokens,
            "params": {k: v for k, v in param_counts(self.cfg).items() if k in ("total", "active")},
            "device": str(self.engine.device),
            "precision": self.engine.precision,
        }
        if self.cfg.train.ema_decay > 0:
            summary["ema_decay"] = self.cfg.train.ema_decay  # final_val and best_val_loss are the EMA weights'
        atomic_write_json(self.run_dir / "summary.json", summary)
        if self.cfg.train.curves:
            events = read_metrics(self.run_dir / "metrics.jsonl")
            plot_run_curves(events, self.run_dir / "curves.png", title=self.run_dir.name)
        return summary


LOCK = ".lock"  # held by the one process that writes the run


def checkpoints_note(run_dir: Path) -> str:
    """What a stopped run leaves to resume from, in words."""
    latest = latest_checkpoint(run_dir)
    if latest is None:
        return "no checkpoint was written: --resume starts the run again from step 0"
    return f"its latest checkpoint, {latest.name} (step {read_state(latest).step}), is unchanged"


@contextlib.contextmanager
def run_lock(run_dir: Path, world: World) -> Iterator[None]:
    """One writer per run: a second `train` or `--resume` of it is refused while this one runs. The
    lock is the operating system's, so a killed process's lock is free for the next one."""
    if not world.is_main:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{run_dir} is being trained by another reasonlab process: wait for it, or stop it") from None
    try:
        yield
    finally:
        lock.release()


def _check_fresh_run_dir(run_dir: Path) -> None:
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UserError(f"{run_dir} already holds files: train into a new directory, or resume the run in it")


def _prepare_data(cfg: Config, world: World) -> TrainingData:
    """The main process builds the token cache; the others read it once it is there."""
    if world.is_main:
        data = prepare_data(cfg)
    barrier(world)
    if not world.is_main:
        data = prepare_data(cfg)
    return data


def train(cfg: Config, out: str | Path, quiet: bool = False, on_eval: EvalCallback | None = None,
          stop_at: int | None = None) -> Path:
    """Start a new run in `out` (which must be empty or absent); return the run directory. `stop_at`
    pauses it at that step with a checkpoint (`Trainer.run`)."""
    run_dir = Path(out)
    check_runtime(cfg.train)
    world = init_world(resolve_device(cfg.train.device).type)
    try:
        _check_fresh_run_dir(run_dir)
        require_trackers(cfg.train.loggers)
        barrier(world)
        data = _prepare_data(cfg, world)  # bad data is refused before the run directory is made
        cfg = data.adjust_config(cfg)
        with run_lock(run_dir, world):
            _train_fresh(cfg, data, run_dir, world, quiet, on_eval, stop_at)
    finally:
        shutdown(world)
    return run_dir


def _train_fresh(cfg: Config, data: TrainingData, run_dir: Path, world: World, quiet: bool,
                 on_eval: EvalCallback | None = None, stop_at: int | None = None) -> None:
    trainer = Trainer(cfg, run_dir, data, world, quiet)
    if world.is_main:
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    trainer.run(on_eval, stop_at)
    barrier(world)  # the others wait for the main process's final writes before leaving the group
    trainer.engine.release_process_group()


def resume(run_dir: str | Path, max_steps: int | None = None, quiet: bool = False,
           stop_at: int | None = None) -> Path:
    """Continue a killed run from its latest checkpoint, or extend a finished one to `max_steps`;
    `stop_at` pauses it again at that step (`Trainer.run`)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"no run to resume in {run_dir} (no config.yaml)")
    if max_steps is not None and max_steps < 1:
        raise UserError(f"max_steps must be >= 1, got {max_steps}")
    stored = read_config(run_dir)
    require_trackers(stored.train.loggers)
    check_runtime(stored.train)
    world = init_world(resolve_device(stored.train.device).type)
    try:
        with run_lock(run_dir, world):
            if world.is_main:
                remove_checkpoint_litter(run_dir)
            barrier(world)
            checkpoint = latest_checkpoint(run_dir)
            if checkpoint is None:  # killed before its first checkpoint: the run starts again
                cfg = read_config(run_dir)
                if max_steps is not None:
                    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=max_steps))
                if world.is_main:
                    for name in ("metrics.jsonl", "train.log"):
                        (run_dir / name).unlink(missing_ok=True)
                data = _prepare_data(cfg, world)
                _train_fresh(data.adjust_config(cfg), data, run_dir, world, quiet, stop_at=stop_at)
            else:
                _resume_from(checkpoint, run_dir, world, max_steps, quiet, stop_at)
    finally:
        shutdown(world)
    return run_dir


def _resume_from(checkpoint: Path, run_dir: Path, world: World, max_steps: int | None, quiet: bool,
                 stop_at: int | None = None) -> None:
    cfg = read_config(checkpoint)
    if max_steps is None:  # the run's own config holds the latest target, also of an extension killed midway
        max_steps = read_config(run_dir).train.max_steps
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=max_steps))
    data = _prepare_data(cfg, world)
    if data.tokenizer.backend.to_str() != Tokenizer.load(resolve_dir(checkpoint)).backend.to_str():
        raise UserError(f"the data of {run_dir} has changed since its checkpoint: its tokenizer no longer matches")
    if data.adjust_config(cfg) != cfg:
        raise UserError(f"the data of {run_dir} has changed since its checkpoint: "
                        "it no longer fits the stored model")
    trainer = Trainer(cfg, run_dir, data, world, quiet)
    trainer.restore(checkpoint)
    if cfg.train.max_steps < trainer.state.step:
        raise UserError(f"max_steps {cfg.train.max_steps} is below the checkpoint's step {trainer.state.step}")
    barrier(world)  # everyone has read the checkpoint before the main process rewrites the logs
    if world.is_main:
        trainer.already_logged = logged_steps(read_metrics(run_dir / "metrics.jsonl"))
        truncate_metrics(run_dir / "metrics.jsonl", trainer.state.step)
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    trainer.run(stop_at=stop_at)
    barrier(world)
    trainer.engine.release_process_group()

