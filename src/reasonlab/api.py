"""The Python API the CLI is built on: load a checkpoint, generate, train."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reasonlab.config import Config, resolve_config, with_overrides
from reasonlab.data.tokenizer import Tokenizer
from reasonlab.errors import UserError
from reasonlab.io import resolve_dir
from reasonlab.model import build_model
from reasonlab.model.generate import sample
from reasonlab.runtime import resolve_device
from reasonlab.training import trainer
from reasonlab.training.checkpoint import load_weights, read_config


@dataclass
class LoadedModel:
    """A trained model ready for inference: `.model(input_ids)` returns logits [batch, seq, vocab]."""

    model: nn.Module
    tokenizer: Tokenizer
    config: Config
    device: torch.device

    def generate(self, prompt: str, max_new_tokens: int = 50, temperature: float = 0.8, top_k: int = 0,
                 seed: int = 0, use_cache: bool = True) -> str:
        """The prompt followed by up to `max_new_tokens` sampled tokens (stops at end-of-text); with
        `use_cache`, through a KV cache (model/generate.py)."""
        return self.generate_with_segments(prompt, max_new_tokens, temperature, top_k, seed, use_cache)[0]

    def generate_with_segments(self, prompt: str, max_new_tokens: int = 50, temperature: float = 0.8, top_k: int = 0,
                               seed: int = 0, use_cache: bool = True) -> tuple[str, list[int]]:
        """Like `generate`, plus the recursion segment each new token came from (empty for the baseline)."""
        ids = self.tokenizer.encode(prompt)
        context = self.config.model.seq_len
        if not ids:
            raise UserError("the prompt is empty")
        if len(ids) > context:
            raise UserError(f"the prompt is {len(ids)} tokens, longer than the model's context of {context}")
        if not temperature >= 0:
            raise UserError(f"temperature must be >= 0, got {temperature}")
        if top_k < 0:
            raise UserError(f"top_k must be >= 0, got {top_k}")
        generator = torch.Generator().manual_seed(seed)
        out, segments = sample(self.model, torch.tensor([ids], device=self.device), max_new_tokens, context,
                               temperature, top_k, generator, self.tokenizer.eot_id, use_cache)
        return self.tokenizer.decode(out[0].tolist()), segments


def load(checkpoint_dir: str | Path, device: str = "auto") -> LoadedModel:
    """Load a checkpoint folder (e.g. runs/x/checkpoints/best) for inference, in eval mode."""
    directory = resolve_dir(checkpoint_dir)
    if not directory.is_dir():
        raise UserError(f"checkpoint not found: {checkpoint_dir}")
    if (directory / "checkpoints").is_dir():
        raise UserError(f"{checkpoint_dir} is a run directory, not a checkpoint: "
                        f"pass {Path(checkpoint_dir) / 'checkpoints' / 'best'} (or final, or step_N)")
    cfg = read_config(directory)
    dev = resolve_device(device)
    model = build_model(cfg)
    load_weights(directory, model)
    tokenizer = Tokenizer.load(directory)
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise UserError(f"checkpoint {directory}: its tokenizer has {tokenizer.vocab_size} tokens, more than the "
                        f"model's vocab_size {cfg.model.vocab_size}: not the model's tokenizer")
    return LoadedModel(model.to(dev).eval(), tokenizer, cfg, dev)


def train(config: Config | str | Path | None = None, out: str | Path | None = None,
          overrides: dict[str, Any] | None = None, quiet: bool = False) -> Path:
    """Train a new run (a Config or a YAML path, plus dotted-key overrides); return its run directory."""
    if isinstance(config, Config):
        cfg = with_overrides(config, overrides) if overrides else config
    else:
        cfg = resolve_config(config, overrides)
    if out is None:
        out = Path("runs") / f"{cfg.model.arch}-{datetime.now():%Y%m%d-%H%M%S}"
    return trainer.train(cfg, out, quiet)


def resume(run_dir: str | Path, max_steps: int | None = None, quiet: bool = False) -> Path:
    """Continue a killed run, or extend a finished one to `max_steps`."""
    return trainer.resume(run_dir, max_steps, quiet)
