"""task.augment: every variant is valid, unique where the instance was, and its answer is the
transformed answer; batches draw fresh variants deterministically from the sampler's state."""

import contextlib
import json
import random

import pytest
import torch

from reasonlab.config import TaskConfig, resolve_config
from reasonlab.errors import UserError
from reasonlab.experiments.arms import Arm
from reasonlab.experiments.tasks import _task_data
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


def test_a_symmetry_maps_answers_back():
    for name, size in (("sudoku", 9), ("sudoku", 6), ("maze", 7)):
        task, rng = get_task(name, size), random.Random(1)
        example = task.sample(rng, task.default_levels()[0][0])
        for _ in range(10):
            s = task.symmetry(rng)
            assert s.undo(s.apply(example.answer)) == example.answer


class Oracle(torch.nn.Module):
    """Answers every grid right: the logits put each cell's solved digit first."""

    def __init__(self, task, tokenizer):
        super().__init__()
        self.task, self.tokenizer = task, tokenizer

    every_pass = False  # a LanguageModel (model/protocol.py), as decoding calls it

    @property
    def core(self):
        return self

    def run(self, x):
        from reasonlab.model.outputs import ModelOutput
        from reasonlab.tasks.sudoku import solve

        rows = []
        for row in x.tolist():
            grid = [0 if self.tokenizer.decode([i]).strip() == "." else int(self.tokenizer.decode([i])) for i in row]
            rows.append([self.tokenizer.encode(str(d))[0] for d in solve(grid, self.task.size)[0][0]])
        logits = torch.nn.functional.one_hot(torch.tensor(rows), self.tokenizer.vocab_size).float()
        return ModelOutput(logits, torch.zeros(()))


def test_voting_maps_every_variant_back_onto_its_instance():
    data = TaskData(TaskConfig(name="sudoku", size=4, format="grid", train_examples=64, eval_examples=16))
    oracle = Oracle(data.task, data.tokenizer)
    voted = data.vote(oracle, "test", 5, 8, torch.device("cpu"), contextlib.nullcontext)
    assert voted == 1.0  # every variant's answer, mapped back, is the instance's solution


@pytest.mark.slow  # trains a tiny model
def test_eval_vote_prints_the_voted_exact_match_beside_the_single_pass(tmp_path, capsys):
    from reasonlab.cli import main

    run = tmp_path / "run"
    assert main(["train", "--config", "cpu-tiny", "--out", str(run), "--quiet", "--max-steps", "30",
                 "--set", "task.name=sudoku", "--set", "task.format=grid", "--set", "model.causal=false",
                 "--set", "task.train_examples=256", "--set", "task.eval_examples=16",
                 "--set", "train.eval_every=30"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run / "checkpoints" / "final"), "--vote", "4", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0.0 <= scores["test"]["exact_match_vote"] <= 1.0 and "exact_match" in scores["test"]
    assert main(["eval", str(run / "checkpoints" / "final"), "--vote", "0"]) == 2


def test_arms_may_differ_in_augmentation_alone(tmp_path):
    """Augmentation on against off is a comparison of arms on the same instances; another task is not."""
    cfg = resolve_config(None, {"task.name": "sudoku", "task.size": 4, "task.format": "grid", "task.train_examples": 32,
                                "task.eval_examples": 8, "data.cache_dir": str(tmp_path)})
    augmented = resolve_config(None, {**{f"task.{k}": v for k, v in vars(cfg.task).items()}, "task.augment": True,
                                      "data.cache_dir": str(tmp_path)})
    data = _task_data({"a": Arm("a", "a", cfg), "b": Arm("b", "b", augmented)})
    assert not data.cfg.augment and len(data.splits["train"].examples) == 32
    bigger = resolve_config(None, {**{f"task.{k}": v for k, v in vars(cfg.task).items()}, "task.size": 6})
    with pytest.raises(UserError, match="differ in task.size"):
        _task_data({"a": Arm("a", "a", cfg), "b": Arm("b", "b", bigger)})
