"""The training objectives of the recursive arms: deep supervision over segments, and the carry.

Deep supervision (`deep_supervision_loss`): every segment a token is live for adds its
next-token cross-entropy, its halting BCE against "this segment's prediction is correct" (with
ACT) and the arm's own per-token cost; the reported loss is each token's at its exit segment.
With `recursion.carry_across_steps` (`carried_loss`), one segment is one optimizer step and the
rows' state is carried to the next step, HRM's and TRM's persistent carry. Both read the model
only through its arm contract (model/recursion.py) and the exit rule here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from reasonlab.model.loss import IGNORE_INDEX, masked_mean, token_losses
from reasonlab.model.outputs import State, StepLoss

if TYPE_CHECKING:
    from reasonlab.model.recursion import Passes, RecursiveLM


def exits(live: torch.Tensor, q_BT: torch.Tensor | None, number: int | torch.Tensor, last: bool | torch.Tensor,
          min_segments: torch.Tensor | None) -> torch.Tensor:
    """The exit rule: a live token exits at its last segment, or (with halting logits) at the first
    segment whose logit is > 0 once it has run `min_segments`. `number` is the segment's 1-based
    number and `last` whether it is the last, each for all rows or per row ([B, 1])."""
    out = live & torch.as_tensor(last, device=live.device)
    if q_BT is not None:
        halts = q_BT.detach() > 0
        if min_segments is not None:
            halts = halts & (min_segments <= number)
        out = out | (live & halts)
    return out


@dataclass
class Carry:
    """Rows refined across optimizer steps (recursion.carry_across_steps), one segment a step: their
    tokens and targets [B, T], state, which tokens are still supervised [B, T], the segments each
    row has run [B], and each token's least number of segments (exploration; None without)."""

    input_ids: torch.Tensor
    targets: torch.Tensor
    state: State
    live: torch.Tensor
    segments: torch.Tensor
    min_segments: torch.Tensor | None

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor by name, for a checkpoint."""
        out = {"input_ids": self.input_ids, "targets": self.targets, "live": self.live, "segments": self.segments,
               **{f"state.{i}": t for i, t in enumerate(self.state)}}
        return out if self.min_segments is None else {**out, "min_segments": self.min_segments}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], device: torch.device) -> Carry:
        t = {k: v.to(device) for k, v in tensors.items()}
        state = tuple(t[f"state.{i}"] for i in range(sum(k.startswith("state.") for k in t)))
        return cls(t["input_ids"], t["targets"], state, t["live"], t["segments"], t.get("min_segments"))

    def split(self, rows: int) -> list[Carry]:
        """The carries of consecutive slices of `rows` rows (a batch's micro-batches)."""
        parts = {k: v.split(rows) for k, v in self.tensors().items()}
        return [Carry.from_tensors({k: v[i] for k, v in parts.items()}, self.input_ids.device)
                for i in range(len(parts["input_ids"]))]

    @classmethod
    def cat(cls, carries: list[Carry]) -> Carry:
        """One carry of the rows of `carries`, in order (the inverse of `split`)."""
        parts = [c.tensors() for c in carries]
        return cls.from_tensors({k: torch.cat([p[k] for p in parts]) for k in parts[0]}, carries[0].input_ids.device)


def exploration(model: RecursiveLM, targets: torch.Tensor) -> torch.Tensor | None:
    """Each token's least number of segments in this training step (None: no constraint)."""
    rec = model.rec
    if not (rec.use_act and model.training and rec.halt_exploration_prob > 0 and rec.max_segments > 1):
        return None
    explore = torch.rand(targets.shape, device=targets.device) < rec.halt_exploration_prob
    ones = torch.ones(targets.shape, dtype=torch.long, device=targets.device)
    return torch.where(explore, torch.randint_like(ones, 2, rec.max_segments + 1), ones)


def _segment_loss(model: RecursiveLM, h_BTD: torch.Tensor, q_BT: torch.Tensor | None,
                  cost_BT: torch.Tensor | None, targets: torch.Tensor,
                  live: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One segment's losses summed over its live tokens (cross-entropy "lm", and where there are
    halting logits or an arm's cost, the halting BCE against "prediction correct" and "penalty"),
    and each token's cross-entropy."""
    token_loss, prediction = token_losses(h_BTD, model.core.embed.weight, targets, model.core.loss_chunk_tokens,
                                          predict=q_BT is not None)
    weight = live.float()
    sums = {"lm": (token_loss * weight).sum(), "count": weight.sum()}
    if q_BT is not None:
        bce = F.binary_cross_entropy_with_logits(q_BT, (prediction == targets).float(), reduction="none")
        sums["halt"] = (bce * weight).sum()
    if cost_BT is not None:
        sums["penalty"] = (cost_BT * weight).sum()
    return sums, token_loss


def _step_loss(model: RecursiveLM, sums: dict[str, torch.Tensor], lm_loss: torch.Tensor, lm_count: torch.Tensor,
               passes: Passes, metrics: dict[str, torch.Tensor], flops: int, carry: Carry | None = None) -> StepLoss:
    """The objective from the summed losses: cross-entropy, the weighted halting BCE and arm cost
    (each a mean over the supervised tokens of every segment) and the weighted balance loss;
    `lm_loss` is the reported mean over `lm_count` tokens."""
    means = {k: v / sums["count"].clamp(min=1) for k, v in sums.items() if k != "count"}
    balance = passes.mean_balance()
    loss = (means["lm"] + model.cfg.balance_loss_weight * balance
            + model.rec.halt_loss_weight * means.get("halt", 0.0) + model.penalty_weight * means.get("penalty", 0.0))
    metrics = {"balance_loss": balance, **metrics}
    if "halt" in means:
        metrics["halt_loss"] = means["halt"]
    if "penalty" in means:
        metrics[model.penalty_name] = means["penalty"]
    return StepLoss(loss=loss, lm_loss=lm_loss, flops=flops, metrics=metrics, carry=carry,
                    loss_count=sums["count"], lm_count=lm_count)


def deep_supervision_loss(model: RecursiveLM, input_ids: torch.Tensor, targets: torch.Tensor) -> StepLoss:
    """Deep supervision over segments, per-token halting trained by BCE against correctness.

    Every segment a token is live for adds its cross-entropy (and, with ACT, its halting BCE,
    and the arm's own cost); the reported `lm_loss` is each token's loss at its exit segment.
    """
    rec = model.rec
    embedded = model.core.embed_tokens(input_ids)  # before the exploration draw: its dropout takes the RNG first
    valid = targets != IGNORE_INDEX
    min_segments = exploration(model, targets)
    depth = model.train_depth() if model.training else None
    r = model.recur(embedded, rec.max_segments, rec.use_act, valid, min_segments, depth)
    exit_loss = torch.zeros(targets.shape, device=targets.device)
    sums: dict[str, torch.Tensor] = {}
    for s, (h_BTD, q_BT, cost_BT) in enumerate(zip(r.states, r.halt_logits, r.penalties)):
        live = valid & (r.exit_segment > s)
        segment_sums, token_loss = _segment_loss(model, h_BTD, q_BT, cost_BT, targets, live)
        sums = {k: sums.get(k, 0) + v for k, v in segment_sums.items()}
        exit_loss = torch.where(live & (r.exit_segment == s + 1), token_loss.detach(), exit_loss)
    flops = model.flops_of(targets.numel(), r.passes, len(r.states))
    return _step_loss(model, sums, masked_mean(exit_loss, valid), valid.sum(), r.passes,
                      {"segments": masked_mean(r.exit_segment.float(), valid)}, flops)


def carried_loss(model: RecursiveLM, input_ids: torch.Tensor, targets: torch.Tensor, carry: Carry | None) -> StepLoss:
    """One segment of deep supervision as one optimizer step, the state carried to the next step.

    Rows continue from `carry`; a row none of whose tokens is still supervised (each exited by
    the exit rule, at the latest after max_segments segments), and every row of the first step,
    starts afresh from the same row of this batch: the persistent carry of HRM and TRM. The
    reported `lm_loss` is the cross-entropy of the tokens supervised in this step.
    """
    rec = model.rec
    fresh_B = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device) if carry is None \
        else ~carry.live.any(dim=1)
    if carry is not None:
        input_ids = torch.where(fresh_B[:, None], input_ids, carry.input_ids)
        targets = torch.where(fresh_B[:, None], targets, carry.targets)
    x_BTD, cos, sin = model.core.embed_tokens(input_ids)
    min_segments = exploration(model, targets)
    state = model.initial_state(x_BTD)
    live = targets != IGNORE_INDEX
    number_B = torch.ones_like(fresh_B, dtype=torch.long)
    if carry is not None:
        state = tuple(torch.where(fresh_B[:, None, None], start, kept) for start, kept in zip(state, carry.state))
        live = torch.where(fresh_B[:, None], live, carry.live)
        number_B = torch.where(fresh_B, 1, carry.segments + 1)
        if min_segments is not None:
            min_segments = torch.where(fresh_B[:, None], min_segments, carry.min_segments)
    f = model.passes_over(x_BTD, cos, sin)
    seg = model.segment(state, x_BTD, f, model.train_depth())
    h_BTD = model.readout(seg.state)
    q_BT = model.halt_logits(h_BTD) if rec.use_act else None
    out_BT = exits(live, q_BT, number_B[:, None], (number_B >= rec.max_segments)[:, None], min_segments)
    sums, token_loss = _segment_loss(model, h_BTD, q_BT, seg.penalty_BT, targets, live)
    flops = model.flops_of(targets.numel(), f, 1)
    after = Carry(input_ids, targets, tuple(t.detach() for t in seg.state), live & ~out_BT, number_B, min_segments)
    metrics = {"segments": masked_mean(number_B[:, None].expand_as(live).float(), out_BT)}
    return _step_loss(model, sums, masked_mean(token_loss.detach(), live), live.sum(), f, metrics, flops, after)
