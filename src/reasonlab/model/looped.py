"""model.arch looped: a looped (Universal) transformer over the shared block stack.

One state s per position, starting from a learned vector; the block stack f is applied
`depth` times with the token embedding x re-injected at every pass,

    s <- f(s + x),

so s is one residual stream through `depth` x n_layers pre-norm blocks with tied weights (the
looped transformer with input injection). An RMSNorm on each pass's input, as hrm and trm have,
held the model near the unigram loss at the CPU demo scale (val loss 6.52 against 6.24 for this
form after 150 steps at depth 4, lr 2e-3), so the stream stays unnormalised between passes, as in
a deep pre-norm stack.

Two options, each from the literature:

- Per-token ACT (Graves 2016; Dehghani et al. 2019, Universal Transformers): after each pass a
  halting unit gives p = sigmoid(w . s + b); a token halts at the first pass where its summed p
  would reach `act_threshold` (or at the last pass) and spends its remainder R = 1 - (sum of its
  earlier p) there. Its output is the p-weighted mean of its states, its state stops changing
  once it halts, and the ponder cost N + R (passes plus remainder) joins the loss with weight
  `ponder_cost`. The loop stops early once every token has halted.
- Recurrent-depth training (Geiping et al. 2025, Huginn): each training step draws its depth
  D = 1 + Poisson(lambda), lambda log-normal with sigma `depth_sigma`, so that E[D] =
  `mean_depth` (Huginn's 1 + Poisson with E[lambda] = r has mean r + 1); gradient flows
  through only the last `backprop_depth` passes (truncated backpropagation), the earlier ones
  run under no_grad. At test time any depth runs.

The LM head and the recursion core's halting head read norm(output); segments (deep
supervision) and halting across segments are the recursion core's (model/recursion.py). The
looped presets run one segment without segment halting, so the depth is the whole recursion.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.stats import poisson
from torch import nn

from reasonlab.config import LoopedConfig, ModelConfig, RecursionConfig
from reasonlab.model.outputs import State
from reasonlab.model.recursion import Passes, RecursiveLM, Segment


def _lognormal_mu(mean_depth: float, sigma: float) -> float:
    """The log-normal's mu that makes E[lambda] = mean_depth - 1."""
    return math.log(mean_depth - 1) - sigma ** 2 / 2


def draw_depth(lp: LoopedConfig, generator: torch.Generator) -> int:
    """One training step's depth D = 1 + Poisson(lambda), lambda log-normal with E[D] = mean_depth."""
    if lp.mean_depth <= 1:
        return 1
    normal = torch.randn(1, generator=generator).item()
    rate = torch.tensor([math.exp(_lognormal_mu(lp.mean_depth, lp.depth_sigma) + lp.depth_sigma * normal)])
    return 1 + int(torch.poisson(rate, generator=generator).item())


def expected_passes(lp: LoopedConfig) -> tuple[float, float]:
    """Expected passes per segment of a training step, (with gradient, without).

    With a fixed depth D and backprop_depth k: min(k, D) and the rest. With a drawn depth, the
    same expectations over D = 1 + Poisson(lambda), lambda log-normal, by Gauss-Hermite
    quadrature over log lambda: E[min(k, D)] = sum_{i < k} P(D > i).
    """
    k = lp.backprop_depth
    if lp.mean_depth == 0:
        grad = min(k, lp.depth) if k else lp.depth
        return float(grad), float(lp.depth - grad)
    if not k:
        return float(lp.mean_depth), 0.0
    if lp.mean_depth <= 1:
        return 1.0, 0.0
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    rates = np.exp(_lognormal_mu(lp.mean_depth, lp.depth_sigma) + lp.depth_sigma * nodes)
    # P(D > i) = P(Poisson >= i) = sf(i - 1); the i = 0 term is 1
    at_least = [np.ones_like(rates)] + [poisson.sf(i - 1, rates) for i in range(1, k)]
    grad = float(np.sum(weights * np.sum(at_least, axis=0)) / np.sqrt(2 * np.pi))
    return grad, lp.mean_depth - grad


