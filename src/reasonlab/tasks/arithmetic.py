"""Multi-digit addition: the classic length-generalisation test (train on short sums, test on longer ones).

The answer always has n+1 digits, so its length is fixed per level and a model never has to guess
where it ends. Written least-significant digit first (the default), the carry flows in reading
order, which is what lets a left-to-right model add at all.
"""

from __future__ import annotations

import random
from typing import ClassVar

from reasonlab.tasks.base import Example, Task


class Addition(Task):
    name = "addition"
    description = "a + b for two n-digit numbers; the answer is the n+1 digits of the sum"
    level_name = "digits"
    aligned = False
    knobs: ClassVar[dict[str, str]] = {
        "reverse": "write numbers least-significant digit first, so carries flow in reading order",
    }

    def vocab(self) -> list[str]:
        return [str(d) for d in range(10)] + ["+"]

    def level_bounds(self) -> tuple[int, int]:
        return 1, 24

    def default_levels(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (1, 8), (9, 12)

    def sample(self, rng: random.Random, level: int) -> Example:
        self.require_level(level)
        low = 0 if level == 1 else 10 ** (level - 1)
        a, b = rng.randint(low, 10**level - 1), rng.randint(low, 10**level - 1)
        prompt = (*self.digits(a, level), "+", *self.digits(b, level))
        return Example(prompt, self.digits(a + b, level + 1), level, level)

    def digits(self, number: int, width: int) -> tuple[str, ...]:
        """`number` as exactly `width` digit tokens, zero-padded at the most significant end."""
        text = str(number).zfill(width)
        return tuple(reversed(text) if self.reverse else text)

    def render(self, tokens: tuple[str, ...]) -> str:
        return "".join(tokens)
