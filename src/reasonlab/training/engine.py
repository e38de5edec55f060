"""The step engine: one optimizer update on the next batch, with no run directory around it.

`Engine` holds what a step needs: the model (placed on its device, wrapped in
DistributedDataParallel under torchrun, compiled when asked), AdamW and its schedule, this
process's batch sampler and the autocast context. `train_step(step)` is forward -> backward ->
clip -> AdamW at the schedule's learning rate for that step. The run lifecycle
(`trainer.Trainer`), `reasonlab bench` and `compare`'s step-time probe all drive it.

Where later features plug in:
- micro-batches (gradient accumulation, `train.micro_batch_size`): `_forward_backward` runs each
  one's forward and backward before the one clip and update;
- EMA weights (`train.ema_decay` > 0): `WeightAverage`, updated in `_update` right after
  `optimizer.step()`; `Engine.averaged()` swaps them into `Engine.model` for evaluation, and
  `Engine.ema.state_dict()` is what checkpoints save as the inference weights;
- trackers: not here. Every logged record passes through `runlog.RunLog.event`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from reasonlab.config import Config
from reasonlab.distributed import World, all_reduce
from reasonlab.errors import TrainingDiverged, UserError
from reasonlab.model import build_model
from reasonlab.model.outputs import StepLoss
from reasonlab.model.supervision import Carry
from reasonlab.runtime import runtime, synchronize
from reasonlab.training.data import Sampler, TrainingData
from reasonlab.training.optim import build_optimizer, lr_at


class WeightAverage:
    """An exponential moving average (EMA) of a module's parameters, for evaluation and inference.

    After the optimizer update with 0-based index `step`, every shadow moves toward its parameter:

        shadow <- d * shadow + (1 - d) * param,   d = min(decay, (1 + step) / (10 + step))

    starting from the parameters at construction (the initialization). The warm-up of `d` is the
    common one (TensorFlow's ExponentialMovingAverage given num_updates, latent diffusion's LitEma):
    the average's horizon 1 / (1 - d) = (10 + step) / 9 grows with the steps taken, so a short run
    or an early evaluation sees recent weights rather than mostly the random init (a plain 0.999
    still gives the init a weight of 0.999**500 = 0.61 after 500 steps; with the warm-up it is
    below 1e-17). `d` reaches `decay` after 9 / (1 - decay) - 10 steps (8990 for 0.999) and is
    TRM's plain EMA from then on; at TRM's step counts the warm-up's weights then weigh nothing.

    Why not `torch.optim.swa_utils.AveragedModel` with `get_ema_multi_avg_fn`: it has no warm-up
    (its averaging function sees only its own update counter, a tensor); each update reads that
    counter on the host and copies it to the device, a stream sync per step on CUDA next to the
    engine's one; and it deep-copies the module and re-copies its buffers every step where only
    the parameters are averaged. Here the shadows are one tensor per parameter in its dtype (fp32:
    the model's master weights), updated by one `torch._foreach_lerp_` without a host sync. They are kept on
    the unwrapped module, whose parameters DistributedDataParallel and torch.compile share, so
    they need no change under either; under torchrun every process keeps the same average.
    Buffers are not averaged: the average's state dict takes them from the live model.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.model, self.decay = model, decay
        self.params = list(model.parameters())  # tied parameters once
        with torch.no_grad():
            self.shadows = [p.detach().clone() for p in self.params]

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step `step` (0-based)."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        torch._foreach_lerp_(self.shadows, self.params, 1.0 - self.decay_at(step))

    def _shadow_of(self) -> dict[int, torch.Tensor]:
        return {id(p): s for p, s in zip(self.params, self.shadows)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The model's state dict with every parameter's entry replaced by its average."""
        shadow_of = self._shadow_of()
        return {k: shadow_of.get(id(v), v).detach() for k, v in self.model.state_dict(keep_vars=True).items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Shadows from a state dict of the model (as `state_dict` gives); its buffers are ignored."""
        shadow_of = self._shadow_of()
        for key, value in self.model.state_dict(keep_vars=True).items():
            if id(value) in shadow_of:
                if key not in state:
                    raise KeyError(f"averaged weights lack {key}")
                shadow_of[id(value)].copy_(state[key])

    @torch.no_grad()
    def reset(self) -> None:
        """Shadows equal to the parameters now (a resumed run whose checkpoint has no average)."""
        torch._foreach_copy_(self.shadows, self.params)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Within: the model's parameters hold the averages (their storage swapped, nothing copied).

        For evaluation of the unwrapped model between steps; on leaving, every parameter has its own
        storage back, the one DDP, compiled and CUDA-graphed steps were set up with."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    def _swap(self) -> None:
        for i, p in enumerate(self.params):
            p.data, self.shadows[i] = self.shadows[i], p.data


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
        self.ema = WeightAverage(self.model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        self.sampler: Sampler = data.sampler(cfg, self.world.rank, self.world.size)
        self.carry: Carry | None = None  # the rows and state the next step continues (carry_across_steps)
        local_rows = cfg.train.batch_size // self.world.size
        self.micro_batch_rows = cfg.train.micro_batch_size if cfg.train.micro_batch_size < local_rows else 0
        if self.micro_batch_rows and local_rows % self.micro_batch_rows:
            raise UserError(f"train.micro_batch_size ({cfg.train.micro_batch_size}) must divide each process's "
                            f"share of the batch ({local_rows} rows over {self.world.size} processes)")
        self.train_model = self._wrap(self.model)

    def _wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model as a training step calls it: in DDP under torchrun, compiled when asked."""
        self.ddp: DistributedDataParallel | None = None
        if self.world.active:
            model = self.ddp = DistributedDataParallel(
                model, device_ids=[self.world.local_rank] if self.device.type == "cuda" else None,
                # a model beyond its stack (a recursive arm) has parameters a step may leave idle,
                # e.g. a halting head without ACT
                find_unused_parameters=model is not model.core,
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
        """Loss and gradients on the next batch, in micro-batches of `train.micro_batch_size` rows.

        The batch's objective is a mean over token terms (`StepLoss.loss_count`; every position in
        language modelling, the supervised ones of each segment in a task): each micro-batch's
        backward adds its sum of terms, and the gradients are divided by the batch's count before
        the last backward, in which DDP all-reduces them. So the accumulated gradient is the whole
        batch's, whatever share of the tokens each micro-batch holds. Terms that are not token means,
        such as the MoE balance loss, are each micro-batch's own, weighted alike (as in Megatron
        and torchtitan). Counters a forward advances (looped's depth draws) advance once per step:
        every micro-batch of a step runs at the same drawn depth.
        """
        x, y = (b.to(self.device, non_blocking=True) for b in self.sampler.next_batch())
        rows = self.micro_batch_rows or x.shape[0]
        if rows == x.shape[0]:
            out = self._micro_step(x, y, self.carry, sync=True)
            out.loss.backward()
            self.carry = out.carry
            return out
        n = x.shape[0] // rows
        carries = self.carry.split(rows) if self.carry is not None else [None] * n
        rewind_counters = self._counter_rewind()
        outs: list[StepLoss] = []
        for i, (x_i, y_i, carry_i) in enumerate(zip(x.split(rows), y.split(rows), carries)):
            if i:
                rewind_counters()
            out = self._micro_step(x_i, y_i, carry_i, sync=i == n - 1)
            outs.append(out)
            if i < n - 1:
                (out.loss * out.loss_count).backward()
        total = sum(o.loss_count for o in outs).clamp(min=1)
        with torch.no_grad():
            torch._foreach_div_([p.grad for p in self.model.parameters() if p.grad is not None], total)
        (out.loss * (out.loss_count / total)).backward()
        self.carry = Carry.cat([o.carry for o in outs]) if outs[0].carry is not None else None
        lm_total = sum(o.lm_count for o in outs).clamp(min=1)

        def mean(values: list[torch.Tensor], counts: list[torch.Tensor], count: torch.Tensor) -> torch.Tensor:
            return sum(v.detach() * c for v, c in zip(values, counts)) / count

        lm_counts = [o.lm_count for o in outs]
        return StepLoss(
            loss=mean([o.loss for o in outs], [o.loss_count for o in outs], total),
            lm_loss=mean([o.lm_loss for o in outs], lm_counts, lm_total),
            flops=sum(o.flops for o in outs),
            metrics={k: mean([o.metrics[k] for o in outs], lm_counts, lm_total) for k in outs[0].metrics},
            loss_count=total, lm_count=lm_total,
        )

    def _micro_step(self, x: torch.Tensor, y: torch.Tensor, carry: Carry | None, sync: bool) -> StepLoss:
        """The forward of one micro-batch; under DDP, gradients are all-reduced only in the
        backward of the one with `sync` (the step's last)."""
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are consumed
        no_sync = self.ddp.no_sync() if self.ddp is not None and not sync else contextlib.nullcontext()
        with no_sync, self.autocast():
            # the backward runs outside, but DDP decides at forward whether the backward all-reduces
            return self.train_model(x, y, carry=carry)

    def _update(self, step: int) -> None:
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(step)
        self.optimizer.zero_grad(set_to_none=True)

    def averaged(self) -> AbstractContextManager:
        """Within: `self.model` holds the EMA weights when `train.ema_decay` > 0, else its own."""
        return self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()

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
        self._update(step)
        return out, grad_norm

    def compile_warm_up(self) -> float:
        """Compile before the clock starts: one forward and backward on the next batch, then
        weights, gradients, sampler and random state as they were. Compilation is a one-off
        cost; charged to the first step it would skew tokens/s and equal-time comparisons
        against whichever arm compiles longer. Returns the seconds it took."""
        tic = time.perf_counter()
        sampler_state, carry = self.sampler.state_dict(), self.carry
        rewind_counters = self._counter_rewind()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            self._forward_backward()
        self.optimizer.zero_grad(set_to_none=True)
        self.sampler.load_state_dict(sampler_state)
        self.carry = carry
        rewind_counters()
        return time.perf_counter() - tic

    def _counter_rewind(self) -> Callable[[], None]:
        """A function that puts the model's counters back as they are now: the integer buffers a
        forward advances (looped's depth draws). Float buffers (rotary tables, fixed initial states)
        no forward changes, so they are not copied."""
        saved = [(b, b.clone()) for b in self.model.buffers() if not b.is_floating_point()]

        @torch.no_grad()
        def rewind() -> None:
            for buffer, before in saved:
                buffer.copy_(before)

        return rewind

    def release_process_group(self) -> None:
        """Drop the DistributedDataParallel wrapper before the process group is destroyed.

        Its reducer holds the group. Were it the group's last holder, freeing it would join
        gloo's worker threads while holding the GIL, and a worker still freeing a finished
        collective's tensors waits for the GIL: the process hung at exit in about one of ten
        two-process CPU runs. Dropped here, the group is left to destroy_process_group.
        """
        self.train_model, self.ddp = self.model, None

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
