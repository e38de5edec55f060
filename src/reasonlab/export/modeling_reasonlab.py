"""A reasonlab model for Hugging Face transformers (`trust_remote_code=True`), for inference.

`reasonlab export CHECKPOINT --hf DIR` copies this file beside the weights. It imports torch and
transformers only, and computes what reasonlab's own modules compute at inference (reasonlab
model/*.py): the baseline MoE transformer (pre-norm RMSNorm blocks, rotary attention, top-k
routed experts, tied head) and the recursive arms over its block stack: hrm (H/L cycles), trm
(latent and answer recursions), looped (the stack applied `depth` times, optionally with
per-token ACT), mor (Mixture-of-Recursions: routers choosing the tokens of each pass), each run
for up to `max_segments` segments with per-token halting. It is written plainly: the experts run
in a loop over experts rather than as grouped matmuls, mor computes every token and masks, and
there is no KV cache (each forward runs the whole text, at most the model's context). `segments`
and `depth` passed to `forward` set a recursive model's test-time compute.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput


class ReasonlabConfig(PretrainedConfig):
    """`reasonlab`: the run's resolved config, by section (model, recursion, hrm, trm, looped, mor, ...)."""

    model_type = "reasonlab"

    def __init__(self, reasonlab: dict | None = None, **kwargs):
        self.reasonlab = reasonlab or {}
        model = self.reasonlab.get("model", {})
        kwargs.setdefault("vocab_size", model.get("vocab_size"))
        kwargs.setdefault("max_position_embeddings", model.get("seq_len"))
        kwargs.setdefault("hidden_size", model.get("d_model"))
        kwargs.setdefault("num_hidden_layers", model.get("n_layers"))
        kwargs.setdefault("num_attention_heads", model.get("n_heads"))
        kwargs.setdefault("tie_word_embeddings", False)  # the head multiplies by the embedding itself
        super().__init__(**kwargs)


def rope_angles(positions: torch.Tensor, pairs: int, base: float = 10000.0) -> torch.Tensor:
    inv_freq = 1.0 / base ** (torch.arange(pairs, dtype=torch.float32) / pairs)
    return torch.outer(positions.float(), inv_freq)


