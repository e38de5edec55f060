"""Attention with rotary position embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reasonlab.model.dropout import dropout_mask


def rope_angles(positions: torch.Tensor, pairs: int, base: float = 10000.0) -> torch.Tensor:
    """The rotation angle [len(positions), pairs] of each rotated pair of dimensions at each position."""
    inv_freq = 1.0 / base ** (torch.arange(pairs, dtype=torch.float32) / pairs)
    return torch.outer(positions.float(), inv_freq)


def rope_tables(seq_len: int, head_dim: int, base: float = 10000.0,
                grid: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin, each [seq_len, head_dim], for the rotate-half form of RoPE: the sin's
    first half is negated, as `apply_rope` needs it.

    `grid`: the positions are the cells of a square grid read row by row (seq_len = side^2): half
    of the rotated pairs turn with the row, half with the column (axial 2D RoPE), so a score
    depends on the (row, column) offset between two cells. A grid's up and down neighbours are
    then as near as its left and right ones, where 1D positions put them a whole row apart.
    """
    t = torch.arange(seq_len)
    if grid:
        side = math.isqrt(seq_len)
        if side * side != seq_len or head_dim % 4:
            raise ValueError(f"2D positions need a square number of positions and a head size divisible by 4, "
                             f"got {seq_len} and {head_dim}")
        angles = torch.cat([rope_angles(t // side, head_dim // 4, base), rope_angles(t % side, head_dim // 4, base)],
                           dim=-1)
    else:
        angles = rope_angles(t, head_dim // 2, base)
    return torch.cat([angles, angles], dim=-1).cos(), torch.cat([-angles.sin(), angles.sin()], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [..., T, D] queries and keys by their position.

    Rotate-half RoPE is x * cos + cat(-x2, x1) * sin; with the sign in the sin table that is
    x * cos + roll(x, D/2) * sin, bit for bit: one op where two slices, a negation and a cat were
    four, which counts when decoding one token at a time is a long chain of small ops.
    """
    return x * cos.to(x.dtype) + x.roll(x.shape[-1] // 2, -1) * sin.to(x.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, dropout_p: float) -> torch.Tensor:
    """Attention over [B, H, T, D]; `dropout_p` > 0 drops attention probabilities.

    SDPA's fused CPU kernel has no dropout, so with dropout it falls back to its math path,
    which draws the mask with bernoulli_. There the explicit form with reasonlab's dropout is
    faster (benchmarks/dropout.py); everywhere else SDPA picks its fastest kernel. The explicit
    form folds the 1/sqrt(D) scale and the causal mask into one baddbmm (the scale as its alpha,
    the mask as the -inf bias it adds), where a scale and a masked_fill were two more passes
    over the [B, H, T, T] scores in forward and backward; likewise dropout's 1 / (1 - p) scales
    the [B, H, T, D] output rather than the T / D times larger probabilities.
    """
    if dropout_p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout_p)
    B, H, T, D = q.shape
    bias = torch.full((T, T), float("-inf"), device=q.device).triu(1) if causal else q.new_zeros(())
    scores = torch.baddbmm(bias, q.reshape(B * H, T, D), k.reshape(B * H, T, D).transpose(1, 2),
                           beta=1.0 if causal else 0.0, alpha=D**-0.5)
    kept = scores.softmax(dim=-1).mul(dropout_mask(scores.shape, dropout_p, q.device)).to(v.dtype)
    return (kept @ v.reshape(B * H, T, D)).mul_(1.0 / (1.0 - dropout_p)).view(B, H, T, D)


class KVCache:
    """Keys and values of every attention call of a forward, by call order, for incremental decoding.

    A recursive arm runs the same blocks many times per token (segments x passes x layers); each
    of those calls keeps its own keys and values, so the cache is per pass, as recurrent-depth and
    Mixture-of-Recursions models keep theirs. That needs every forward to make the same calls in
    the same order: the model runs every pass, without early exits (`RecursiveLM.every_pass`),
    which changes no token's output. A forward is either the prefill of an empty cache or one new
    token; `capacity` is the model's context.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.slots: list[tuple[torch.Tensor, torch.Tensor]] = []  # [B, H, capacity, D] keys and values per call
        self.length = 0  # positions cached
        self.cursor = 0  # the next call's slot
        self.adding = 0  # positions the running forward adds

    def begin(self, tokens: int) -> None:
        if self.length and tokens != 1:
            raise ValueError("a cached forward after the prefill takes one token at a time")
        if self.length + tokens > self.capacity:
            raise ValueError(f"{self.length + tokens} positions exceed the cache's {self.capacity}")
        self.cursor, self.adding = 0, tokens

    def end(self) -> None:
        if self.length and self.cursor != len(self.slots):
            raise RuntimeError(f"this forward made {self.cursor} attention calls, the prefill {len(self.slots)}")
        self.length += self.adding

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention of the new positions' queries [B, H, T, D] over every cached position."""
        if self.cursor == len(self.slots):
            if self.length:
                raise RuntimeError("this forward makes more attention calls than the prefill")
            B, H, _, D = k.shape
            self.slots.append((k.new_empty(B, H, self.capacity, D), v.new_empty(B, H, self.capacity, D)))
        keys, values = self.slots[self.cursor]
        self.cursor += 1
        keys.narrow(2, self.length, k.shape[2]).copy_(k)
        values.narrow(2, self.length, k.shape[2]).copy_(v)
        if not self.length:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        end = self.length + k.shape[2]
        return F.scaled_dot_product_attention(q, keys.narrow(2, 0, end), values.narrow(2, 0, end))  # one query sees all


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

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None) -> torch.Tensor:
        """`cos`/`sin` are the tables of x's positions; with `cache`, x is the newest positions only."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            y = cache.attend(q, k, v)
        else:
            y = attention(q, k, v, self.causal, self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))
