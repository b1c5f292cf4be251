"""The model: the hooked reference transformer and the one fast path at the '=' position."""

from interp.model.fast import all_logits, last_position_logits
from interp.model.transformer import Transformer

__all__ = ["Transformer", "all_logits", "last_position_logits"]