def rope_tables(seq_len: int, head_dim: int, grid: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """1D positions, or with `grid` the row and column of a square grid's cells (half the pairs each)."""
    t = torch.arange(seq_len)
    if grid:
        side = math.isqrt(seq_len)
        angles = torch.cat([rope_angles(t // side, head_dim // 4), rope_angles(t % side, head_dim // 4)], dim=-1)
    else:
        angles = rope_angles(t, head_dim // 2)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, causal: bool):
        super().__init__()
        self.n_heads, self.causal = n_heads, causal
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None = None,
                kv: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        """Attention, and the keys and values it read; `mask` [B, 1, T, T] replaces the causal one,
        `kv` replaces the keys and values (mor)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = (k, v) if kv is None else kv
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal and mask is None)
        return self.proj(y.transpose(1, 2).reshape(B, T, C)), (k, v)


class Experts(nn.Module):
    """E MLPs, Linear(d, d_ff) -> SiLU -> Linear(d_ff, d), as stacked weights."""

    def __init__(self, n_experts: int, d: int, d_ff: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.zeros(n_experts, d, d_ff))
        self.b1 = nn.Parameter(torch.zeros(n_experts, d_ff))
        self.w2 = nn.Parameter(torch.zeros(n_experts, d_ff, d))
        self.b2 = nn.Parameter(torch.zeros(n_experts, d))

    def forward(self, x_TD: torch.Tensor, idx_TK: torch.Tensor, weight_TK: torch.Tensor) -> torch.Tensor:
        out_TKD = x_TD.new_zeros(*idx_TK.shape, x_TD.shape[1])
        for e in range(self.w1.shape[0]):
            rows, ks = torch.nonzero(idx_TK == e, as_tuple=True)
            if rows.numel():
                h = F.silu(x_TD[rows] @ self.w1[e] + self.b1[e])
                out_TKD[rows, ks] = (h @ self.w2[e] + self.b2[e]) * weight_TK[rows, ks, None].to(x_TD.dtype)
        return out_TKD.sum(dim=1)


class MoE(nn.Module):
    def __init__(self, d: int, d_ff: int, n_experts: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.router = nn.Linear(d, n_experts, bias=False)
        self.experts = Experts(n_experts, d, d_ff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_TD = x.reshape(-1, x.shape[-1])
        probs_TE = self.router(x_TD).float().softmax(dim=-1)
        top_p, top_idx = probs_TE.topk(self.top_k, dim=-1)
        return self.experts(x_TD, top_idx, top_p / top_p.sum(dim=-1, keepdim=True)).view(x.shape)


class Block(nn.Module):
    def __init__(self, m: dict):
        super().__init__()
        d = m["d_model"]
        self.attn_norm = nn.RMSNorm(d)
        self.attn = Attention(d, m["n_heads"], m["causal"])
        self.moe_norm = nn.RMSNorm(d)
        self.moe = MoE(d, m["d_ff"], m["n_experts"], m["top_k"])

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None = None,
                kv: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        attended, kv = self.attn(self.attn_norm(x), cos, sin, mask, kv)
        x = x + attended
        return x + self.moe(self.moe_norm(x)), kv


class Stack(nn.Module):
    """The baseline: scaled token embedding -> blocks -> RMSNorm -> tied head."""

    def __init__(self, m: dict):
        super().__init__()
        self.m = m
        self.embed = nn.Embedding(m["vocab_size"], m["d_model"])
        self.blocks = nn.ModuleList(Block(m) for _ in range(m["n_layers"]))
        self.norm = nn.RMSNorm(m["d_model"])

    def embed_tokens(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scaled embeddings and the rotary tables of their positions (computed here: transformers
        builds a model on the meta device and loads only saved tensors)."""
        T = ids.shape[1]
        if T > self.m["seq_len"]:
            raise ValueError(f"{T} tokens exceed the model's context of {self.m['seq_len']}")
        cos, sin = rope_tables(self.m["seq_len"], self.m["d_model"] // self.m["n_heads"],
                               self.m.get("positions", "1d") == "2d")
        return self.embed(ids) * math.sqrt(self.m["d_model"]), cos[:T].to(ids.device), sin[:T].to(ids.device)

    def stack(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return self.stack_keys(x, cos, sin)[0]

    def stack_keys(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None = None,
                   kvs: list | None = None) -> tuple[torch.Tensor, list]:
        """One pass, under `mask` and given each block's keys and values `kvs` where set; also
        returns the keys and values each block read."""
        read = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cos, sin, mask, None if kvs is None else kvs[i])
            read.append(kv)
        return x, read

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.embed.weight.t()

    def run(self, ids: torch.Tensor, segments: int | None = None, depth: int | None = None) -> torch.Tensor:
        x, cos, sin = self.embed_tokens(ids)
        return self.head(self.norm(self.stack(x, cos, sin)))


class Recursive(nn.Module):
    """The recursion core: up to max_segments segments of an arm's refinement; a token exits at the
    first segment whose halting logit is > 0 (with use_act) or at the last, and predicts from it."""

    def __init__(self, c: dict):
        super().__init__()
        self.c, self.rec = c, c["recursion"]
        self.core = Stack(c["model"])
        self.halt_head = nn.Linear(c["model"]["d_model"], 1)

    def run(self, ids: torch.Tensor, segments: int | None = None, depth: int | None = None) -> torch.Tensor:
        n = self.rec["max_segments"] if segments is None else segments
        use_act = self.rec["use_act"] and self.rec.get("halt_at_eval", True) and segments is None
        x, cos, sin = self.core.embed_tokens(ids)
        z = self.initial_state(x)
        live = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        exit_BT = torch.full(ids.shape, n, device=ids.device)
        states = []
        for s in range(n):
            z = self.segment(z, x, cos, sin, depth)
            h = self.readout(z)
            exits = live & (s == n - 1)
            if use_act:
                exits = exits | (live & (self.halt_head(h).squeeze(-1).float() > 0))
            exit_BT = torch.where(exits, s + 1, exit_BT)
            live = live & ~exits
            states.append(h)
            if use_act and s < n - 1 and not live.any():
                break
        h = states[-1]
        for s in range(len(states) - 2, -1, -1):
            h = torch.where((exit_BT == s + 1).unsqueeze(-1), states[s], h)
        return self.core.head(h)

    def init_vector(self) -> nn.Parameter:
        return nn.Parameter(torch.zeros(self.c["model"]["d_model"]))


class HRM(Recursive):
    def __init__(self, c: dict):
        super().__init__(c)
        d = c["model"]["d_model"]
        self.p_hl = nn.Linear(d, d, bias=False)
        self.p_lh = nn.Linear(d, d, bias=False)
        self.norm_l, self.norm_h = nn.RMSNorm(d), nn.RMSNorm(d)
        self.z_l_init, self.z_h_init = self.init_vector(), self.init_vector()

    def initial_state(self, x):
        return self.z_l_init.to(x.dtype).expand_as(x), self.z_h_init.to(x.dtype).expand_as(x)

    def readout(self, z):
        return self.core.norm(z[1])

    def segment(self, z, x, cos, sin, depth):
        z_l, z_h = z
        for _ in range(self.c["hrm"]["H_cycles"] if depth is None else depth):
            for _ in range(self.c["hrm"]["L_cycles"]):
                z_l = z_l + self.core.stack(self.norm_l(z_l + self.p_hl(z_h) + x), cos, sin)
            z_h = z_h + self.core.stack(self.norm_h(z_h + self.p_lh(z_l)), cos, sin)
        return z_l, z_h


class TRM(Recursive):
    def __init__(self, c: dict):
        super().__init__(c)
        d = c["model"]["d_model"]
        self.norm_z, self.norm_y = nn.RMSNorm(d), nn.RMSNorm(d)
        self.register_buffer("z_init", torch.zeros(d))
        self.register_buffer("y_init", torch.zeros(d))

    def initial_state(self, x):
        return self.z_init.to(x.dtype).expand_as(x), self.y_init.to(x.dtype).expand_as(x)

    def readout(self, z):
        return self.core.norm(z[1])

    def segment(self, z, x, cos, sin, depth):
        latent, answer = z
        for _ in range(self.c["trm"]["recursions"] if depth is None else depth):
            for _ in range(self.c["trm"]["latent_steps"]):
                latent = self.core.stack(self.norm_z(x + answer + latent), cos, sin)
            answer = self.core.stack(self.norm_y(answer + latent), cos, sin)
        return latent, answer


class Looped(Recursive):
    def __init__(self, c: dict):
        super().__init__(c)
        d, lp = c["model"]["d_model"], c["looped"]
        self.lp = lp
        self.s_init = self.init_vector()
        self.register_buffer("depth_draws", torch.zeros((), dtype=torch.long))
        self.act_head = nn.Linear(d, 1) if lp["act"] else None

    def initial_state(self, x):
        return (self.s_init.to(x.dtype).expand_as(x),)

    def readout(self, z):
        return self.core.norm(z[-1])

    def segment(self, z, x, cos, sin, depth):
        lp = self.lp
        if depth is None:
            depth = round(lp["mean_depth"]) if lp["mean_depth"] else lp["depth"]
        s = z[0]
        if self.act_head is None:
            for _ in range(depth):
                s = self.core.stack(s + x, cos, sin)
            return (s,)
        running = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        summed = x.new_zeros(x.shape[:2], dtype=torch.float32)
        out = torch.zeros_like(s)
        for i in range(depth):
            s_next = self.core.stack(s + x, cos, sin)
            p = torch.sigmoid(self.act_head(s_next).squeeze(-1).float())
            halts = running & ((summed + p >= lp["act_threshold"]) | (i == depth - 1))
            weight = torch.where(halts, 1 - summed, torch.where(running, p, 0.0))
            out = out + weight.unsqueeze(-1).to(s.dtype) * s_next
            summed = summed + torch.where(running & ~halts, p, 0.0)
            s = torch.where(running.unsqueeze(-1), s_next, s)
            running = running & ~halts
            if i < depth - 1 and not running.any():
                break
        return s, out


class MoR(Recursive):
    """Mixture-of-Recursions, computed densely: every token runs each pass, but a pass's attention
    sees only the tokens it chose (or, with kv share, the first pass's keys of every token) and only
    the chosen tokens keep its result, which is what reasonlab's gathered passes compute for them.
    Expert-choice: a token goes on while its router's score is > 0 (a bidirectional model: the
    row's top share, as trained); token-choice: to the depth its router picks."""

    def __init__(self, c: dict):
        super().__init__(c)
        d, mor = c["model"]["d_model"], c["mor"]
        self.mor = mor
        self.s_init = self.init_vector()
        n = mor["recursions"]
        self.router = nn.Linear(d, n if mor["router"] == "token" else max(1, n - 1))

    def initial_state(self, x):
        return (self.s_init.to(x.dtype).expand_as(x),)

    def readout(self, z):
        return self.core.norm(z[0])

    def segment(self, z, x, cos, sin, depth):
        mor, (B, T) = self.mor, x.shape[:2]
        n = mor["recursions"] if depth is None else depth
        if not 1 <= n <= mor["recursions"]:
            raise ValueError(f"mor runs 1 to {mor['recursions']} passes (its routers'), got depth {n}")
        s = z[0]
        active = torch.ones(B, T, dtype=torch.bool, device=x.device)
        if mor["router"] == "token":
            chosen_depth = self.router(x).argmax(dim=-1) + 1
        seen = torch.ones(T, T, dtype=torch.bool, device=x.device)
        if self.c["model"]["causal"]:
            seen = seen.tril()
        first = None
        for r in range(n):
            if mor["router"] == "token":
                active = chosen_depth > r
            if r and not active.any():
                break
            share = mor["kv"] == "share" and r > 0
            mask = seen if share else (seen & active[:, None, :]) | torch.eye(T, dtype=torch.bool, device=x.device)
            new, read = self.core.stack_keys(s + x, cos, sin, mask.expand(B, T, T).unsqueeze(1),
                                             first if share else None)
            first = read if r == 0 else first
            s = torch.where(active.unsqueeze(-1), new, s)
            kept = 1.0 - (1.0 - mor["capacity_last"]) * (r + 1) / max(1, mor["recursions"] - 1)
            if mor["router"] == "expert" and r < n - 1 and kept < 1.0:
                score = F.linear(s, self.router.weight[r: r + 1], self.router.bias[r: r + 1]).squeeze(-1).float()
                if self.c["model"]["causal"]:
                    active = active & (score > 0)
                else:  # the row's top share of the tokens, as trained
                    top = score.masked_fill(~active, float("-inf")).topk(max(1, round(kept * T)), dim=1).indices
                    active = torch.zeros_like(active).scatter(1, top, True) & active
        return (s,)


ARMS = {"hrm": HRM, "trm": TRM, "looped": Looped, "mor": MoR}


class ReasonlabForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = ReasonlabConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"

    def __init__(self, config: ReasonlabConfig):
        super().__init__(config)
        c = config.reasonlab
        arch = c["model"]["arch"]
        if arch != "baseline" and arch not in ARMS:
            raise ValueError(f"this model file knows the arms baseline, {', '.join(ARMS)}; the checkpoint's is "
                             f"{arch!r}: export it with a reasonlab that has it")
        self.model = Stack(c["model"]) if arch == "baseline" else ARMS[arch](c)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Every weight comes from the checkpoint."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, segments: int | None = None, depth: int | None = None,
                **kwargs) -> CausalLMOutput:
        """Logits of every position; `attention_mask` is accepted for right padding only (a causal
        model's real tokens never see the padding after them)."""
        logits = self.model.run(input_ids, segments, depth)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.Tensor, **kwargs) -> dict:
        """The whole text each step (no KV cache), cut to the last context's worth of tokens."""
        return {"input_ids": input_ids[:, -self.config.max_position_embeddings:]}
