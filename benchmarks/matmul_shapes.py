"""The GFLOP/s of each matmul a training step makes, at a config's shapes, beside the square peak.

    python benchmarks/matmul_shapes.py [--config cpu-bench] [--rounds 10]

MFU is against the square 2048^3 product; a step's own products are thinner. Each row is one
product as autograd runs it (forward, and the two of backward) for the tied head, the attention
projections and an expert's MLP at the rows a balanced router gives it (tokens x top-k / experts).
"""

from __future__ import annotations

import argparse
import time

import torch

from reasonlab.config import resolve_config
from reasonlab.runtime import cpu_capability


def gflops(a: torch.Tensor, b: torch.Tensor, rounds: int) -> tuple[float, float]:
    """GFLOP/s and ms of a @ b, after two untimed calls."""
    for _ in range(2):
        torch.mm(a, b)
    tic = time.perf_counter()
    for _ in range(rounds):
        torch.mm(a, b)
    seconds = (time.perf_counter() - tic) / rounds
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / seconds / 1e9, seconds * 1e3


def products(tokens: int, d: int, vocab: int, d_ff: int, rows: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(what, A, B) of each product; a transposed operand is a transposed view, as autograd passes it."""
    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape)

    return [
        ("square 2048 (the peak's)", rand(2048, 2048), rand(2048, 2048)),
        ("head forward h @ W^T", rand(tokens, d), rand(vocab, d).t()),
        ("head backward grad @ W", rand(tokens, vocab), rand(vocab, d)),
        ("head backward grad^T @ h", rand(tokens, vocab).t(), rand(tokens, d)),
        ("qkv forward", rand(tokens, d), rand(3 * d, d).t()),
        ("qkv backward grad @ W", rand(tokens, 3 * d), rand(3 * d, d)),
        ("out projection forward", rand(tokens, d), rand(d, d).t()),
        ("expert up forward", rand(rows, d), rand(d, d_ff)),
        ("expert down forward", rand(rows, d_ff), rand(d_ff, d)),
        ("expert up backward x^T @ grad", rand(rows, d).t(), rand(rows, d_ff)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="cpu-bench")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    m = resolve_config(args.config).model
    tokens = resolve_config(args.config).train.batch_size * m.seq_len
    rows = tokens * m.top_k // m.n_experts
    print(f"{args.config}: {tokens} tokens a step, d_model {m.d_model}, vocab {m.vocab_size}, d_ff {m.d_ff}, "
          f"{rows} rows an expert; {torch.get_num_threads()} threads, CPU {cpu_capability()}")
    print(f"{'product':32s} {'shape':24s} {'GFLOP/s':>8s} {'ms':>8s}")
    for name, a, b in products(tokens, m.d_model, m.vocab_size, m.d_ff, rows):
        rate, ms = gflops(a, b, args.rounds)
        print(f"{name:32s} {f'[{a.shape[0]},{a.shape[1]}]x[{b.shape[0]},{b.shape[1]}]':24s} {rate:8.1f} {ms:8.2f}")


if __name__ == "__main__":
    main()
