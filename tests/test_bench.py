"""`reasonlab bench` against independent references: a FLOP count written out layer by layer and
confirmed by torch's own FLOP counter, a matmul timed here, and physical bounds."""

import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import tiny_config
from reasonlab.bench import bench, format_bench
from reasonlab.config import Config, ModelConfig
from reasonlab.model import build_model
from reasonlab.training.data import prepare_data

KEYS = {"arch", "device", "cpu", "precision", "threads", "tokens_per_step", "steps", "step_ms", "tokens_per_s",
        "flops_per_step", "model_flop_s", "matmul_peak_flop_s", "mfu", "peak_memory_mb"}
# No CPU core multiplies fp32 faster: 2 FMA units x 16 lanes (AVX-512) x 2 FLOPs at 6 GHz is
# 0.38 TFLOP/s; the margin covers matrix engines (Apple's AMX) without hiding a unit error.
FP32_CEILING_PER_THREAD = 2e12


def hand_count_step_flops(m: ModelConfig, tokens: int) -> int:
    """Matmul FLOPs of one training step of the baseline over `tokens` positions.

    An [n, a] x [a, b] product costs 2nab forward and twice that backward (the input's and the
    weight's gradients). Per token and layer: the qkv and output projections, the router, top_k
    experts of two matmuls each, and attention's scores and weighted values over all seq_len
    keys (the full square, causal mask or not); then the tied head.
    """
    d, f, T = m.d_model, m.d_ff, m.seq_len
    per_layer = {
        "qkv": 2 * d * (3 * d),
        "output projection": 2 * d * d,
        "router": 2 * d * m.n_experts,
        "experts": m.top_k * (2 * d * f + 2 * f * d),
        "q.k scores": 2 * T * d,
        "probabilities x values": 2 * T * d,
    }
    forward = tokens * (m.n_layers * sum(per_layer.values()) + 2 * d * m.vocab_size)
    return 3 * forward


def test_hand_count_matches_torchs_flop_counter():
    """FlopCounterMode sees aten mm/bmm/baddbmm but neither CPU flash attention nor grouped mm:
    dropout routes attention through baddbmm and bmm, and unfused experts run one mm per expert."""
    cfg = Config(model=ModelConfig(vocab_size=300, seq_len=32, d_model=32, n_layers=2, n_heads=4, d_ff=48,
                                   n_experts=4, top_k=2, dropout=0.1))
    model = build_model(cfg).train()
    for block in model.blocks:
        block.moe.experts.fused = False
    x, y = torch.randint(0, 300, (2, 3, 32))
    with FlopCounterMode(display=False) as counter:
        model(x, y).loss.backward()
    assert counter.get_total_flops() == hand_count_step_flops(cfg.model, x.numel())


def timed_mm_flop_s(n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of the fastest of a few fp32 n x n matmuls, timed here."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - tic)
    return 2 * n**3 / best


def test_bench_against_independent_counts_and_timings(small_corpus):
    cfg = tiny_config(**{"data.source": str(small_corpus), "model.vocab_size": 300})
    result = bench(cfg, steps=2, warmup=1, peak_budget_s=0.5)
    assert set(result) == KEYS
    assert (result["arch"], result["device"], result["precision"], result["steps"]) == ("baseline", "cpu", "fp32", 2)

    tokens = cfg.train.batch_size * cfg.model.seq_len
    model_cfg = prepare_data(cfg).adjust_config(cfg).model  # the vocabulary is the tokenizer's
    assert result["tokens_per_step"] == tokens
    assert result["flops_per_step"] == hand_count_step_flops(model_cfg, tokens)

    peak = result["matmul_peak_flop_s"]
    assert set(peak) == {"fp32"}  # the run's own precision only
    assert 0 < peak["fp32"] < FP32_CEILING_PER_THREAD * result["threads"]
    assert 0.1 < peak["fp32"] / timed_mm_flop_s() < 10
    assert 0 < result["mfu"] < 1  # a step's small matmuls cannot outrun the best square one

    physical_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    assert 50 < result["peak_memory_mb"] < physical_mb  # torch alone keeps more than 50 MB resident

    assert "MFU" in format_bench(result)
