"""model.arch mor: Mixture-of-Recursions (Bae et al. 2025) over the shared block stack.

The stack is applied up to `recursions` (N) times with the input re-injected, as the looped arm
does (s <- f(s + x), s from a learned vector), but a router decides which tokens each pass
computes; the others keep their state and cost nothing more. Only the chosen tokens run: they
are gathered into a [B, K, d] batch (K the most chosen in a row, shorter rows padded and masked),
pass the blocks at their own positions, and are scattered back.

Routers (`mor.router`):
- expert: after pass r a router scores the tokens that ran it, and pass r+1 keeps the best
  `capacity` share of the row's tokens (top-k; a share falling linearly from all tokens at the
  first pass to `capacity_last` at the last, the paper's schedule at capacity_last = 1/N), chosen
  among those of pass r. Top-k over a sequence sees later tokens, so only training uses it: a
  BCE (`router_loss_weight`) teaches each score the top-k choice, and evaluation and generation
  keep a token while its score is > 0, which sees nothing after it (the paper's auxiliary loss).
  A bidirectional model (the grid format) sees the whole row anyway and keeps top-k throughout.
- token: one router on the token's embedding picks its depth 1..N up front (softmax, argmax),
  causal by construction, with a Switch-style load-balancing cost (`router_loss_weight`).

A chosen token's update passes its router weight g straight through: s <- f(s + x) + (g -
sg(g)) * (f(s + x) - s), the value of a plain pass and the gradient of g * update (the paper
scales the update by g itself). So the router learns from the loss, and with every token chosen
at every pass (capacity_last 1) the arm is the looped arm exactly.

Attention at pass r (`mor.kv`): cache, the chosen tokens attend to the keys and values of the
tokens chosen at pass r (the paper's recursion-wise KV caching; a decoding cache keeps those
alone); share, they attend to the first pass's keys and values of every token (recursion-wise
KV sharing: a later pass computes queries only, and keeps no cache of its own).

In training, dropout and the experts' routing noise are drawn over the tokens a pass gathers, so a
token's draws (not its inputs) vary with how many tokens the other rows and the later positions
sent on; an evaluation or a generation draws nothing and is causal at every pass.

FLOPs count the passes each token ran (`Passes.count`). As for every arm, a pass's attention is
counted at the full context, its router unit of d weights at every pass (the last runs none),
and a shared-KV pass at its full projections though it computes queries only: each is an
overcount, under 1% of a pass at the presets' sizes, so a saving reported is never inflated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from reasonlab.config import ModelConfig, MoRConfig, RecursionConfig
from reasonlab.model.layers import KVCache, apply_rope
from reasonlab.model.outputs import ModelOutput, State
from reasonlab.model.recursion import Passes, RecursiveLM, Segment
from reasonlab.model.transformer import Block


@dataclass
class Chosen:
    """The tokens one pass computes, gathered: the rows that have any (`rows`, None = every row),
    and in each their positions in the forward [B', K] (its chosen tokens in order, then padding)
    and which entries are real [B', K]. Rows without a chosen token are left out whole: decoding a
    batch, a row whose new token stopped costs the pass nothing."""

    rows: torch.Tensor | None
    index: torch.Tensor
    valid: torch.Tensor
    batch: int  # B, the forward's rows

    @classmethod
    def of(cls, active_BT: torch.Tensor) -> Chosen:
        counts_B = active_BT.sum(dim=1)
        batch, rows = active_BT.shape[0], None
        if not bool(counts_B.all()):  # a host sync, as the max below is
            rows = counts_B.nonzero().squeeze(1)
            active_BT, counts_B = active_BT[rows], counts_B[rows]
        K = int(counts_B.max())
        index = torch.sort((~active_BT).to(torch.uint8), dim=1, stable=True).indices[:, :K]
        return cls(rows, index, torch.arange(K, device=active_BT.device) < counts_B[:, None], batch)

    def of_rows(self, t: torch.Tensor) -> torch.Tensor:
        """t's rows that have chosen tokens."""
        return t if self.rows is None else t[self.rows]

    def gather(self, t_BTD: torch.Tensor) -> torch.Tensor:
        t_BTD = self.of_rows(t_BTD)
        return t_BTD.gather(1, self.index.unsqueeze(-1).expand(-1, -1, t_BTD.shape[-1]))

    def real(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each chosen token's row and position in the forward, [N] each (padding left out)."""
        rows = torch.arange(self.batch, device=self.index.device) if self.rows is None else self.rows
        return rows.unsqueeze(1).expand_as(self.index)[self.valid], self.index[self.valid]

    def scatter(self, t_BTD: torch.Tensor, new_BKD: torch.Tensor) -> torch.Tensor:
        """t with the chosen tokens' rows replaced by new's (padding left out)."""
        return t_BTD.index_put(self.real(), new_BKD[self.valid])


@dataclass
class Keys:
    """One attention call's keys and values [B, H, capacity, D] kept for decoding, and which
    positions hold a token's [B, capacity] (recursion-wise caching keeps the chosen ones only)."""

    keys: torch.Tensor
    values: torch.Tensor
    present: torch.Tensor


class MoR(RecursiveLM):
    penalty_name = "router_loss"

    def __init__(self, model: ModelConfig, recursion: RecursionConfig, mor: MoRConfig, seed: int = 0):
        super().__init__(model, recursion, mor, seed)
        self.mor = mor
        self.penalty_weight = mor.router_loss_weight
        n, d = mor.recursions, model.d_model
        self.s_init = self._init_state_vector()
        self.router = nn.Linear(d, n if mor.router == "token" else max(1, n - 1))
        nn.init.normal_(self.router.weight, std=0.02)
        nn.init.zeros_(self.router.bias)
        self._kept: dict[tuple[int, int, int], Keys] = {}  # (segment, pass, layer) -> keys, while decoding
        self._kept_for: KVCache | None = None
        self._segments_run = 0

    @classmethod
    def passes(cls, mor: MoRConfig) -> tuple[float, float]:
        """Expert-choice: the capacity schedule's shares; token-choice: every token at full depth
        (as ACT's plan, a step can only spend less)."""
        return (sum(mor.capacities()) if mor.router == "expert" else float(mor.recursions)), 0.0

    @classmethod
    def pass_params(cls, model: ModelConfig, mor: MoRConfig) -> int:
        return model.d_model if mor.router == "expert" else 0  # the router unit scoring a pass's tokens

    @classmethod
    def segment_params(cls, model: ModelConfig, mor: MoRConfig) -> int:
        return model.d_model * mor.recursions if mor.router == "token" else 0  # the depth router

    @classmethod
    def own_params(cls, model: ModelConfig, mor: MoRConfig) -> int:
        d, n = model.d_model, mor.recursions
        routers = n if mor.router == "token" else max(1, n - 1)
        return super().own_params(model, mor) + d + routers * (d + 1)  # init state, routers

    @property
    def trained_depth(self) -> int:
        return self.mor.recursions

    @property
    def max_depth(self) -> int:
        return self.mor.recursions  # each pass has its router

    def initial_state(self, x_BTD: torch.Tensor) -> State:
        return (self.s_init.to(x_BTD.dtype).expand_as(x_BTD),)

    def readout(self, z: State) -> torch.Tensor:
        return self.core.norm(z[0])

    def run(self, input_ids: torch.Tensor, segments: int | None = None, depth: int | None = None) -> ModelOutput:
        self._segments_run = 0
        cache = self.core.kv_cache
        if cache is not self._kept_for:  # a new decoding (or none): its keys start empty
            self._kept, self._kept_for = {}, cache
        return super().run(input_ids, segments, depth)

    def segment(self, z: State, x_BTD: torch.Tensor, f: Passes, depth: int | None) -> Segment:
        """Up to `depth` passes (mor.recursions by default, at most that: each pass has its router)."""
        n = self.mor.recursions if depth is None else depth
        if not 1 <= n <= self.mor.recursions:
            raise ValueError(f"mor runs 1 to {self.mor.recursions} passes (its routers'), got depth {n}")
        segment, self._segments_run = self._segments_run, self._segments_run + 1
        s_BTD = z[0]
        B, T, _ = x_BTD.shape
        active_BT = torch.ones(B, T, dtype=torch.bool, device=x_BTD.device)
        penalty_BT = x_BTD.new_zeros(B, T, dtype=torch.float32)
        gate_BT = None  # g - sg(g) of the router weight each chosen token's update carries
        if self.mor.router == "token":
            p_BTN = self.router(x_BTD).float().softmax(dim=-1)
            depth_BT = p_BTN.argmax(dim=-1) + 1
            g_BT = p_BTN.gather(-1, (depth_BT - 1).unsqueeze(-1)).squeeze(-1)
            gate_BT = g_BT - g_BT.detach()
            share_N = F.one_hot(depth_BT - 1, self.mor.recursions).float().mean(dim=(0, 1))
            penalty_BT = self.mor.recursions * (p_BTN * share_N).sum(dim=-1)  # Switch's balance, per token
        shared: list[tuple[torch.Tensor, torch.Tensor]] = []  # the first pass's keys and values by layer (kv share)
        for r in range(n):
            if self.mor.router == "token":
                active_BT = depth_BT > r
            if r and not active_BT.any():  # a host sync: only where every token has stopped
                break
            chosen = Chosen.of(active_BT)
            before_BKD = chosen.gather(s_BTD)
            after_BKD = self._pass(f, chosen.gather(s_BTD + x_BTD), chosen, (segment, r), shared)
            if gate_BT is not None:
                gate_BK1 = chosen.gather(gate_BT.unsqueeze(-1)).to(after_BKD.dtype)
                after_BKD = after_BKD + gate_BK1 * (after_BKD - before_BKD)
            s_BTD = chosen.scatter(s_BTD, after_BKD)
            if self.mor.router == "expert" and r < n - 1:
                logit_BT = torch.full((B, T), float("-inf"), device=x_BTD.device)
                logit_BT = chosen.scatter(logit_BT.unsqueeze(-1), self._score(after_BKD, r)).squeeze(-1)
                active_BT = self._choose(logit_BT, active_BT, r + 1)
                scored = logit_BT.isfinite()  # the tokens of pass r, which its router scored
                scored_BT = torch.where(scored, logit_BT, 0.0)
                bce_BT = F.binary_cross_entropy_with_logits(scored_BT, active_BT.float(), reduction="none")
                penalty_BT = penalty_BT + torch.where(scored, bce_BT, 0.0)
                g_BT = torch.sigmoid(scored_BT)
                gate_BT = g_BT - g_BT.detach()
        return Segment((s_BTD,), penalty_BT)

    def _score(self, h_BKD: torch.Tensor, r: int) -> torch.Tensor:
        """Router r's logits [B, K, 1] on the tokens that ran pass r: whether each goes on."""
        return F.linear(h_BKD, self.router.weight[r: r + 1], self.router.bias[r: r + 1]).float()

    def _choose(self, logit_BT: torch.Tensor, active_BT: torch.Tensor, r: int) -> torch.Tensor:
        """The tokens of pass r (0-based): the row's top capacity share of those of pass r - 1; but
        in a causal model at inference, those of pass r - 1 whose score is > 0. (A bidirectional
        model sees the whole row anyway, so it keeps the top-k it was trained with.)"""
        capacity = self.mor.capacities()[r]
        if capacity >= 1.0:  # every token goes on: the looped arm, at inference too
            return active_BT
        if not self.training and self.cfg.causal:
            return active_BT & (logit_BT > 0)
        k = max(1, round(capacity * logit_BT.shape[1]))
        top_BK = logit_BT.topk(k, dim=1).indices
        return torch.zeros_like(active_BT).scatter(1, top_BK, True) & active_BT

    def _pass(self, f: Passes, h_BKD: torch.Tensor, chosen: Chosen, call: tuple[int, int],
              shared: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """One pass of the chosen tokens through every block, counted in f."""
        cache = self.core.kv_cache
        start = cache.length if cache is not None else 0
        positions_BK = chosen.index + start
        cos = self.core.rope_cos[positions_BK].unsqueeze(1)
        sin = self.core.rope_sin[positions_BK].unsqueeze(1)
        recompute = self.core.activation_checkpointing and self.training and torch.is_grad_enabled()
        balance = h_BKD.new_zeros((), dtype=torch.float32)
        for layer, block in enumerate(self.core.blocks):
            kv = shared[layer] if self.mor.kv == "share" and call[1] else None
            run = partial(self._block, block, positions_BK=positions_BK, chosen=chosen, start=start,
                          key=(*call, layer), kv=kv)
            h_BKD, aux, keys = checkpoint(run, h_BKD, cos, sin, use_reentrant=False) if recompute \
                else run(h_BKD, cos, sin)
            if self.mor.kv == "share" and not call[1]:
                shared.append(keys)
            balance = balance + aux
        f.count(int(chosen.valid.sum()), balance / len(self.core.blocks))
        return h_BKD

    def _block(self, block: Block, h_BKD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *,
               positions_BK: torch.Tensor, chosen: Chosen, start: int, key: tuple[int, int, int],
               kv: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """`Block.forward` for the chosen tokens: attention as `_attention`, the experts on the chosen
        tokens alone (no padding). Also returns the keys and values the attention read."""
        attended, keys = self._attention(block, block.attn_norm(h_BKD), cos, sin, positions_BK, chosen, start, key,
                                         kv)
        h_BKD = block.dropout.residual(h_BKD, attended)
        moe_ND, aux = block.moe(block.moe_norm(h_BKD)[chosen.valid])  # bf16 from the few-token path under autocast
        moe_BKD = torch.zeros_like(h_BKD).masked_scatter(chosen.valid.unsqueeze(-1), moe_ND.to(h_BKD.dtype))
        h_BKD = block.dropout.residual(h_BKD, moe_BKD)
        return h_BKD, aux, keys

    def _attention(self, block: Block, h_BKD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                   positions_BK: torch.Tensor, chosen: Chosen, start: int, key: tuple[int, int, int],
                   kv: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, tuple]:
        """The chosen tokens' attention: over the keys of this pass's chosen tokens (and, decoding,
        those kept from earlier positions), or given the first pass's keys and values `kv` (kv
        share), over those of every position up to theirs. Returns it and the keys it read."""
        attn = block.attn
        B, K, C = h_BKD.shape
        H = attn.n_heads
        if kv is not None:
            q = F.linear(h_BKD, attn.qkv.weight[:C]).view(B, K, H, C // H).transpose(1, 2)
            q = apply_rope(q, cos, sin)
            k, v = chosen.of_rows(kv[0]), chosen.of_rows(kv[1])
            mask = self._causal(torch.arange(k.shape[2], device=q.device).expand(B, -1), positions_BK)
        else:
            q, k, v = attn.qkv(h_BKD).view(B, K, 3, H, C // H).permute(2, 0, 3, 1, 4)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            # a padded query sees itself, so that no row of the mask is empty
            mask = (self._causal(positions_BK, positions_BK) & chosen.valid.unsqueeze(1)) \
                | torch.eye(K, dtype=torch.bool, device=q.device)
            k, v, mask = self._with_kept(key, k, v, mask, positions_BK, chosen, start)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1),
                                           dropout_p=attn.dropout if self.training else 0.0)
        return attn.proj(y.transpose(1, 2).reshape(B, K, C)), (k, v)

    def _causal(self, keys_BJ: torch.Tensor, queries_BK: torch.Tensor) -> torch.Tensor:
        """Which keys each query may see [B, K, J], by position: those not after it, or every one
        in a bidirectional model."""
        if not self.cfg.causal:
            return torch.ones(queries_BK.shape[0], queries_BK.shape[1], keys_BJ.shape[1], dtype=torch.bool,
                              device=keys_BJ.device)
        return keys_BJ.unsqueeze(1) <= queries_BK.unsqueeze(2)

    def _with_kept(self, key: tuple[int, int, int], k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                   positions_BK: torch.Tensor, chosen: Chosen,
                   start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decoding: the keys kept from earlier positions before this call's, and this call's kept.
        Under kv share the first pass's are kept whole, by position, for the later passes to read."""
        cache = self.core.kv_cache
        if cache is None:
            return k, v, mask
        B, H, K, D = k.shape  # B: the rows with chosen tokens
        kept = self._kept.get(key)
        if kept is None:
            full = (chosen.batch, H, cache.capacity, D)
            kept = self._kept[key] = Keys(k.new_zeros(full), v.new_zeros(full),
                                          torch.zeros(full[0], full[2], dtype=torch.bool, device=k.device))
        rows, where = chosen.real()
        where = where + start
        kept.keys[rows, :, where] = k.transpose(1, 2)[chosen.valid]
        kept.values[rows, :, where] = v.transpose(1, 2)[chosen.valid]
        kept.present[rows, where] = True
        keys, values, present = (chosen.of_rows(t) for t in (kept.keys, kept.values, kept.present))
        if self.mor.kv == "share":  # every position of the first pass, in order
            end = start + K
            return keys[:, :, :end], values[:, :, :end], \
                self._causal(torch.arange(end, device=k.device).expand(B, -1), positions_BK)
        past = present[:, :start].unsqueeze(1).expand(B, K, start)
        return (torch.cat([keys[:, :, :start], k], dim=2), torch.cat([values[:, :, :start], v], dim=2),
                torch.cat([past, mask], dim=2))
