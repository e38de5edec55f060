"""Top-k routed Mixture-of-Experts feed-forward with sorted, grouped-matmul dispatch.

Tokens are sorted by the expert they are routed to, so every expert's tokens form one
contiguous slice, and all experts run as one grouped matmul per layer of the expert MLP
(`torch._grouped_mm`) instead of a Python loop over boolean masks.
"""

from __future__ import annotations

from dataclasses import dataclass

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


class _TakeRows(torch.autograd.Function):
    """Rows of x at `index`, an injective map whose backward is the gather grad[back_index]
    instead of the scatter-add autograd would use for indexing: cheaper, and deterministic by
    construction. An index longer than x may name row len(x), a row of zeros (padding)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor, back_index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(back_index)
        return _rows(x, index)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (back_index,) = ctx.saved_tensors
        return _rows(grad, back_index), None, None


def _rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """index_select, not x[index]: on the CPU it is 4-18x faster at the experts' shapes."""
    if index.shape[0] > x.shape[0]:
        x = torch.cat([x, x.new_zeros((1, *x.shape[1:]))])
    return x.index_select(0, index)


def take_rows(x: torch.Tensor, index: torch.Tensor, back_index: torch.Tensor) -> torch.Tensor:
    """x[index] (a zero row where index == len(x)); its gradient is grad[back_index]."""
    return _TakeRows.apply(x, index, back_index)


@dataclass(frozen=True)
class SlotLayout:
    """Where the routed slots (token, choice) sit in the rows the experts' matmuls see.

    Rows are sorted by expert, so each expert's slots form one contiguous group; each group
    may end in zero rows that pad it to a multiple of `row_multiple` (`slot_layout`).
    """

    slot_of_row: torch.Tensor  # [R]: the slot each row holds; S (the slot count) for padding
    row_of_slot: torch.Tensor  # [S]: the row each slot sits in
    rows_per_expert: torch.Tensor  # [E]
    expert_of_row: torch.Tensor  # [R]


def row_multiple(device: torch.device, dtype: torch.dtype) -> int:
    """Rows per expert group are padded to this multiple where the matmul backend compiles a
    kernel per shape: oneDNN runs CPU bf16/fp16 matmuls and JIT-compiles (and caches, up to
    1024) one kernel per new row count, and a group's row count changes with every batch's
    routing. At cpu-bench in bf16 that was a sixth of the step time, and RSS grew by
    2 GB over 30 steps; with groups padded to 64 rows a few dozen shapes recur. Elsewhere the
    cost of padding buys nothing (fp32 CPU matmuls and CUDA kernels take any shape)."""
    return 64 if device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) else 1


def slot_layout(flat_expert: torch.Tensor, n_experts: int, multiple: int = 1) -> SlotLayout:
    """The stable expert-sorted layout of slots routed to `flat_expert` [S], groups padded to
    `multiple` rows. With multiple 1 it is a permutation and needs no device-to-host sync."""
    order = torch.argsort(flat_expert, stable=True)
    counts = expert_counts(flat_expert, n_experts)
    if multiple == 1:
        return SlotLayout(order, torch.argsort(order), counts, flat_expert[order])
    rows = (counts + multiple - 1) // multiple * multiple
    n_slots, n_rows = flat_expert.shape[0], int(rows.sum())
    sorted_expert = flat_expert[order]
    rank_in_group = torch.arange(n_slots, device=flat_expert.device) - (counts.cumsum(0) - counts)[sorted_expert]
    row_of_sorted = (rows.cumsum(0) - rows)[sorted_expert] + rank_in_group
    row_of_slot = torch.empty_like(order).index_copy_(0, order, row_of_sorted)
    slot_of_row = torch.full((n_rows,), n_slots, dtype=order.dtype, device=order.device).index_copy_(0, row_of_sorted, order)
    expert_of_row = torch.repeat_interleave(torch.arange(n_experts, device=rows.device), rows, output_size=n_rows)
    return SlotLayout(slot_of_row, row_of_slot, rows, expert_of_row)


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
        self.row_multiple: int | None = None  # None: row_multiple() for the device and dtype

    def forward(self, x: torch.Tensor, top_idx: torch.Tensor, top_weight: torch.Tensor) -> torch.Tensor:
        """x: [N, d]; top_idx, top_weight: [N, k]. Returns sum_j weight_j * expert_{idx_j}(x).

        Rows move by injective gathers whose backward is a gather, and reductions are dense sums
        (or, for the biases in CPU fp32, index_select's serial backward), never an atomic
        scatter-add, so forward and backward are bitwise deterministic on the CPU.
        """
        n_experts, (N, k) = self.w1.shape[0], top_idx.shape
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else self.w1.dtype
        multiple = self.row_multiple or row_multiple(x.device, dtype)
        layout = slot_layout(top_idx.reshape(-1), n_experts, multiple)
        to_rows, to_slots = layout.slot_of_row, layout.row_of_slot
        slots = x.unsqueeze(1).expand(N, k, x.shape[-1]).reshape(N * k, -1)
        rows = take_rows(slots, to_rows, to_slots).to(dtype)
        b1, b2 = self._bias_rows(layout, dtype)
        h = grouped_matmul(rows, self.w1.to(dtype), layout.rows_per_expert, self.fused) + b1
        h = F.silu(h)
        w2 = self.w2.to(dtype)
        if self.training and self.dropout > 0:
            # masks drawn in (token, slot) order, then sorted: a token's mask must not depend on
            # how the other tokens were routed, or training-mode outputs would see later tokens
            h = h * _rows(dropout_mask((N * k, h.shape[-1]), self.dropout, h.device), to_rows)
            w2 = w2 * (1.0 / (1.0 - self.dropout))  # the dropout scale, on the smaller operand
        out = grouped_matmul(h, w2, layout.rows_per_expert, self.fused) + b2
        out = out * take_rows(top_weight.reshape(-1), to_rows, to_slots).to(dtype).unsqueeze(1)
        unsorted = take_rows(out, to_slots, to_rows)  # back to (token, slot) order
        return unsorted.view(N, k, -1).sum(dim=1).to(x.dtype)

    def _bias_rows(self, layout: SlotLayout, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's expert biases of both layers, [R, d_ff] and [R, d].

        In fp32 on the CPU gathers, whose backward sums rows per expert serially (deterministic)
        and is 3x faster than a one-hot matmul with K = E. Elsewhere one-hot matmuls: in bf16
        they accumulate the bias gradients in fp32 where a gather's backward would sum in bf16,
        and on CUDA they run on tensor cores where a gather's backward would contend on atomics.
        """
        if dtype == torch.float32 and layout.expert_of_row.device.type == "cpu":
            return self.b1.index_select(0, layout.expert_of_row), self.b2.index_select(0, layout.expert_of_row)
        one_hot = F.one_hot(layout.expert_of_row, self.b1.shape[0]).to(dtype)
        return one_hot @ self.b1.to(dtype), one_hot @ self.b2.to(dtype)


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
