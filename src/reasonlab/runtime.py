"""Device and precision choice: one place that decides where and in what dtype the math runs."""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, ContextManager

import torch

from reasonlab.config import TrainConfig
from reasonlab.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda requested but no CUDA device is available")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on CUDA devices that support it, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return precision


def autocast_factory(precision: str, device: torch.device) -> Callable[[], ContextManager]:
    """A zero-argument context factory: bf16 autocast (weights stay fp32) or nothing."""
    if precision == "bf16":
        return functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def runtime(cfg: TrainConfig) -> tuple[torch.device, str, Callable[[], ContextManager]]:
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    return device, precision, autocast_factory(precision, device)
