"""Device and precision choice: one place that decides where and in what dtype the math runs."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import platform
from collections.abc import Callable
from contextlib import AbstractContextManager

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


def autocast_factory(precision: str, device: torch.device) -> Callable[[], AbstractContextManager]:
    """A zero-argument context factory: bf16 autocast (weights stay fp32) or nothing."""
    if precision == "bf16":
        return functools.partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def keep_freed_memory() -> None:
    """Make glibc keep freed memory in the process instead of unmapping it, up to 128 MB a block.

    glibc serves allocations above 32 MB (a batch's logits, the experts' activations) with
    mmap and returns them to the OS on free, so every training step page-faulted them in again:
    a tenth of a step at cpu-bench. PyTorch's CPU tuning guide suggests jemalloc or tcmalloc
    for this; raising glibc's mmap and trim thresholds gets the same without a dependency.
    Blocks above 128 MB (a 2048-token chunk of full-vocabulary logits is 400 MB) are still
    mapped and unmapped: kept, they fragmented the heap, and the original study's full size
    with checkpointing and a chunked loss peaked at 8.6 GB RSS instead of 4.4 GB. No-op off glibc.

    It sets the allocator of the whole process, so the library never calls it by itself: the
    `reasonlab` command does, once at start; a Python program opts in with
    `reasonlab.keep_freed_memory()` before it trains.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 128 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a host clock times it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def runtime(cfg: TrainConfig) -> tuple[torch.device, str, Callable[[], AbstractContextManager]]:
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    return device, precision, autocast_factory(precision, device)
