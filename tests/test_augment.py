"""task.augment: every variant is valid, unique where the instance was, and its answer is the
transformed answer; batches draw fresh variants deterministically from the sampler's state."""

import random

import pytest
import torch

from reasonlab.config import TaskConfig, resolve_config
from reasonlab.errors import UserError
from reasonlab.tasks.base import Example
from reasonlab.tasks.dataset import TaskData
from reasonlab.tasks.maze import START, bfs
from reasonlab.tasks.registry import get_task
from reasonlab.tasks.sudoku import solve


@pytest.mark.parametrize("size, blanks", [(4, 10), (6, 22), (9, 50)])
def test_sudoku_variants_are_valid_unique_and_carry_their_answer(size, blanks):
    task, rng = get_task("sudoku", size), random.Random(size)
    example = task.sample(rng, blanks)
    seen = set()
    for _ in range(30):
        variant = task.augment(example, rng)
        seen.add(variant.prompt)
        assert variant.prompt.count(".") == blanks and task.check(variant, variant.answer)
        solutions, _ = solve([0 if t == "." else int(t) for t in variant.prompt], size)
        assert solutions == [tuple(int(t) for t in variant.answer)]  # unique, and it is the answer
    assert len(seen) > 20  # fresh variants, not the instance again


def test_maze_variants_keep_the_shortest_path():
    task, rng = get_task("maze", 9), random.Random(0)
    example = task.sample(rng, 12)
    seen = set()
    for _ in range(40):
        variant = task.augment(example, rng)
        seen.add(variant.prompt)
        start, end = variant.prompt.index(START), variant.prompt.index("E")
        assert bfs(variant.prompt, 9, start)[0][end] == 12 and task.check(variant, variant.answer)
        assert sorted(variant.prompt) == sorted(example.prompt)
    assert len(seen) == 8  # the square's 8 symmetries (a random maze has none of its own)


def test_augmented_batches_are_fresh_valid_and_resume_exactly():
    cfg = TaskConfig(name="sudoku", size=4, format="grid", train_examples=64, eval_examples=16, augment=True)
    data = TaskData(cfg)
    plain = TaskData(TaskConfig(**{**vars(cfg), "augment": False})).sampler
    run = resolve_config(None, {"train.batch_size": 8})
    sampler, twin = data.sampler(run, 0, 1), plain(run, 0, 1)
    first = sampler.next_batch()
    assert not torch.equal(first[0], twin.next_batch()[0])  # augmented, not the stored rows
    state = sampler.state_dict()
    batches = [sampler.next_batch() for _ in range(10)]  # across an epoch boundary (64 rows / 8)
    again = data.sampler(run, 0, 1)
    again.load_state_dict(state)
    for (x, y), (x2, y2) in zip(batches, (again.next_batch() for _ in range(10))):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    vocab, task = data.tokenizer, data.task
    for x, y in batches:
        for row, target in zip(x.tolist(), y.tolist()):
            prompt = tuple(vocab.decode([i]).strip() for i in row)
            answer = tuple(vocab.decode([i]).strip() for i in target)
            assert task.check(Example(prompt, answer, 0, 0), answer)


def test_augmentation_of_a_task_without_symmetries_is_refused():
    with pytest.raises(UserError, match="task.augment: addition has no validity-preserving augmentation"):
        TaskData(TaskConfig(name="addition", augment=True, train_examples=64, eval_examples=16))
