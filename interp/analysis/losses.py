"""Cross-entropy and accuracy: the one definition the trainer and every analysis use (REFERENCE §1).

REFERENCE §1 asks for a float64 log-softmax because late in training losses reach 1e-7, below
float32's resolution next to 1. What matters is that small losses keep their relative precision,
and the logits themselves are float32, so the loss is computed around each row's maximum m
(index i, the argmax): with e_j = exp(l_j - m) for j != i (float32, as precise as the logits
they come from),

    CE = (m - l_y) + log1p(sum_{j != i} e_j)     (the gap and the log1p in float64),

which is the float64 log-softmax's value to the rounding of the logits, keeps a 1e-9 loss to
~1e-7 of itself, and costs one pass over float32 logits instead of a float64 copy (2-4x faster
on the trainer's shapes; it is most of an epoch's elementwise work). The gradient
softmax - onehot is formed the same way: at the argmax, when it is the target,
-sum_{j != i} e_j / (1 + sum), never 1/(1 + sum) - 1, which would cancel to 0 in float32.
Accuracy counts an input as correct when its target is the (first) largest logit, ``argmax``.

``loss_and_accuracy`` is exactly the trainer's computation (differentiable; returns tensors), so
what ``metrics.csv`` holds and what an analysis computes from a checkpoint agree to the rounding
of the logits themselves.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.numerics import warm_up_vector_math


class _CrossEntropy(torch.autograd.Function):
    """Per-row cross-entropy (float64) and argmax of ``[..., c]`` logits, around the row maximum (module docstring)."""

    @staticmethod
    def forward(ctx, logits, target):
        warm_up_vector_math()  # once per process, before the first parallel exp (interp.numerics)
        m, top = logits.max(-1)  # top: the first largest logit, as argmax
        e = (logits - m.unsqueeze(-1)).exp_()
        e.scatter_(-1, top.unsqueeze(-1), 0.0)  # the maximum's own term, 1, enters through log1p exactly
        rest = e.sum(-1, dtype=torch.float64)
        gap = (m - logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)).double()
        ctx.save_for_backward(e, rest, top, target)
        ctx.mark_non_differentiable(top)
        return gap + rest.log1p(), top

    @staticmethod
    def backward(ctx, g, _):
        e, rest, top, target = ctx.saved_tensors
        scale = g / (1 + rest)  # d CE / d l_j = e_j / (1 + rest) for j != top, minus 1 at the target
        hit = top == target
        grad = e * scale.to(e.dtype).unsqueeze(-1)
        at_top = torch.where(hit, -rest * scale, scale)  # hit: 1/(1 + rest) - 1 without cancellation
        grad.scatter_(-1, top.unsqueeze(-1), at_top.to(e.dtype).unsqueeze(-1))
        miss = torch.where(hit, torch.zeros_like(g), -g)
        grad.scatter_add_(-1, target.unsqueeze(-1), miss.to(e.dtype).unsqueeze(-1))
        return grad, None


def cross_entropy(logits: Float[Tensor, "N c"], target: Int[Tensor, "N"]) -> Float[Tensor, "N"]:
    """Per-input cross-entropy as float64 (differentiable; computed as in the module docstring)."""
    return _CrossEntropy.apply(logits, target)[0]


def correct(logits: Float[Tensor, "N c"], target: Int[Tensor, "N"]) -> torch.BoolTensor:
    """Whether each input's target is the argmax of its logits."""
    return logits.argmax(-1) == target


def loss_and_accuracy(logits: Float[Tensor, "N c"], target: Int[Tensor, "N"]) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and accuracy, as 0-d float64 tensors (the loss keeps its graph)."""
    loss, acc = run_loss_and_accuracy(logits[None], target[None])
    return loss[0], acc[0]


def run_loss_and_accuracy(
    logits: Float[Tensor, "run batch c"], target: Int[Tensor, "run batch"], lengths: Optional[Sequence[int]] = None
) -> tuple[Float[Tensor, "run"], Float[Tensor, "run"]]:
    """Per run of an ensemble: mean cross-entropy and accuracy over its first ``lengths[r]`` rows.

    Padded batches are averaged over each run's own rows (one reduction per distinct length), so a
    padded run's loss is bit-identical to its unpadded one (the trainer relies on it).
    """
    nll, top = _CrossEntropy.apply(logits, target)
    right = (top == target).double()  # ``correct``: top is the first largest logit
    if lengths is None:
        return nll.mean(1), right.mean(1)
    loss, acc = nll.new_empty(nll.shape[0]), right.new_empty(nll.shape[0])
    for n in set(lengths):
        idx = torch.tensor([r for r, m in enumerate(lengths) if m == n], device=nll.device)
        loss[idx] = nll[idx, :n].mean(1)
        acc[idx] = right[idx, :n].mean(1)
    return loss, acc
