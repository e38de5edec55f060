"""Top-k routed Mixture-of-Experts feed-forward with sorted, grouped-matmul dispatch.

Tokens are sorted by the expert they are routed to, so every expert's tokens form one
contiguous slice, and all experts run as one grouped matmul per layer of the expert MLP
(`torch._grouped_mm`) instead of a Python loop over boolean masks.

Tensor names end in their shape, one letter a dimension: T tokens, K routed choices per token
(top-k), S = T*K slots (a token's choice) in token order, R rows the experts' matmuls see (the
slots sorted by expert, each expert's group padded), E experts, D d_model, F d_ff.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reasonlab.model.dropout import dropout_mask

FEW_SLOTS = 8  # at inference on the CPU, batches of at most this many routed slots skip the grouped dispatch


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

    def to_rows(self, t_S: torch.Tensor) -> torch.Tensor:
        """Slot order to row order, zeros in the padding rows."""
        return take_rows(t_S, self.slot_of_row, self.row_of_slot)

    def to_slots(self, t_R: torch.Tensor) -> torch.Tensor:
        """Row order back to slot order, the padding rows dropped."""
        return take_rows(t_R, self.row_of_slot, self.slot_of_row)


def row_multiple(device: torch.device, dtype: torch.dtype) -> int:
    """Rows per expert group are padded to this multiple where the matmul backend compiles a
    kernel per shape: oneDNN runs CPU bf16/fp16 matmuls and JIT-compiles (and caches, up to
    1024) one kernel per new row count, and a group's row count changes with every batch's
    routing. At cpu-bench in bf16 that was a sixth of the step time, and RSS grew by
    2 GB over 30 steps; with groups padded to 64 rows a few dozen shapes recur. Elsewhere the
    cost of padding buys nothing (fp32 CPU matmuls and CUDA kernels take any shape)."""
    return 64 if device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) else 1


def slot_layout(expert_S: torch.Tensor, n_experts: int, multiple: int = 1) -> SlotLayout:
    """The stable expert-sorted layout of slots routed to `expert_S`, groups padded to
    `multiple` rows. With multiple 1 it is a permutation and needs no device-to-host sync."""
    order_S = torch.argsort(expert_S, stable=True)
    counts_E = expert_counts(expert_S, n_experts)
    if multiple == 1:
        return SlotLayout(order_S, torch.argsort(order_S), counts_E, expert_S[order_S])
    rows_E = (counts_E + multiple - 1) // multiple * multiple
    S, R = expert_S.shape[0], int(rows_E.sum())
    sorted_expert_S = expert_S[order_S]
    rank_in_group_S = torch.arange(S, device=expert_S.device) - (counts_E.cumsum(0) - counts_E)[sorted_expert_S]
    row_of_sorted_S = (rows_E.cumsum(0) - rows_E)[sorted_expert_S] + rank_in_group_S
    row_of_slot = torch.empty_like(order_S).index_copy_(0, order_S, row_of_sorted_S)
    slot_of_row = torch.full((R,), S, dtype=order_S.dtype, device=order_S.device)
    slot_of_row.index_copy_(0, row_of_sorted_S, order_S)
    expert_of_row = torch.repeat_interleave(torch.arange(n_experts, device=rows_E.device), rows_E, output_size=R)
    return SlotLayout(slot_of_row, row_of_slot, rows_E, expert_of_row)


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


def compute_dtype(device: torch.device, weight_dtype: torch.dtype) -> torch.dtype:
    """The dtype the experts run in: autocast's where it is on, else the weights'."""
    return torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else weight_dtype


def dispatch(x_TD: torch.Tensor, top_k: int, layout: SlotLayout) -> torch.Tensor:
    """Each token copied to its K slots, then sorted into the experts' rows: [R, D]."""
    T, D = x_TD.shape
    x_SD = x_TD.unsqueeze(1).expand(T, top_k, D).reshape(T * top_k, D)
    return layout.to_rows(x_SD)


