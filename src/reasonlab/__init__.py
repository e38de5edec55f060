"""reasonlab: does recursive reasoning beat a plain MoE transformer LM, and where?

The names below load on first use, so a process that needs only part of the package (a task
generator's worker) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reasonlab.api import LoadedModel, load, resume, train
    from reasonlab.config import Config, resolve_config
    from reasonlab.runtime import keep_freed_memory

__version__ = "0.1.0"
__all__ = ["Config", "LoadedModel", "keep_freed_memory", "load", "resolve_config", "resume", "train"]
_HOMES = {"Config": "config", "resolve_config": "config", "keep_freed_memory": "runtime",
          "LoadedModel": "api", "load": "api", "resume": "api", "train": "api"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'reasonlab' has no attribute {name!r}")
    return getattr(importlib.import_module(f"reasonlab.{_HOMES[name]}"), name)
