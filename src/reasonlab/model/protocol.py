"""What every model provides, the baseline and each recursive arm alike: the engine, evaluation,
generation, the harness and export call models only through this."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from reasonlab.model.outputs import ModelOutput, StepLoss
from reasonlab.model.transformer import MoETransformerLM


@runtime_checkable
class LanguageModel(Protocol):
    core: MoETransformerLM  # embedding, block stack and head (the baseline is its own)
    every_pass: bool  # run every segment and pass, no early stops: what decoding through a KV cache needs

    def run(self, input_ids: torch.Tensor, segments: int | None = None, depth: int | None = None) -> ModelOutput:
        """Inference logits; `segments` and `depth` force a recursive arm's test-time compute."""
        ...

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                carry: Any = None) -> torch.Tensor | StepLoss:
        """Logits, or with targets one training step's losses, continuing from `carry` where the
        arm carries its state across steps (StepLoss.carry is the next step's, else None)."""
        ...

    def configure_memory(self, activation_checkpointing: bool, loss_chunk_tokens: int) -> None: ...
