"""model.arch hrm: HRM-style hierarchical cycles over the shared block stack.

Two latent states per position, z_L and z_H, start from learned vectors. One segment is
H_cycles high-level cycles; each cycle runs L_cycles low-level updates

    z_L <- z_L + f(norm_L(z_L + P_HL z_H + x))

then one high-level update

    z_H <- z_H + f(norm_H(z_H + P_LH z_L))

where f is the baseline's block stack (the same weights on every pass) and x the token
embedding, re-injected at every low-level update. Only the last `grad_cycles` cycles of a
segment carry gradient; the earlier ones run under no_grad and reach the segment's input
state only through the residual identity (a one-step gradient, as in HRM). The LM head reads
norm(z_H). Segments, halting and the loss are the recursion core's (model/recursion.py).
"""

from __future__ import annotations

import torch
from torch import nn

from reasonlab.config import HRMConfig, ModelConfig, RecursionConfig
from reasonlab.model.outputs import State
from reasonlab.model.recursion import Passes, RecursiveLM, Segment


class HRM(RecursiveLM):
    def __init__(self, model: ModelConfig, recursion: RecursionConfig, hrm: HRMConfig, seed: int = 0):
        super().__init__(model, recursion, hrm, seed)
        self.hrm = hrm
        d = model.d_model
        self.p_hl = nn.Linear(d, d, bias=False)
        self.p_lh = nn.Linear(d, d, bias=False)
        self.norm_l = nn.RMSNorm(d)
        self.norm_h = nn.RMSNorm(d)
        self.z_l_init = self._init_state_vector()
        self.z_h_init = self._init_state_vector()
        nn.init.normal_(self.p_hl.weight, std=0.02)
        nn.init.normal_(self.p_lh.weight, std=0.02)

    @classmethod
    def passes(cls, hrm: HRMConfig) -> tuple[float, float]:
        return hrm.grad_cycles * (hrm.L_cycles + 1), (hrm.H_cycles - hrm.grad_cycles) * (hrm.L_cycles + 1)

    @classmethod
    def pass_params(cls, model: ModelConfig, hrm: HRMConfig) -> int:
        return model.d_model ** 2  # P_HL or P_LH

    @classmethod
    def own_params(cls, model: ModelConfig, hrm: HRMConfig) -> int:
        d = model.d_model
        return super().own_params(model, hrm) + 2 * d * d + 2 * d + 2 * d  # P_HL, P_LH, two input norms, init states

    @property
    def trained_depth(self) -> int:
        return self.hrm.H_cycles

    def initial_state(self, x_BTD: torch.Tensor) -> State:
        return self.z_l_init.to(x_BTD.dtype).expand_as(x_BTD), self.z_h_init.to(x_BTD.dtype).expand_as(x_BTD)

    def readout(self, z: State) -> torch.Tensor:
        return self.core.norm(z[1])

    def _cycle(self, z: State, x: torch.Tensor, f: Passes) -> State:
        z_l, z_h = z
        for _ in range(self.hrm.L_cycles):
            z_l = z_l + f(self.norm_l(z_l + self.p_hl(z_h) + x))
        return z_l, z_h + f(self.norm_h(z_h + self.p_lh(z_l)))

    def segment(self, z: State, x_BTD: torch.Tensor, f: Passes, depth: int | None) -> Segment:
        """`depth` H cycles (H_cycles by default); the last grad_cycles of them carry gradient."""
        cycles = self.hrm.H_cycles if depth is None else depth
        grad_cycles = min(self.hrm.grad_cycles, cycles)
        if cycles > grad_cycles:
            with torch.no_grad():
                z_free = z
                for _ in range(cycles - grad_cycles):
                    z_free = self._cycle(z_free, x_BTD, f)
            z = tuple(start + (end - start).detach() for start, end in zip(z, z_free))
        for _ in range(grad_cycles):
            z = self._cycle(z, x_BTD, f)
        return Segment(z)
