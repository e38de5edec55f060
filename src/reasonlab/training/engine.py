"""The step engine: one optimizer update on the next batch, with no run directory around it.

`Engine` holds what a step needs: the model (placed on its device, wrapped in
DistributedDataParallel under torchrun, compiled when asked), AdamW and its schedule, this
process's batch sampler and the autocast context. `train_step(step)` is forward -> backward ->
clip -> AdamW at the schedule's learning rate for that step. The run lifecycle
(`trainer.Trainer`), `reasonlab bench` and `compare`'s step-time probe all drive it.

Where later features plug in:
- micro-batches (gradient accumulation): `_forward_backward`, which `train_step` would call once
  per micro-batch before the one clip and update;
- EMA weights: `_update`, right after `optimizer.step()`; evaluation and checkpoints read
  `Engine.model`, the place to swap in the averaged weights;
- trackers: not here. Every logged record passes through `runlog.RunLog.event`.
"""

from __future__ import annotations

import math
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from reasonlab.config import Config
from reasonlab.distributed import World, all_reduce
from reasonlab.errors import UserError
from reasonlab.model import build_model
from reasonlab.model.outputs import StepLoss
from reasonlab.runtime import runtime, synchronize
from reasonlab.training.data import Sampler, TrainingData
from reasonlab.training.optim import build_optimizer, lr_at


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


class Engine:
    """Model, optimizer and sampler of one process, and the step that updates them.

    `cfg` must already be adjusted to the data (`data.adjust_config`). `world` is the torchrun
    process group this process has joined (`distributed.init_world`); one process by default.
    """

    def __init__(self, cfg: Config, data: TrainingData, world: World | None = None):
        self.cfg = cfg
        self.world = world or World()
        self.device, self.precision, self.autocast = runtime(cfg.train)
        if self.world.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.world.local_rank)
        if cfg.train.batch_size % self.world.size:
            raise UserError(f"train.batch_size ({cfg.train.batch_size}) is the global batch and must divide evenly "
                            f"over {self.world.size} processes")
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg).to(self.device)
        self.model.configure_memory(cfg.train.activation_checkpointing, cfg.train.loss_chunk_tokens)
        self.optimizer = build_optimizer(self.model, cfg.train, self.device)
        self.sampler: Sampler = data.sampler(cfg, self.world.rank, self.world.size)
        self.train_model = self._wrap(self.model)

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as a training step calls it: in DDP under torchrun, compiled when asked."""
        if self.world.active:
            model = DistributedDataParallel(
                model, device_ids=[self.world.local_rank] if self.device.type == "cuda" else None,
                find_unused_parameters=self.cfg.model.arch == "recursive",  # the halting head idles without ACT
            )
            self.reseed(0)
        self.cuda_graphs = self.cfg.train.cuda_graphs and self.device.type == "cuda"
        if not self.cfg.train.compile:
            return model
        return torch.compile(model, mode="reduce-overhead" if self.cuda_graphs else None)

    def reseed(self, step: int) -> None:
        """Under DDP, dropout and router noise differ between processes (the init does not);
        checkpoints hold the main process's RNG only, so a resumed process reseeds by step."""
        if self.world.active:
            torch.manual_seed((self.cfg.train.seed * 1_000_003 + step) * 1009 + self.world.rank)

    def _forward_backward(self) -> StepLoss:
        """Loss and gradients on the next batch."""
        x, y = (b.to(self.device, non_blocking=True) for b in self.sampler.next_batch())
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are consumed
        with self.autocast():
            out = self.train_model(x, y)
        out.loss.backward()
        return out

    def _update(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def train_step(self, step: int) -> tuple[StepLoss, torch.Tensor]:
        """Update number `step + 1` (0-based `step` sets the learning rate) on the next batch;
        returns the step's losses and the gradient norm before clipping."""
        t = self.cfg.train
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, t)
        out = self._forward_backward()
        loss = all_reduce(out.loss.detach(), self.world)  # every process must agree to stop
        max_norm = t.grad_clip if t.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        # one host sync per step, after backward is queued: checking the loss before backward would
        # leave a GPU idle while the host launches the backward kernels
        if not torch.isfinite(loss + grad_norm):
            raise TrainingDiverged(f"non-finite loss ({loss.item()}) or gradient norm ({grad_norm.item()}) "
                                   f"at step {step + 1}")
        self._update()
        return out, grad_norm

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

    def release_process_group(self) -> None:
        """Drop the DistributedDataParallel wrapper before the process group is destroyed.

        Its reducer holds the group. Were it the group's last holder, freeing it would join
        gloo's worker threads while holding the GIL, and a worker still freeing a finished
        collective's tensors waits for the GIL: the process hung at exit in about one of ten
        two-process CPU runs. Dropped here, the group is left to destroy_process_group.
        """
        self.train_model = self.model

    def timed_steps(self, steps: int, warmup: int) -> tuple[list[float], list[int]]:
        """Seconds and FLOPs of each of `steps` training steps after `warmup` untimed ones, on
        this machine; each step is timed to the end of its work (a host sync on CUDA)."""
        times, flops = [], []
        for i in range(warmup + steps):
            synchronize(self.device)
            tic = time.perf_counter()
            out, _ = self.train_step(i)
            out.loss.item()
            synchronize(self.device)
            if i >= warmup:
                times.append(time.perf_counter() - tic)
                flops.append(out.flops)
        return times, flops
