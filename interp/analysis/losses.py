"""Cross-entropy and accuracy: the one definition the trainer and every analysis use (REFERENCE §1).

The loss is a log-softmax in float64: late in training losses reach 1e-7, below float32's
resolution next to 1, so a float32 log-softmax would round them to 0. Accuracy counts an input as
correct when its target is the (first) largest logit, ``argmax``.

``loss_and_accuracy`` is exactly the trainer's computation (differentiable; returns tensors), so
what ``metrics.csv`` holds and what an analysis computes from a checkpoint agree to the rounding
of the logits themselves.
"""

from __future__ import annotations

from typing import Optional, Sequence

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
    loss, acc = run_loss_and_accuracy(logits[None], target[None])
    return loss[0], acc[0]


def run_loss_and_accuracy(
    logits: Float[Tensor, "run batch c"], target: Int[Tensor, "run batch"], lengths: Optional[Sequence[int]] = None
) -> tuple[Float[Tensor, "run"], Float[Tensor, "run"]]:
    """Per run of an ensemble: mean cross-entropy and accuracy over its first ``lengths[r]`` rows.

    Padded batches are averaged over each run's own rows (one reduction per distinct length), so a
    padded run's loss is bit-identical to its unpadded one (the trainer relies on it).
    """
    nll = cross_entropy(logits, target)
    right = correct(logits, target).double()
    if lengths is None:
        return nll.mean(1), right.mean(1)
    loss, acc = nll.new_empty(nll.shape[0]), right.new_empty(nll.shape[0])
    for n in set(lengths):
        idx = torch.tensor([r for r, m in enumerate(lengths) if m == n], device=nll.device)
        loss[idx] = nll[idx, :n].mean(1)
        acc[idx] = right[idx, :n].mean(1)
    return loss, acc
