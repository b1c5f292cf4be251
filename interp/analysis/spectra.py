"""Heavy-tailed self-regularisation (HTSR) spectra of the weight matrices (REFERENCE §7).

Per weight matrix W (one checkpoint):

* the empirical spectral density: the eigenvalues of W^T W, taken over the smaller side (the
  squared singular values of W; a 128 x 512 W_in has 128, not 512 of which 384 are zero);
* ``alpha``: the exponent of a power law p(lambda) ~ lambda^-alpha fitted to the tail of those
  eigenvalues by the ``powerlaw`` package (Alstott et al. 2014: continuous maximum-likelihood fit,
  xmin chosen by the smallest Kolmogorov-Smirnov distance), as weightwatcher fits it
  (``powerlaw.Fit(evals, xmin_distribution='power_law')`` on eigenvalues above ``EVALS_THRESH``), with
  two changes: alpha may range over [1, ``ALPHA_MAX``] (powerlaw 2.0 bounds it to [0, 3] by default,
  which would cap an under-trained 6 at 3), and xmin stops where ``MIN_TAIL`` eigenvalues remain
  (as weightwatcher's small-sample fit; otherwise a 3-point tail can win the KS comparison).
  Reading (REFERENCE §7): alpha ~ 2 well trained, < 2 over-correlated, > 6 under-trained;
* correlation traps: W's elements shuffled (seeded) destroy its correlations, so the shuffled
  matrix should look like an i.i.d. random matrix whose spectrum is a Marchenko-Pastur (MP) bulk.
  Eigenvalues of the *shuffled* matrix above the bulk edge plus a Tracy-Widom margin are traps:
  a few very large elements that shuffling cannot spread (Martin & Mahoney; Prakash & Martin report
  them, with alpha < 2, before "anti-grokking"). ``n_spikes`` counts the eigenvalues of W itself
  above the same threshold: learnt structure (a dense low-rank signal is a spike of W but not a
  trap, since shuffling spreads it into the bulk).

The MP fit (``mp_threshold``). For X (n x m, n >= m) with i.i.d. entries of variance sigma^2 the
eigenvalues of X^T X fill [sigma^2 (sqrt n - sqrt m)^2, sigma^2 (sqrt n + sqrt m)^2], their mean is
n sigma^2, and the largest fluctuates around sigma^2 mu_nm on the scale sigma^2 s_nm with the
Tracy-Widom (beta = 1) law, mu_nm = (sqrt(n-1) + sqrt m)^2, s_nm = (sqrt(n-1) + sqrt m)
(1/sqrt(n-1) + 1/sqrt m)^(1/3) (Johnstone 2001). sigma^2 is fitted on the bulk: sigma^2 = mean of
the eigenvalues below the threshold / n, the threshold sigma^2 (mu_nm + t s_nm) with t = ``TW_MARGIN``
(the 99th percentile of TW1), iterated until no eigenvalue crosses it. weightwatcher fits sigma by a
kernel density and adds a margin of its own; this closed form keeps the same reading and is cheap.

Matrices (``weight_matrices``): W_E (d_vocab x d_model), W_U, and per layer W_Q, W_K, W_V
(d_model x n_heads d_head: the heads side by side) and W_O (n_heads d_head x d_model: the heads
stacked), W_in, W_out. Per-layer concatenations, not per head: a head's d_model x d_head matrix has
only d_head (32) eigenvalues, too few for a tail fit; the concatenation is what the layer writes
with, as a fused QKV projection would hold it. W_pos (n_ctx x d_model: 3 eigenvalues) is left out,
and so are biases. A matrix with fewer than ``MIN_EVALS`` eigenvalues above ``EVALS_THRESH`` gets
alpha = NaN.

Cost (canonical checkpoint: p = 113, d_model 128, d_mlp 512; one thread on a loaded 2-core machine):
eigenvalues, shuffle and traps of all eight matrices ~30 ms; ``powerlaw``'s xmin scan ~60 ms per
matrix, ~0.55 s in all, against ~0.13 s for the progress measures on the same machine. So
``run_table.analyze(spectra=True)`` computes them only when asked.
"""

