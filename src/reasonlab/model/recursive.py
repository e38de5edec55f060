"""The recursive arm: HRM-style hierarchical cycles over the baseline's shared block stack.

Two latent states per position, z_L and z_H, start from learned vectors. One *segment* is
H_cycles high-level cycles; each cycle runs L_cycles low-level updates

    z_L <- z_L + f(norm_L(z_L + P_HL z_H + x))

then one high-level update

    z_H <- z_H + f(norm_H(z_H + P_LH z_L))

where f is the baseline's block stack (the same weights on every pass) and x the token
embedding, re-injected at every low-level update. Only the last `grad_cycles` cycles of a
segment carry gradient; the earlier ones run under no_grad and reach the segment's input
state only through the residual identity (a one-step gradient, as in HRM). The LM head runs
once per segment, on norm(z_H). Every pass's MoE balance loss counts, averaged over passes.

Up to `max_segments` segments refine the same sequence, each starting from the previous
segment's (detached) states, and each trained on next-token cross-entropy (deep
supervision). The states belong to one sequence: nothing is carried across rows, batches or
calls.

Halting (use_act) is per token and causal: a halting head reads norm(z_H) at position t,
which has seen tokens <= t only, and is trained with binary cross-entropy against "this
segment's prediction at t is correct" (as TRM does per puzzle). A token exits at the first
segment whose halting logit is > 0 (or at max_segments); its prediction is that
segment's logits, in training, evaluation and generation alike. After a token exits, later
segments still update its states (other tokens attend to them) but its losses no longer
count. In training, with probability halt_exploration_prob a token must run a random
2..max_segments segments before it may exit. With use_act false, every token runs
max_segments segments and predicts from the last.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reasonlab.config import ModelConfig, RecursionConfig
from reasonlab.model.flops import step_flops
from reasonlab.model.loss import IGNORE_INDEX, masked_mean, token_losses
from reasonlab.model.outputs import ModelOutput, StepLoss
from reasonlab.model.transformer import MoETransformerLM

State = tuple[torch.Tensor, torch.Tensor]


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

    def run(self, input_ids: torch.Tensor, segments: int | None = None) -> ModelOutput:
        """Inference: each token's logits from the segment it exits at.

        `segments` overrides halting: every token runs exactly that many segments and predicts
        from the last, which may be more than training ever ran (test-time compute).
        """
        x, cos, sin = self.core.embed_tokens(input_ids)
        z = self._initial_state(x)
        n = self.rec.max_segments if segments is None else segments
        use_act = self.rec.use_act and segments is None
        logits = None
        exit_segment = torch.full(input_ids.shape, n, device=x.device)
        done = torch.zeros(input_ids.shape, dtype=torch.bool, device=x.device)
        aux = x.new_zeros((), dtype=torch.float32)
        segments_run = 0
        for s in range(n):
            z, seg_aux = self._segment(z, x, cos, sin)
            z = (z[0].detach(), z[1].detach())
            aux, segments_run = aux + seg_aux, segments_run + 1
            last = s == n - 1
            if not use_act and not last:
                continue
            h = self.core.norm(z[1])
            seg_logits = self.core.head(h)
            halt = ~done if last else ~done & (self.halt_head(h).squeeze(-1) > 0)
            logits = seg_logits if logits is None else torch.where(halt.unsqueeze(-1), seg_logits, logits)
            exit_segment = torch.where(halt, s + 1, exit_segment)
            done = done | halt
            if not last and done.all():
                break
        return ModelOutput(logits, aux / (segments_run * self.passes_per_segment), exit_segment)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor | StepLoss:
        """Logits [B, T, vocab]; with targets, the training step's losses (what DDP wraps)."""
        if targets is not None:
            return self.compute_loss(input_ids, targets)
        return self.run(input_ids).logits

    def compute_loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> StepLoss:
        """Deep supervision over segments, per-token halting trained by BCE against correctness."""
        rec = self.rec
        n = rec.max_segments
        x, cos, sin = self.core.embed_tokens(input_ids)
        z = self._initial_state(x)
        valid = targets != IGNORE_INDEX
        active = valid.clone()
        min_segments = torch.ones(targets.shape, dtype=torch.long, device=x.device)
        if rec.use_act and self.training and rec.halt_exploration_prob > 0 and n > 1:
            explore = torch.rand(targets.shape, device=x.device) < rec.halt_exploration_prob
            min_segments = torch.where(explore, torch.randint_like(min_segments, 2, n + 1), min_segments)
        exit_loss = torch.zeros(targets.shape, device=x.device)
        exit_segment = torch.full(targets.shape, n, device=x.device)
        lm_sum = halt_sum = aux = x.new_zeros((), dtype=torch.float32)
        counted = x.new_zeros((), dtype=torch.float32)
        segments_run = 0
        for s in range(n):
            z, seg_aux = self._segment(z, x, cos, sin)
            aux, segments_run = aux + seg_aux, segments_run + 1
            h = self.core.norm(z[1])
            token_loss, prediction = token_losses(h, self.core.embed.weight, targets, self.core.loss_chunk_tokens,
                                                  predict=rec.use_act)
            weight = active.float()
            lm_sum = lm_sum + (token_loss * weight).sum()
            counted = counted + weight.sum()
            halt = active.clone() if s == n - 1 else torch.zeros_like(active)
            if rec.use_act:
                q = self.halt_head(h).squeeze(-1).float()
                correct = (prediction == targets).float()
                halt_sum = halt_sum + (F.binary_cross_entropy_with_logits(q, correct, reduction="none") * weight).sum()
                halt = halt | (active & (q.detach() > 0) & (min_segments <= s + 1))
            exit_loss = torch.where(halt, token_loss.detach(), exit_loss)
            exit_segment = torch.where(halt, s + 1, exit_segment)
            active = active & ~halt
            z = (z[0].detach(), z[1].detach())
            if s < n - 1 and not active.any():  # a host sync: only where it can save a segment
                break
        balance = aux / (segments_run * self.passes_per_segment)
        halt_loss = halt_sum / counted.clamp(min=1)
        loss = lm_sum / counted.clamp(min=1) + self.cfg.balance_loss_weight * balance + rec.halt_loss_weight * halt_loss
        metrics = {"balance_loss": balance, "segments": masked_mean(exit_segment.float(), valid)}
        if rec.use_act:
            metrics["halt_loss"] = halt_loss
        return StepLoss(
            loss=loss,
            lm_loss=masked_mean(exit_loss, valid),
            flops=step_flops(self.cfg, targets.numel(), rec, segments_run),
            metrics=metrics,
        )
