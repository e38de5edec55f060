"""Model components: attention + RoPE, MoE, the transformer LM, and FLOP accounting."""

from reasonlab.config import ModelConfig
from reasonlab.model.flops import flops_per_token, param_counts
from reasonlab.model.transformer import ModelOutput, MoETransformerLM

__all__ = ["ModelOutput", "MoETransformerLM", "build_model", "flops_per_token", "param_counts"]


def build_model(cfg: ModelConfig) -> MoETransformerLM:
    return MoETransformerLM(cfg)
