"""The training loop: data -> model -> loss -> AdamW, with logging, evaluation and checkpoints.

A run directory holds config.yaml, metrics.jsonl, train.log, checkpoints/{best,final,step_N},
curves.png and summary.json. `train` starts a run, `resume` continues or extends one; with the
same seed on CPU a resumed run reproduces the uninterrupted one exactly.

Under torchrun the model is wrapped in DistributedDataParallel; each process takes its slice of
the configured (global) batch, and only the main process evaluates and writes files.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from reasonlab.config import Config
from reasonlab.data.tokenizer import Tokenizer
from reasonlab.distributed import World, all_reduce, barrier, init_world, shutdown
from reasonlab.errors import UserError
from reasonlab.io import atomic_write_json, atomic_write_text, resolve_dir
from reasonlab.model import build_model, param_counts
from reasonlab.model.outputs import StepLoss
from reasonlab.report.plots import plot_run_curves
from reasonlab.runtime import keep_freed_memory, resolve_device, runtime
from reasonlab.training.checkpoint import (
    TrainingState,
    latest_checkpoint,
    load_training_state,
    read_config,
    save_checkpoint,
)
from reasonlab.training.data import TrainingData, prepare_data
from reasonlab.training.optim import build_optimizer, lr_at
from reasonlab.training.runlog import RunLog, read_metrics, truncate_metrics

EvalCallback = Callable[[int, dict], None]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, data: TrainingData, quiet: bool = False):
        """`cfg` must already be fitted to the data (`data.fit`)."""
        self.cfg, self.run_dir, self.data, self.quiet = cfg, run_dir, data, quiet
        self.device, self.precision, self.autocast = runtime(cfg.train)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.world = init_world(self.device.type)
        if self.world.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.world.local_rank)
        if cfg.train.batch_size % self.world.size:
            raise UserError(f"train.batch_size ({cfg.train.batch_size}) is the global batch and must divide evenly "
                            f"over {self.world.size} processes")
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg).to(self.device)
        self.model.configure_memory(cfg.train.activation_checkpointing, cfg.train.loss_chunk_tokens)
        self.optimizer = build_optimizer(self.model, cfg.train, self.device)
        self.sampler = data.sampler(cfg, self.world.rank, self.world.size)
        train_model: torch.nn.Module = self.model
        if self.world.active:
            train_model = DistributedDataParallel(
                self.model, device_ids=[self.world.local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.model.arch == "recursive",  # the halting head idles without ACT
            )
            self._reseed_rank(0)
        self.cuda_graphs = cfg.train.cuda_graphs and self.device.type == "cuda"
        mode = "reduce-overhead" if self.cuda_graphs else None
        self.loss_fn = torch.compile(train_model, mode=mode) if cfg.train.compile else train_model
        self.state = TrainingState(
            step=0, max_steps=cfg.train.max_steps, sampler=self.sampler.state_dict(),
            best_val_loss=math.inf, tokens=0, flops=0, train_time_s=0.0, wall_time_s=0.0, log_window={},
        )

    def _reseed_rank(self, step: int) -> None:
        """Dropout and router noise differ between processes (the init above does not)."""
        torch.manual_seed((self.cfg.train.seed * 1_000_003 + step) * 1009 + self.world.rank)

    def restore(self, checkpoint: Path) -> None:
        max_steps = self.state.max_steps
        self.state = load_training_state(checkpoint, self.model, self.optimizer)
        self.state.max_steps = max_steps
        self.sampler.load_state_dict(self.state.sampler)
        if self.world.active:  # checkpoints hold the main process's RNG only
            self._reseed_rank(self.state.step)

    def _save(self, name: str) -> None:
        if not self.world.is_main:
            return
        self.state.sampler = self.sampler.state_dict()
        save_checkpoint(self.run_dir / "checkpoints" / name, self.model, self.optimizer, self.state, self.cfg, self.data.tokenizer)

    def _evaluate(self) -> dict[str, float]:
        return self.data.evaluate(self.model, self.cfg, self.device, self.autocast)

    def _forward_backward(self) -> StepLoss:
        """Loss and gradients on the next batch."""
        x, y = (b.to(self.device, non_blocking=True) for b in self.sampler.next_batch())
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are consumed
        with self.autocast():
            out = self.loss_fn(x, y)
        out.loss.backward()
        return out

    def release_process_group(self) -> None:
        """Drop the DistributedDataParallel wrapper before the process group is destroyed.

        Its reducer holds the group. Were it the group's last holder, freeing it would join
        gloo's worker threads while holding the GIL, and a worker still freeing a finished
        collective's tensors waits for the GIL: the process hung at exit in about one of ten
        two-process CPU runs. Dropped here, the group is left to destroy_process_group.
        """
        self.loss_fn = self.model

    def compile_warm_up(self) -> float:
        """Compile before the clock starts: one forward and backward on the next batch, then
        weights, gradients, sampler and random state as they were. Compilation is a one-off
        cost; charged to the first step it would skew tokens/s and equal-time comparisons
        against whichever arm compiles longer. Returns the seconds it took."""
        tic = time.perf_counter()
        sampler_state = self.sampler.state_dict()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            self._forward_backward()
        self.optimizer.zero_grad(set_to_none=True)
        self.sampler.load_state_dict(sampler_state)
        return time.perf_counter() - tic

    def train_step(self) -> tuple[StepLoss, torch.Tensor]:
        """One optimizer update on the next batch; returns the step's losses and the gradient norm."""
        t = self.cfg.train
        lr = lr_at(self.state.step, t)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        out = self._forward_backward()
        loss = all_reduce(out.loss.detach(), self.world)  # every process must agree to stop
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
        # one host sync per step, after backward is queued: checking the loss before backward would
        # leave a GPU idle while the host launches the backward kernels
        if not torch.isfinite(loss + grad_norm):
            raise TrainingDiverged(f"non-finite loss ({loss.item()}) or gradient norm ({grad_norm.item()}) "
                                   f"at step {self.state.step + 1}")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return out, grad_norm

    def run(self, on_eval: EvalCallback | None = None) -> dict:
        """Train to max_steps; `on_eval(step, val_metrics)` runs after each evaluation and may raise to stop."""
        t, st = self.cfg.train, self.state
        main = self.world.is_main
        log = RunLog(self.run_dir, st.max_steps, st.step, self.quiet, enabled=main)
        tokens_per_step = t.batch_size * self.cfg.model.seq_len
        wall_start = time.perf_counter() - st.wall_time_s
        final_val: dict[str, float] | None = None
        sums = st.log_window
        try:
            if st.step == 0:
                log.info(f"training {self.cfg.model.arch}: {param_counts(self.cfg)['total']:,} params, "
                         f"{st.max_steps} steps on {self.device} ({self.precision})")
            if t.compile and st.step < st.max_steps:
                seconds = self.compile_warm_up()
                log.info(f"compiled in {seconds:.1f} s (not counted as training time)")
            while st.step < st.max_steps:
                tic = time.perf_counter()
                out, grad_norm = self.train_step()
                names = ["loss", *out.metrics, "grad_norm"]
                logged = torch.stack([out.lm_loss, *out.metrics.values(), grad_norm]).detach().float()
                values = dict(zip(names, all_reduce(logged, self.world).tolist()))  # one host sync
                flops = int(all_reduce(torch.tensor(out.flops, dtype=torch.float64, device=self.device), self.world, mean=False).item())
                dt = time.perf_counter() - tic
                st.step += 1
                st.tokens += tokens_per_step
                st.flops += flops
                st.train_time_s += dt
                for key, value in (*values.items(), ("time", dt), ("n", 1)):
                    sums[key] = sums.get(key, 0.0) + value
                log.progress(1, loss=f"{values['loss']:.3f}", tok_s=f"{tokens_per_step / dt:,.0f}")
                if st.step % t.log_every == 0 or st.step == st.max_steps:
                    n = sums.pop("n")
                    elapsed = sums.pop("time")
                    record = {
                        "kind": "train", "step": st.step, **{k: v / n for k, v in sums.items()}, "lr": lr_at(st.step - 1, t),
                        "tokens_per_s": n * tokens_per_step / elapsed, "tokens": st.tokens, "flops": st.flops,
                        "time_s": st.train_time_s,
                    }
                    log.event(record)
                    extra = f" segments {record['segments']:.2f}" if "segments" in record else ""
                    log.info(f"step {st.step}/{st.max_steps} loss {record['loss']:.4f} lr {record['lr']:.2e} "
                             f"grad_norm {record['grad_norm']:.3f} tok/s {record['tokens_per_s']:,.0f}{extra}")
                    sums.clear()
                if main and (st.step % t.eval_every == 0 or st.step == st.max_steps):
                    final_val = self._evaluate()
                    log.event({"kind": "eval", "step": st.step, **{k: v for k, v in final_val.items() if k != "tokens"},
                               "eval_tokens": final_val["tokens"], "tokens": st.tokens, "flops": st.flops, "time_s": st.train_time_s})
                    exact = f" exact {final_val['exact_match']:.2%}" if "exact_match" in final_val else ""
                    log.info(f"eval step {st.step}: val loss {final_val['loss']:.4f} ppl {final_val['perplexity']:.1f} "
                             f"acc {final_val['accuracy']:.2%}{exact}")
                    if final_val["loss"] < st.best_val_loss:
                        st.best_val_loss = final_val["loss"]
                        st.wall_time_s = time.perf_counter() - wall_start
                        self._save("best")
                    if on_eval is not None:
                        on_eval(st.step, final_val)
                if t.save_every and st.step % t.save_every == 0:
                    st.wall_time_s = time.perf_counter() - wall_start
                    self._save(f"step_{st.step}")
            if main and final_val is None:  # resumed at an already finished step count
                final_val = self._evaluate()
            st.wall_time_s = time.perf_counter() - wall_start
            self._save("final")
        except TrainingDiverged as exc:
            log.event({"kind": "diverged", "step": st.step + 1, "message": str(exc)})
            log.info(f"stopped: {exc}")
            raise
        finally:
            log.close()
        if not main:
            return {}
        summary = self._summary(final_val)
        atomic_write_json(self.run_dir / "summary.json", summary)
        plot_run_curves(read_metrics(self.run_dir / "metrics.jsonl"), self.run_dir / "curves.png", title=self.run_dir.name)
        return summary

    def _summary(self, final_val: dict[str, float]) -> dict:
        st = self.state
        return {
            "arch": self.cfg.model.arch,
            "steps": st.step,
            "best_val_loss": st.best_val_loss,
            "final_val": {k: v for k, v in final_val.items() if k != "tokens"},
            "total_time_s": st.wall_time_s,
            "train_time_s": st.train_time_s,
            "steps_per_s": st.step / st.train_time_s,
            "tokens_per_s": st.tokens / st.train_time_s,
            "tokens": st.tokens,
            "flops": st.flops,
            "flops_per_token": st.flops / st.tokens,
            "params": {k: v for k, v in param_counts(self.cfg).items() if k in ("total", "active")},
            "device": str(self.device),
            "precision": self.precision,
        }


