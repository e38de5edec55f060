"""The recursion core every recursive arm shares: segments of deep supervision and one exit rule.

An arm (`hrm`, `trm`, `looped`; model/arms.py lists them) is a subclass that says how its state
starts (`initial_state`), how one segment refines it (`segment`) and what the LM head reads
(`readout`). Everything else is here, once: the segment loop, per-token halting, inference,
the deep-supervision loss and the FLOPs that really ran.

Up to `max_segments` segments refine the same sequence, each starting from the previous one's
detached state and each trained on next-token cross-entropy (deep supervision). The state
belongs to one sequence: nothing is carried across rows, batches or calls.

Halting (use_act) is per token and causal: a halting head reads the readout at position t,
which has seen tokens <= t only, and is trained with binary cross-entropy against "this
segment's prediction at t is correct" (as TRM does per puzzle). A token exits at the first
segment whose halting logit is > 0 (or at its last segment); its prediction is that segment's
logits, in training, evaluation and generation alike: `recur` runs the segments and applies
this rule for both. After a token exits, later segments still update its state (other tokens
attend to it) but its losses no longer count. In training, with probability
halt_exploration_prob a token must run a random 2..max_segments segments before it may exit.
With use_act false, every token runs max_segments segments and predicts from the last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reasonlab.config import Config
from reasonlab.model.flops import base_param_counts, recursion_step_flops
from reasonlab.model.loss import IGNORE_INDEX, masked_mean, token_losses
from reasonlab.model.outputs import ModelOutput, StepLoss
from reasonlab.model.transformer import MoETransformerLM

State = tuple[torch.Tensor, ...]  # an arm's per-position states, each [B, T, d]


@dataclass
class Segment:
    """One segment's work: the new state, its passes' summed MoE balance loss, how many stack
    passes ran with and without gradient, and an arm's own per-token cost ([B, T], e.g. the
    ponder cost of looped ACT), weighted in the loss by the arm's `penalty_weight`."""

    state: State
    balance_loss: torch.Tensor
    grad_passes: int
    free_passes: int
    penalty_BT: torch.Tensor | None = None


@dataclass
class Recursion:
    """What the segment loop leaves for its reader: per segment run, the readout [B, T, d], the
    halting logits [B, T] (None without ACT) and the arm's per-token cost (or None); each token's
    exit segment (1-based, [B, T]); the MoE balance loss averaged over every pass; the passes run,
    with and without gradient."""

    states: list[torch.Tensor]
    halt_logits: list[torch.Tensor | None]
    penalties: list[torch.Tensor | None]
    exit_segment: torch.Tensor
    balance_loss: torch.Tensor
    grad_passes: int
    free_passes: int


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


