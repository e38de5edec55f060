"""Model components: attention + RoPE, MoE, the transformer LM, the recursive wrapper, FLOP accounting."""

from torch import nn

from reasonlab.config import Config
from reasonlab.model.flops import flops_per_token, param_counts
from reasonlab.model.outputs import ModelOutput, StepLoss
from reasonlab.model.recursive import RecursiveLM
from reasonlab.model.transformer import MoETransformerLM

__all__ = ["ModelOutput", "MoETransformerLM", "RecursiveLM", "StepLoss", "build_model", "flops_per_token",
           "param_counts"]


def build_model(cfg: Config) -> nn.Module:
    """The model `cfg.model.arch` names; both answer run(), forward() and compute_loss()."""
    if cfg.model.arch == "recursive":
        return RecursiveLM(cfg.model, cfg.recursion)
    return MoETransformerLM(cfg.model)
