"""Representation Quality Index (Liu et al. 2022, "Towards understanding grokking"; REFERENCE §6).

The pure parallelogram counting on given representations: ``rqi_linear`` (§6 verbatim on vectors,
integer sums, or sums mod a modulus) and ``rqi_circle`` (angles in circle planes, sums mod n). The
model-level reading, ``representation.embedding_rqi``, picks the planes from a transformer's
embedding; the effective-theory toy model reads its 1-D representations with ``rqi_linear``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from jaxtyping import Complex, Float, Int
from torch import Tensor

RQI_TOL = 0.01

# # REFERENCE §6 (Liu et al. 2022): normalise the embeddings per dimension; over all ideal
# parallelograms (i, j, m, n) with i + j = m + n, count those with
# mean_d (E_i + E_j - E_m - E_n)^2 < 0.01; RQI = real / ideal.
#
# Enumeration (both charts): a parallelogram is an unordered pair of distinct unordered pairs
# {i, j} != {m, n} (i <= j, m <= n; i = j allowed) with equal sums: i + j = m + n, or
# i + j = m + n (mod M) for a modulus M. Trivial ones ({i, j} = {m, n}) always close and are not
# counted; each parallelogram is counted once. Vectorised: the unordered pairs are grouped into
# classes by their sum (a padded [classes, pairs] index table); inside a class every pair of
# pairs is a parallelogram, so one batched distance matrix per class gives all residuals.
# For n = 113 with sums mod n: 113 classes of 57 pairs, 113 * C(57, 2) = 180,348 parallelograms.
#
# Two charts:
# * linear (``rqi_linear``): §6 verbatim on the embedding vectors, integer sums. It suits Liu et
#   al.'s toy (non-modular addition, where the learnt representation is a line), but on a modular
#   task no embedding in R^d can close all parallelograms mod n (E_{i+j} - E_0 would be an additive
#   map of Z_n into R^d, hence 0), and a Fourier embedding closes none exactly: it reads ~0 for
#   memorising and generalising models alike.
# * circle (``rqi_circle`` / ``embedding_rqi``, the one reported): for modular addition the ideal
#   representation is a homomorphism of Z_n into the circle group, a -> e^{i w_k a} in each key
#   frequency's plane (Nanda et al.'s circles), and there adding numbers is multiplying points:
#   the parallelogram identity E_i + E_j = E_m + E_n becomes z_i z_j = z_m z_n (angles add), over
#   all parallelograms with sums mod n. The "dimensions" are the key-frequency planes. "Normalise
#   per dimension" becomes: whiten each plane's 2D coordinates (any linear image of a circle is
#   read as well by the next layer, so ellipses count as circles) and keep each point's angle
#   (z = e^{i theta}; the radius carries no information about the number, and a noisy radius
#   would otherwise dominate). The residual is mean over planes of |z_i z_j - z_m z_n|^2
#   = 2 - 2 cos(theta_i + theta_j - theta_m - theta_n), with §6's threshold 0.01: the angles must
#   close to within ~0.1 rad (RMS over planes). A perfect circle embedding scores 1; random
#   points score ~0.05 with one plane (chance of a 0.1 rad closure) and ~0.003 with two.
#   Measured on the `quick` preset (p = 31, planes 3 and 11): 0.006 at init, 0.28 after grokking,
#   0.006 for the same recipe memorising without weight decay.


@dataclass
class RQIResult:
    """Representation Quality Index (REFERENCE §6): ``rqi = n_real / n_ideal``.

    ``chart``: "linear" (§6 verbatim) or "circle" (see the module notes). ``modulus``: sums taken mod
    it (None: integer sums). ``freqs``: the planes of the circle chart. ``residual_median``: median
    residual over all ideal parallelograms (how far from closing a typical one is). ``per_plane``
    (circle chart): the RQI of each plane alone; the joint ``rqi`` needs a parallelogram to close in
    all planes at once (on average), so one noisy plane pulls it down while the others stay clean.
    """

    rqi: float
    n_real: int
    n_ideal: int
    tol: float
    chart: str
    modulus: Optional[int]
    freqs: list[int] = field(default_factory=list)
    residual_median: float = float("nan")
    per_plane: dict[int, float] = field(default_factory=dict)


def parallelogram_classes(
    n: int, modulus: Optional[int] = None
) -> tuple[Int[Tensor, "C L"], Int[Tensor, "C L"], Tensor]:
    """Unordered pairs {i, j} (0 <= i <= j < n) grouped by their sum (mod ``modulus`` if given).

    Returns (I, J, valid), each [classes, max pairs per class]; padded slots have valid = False.
    Any two valid slots of one class form an ideal parallelogram.
    """
    i, j = torch.triu_indices(n, n)
    s = i + j if modulus is None else (i + j) % modulus
    order = torch.argsort(s, stable=True)
    i, j, s = i[order], j[order], s[order]
    uniq, counts = torch.unique_consecutive(s, return_counts=True)
    cls = torch.repeat_interleave(torch.arange(uniq.numel()), counts)
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(s.numel()) - start[cls]
    C, L = uniq.numel(), int(counts.max())
    I = torch.zeros(C, L, dtype=torch.long)
    J = torch.zeros(C, L, dtype=torch.long)
    valid = torch.zeros(C, L, dtype=torch.bool)
    I[cls, slot], J[cls, slot], valid[cls, slot] = i, j, True
    return I, J, valid


def _count(pair_vectors: Float[Tensor, "C L G g"], valid: Tensor, denom: float, tol: float, chunk: int = 32):
    """Residuals of every parallelogram (slot pairs a < b of one class) and how many close.

    Group q of the last-but-one axis (a plane of the circle chart; the whole vector in the linear
    chart) gives r_q = ||v_a,q - v_b,q||^2 / denom; the parallelogram's residual is mean_q r_q.
    Returns (closed, ideal, median residual, closed per group).
    """
    C, L, G, g = pair_vectors.shape
    upper = torch.triu(torch.ones(L, L, dtype=torch.bool), diagonal=1)
    real, ideal, res = 0, 0, []
    per = torch.zeros(G, dtype=torch.long)
    for c0 in range(0, C, chunk):
        v = pair_vectors[c0 : c0 + chunk]
        c = v.shape[0]
        ok = valid[c0 : c0 + chunk]
        vg = v.permute(0, 2, 1, 3).reshape(c * G, L, g)
        d = (torch.cdist(vg, vg).pow(2) / denom).reshape(c, G, L, L)
        m = ok[:, :, None] & ok[:, None, :] & upper  # [c, L, L]
        rg = d.permute(1, 0, 2, 3)[:, m]  # [G, parallelograms]
        r = rg.mean(0)
        real += int((r < tol).sum())
        ideal += int(r.numel())
        per += (rg < tol).sum(1)
        res.append(r)
    allr = torch.cat(res) if res else torch.zeros(0)
    return real, ideal, float(allr.median()) if allr.numel() else float("nan"), per


def rqi_linear(E: Float[Tensor, "n d"], modulus: Optional[int] = None, tol: float = RQI_TOL) -> RQIResult:
    """REFERENCE §6 verbatim: RQI of the vectors E[0..n-1] (row i represents the number i).

    Each dimension is standardised over the n rows (mean 0, variance 1; constant dimensions are
    dropped); a parallelogram {i, j}, {m, n} with i + j = m + n (mod ``modulus`` if given) closes
    when mean_d (E_i + E_j - E_m - E_n)^2 < ``tol``.
    """
    E = E.detach().double()
    n = E.shape[0]
    sd = E.std(0, unbiased=False)
    keep = sd > 1e-12 * max(float(sd.max()) if sd.numel() else 0.0, 1e-300)
    if not bool(keep.any()):
        raise ValueError("RQI of a constant embedding is undefined")
    Z = (E[:, keep] - E[:, keep].mean(0)) / sd[keep]
    I, J, valid = parallelogram_classes(n, modulus)
    real, ideal, med, _ = _count((Z[I] + Z[J])[:, :, None, :], valid, float(Z.shape[1]), tol)
    return RQIResult(real / ideal if ideal else float("nan"), real, ideal, tol, "linear", modulus, [], med)


def _plane_angles(xy: Float[Tensor, "n 2"]) -> Complex[Tensor, "n"]:
    """Whiten a plane's 2D coordinates and keep each point's angle: z = e^{i theta} (0 for a point
    at the origin, whose angle is undefined and so closes no parallelogram)."""
    xy = xy - xy.mean(0)
    C = xy.T @ xy / xy.shape[0]
    evals, evecs = torch.linalg.eigh(C)
    if float(evals.max()) <= 0:
        return torch.zeros(xy.shape[0], dtype=torch.complex128)
    # a degenerate (line-like) plane keeps its one direction rather than blowing up rounding noise
    floor = 1e-6 * float(evals.max())
    w = xy @ (evecs @ torch.diag(evals.clamp_min(floor).rsqrt()) @ evecs.T)
    z = torch.complex(w[:, 0], w[:, 1])
    r = z.abs()
    return torch.where(r > 1e-12, z / r.clamp_min(1e-12), torch.zeros_like(z))


def rqi_circle(z: Complex[Tensor, "K n"], tol: float = RQI_TOL, freqs: Optional[Sequence[int]] = None) -> RQIResult:
    """RQI in the circle chart (module notes): z[k, i] is the point of number i in plane k (already
    normalised, e.g. unit complex numbers); a parallelogram {i, j}, {m, n} with i + j = m + n (mod n) closes when
    mean_k |z_ki z_kj - z_km z_kn|^2 < ``tol``. ``per_plane[k]``: the RQI of plane k alone (keys: ``freqs``,
    or plane indices)."""
    K, n = z.shape
    if K == 0:
        raise ValueError("RQI in the circle chart needs at least one frequency plane")
    I, J, valid = parallelogram_classes(n, n)
    prod = z[:, I] * z[:, J]  # [K, C, L]
    v = torch.stack([prod.real, prod.imag], dim=-1).permute(1, 2, 0, 3).contiguous()  # [C, L, K, 2]
    real, ideal, med, per = _count(v, valid, 1.0, tol)
    ks = [int(k) for k in freqs] if freqs is not None else list(range(K))
    return RQIResult(
        real / ideal if ideal else float("nan"),
        real,
        ideal,
        tol,
        "circle",
        n,
        ks if freqs is not None else [],
        med,
        {k: int(c) / ideal if ideal else float("nan") for k, c in zip(ks, per)},
    )
