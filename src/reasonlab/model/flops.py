"""Parameter counts and training FLOPs per token, computed from the config alone.

FLOPs follow the usual matmul-only accounting (Kaplan et al.; PaLM appendix B): a training
token costs 6 FLOPs per active matmul weight (2 forward + 4 backward), the tied LM head
6 * d * V, and attention scores/values 12 * n_layers * d * seq_len (counted over the full
square, as PaLM and nanoGPT do, so MFU numbers are comparable with theirs).
"""

from __future__ import annotations

from reasonlab.config import ModelConfig


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """total: every parameter; active: those one token touches (top_k of n_experts experts)."""
    d, f, E = cfg.d_model, cfg.d_ff, cfg.n_experts
    expert = 2 * d * f + f + d
    per_layer = 4 * d * d + 2 * d + d * E + E * expert
    embedding = cfg.vocab_size * d
    total = embedding + cfg.n_layers * per_layer + d
    active = total - cfg.n_layers * (E - cfg.top_k) * expert
    return {"total": total, "active": active, "embedding": embedding}


def matmul_params_per_token(cfg: ModelConfig) -> int:
    """Weights one token multiplies through in one pass of the block stack (no norms, biases, head)."""
    d = cfg.d_model
    return cfg.n_layers * (4 * d * d + d * cfg.n_experts + cfg.top_k * 2 * d * cfg.d_ff)


def flops_per_token(cfg: ModelConfig) -> int:
    """Training FLOPs (forward + backward) per token for one pass of the model."""
    attention = 12 * cfg.n_layers * cfg.d_model * cfg.seq_len
    head = 6 * cfg.d_model * cfg.vocab_size
    return 6 * matmul_params_per_token(cfg) + head + attention
