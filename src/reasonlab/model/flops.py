"""Parameter counts and training FLOPs, computed from the config alone.

FLOPs follow the usual matmul-only accounting (Kaplan et al.; PaLM appendix B): a forward
pass costs 2 FLOPs per matmul weight a token passes through, plus 4 * n_layers * d * seq_len
for attention scores and values (counted over the full square, as PaLM and nanoGPT do, so
MFU numbers are comparable with theirs). A pass with gradient costs 3x its forward (backward
is 2x); a pass run under no_grad costs 1x. The tied LM head costs 2 * d * V forward.
"""

from __future__ import annotations

from reasonlab.config import ModelConfig


def base_param_counts(m: ModelConfig) -> dict[str, int]:
    """The shared block stack and tied embedding: total, active (top_k of n_experts experts), embedding."""
    d, f, E = m.d_model, m.d_ff, m.n_experts
    expert = 2 * d * f + f + d
    per_layer = 4 * d * d + 2 * d + d * E + E * expert
    embedding = m.vocab_size * d
    total = embedding + m.n_layers * per_layer + d
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


def step_flops(m: ModelConfig, tokens: int) -> int:
    """Training FLOPs of one baseline step over `tokens` target positions."""
    return tokens * flops_per_token(m)


def recursion_step_flops(m: ModelConfig, tokens: int, grad_passes: float, free_passes: float, segments: int,
                         pass_params: int, halting: bool, segment_params: int = 0) -> int:
    """Training FLOPs of one recursive step: the one formula every recursive arm reports and every
    compute budget of one is planned with.

    `grad_passes` stack passes ran with gradient (3x their forward) and `free_passes` without
    (1x); each pass also multiplies through `pass_params` weights of the arm's own (an input
    projection, a halting unit). Each of the `segments` segments runs the LM head (and, with
    `halting`, the halting head) and `segment_params` weights of the arm's own, with gradient.
    """
    per_pass = stack_forward_flops(m, pass_params)
    heads = 3 * head_forward_flops(m) + (3 * 2 * m.d_model if halting else 0) + 3 * 2 * segment_params
    return round(tokens * ((3 * grad_passes + free_passes) * per_pass + segments * heads))
