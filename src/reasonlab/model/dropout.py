"""Dropout with a cheap mask: four 16-bit uniforms from each 64-bit random word.

On the CPU, torch's dropout draws its mask with `bernoulli_`, one generator call and one
float per element; on this project's 2-core benchmark machine that is about five times
slower than taking 16-bit lanes of random 64-bit integers (benchmarks/dropout.py), and the
masks were a large share of a training step. A lane keeps its element when it is at least
-32768 + round(p * 65536), so the drop probability is p rounded to a multiple of 2^-16
(0.1 becomes 0.10000610). The words come from numpy's PCG64, seeded for each mask by one
draw from torch's global generator, which checkpoints save: torch's own `random_` (mt19937)
took 1.5-2x as long, 4% of a cpu-bench step.

The mask is 0/1 in uint8, 1 byte per element kept for backward: multiplying a float tensor
by uint8 is 3-4x faster on the CPU than by bool, whose conversion is not vectorised. On CUDA,
F.dropout is already a fused Philox kernel and is used as it is, as is a uniform draw for the
masks the experts need.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def dropout_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """Keep-mask of `shape` to multiply by, 1 with probability 1 - p (to 2^-16 on the CPU).

    On CUDA a plain uniform draw: one Philox kernel, which torch.compile fuses and traces.
    """
    if device.type != "cpu":
        return torch.rand(shape, device=device) >= p
    return _lane_mask(shape, p)


@torch.compiler.disable
def _lane_mask(shape: torch.Size | tuple[int, ...], p: float) -> torch.Tensor:
    """The CPU mask, run eagerly even inside a compiled model: torch.compile cannot trace
    numpy's generator, and its own uniform draws are slower on the CPU than these lanes."""
    n = math.prod(shape)
    words = np.random.PCG64(int(torch.randint(2**63 - 1, (1,)))).random_raw((n + 3) // 4)
    mask = torch.from_numpy(words.view(np.int16)[:n]) >= -32768 + round(p * 65536)
    return mask.view(torch.uint8).view(shape)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    mask = dropout_mask(x.shape, p, x.device)  # drawn first: a compiled graph breaks at the draw
    return x.mul(mask).mul_(1.0 / (1.0 - p))


def add_dropout(x: torch.Tensor, y: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """x + dropout(y), the residual stream's add. On the CPU one addcmul, x + y * mask / (1 - p),
    where the mask's multiply, its scale and the add were three passes, forward and backward;
    the same mask is drawn, so the values and every later draw are those of `dropout`."""
    if not training or p == 0.0:
        return x + y
    if x.device.type != "cpu":
        return x + F.dropout(y, p, training=True)
    return torch.addcmul(x, y, dropout_mask(y.shape, p, y.device), value=1.0 / (1.0 - p))


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def residual(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x + self(y) (`add_dropout`)."""
        return add_dropout(x, y, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
