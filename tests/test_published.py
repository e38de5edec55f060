"""task.source: published sets in HRM's CSV layout (source, question, answer, rating), here small local
files written in that layout; nothing touches the network."""

import csv
import random

import pytest

from reasonlab.config import TaskConfig
from reasonlab.errors import UserError
from reasonlab.tasks.dataset import TaskData
from reasonlab.tasks.registry import get_task

pytest.importorskip("datasets")


def write_set(folder, rows_by_split, header=("source", "question", "answer", "rating")):
    folder.mkdir(exist_ok=True)
    for split, rows in rows_by_split.items():
        with (folder / f"{split}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
    return folder


def sudoku_rows(count, seed):
    task, rng = get_task("sudoku", 9), random.Random(seed)
    examples = [task.sample(rng, rng.randint(40, 50)) for _ in range(count)]
    return [("gen", "".join(e.prompt), "".join(e.answer), e.difficulty + 7) for e in examples]


def maze_rows(count, seed):
    task, rng = get_task("maze", 9), random.Random(seed)
    published = {".": " ", "E": "G"}
    rows = []
    for _ in range(count):
        e = task.sample(rng, rng.randint(6, 14))
        rows.append(("gen", "".join(published.get(c, c) for c in e.prompt),
                     "".join(published.get(c, c) for c in e.answer), e.level))
    return rows


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_a_published_sudoku_set_gives_the_train_subset_val_and_the_test_split(tmp_path):
    train, test = sudoku_rows(40, 1), sudoku_rows(12, 2)
    folder = write_set(tmp_path / "sudoku-extreme", {"train": train, "test": test})
    data = TaskData(TaskConfig(name="sudoku", source=str(folder), train_examples=20, eval_examples=8, format="grid"))
    examples = {split: data.splits[split].examples for split in ("train", "val", "test")}
    assert [len(examples[s]) for s in ("train", "val", "test")] == [20, 8, 8] and data.task.size == 9
    keys = [{e.key for e in examples[s]} for s in ("train", "val", "test")]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    published = {q: (a, int(r)) for _, q, a, r in train + test}
    for e in (e for split in examples.values() for e in split):
        answer, rating = published["".join(e.prompt)]
        assert "".join(e.answer) == answer and e.difficulty == rating and e.level == e.prompt.count(".")
        assert data.task.check(e, e.answer)
    again = TaskData(TaskConfig(name="sudoku", source=str(folder), train_examples=20, eval_examples=8, format="grid"))
    assert [e.key for e in again.splits["train"].examples] == [e.key for e in examples["train"]]  # seeded
    whole = TaskData(TaskConfig(name="sudoku", source=str(folder), train_examples=20, eval_examples=8,
                                test_examples=1_000_000, format="grid"))
    assert len(whole.splits["val"].examples) == 8 and len(whole.splits["test"].examples) == 12  # all of the split


def test_a_published_maze_set_reads_its_characters(tmp_path):
    folder = write_set(tmp_path / "maze-hard", {"train": maze_rows(30, 3), "test": maze_rows(5, 4)})
    data = TaskData(TaskConfig(name="maze", source=str(folder), train_examples=10, eval_examples=16))
    assert len(data.splits["test"].examples) == 5  # the whole published test split when it is smaller
    for e in data.splits["train"].examples + data.splits["test"].examples:
        assert data.task.check(e, e.answer) and e.level == e.answer.count("o") + 1


def test_bad_published_sets_are_refused_in_one_line(tmp_path):
    rows = sudoku_rows(10, 5)
    wrong = write_set(tmp_path / "wrong", {"train": rows, "test": rows}, header=("id", "puzzle", "solution", "level"))
    with pytest.raises(UserError, match=r"unknown column layout \['id', 'puzzle', 'solution', 'level'\]"):
        TaskData(TaskConfig(name="sudoku", source=str(wrong), train_examples=4, eval_examples=2))
    small = write_set(tmp_path / "small", {"train": rows, "test": rows})
    with pytest.raises(UserError, match=r"task.train_examples 1000 \+ task.eval_examples 2 \(val\) is more than the "
                                        r"10 training puzzles"):
        TaskData(TaskConfig(name="sudoku", source=str(small), train_examples=1000, eval_examples=2))
    with pytest.raises(UserError, match="task.size 4: the puzzles of .* are 9x9"):
        TaskData(TaskConfig(name="sudoku", size=4, source=str(small), train_examples=4, eval_examples=2))
