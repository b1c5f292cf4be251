"""The weight norm over training: trajectories, the contraction after memorisation, escape times, LU curves.

Definitions follow REFERENCE §4-5: V = ||theta||^2 (sum of squares of all parameters; the trainer
logs it every epoch as ``sq_total``); V_mem at T_mem, V_final at the end of the run. After
memorisation weight decay shrinks V towards its generalising value: the contraction fit
V_t = A exp(k (t - T_mem)) + C (A >= 0, k <= 0) gives a per-step rate r = exp(k), to be read beside
the theory rate 1 - 2 eta lambda (decoupled decay shrinks theta by (1 - eta lambda) per step, so V by
(1 - eta lambda)^2 ~ 1 - 2 eta lambda). Omnigrok's LU curves (§4) are the best train and test
loss reached at each fixed relative norm alpha = w / w0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import pandas as pd

ESCAPE_FACTOR = 1.5  # empirical escape: first step >= T_mem with V <= 1.5 V_final (REFERENCE §5)


def norm_trajectory(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per logged epoch: V (sum of squared weights) and the norm ||theta|| = sqrt(V)."""
    v = metrics["sq_total"].to_numpy(dtype=float)
    return pd.DataFrame({"epoch": metrics["epoch"].to_numpy(), "V": v, "norm": np.sqrt(v)})


@dataclass
class ContractionFit:
    """V_t = A exp(k (t - T_mem)) + C fitted from T_mem on; ``rate`` = exp(k) per step."""

    t_mem: int
    A: float
    k: float
    C: float
    rate: float
    theory_rate: Optional[float]
    r2: float
    n_points: int

    def to_dict(self) -> dict:
        return asdict(self)


def theory_rate(lr: float, weight_decay: float) -> float:
    """Per-step contraction of V under weight decay alone: 1 - 2 eta lambda (REFERENCE §5)."""
    return 1.0 - 2.0 * lr * weight_decay


def contraction_fit(
    epochs, V, t_mem: int, lr: Optional[float] = None, weight_decay: Optional[float] = None, end: Optional[int] = None
) -> ContractionFit:
    """Least-squares fit of V_t = A exp(k (t - T_mem)) + C on T_mem <= t <= end (A >= 0, k <= 0).

    ValueError if fewer than 4 points lie in the window (nothing to fit).
    """
    from scipy.optimize import curve_fit

    e = np.asarray(epochs, dtype=float)
    v = np.asarray(V, dtype=float)
    keep = (e >= t_mem) & (e <= (end if end is not None else e[-1])) & np.isfinite(v)
    t, y = e[keep] - t_mem, v[keep]
    if len(t) < 4:
        raise ValueError(f"contraction fit needs at least 4 points from T_mem = {t_mem}, got {len(t)}")

    def model(t, A, k, C):
        return A * np.exp(k * t) + C

    span = max(t[-1], 1.0)
    A0, C0 = max(y[0] - y[-1], 1e-12), max(min(y[-1], y[0]), 0.0)
    k0 = -math.log(max(y[0] - C0, 1e-12) / max(y[len(y) // 2] - C0, 1e-12) + 1e-12) / max(t[len(t) // 2], 1.0)
    k0 = min(-1e-8, k0) if np.isfinite(k0) else -1.0 / span
    try:
        (A, k, C), _ = curve_fit(
            model, t, y, p0=(A0, k0, C0), bounds=([0.0, -np.inf, -np.inf], [np.inf, 0.0, np.inf]), maxfev=20000
        )
    except RuntimeError:  # no convergence: report the straight line through the ends
        A, k, C = A0, -1.0 / span, C0
    pred = model(t, A, k, C)
    ss_res, ss_tot = float(((y - pred) ** 2).sum()), float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    rate_theory = theory_rate(lr, weight_decay) if lr is not None and weight_decay is not None else None
    return ContractionFit(int(t_mem), float(A), float(k), float(C), float(math.exp(k)), rate_theory, r2, int(len(t)))


def escape_epoch(epochs, V, t_mem: int, factor: float = ESCAPE_FACTOR) -> Optional[int]:
    """Empirical escape (REFERENCE §5): first logged epoch >= T_mem with V <= factor * V_final."""
    e = np.asarray(epochs)
    v = np.asarray(V, dtype=float)
    hit = np.nonzero((e >= t_mem) & (v <= factor * v[-1]))[0]
    return int(e[hit[0]]) if len(hit) else None


def theory_escape_time(v_mem: float, v_final: float, lr: float, weight_decay: float) -> float:
    """T_esc = ln(V_mem / V_final) / (2 eta lambda) (REFERENCE §5)."""
    return math.log(v_mem / v_final) / (2.0 * lr * weight_decay)


def lu_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Omnigrok's LU curves (REFERENCE §4): per relative norm alpha, the best train and test loss.

    ``runs``: one row per fixed-norm run with columns ``alpha``, ``best_train_loss``,
    ``best_test_loss`` (the minimum over its training). Runs sharing an alpha (seeds) are averaged.
    Also returns, for each alpha, the train and test accuracy reached when given.
    """
    need = {"alpha", "best_train_loss", "best_test_loss"}
    missing = need - set(runs.columns)
    if missing:
        raise ValueError(f"lu_curves needs columns {sorted(missing)}")
    cols = [c for c in runs.columns if c != "alpha" and pd.api.types.is_numeric_dtype(runs[c])]
    return runs.groupby("alpha", as_index=False)[cols].mean().sort_values("alpha").reset_index(drop=True)


def lu_shape(curve: pd.DataFrame) -> dict:
    """Where the curves bend: the alpha of the best test loss (U: interior?) and whether train loss is L-shaped
    (falls, then stays within a factor 10 of its minimum over the larger alphas)."""
    a = curve["alpha"].to_numpy(dtype=float)
    tr = curve["best_train_loss"].to_numpy(dtype=float)
    te = curve["best_test_loss"].to_numpy(dtype=float)
    i = int(np.nanargmin(te))
    j = int(np.nanargmin(tr))
    flat = bool(np.all(tr[j:] <= 10 * tr[j] + 1e-12)) if j < len(tr) else False
    return {
        "alpha_best_test": float(a[i]),
        "test_minimum_interior": 0 < i < len(a) - 1,
        "train_falls": bool(tr[0] > tr[j]),
        "train_flat_after_minimum": flat,
        "alpha_best_train": float(a[j]),
    }