from __future__ import annotations

import math
import re
import warnings
import zlib
from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional

import numpy as np
import pandas as pd
import torch

__all__ = [
    "EVALS_THRESH",
    "MIN_EVALS",
    "MIN_TAIL",
    "TW_MARGIN",
    "SPECTRA_RULE",
    "MatrixSpectrum",
    "weight_matrices",
    "eigenvalues",
    "fit_alpha",
    "mp_threshold",
    "matrix_spectrum",
    "model_spectra",
    "spectra_frame",
    "table_row",
    "reading",
]

EVALS_THRESH = 1e-5  # eigenvalues below it are numerically zero and left out of the fit (as weightwatcher)
MIN_EVALS = 16  # fewer eigenvalues above the threshold: no fit
MIN_TAIL = 10  # the fitted tail keeps at least this many eigenvalues (xmin candidates stop there)
ALPHA_MAX = 100.0  # powerlaw 2.0 bounds alpha to [0, 3] by default; HTSR reads alpha up to 6 and beyond
TW_MARGIN = 2.02  # Tracy-Widom (beta = 1) 99th percentile, in units of s_nm
SPECTRA_VERSION = 1
SPECTRA_RULE = (
    f"HTSR v{SPECTRA_VERSION}: eigenvalues of W^T W (smaller side); alpha = powerlaw.Fit (continuous MLE, xmin by "
    f"min KS, tail >= {MIN_TAIL}, alpha in [1, {ALPHA_MAX:g}]) on eigenvalues > {EVALS_THRESH:g}; traps = eigenvalues of W with its elements shuffled (seeded) above "
    f"the Marchenko-Pastur edge + {TW_MARGIN} Tracy-Widom scales (sigma fitted on the bulk)"
)

# Matrices in a model state dict: (key pattern, name, how to make a 2-D matrix of the raw tensor).
_MATRICES = [
    (r"embed\.W_E", "W_E", None),
    (r"unembed\.W_U", "W_U", None),
    (r"blocks\.(\d+)\.attn\.W_Q", "W_Q", "heads_side"),
    (r"blocks\.(\d+)\.attn\.W_K", "W_K", "heads_side"),
    (r"blocks\.(\d+)\.attn\.W_V", "W_V", "heads_side"),
    (r"blocks\.(\d+)\.attn\.W_O", "W_O", "heads_stacked"),
    (r"blocks\.(\d+)\.mlp\.W_in", "W_in", None),
    (r"blocks\.(\d+)\.mlp\.W_out", "W_out", None),
]


