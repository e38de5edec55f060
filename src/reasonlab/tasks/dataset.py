"""A task's three splits, drawn once from the dataset seed and encoded as padded id tensors.

- train: `train_examples` instances at the train levels;
- val: held-out instances at the train levels, evaluated during training;
- test: instances at the harder levels, evaluated after training.

No instance is in two splits (by its key, a hash of the prompt). Two formats:
- seq: prompt, "=", answer; a causal model predicts the answer token by token and only the
  answer tokens carry loss;
- grid: the prompt alone as input and the answer cell at each position as target, all predicted
  in one pass (aligned tasks only; usually with model.causal false).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import nn

from reasonlab.config import Config, TaskConfig
from reasonlab.data.sampler import RowSampler
from reasonlab.data.tokenizer import Tokenizer, word_tokenizer
from reasonlab.errors import UserError
from reasonlab.model.loss import IGNORE_INDEX
from reasonlab.tasks.base import Example, Task
from reasonlab.tasks.evaluate import SplitResult, evaluate_split
from reasonlab.tasks.published import published_splits
from reasonlab.tasks.registry import get_task

SEP = "="
PAD = "<pad>"
SPLITS = ("train", "val", "test")


@dataclass
class EncodedSplit:
    examples: list[Example]
    inputs: torch.Tensor  # [N, T] token ids, padded with PAD
    targets: torch.Tensor  # [N, T] answer ids where the loss counts, IGNORE_INDEX elsewhere


def task_from_config(cfg: TaskConfig) -> Task:
    task = get_task(cfg.name, cfg.size, cfg.reverse, cfg.min_search)
    if cfg.format == "grid" and not task.aligned:
        raise UserError("task.format: grid needs one answer token per prompt token, "
                        f"which {cfg.name} does not have; use seq")
    return task


def levels(task: Task, cfg: TaskConfig) -> dict[str, tuple[int, int]]:
    """The inclusive level ranges of train/val and test, the task's defaults where unset."""
    (train_lo, train_hi), (test_lo, test_hi) = task.default_levels()
    ranges = {
        "train": (cfg.train_min_level or train_lo, cfg.train_max_level or train_hi),
        "test": (cfg.test_min_level or test_lo, cfg.test_max_level or test_hi),
    }
    low, high = task.level_bounds()
    for split, (lo, hi) in ranges.items():
        if not low <= lo <= hi <= high:
            raise UserError(f"task.{split}_min_level/{split}_max_level: {task.name} needs "
                            f"{low} <= min <= max <= {high}, got {lo}-{hi}")
    return {"train": ranges["train"], "val": ranges["train"], "test": ranges["test"]}


def draw(task: Task, rng: random.Random, level_range: tuple[int, int], count: int, exclude: set[str]) -> list[Example]:
    """Up to `count` distinct instances, levels uniform over the range, none with a key in `exclude`.

    Small instance spaces (2-bit parity) run out: after 20 draws per wanted instance the split
    keeps what it has.
    """
    examples: dict[str, Example] = {}
    for _ in range(20 * count + 100):
        if len(examples) == count:
            break
        example = task.sample(rng, rng.randint(*level_range))
        if example.key not in exclude:
            examples.setdefault(example.key, example)
    return list(examples.values())


def build_splits(task: Task, cfg: TaskConfig) -> dict[str, list[Example]]:
    """Test first, then val, then train, each excluding the instances drawn before it."""
    ranges = levels(task, cfg)
    counts = {"test": cfg.eval_examples, "val": cfg.eval_examples, "train": cfg.train_examples}
    splits: dict[str, list[Example]] = {}
    taken: set[str] = set()
    for i, split in enumerate(("test", "val", "train")):
        examples = draw(task, random.Random(cfg.seed * 3 + i), ranges[split], counts[split], taken)
        if not examples:
            lo, hi = ranges[split]
            raise UserError(f"{task.name} has no {split} instances left at levels {lo}-{hi}; widen the level range")
        taken |= {e.key for e in examples}
        splits[split] = examples
    return {split: splits[split] for split in SPLITS}


@functools.lru_cache(maxsize=4)
def _cached_splits(settings: tuple[tuple[str, object], ...]) -> dict[str, list[Example]]:
    cfg = TaskConfig(**dict(settings))
    if cfg.source:
        return published_splits(cfg.name, cfg.source, cfg.train_examples, cfg.eval_examples, cfg.seed)
    return build_splits(task_from_config(cfg), cfg)


def draw_splits(cfg: TaskConfig) -> dict[str, list[Example]]:
    """build_splits, drawn once per process: every run of a study trains on the same splits,
    and large sudokus take a while to generate."""
    return _cached_splits(tuple(vars(cfg).items()))


def encode(examples: list[Example], tokenizer: Tokenizer, fmt: str, width: int = 0) -> EncodedSplit:
    """Padded id tensors of the examples, at least `width` tokens wide."""
    rows, targets = [], []
    for e in examples:
        prompt, answer = (tokenizer.encode(" ".join(part)) for part in (e.prompt, e.answer))
        if fmt == "grid":
            rows.append(prompt)
            targets.append(answer)
        else:  # the answer's first token is predicted at the separator
            rows.append(prompt + tokenizer.encode(SEP) + answer[:-1])
            targets.append([IGNORE_INDEX] * len(prompt) + answer)
    width = max(width, *(len(r) for r in rows))
    inputs = torch.full((len(rows), width), tokenizer.eot_id, dtype=torch.long)
    target_ids = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (row, target) in enumerate(zip(rows, targets)):
        inputs[i, : len(row)] = torch.tensor(row)
        target_ids[i, : len(target)] = torch.tensor(target)
    return EncodedSplit(examples, inputs, target_ids)


