"""Batches of (input, target) windows from a token stream, with state a checkpoint can restore."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from reasonlab.errors import UserError


def _windows(tokens: np.ndarray, starts: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.stack([np.asarray(tokens[s : s + seq_len + 1], dtype=np.int64) for s in starts.tolist()])
    block = torch.from_numpy(rows)
    return block[:, :-1], block[:, 1:]


class BatchSampler:
    """Shuffled, non-overlapping windows of `seq_len + 1` tokens, one epoch after another.

    Each epoch draws a random start offset and a permutation of the windows from a generator
    seeded by (seed, epoch), so the whole state is (seed, epoch, position): a resumed run
    gets exactly the batches the uninterrupted run would have. Under data parallelism every
    process draws the same global batch and keeps its own contiguous slice of it (`rank` of
    `world`), so the processes together see exactly what one process would.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if (len(tokens) - seq_len - 1) // seq_len < batch_size:
            raise UserError(
                f"the train split has {len(tokens)} tokens, too few for one batch of "
                f"{batch_size} x {seq_len + 1}; use a larger corpus or smaller train.batch_size/model.seq_len"
            )
        self.tokens, self.seq_len, self.batch_size, self.seed = tokens, seq_len, batch_size, seed
        self.rank, self.local_batch = rank, batch_size // world
        self.epoch, self.position = 0, 0
        self._starts = self._epoch_starts(0)

    def _epoch_starts(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        offset = int(torch.randint(0, self.seq_len, (1,), generator=gen))
        n = (len(self.tokens) - offset - 1) // self.seq_len
        return offset + torch.randperm(n, generator=gen) * self.seq_len

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.position + self.batch_size > len(self._starts):
            self.epoch, self.position = self.epoch + 1, 0
            self._starts = self._epoch_starts(self.epoch)
        starts = self._starts[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        mine = starts[self.rank * self.local_batch : (self.rank + 1) * self.local_batch]
        return _windows(self.tokens, mine, self.seq_len)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._starts = self._epoch_starts(self.epoch)


def eval_batches(
    tokens: np.ndarray, seq_len: int, batch_size: int, n_batches: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first `n_batches` batches of consecutive windows of the val stream: the same slice every time."""
    n_windows = min((len(tokens) - 1) // seq_len, n_batches * batch_size)
    if n_windows < 1:
        raise UserError(f"the val split has {len(tokens)} tokens, fewer than one window of {seq_len + 1}")
    starts = torch.arange(n_windows) * seq_len
    for i in range(0, n_windows, batch_size):
        yield _windows(tokens, starts[i : i + batch_size], seq_len)


class RowSampler:
    """Shuffled rows of a fixed example set (a reasoning task's train split), one epoch after
    another; the same (seed, epoch, position) state and rank slicing as BatchSampler."""

    def __init__(self, n_rows: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if n_rows < batch_size:
            raise UserError(f"the train split has {n_rows} examples, fewer than one batch of {batch_size}; "
                            "raise task.train_examples or lower train.batch_size")
        self.n_rows, self.batch_size, self.seed = n_rows, batch_size, seed
        self.rank, self.local_batch = rank, batch_size // world
        self.epoch, self.position = 0, 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n_rows, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))

    def next_rows(self) -> torch.Tensor:
        """Indices of this process's slice of the next batch."""
        if self.position + self.batch_size > self.n_rows:
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._epoch_order(self.epoch)
        rows = self._order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return rows[self.rank * self.local_batch : (self.rank + 1) * self.local_batch]

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._order = self._epoch_order(self.epoch)
