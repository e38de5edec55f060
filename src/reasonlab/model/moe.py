"""Top-k routed Mixture-of-Experts feed-forward with sorted, grouped-matmul dispatch.

Tokens are sorted by the expert they are routed to, so every expert's tokens form one
contiguous slice, and all experts run as one grouped matmul per layer of the expert MLP
(`torch._grouped_mm`) instead of a Python loop over boolean masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reasonlab.model.dropout import dropout_mask


@torch.compiler.disable
def _grouped_mm_eager(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """torch._grouped_mm kept out of a compiled graph: on the CPU its compile-time shape rule
    accepts bf16 only, while eagerly it runs in any float dtype."""
    return torch._grouped_mm(x, w, offs=offs)


def grouped_matmul(x: torch.Tensor, w: torch.Tensor, counts: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """Rows of `x` sorted by group, `counts[g]` rows for group g, times `w[g]` ([G, in, out]).

    torch._grouped_mm runs on the CPU in any float dtype and on CUDA in bf16; elsewhere, a loop.
    """
    if fused and hasattr(torch, "_grouped_mm") and (x.device.type == "cpu" or x.dtype == torch.bfloat16):
        offs = counts.cumsum(0).to(torch.int32)
        if x.device.type == "cpu" and torch.compiler.is_compiling():
            return _grouped_mm_eager(x, w, offs)
        return torch._grouped_mm(x, w, offs=offs)
    return torch.cat([xg @ wg for xg, wg in zip(x.split(counts.tolist()), w)])


class _Permute(torch.autograd.Function):
    """x[perm] for a permutation, whose backward is the gather grad[inverse] instead of the
    scatter-add autograd would use for indexing: cheaper, and deterministic by construction."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x[perm]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad[inverse], None, None


def permute_rows(x: torch.Tensor, perm: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    return _Permute.apply(x, perm, inverse)


def expert_counts(expert: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Slots routed to each expert. Unlike bincount, whose output size depends on the data,
    this needs no device-to-host sync on CUDA and no graph break under torch.compile."""
    return F.one_hot(expert.reshape(-1), n_experts).sum(dim=0)


def balance_loss(probs: torch.Tensor, top_idx: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch-Transformer load balancing: E * sum_e (share of routed slots to e) * (mean prob of e).

    Equals 1 when routing is uniform; grows as tokens pile onto a few experts.
    """
    slots = expert_counts(top_idx, n_experts).to(probs.dtype)
    share = slots / top_idx.numel()
    return n_experts * torch.sum(share * probs.mean(dim=0))


class GroupedExperts(nn.Module):
    """E independent MLPs, Linear(d, d_ff) -> SiLU -> dropout -> Linear(d_ff, d), stored as stacked weights."""

    def __init__(self, n_experts: int, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, d_model, d_ff))
        self.b1 = nn.Parameter(torch.zeros(n_experts, d_ff))
        self.w2 = nn.Parameter(torch.empty(n_experts, d_ff, d_model))
        self.b2 = nn.Parameter(torch.zeros(n_experts, d_model))
        self.dropout = dropout
        self.fused = True

    def forward(self, x: torch.Tensor, top_idx: torch.Tensor, top_weight: torch.Tensor) -> torch.Tensor:
        """x: [N, d]; top_idx, top_weight: [N, k]. Returns sum_j weight_j * expert_{idx_j}(x).

        Every gather here is by a permutation and every reduction a dense sum, never a scatter-add
        into repeated indices, so forward and backward are bitwise deterministic on the CPU.
        """
        n_experts, (N, k) = self.w1.shape[0], top_idx.shape
        flat_expert = top_idx.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        inverse = torch.argsort(order)
        sorted_expert = flat_expert[order]
        one_hot = F.one_hot(sorted_expert, n_experts)
        counts = one_hot.sum(dim=0)
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else self.w1.dtype
        one_hot = one_hot.to(dtype)  # per-row bias as a matmul
        slots = permute_rows(x.unsqueeze(1).expand(N, k, x.shape[-1]).reshape(N * k, -1), order, inverse).to(dtype)
        h = grouped_matmul(slots, self.w1.to(dtype), counts, self.fused) + one_hot @ self.b1.to(dtype)
        h = F.silu(h)
        w2 = self.w2.to(dtype)
        if self.training and self.dropout > 0:
            # masks drawn in (token, slot) order, then sorted: a token's mask must not depend on
            # how the other tokens were routed, or training-mode outputs would see later tokens
            h = h * dropout_mask(h.shape, self.dropout, h.device)[order]
            w2 = w2 * (1.0 / (1.0 - self.dropout))  # the dropout scale, on the smaller operand
        out = grouped_matmul(h, w2, counts, self.fused) + one_hot @ self.b2.to(dtype)
        out = out * permute_rows(top_weight.reshape(-1), order, inverse).to(dtype).unsqueeze(1)
        unsorted = permute_rows(out, inverse, order)  # back to (token, slot) order
        return unsorted.view(N, k, -1).sum(dim=1).to(x.dtype)


class MoE(nn.Module):
    """Noisy top-k router (renormalised top-k weights) over grouped experts; returns output and balance loss."""

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int, dropout: float, noise_std: float):
        super().__init__()
        self.top_k = top_k
        self.noise_std = noise_std
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = GroupedExperts(n_experts, d_model, d_ff, dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        logits = self.router(flat).float()
        if self.training and self.noise_std > 0:
            logits = logits + torch.randn_like(logits) * self.noise_std
        probs = logits.softmax(dim=-1)
        top_p, top_idx = probs.topk(self.top_k, dim=-1)
        top_p = top_p / top_p.sum(dim=-1, keepdim=True)
        out = self.experts(flat, top_idx, top_p)
        return out.view(shape), balance_loss(probs, top_idx, probs.shape[-1])
