"""Every task by name, so a config's `task.name` picks its generator."""

from __future__ import annotations

from reasonlab.errors import UserError
from reasonlab.tasks.arithmetic import Addition
from reasonlab.tasks.base import Task
from reasonlab.tasks.bits import Parity, PrefixSum
from reasonlab.tasks.maze import Maze
from reasonlab.tasks.sudoku import Sudoku

TASKS: dict[str, type[Task]] = {task.name: task for task in (Addition, Parity, PrefixSum, Sudoku, Maze)}


def get_task(name: str, size: int = 0, reverse: bool = True, min_search: int = 0) -> Task:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r} (tasks: {', '.join(TASKS)})")
    return TASKS[name](size, reverse, min_search)
