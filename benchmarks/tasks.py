"""Generator speed: puzzles per second for each reasoning task at the levels that matter.

    python benchmarks/tasks.py [--seconds 5]

One process, from a fixed seed; each row generates puzzles at its level (a sudoku's blanks with
an optional `min_search`, a maze's shortest-path length) until `--seconds` have passed, and
prints how many it made per second and the mean difficulty (the solver's guesses for sudoku).
The last maze rows are at Maze-Hard's path lengths (110 and more at 30x30).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from reasonlab.errors import UserError
from reasonlab.tasks.registry import get_task

ROWS = [  # task, size, min_search, level
    ("sudoku", 9, 0, 45), ("sudoku", 9, 0, 52), ("sudoku", 9, 0, 56), ("sudoku", 9, 3, 52), ("sudoku", 9, 10, 54),
    ("maze", 15, 0, 40), ("maze", 30, 0, 60), ("maze", 30, 0, 102), ("maze", 30, 0, 110), ("maze", 30, 0, 139),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"one process, {args.seconds:g} s a row")
    print("| task | size | min_search | level | puzzles/s | mean difficulty |")
    print("|---|---|---|---|---|---|")
    for name, size, min_search, level in ROWS:
        task, rng = get_task(name, size, min_search=min_search), random.Random(0)
        made, difficulty = 0, []
        tic = time.perf_counter()
        try:
            while time.perf_counter() - tic < args.seconds:
                difficulty.append(task.sample(rng, level).difficulty)
                made += 1
            rate = f"{made / (time.perf_counter() - tic):,.1f}"
        except UserError as exc:
            rate = f"out of reach ({exc})"
        mean = f"{statistics.mean(difficulty):.1f}" if difficulty else "-"
        print(f"| {name} | {size} | {min_search} | {level} | {rate} | {mean} |", flush=True)


if __name__ == "__main__":
    main()