def _check_fresh_run_dir(run_dir: Path) -> None:
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UserError(f"{run_dir} already holds files; pick another --out, or continue it with --resume {run_dir}")


def _prepare_data(cfg: Config, world: World) -> TrainingData:
    """The main process builds the token cache; the others read it once it is there."""
    if world.is_main:
        data = prepare_data(cfg)
    barrier(world)
    if not world.is_main:
        data = prepare_data(cfg)
    return data


def train(cfg: Config, out: str | Path, quiet: bool = False, on_eval: EvalCallback | None = None) -> Path:
    """Start a new run in `out` (which must be empty or absent); return the run directory."""
    run_dir = Path(out)
    world = init_world(resolve_device(cfg.train.device).type)
    try:
        _check_fresh_run_dir(run_dir)
        barrier(world)
        data = _prepare_data(cfg, world)
        cfg = data.fit(cfg)
        trainer = Trainer(cfg, run_dir, data, quiet)
        if world.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        trainer.run(on_eval)
        barrier(world)  # the others wait for the main process's final writes before leaving the group
        trainer.release_process_group()
    finally:
        shutdown(world)
    return run_dir


def resume(run_dir: str | Path, max_steps: int | None = None, quiet: bool = False) -> Path:
    """Continue a killed run from its latest checkpoint, or extend a finished one to `max_steps`."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"no run to resume in {run_dir} (no config.yaml)")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise UserError(f"{run_dir} has no checkpoint to resume from")
    cfg = read_config(checkpoint)
    if max_steps is None:  # the run's own config holds the latest target, also of an extension killed midway
        max_steps = read_config(run_dir).train.max_steps
    if max_steps < 1:
        raise UserError(f"--max-steps must be >= 1, got {max_steps}")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_steps=max_steps))
    world = init_world(resolve_device(cfg.train.device).type)
    try:
        data = _prepare_data(cfg, world)
        if data.tokenizer.backend.to_str() != Tokenizer.load(resolve_dir(checkpoint)).backend.to_str():
            raise UserError(f"the data of {run_dir} has changed since its checkpoint: its tokenizer no longer matches")
        if data.fit(cfg) != cfg:
            raise UserError(f"the data of {run_dir} has changed since its checkpoint: it no longer fits the stored model")
        trainer = Trainer(cfg, run_dir, data, quiet)
        trainer.restore(checkpoint)
        if cfg.train.max_steps < trainer.state.step:
            raise UserError(f"--max-steps {cfg.train.max_steps} is below the checkpoint's step {trainer.state.step}")
        barrier(world)  # everyone has read the checkpoint before the main process rewrites the logs
        if world.is_main:
            truncate_metrics(run_dir / "metrics.jsonl", trainer.state.step)
            atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        trainer.run()
        barrier(world)
        trainer.release_process_group()
    finally:
        shutdown(world)
    return run_dir