class TaskData:
    """A reasoning task as the trainer sees it: a tokenizer, a train sampler and an evaluation."""

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg
        if cfg.source:  # a published set: the grid size and the levels are the data's
            examples = draw_splits(cfg)
            size = math.isqrt(len(examples["train"][0].prompt))
            if cfg.size and cfg.size != size:
                raise UserError(f"task.size {cfg.size}: the puzzles of {cfg.source} are {size}x{size}")
            self.task = task_from_config(dataclasses.replace(cfg, size=size))
            self.levels = {split: (min(e.level for e in found), max(e.level for e in found))
                           for split, found in examples.items()}
        else:
            self.task = task_from_config(cfg)
            self.levels = levels(self.task, cfg)
        if cfg.augment and not self.task.augmentable:
            raise UserError(f"task.augment: {cfg.name} has no validity-preserving augmentation (sudoku and maze have)")
        self.tokenizer = word_tokenizer([SEP, *self.task.vocab()], PAD)
        self.splits = {name: encode(examples, self.tokenizer, cfg.format)
                       for name, examples in draw_splits(cfg).items()}

    @property
    def seq_len(self) -> int:
        return max(split.inputs.shape[1] for split in self.splits.values())

    def adjust_config(self, cfg: Config) -> Config:
        """The model's vocab is the task's; its context, the longest example of any split."""
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=self.tokenizer.vocab_size,
                                                                  seq_len=self.seq_len))

    def sampler(self, cfg: Config, rank: int, world: int) -> TaskBatches:
        augment = (self.task, self.tokenizer, self.cfg.format) if self.cfg.augment else None
        return TaskBatches(self.splits["train"], cfg.train.batch_size, cfg.train.seed, rank, world, augment)

    def evaluate(self, model: nn.Module, cfg: Config, device: torch.device,
                 autocast: Callable[[], AbstractContextManager]) -> dict[str, float]:
        """The val split's metrics (what training tracks and picks its best checkpoint by)."""
        return self.score(model, "val", cfg.train.batch_size, device, autocast).metrics

    def score(self, model: nn.Module, split: str, batch_size: int, device: torch.device,
              autocast: Callable[[], AbstractContextManager], segments: int | None = None,
              depth: int | None = None) -> SplitResult:
        """`segments` and `depth` force a recursive model's test-time compute (`evaluate_split`)."""
        return evaluate_split(model, self.task, self.splits[split], self.tokenizer, self.cfg.format, batch_size,
                              device, autocast, segments, depth)


    def vote(self, model: nn.Module, split: str, votes: int, batch_size: int, device: torch.device,
             autocast: Callable[[], AbstractContextManager]) -> float:
        """Exact match with test-time voting: each instance and `votes` - 1 symmetric variants of it
        are answered, every answer mapped back onto the instance, and the most frequent answer (the
        instance's own on a tie) is judged, as HRM and TRM vote over augmentations."""
        if not self.task.augmentable:
            raise UserError(f"--vote: {self.task.name} has no symmetries to vote over (sudoku and maze have)")
        encoded = self.splits[split]
        own = evaluate_split(model, self.task, encoded, self.tokenizer, self.cfg.format, batch_size, device, autocast)
        ballots = [Counter({answer: 1}) for answer in own.predictions]
        rng = random.Random(f"vote:{self.cfg.seed}:{split}")
        for _ in range(votes - 1):
            symmetries = [self.task.symmetry(rng) for _ in encoded.examples]
            variants = [Example(s.apply(e.prompt), s.apply(e.answer), e.level, e.difficulty)
                        for s, e in zip(symmetries, encoded.examples)]
            answered = evaluate_split(model, self.task, encode(variants, self.tokenizer, self.cfg.format),
                                      self.tokenizer, self.cfg.format, batch_size, device, autocast)
            for ballot, s, answer in zip(ballots, symmetries, answered.predictions):
                ballot[s.undo(answer)] += 1
        right = [self.task.check(e, ballot.most_common(1)[0][0]) for e, ballot in zip(encoded.examples, ballots)]
        return sum(right) / len(right)


class TaskBatches(RowSampler):
    """Shuffled batches of a split's rows, with the sampler state a checkpoint restores.

    With `augment` (the task, tokenizer and format), every row is a fresh symmetric variant of its
    instance (`Task.augment`), drawn from (seed, epoch, position, rank): so each epoch sees new
    variants, and a resumed run the ones the uninterrupted run would have seen.
    """

    def __init__(self, split: EncodedSplit, batch_size: int, seed: int, rank: int, world: int,
                 augment: tuple[Task, Tokenizer, str] | None = None):
        super().__init__(len(split.examples), batch_size, seed, rank, world)
        self.split, self.augment = split, augment

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        rng = random.Random(f"{self.seed}:{self.epoch}:{self.position}:{self.rank}")  # the state before the batch
        rows = self.next_rows()
        if self.augment is None:
            return self.split.inputs[rows], self.split.targets[rows]
        task, tokenizer, fmt = self.augment
        variants = [task.augment(self.split.examples[i], rng) for i in rows.tolist()]
        encoded = encode(variants, tokenizer, fmt, self.split.inputs.shape[1])
        return encoded.inputs, encoded.targets
