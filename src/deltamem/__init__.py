"""δ-mem: a tiny online memory that steers a frozen LLM's attention (arXiv 2605.12357)."""

from .attach import DeltaMemModel, attach_memory
from .config import ConfigError, DeltaMemConfig, preset
from .layer import StateBatchError
from .scan import delta_scan
from .state import MemoryState
from .write_strategy import MissingSegmentsError

__all__ = [
    "DeltaMemModel",
    "attach_memory",
    "DeltaMemConfig",
    "ConfigError",
    "preset",
    "MissingSegmentsError",
    "StateBatchError",
    "delta_scan",
    "MemoryState",
]
__version__ = "0.1.0"