class RecursiveLM(nn.Module):
    """The shared part of every recursive arm: the baseline's block stack (`core`), a halting head,
    the segment loop, inference and the deep-supervision loss."""

    penalty_weight = 0.0  # weight of Segment.penalty_BT in the loss
    every_pass = False  # run every segment and pass, without early stops (cached decoding needs the same calls)

    def __init__(self, cfg: Config):
        super().__init__()
        self.config, self.cfg, self.rec = cfg, cfg.model, cfg.recursion
        self.core = MoETransformerLM(cfg.model)
        self.halt_head = nn.Linear(cfg.model.d_model, 1)
        nn.init.zeros_(self.halt_head.weight)
        nn.init.constant_(self.halt_head.bias, -5.0)  # start by never halting, as HRM does

    # What an arm defines ------------------------------------------------------------------------

    def initial_state(self, x_BTD: torch.Tensor) -> State:
        raise NotImplementedError

    def segment(self, z: State, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                depth: int | None) -> Segment:
        """One segment from state z; `depth` forces the arm's inner recursion count (test time)."""
        raise NotImplementedError

    def readout(self, z: State) -> torch.Tensor:
        """The normalised state [B, T, d] the LM head and the halting head read."""
        raise NotImplementedError

    @property
    def trained_depth(self) -> int:
        """The arm's inner recursion count as trained: what `depth` overrides at test time."""
        raise NotImplementedError

    @classmethod
    def passes(cls, cfg: Config) -> tuple[float, float]:
        """Stack passes per segment in a training step, (with gradient, without); expected values
        where the depth is drawn at random."""
        raise NotImplementedError

    @classmethod
    def pass_params(cls, cfg: Config) -> int:
        """Matmul weights of the arm's own that each pass multiplies through (see flops.py)."""
        return 0

    @classmethod
    def own_params(cls, cfg: Config) -> int:
        """Parameters beyond the shared stack and embedding (the halting head included)."""
        return cfg.model.d_model + 1

    def train_depth(self) -> int | None:
        """The depth of this training step; None = the arm's configured depth."""
        return None

    # The shared part -----------------------------------------------------------------------------

    @classmethod
    def param_counts(cls, cfg: Config) -> dict[str, int]:
        counts = base_param_counts(cfg.model)
        own = cls.own_params(cfg)
        return {**counts, "total": counts["total"] + own, "active": counts["active"] + own}

    @classmethod
    def step_flops(cls, cfg: Config, tokens: int) -> int:
        """FLOPs of a training step in which no token exits early (ACT can only spend less): every
        segment, or one where the state is carried across steps."""
        grad, free = cls.passes(cfg)
        n = 1 if cfg.recursion.carry_across_steps else cfg.recursion.max_segments
        return cls.flops_of(cfg, tokens, n * grad, n * free, n)

    @classmethod
    def flops_of(cls, cfg: Config, tokens: int, grad_passes: float, free_passes: float, segments: int) -> float:
        """Training FLOPs of `tokens` tokens through these passes and segments (model/flops.py)."""
        return recursion_step_flops(cfg.model, tokens, grad_passes, free_passes, segments, cls.pass_params(cfg),
                                    cfg.recursion.use_act)

    @classmethod
    def passes_per_token(cls, cfg: Config) -> float:
        """Stack passes one token goes through over every segment: the depth of the FLOP control."""
        return cfg.recursion.max_segments * sum(cls.passes(cfg))

    def configure_memory(self, activation_checkpointing: bool, loss_chunk_tokens: int) -> None:
        self.core.configure_memory(activation_checkpointing, loss_chunk_tokens)

    def _init_state_vector(self) -> nn.Parameter:
        """An initial state vector [d], at the scale of the embedded tokens."""
        return nn.Parameter(torch.randn(self.cfg.d_model) * 0.02 * math.sqrt(self.cfg.d_model))

    def recur(self, embedded: tuple[torch.Tensor, torch.Tensor, torch.Tensor], n: int, use_act: bool,
              live: torch.Tensor, min_segments: torch.Tensor | None = None, depth: int | None = None) -> Recursion:
        """The segment loop and exit rule that training and inference share.

        Runs up to `n` segments over the embedded tokens (`core.embed_tokens`), each starting from
        the previous one's detached state. A token in `live` exits at the first segment whose
        halting logit is > 0 once it has run `min_segments` (with `use_act`), else at the last
        segment; the loop stops early once no live token is left.
        """
        x_BTD, cos, sin = embedded
        z = self.initial_state(x_BTD)
        exit_segment_BT = torch.full(live.shape, n, device=x_BTD.device)
        aux = x_BTD.new_zeros((), dtype=torch.float32)
        states, halt_logits, penalties = [], [], []
        grad_passes = free_passes = 0
        for s in range(n):
            seg = self.segment(z, x_BTD, cos, sin, depth)
            aux = aux + seg.balance_loss
            grad_passes, free_passes = grad_passes + seg.grad_passes, free_passes + seg.free_passes
            h_BTD = self.readout(seg.state)
            q_BT = self.halt_head(h_BTD).squeeze(-1).float() if use_act else None
            exits_BT = exits(live, q_BT, s + 1, s == n - 1, min_segments)
            exit_segment_BT = torch.where(exits_BT, s + 1, exit_segment_BT)
            live = live & ~exits_BT
            states.append(h_BTD)
            halt_logits.append(q_BT)
            penalties.append(seg.penalty_BT)
            z = tuple(t.detach() for t in seg.state)
            if use_act and s < n - 1 and not self.every_pass and not live.any():  # a host sync: only where it saves
                break
        balance = aux / max(1, grad_passes + free_passes)
        return Recursion(states, halt_logits, penalties, exit_segment_BT, balance, grad_passes, free_passes)

    def run(self, input_ids: torch.Tensor, segments: int | None = None, depth: int | None = None) -> ModelOutput:
        """Inference: each token's logits from the segment it exits at.

        `segments` overrides halting: every token runs exactly that many segments and predicts
        from the last. `depth` forces the arm's inner recursion count. Either may exceed what
        training ever ran (test-time compute). Without `recursion.halt_at_eval`, an evaluation
        runs every segment, as HRM and TRM score: their halting only decides, in training, when a
        carried row takes a new example.
        """
        if segments is None and not (self.training or self.rec.halt_at_eval):
            segments = self.rec.max_segments
        n = self.rec.max_segments if segments is None else segments
        live = torch.ones(input_ids.shape, dtype=torch.bool, device=input_ids.device)
        r = self.recur(self.core.embed_tokens(input_ids), n, self.rec.use_act and segments is None, live,
                       depth=depth)
        h_BTD = r.states[-1]
        for s in range(len(r.states) - 2, -1, -1):  # the head runs once, on each token's exit state
            h_BTD = torch.where((r.exit_segment == s + 1).unsqueeze(-1), r.states[s], h_BTD)
        return ModelOutput(self.core.head(h_BTD), r.balance_loss, r.exit_segment)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                carry: Carry | None = None) -> torch.Tensor | StepLoss:
        """Logits [B, T, vocab]; with targets, the training step's losses (what DDP wraps)."""
        if targets is None:
            return self.run(input_ids).logits
        if self.rec.carry_across_steps and self.training:
            return self.carried_loss(input_ids, targets, carry)
        return self.compute_loss(input_ids, targets)

    def _exploration(self, targets: torch.Tensor) -> torch.Tensor | None:
        """Each token's least number of segments in this training step (None: no constraint)."""
        rec = self.rec
        if not (rec.use_act and self.training and rec.halt_exploration_prob > 0 and rec.max_segments > 1):
            return None
        explore = torch.rand(targets.shape, device=targets.device) < rec.halt_exploration_prob
        ones = torch.ones(targets.shape, dtype=torch.long, device=targets.device)
        return torch.where(explore, torch.randint_like(ones, 2, rec.max_segments + 1), ones)

    def _segment_loss(self, h_BTD: torch.Tensor, q_BT: torch.Tensor | None, cost_BT: torch.Tensor | None,
                      targets: torch.Tensor, live: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One segment's losses summed over its live tokens (cross-entropy "lm", and where there are
        halting logits or an arm's cost, the halting BCE against "prediction correct" and "ponder"),
        and each token's cross-entropy."""
        token_loss, prediction = token_losses(h_BTD, self.core.embed.weight, targets, self.core.loss_chunk_tokens,
                                              predict=q_BT is not None)
        weight = live.float()
        sums = {"lm": (token_loss * weight).sum(), "count": weight.sum()}
        if q_BT is not None:
            bce = F.binary_cross_entropy_with_logits(q_BT, (prediction == targets).float(), reduction="none")
            sums["halt"] = (bce * weight).sum()
        if cost_BT is not None:
            sums["ponder"] = (cost_BT * weight).sum()
        return sums, token_loss

    def _step_loss(self, sums: dict[str, torch.Tensor], lm_loss: torch.Tensor, lm_count: torch.Tensor,
                   balance: torch.Tensor, metrics: dict[str, torch.Tensor], flops: int,
                   carry: Carry | None = None) -> StepLoss:
        """The objective from the summed losses: cross-entropy, the weighted halting BCE and arm cost
        (each a mean over the supervised tokens of every segment) and the weighted balance loss;
        `lm_loss` is the reported mean over `lm_count` tokens."""
        means = {k: v / sums["count"].clamp(min=1) for k, v in sums.items() if k != "count"}
        loss = (means["lm"] + self.cfg.balance_loss_weight * balance
                + self.rec.halt_loss_weight * means.get("halt", 0.0) + self.penalty_weight * means.get("ponder", 0.0))
        metrics = {"balance_loss": balance, **metrics}
        if "halt" in means:
            metrics["halt_loss"] = means["halt"]
        if "ponder" in means:
            metrics["ponder"] = means["ponder"]
        return StepLoss(loss=loss, lm_loss=lm_loss, flops=flops, metrics=metrics, carry=carry,
                        loss_count=sums["count"], lm_count=lm_count)

    def compute_loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> StepLoss:
        """Deep supervision over segments, per-token halting trained by BCE against correctness.

        Every segment a token is live for adds its cross-entropy (and, with ACT, its halting BCE,
        and the arm's own cost); the reported `lm_loss` is each token's loss at its exit segment.
        """
        rec = self.rec
        embedded = self.core.embed_tokens(input_ids)  # before the exploration draw: its dropout takes the RNG first
        valid = targets != IGNORE_INDEX
        min_segments = self._exploration(targets)
        depth = self.train_depth() if self.training else None
        r = self.recur(embedded, rec.max_segments, rec.use_act, valid, min_segments, depth)
        exit_loss = torch.zeros(targets.shape, device=targets.device)
        sums: dict[str, torch.Tensor] = {}
        for s, (h_BTD, q_BT, cost_BT) in enumerate(zip(r.states, r.halt_logits, r.penalties)):
            live = valid & (r.exit_segment > s)
            segment_sums, token_loss = self._segment_loss(h_BTD, q_BT, cost_BT, targets, live)
            sums = {k: sums.get(k, 0) + v for k, v in segment_sums.items()}
            exit_loss = torch.where(live & (r.exit_segment == s + 1), token_loss.detach(), exit_loss)
        flops = self.flops_of(self.config, targets.numel(), r.grad_passes, r.free_passes, len(r.states))
        return self._step_loss(sums, masked_mean(exit_loss, valid), valid.sum(), r.balance_loss,
                               {"segments": masked_mean(r.exit_segment.float(), valid)}, flops)

    def carried_loss(self, input_ids: torch.Tensor, targets: torch.Tensor, carry: Carry | None) -> StepLoss:
        """One segment of deep supervision as one optimizer step, the state carried to the next step.

        Rows continue from `carry`; a row none of whose tokens is still supervised (each exited by
        the exit rule, at the latest after max_segments segments), and every row of the first step,
        starts afresh from the same row of this batch: the persistent carry of HRM and TRM. The
        reported `lm_loss` is the cross-entropy of the tokens supervised in this step.
        """
        rec = self.rec
        fresh_B = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device) if carry is None \
            else ~carry.live.any(dim=1)
        if carry is not None:
            input_ids = torch.where(fresh_B[:, None], input_ids, carry.input_ids)
            targets = torch.where(fresh_B[:, None], targets, carry.targets)
        x_BTD, cos, sin = self.core.embed_tokens(input_ids)
        min_segments = self._exploration(targets)
        state = self.initial_state(x_BTD)
        live = targets != IGNORE_INDEX
        number_B = torch.ones_like(fresh_B, dtype=torch.long)
        if carry is not None:
            state = tuple(torch.where(fresh_B[:, None, None], start, kept) for start, kept in zip(state, carry.state))
            live = torch.where(fresh_B[:, None], live, carry.live)
            number_B = torch.where(fresh_B, 1, carry.segments + 1)
            if min_segments is not None:
                min_segments = torch.where(fresh_B[:, None], min_segments, carry.min_segments)
        seg = self.segment(state, x_BTD, cos, sin, self.train_depth())
        h_BTD = self.readout(seg.state)
        q_BT = self.halt_head(h_BTD).squeeze(-1).float() if rec.use_act else None
        out_BT = exits(live, q_BT, number_B[:, None], (number_B >= rec.max_segments)[:, None], min_segments)
        sums, token_loss = self._segment_loss(h_BTD, q_BT, seg.penalty_BT, targets, live)
        passes = seg.grad_passes + seg.free_passes
        flops = self.flops_of(self.config, targets.numel(), seg.grad_passes, seg.free_passes, 1)
        after = Carry(input_ids, targets, tuple(t.detach() for t in seg.state), live & ~out_BT, number_B, min_segments)
        metrics = {"segments": masked_mean(number_B[:, None].expand_as(live).float(), out_BT)}
        return self._step_loss(sums, masked_mean(token_loss.detach(), live), live.sum(),
                               seg.balance_loss / max(1, passes), metrics, flops, after)
