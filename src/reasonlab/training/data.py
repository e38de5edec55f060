"""What the trainer trains on: a text corpus or a generated reasoning task, behind one interface.

Both give a tokenizer (saved with every checkpoint), adjust the model config to it, hand out a
resumable train sampler for this process's rank, and evaluate a model into a dict of metrics
with at least `loss` (by which the best checkpoint is picked), `perplexity` and `accuracy`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from reasonlab.config import Config, TaskConfig
from reasonlab.data import BatchSampler, Corpus, prepare_corpus
from reasonlab.data.corpus import cache_root
from reasonlab.data.tokenizer import Tokenizer
from reasonlab.errors import UserError
from reasonlab.tasks.dataset import TaskData
from reasonlab.training.evaluate import evaluate


class Sampler(Protocol):
    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def state_dict(self) -> dict[str, int]: ...
    def load_state_dict(self, state: dict[str, int]) -> None: ...


class TrainingData(Protocol):
    tokenizer: Tokenizer

    def adjust_config(self, cfg: Config) -> Config: ...
    def sampler(self, cfg: Config, rank: int, world: int) -> Sampler: ...
    def evaluate(self, model: nn.Module, cfg: Config, device: torch.device,
                 autocast: Callable[[], AbstractContextManager]) -> dict[str, float]: ...


class TextData:
    """Language modelling: windows of the corpus's token streams."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self.tokenizer = corpus.tokenizer

    def adjust_config(self, cfg: Config) -> Config:
        """The model's vocab is the tokenizer's, whatever size was asked for."""
        if len(self.corpus.val) < cfg.model.seq_len + 1:
            raise UserError(f"the val split has {len(self.corpus.val)} tokens, fewer than one window of "
                            f"{cfg.model.seq_len + 1}; use a larger corpus or a smaller model.seq_len")
        if len(self.corpus.train) < cfg.train.batch_size * (cfg.model.seq_len + 1):
            raise UserError(f"model.seq_len {cfg.model.seq_len}: the train split has {len(self.corpus.train)} tokens, "
                            f"fewer than one batch of {cfg.train.batch_size} windows of {cfg.model.seq_len + 1}; "
                            "use a larger corpus or a smaller model.seq_len or train.batch_size")
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=self.tokenizer.vocab_size))

    def sampler(self, cfg: Config, rank: int, world: int) -> BatchSampler:
        return BatchSampler(self.corpus.train, cfg.model.seq_len, cfg.train.batch_size, cfg.train.seed, rank, world)

    def evaluate(self, model: nn.Module, cfg: Config, device: torch.device,
                 autocast: Callable[[], AbstractContextManager]) -> dict[str, float]:
        t = cfg.train
        return evaluate(model, self.corpus.val, cfg.model.seq_len, t.batch_size, t.eval_batches, device, autocast)


def prepare_data(cfg: Config) -> TrainingData:
    """The task's generated splits when `task.name` is set, else the tokenized corpus."""
    if cfg.task.name:
        return _task_data(tuple(vars(cfg.task).items()), str(cache_root(cfg.data)))
    return TextData(prepare_corpus(cfg.data, cfg.model.vocab_size))


@functools.lru_cache(maxsize=2)
def _task_data(settings: tuple[tuple[str, object], ...], cache_dir: str) -> TaskData:
    """A task's encoded splits, built once a process: a study trains every arm and seed on them (a
    second of encoding each at 20,000 instances), and nothing writes to them."""
    return TaskData(TaskConfig(**dict(settings)), Path(cache_dir))
