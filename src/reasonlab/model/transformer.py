"""The baseline: a decoder-only MoE transformer LM (pre-norm RMSNorm, RoPE, top-k MoE, tied head)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from reasonlab.config import ModelConfig
from reasonlab.model.dropout import Dropout
from reasonlab.model.flops import step_flops
from reasonlab.model.layers import KVCache, SelfAttention, rope_tables
from reasonlab.model.loss import IGNORE_INDEX, head_logits, masked_mean, token_losses
from reasonlab.model.moe import MoE
from reasonlab.model.outputs import ModelOutput, StepLoss


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model)
        self.attn = SelfAttention(cfg.d_model, cfg.n_heads, cfg.dropout, cfg.causal)
        self.moe_norm = nn.RMSNorm(cfg.d_model)
        self.moe = MoE(cfg.d_model, cfg.d_ff, cfg.n_experts, cfg.top_k, cfg.dropout, cfg.router_noise_std)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.dropout.residual(x, self.attn(self.attn_norm(x), cos, sin, cache))
        moe_out, aux = self.moe(self.moe_norm(x))
        return self.dropout.residual(x, moe_out), aux


class MoETransformerLM(nn.Module):
    """Token embedding (scaled by sqrt(d_model)) -> blocks -> RMSNorm -> tied LM head.

    As an arm (model.arch baseline) it is its own `core`, has no passes to skip (`every_pass`
    changes nothing) and no test-time compute to force; as the stack of a recursive arm, the
    arm calls its parts (`embed_tokens`, `stack`, `head`).
    """

    every_pass = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.dropout = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model)
        cos, sin = rope_tables(cfg.seq_len, cfg.d_model // cfg.n_heads, grid=cfg.positions == "2d")
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.activation_checkpointing = False
        self.loss_chunk_tokens = 0
        self.kv_cache: KVCache | None = None  # set while decoding with a cache (model/generate.py)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 style: N(0, 0.02), residual output projections scaled by 1/sqrt(2 * n_layers)."""
        std = 0.02
        resid_std = std / math.sqrt(2 * self.cfg.n_layers)
        nn.init.normal_(self.embed.weight, std=std)
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=std)
            nn.init.normal_(block.attn.proj.weight, std=resid_std)
            nn.init.normal_(block.moe.router.weight, std=std)
            block.moe.experts.reset_parameters(std, resid_std)

    def configure_memory(self, activation_checkpointing: bool, loss_chunk_tokens: int) -> None:
        """Trade compute for memory: recompute block activations and head logits in backward."""
        self.activation_checkpointing = activation_checkpointing
        self.loss_chunk_tokens = loss_chunk_tokens

    def embed_tokens(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scaled token embeddings [B, T, d] and the rotary tables of their positions: 0..T-1, or
        after the cached ones while decoding with a cache."""
        start = self.kv_cache.length if self.kv_cache is not None else 0
        end = start + input_ids.shape[1]
        if end > self.cfg.seq_len:
            raise ValueError(f"sequence of {end} tokens exceeds the model's context of {self.cfg.seq_len}")
        x = self.dropout(self.embed(input_ids) * math.sqrt(self.cfg.d_model))
        return x, self.rope_cos[start:end], self.rope_sin[start:end]

    def stack(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass through every block: the residual stream and the blocks' mean balance loss."""
        aux = x.new_zeros((), dtype=torch.float32)
        for block in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x, block_aux = checkpoint(block, x, cos, sin, use_reentrant=False)  # recomputed in backward
            else:
                x, block_aux = block(x, cos, sin, self.kv_cache)
            aux = aux + block_aux
        return x, aux / len(self.blocks)

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Tied LM head on already normalised states."""
        return head_logits(h, self.embed.weight)

    @property
    def core(self) -> MoETransformerLM:
        return self

    def run(self, input_ids: torch.Tensor, segments: int | None = None, depth: int | None = None) -> ModelOutput:
        if segments is not None or depth is not None:
            raise ValueError("the baseline runs its stack once: it has no segments or depth to force")
        x, cos, sin = self.embed_tokens(input_ids)
        x, aux = self.stack(x, cos, sin)
        return ModelOutput(self.head(self.norm(x)), aux)

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                carry: None = None) -> torch.Tensor | StepLoss:
        """Logits [B, T, vocab]; with targets, the training step's losses (what DDP wraps). Nothing
        is carried across steps (`carry` is always None)."""
        if targets is not None:
            return self.compute_loss(input_ids, targets)
        return self.run(input_ids).logits

    def compute_loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> StepLoss:
        x, cos, sin = self.embed_tokens(input_ids)
        x, balance = self.stack(x, cos, sin)
        losses = token_losses(self.norm(x), self.embed.weight, targets, self.loss_chunk_tokens, predict=False)[0]
        supervised = targets != IGNORE_INDEX
        lm_loss = masked_mean(losses, supervised)
        count = supervised.sum()
        return StepLoss(
            loss=lm_loss + self.cfg.balance_loss_weight * balance,
            lm_loss=lm_loss,
            flops=step_flops(self.cfg, targets.numel()),
            metrics={"balance_loss": balance},
            loss_count=count,
            lm_count=count,
        )
