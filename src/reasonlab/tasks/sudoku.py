"""Sudoku with a unique solution, levelled by the number of blanks and rated by the solver's search.

Blanks are the level because more of them means a longer chain of deductions; the difficulty is
how many guesses a propagate-then-branch solver needs, which separates puzzles that singles
alone crack from those that need search (the regime recursive reasoning is meant to help with).
Candidates are bitmasks (bit d-1 set = digit d still possible), so propagation is integer ops.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from functools import cache
from typing import ClassVar

from reasonlab.errors import UserError
from reasonlab.tasks.base import Example, Symmetry, Task

BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # size -> (box rows, box columns)
TRIES = 1000  # fresh grids per sample before the level (or min_search) is declared out of reach
TIMEOUT_S = 120  # or seconds per sample, so an unreachable min_search fails rather than hangs
MOVES = 200  # local-search moves past a minimal puzzle (generator 2)


@cache
def geometry(size: int) -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    """The units (rows, columns, boxes) and each cell's peers, as indices into the row-major grid."""
    box_rows, box_cols = BOXES[size]
    rows = [tuple(r * size + c for c in range(size)) for r in range(size)]
    cols = [tuple(r * size + c for r in range(size)) for c in range(size)]
    boxes = [
        tuple((top + r) * size + left + c for r in range(box_rows) for c in range(box_cols))
        for top in range(0, size, box_rows)
        for left in range(0, size, box_cols)
    ]
    units = tuple(rows + cols + boxes)
    peers = tuple(tuple(sorted({p for unit in units if i in unit for p in unit} - {i})) for i in range(size * size))
    return units, peers


def _propagate(cand: list[int], size: int) -> bool:
    """Naked singles (a cell with one candidate) and hidden singles (a digit with one place in a unit)
    until neither applies, in place; False on a contradiction."""
    units, peers = geometry(size)
    full = (1 << size) - 1
    stack = [i for i, m in enumerate(cand) if not m & (m - 1)]
    while stack:
        while stack:
            i = stack.pop()
            m = cand[i]
            for p in peers[i]:
                if cand[p] & m:
                    left = cand[p] & ~m
                    if not left:
                        return False
                    cand[p] = left
                    if not left & (left - 1):
                        stack.append(p)
        for unit in units:
            once = twice = 0
            for i in unit:
                twice |= once & cand[i]
                once |= cand[i]
            if once != full:
                return False
            hidden = once & ~twice
            if hidden:
                for i in unit:
                    m = cand[i] & hidden
                    if m and cand[i] != m:
                        if m & (m - 1):
                            return False
                        cand[i] = m
                        stack.append(i)
    return True


def _search(cand: list[int], size: int, limit: int, rng: random.Random | None) -> tuple[list[list[int]], int]:
    """Propagate, then branch on the cell with fewest candidates: up to `limit` solved masks, and the
    guesses (values tried at branch points) up to the first (all of them if none). rng shuffles the tries."""
    solutions: list[list[int]] = []
    guesses = first = 0

    def descend(cand: list[int]) -> None:
        nonlocal guesses, first
        if not _propagate(cand, size):
            return
        open_cells = [i for i, m in enumerate(cand) if m & (m - 1)]
        if not open_cells:
            if not solutions:
                first = guesses
            solutions.append(cand)
            return
        cell = min(open_cells, key=lambda i: cand[i].bit_count())
        options = [1 << d for d in range(size) if cand[cell] >> d & 1]
        if rng is not None:
            rng.shuffle(options)
        for bit in options:
            guesses += 1
            child = cand.copy()
            child[cell] = bit
            descend(child)
            if len(solutions) >= limit:
                return

    descend(cand)
    return solutions, first if solutions else guesses


def _masks(grid: Sequence[int], size: int) -> list[int]:
    full = (1 << size) - 1
    return [1 << (v - 1) if v else full for v in grid]


def solve(grid: Sequence[int], size: int) -> tuple[list[tuple[int, ...]], int]:
    """Solutions of a row-major grid (0 = blank), at most two (enough to tell unique from not), and the
    search: guesses (values tried at branch points) up to the first solution, 0 when singles alone solve it."""
    solutions, search = _search(_masks(grid, size), size, 2, None)
    return [tuple(m.bit_length() for m in s) for s in solutions], search


