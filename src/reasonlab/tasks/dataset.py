"""A task's three splits (tasks/generate.py draws them) encoded as padded id tensors.

- train: `train_examples` instances at the train levels;
- val: held-out instances at the train levels, evaluated during training;
- test: instances at the harder levels, evaluated after training.

Two formats:
- seq: prompt, "=", answer; a causal model predicts the answer token by token and only the
  answer tokens carry loss;
- grid: the prompt alone as input and the answer cell at each position as target, all predicted
  in one pass (aligned tasks only; usually with model.causal false).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from reasonlab.config import Config, DataConfig, TaskConfig
from reasonlab.data.corpus import cache_root
from reasonlab.data.sampler import RowSampler
from reasonlab.data.tokenizer import Tokenizer, word_tokenizer
from reasonlab.errors import UserError
from reasonlab.model.loss import IGNORE_INDEX
from reasonlab.tasks.base import Example, Task
from reasonlab.tasks.evaluate import SplitResult, evaluate_split
from reasonlab.tasks.generate import draw_splits, levels, task_from_config

SEP = "="
PAD = "<pad>"


@dataclass
class EncodedSplit:
    examples: list[Example]
    inputs: torch.Tensor  # [N, T] token ids, padded with PAD
    targets: torch.Tensor  # [N, T] answer ids where the loss counts, IGNORE_INDEX elsewhere


def encode(examples: list[Example], tokenizer: Tokenizer, fmt: str, width: int = 0) -> EncodedSplit:
    """Padded id tensors of the examples, at least `width` tokens wide (encoded as one batch: a task
    run encodes tens of thousands of instances)."""
    prompts = tokenizer.encode_batch([" ".join(e.prompt) for e in examples])
    answers = tokenizer.encode_batch([" ".join(e.answer) for e in examples])
    if fmt == "grid":
        rows, targets = prompts, answers
    else:  # the answer's first token is predicted at the separator
        sep = tokenizer.encode(SEP)
        rows = [prompt + sep + answer[:-1] for prompt, answer in zip(prompts, answers)]
        targets = [[IGNORE_INDEX] * len(prompt) + answer for prompt, answer in zip(prompts, answers)]
    width = max(width, *(len(r) for r in rows))
    return EncodedSplit(examples, _padded(rows, width, tokenizer.eot_id), _padded(targets, width, IGNORE_INDEX))


def _padded(rows: list[list[int]], width: int, fill: int) -> torch.Tensor:
    """[len(rows), width] int64 ids, each row filled up with `fill`."""
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return torch.from_numpy(out)


class TaskData:
    """A reasoning task as the trainer sees it: a tokenizer, a train sampler and an evaluation."""

    def __init__(self, cfg: TaskConfig, cache_dir: Path | None = None):
        """`cache_dir`: where generated splits are cached (data.cache_dir's default where None)."""
        self.cfg = cfg
        examples = draw_splits(cfg, cache_dir or cache_root(DataConfig()))
        if cfg.source:  # a published set: the grid size and the levels are the data's
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
        self.splits = {name: encode(found, self.tokenizer, cfg.format) for name, found in examples.items()}

    @property
    def seq_len(self) -> int:
        return max(split.inputs.shape[1] for split in self.splits.values())

    def adjust_config(self, cfg: Config) -> Config:
        """The model's vocab is the task's; its context, the longest example of any split."""
        if cfg.model.positions == "2d" and not self.task.square:
            raise UserError(f"model.positions 2d: {self.task.name} is not a square grid (sudoku and maze are)")
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
