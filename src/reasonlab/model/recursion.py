"""The recursion core every recursive arm shares: segments of deep supervision and one exit rule.

An arm (registry.py lists them) is a subclass that says how its state starts
(`initial_state`), how one segment refines it (`segment`, through the stack passes `Passes`
counts) and what the LM head reads (`readout`), and declares the passes a step plans
(`passes`). The rest is shared: the segment loop, per-token halting and inference here, the
deep-supervision objectives and the carry in model/supervision.py, the FLOPs in model/arms.py.

Up to `max_segments` segments refine the same sequence, each starting from the previous one's
detached state and each trained on next-token cross-entropy (deep supervision). The state
belongs to one sequence: nothing is carried across rows, batches or calls.

Halting (use_act) is per token and causal: a halting head reads the readout at position t,
which has seen tokens <= t only, and is trained with binary cross-entropy against "this
segment's prediction at t is correct" (as TRM does per puzzle). A token exits at the first
segment whose halting logit is > 0 (or at its last segment); its prediction is that segment's
logits, in training, evaluation and generation alike: `recur` runs the segments and applies
this rule for every caller. After a token exits, later segments still update its state (other tokens
attend to it) but its losses no longer count. In training, with probability
halt_exploration_prob a token must run a random 2..max_segments segments before it may exit.
With use_act false, every token runs max_segments segments and predicts from the last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reasonlab.config import ModelConfig, RecursionConfig
from reasonlab.model.flops import recursion_step_flops
from reasonlab.model.outputs import ModelOutput, State, StepLoss
from reasonlab.model.supervision import Carry, carried_loss, deep_supervision_loss, exits
from reasonlab.model.transformer import MoETransformerLM


class Passes:
    """The shared stack as an arm calls it within one forward: it counts the passes run with and
    without gradient (a pass over part of the tokens counts as that share of one) and sums their
    MoE balance losses, so the FLOPs reported are those that ran and no arm keeps the count."""

    def __init__(self, core: MoETransformerLM, cos: torch.Tensor, sin: torch.Tensor, tokens: int):
        self.core, self.cos, self.sin, self.tokens = core, cos, sin, tokens
        self.grad = self.free = 0.0
        self.balance = torch.zeros((), device=cos.device)

    def __call__(self, x_BTD: torch.Tensor, cos: torch.Tensor | None = None,
                 sin: torch.Tensor | None = None) -> torch.Tensor:
        """One pass of x through every block; `cos`/`sin` only where x holds other positions than
        the forward's (a subset of its tokens)."""
        out, aux = self.core.stack(x_BTD, self.cos if cos is None else cos, self.sin if sin is None else sin)
        self.count(x_BTD.shape[0] * x_BTD.shape[1], aux)
        return out

    def count(self, tokens: int, balance: torch.Tensor) -> None:
        """Count a pass of `tokens` of the forward's tokens, with or without gradient as the
        grad mode is, and its blocks' mean balance loss: for an arm that runs the blocks itself."""
        share = tokens / self.tokens
        if torch.is_grad_enabled():
            self.grad += share
        else:
            self.free += share
        self.balance = self.balance + balance * share

    @property
    def total(self) -> float:
        return self.grad + self.free

    def mean_balance(self) -> torch.Tensor:
        """The balance loss averaged over the passes run."""
        return self.balance / max(1.0, self.total)


@dataclass
class Segment:
    """One segment's new state and an arm's own per-token cost ([B, T], e.g. the ponder cost of
    looped ACT), weighted in the loss by the arm's `penalty_weight`."""

    state: State
    penalty_BT: torch.Tensor | None = None


@dataclass
class Recursion:
    """What the segment loop leaves for its reader: per segment run, the readout [B, T, d], the
    halting logits [B, T] (None without ACT) and the arm's per-token cost (or None); each token's
    exit segment (1-based, [B, T]); and the stack passes it ran."""

    states: list[torch.Tensor]
    halt_logits: list[torch.Tensor | None]
    penalties: list[torch.Tensor | None]
    exit_segment: torch.Tensor
    passes: Passes


