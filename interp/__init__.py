"""interp: train one-layer transformers on modular arithmetic and dissect how they grok."""

from .config import ModelConfig, TrainConfig, preset
from .errors import InterpError
from .model import Transformer, all_logits, last_position_logits

__all__ = ["ModelConfig", "TrainConfig", "preset", "InterpError", "Transformer", "all_logits", "last_position_logits"]
__version__ = "0.1.0"
