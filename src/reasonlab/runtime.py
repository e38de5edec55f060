"""Device and precision choice: one place that decides where and in what dtype the math runs."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import platform
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch

from reasonlab.config import TrainConfig
from reasonlab.errors import UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: cuda requested but no CUDA device is available")
    return torch.device(name)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
NATIVE_BF16 = ("AMX", "AVX512-BF16")  # the x86 capabilities with bf16 matmul instructions


def _cpu_flags() -> set[str]:
    """The feature flags /proc/cpuinfo lists (empty where there is no such file)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@functools.cache
def cpu_capability() -> str:
    """The widest matmul instructions torch uses on this CPU: AMX, AVX512-BF16, AVX-512 or AVX2 on x86
    (torch's own name elsewhere).

    torch's dispatch level comes first, so a process that torch keeps to AVX2
    (ATEN_CPU_CAPABILITY=avx2) is an AVX2 machine here too; the bf16 extensions come from the CPU's flags.
    """
    isa = torch.backends.cpu.get_cpu_capability()
    if isa.startswith("AVX512"):
        flags = _cpu_flags()
        if "amx_bf16" in flags:
            return "AMX"
        if "avx512_bf16" in flags:
            return "AVX512-BF16"
        return "AVX-512"
    return isa


def cpu_has_native_bf16() -> bool:
    """Whether bf16 matmuls run on bf16 instructions here. An x86 CPU without them converts every
    element in software: 100x slower than fp32 on an AVX2 EPYC. Elsewhere (ARM) torch decides, and
    nothing is refused."""
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
    return not x86 or cpu_capability() in NATIVE_BF16


def matmul_peak(precision: str, device: torch.device, budget_s: float = 2.0, target_s: float = 0.02) -> float:
    """Best FLOP/s of a square matmul in `precision`: the ceiling MFU is measured against.

    The size doubles from 256 until one timing (of as many products as make `target_s` on a GPU,
    where small products are launch-bound) takes `target_s`, up to 4096 on a CPU and 8192 on a GPU,
    and while the next size would still fit the budget; the rest of `budget_s` repeats the last
    size. A CPU fills at 1-2k; a slow dtype (software bf16) stops small, so this ends in about
    `budget_s` on any machine.
    """
    dtype, cap = DTYPES[precision], 8192 if device.type == "cuda" else 4096
    deadline = time.perf_counter() + budget_s
    n, best = 256, 0.0
    while True:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        _timed_mm(a, b, 1, device)  # warm-up: the kernel's first call may compile or allocate
        inner = 1 if device.type == "cpu" else max(1, math.ceil(target_s / _timed_mm(a, b, 1, device)))
        took = _timed_mm(a, b, inner, device)
        best = max(best, 2 * n**3 * inner / took)
        if took >= target_s or n >= cap or time.perf_counter() + 3 * 8 * took > deadline:
            break
        n *= 2
    while time.perf_counter() + took < deadline:
        best = max(best, 2 * n**3 * inner / _timed_mm(a, b, inner, device))
    return best


def _timed_mm(a: torch.Tensor, b: torch.Tensor, inner: int, device: torch.device) -> float:
    synchronize(device)
    tic = time.perf_counter()
    for _ in range(inner):
        torch.mm(a, b)
    synchronize(device)
    return time.perf_counter() - tic


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on CUDA devices that support it, fp32 elsewhere. bf16 on a CPU without bf16
    instructions is refused, with what it would cost measured."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        fp32, bf16 = (matmul_peak(p, device, budget_s=0.2) for p in ("fp32", "bf16"))
        raise UserError(f"train.precision bf16: this CPU ({cpu_capability()}) has no bf16 instructions, and a "
                        f"bf16 matmul here ran at {bf16 / 1e9:.1f} GFLOP/s against {fp32 / 1e9:.1f} in fp32 "
                        f"({fp32 / bf16:.0f}x slower); set train.precision=fp32")
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


def check_runtime(cfg: TrainConfig) -> None:
    """Refuse, before anything is built or written, a device or precision this machine cannot run well."""
    resolve_precision(cfg.precision, resolve_device(cfg.device))


def runtime(cfg: TrainConfig) -> tuple[torch.device, str, Callable[[], AbstractContextManager]]:
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    return device, precision, autocast_factory(precision, device)
