"""Every task by name, so a config's `task.name` picks its generator."""

from __future__ import annotations

from reasonlab.errors import UserError
from reasonlab.tasks.arithmetic import Addition
from reasonlab.tasks.base import Task
from reasonlab.tasks.bits import Parity, PrefixSum
from reasonlab.tasks.maze import Maze
from reasonlab.tasks.sudoku import Sudoku

TASKS: dict[str, type[Task]] = {task.name: task for task in (Addition, Parity, PrefixSum, Sudoku, Maze)}


def get_task(name: str, size: int = 0, reverse: bool = True, min_search: int = 0, generator: int = 2) -> Task:
    """The task called `name`, with the knobs it reads (the others are ignored)."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r} (tasks: {', '.join(TASKS)})")
    return TASKS[name](size, reverse, min_search, generator)


def describe_tasks() -> str:
    """What `reasonlab tasks --list` prints: each task, its levels at the default size, and its knobs."""
    lines = []
    for name, cls in TASKS.items():
        task = cls()
        low, high = task.level_bounds()
        (train_lo, train_hi), (test_lo, test_hi) = task.default_levels()
        lines += [f"{name}: {task.description}",
                  f"  level = {task.level_name}, {low}..{high}; "
                  f"default train {train_lo}-{train_hi}, test {test_lo}-{test_hi}",
                  f"  formats: {'seq, grid' if task.aligned else 'seq'}"]
        lines += [f"  task.{knob}: {meaning}" for knob, meaning in task.knobs.items()]
    lines += ["every task: task.train_min_level/train_max_level, task.test_min_level/test_max_level, "
              "task.train_examples, task.eval_examples, task.test_examples, task.seed",
              "sudoku and maze: task.augment (a fresh symmetric variant each time), "
              "task.source (a published set: hf:NAME, a folder or a CSV)"]
    return "\n".join(lines)