def combine(y_RD: torch.Tensor, top_weight_TK: torch.Tensor, layout: SlotLayout) -> torch.Tensor:
    """Each row weighted by its slot's routing weight, back in slot order, summed per token: [T, D]."""
    T, K = top_weight_TK.shape
    weight_R1 = layout.to_rows(top_weight_TK.reshape(T * K)).to(y_RD.dtype).unsqueeze(1)
    y_SD = layout.to_slots(y_RD * weight_R1)
    return y_SD.view(T, K, -1).sum(dim=1)


class GroupedExperts(nn.Module):
    """E independent MLPs, Linear(d, d_ff) -> SiLU -> dropout -> Linear(d_ff, d), stored as stacked weights."""

    def __init__(self, n_experts: int, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_experts, d_model, d_ff))
        self.b1 = nn.Parameter(torch.empty(n_experts, d_ff))
        self.w2 = nn.Parameter(torch.empty(n_experts, d_ff, d_model))
        self.b2 = nn.Parameter(torch.empty(n_experts, d_model))
        self.dropout = dropout
        self.fused = True
        self.row_multiple: int | None = None  # None: row_multiple() for the device and dtype
        # drawn on a forked generator: models re-draw these weights in their own order
        # (MoETransformerLM.reset_parameters), and draws here would shift every later draw
        with torch.random.fork_rng(devices=[]):
            self.reset_parameters()

    def reset_parameters(self, std: float = 0.02, out_std: float = 0.02) -> None:
        """w1 ~ N(0, std), w2 ~ N(0, out_std) (the residual branch's output scale), biases 0."""
        nn.init.normal_(self.w1, std=std)
        nn.init.normal_(self.w2, std=out_std)
        nn.init.zeros_(self.b1)
        nn.init.zeros_(self.b2)

    def forward(self, x_TD: torch.Tensor, top_idx_TK: torch.Tensor, top_weight_TK: torch.Tensor) -> torch.Tensor:
        """Returns sum_k top_weight[t, k] * expert_{top_idx[t, k]}(x[t]), [T, D].

        Rows move by injective gathers whose backward is a gather, and reductions are dense sums
        (or, for the biases in CPU fp32, index_select's serial backward), never an atomic
        scatter-add, so forward and backward are bitwise deterministic on the CPU.
        """
        dtype = compute_dtype(x_TD.device, self.w1.dtype)
        multiple = self.row_multiple or row_multiple(x_TD.device, dtype)
        layout = slot_layout(top_idx_TK.reshape(-1), self.w1.shape[0], multiple)
        x_RD = dispatch(x_TD, top_idx_TK.shape[1], layout).to(dtype)
        y_RD = self._experts(x_RD, layout)
        return combine(y_RD, top_weight_TK, layout).to(x_TD.dtype)

    def few(self, x_TD: torch.Tensor, top_idx_TK: torch.Tensor, top_weight_TK: torch.Tensor) -> torch.Tensor:
        """`forward` for a handful of tokens at inference (decoding one token at a time): each routed
        slot through its expert's weights directly. Sorting, padding and grouping slots cost more
        than they save at this size: one decoding step of cpu-small spent 30% of its time in
        grouped matmuls of two rows (benchmarks/generate.py)."""
        dtype = compute_dtype(x_TD.device, self.w1.dtype)
        w1, b1, w2, b2 = (w.to(dtype) for w in (self.w1, self.b1, self.w2, self.b2))
        x_TD = x_TD.to(dtype)
        rows = []
        for t, (experts, weights) in enumerate(zip(top_idx_TK.tolist(), top_weight_TK.tolist())):
            x_1D = x_TD[t : t + 1]
            y_1D = None
            for e, weight in zip(experts, weights):
                y_e = torch.addmm(b2[e], F.silu(torch.addmm(b1[e], x_1D, w1[e])), w2[e], beta=weight, alpha=weight)
                y_1D = y_e if y_1D is None else y_1D + y_e
            rows.append(y_1D)
        return torch.cat(rows) if len(rows) > 1 else rows[0]

    def _experts(self, x_RD: torch.Tensor, layout: SlotLayout) -> torch.Tensor:
        """Every expert's MLP on its group of rows, in x_RD's dtype: two grouped matmuls."""
        b1_RF, b2_RD = self._bias_rows(layout, x_RD.dtype)
        h_RF = F.silu(grouped_matmul(x_RD, self.w1.to(x_RD.dtype), layout.rows_per_expert, self.fused) + b1_RF)
        h_RF, w2_EFD = self._dropout(h_RF, self.w2.to(x_RD.dtype), layout)
        return grouped_matmul(h_RF, w2_EFD, layout.rows_per_expert, self.fused) + b2_RD

    def _dropout(
        self, h_RF: torch.Tensor, w2_EFD: torch.Tensor, layout: SlotLayout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dropout on the hidden rows, its 1 / (1 - p) scale put on w2, the smaller operand.

        Masks are drawn in slot order, then sorted: a token's mask must not depend on how the
        other tokens were routed, or training-mode outputs would see later tokens.
        """
        if not (self.training and self.dropout > 0):
            return h_RF, w2_EFD
        S, d_ff = layout.row_of_slot.shape[0], h_RF.shape[1]
        keep_RF = _rows(dropout_mask((S, d_ff), self.dropout, h_RF.device), layout.slot_of_row)
        return h_RF * keep_RF, w2_EFD * (1.0 / (1.0 - self.dropout))

    def _bias_rows(self, layout: SlotLayout, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's expert biases of both layers, [R, F] and [R, D].

        In fp32 on the CPU gathers, whose backward sums rows per expert serially (deterministic)
        and is 3x faster than a one-hot matmul with K = E. Elsewhere one-hot matmuls: in bf16
        they accumulate the bias gradients in fp32 where a gather's backward would sum in bf16,
        and on CUDA they run on tensor cores where a gather's backward would contend on atomics.
        """
        if dtype == torch.float32 and layout.expert_of_row.device.type == "cpu":
            return self.b1.index_select(0, layout.expert_of_row), self.b2.index_select(0, layout.expert_of_row)
        one_hot_RE = F.one_hot(layout.expert_of_row, self.b1.shape[0]).to(dtype)
        return one_hot_RE @ self.b1.to(dtype), one_hot_RE @ self.b2.to(dtype)


class MoE(nn.Module):
    """Noisy top-k router (renormalised top-k weights) over grouped experts; returns output and balance loss."""

    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int, dropout: float, noise_std: float):
        super().__init__()
        self.top_k = top_k
        self.noise_std = noise_std
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = GroupedExperts(n_experts, d_model, d_ff, dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_TD = x.reshape(-1, x.shape[-1])
        logits_TE = self.router(x_TD).float()
        if self.training and self.noise_std > 0:
            logits_TE = logits_TE + torch.randn_like(logits_TE) * self.noise_std
        probs_TE = logits_TE.softmax(dim=-1)
        top_p_TK, top_idx_TK = probs_TE.topk(self.top_k, dim=-1)
        top_p_TK = top_p_TK / top_p_TK.sum(dim=-1, keepdim=True)
        if (not self.training and not torch.is_grad_enabled() and x_TD.device.type == "cpu"
                and top_idx_TK.numel() <= FEW_SLOTS):
            # decoding: the routing weights enter as numbers, and the balance loss, which trains
            # the router, is read by nothing at inference
            return self.experts.few(x_TD, top_idx_TK, top_p_TK).view(x.shape), logits_TE.new_zeros(())
        y_TD = self.experts(x_TD, top_idx_TK, top_p_TK)
        return y_TD.view(x.shape), balance_loss(probs_TE, top_idx_TK, probs_TE.shape[-1])
