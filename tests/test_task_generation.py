"""Drawing a task's splits: the same instances at any number of workers, cached on disk, the
stream of generator 1 for runs stored before generator 2, and hard 9x9 sudokus."""

import random

import pytest

from reasonlab.cli import main
from reasonlab.config import TaskConfig, config_from_dict
from reasonlab.errors import UserError
from reasonlab.tasks import generate, sudoku
from reasonlab.tasks.dataset import TaskData
from reasonlab.tasks.generate import build_splits, task_from_config
from reasonlab.tasks.sudoku import Sudoku, solve

SUDOKU = TaskConfig(name="sudoku", size=4, format="grid", train_examples=120, eval_examples=16)


def _keys(splits):
    return {split: [e.key for e in examples] for split, examples in splits.items()}


def test_workers_draw_the_instances_one_process_draws(monkeypatch):
    """Worker processes start at once (no serial phase) and draw in chunks; the splits are the
    single process's, in the same order."""
    task = task_from_config(SUDOKU)
    alone = build_splits(task, SUDOKU, workers=1)
    monkeypatch.setattr(generate, "SERIAL_SECONDS", 0.0)
    assert _keys(build_splits(task, SUDOKU, workers=2)) == _keys(alone)
    assert [len(alone[s]) for s in ("train", "val", "test")] == [120, 16, 16]


def test_a_second_run_reads_the_cache_and_other_settings_miss_it(tmp_path, monkeypatch):
    first = TaskData(SUDOKU, tmp_path)
    assert len(list((tmp_path / "tasks").glob("sudoku-*.json"))) == 1
    generate._splits.cache_clear()
    def generated(*args, **kwargs):
        raise RuntimeError("generated")

    monkeypatch.setattr(generate, "build_splits", generated)
    again = TaskData(TaskConfig(**{**vars(SUDOKU), "format": "seq", "augment": True}), tmp_path)
    assert all(again.splits[s].examples == first.splits[s].examples for s in ("train", "val", "test"))
    with pytest.raises(RuntimeError, match="generated"):  # another seed is another entry
        TaskData(TaskConfig(**{**vars(SUDOKU), "seed": 9}), tmp_path)


def test_a_stored_task_run_without_the_key_draws_generator_1s_stream(tmp_path):
    """Generator 1 is one stream a split, seeded seed * 3 + the split's place (test, val, train),
    each instance's level then the instance drawn from it: checked against that rule written here."""
    stored = config_from_dict({"task": {"name": "sudoku", "size": 4, "train_examples": 30, "eval_examples": 8}})
    assert stored.task.generator == 1
    assert config_from_dict({"task": {"name": ""}}).task.generator == 2  # language modelling: no tasks drawn
    data = TaskData(stored.task, tmp_path)
    task, bounds = Sudoku(4, generator=1), {"test": (9, 12), "val": (4, 8), "train": (4, 8)}
    taken: set[str] = set()
    for place, split in enumerate(("test", "val", "train")):
        rng, keys = random.Random(stored.task.seed * 3 + place), []
        while len(keys) < len(data.splits[split].examples):
            key = task.sample(rng, rng.randint(*bounds[split])).key
            if key not in taken and key not in keys:
                keys.append(key)
        assert keys == [e.key for e in data.splits[split].examples]
        taken |= set(keys)
    assert _keys({s: e.examples for s, e in data.splits.items()}) != _keys(
        build_splits(task_from_config(TaskConfig(**{**vars(stored.task), "generator": 2})), stored.task))


@pytest.mark.slow  # the hardest generation there is: seconds a puzzle
def test_9x9_sudokus_with_21_givens_are_unique_and_rated():
    task = Sudoku(9)
    for example in (task.sample(random.Random(seed), 60) for seed in range(2)):
        grid = [0 if v == "." else int(v) for v in example.prompt]
        assert sum(1 for v in grid if v) == 21
        solutions, search = solve(grid, 9)
        assert solutions == [tuple(int(v) for v in example.answer)] and search == example.difficulty


def test_an_unreachable_min_search_times_out_with_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sudoku, "TIMEOUT_S", 0.2)
    with pytest.raises(UserError, match=r"search >= 40 .* 0.2 s"):
        Sudoku(4, min_search=40).sample(random.Random(0), 12)
    out = tmp_path / "out"
    assert main(["tasks", "--task", "sudoku", "--size", "4", "--set", "task.min_search=40", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sudoku 4x4: no unique puzzle") and "\n" not in err and not out.exists()
