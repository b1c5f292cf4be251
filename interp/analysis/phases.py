"""When a run memorises, forms its circuit, cleans up and groks (REFERENCE §1, §5, §6).

``find_phases(table, metrics)`` takes the analysis table (one row per checkpoint, from
``interp.analysis``) and optionally the trainer's per-epoch metrics, and returns ``Phases``:
T_mem, T_grok and the three phases of Nanda et al. (2023) as epoch intervals, together with the
rule that produced them (``PHASE_RULE``), so a reader can check every number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

# REFERENCE §5: T_mem / T_grok = first logged step with train / test accuracy >= 0.99.
ACC_THRESHOLD = 0.99
# Circuit formation ends (cleanup starts) when the restricted loss has covered this fraction of its
# fall, in log scale, from its value at the end of memorisation to its final value ...
CLEANUP_START_FRACTION = 0.5
# ... and cleanup ends when the test loss has covered this fraction of its fall, in log scale,
# from its peak to its final value.
CLEANUP_END_FRACTION = 0.95

PHASE_RULE = (
    f"T_mem / T_grok: first epoch with train / test accuracy >= {ACC_THRESHOLD} (per-epoch metrics when "
    "available, else checkpoints). Memorisation: first checkpoint to the peak of the test loss at or after "
    "T_mem (and before T_grok). Circuit formation: from there until the restricted loss has fallen "
    f"{CLEANUP_START_FRACTION:.0%} of the way, in log scale, from its value at that peak to its final value. "
    f"Cleanup: from there until the test loss has fallen {CLEANUP_END_FRACTION:.0%} of the way, in log scale, "
    "from its peak to its final value. A phase is None when the run never gets there."
)


@dataclass
class Phases:
    """T_mem, T_grok and the phase intervals [start, end] in epochs (None where not reached)."""

    t_mem: Optional[int]
    t_grok: Optional[int]
    memorisation: Optional[tuple[int, int]]
    circuit_formation: Optional[tuple[int, int]]
    cleanup: Optional[tuple[int, int]]
    rule: str = PHASE_RULE
    notes: list[str] = field(default_factory=list)
    accuracy_history: bool = True  # False: accuracies were never recorded (imported paper files)

    @property
    def boundaries(self) -> dict[str, Optional[int]]:
        """End of memorisation, start of cleanup, end of cleanup."""
        return {
            "memorisation_end": self.memorisation[1] if self.memorisation else None,
            "cleanup_start": self.cleanup[0] if self.cleanup else None,
            "cleanup_end": self.cleanup[1] if self.cleanup else None,
        }

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("memorisation", "circuit_formation", "cleanup"):
            d[k] = list(d[k]) if d[k] is not None else None
        d["boundaries"] = self.boundaries
        if not self.accuracy_history:
            from interp.store import NO_ACCURACY_HISTORY

            d["t_mem"] = d["t_grok"] = NO_ACCURACY_HISTORY
        return d

    def describe(self, which: str) -> str:
        """``t_mem`` / ``t_grok`` for people: the epoch, "not reached", or unknown without accuracy history."""
        if not self.accuracy_history:
            from interp.store import NO_ACCURACY_HISTORY

            return NO_ACCURACY_HISTORY
        e = getattr(self, which)
        return "not reached" if e is None else str(e)


def first_epoch_reaching(epochs, values, threshold: float = ACC_THRESHOLD) -> Optional[int]:
    """First epoch (or step: whatever ``epochs`` counts) whose value is >= threshold, or None (NaN never reaches)."""
    e = np.asarray(epochs)
    v = np.asarray(values, dtype=float)
    hit = np.nonzero(v >= threshold)[0]
    return int(e[hit[0]]) if len(hit) else None


def _log(x) -> np.ndarray:
    return np.log(np.maximum(np.asarray(x, dtype=float), 1e-300))


def _fraction_crossing(epochs: np.ndarray, logv: np.ndarray, start: int, frac: float) -> Optional[int]:
    """First epoch after index ``start`` where log v has fallen ``frac`` of the way from v[start]
    to the final value; None if v does not fall."""
    hi, lo = logv[start], logv[-1]
    if not hi > lo:
        return None
    target = hi - frac * (hi - lo)
    hit = np.nonzero(logv[start:] <= target)[0]
    return int(epochs[start + hit[0]]) if len(hit) else None


def find_phases(table: pd.DataFrame, metrics: Optional[pd.DataFrame] = None, accuracy_history: bool = True) -> Phases:
    """T_mem, T_grok and phase boundaries of a run (see ``PHASE_RULE``).

    ``accuracy_history=False`` (a run whose accuracies were never recorded, e.g. an imported paper
    file with only its last checkpoint): T_mem, T_grok and the phases are unknown, not "not reached".

    ``table``: the analysis table (epoch, train_acc, test_acc, test_loss, restricted_loss, ...).
    ``metrics``: the trainer's per-epoch table; when given (and finite), T_mem / T_grok and the test
    loss peak use its finer resolution.
    """
    notes: list[str] = []
    if not accuracy_history:
        notes.append("no accuracy history (accuracies were never recorded): T_mem, T_grok and the phases are unknown")
        return Phases(None, None, None, None, None, notes=notes, accuracy_history=False)
    t = table.sort_values("epoch").reset_index(drop=True)
    epochs = t["epoch"].to_numpy()
    fine = t
    if (
        metrics is not None
        and len(metrics)
        and metrics["train_acc"].notna().all()
        and metrics["test_acc"].notna().any()
    ):
        # runs with eval_every > 1 leave the test columns empty between evaluations: NaN never
        # reaches a threshold, so T_grok is the first *evaluated* epoch, and the test-loss peak
        # is taken over evaluated epochs only
        fine = metrics.sort_values("epoch").reset_index(drop=True)
    t_mem = first_epoch_reaching(fine["epoch"], fine["train_acc"])
    t_grok = first_epoch_reaching(fine["epoch"], fine["test_acc"])
    first = int(epochs[0])
    if t_mem is None:
        notes.append("train accuracy never reached 0.99: the whole run is memorisation (or confusion)")
        return Phases(t_mem, t_grok, (first, int(epochs[-1])), None, None, notes=notes)

    # End of memorisation: test-loss peak in [T_mem, T_grok].
    fe = fine["epoch"].to_numpy()
    tl = fine["test_loss"].to_numpy(dtype=float)
    window = (fe >= t_mem) & (fe <= (t_grok if t_grok is not None else fe[-1])) & ~np.isnan(tl)
    if not window.any():  # no evaluation between T_mem and T_grok: the first evaluated epoch after T_mem
        window = (fe >= t_mem) & ~np.isnan(tl)
    idx = np.nonzero(window)[0]
    mem_end = int(fe[idx[np.nanargmax(tl[idx])]])
    memorisation = (first, mem_end)
    if t_grok is None:
        notes.append("test accuracy never reached 0.99: no grokking, so no cleanup")

    # Cleanup start: restricted loss half-way (log scale) from its value at mem_end to its final value.
    ci = int(np.searchsorted(epochs, mem_end))
    ci = min(ci, len(epochs) - 1)
    cleanup_start = _fraction_crossing(epochs, _log(t["restricted_loss"]), ci, CLEANUP_START_FRACTION)
    # Cleanup end: test loss 95% of the way (log scale) from its peak to its final value.
    evaluated = ~np.isnan(tl)
    fe_ev, tl_ev = fe[evaluated], tl[evaluated]
    pi = int(np.searchsorted(fe_ev, mem_end))
    cleanup_end = _fraction_crossing(fe_ev, _log(tl_ev), pi, CLEANUP_END_FRACTION)
    if cleanup_start is None or t_grok is None:
        return Phases(t_mem, t_grok, memorisation, (mem_end, int(epochs[-1])), None, notes=notes)
    if cleanup_end is None or cleanup_end < cleanup_start:
        cleanup_end = max(cleanup_start, t_grok)
        notes.append("test loss did not fall clearly after the restricted loss did; cleanup ends at T_grok")
    return Phases(t_mem, t_grok, memorisation, (mem_end, cleanup_start), (cleanup_start, cleanup_end), notes=notes)
