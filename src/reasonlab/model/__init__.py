"""Model components: attention + RoPE, MoE, the transformer LM, the recursive arms, FLOP accounting."""

from reasonlab.model.arms import (
    RECURSIVE_ARMS,
    build_model,
    config_step_flops,
    control_config,
    inference_layers,
    param_counts,
)
from reasonlab.model.flops import flops_per_token
from reasonlab.model.hrm import HRM
from reasonlab.model.looped import Looped
from reasonlab.model.outputs import ModelOutput, StepLoss
from reasonlab.model.recursion import RecursiveLM
from reasonlab.model.transformer import MoETransformerLM
from reasonlab.model.trm import TRM

__all__ = ["HRM", "RECURSIVE_ARMS", "TRM", "Looped", "ModelOutput", "MoETransformerLM", "RecursiveLM", "StepLoss",
           "build_model", "config_step_flops", "control_config", "flops_per_token", "inference_layers",
           "param_counts"]
