"""Shortest paths through a grid maze with loops, levelled by the path's length.

A carved maze (a spanning tree) has only one path between two cells; opening a few extra walls
adds loops, so the answer has to be the *shortest* path and not just any walk that gets there.
The answer is the prompt with the cells strictly between S and E marked "o".
"""

from __future__ import annotations

import random
from functools import cache
from typing import ClassVar

from reasonlab.errors import UserError
from reasonlab.tasks.base import Example, Symmetry, Task

WALL, OPEN, START, END, PATH = "#", ".", "S", "E", "o"
LOOPS = 0.1  # extra walls opened after carving, as a fraction of the carved rooms
TRIES = 1000  # mazes (cheap: tens of microseconds at n=8) per sample before the level is declared out of reach


@cache
def neighbours(n: int) -> tuple[tuple[int, ...], ...]:
    """Each cell's 4-neighbours in the row-major n x n grid, in a fixed order (up, right, down, left)
    so the breadth-first search, and with it the answer's choice among equal paths, is deterministic."""
    steps = ((-1, 0), (0, 1), (1, 0), (0, -1))
    return tuple(
        tuple((r + dr) * n + c + dc for dr, dc in steps if 0 <= r + dr < n and 0 <= c + dc < n)
        for r in range(n)
        for c in range(n)
    )


def bfs(grid: list[str] | tuple[str, ...], n: int, start: int) -> tuple[list[int], list[int]]:
    """Distance from `start` (-1 where unreachable) and breadth-first parent of every non-wall cell."""
    dist, parent = [-1] * (n * n), [-1] * (n * n)
    dist[start] = 0
    frontier = [start]
    for cell in frontier:
        for nb in neighbours(n)[cell]:
            if dist[nb] < 0 and grid[nb] != WALL:
                dist[nb], parent[nb] = dist[cell] + 1, cell
                frontier.append(nb)
    return dist, parent


def carve(rng: random.Random, n: int) -> list[str]:
    """Rooms two cells apart joined by a randomized depth-first spanning tree, plus a few loops.

    Rooms sit on every other row and column; for even n the spare wall line falls on a random side,
    so no border is always closed. Two rooms a step of 2 apart in index are neighbours exactly when
    both are rooms (a step that wraps a row lands on a wall row), which keeps the geometry to sets.
    """
    top, left = (rng.randrange(2), rng.randrange(2)) if n % 2 == 0 else (0, 0)
    rooms = [r * n + c for r in range(top, n, 2) for c in range(left, n, 2)]
    room_set = set(rooms)
    grid = [WALL] * (n * n)
    stack = [rng.choice(rooms)]
    grid[stack[0]] = OPEN
    while stack:
        room = stack[-1]
        fresh = [b for b in (room - 2 * n, room + 2, room + 2 * n, room - 2) if b in room_set and grid[b] == WALL]
        if not fresh:
            stack.pop()
            continue
        nxt = rng.choice(fresh)
        grid[(room + nxt) // 2] = grid[nxt] = OPEN
        stack.append(nxt)
    walls = [(a + b) // 2 for a in rooms for b in (a + 2, a + 2 * n) if b in room_set and grid[(a + b) // 2] == WALL]
    for wall in rng.sample(walls, min(len(walls), max(1, round(LOOPS * len(rooms))))):
        grid[wall] = OPEN
    return grid


class Maze(Task):
    name = "maze"
    description = "mark a shortest path from S to E in an N x N maze with loops ('#' wall, '.' open, 'o' path)"
    level_name = "path length"
    aligned = True
    knobs: ClassVar[dict[str, str]] = {"size": "the grid's side N, 5..32 (0 means 8)"}

    def __init__(self, size: int = 0, reverse: bool = True, min_search: int = 0, generator: int = 2):
        super().__init__(size or 8, reverse, min_search, generator)
        if not 5 <= self.size <= 32:
            raise UserError(f"maze size must be in 5..32, got {size}")

    def vocab(self) -> list[str]:
        return [WALL, OPEN, START, END, PATH]

    def level_bounds(self) -> tuple[int, int]:
        """Up to a length that, measured, at least ~5% of random mazes hold between two of their cells
        (the 95th percentile of a double breadth-first sweep over 300 mazes of each size: 142 at
        30x30, past Maze-Hard's bar of 110)."""
        rooms_per_side = (self.size + 1) // 2
        return 2, max(self._random_start_reach(), (21 * rooms_per_side - 36) // 2)

    def _random_start_reach(self) -> int:
        """The longest level at which, measured, at least ~5% of random (maze, start) pairs have a cell that far."""
        return (15 * ((self.size + 1) // 2) - 20) // 2

    def default_levels(self) -> tuple[tuple[int, int], tuple[int, int]]:
        longest = self._random_start_reach()
        split = round(0.6 * longest)
        return (4, split), (split + 1, longest)

    def sample(self, rng: random.Random, level: int) -> Example:
        self.require_level(level)
        n = self.size
        for _ in range(TRIES):
            grid = carve(rng, n)
            start = rng.choice([i for i, t in enumerate(grid) if t == OPEN])
            dist, parent = bfs(grid, n, start)
            if level > self._random_start_reach():  # long paths (Maze-Hard's): start from a far end instead
                start = max(range(n * n), key=dist.__getitem__)
                dist, parent = bfs(grid, n, start)
            ends = [i for i, d in enumerate(dist) if d == level]
            if not ends:
                continue
            end = rng.choice(ends)
            grid[start], grid[end] = START, END
            prompt = tuple(grid)
            cell = parent[end]
            while cell != start:
                grid[cell] = PATH
                cell = parent[cell]
            return Example(prompt, tuple(grid), level, level)
        raise UserError(f"maze {n}x{n}: no start and end {level} steps apart in {TRIES} mazes")

    augmentable = True
    square = True

    def symmetry(self, rng: random.Random) -> Symmetry:
        """One of the square's 8 rotations and reflections: adjacency, and so every path's length, is kept."""
        n, turns, mirror = self.size, rng.randrange(4), rng.random() < 0.5

        def source(r: int, c: int) -> int:
            for _ in range(turns):
                r, c = c, n - 1 - r
            return r * n + (n - 1 - c if mirror else c)

        return Symmetry(tuple(source(r, c) for r in range(n) for c in range(n)), {})

    def check(self, example: Example, answer: tuple[str, ...]) -> bool:
        """Any shortest path: only open cells turned to "o", exactly distance-1 of them, joining S to E.
        With no more path cells than a shortest path needs, any S-E walk through them is a shortest path."""
        prompt, n = example.prompt, self.size
        if len(answer) != len(prompt) or any(a != p and (a, p) != (PATH, OPEN) for a, p in zip(answer, prompt)):
            return False
        start, end = prompt.index(START), prompt.index(END)
        path = {i for i, a in enumerate(answer) if a == PATH}
        if len(path) != bfs(prompt, n, start)[0][end] - 1:
            return False
        reached, frontier = {start}, [start]
        for cell in frontier:
            for nb in neighbours(n)[cell]:
                if nb == end:
                    return True
                if nb in path and nb not in reached:
                    reached.add(nb)
                    frontier.append(nb)
        return False

    def render(self, tokens: tuple[str, ...]) -> str:
        n = self.size
        return "\n".join("".join(tokens[r * n : (r + 1) * n]) for r in range(n))
