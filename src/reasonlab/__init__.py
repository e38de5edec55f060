"""reasonlab: does recursive reasoning beat a plain MoE transformer LM, and where?"""

from reasonlab.api import LoadedModel, load, resume, train
from reasonlab.config import Config, resolve_config
from reasonlab.runtime import keep_freed_memory

__version__ = "0.1.0"
__all__ = ["Config", "LoadedModel", "keep_freed_memory", "load", "resolve_config", "resume", "train"]
