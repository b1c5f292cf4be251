"""interp: train one-layer transformers on modular arithmetic and dissect how they grok.

Top-level names are imported lazily so that the CLI's argument checks answer without first
importing TransformerLens.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ModelConfig": "interp.config",
    "TrainConfig": "interp.config",
    "preset": "interp.config",
    "InterpError": "interp.errors",
    "Transformer": "interp.model",
    "all_logits": "interp.model",
    "last_position_logits": "interp.model",
    "train": "interp.training",
    "Run": "interp.store",
}

__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    if name == "analyze":
        return import_module("interp.analysis").analyze
    raise AttributeError(f"module 'interp' has no attribute {name!r}")