class RecursiveLM(nn.Module):
    """The shared part of every recursive arm: the baseline's block stack (`core`), a halting head,
    the segment loop and inference. An arm is built from its own config sections: the model's,
    the recursion's, its own (`section`) and the run's seed for any draws it makes itself."""

    penalty_weight = 0.0  # weight of Segment.penalty_BT in the loss
    penalty_name = "ponder"  # the name it is logged under
    every_pass = False  # run every segment and pass, without early stops (cached decoding needs the same calls)

    def __init__(self, model: ModelConfig, recursion: RecursionConfig, section: Any, seed: int = 0):
        super().__init__()
        self.cfg, self.rec, self.section, self.seed = model, recursion, section, seed
        self.core = MoETransformerLM(model)
        self.halt_head = nn.Linear(model.d_model, 1)
        nn.init.zeros_(self.halt_head.weight)
        nn.init.constant_(self.halt_head.bias, -5.0)  # start by never halting, as HRM does

    # What an arm defines ------------------------------------------------------------------------

    def initial_state(self, x_BTD: torch.Tensor) -> State:
        raise NotImplementedError

    def segment(self, z: State, x_BTD: torch.Tensor, f: Passes, depth: int | None) -> Segment:
        """One segment from state z, each stack pass through f; `depth` forces the arm's inner
        recursion count (test time)."""
        raise NotImplementedError

    def readout(self, z: State) -> torch.Tensor:
        """The normalised state [B, T, d] the LM head and the halting head read."""
        raise NotImplementedError

    @property
    def trained_depth(self) -> int:
        """The arm's inner recursion count as trained: what `depth` overrides at test time."""
        raise NotImplementedError

    @property
    def max_depth(self) -> int | None:
        """The most inner passes `depth` can force; None where a shared stack repeats any number of times."""
        return None

    @classmethod
    def passes(cls, section: Any) -> tuple[float, float]:
        """Stack passes per segment in a training step, (with gradient, without); expected values
        where the depth is drawn at random. A test holds every arm's `segment` to it."""
        raise NotImplementedError

    @classmethod
    def pass_params(cls, model: ModelConfig, section: Any) -> int:
        """Matmul weights of the arm's own that each pass multiplies through (see flops.py)."""
        return 0

    @classmethod
    def segment_params(cls, model: ModelConfig, section: Any) -> int:
        """Matmul weights of the arm's own that every token multiplies through once a segment, as
        it does the heads (a router that picks each token's depth up front)."""
        return 0

    @classmethod
    def own_params(cls, model: ModelConfig, section: Any) -> int:
        """Parameters beyond the shared stack and embedding (the halting head included)."""
        return model.d_model + 1

    def train_depth(self) -> int | None:
        """The depth of this training step; None = the arm's configured depth."""
        return None

    # The shared part -----------------------------------------------------------------------------

    def flops_of(self, tokens: int, passes: Passes, segments: int) -> int:
        """Training FLOPs of `tokens` tokens through the passes that ran and `segments` segments."""
        return recursion_step_flops(self.cfg, tokens, passes.grad, passes.free, segments,
                                    self.pass_params(self.cfg, self.section), self.rec.use_act,
                                    self.segment_params(self.cfg, self.section))

    def configure_memory(self, activation_checkpointing: bool, loss_chunk_tokens: int) -> None:
        self.core.configure_memory(activation_checkpointing, loss_chunk_tokens)

    def _init_state_vector(self) -> nn.Parameter:
        """An initial state vector [d], at the scale of the embedded tokens."""
        return nn.Parameter(torch.randn(self.cfg.d_model) * 0.02 * math.sqrt(self.cfg.d_model))

    def passes_over(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> Passes:
        """A fresh count of the stack passes over these embedded tokens."""
        return Passes(self.core, cos, sin, x_BTD.shape[0] * x_BTD.shape[1])

    def halt_logits(self, h_BTD: torch.Tensor) -> torch.Tensor:
        """The halting head's logits [B, T] (fp32) on a readout."""
        return self.halt_head(h_BTD).squeeze(-1).float()

    def recur(self, embedded: tuple[torch.Tensor, torch.Tensor, torch.Tensor], n: int, use_act: bool,
              live: torch.Tensor, min_segments: torch.Tensor | None = None, depth: int | None = None) -> Recursion:
        """The segment loop and exit rule that training and inference share.

        Runs up to `n` segments over the embedded tokens (`core.embed_tokens`), each starting from
        the previous one's detached state. A token in `live` exits at the first segment whose
        halting logit is > 0 once it has run `min_segments` (with `use_act`), else at the last
        segment; the loop stops early once no live token is left.
        """
        x_BTD, cos, sin = embedded
        f = self.passes_over(x_BTD, cos, sin)
        z = self.initial_state(x_BTD)
        exit_segment_BT = torch.full(live.shape, n, device=x_BTD.device)
        states, halt_logits, penalties = [], [], []
        for s in range(n):
            seg = self.segment(z, x_BTD, f, depth)
            h_BTD = self.readout(seg.state)
            q_BT = self.halt_logits(h_BTD) if use_act else None
            exits_BT = exits(live, q_BT, s + 1, s == n - 1, min_segments)
            exit_segment_BT = torch.where(exits_BT, s + 1, exit_segment_BT)
            live = live & ~exits_BT
            states.append(h_BTD)
            halt_logits.append(q_BT)
            penalties.append(seg.penalty_BT)
            z = tuple(t.detach() for t in seg.state)
            if use_act and s < n - 1 and not self.every_pass and not live.any():  # a host sync: only where it saves
                break
        return Recursion(states, halt_logits, penalties, exit_segment_BT, f)

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
        return ModelOutput(self.core.head(h_BTD), r.passes.mean_balance(), r.exit_segment)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                carry: Carry | None = None) -> torch.Tensor | StepLoss:
        """Logits [B, T, vocab]; with targets, the training step's losses (what DDP wraps): one
        carried segment where the state is carried across steps, else every segment."""
        if targets is None:
            return self.run(input_ids).logits
        if self.rec.carry_across_steps and self.training:
            return carried_loss(self, input_ids, targets, carry)
        return deep_supervision_loss(self, input_ids, targets)