def weight_matrices(state: Mapping[str, torch.Tensor] | torch.nn.Module) -> dict[str, torch.Tensor]:
    """The 2-D matrices of a model (or its state dict, TransformerLens layout) that the spectra
    read, in a fixed order: W_E, W_U, then per layer W_Q, W_K, W_V, W_O, W_in, W_out (module notes).
    Attention weights are per-layer concatenations of the heads. Names carry the layer only when
    the model has more than one (``W_in.1``)."""
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    layers = {int(m.group(1)) for k in state for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    out: dict[str, torch.Tensor] = {}
    for pattern, name, how in _MATRICES:
        for key in sorted(state, key=_layer_order):
            m = re.fullmatch(pattern, key)
            if not m:
                continue
            W = state[key].detach().double().cpu()
            if how == "heads_side":  # [h, d_model, d_head] -> [d_model, h d_head]
                W = W.permute(1, 0, 2).reshape(W.shape[1], -1)
            elif how == "heads_stacked":  # [h, d_head, d_model] -> [h d_head, d_model]
                W = W.reshape(-1, W.shape[-1])
            label = name if (not m.groups() or len(layers) <= 1) else f"{name}.{m.group(1)}"
            out[label] = W
    return out


def _layer_order(key: str) -> tuple[int, str]:
    m = re.match(r"blocks\.(\d+)\.", key)
    return (int(m.group(1)) if m else -1, key)


def eigenvalues(W: torch.Tensor | np.ndarray) -> np.ndarray:
    """Eigenvalues of W^T W over the smaller side (squared singular values of W), ascending, float64."""
    W = torch.as_tensor(W, dtype=torch.float64)
    if W.ndim != 2:
        raise ValueError(f"a weight matrix must be 2-D, got shape {tuple(W.shape)}")
    return np.sort(torch.linalg.svdvals(W).pow(2).numpy())


def fit_alpha(evals: np.ndarray) -> dict[str, float]:
    """Power-law fit of the eigenvalue tail by ``powerlaw.Fit`` (module notes): alpha, xmin, the KS
    distance D, alpha's standard error sigma and the number of eigenvalues in the tail (NaN / 0
    when fewer than ``MIN_EVALS`` eigenvalues exceed ``EVALS_THRESH``)."""
    import powerlaw

    ev = np.asarray(evals, dtype=np.float64)
    ev = np.sort(ev[ev > EVALS_THRESH])
    nan = float("nan")
    if ev.size < MIN_EVALS:
        return {"alpha": nan, "xmin": nan, "D": nan, "alpha_sigma": nan, "n_tail": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # powerlaw warns on divide-by-zero in its xmin scan
        with np.errstate(all="ignore"):
            fit = powerlaw.Fit(
                ev,
                verbose=False,
                xmin=(float(ev[0]), float(ev[-MIN_TAIL])),
                xmin_distribution="power_law",
                parameter_ranges={"alpha": [1.0, ALPHA_MAX]},
            )
    return {
        "alpha": float(fit.alpha),
        "xmin": float(fit.xmin),
        "D": float(fit.D),
        "alpha_sigma": float(fit.sigma),
        "n_tail": int((ev >= fit.xmin).sum()),
    }


def mp_threshold(
    evals: np.ndarray, n: int, m: int, margin: float = TW_MARGIN, max_iter: int = 50
) -> tuple[float, float]:
    """Marchenko-Pastur bulk of the eigenvalues of X^T X for an n x m X (n >= m) with i.i.d. entries:
    returns (sigma^2, threshold), the threshold being the bulk edge plus ``margin`` Tracy-Widom
    scales (module notes); sigma^2 is fitted on the eigenvalues below the threshold."""
    if n < m:
        n, m = m, n
    ev = np.asarray(evals, dtype=np.float64)
    a, b = math.sqrt(max(n - 1, 1)), math.sqrt(m)
    mu, s = (a + b) ** 2, (a + b) * (1 / a + 1 / b) ** (1 / 3)
    bulk = ev
    sigma2 = thr = float("nan")
    for _ in range(max_iter):
        if bulk.size == 0:
            break
        sigma2 = float(bulk.mean()) / n
        thr = sigma2 * (mu + margin * s)
        nxt = ev[ev <= thr]
        if nxt.size == bulk.size:
            break
        bulk = nxt
    return sigma2, thr


@dataclass
class MatrixSpectrum:
    """HTSR reading of one weight matrix (module notes). ``evals``: eigenvalues of W^T W (ascending);
    ``rand_evals``: those of W with its elements shuffled; ``sigma2`` / ``threshold``: the MP bulk
    fitted on ``rand_evals`` and its edge plus the Tracy-Widom margin; ``n_traps``: shuffled
    eigenvalues above it; ``n_spikes``: W's own eigenvalues above it. The margin is the 99th
    percentile of the Tracy-Widom law, so an i.i.d. matrix shows a trap in about 1% of shuffles."""

    name: str
    shape: tuple[int, int]
    alpha: float
    xmin: float
    D: float
    alpha_sigma: float
    n_tail: int
    n_evals: int
    n_nonzero: int  # eigenvalues above EVALS_THRESH (what the fit sees)
    lambda_max: float
    n_spikes: int
    n_traps: int
    sigma2: float
    threshold: float
    rand_lambda_max: float
    seed: int
    evals: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    rand_evals: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def to_dict(self) -> dict:
        """The scalars (no eigenvalue arrays)."""
        d = asdict(self)
        d.pop("evals"), d.pop("rand_evals")
        d["shape"] = list(self.shape)
        return d


def _seed_for(seed: int, name: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**32)


def matrix_spectrum(W: torch.Tensor | np.ndarray, name: str = "W", seed: int = 0, fit: bool = True) -> MatrixSpectrum:
    """``MatrixSpectrum`` of one 2-D matrix. The shuffle is seeded by ``seed`` and ``name`` (the
    same matrix of two checkpoints is shuffled with the same permutation). ``fit=False`` skips the
    power-law fit (alpha NaN): the traps alone cost well under a millisecond."""
    Wt = torch.as_tensor(W, dtype=torch.float64).detach().cpu()
    if Wt.ndim != 2:
        raise ValueError(f"{name}: a weight matrix must be 2-D, got shape {tuple(Wt.shape)}")
    n, m = max(Wt.shape), min(Wt.shape)
    ev = eigenvalues(Wt)
    s = _seed_for(seed, name)
    perm = torch.randperm(Wt.numel(), generator=torch.Generator().manual_seed(s))
    rand = eigenvalues(Wt.reshape(-1)[perm].reshape(Wt.shape))
    sigma2, thr = mp_threshold(rand, n, m)
    pl = (
        fit_alpha(ev)
        if fit
        else {"alpha": math.nan, "xmin": math.nan, "D": math.nan, "alpha_sigma": math.nan, "n_tail": 0}
    )
    return MatrixSpectrum(
        name=name,
        shape=(int(Wt.shape[0]), int(Wt.shape[1])),
        n_evals=int(ev.size),
        n_nonzero=int((ev > EVALS_THRESH).sum()),
        lambda_max=float(ev[-1]) if ev.size else math.nan,
        n_spikes=int((ev > thr).sum()),
        n_traps=int((rand > thr).sum()),
        sigma2=sigma2,
        threshold=thr,
        rand_lambda_max=float(rand[-1]) if rand.size else math.nan,
        seed=s,
        evals=ev,
        rand_evals=rand,
        **pl,
    )


def model_spectra(
    model_or_state: Mapping[str, torch.Tensor] | torch.nn.Module, seed: int = 0, fit: bool = True
) -> list[MatrixSpectrum]:
    """``matrix_spectrum`` of every matrix of ``weight_matrices``, in that order."""
    return [matrix_spectrum(W, name, seed, fit) for name, W in weight_matrices(model_or_state).items()]


def spectra_frame(spectra: list[MatrixSpectrum], epoch: Optional[int] = None) -> pd.DataFrame:
    """One row per matrix (the scalars of ``MatrixSpectrum``), with ``epoch`` first when given."""
    rows = [({"epoch": epoch} if epoch is not None else {}) | s.to_dict() for s in spectra]
    return pd.DataFrame(rows)


def table_row(spectra: list[MatrixSpectrum]) -> dict[str, float | int]:
    """The analysis-table columns: ``alpha_<matrix>`` and ``traps_<matrix>`` per matrix."""
    row: dict[str, float | int] = {}
    for s in spectra:
        row[f"alpha_{s.name}"] = s.alpha
    for s in spectra:
        row[f"traps_{s.name}"] = s.n_traps
    return row


def reading(alpha: float) -> str:
    """REFERENCE §7's reading of an alpha: ~2 ideal, < 2 over-correlated, > 6 under-trained."""
    if not math.isfinite(alpha):
        return "no fit"
    if alpha < 2:
        return "over-correlated (< 2)"
    if alpha > 6:
        return "under-trained (> 6)"
    return "well trained (2-6; ~2 ideal)"
