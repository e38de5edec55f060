"""Generator speed: puzzles per second for each reasoning task at the levels that matter, then
a hard 9x9 training set drawn as a run draws it.

    python benchmarks/tasks.py [--seconds 5] [--hard 1000]

The table: one process, from a fixed seed; each row generates puzzles at its level (a sudoku's
blanks with an optional `min_search`, a maze's shortest-path length) until `--seconds` have
passed, and prints how many it made per second and the mean difficulty (the solver's guesses for
sudoku). The last sudoku rows reach 21 givens; the last maze rows Maze-Hard's path lengths (110
and more at 30x30).

`--hard N`: the splits of N hard 9x9 training puzzles (25-27 givens, at least 10 solver guesses)
plus 100 val and 100 test, drawn into an empty cache by every core of the machine (the worker
processes of tasks/generate.py), timed from start to cached; 0 skips it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from reasonlab.config import TaskConfig
from reasonlab.errors import UserError
from reasonlab.tasks.generate import default_workers, draw_splits
from reasonlab.tasks.registry import get_task

ROWS = [  # task, size, min_search, level
    ("sudoku", 6, 0, 20), ("sudoku", 6, 0, 26), ("sudoku", 9, 0, 45), ("sudoku", 9, 0, 52), ("sudoku", 9, 0, 56),
    ("sudoku", 9, 0, 58), ("sudoku", 9, 0, 60), ("sudoku", 9, 3, 52), ("sudoku", 9, 10, 54), ("sudoku", 9, 10, 58),
    ("maze", 15, 0, 40), ("maze", 15, 0, 50), ("maze", 30, 0, 60), ("maze", 30, 0, 102), ("maze", 30, 0, 110),
    ("maze", 30, 0, 139),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--hard", type=int, default=1000, metavar="N")
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
    if args.hard:
        hard_set(args.hard)


def hard_set(count: int) -> None:
    cfg = TaskConfig(name="sudoku", size=9, format="grid", min_search=10, train_min_level=54, train_max_level=56,
                     test_min_level=54, test_max_level=56, train_examples=count, eval_examples=100)
    with tempfile.TemporaryDirectory() as cache:
        tic = time.perf_counter()
        splits = draw_splits(cfg, Path(cache))
        seconds = time.perf_counter() - tic
    made = sum(len(found) for found in splits.values())
    guesses = statistics.mean(e.difficulty for e in splits["train"])
    print(f"\n{made:,} hard 9x9 puzzles (54-56 blanks, min_search 10; {count:,} train + 100 val + 100 test), "
          f"{default_workers()} worker processes, empty cache: {seconds:.0f} s ({made / seconds:.2f} puzzles/s), "
          f"mean guesses {guesses:.1f}")


if __name__ == "__main__":
    main()
