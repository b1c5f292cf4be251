"""Phases of learning (Liu et al. 2022, "Towards understanding grokking: an effective theory"; REFERENCE §6).

The rule, defined once here and used for transformer sweeps and the effective-theory toy model
alike: with budget B steps and gap threshold tau, t_train and t_test are the first steps with train
and test accuracy >= ``threshold`` (0.9 in the paper; never reached = B).

- comprehension: both reached and t_test - t_train < tau;
- grokking: both reached and t_test - t_train >= tau (the paper writes "> tau"; a gap of exactly
  tau is put with grokking so that every pair of times has one phase);
- memorisation: train reached, test not;
- confusion: train not reached (whether or not test was: a run that "generalises" without fitting
  its training set has learnt nothing the rule can name).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

PHASES = ("comprehension", "grokking", "memorisation", "confusion")
PHASE_THRESHOLD = 0.9  # REFERENCE §6: accuracy that counts as "reached"
PHASE_TAU = 1000  # REFERENCE §6: the authors' gap threshold, in steps


@dataclass(frozen=True)
class PhaseRule:
    """The parameters of the phase rule, stored with every classification."""

    budget: int
    tau: int = PHASE_TAU
    threshold: float = PHASE_THRESHOLD

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"phase rule: budget must be >= 1, got {self.budget}")
        if self.tau < 0:
            raise ValueError(f"phase rule: tau must be >= 0, got {self.tau}")
        if not (0.0 < self.threshold <= 1.0):
            raise ValueError(f"phase rule: threshold must lie in (0, 1], got {self.threshold}")

    def to_dict(self) -> dict:
        return asdict(self)


def first_step_reaching(steps, accuracy, threshold: float) -> Optional[int]:
    """First step whose accuracy is >= ``threshold`` (NaN rows skipped), or None."""
    steps = np.asarray(steps)
    acc = np.asarray(accuracy, dtype=float)
    hit = np.flatnonzero(np.nan_to_num(acc, nan=-np.inf) >= threshold)
    return int(steps[hit[0]]) if hit.size else None


def classify_phase(t_train: Optional[int], t_test: Optional[int], rule: PhaseRule) -> str:
    """The phase of one run from its first-reach times (None or >= budget: not reached)."""
    train_ok = t_train is not None and t_train < rule.budget
    test_ok = t_test is not None and t_test < rule.budget
    if not train_ok:
        return "confusion"
    if not test_ok:
        return "memorisation"
    return "comprehension" if t_test - t_train < rule.tau else "grokking"
