"""The norm-separation delay law fitted to a sweep (Truong et al. 2026; REFERENCE §5).

T_grok - T_mem = Theta(ln(V_mem / V_final) / (eta lambda)). From a sweep's index (one row per run:
lr, weight_decay, T_mem, T_grok, V_mem, V_final) ``delay_law`` fits

- T_grok against 1 / lambda over the grokking runs at the sweep's most common learning rate (the
  paper: T_grok = 1182 / lambda + 884, R^2 0.971), and against 1 / eta at its most common weight
  decay (R^2 0.92), each with a bootstrap 95% interval of slope and intercept;
- the delay T_grok - T_mem against x = ln(V_mem / V_final) / (eta lambda) (Pearson r 0.91 in the
  text), with the slope;
- the empirical escape time (first step >= T_mem with V <= 1.5 V_final) beside the theory's
  ln(V_mem / V_final) / (2 eta lambda), when the runs' metrics are given.

Runs that never grok (or never memorise) are counted and listed, never silently dropped; a fit over
fewer than 3 runs, or over an axis the sweep did not vary, is reported as absent with the reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import pandas as pd

from interp.errors import InterpError
from interp.theory.weight_norm import escape_epoch, theory_escape_time

MIN_POINTS = 3
N_BOOTSTRAP = 2000


@dataclass
class LinearFit:
    """y = slope x + intercept by least squares, with R^2, Pearson r and bootstrap 95% intervals."""

    slope: float
    intercept: float
    r2: float
    pearson_r: float
    n: int
    slope_ci: tuple[float, float]
    intercept_ci: tuple[float, float]

    def to_dict(self) -> dict:
        return asdict(self)


def linear_fit(x, y, n_boot: int = N_BOOTSTRAP, seed: int = 0) -> LinearFit:
    """Least squares (scipy.stats.linregress) and a pairs bootstrap of slope and intercept."""
    from scipy.stats import linregress

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    res = linregress(x, y)
    rng = np.random.default_rng(seed)
    slopes, intercepts = [], []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) == 0:
            continue
        b = linregress(x[i], y[i])
        slopes.append(b.slope)
        intercepts.append(b.intercept)
    ci = lambda v: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) if v else (math.nan, math.nan)  # noqa: E731
    return LinearFit(
        float(res.slope),
        float(res.intercept),
        float(res.rvalue**2),
        float(res.rvalue),
        len(x),
        ci(slopes),
        ci(intercepts),
    )


@dataclass
class DelayLaw:
    """Fits of one sweep; ``absent`` says why a fit is missing."""

    n_runs: int
    n_grokked: int
    not_grokked: list[str]
    not_memorised: list[str]
    inv_lambda: Optional[LinearFit] = None
    inv_lambda_lr: Optional[float] = None
    inv_eta: Optional[LinearFit] = None
    inv_eta_weight_decay: Optional[float] = None
    delay_vs_theory: Optional[LinearFit] = None
    escape: Optional[pd.DataFrame] = None
    absent: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "escape"}
        if self.escape is not None:
            d["escape"] = self.escape.to_dict(orient="records")
        return d


REQUIRED = ("run", "lr", "weight_decay", "T_mem", "T_grok", "V_mem", "V_final")


def delay_law(
    index: pd.DataFrame, metrics_of: Optional[Callable[[str], pd.DataFrame]] = None, source: str = "sweep"
) -> DelayLaw:
    """Fit the delay law on a sweep index (see the module docstring).

    ``metrics_of(run)``: the run's per-epoch metrics, for the empirical escape times (optional).
    InterpError when there is nothing to fit: no run grokked, or grokking runs without V.
    """
    missing = [c for c in REQUIRED if c not in index.columns]
    if missing:
        raise InterpError(f"{source}: the index lacks column(s) {', '.join(missing)}")
    df = index.copy()
    memorised = df["T_mem"].notna()
    grokked = memorised & df["T_grok"].notna()
    law = DelayLaw(
        len(df), int(grokked.sum()), df.loc[memorised & ~grokked, "run"].tolist(), df.loc[~memorised, "run"].tolist()
    )
    if not grokked.any():
        raise InterpError(
            f"{source}: no run grokked ({len(df)} runs, {int(memorised.sum())} memorised): "
            "nothing to fit; train longer or sweep larger weight decay"
        )
    g = df[grokked]
    no_v = g.loc[g["V_mem"].isna() | g["V_final"].isna(), "run"].tolist()
    if no_v:
        raise InterpError(
            f"{source}: {len(no_v)} grokking run(s) have no V_mem / V_final (e.g. {no_v[0]}); "
            "they need their metrics (sq_total) to be fitted"
        )

    def fit_axis(name: str, axis: str, other: str):
        vary = g[axis].nunique()
        if vary < 2:
            law.absent[name] = f"{axis} was not varied among grokking runs"
            return None, None
        at = g[other].mode().iloc[0]
        sub = g[np.isclose(g[other], at)]
        if sub[axis].nunique() < 2 or len(sub) < MIN_POINTS:
            law.absent[name] = f"fewer than {MIN_POINTS} grokking runs with two {axis} values at {other} = {at}"
            return None, at
        return linear_fit(1.0 / sub[axis].to_numpy(float), sub["T_grok"].to_numpy(float)), float(at)

    law.inv_lambda, law.inv_lambda_lr = fit_axis("inv_lambda", "weight_decay", "lr")
    law.inv_eta, law.inv_eta_weight_decay = fit_axis("inv_eta", "lr", "weight_decay")
    usable = g[(g["weight_decay"] > 0) & (g["V_mem"] > g["V_final"])]
    if len(usable) >= MIN_POINTS:
        x = np.log(usable["V_mem"] / usable["V_final"]) / (usable["lr"] * usable["weight_decay"])
        law.delay_vs_theory = linear_fit(x.to_numpy(float), (usable["T_grok"] - usable["T_mem"]).to_numpy(float))
    else:
        law.absent["delay_vs_theory"] = f"fewer than {MIN_POINTS} grokking runs with weight decay and V_mem > V_final"
    if metrics_of is not None:
        rows = []
        for _, r in g.iterrows():
            m = metrics_of(r["run"])
            esc = escape_epoch(m["epoch"], m["sq_total"], int(r["T_mem"]))
            theory = (
                theory_escape_time(r["V_mem"], r["V_final"], r["lr"], r["weight_decay"])
                if r["weight_decay"] > 0 and r["V_mem"] > r["V_final"]
                else math.nan
            )
            rows.append(
                {
                    "run": r["run"],
                    "T_mem": int(r["T_mem"]),
                    "T_grok": int(r["T_grok"]),
                    "escape": esc,
                    "escape_delay": None if esc is None else esc - int(r["T_mem"]),
                    "theory_escape_delay": theory,
                }
            )
        law.escape = pd.DataFrame(rows)
    return law


def format_law(law: DelayLaw) -> str:
    """The fits as text, beside the paper's numbers (REFERENCE §5)."""
    lines = [
        f"runs {law.n_runs}: {law.n_grokked} grokked, {len(law.not_grokked)} memorised without grokking, "
        f"{len(law.not_memorised)} never memorised"
    ]
    if law.not_grokked:
        lines.append("  not grokked: " + ", ".join(law.not_grokked[:8]) + (" ..." if len(law.not_grokked) > 8 else ""))

    def show(name: str, label: str, fit: Optional[LinearFit], paper: str) -> None:
        if fit is None:
            lines.append(f"{label:<34} -  ({law.absent.get(name, 'not fitted')})")
            return
        lines.append(
            f"{label:<34} slope {fit.slope:.4g} [{fit.slope_ci[0]:.4g}, {fit.slope_ci[1]:.4g}]  intercept "
            f"{fit.intercept:.4g}  R^2 {fit.r2:.3f}  r {fit.pearson_r:.3f}  n {fit.n}   (paper: {paper})"
        )

    show("inv_lambda", f"T_grok vs 1/lambda (lr {law.inv_lambda_lr})", law.inv_lambda, "1182/lambda + 884, R^2 0.971")
    show("inv_eta", f"T_grok vs 1/eta (wd {law.inv_eta_weight_decay})", law.inv_eta, "R^2 0.92")
    show("delay_vs_theory", "delay vs ln(Vmem/Vfin)/(eta lambda)", law.delay_vs_theory, "Pearson r 0.91")
    if law.escape is not None and len(law.escape):
        e = law.escape.dropna(subset=["escape_delay"])
        if len(e):
            lines.append(
                f"escape (V <= 1.5 V_final) after T_mem: median {e['escape_delay'].median():.0f} steps; theory "
                f"ln(Vmem/Vfin)/(2 eta lambda) median {e['theory_escape_delay'].median():.0f}"
            )
    return "\n".join(lines)