class Looped(RecursiveLM):
    def __init__(self, model: ModelConfig, recursion: RecursionConfig, looped: LoopedConfig, seed: int = 0):
        super().__init__(model, recursion, looped, seed)
        self.looped = lp = looped
        self.penalty_weight = lp.ponder_cost
        d = model.d_model
        self.s_init = self._init_state_vector()
        # how many depths training has drawn: the draws follow (the run's seed, count), so every DDP process
        # trains at the same depth and a resumed run (the count is in the checkpoint) continues the sequence
        self.register_buffer("depth_draws", torch.zeros((), dtype=torch.long))
        self.act_head = None
        if lp.act:
            self.act_head = nn.Linear(d, 1)
            nn.init.zeros_(self.act_head.weight)
            nn.init.constant_(self.act_head.bias, 1.0)  # Universal Transformers' init: halt after about two passes

    @classmethod
    def passes(cls, looped: LoopedConfig) -> tuple[float, float]:
        return expected_passes(looped)

    @classmethod
    def pass_params(cls, model: ModelConfig, looped: LoopedConfig) -> int:
        return model.d_model if looped.act else 0  # the ACT halting unit

    @classmethod
    def own_params(cls, model: ModelConfig, looped: LoopedConfig) -> int:
        d = model.d_model
        return super().own_params(model, looped) + d + ((d + 1) if looped.act else 0)  # init state, ACT unit

    @property
    def trained_depth(self) -> int:
        return round(self.looped.mean_depth) if self.looped.mean_depth else self.looped.depth

    def train_depth(self) -> int | None:
        if not self.looped.mean_depth:
            return None
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.depth_draws))
        self.depth_draws += 1
        return draw_depth(self.looped, generator)

    def initial_state(self, x_BTD: torch.Tensor) -> State:
        return (self.s_init.to(x_BTD.dtype).expand_as(x_BTD),)

    def readout(self, z: State) -> torch.Tensor:
        return self.core.norm(z[-1])  # the ACT output where there is one, else the state

    def segment(self, z: State, x_BTD: torch.Tensor, f: Passes, depth: int | None) -> Segment:
        """`depth` passes (the trained depth by default); gradient through the last backprop_depth."""
        depth = self.trained_depth if depth is None else depth
        k = self.looped.backprop_depth
        free = depth - min(k, depth) if k else 0
        s = z[0]
        act = self.act_head is not None
        if act:
            running_BT = torch.ones(x_BTD.shape[:2], dtype=torch.bool, device=x_BTD.device)
            summed_BT = x_BTD.new_zeros(x_BTD.shape[:2], dtype=torch.float32)
            passes_BT = torch.zeros_like(summed_BT)
            remainder_BT = torch.zeros_like(summed_BT)
            out_BTD = torch.zeros_like(s)
        for i in range(depth):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i >= free):
                s_next = f(s + x_BTD)
                if not act:
                    s = s_next
                    continue
                p_BT = torch.sigmoid(self.act_head(s_next).squeeze(-1).float())
                halts_BT = running_BT & ((summed_BT + p_BT >= self.looped.act_threshold) | (i == depth - 1))
                weight_BT = torch.where(halts_BT, 1 - summed_BT, torch.where(running_BT, p_BT, 0.0))
                out_BTD = out_BTD + weight_BT.unsqueeze(-1).to(s.dtype) * s_next
                remainder_BT = torch.where(halts_BT, 1 - summed_BT, remainder_BT)
                summed_BT = summed_BT + torch.where(running_BT & ~halts_BT, p_BT, 0.0)
                passes_BT = passes_BT + running_BT.float()
                s = torch.where(running_BT.unsqueeze(-1), s_next, s)  # a halted token's state stops changing
                running_BT = running_BT & ~halts_BT
            if act and i < depth - 1 and not self.every_pass and not running_BT.any():  # a host sync: all halted
                break
        if not act:
            return Segment((s,))
        return Segment((s, out_BTD), passes_BT + remainder_BT)
