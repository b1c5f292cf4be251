"""Cross-entropy and accuracy: the one definition the trainer and every analysis use (REFERENCE §1).

The loss is a log-softmax in float64: late in training losses reach 1e-7, below float32's
resolution next to 1, so a float32 log-softmax would round them to 0. Accuracy counts an input as
correct when its target is the (first) largest logit, ``argmax``.

``loss_and_accuracy`` is exactly the trainer's computation (differentiable; returns tensors), so
what ``metrics.csv`` holds and what an analysis computes from a checkpoint agree to the rounding
of the logits themselves.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def cross_entropy(logits: Float[Tensor, "N c"], target: Int[Tensor, "N"]) -> Float[Tensor, "N"]:
    """Per-input cross-entropy, float64 log-softmax (differentiable)."""
    return -logits.double().log_softmax(-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)


def correct(logits: Float[Tensor, "N c"], target: Int[Tensor, "N"]) -> torch.BoolTensor:
    """Whether each input's target is the argmax of its logits."""
    return logits.argmax(-1) == target


def loss_and_accuracy(logits: Float[Tensor, "N c"], target: Int[Tensor, "N"]) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy (float64 log-softmax) and accuracy, as 0-d float64 tensors (the loss keeps its graph)."""
    logp = logits.double().log_softmax(-1)
    loss = -logp.gather(-1, target[:, None]).mean()
    return loss, correct(logits, target).double().mean()
