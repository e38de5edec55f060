"""Published puzzle sets in HRM's CSV layout, read through `datasets` (`task.source`).

Sudoku-Extreme (`hf:sapientinc/sudoku-extreme`) and Maze-Hard (`hf:sapientinc/maze-30x30-hard-1k`)
are CSV files `train.csv` and `test.csv` with the columns source, question, answer, rating:
question and answer are the grid row by row, one character a cell (sudoku: '.' blank, digits;
maze: '#' wall, ' ' open, 'S' start, 'G' goal, 'o' the path in the answer), and rating is the
set's difficulty (sudoku: a solver's backtracks). `task.source` takes the hub name, or a local
folder holding `train.csv` and `test.csv` in that layout, or one local CSV file (its rows then
give every split).

As in HRM's "-1k" settings, training uses a seeded subset of `task.train_examples` puzzles of the
train set, validation `task.eval_examples` other ones, and the test split is the published test
set, or a fixed seeded sample of `task.test_examples` (else `task.eval_examples`) of it. Each
puzzle's rating is kept as its difficulty, for the by-difficulty tables; its level is its blanks
(sudoku) or its shortest path's length (maze).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

from reasonlab.errors import UserError
from reasonlab.tasks.base import Example

COLUMNS = ("source", "question", "answer", "rating")
MAZE_CELLS = {"#": "#", " ": ".", "S": "S", "G": "E", "o": "o"}  # the published characters -> reasonlab's


def read_rows(source: str, split: str) -> list[dict[str, str]]:
    """The rows of one split (train, test) of a published set; a single CSV file gives all its rows."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise UserError("task.source needs the hf extra (datasets): "
                        "pip install -e '.[hf]' in the reasonlab checkout") from None
    if source.startswith("hf:"):
        name, files = source[3:], {split: f"{split}.csv"}
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / f"{split}.csv"
        if not path.is_file():
            raise UserError(f"task.source: no {path}")
        with path.open(newline="") as fh:
            _check_columns(source, next(csv.reader(fh), []))
        name, files = "csv", {split: str(path)}
    try:
        # every column read as text: an 81-digit answer is no integer
        rows = load_dataset(name, data_files=files, split=split, converters=dict.fromkeys(COLUMNS, str))
    except Exception as exc:  # no network, no such dataset, unreadable CSV: all surface as library errors
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"task.source {source!r}: cannot read its {split} split: {reason}") from None
    _check_columns(source, rows.column_names)
    return [dict(zip(COLUMNS, (str(row[c]) for c in COLUMNS))) for row in rows]


def _check_columns(source: str, columns: list[str]) -> None:
    if any(c not in columns for c in COLUMNS):
        raise UserError(f"task.source {source!r}: unknown column layout {columns}; expected the published "
                        f"columns {', '.join(COLUMNS)}")


def to_example(task_name: str, row: dict[str, str]) -> Example:
    """One published puzzle as reasonlab's example: its tokens, level and (rating as) difficulty."""
    question, answer = row["question"], row["answer"]
    try:
        rating = int(float(row["rating"]))
    except ValueError:
        raise UserError(f"task.source: rating {row['rating']!r} is not a number") from None
    if task_name == "sudoku":
        if not set(question) <= set(".123456789") or not set(answer) <= set("123456789"):
            raise UserError("task.source: a sudoku question holds '.' and digits, its answer digits only")
        return Example(tuple(question), tuple(answer), question.count("."), rating)
    if task_name == "maze":
        if not set(question) | set(answer) <= set(MAZE_CELLS):
            raise UserError(f"task.source: a maze holds only {''.join(MAZE_CELLS)!r}")
        prompt, solved = tuple(MAZE_CELLS[c] for c in question), tuple(MAZE_CELLS[c] for c in answer)
        return Example(prompt, solved, solved.count("o") + 1, rating)
    raise UserError(f"task.source: published sets are sudoku and maze, not {task_name}")


def published_splits(task_name: str, source: str, train_examples: int, eval_examples: int,
                     seed: int, test_examples: int = 0) -> dict[str, list[Example]]:
    """train, val and test as the module docstring says; no puzzle in two splits. The test split
    holds `test_examples` puzzles (eval_examples where 0), all of the published one where it has fewer."""
    train_rows = read_rows(source, "train")
    single_file = not source.startswith("hf:") and not Path(source).expanduser().is_dir()
    rng = random.Random(seed)
    test_count = test_examples or eval_examples
    if single_file:
        rng.shuffle(train_rows)
        test_rows, train_rows = train_rows[:test_count], train_rows[test_count:]
    else:
        test_rows = read_rows(source, "test")
        if test_count < len(test_rows):
            test_rows = rng.sample(test_rows, test_count)
    if train_examples + eval_examples > len(train_rows):
        raise UserError(f"task.train_examples {train_examples} + task.eval_examples {eval_examples} (val) is more "
                        f"than the {len(train_rows)} training puzzles of {source}")
    chosen = rng.sample(train_rows, train_examples + eval_examples)
    splits = {"train": chosen[:train_examples], "val": chosen[train_examples:], "test": test_rows}
    return {name: [to_example(task_name, row) for row in rows] for name, rows in splits.items()}
