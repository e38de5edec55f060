"""The recursive arm: HRM-style hierarchical cycles over the baseline's shared block stack.

Two latent states per position, z_L and z_H, start from learned vectors. One *segment* is
H_cycles high-level cycles; each cycle runs L_cycles low-level updates

    z_L <- z_L + f(norm_L(z_L + P_HL z_H + x))

then one high-level update

    z_H <- z_H + f(norm_H(z_H + P_LH z_L))

where f is the baseline's block stack (the same weights on every pass) and x the token
embedding, re-injected at every low-level update. Only the last `grad_cycles` cycles of a
segment carry gradient; the earlier ones run under no_grad and reach the segment's input
state only through the residual identity (a one-step gradient, as in HRM). The LM head reads
norm(z_H): in training after every segment (deep supervision), in inference once, on each
token's exit state. Every pass's MoE balance loss counts, averaged over passes.

Up to `max_segments` segments refine the same sequence, each starting from the previous
segment's (detached) states, and each trained on next-token cross-entropy (deep
supervision). The states belong to one sequence: nothing is carried across rows, batches or
calls.

Halting (use_act) is per token and causal: a halting head reads norm(z_H) at position t,
which has seen tokens <= t only, and is trained with binary cross-entropy against "this
segment's prediction at t is correct" (as TRM does per puzzle). A token exits at the first
segment whose halting logit is > 0 (or at max_segments); its prediction is that
segment's logits, in training, evaluation and generation alike: one loop (`recur`) runs the
segments and applies this exit rule for both. After a token exits, later
segments still update its states (other tokens attend to them) but its losses no longer
count. In training, with probability halt_exploration_prob a token must run a random
2..max_segments segments before it may exit. With use_act false, every token runs
max_segments segments and predicts from the last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reasonlab.config import ModelConfig, RecursionConfig
from reasonlab.model.flops import step_flops
from reasonlab.model.loss import IGNORE_INDEX, masked_mean, token_losses
from reasonlab.model.outputs import ModelOutput, StepLoss
from reasonlab.model.transformer import MoETransformerLM

State = tuple[torch.Tensor, torch.Tensor]
Embedded = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # token embeddings [B, T, d] and the rotary tables


@dataclass
class Recursion:
    """What the segment loop leaves for its reader: per segment run, the normalised high-level
    state [B, T, d] and the halting logits [B, T] (None without ACT); each token's exit segment
    (1-based, [B, T]); the MoE balance loss averaged over every pass."""

    states: list[torch.Tensor]
    halt_logits: list[torch.Tensor | None]
    exit_segment: torch.Tensor
    balance_loss: torch.Tensor


class RecursiveLM(nn.Module):
    def __init__(self, cfg: ModelConfig, rec: RecursionConfig):
        super().__init__()
        self.cfg, self.rec = cfg, rec
        d = cfg.d_model
        self.core = MoETransformerLM(cfg)
        self.p_hl = nn.Linear(d, d, bias=False)
        self.p_lh = nn.Linear(d, d, bias=False)
        self.norm_l = nn.RMSNorm(d)
        self.norm_h = nn.RMSNorm(d)
        init_std = 0.02 * math.sqrt(d)  # the scale of the embedded tokens
        self.z_l_init = nn.Parameter(torch.randn(d) * init_std)
        self.z_h_init = nn.Parameter(torch.randn(d) * init_std)
        self.halt_head = nn.Linear(d, 1)
        nn.init.normal_(self.p_hl.weight, std=0.02)
        nn.init.normal_(self.p_lh.weight, std=0.02)
        nn.init.zeros_(self.halt_head.weight)
        nn.init.constant_(self.halt_head.bias, -5.0)  # start by never halting, as HRM does

    def configure_memory(self, activation_checkpointing: bool, loss_chunk_tokens: int) -> None:
        self.core.configure_memory(activation_checkpointing, loss_chunk_tokens)

    def _cycle(self, z: State, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[State, torch.Tensor]:
        z_l, z_h = z
        aux = x.new_zeros((), dtype=torch.float32)
        for _ in range(self.rec.L_cycles):
            update, pass_aux = self.core.stack(self.norm_l(z_l + self.p_hl(z_h) + x), cos, sin)
            z_l, aux = z_l + update, aux + pass_aux
        update, pass_aux = self.core.stack(self.norm_h(z_h + self.p_lh(z_l)), cos, sin)
        return (z_l, z_h + update), aux + pass_aux

    def _segment(self, z: State, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[State, torch.Tensor]:
        """H cycles from state z; returns the new state and the summed balance loss of its passes."""
        aux = x.new_zeros((), dtype=torch.float32)
        free_cycles = self.rec.H_cycles - self.rec.grad_cycles
        if free_cycles:
            with torch.no_grad():
                z_free = z
                for _ in range(free_cycles):
                    z_free, cycle_aux = self._cycle(z_free, x, cos, sin)
                    aux = aux + cycle_aux
            z = tuple(start + (end - start).detach() for start, end in zip(z, z_free))
        for _ in range(self.rec.grad_cycles):
            z, cycle_aux = self._cycle(z, x, cos, sin)
            aux = aux + cycle_aux
        return z, aux

    def _initial_state(self, x: torch.Tensor) -> State:
        return self.z_l_init.to(x.dtype).expand_as(x), self.z_h_init.to(x.dtype).expand_as(x)

    @property
    def passes_per_segment(self) -> int:
        return self.rec.H_cycles * (self.rec.L_cycles + 1)

    def recur(self, embedded: Embedded, n: int, use_act: bool, live: torch.Tensor,
              min_segments: torch.Tensor | None = None) -> Recursion:
        """The segment loop and exit rule that training and inference share.

        Runs up to `n` segments over the embedded tokens (`core.embed_tokens`), each starting from
        the previous one's detached states. A token in `live` exits at the first segment whose
        halting logit is > 0 once it has run `min_segments` (with `use_act`), else at the last
        segment; the loop stops early once no live token is left.
        """
        x_BTD, cos, sin = embedded
        z = self._initial_state(x_BTD)
        exit_segment_BT = torch.full(live.shape, n, device=x_BTD.device)
        aux = x_BTD.new_zeros((), dtype=torch.float32)
        states, halt_logits = [], []
        for s in range(n):
            z, segment_aux = self._segment(z, x_BTD, cos, sin)
            aux = aux + segment_aux
            h_BTD = self.core.norm(z[1])
            q_BT = self.halt_head(h_BTD).squeeze(-1).float() if use_act else None
            if s == n - 1:
                exits_BT = live
            elif q_BT is None:
                exits_BT = torch.zeros_like(live)
            else:
                exits_BT = live & (q_BT.detach() > 0)
                if min_segments is not None:
                    exits_BT = exits_BT & (min_segments <= s + 1)
            exit_segment_BT = torch.where(exits_BT, s + 1, exit_segment_BT)
            live = live & ~exits_BT
            states.append(h_BTD)
            halt_logits.append(q_BT)
            z = (z[0].detach(), z[1].detach())
            if use_act and s < n - 1 and not live.any():  # a host sync: only where it can save a segment
                break
        return Recursion(states, halt_logits, exit_segment_BT, aux / (len(states) * self.passes_per_segment))

    def run(self, input_ids: torch.Tensor, segments: int | None = None) -> ModelOutput:
        """Inference: each token's logits from the segment it exits at.

        `segments` overrides halting: every token runs exactly that many segments and predicts
        from the last, which may be more than training ever ran (test-time compute).
        """
        n = self.rec.max_segments if segments is None else segments
        live = torch.ones(input_ids.shape, dtype=torch.bool, device=input_ids.device)
        r = self.recur(self.core.embed_tokens(input_ids), n, self.rec.use_act and segments is None, live)
        h_BTD = r.states[-1]
        for s in range(len(r.states) - 2, -1, -1):  # the head runs once, on each token's exit state
            h_BTD = torch.where((r.exit_segment == s + 1).unsqueeze(-1), r.states[s], h_BTD)
        return ModelOutput(self.core.head(h_BTD), r.balance_loss, r.exit_segment)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor | StepLoss:
        """Logits [B, T, vocab]; with targets, the training step's losses (what DDP wraps)."""
        if targets is not None:
            return self.compute_loss(input_ids, targets)
        return self.run(input_ids).logits

    def compute_loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> StepLoss:
        """Deep supervision over segments, per-token halting trained by BCE against correctness.

        Every segment a token is live for adds its cross-entropy (and, with ACT, its halting BCE);
        the reported `lm_loss` is each token's loss at the segment it exits at.
        """
        rec = self.rec
        embedded = self.core.embed_tokens(input_ids)  # before the exploration draw: its dropout takes the RNG first
        valid = targets != IGNORE_INDEX
        min_segments = None
        if rec.use_act and self.training and rec.halt_exploration_prob > 0 and rec.max_segments > 1:
            explore = torch.rand(targets.shape, device=targets.device) < rec.halt_exploration_prob
            ones = torch.ones(targets.shape, dtype=torch.long, device=targets.device)
            min_segments = torch.where(explore, torch.randint_like(ones, 2, rec.max_segments + 1), ones)
        r = self.recur(embedded, rec.max_segments, rec.use_act, valid, min_segments)
        exit_loss = torch.zeros(targets.shape, device=targets.device)
        lm_sum = halt_sum = counted = torch.zeros((), device=targets.device)
        for s, (h_BTD, q_BT) in enumerate(zip(r.states, r.halt_logits)):
            live = valid & (r.exit_segment > s)
            token_loss, prediction = token_losses(h_BTD, self.core.embed.weight, targets, self.core.loss_chunk_tokens,
                                                  predict=q_BT is not None)
            weight = live.float()
            lm_sum = lm_sum + (token_loss * weight).sum()
            counted = counted + weight.sum()
            if q_BT is not None:
                correct = (prediction == targets).float()
                bce = F.binary_cross_entropy_with_logits(q_BT, correct, reduction="none")
                halt_sum = halt_sum + (bce * weight).sum()
            exit_loss = torch.where(live & (r.exit_segment == s + 1), token_loss.detach(), exit_loss)
        halt_loss = halt_sum / counted.clamp(min=1)
        lm_loss = lm_sum / counted.clamp(min=1)
        loss = lm_loss + self.cfg.balance_loss_weight * r.balance_loss + rec.halt_loss_weight * halt_loss
        metrics = {"balance_loss": r.balance_loss, "segments": masked_mean(r.exit_segment.float(), valid)}
        if rec.use_act:
            metrics["halt_loss"] = halt_loss
        return StepLoss(
            loss=loss,
            lm_loss=masked_mean(exit_loss, valid),
            flops=step_flops(self.cfg, targets.numel(), rec, len(r.states)),
            metrics=metrics,
        )
