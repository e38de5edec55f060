"""`reasonlab bench`: this machine's matmul peak, then training-step throughput and MFU against it."""

from __future__ import annotations

import resource
import statistics
from typing import Any

import torch

from reasonlab.config import Config
from reasonlab.runtime import cpu_capability, matmul_peak, resolve_device, resolve_precision
from reasonlab.training.data import prepare_data
from reasonlab.training.engine import Engine


def peak_memory_mb(device: torch.device) -> float:
    """Peak of the memory the step lives in: GPU allocations on CUDA, the process's RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(cfg: Config, steps: int = 10, warmup: int = 3, peak_budget_s: float = 2.0) -> dict[str, Any]:
    """Time `steps` training steps after `warmup` untimed ones; report medians and spread.

    The matmul peak is timed in the run's own precision only, within `peak_budget_s`.
    """
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, device)
    peaks = {precision: matmul_peak(precision, device, peak_budget_s)}
    data = prepare_data(cfg)
    cfg = data.adjust_config(cfg)
    times, flops = Engine(cfg, data).timed_steps(steps, warmup)
    step_s = statistics.median(times)
    tokens = cfg.train.batch_size * cfg.model.seq_len
    flop_s = statistics.median(f / t for f, t in zip(flops, times))
    return {
        "arch": cfg.model.arch, "device": str(device), "cpu": cpu_capability(), "precision": precision,
        "threads": torch.get_num_threads(),
        "tokens_per_step": tokens, "steps": steps,
        "step_ms": {"median": 1000 * step_s, "min": 1000 * min(times), "max": 1000 * max(times)},
        "tokens_per_s": tokens / step_s, "flops_per_step": statistics.median(flops), "model_flop_s": flop_s,
        "matmul_peak_flop_s": peaks, "mfu": flop_s / peaks[precision], "peak_memory_mb": peak_memory_mb(device),
    }


def format_bench(result: dict[str, Any]) -> str:
    peaks = result["matmul_peak_flop_s"]
    ms = result["step_ms"]
    memory = "peak GPU MB" if result["device"].startswith("cuda") else "peak RSS MB"
    header = ["arch", "precision", "step ms (median [min, max])", "tokens/s", "model GFLOP/s", "MFU", memory]
    row = [result["arch"], result["precision"], f"{ms['median']:.1f} [{ms['min']:.1f}, {ms['max']:.1f}]",
           f"{result['tokens_per_s']:,.0f}", f"{result['model_flop_s'] / 1e9:.1f}", f"{100 * result['mfu']:.1f}%",
           f"{result['peak_memory_mb']:,.0f}"]
    peak_line = (f"matmul peak on {result['device']} ({result['threads']} threads, CPU {result['cpu']}): "
                 + ", ".join(f"{p} {v / 1e9:.1f} GFLOP/s" for p, v in peaks.items()))
    widths = [max(len(h), len(r)) for h, r in zip(header, row)]
    lines = [peak_line, "  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join(r.ljust(w) for r, w in zip(row, widths))]
    return "\n".join(lines)
