"""Running functions of a bit string: the answer at position i depends on every bit up to i.

Parity is the textbook case a fixed-depth transformer struggles to extend past its training
length; the prefix sum is its counting cousin. Both answer one token per input bit (aligned).
"""

from __future__ import annotations

import random
from itertools import accumulate

from reasonlab.tasks.base import Example, Task


class _RunningBits(Task):
    """A random bit string of length `level`; subclasses say what the running answer is."""

    level_name = "bits"
    aligned = True

    def level_bounds(self) -> tuple[int, int]:
        return 1, 64

    def default_levels(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (4, 16), (17, 32)

    def sample(self, rng: random.Random, level: int) -> Example:
        self.require_level(level)
        prompt = tuple(format(rng.getrandbits(level), f"0{level}b"))
        return Example(prompt, self.running([int(b) for b in prompt]), level, level)

    def running(self, bits: list[int]) -> tuple[str, ...]:
        raise NotImplementedError


class Parity(_RunningBits):
    name = "parity"
    description = "for each position, the parity of the bits so far"

    def vocab(self) -> list[str]:
        return ["0", "1"]

    def running(self, bits: list[int]) -> tuple[str, ...]:
        return tuple(str(s % 2) for s in accumulate(bits))


class PrefixSum(_RunningBits):
    name = "prefix-sum"
    description = "for each position, how many ones the bits so far hold"

    def vocab(self) -> list[str]:
        return [str(n) for n in range(self.level_bounds()[1] + 1)]

    def running(self, bits: list[int]) -> tuple[str, ...]:
        return tuple(str(s) for s in accumulate(bits))
