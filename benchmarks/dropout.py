"""What dropout costs on this machine: torch's dropout against reasonlab's, and attention with and without it.

    python benchmarks/dropout.py [--threads N]

Times forward + backward at the cpu-bench shapes (batch 8 x 256 tokens, d_model 256, d_ff
1024 with top-2 of 4 experts, 4 heads) and prints a table of milliseconds per call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from reasonlab.model.dropout import add_dropout, dropout
from reasonlab.model.layers import attention


def timed(fn: Callable[[], torch.Tensor], reps: int = 10, warmup: int = 2) -> float:
    """Median milliseconds of fn() plus the backward of its sum."""
    times = []
    for i in range(warmup + reps):
        tic = time.perf_counter()
        fn().sum().backward()
        if i >= warmup:
            times.append(time.perf_counter() - tic)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T, d, H, f = 8, 256, 256, 4, 1024
    rows = []
    for name, shape in (("residual [B, T, d]", (B, T, d)), ("expert hidden [2BT, d_ff]", (2 * B * T, f))):
        x = torch.randn(shape, requires_grad=True)
        rows.append((f"dropout 0.1, {name}",
                     timed(lambda x=x: F.dropout(x, 0.1, True)),
                     timed(lambda x=x: dropout(x, 0.1, True))))
    x, y = (torch.randn(B, T, d, requires_grad=True) for _ in range(2))
    rows.append(("residual add x + dropout(y), [B, T, d]",
                 timed(lambda: x + F.dropout(y, 0.1, True)),
                 timed(lambda: add_dropout(x, y, 0.1, True))))
    q, k, v = (torch.randn(B, H, T, d // H, requires_grad=True) for _ in range(3))
    rows.append(("attention, no dropout (flash)",
                 timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)),
                 None))
    rows.append(("attention, dropout 0.1 (SDPA math path vs explicit)",
                 timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=0.1)),
                 timed(lambda: attention(q, k, v, True, 0.1))))
    print(f"{args.threads} threads; ms per forward + backward (median of 10)")
    print(f"{'operation':<45} {'torch':>8} {'reasonlab':>10}")
    for name, ours_or_torch, ours in rows:
        print(f"{name:<45} {ours_or_torch:>8.2f} {'' if ours is None else f'{ours:.2f}':>10}")


if __name__ == "__main__":
    main()
