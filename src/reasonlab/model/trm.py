"""model.arch trm: TRM's recipe (Jolicoeur-Martineau 2025, "Less is More: Recursive Reasoning
with Tiny Networks") over the shared block stack.

One network f (the block stack) and two states per position: a latent z and an answer y, both
starting from fixed random vectors. One recursion makes `latent_steps` latent updates and then one
answer update,

    z <- f(norm_z(x + y + z))      (latent_steps times)
    y <- f(norm_y(y + z))

and one segment is `recursions` (T) recursions: the first T-1 under no_grad, the last with full
backpropagation through all of its passes (no one-step gradient approximation, unlike HRM).
`trm.grad: one_step` is that approximation, the ablation TRM reports as its largest single loss
(87.4% -> 56.5% on Sudoku-Extreme): only the last latent update and the answer update carry
gradient, every earlier pass runs under no_grad. The
LM head and the halting head read norm(y). Deep supervision over up to max_segments segments,
with the state carried (detached) from one to the next, and halting by BCE on "answer correct",
are the recursion core's (model/recursion.py).

Differences from the reference, on purpose: the block stack is the baseline's pre-norm MoE stack
(so the arms differ only in recursion), and an input RMSNorm keeps each pass's input at the
scale of the embeddings where TRM's post-norm blocks do; halting is per token (causal LM) rather
than per puzzle. As in TRM, the initial states are fixed random vectors.
"""

from __future__ import annotations

import torch
from torch import nn

from reasonlab.config import ModelConfig, RecursionConfig, TRMConfig
from reasonlab.model.outputs import State
from reasonlab.model.recursion import Passes, RecursiveLM, Segment


class TRM(RecursiveLM):
    def __init__(self, model: ModelConfig, recursion: RecursionConfig, trm: TRMConfig, seed: int = 0):
        super().__init__(model, recursion, trm, seed)
        self.trm = trm
        d = model.d_model
        self.norm_z = nn.RMSNorm(d)
        self.norm_y = nn.RMSNorm(d)
        # Fixed, as in TRM: the first recursion runs without gradient, so learned ones would never learn.
        self.register_buffer("z_init", self._init_state_vector().detach())
        self.register_buffer("y_init", self._init_state_vector().detach())

    @classmethod
    def passes(cls, trm: TRMConfig) -> tuple[float, float]:
        per_recursion = trm.latent_steps + 1
        grad = 2 if trm.grad == "one_step" else per_recursion
        return grad, trm.recursions * per_recursion - grad

    @classmethod
    def own_params(cls, model: ModelConfig, trm: TRMConfig) -> int:
        return super().own_params(model, trm) + 2 * model.d_model  # two input norms

    @property
    def trained_depth(self) -> int:
        return self.trm.recursions

    def initial_state(self, x_BTD: torch.Tensor) -> State:
        return self.z_init.to(x_BTD.dtype).expand_as(x_BTD), self.y_init.to(x_BTD.dtype).expand_as(x_BTD)

    def readout(self, z: State) -> torch.Tensor:
        return self.core.norm(z[1])

    def _recursion(self, z: State, x: torch.Tensor, f: Passes, free_latent: int = 0) -> State:
        """One recursion; its first `free_latent` latent updates run without gradient."""
        latent, answer = z
        for i in range(self.trm.latent_steps):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i >= free_latent):
                latent = f(self.norm_z(x + answer + latent))
        return latent, f(self.norm_y(answer + latent))

    def segment(self, z: State, x_BTD: torch.Tensor, f: Passes, depth: int | None) -> Segment:
        """`depth` recursions (trm.recursions by default); only the last carries gradient (with
        trm.grad one_step, only its last two passes)."""
        recursions = self.trm.recursions if depth is None else depth
        with torch.no_grad():
            for _ in range(recursions - 1):
                z = self._recursion(z, x_BTD, f)
        free_latent = self.trm.latent_steps - 1 if self.trm.grad == "one_step" else 0
        return Segment(self._recursion(z, x_BTD, f, free_latent))
