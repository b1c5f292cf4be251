"""Modular-arithmetic tasks and the seeded train/test split (REFERENCE §1).

Inputs are the token sequences ``[a, b, =]`` with ``a, b in [0, p)`` and ``=`` the token ``p``;
the label is ``a ∘ b mod p``. Pairs are enumerated row-major: pair index ``i = a * p + b``.
This module is the single definition of the dataset and the split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from interp.errors import InterpError

TASKS = ("add", "sub", "mul", "div")
# Multiplication and division need a field (non-zero elements form a group); addition and
# subtraction are well defined for any modulus, but the Fourier analysis assumes a prime.
PRIME_REQUIRED = {"add": False, "sub": False, "mul": True, "div": True}


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def validate_task(task: str, p: int) -> None:
    """Raise InterpError when ``task`` is unknown or ``p`` unusable for it."""
    if task not in TASKS:
        raise InterpError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if not isinstance(p, int) or p < 2:
        raise InterpError(f"p must be an integer >= 2, got {p!r}")
    if PRIME_REQUIRED[task] and not is_prime(p):
        raise InterpError(f"task {task!r} needs a prime modulus p, got p={p} (not prime)")


def all_pairs(p: int) -> Int[Tensor, "pairs 3"]:
    """All p^2 input sequences [a, b, =] in row-major order (pair i = a*p + b)."""
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    eq = torch.full_like(a, p)
    return torch.stack([a, b, eq], dim=1)


def labels(task: str, p: int) -> Int[Tensor, "pairs"]:
    """The answer ``a ∘ b mod p`` for every pair, row-major.

    Division is ``a * b^{-1} mod p``; ``b = 0`` has no inverse, and by convention we label
    it ``0`` so every pair has a target (these p pairs are tiny next to p^2; analyses that
    need the group structure drop them).
    """
    validate_task(task, p)
    a = torch.arange(p).repeat_interleave(p)
    b = torch.arange(p).repeat(p)
    if task == "add":
        return (a + b) % p
    if task == "sub":
        return (a - b) % p
    if task == "mul":
        return (a * b) % p
    inv = torch.tensor([pow(int(x), p - 2, p) if x else 0 for x in range(p)])
    return (a * inv[b]) % p


@dataclass(frozen=True)
class Split:
    """Indices into the row-major pair list; disjoint, sorted, covering all p^2 pairs."""

    train: Int[Tensor, "n_train"]
    test: Int[Tensor, "n_test"]


def make_split(p: int, frac_train: float, seed: int) -> Split:
    """Seeded random split: ``floor(frac_train * p^2)`` training pairs (REFERENCE §1: 30%, 3830)."""
    if not (0.0 < frac_train < 1.0):
        raise InterpError(f"frac_train must lie strictly between 0 and 1, got {frac_train}")
    n = p * p
    n_train = int(frac_train * n)  # floor, as the paper code does: 30% of 12769 -> 3830
    if n_train < 1 or n_train >= n:
        raise InterpError(f"frac_train={frac_train} leaves an empty train or test set for p={p}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    return Split(train=perm[:n_train].sort().values, test=perm[n_train:].sort().values)
