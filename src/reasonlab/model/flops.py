"""Parameter counts and training FLOPs, computed from the config alone.

FLOPs follow the usual matmul-only accounting (Kaplan et al.; PaLM appendix B): a forward
pass costs 2 FLOPs per matmul weight a token passes through, plus 4 * n_layers * d * seq_len
for attention scores and values (counted over the full square, as PaLM and nanoGPT do, so
MFU numbers are comparable with theirs). A pass with gradient costs 3x its forward (backward
is 2x); a pass run under no_grad costs 1x. The tied LM head costs 2 * d * V forward.
"""

from __future__ import annotations

from reasonlab.config import Config, ModelConfig, RecursionConfig


def param_counts(cfg: Config) -> dict[str, int]:
    """total: every parameter; active: those one token touches (top_k of n_experts experts)."""
    m = cfg.model
    d, f, E = m.d_model, m.d_ff, m.n_experts
    expert = 2 * d * f + f + d
    per_layer = 4 * d * d + 2 * d + d * E + E * expert
    embedding = m.vocab_size * d
    total = embedding + m.n_layers * per_layer + d
    if m.arch == "recursive":
        total += 2 * d * d + 2 * d + 2 * d + (d + 1)  # P_HL, P_LH, two input norms, two init states, halt head
    active = total - m.n_layers * (E - m.top_k) * expert
    return {"total": total, "active": active, "embedding": embedding}


def matmul_params_per_token(m: ModelConfig) -> int:
    """Weights one token multiplies through in one pass of the block stack (no norms, biases, head)."""
    d = m.d_model
    return m.n_layers * (4 * d * d + d * m.n_experts + m.top_k * 2 * d * m.d_ff)


def stack_forward_flops(m: ModelConfig, extra_matmul_params: int = 0) -> int:
    """Forward FLOPs per token of one pass through the block stack (plus any input projection)."""
    return 2 * (matmul_params_per_token(m) + extra_matmul_params) + 4 * m.n_layers * m.d_model * m.seq_len


def head_forward_flops(m: ModelConfig) -> int:
    return 2 * m.d_model * m.vocab_size


def flops_per_token(m: ModelConfig) -> int:
    """Training FLOPs per token of the baseline: one stack pass and the head, with gradient."""
    return 3 * (stack_forward_flops(m) + head_forward_flops(m))


def step_flops(m: ModelConfig, tokens: int, r: RecursionConfig | None = None, segments: int | None = None) -> int:
    """Training FLOPs of one step over `tokens` target positions: the one formula every model
    reports and every compute budget is planned with.

    The baseline runs one pass with gradient. The recursive arm runs `segments` segments for the
    whole batch (`r.max_segments` when None: a step in which no token exits early; ACT can only
    spend less, never more).
    """
    if m.arch == "baseline":
        return tokens * flops_per_token(m)
    if r is None:
        raise ValueError(f"FLOPs of model.arch {m.arch!r} need its recursion config")
    n = r.max_segments if segments is None else segments
    return tokens * n * segment_flops_per_token(m, r)


def config_step_flops(cfg: Config) -> int:
    """`step_flops` of one training batch of `cfg` (batch_size x seq_len tokens, every segment run)."""
    return step_flops(cfg.model, cfg.train.batch_size * cfg.model.seq_len, cfg.recursion)


def segment_flops_per_token(m: ModelConfig, r: RecursionConfig) -> int:
    """Training FLOPs per token of one recursion segment.

    A segment is H_cycles cycles of (L_cycles low-level passes + 1 high-level pass), each pass
    the block stack plus a d x d projection (P_HL or P_LH); the first H_cycles - grad_cycles
    cycles run without gradient. Then the LM head (and the halting head, with ACT) on z_H.
    """
    per_cycle = (r.L_cycles + 1) * stack_forward_flops(m, m.d_model * m.d_model)
    stack = 3 * r.grad_cycles * per_cycle + (r.H_cycles - r.grad_cycles) * per_cycle
    heads = 3 * head_forward_flops(m) + (3 * 2 * m.d_model if r.use_act else 0)
    return stack + heads
