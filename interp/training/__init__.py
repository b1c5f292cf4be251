"""Training: the trainer (R >= 1 runs), optimisers and sweeps."""

from interp.training.loop import train

__all__ = ["train"]