class Sudoku(Task):
    name = "sudoku"
    description = "fill a size x size sudoku with a unique solution; '.' marks a blank"
    level_name = "blanks"
    difficulty_name = "solver guesses"
    aligned = True
    knobs: ClassVar[dict[str, str]] = {
        "size": "4, 6 or 9 (0 means 4); boxes are 2x2, 2 rows x 3 columns, 3x3",
        "min_search": "keep only puzzles whose solver needs at least this many branching guesses",
    }

    def __init__(self, size: int = 0, reverse: bool = True, min_search: int = 0, generator: int = 2):
        super().__init__(size or 4, reverse, min_search, generator)
        if self.size not in BOXES:
            raise UserError(f"sudoku size must be one of {sorted(BOXES)}, got {size}")

    def vocab(self) -> list[str]:
        return ["."] + [str(d) for d in range(1, self.size + 1)]

    def level_bounds(self) -> tuple[int, int]:
        """Down to 4 givens at 4x4, 10 at 6x6 and 21 at 9x9: measured, the local search reaches 60
        blanks in about one carve in two and 61 in one in sixteen (40 s), so 21 givens is where a
        pure-Python carve stops (17-20 would need a curated list of minimal puzzles)."""
        return {4: (1, 12), 6: (1, 26), 9: (1, 60)}[self.size]

    def default_levels(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return {4: ((4, 8), (9, 12)), 6: ((10, 18), (19, 26)), 9: ((30, 45), (46, 56))}[self.size]

    def sample(self, rng: random.Random, level: int) -> Example:
        self.require_level(level)
        tic = time.perf_counter()
        for _ in range(TRIES):
            carved = self._carve(rng, level)
            if carved is not None:
                puzzle, solution = carved
                search = solve(puzzle, self.size)[1]
                if search >= self.min_search:
                    prompt = tuple(str(v) if v else "." for v in puzzle)
                    return Example(prompt, tuple(str(v) for v in solution), level, search)
            if time.perf_counter() - tic > TIMEOUT_S:
                break
        raise UserError(
            f"sudoku {self.size}x{self.size}: no unique puzzle with {level} blanks and search >= {self.min_search} "
            f"in {TRIES} grids or {TIMEOUT_S} s; fewer blanks or a lower task.min_search make one likelier"
        )

    def _carve(self, rng: random.Random, level: int) -> tuple[list[int], list[int]] | None:
        """A random full grid, then cells blanked in random order, each kept blank only if no other digit
        fits there (so the solution stays unique). The pass ends at a minimal puzzle, which at 9x9
        has about 25 givens; under generator 2 a local search then goes on: a blank is given back
        and the givens are tried for blanking again, up to MOVES times. None if `level` blanks
        were not reached."""
        size = self.size
        solution = [m.bit_length() for m in _search([(1 << size) - 1] * size * size, size, 1, rng)[0][0]]
        puzzle = solution.copy()

        def blank(cells: list[int]) -> bool:
            """Blank every cell that leaves the solution unique, in order; True once `level` are blank."""
            for cell in cells:
                if self._unique_without(puzzle, solution, cell):
                    puzzle[cell] = 0
                    if puzzle.count(0) == level:
                        return True
            return False

        order = list(range(size * size))
        rng.shuffle(order)
        if blank(order):
            return puzzle, solution
        for _ in range(MOVES if self.generator >= 2 else 0):
            back = rng.choice([i for i, v in enumerate(puzzle) if not v])
            puzzle[back] = solution[back]
            givens = [i for i, v in enumerate(puzzle) if v and i != back]
            rng.shuffle(givens)
            if blank(givens):
                return puzzle, solution
        return None

    def _unique_without(self, puzzle: list[int], solution: list[int], cell: int) -> bool:
        """Whether the solution stays the only one with `cell` blanked: no other digit fits there."""
        size = self.size
        cand = _masks(puzzle, size)
        cand[cell] = (1 << size) - 1
        for p in geometry(size)[1][cell]:
            if puzzle[p]:
                cand[cell] &= ~cand[p]
        cand[cell] &= ~(1 << (solution[cell] - 1))
        return not (cand[cell] and _search(cand, size, 1, None)[0])

    augmentable = True
    square = True

    def symmetry(self, rng: random.Random) -> Symmetry:
        """The symmetries HRM's Sudoku-Extreme builder draws: the bands in any order and the rows within
        each band, the stacks and the columns within each stack, a transposition (square boxes only),
        and the digits relabelled. Each maps solutions to solutions, so validity and uniqueness hold."""
        size = self.size
        box_rows, box_cols = BOXES[size]
        bands = rng.sample(range(size // box_rows), size // box_rows)
        stacks = rng.sample(range(size // box_cols), size // box_cols)
        rows = [b * box_rows + r for b in bands for r in rng.sample(range(box_rows), box_rows)]
        cols = [s * box_cols + c for s in stacks for c in rng.sample(range(box_cols), box_cols)]
        transpose = box_rows == box_cols and rng.random() < 0.5
        digits = [str(d) for d in range(1, size + 1)]
        source = tuple(rows[c] * size + cols[r] if transpose else rows[r] * size + cols[c]
                       for r in range(size) for c in range(size))
        return Symmetry(source, dict(zip(digits, rng.sample(digits, size))))

    def check(self, example: Example, answer: tuple[str, ...]) -> bool:
        """Any complete grid that keeps the givens and fills every row, column and box with 1..size."""
        size = self.size
        digits = {str(d) for d in range(1, size + 1)}
        if len(answer) != size * size or not set(answer) <= digits:
            return False
        if any(given != "." and given != got for given, got in zip(example.prompt, answer)):
            return False
        return all({answer[i] for i in unit} == digits for unit in geometry(size)[0])

    def render(self, tokens: tuple[str, ...]) -> str:
        """Rows of the grid, with | between box columns and a rule between box rows."""
        size = self.size
        box_rows, box_cols = BOXES[size]
        rule = "-+-".join("-" * (2 * box_cols - 1) for _ in range(size // box_cols))
        lines = []
        for r in range(size):
            if r and r % box_rows == 0:
                lines.append(rule)
            row = tokens[r * size : (r + 1) * size]
            lines.append(" | ".join(" ".join(row[c : c + box_cols]) for c in range(0, size, box_cols)))
        return "\n".join(lines)
