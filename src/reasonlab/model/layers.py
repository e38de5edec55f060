"""Attention with rotary position embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reasonlab.model.dropout import dropout


def rope_tables(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [seq_len, head_dim] for the rotate-half form of RoPE."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [B, H, T, D] queries/keys by their position."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, dropout_p: float) -> torch.Tensor:
    """Attention over [B, H, T, D]; `dropout_p` > 0 drops attention probabilities.

    SDPA's fused CPU kernel has no dropout, so with dropout it falls back to its math path,
    which draws the mask with bernoulli_. There the explicit form with reasonlab's dropout is
    faster (benchmarks/dropout.py); everywhere else SDPA picks its fastest kernel. The explicit
    form folds the 1/sqrt(D) scale and the causal mask into one baddbmm (the scale as its alpha,
    the mask as the -inf bias it adds), where a scale and a masked_fill were two more passes
    over the [B, H, T, T] scores in forward and backward.
    """
    if dropout_p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout_p)
    B, H, T, D = q.shape
    bias = torch.full((T, T), float("-inf"), device=q.device).triu(1) if causal else q.new_zeros(())
    scores = torch.baddbmm(bias, q.reshape(B * H, T, D), k.reshape(B * H, T, D).transpose(1, 2),
                           beta=1.0 if causal else 0.0, alpha=D**-0.5)
    probs = dropout(scores.softmax(dim=-1), dropout_p, True).to(v.dtype)
    return (probs @ v.reshape(B * H, T, D)).view(B, H, T, D)


class SelfAttention(nn.Module):
    """Multi-head attention through SDPA (flash/memory-efficient kernels where available);
    causal for language modelling, bidirectional for puzzles seen whole."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, causal: bool = True):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.causal = causal
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = attention(q, k, v, self.causal, self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))
