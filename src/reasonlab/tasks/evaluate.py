"""Scoring a model on a task split: answer-token loss, then exact match and per-token accuracy.

The loss is teacher-forced over the answer tokens. The answers are the model's own: in the seq
format decoded greedily token by token from prompt + "=" (through the KV cache), in the grid
format every cell's argmax from the same pass that gave the loss. An answer is exactly right when
the task accepts it (a maze may have several shortest paths); per-token accuracy compares it with
the generated answer position by position.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from reasonlab.data.tokenizer import Tokenizer
from reasonlab.model.generate import forced_compute, greedy
from reasonlab.model.loss import IGNORE_INDEX
from reasonlab.model.outputs import ModelOutput
from reasonlab.tasks.base import Task

if TYPE_CHECKING:
    from reasonlab.tasks.dataset import EncodedSplit


@dataclass
class SplitResult:
    metrics: dict[str, float]  # loss, perplexity, accuracy (per answer token), exact_match, and segments if recursive
    predictions: list[tuple[str, ...]]  # each example's answer as the model gave it
    correct: list[bool]  # each example's answer accepted by the task
    token_accuracy: list[float]  # each example's share of answer tokens equal to the reference


def _grid_answers(out: ModelOutput, targets: torch.Tensor) -> list[list[int]]:
    predicted = out.logits.argmax(dim=-1)
    return [row[mask].tolist() for row, mask in zip(predicted, targets != IGNORE_INDEX)]


def _greedy_answers(model: nn.Module, forced: dict[str, int], autocast: Callable[[], AbstractContextManager],
                    inputs: torch.Tensor, targets: torch.Tensor) -> list[list[int]]:
    """Decode every row's answer from its own prompt + "=", rows of equal shape in one batch,
    through the KV cache (model/generate.py `greedy`)."""
    answers: list[list[int]] = [[] for _ in range(len(inputs))]
    shapes: dict[tuple[int, int], list[int]] = defaultdict(list)
    valid = targets != IGNORE_INDEX
    for i in range(len(inputs)):
        start = int(valid[i].int().argmax())  # the separator's position: the first answer target
        shapes[(start, int(valid[i].sum()))].append(i)
    for (start, length), rows in shapes.items():
        with autocast():
            decoded = greedy(model, inputs[rows, : start + 1], length, **forced)
        for row, answer in zip(rows, decoded.tolist()):
            answers[row] = answer
    return answers


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    task: Task,
    split: EncodedSplit,
    tokenizer: Tokenizer,
    fmt: str,
    batch_size: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    segments: int | None = None,
    depth: int | None = None,
) -> SplitResult:
    """`segments` makes a recursive model run exactly that many segments, `depth` forces its inner
    recursion to that depth (test-time compute); None leaves either as the model trained."""
    was_training = model.training
    model.eval()
    forced = forced_compute(segments, depth)

    def run(x: torch.Tensor) -> ModelOutput:
        with autocast():
            return model.run(x, **forced)

    loss_sum, count, segment_sum = 0.0, 0, 0.0
    answer_ids: list[list[int]] = []
    for i in range(0, len(split.examples), batch_size):
        x, y = split.inputs[i : i + batch_size].to(device), split.targets[i : i + batch_size].to(device)
        out = run(x)
        valid = y != IGNORE_INDEX
        loss_sum += F.cross_entropy(out.logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += int(valid.sum())
        if out.segments is not None:
            segment_sum += out.segments[valid].float().sum().item()
        if fmt == "grid":
            answer_ids += _grid_answers(out, y)
        else:
            answer_ids += _greedy_answers(model, forced, autocast, x, y)
    model.train(was_training)

    predictions = [tuple(tokenizer.backend.id_to_token(t) for t in ids) for ids in answer_ids]
    correct = [task.check(e, p) for e, p in zip(split.examples, predictions)]
    token_accuracy = [sum(a == b for a, b in zip(p, e.answer)) / len(e.answer)
                      for e, p in zip(split.examples, predictions)]
    loss = loss_sum / count
    metrics = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "accuracy": sum(token_accuracy) / len(token_accuracy),
        "exact_match": sum(correct) / len(correct),
        "tokens": count,
    }
    if segment_sum:
        metrics["segments"] = segment_sum / count
    return SplitResult(metrics, predictions, correct, token_accuracy)
