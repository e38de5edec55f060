"""What every reasoning task provides: examples of prompt + answer, drawn deterministically by level.

A task's *level* is the axis that generalisation is tested along (digits of an addition, length
of a bit string, blanks of a sudoku, length of a maze's shortest path): a run trains on one
range of levels and is tested on a harder one. `difficulty` is the task's own measure of how
hard one instance is (the level, except for sudoku, where it is the solver's search effort).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import ClassVar

from reasonlab.errors import UserError


@dataclass(frozen=True)
class Example:
    prompt: tuple[str, ...]  # input tokens
    answer: tuple[str, ...]  # answer tokens; as many as the prompt's for aligned (grid) tasks
    level: int
    difficulty: int

    @property
    def key(self) -> str:
        """Identity of the instance: two examples with the same prompt are the same puzzle."""
        return hashlib.sha1(" ".join(self.prompt).encode()).hexdigest()


@dataclass(frozen=True)
class Symmetry:
    """A map of grid instances onto grid instances: the token at cell `source[i]` moves to cell i,
    relabelled by `relabel` (tokens it does not name stay). Its inverse maps answers back."""

    source: tuple[int, ...]
    relabel: dict[str, str]

    def apply(self, tokens: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(self.relabel.get(tokens[i], tokens[i]) for i in self.source)

    def undo(self, tokens: tuple[str, ...]) -> tuple[str, ...]:
        back = {v: k for k, v in self.relabel.items()}
        out = [""] * len(tokens)
        for i, j in enumerate(self.source):
            out[j] = back.get(tokens[i], tokens[i])
        return tuple(out)


class Task:
    """One family of generated problems; subclasses are registered by `name` in reasonlab.tasks."""

    name: ClassVar[str]
    description: ClassVar[str]
    level_name: ClassVar[str]  # what a level counts, for tables: "digits", "bits", "blanks", "path length"
    difficulty_name: ClassVar[str] = "level"  # what `difficulty` counts, where it is not the level
    aligned: ClassVar[bool]  # one answer token per prompt token, so the grid format applies
    knobs: ClassVar[dict[str, str]] = {}  # task.* settings the task reads, with what they mean

    def __init__(self, size: int = 0, reverse: bool = True, min_search: int = 0, generator: int = 2):
        self.size, self.reverse, self.min_search = size, reverse, min_search
        self.generator = generator  # task.generator: 1 draws as reasonlab did before version 2

    def vocab(self) -> list[str]:
        """Every token a prompt or answer of this task (at any level) can hold."""
        raise NotImplementedError

    def level_bounds(self) -> tuple[int, int]:
        """The smallest and largest level this task (at its size) can generate."""
        raise NotImplementedError

    def default_levels(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(train range, harder test range), both inclusive."""
        raise NotImplementedError

    def require_level(self, level: int) -> None:
        """Every sample() starts here: a level outside the bounds is a config mistake, not a generator failure."""
        low, high = self.level_bounds()
        if not low <= level <= high:
            raise UserError(f"{self.name}: level ({self.level_name}) must be in {low}..{high}, got {level}")

    def sample(self, rng: random.Random, level: int) -> Example:
        """One instance at `level`, drawn from rng only (so a seed fixes the whole dataset)."""
        raise NotImplementedError

    augmentable: ClassVar[bool] = False  # has validity-preserving symmetries (`symmetry`)
    square: ClassVar[bool] = False  # a prompt is a square grid read row by row (model.positions 2d applies)

    def symmetry(self, rng: random.Random) -> Symmetry:
        """A random symmetry of the task's instances (only where `augmentable`)."""
        raise NotImplementedError

    def augment(self, example: Example, rng: random.Random) -> Example:
        """A random symmetric variant of the instance: still valid, unique where it was, with the
        correspondingly transformed answer (task.augment)."""
        s = self.symmetry(rng)
        return Example(s.apply(example.prompt), s.apply(example.answer), example.level, example.difficulty)

    def check(self, example: Example, answer: tuple[str, ...]) -> bool:
        """Whether `answer` solves the example's prompt (the generator's answer must)."""
        return answer == example.answer

    def render(self, tokens: tuple[str, ...]) -> str:
        """A prompt or answer as readable text (grids as rows)."""
        return " ".join(tokens)
