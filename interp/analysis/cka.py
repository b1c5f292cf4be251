"""Linear CKA between representations: checkpoint by checkpoint, and between runs (issue #4).

Linear centred kernel alignment (Kornblith et al. 2019, "Similarity of neural network
representations revisited"). For activations X [N, d1] and Y [N, d2] of the same N inputs, with
every feature centred over the inputs,

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)        (standard, the default)

which equals HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) for the linear Gram matrices K = X X^T,
L = Y Y^T. It is 1 for Y = X Q with Q orthogonal (or any isotropic scaling), 0 for orthogonal
representations. Independent random representations score about sqrt(d1 d2) / N rather than 0
(the bias of the plug-in HSIC estimator): ~0.03 for p = 31, d = 32 and ~0.04 for p = 113, d = 512.
``debiased=True`` uses the unbiased HSIC estimator instead (Song et al. 2012, as in Nguyen,
Raghu & Kornblith 2021), which removes that bias (the value can then be slightly negative).

Both are computed in feature form: with N = p^2 = 12,769 inputs and d <= 512 features, the d x d
cross-covariance (N d1 d2 multiply-adds) is far cheaper than N x N Gram matrices (N^2 d), and the
debiased terms need only the per-input squared norms diag(K) (derivation in ``_hsic``).

The checkpoint-by-checkpoint matrix (``checkpoint_cka_matrix``) is vectorised: each checkpoint's
centred activations are scaled to unit ||X^T X||_F and concatenated with its block-mates into one
[N, B * d] matrix, so every entry of a block of the matrix comes out of one matrix product
Z_i^T Z_j followed by a segmented sum of squares. Optional exact compression: each checkpoint's
X is replaced by U_r S_r from its SVD (same Gram matrix K = X X^T up to the discarded energy
``energy_tol``), which shrinks the MLP's 512 features to its effective rank.

Representations: the final-position residual stream (``blocks.0.hook_resid_post`` at '=') and
the MLP activations (``blocks.0.mlp.hook_post`` at '='), on all p^2 inputs in row-major order
(``representation.final_position_activations``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from interp.analysis.representation import final_position_activations
from interp.errors import InterpError

LAYERS = ("resid", "mlp")
# Default memory for holding activations of a block of checkpoints at once.
DEFAULT_MEMORY_BYTES = 1 << 30


def _check_layer(layer: str) -> str:
    if layer not in LAYERS:
        raise InterpError(f"unknown CKA layer {layer!r}; choose one of {', '.join(LAYERS)}")
    return layer


def layer_activations(model, layer: str) -> Float[Tensor, "pairs d"]:
    """The representation CKA compares: ``resid`` (final residual stream) or ``mlp`` (neuron
    activations), at the '=' position on all p^2 inputs, row-major."""
    acts = final_position_activations(model)
    return acts.resid if _check_layer(layer) == "resid" else acts.mlp


# ----------------------------------------------------------------------------- one pair


@dataclass
class _Prepared:
    """A representation ready for CKA: centred, compressed and scaled so ||X^T X||_F = 1.

    ``rows``: diag(K) = squared norm of each input's (scaled) vector, for the debiased estimator;
    ``self_u``: the unbiased HSIC of X with itself (in the same scaling).
    """

    X: Float[Tensor, "N r"]
    rows: Float[Tensor, "N"]
    self_u: float


def _hsic_unbiased(cross_sq: Tensor, rx_ry: Tensor, Rx: Tensor, Ry: Tensor, N: int) -> Tensor:
    """Unbiased HSIC (Song et al. 2012) of linear kernels of centred features, from sufficient terms.

    HSIC_1 = [tr(K~ L~) + 1'K~1 1'L~1 / ((N-1)(N-2)) - 2/(N-2) 1'K~L~1] / (N(N-3)), K~ = K with its
    diagonal zeroed. With K = X X^T, centred X (so K 1 = 0) and r_x = diag(K):
    tr(K~ L~) = ||X^T Y||^2 - r_x.r_y;  1'K~1 = -sum r_x;  K~1 = -r_x, so 1'K~L~1 = r_x.r_y.
    """
    return (cross_sq - rx_ry + Rx * Ry / ((N - 1) * (N - 2)) - 2.0 / (N - 2) * rx_ry) / (N * (N - 3))


def _prepare(X: Tensor, debiased: bool, energy_tol: float = 0.0) -> _Prepared:
    if X.dim() != 2:
        raise ValueError(f"CKA needs a [inputs, features] matrix, got shape {tuple(X.shape)}")
    N = X.shape[0]
    if debiased and N < 4:
        raise ValueError("debiased CKA needs at least 4 inputs")
    X = X.detach().to(torch.float64)
    X = X - X.mean(0)
    if energy_tol > 0:
        # K = X X^T = U S^2 U^T: keep the leading singular directions holding 1 - energy_tol of it.
        C = X.T @ X
        evals, evecs = torch.linalg.eigh(C)
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        tot = float(evals.sum())
        if tot > 0:
            tail = torch.cumsum(evals.flip(0), 0).flip(0)  # tail[i] = sum_{j >= i} evals
            r = int((tail > energy_tol * tot).sum())
            X = X @ evecs[:, : max(r, 1)]
    ss = (X.T @ X).pow(2).sum().sqrt()
    if not float(ss) > 0:
        raise ValueError("CKA of a constant representation is undefined")
    X = X / ss.sqrt()  # now ||X^T X||_F = 1
    rows = X.pow(2).sum(1)
    self_u = float("nan")
    if debiased:
        R = rows.sum()
        self_u = float(_hsic_unbiased(torch.tensor(1.0, dtype=torch.float64), rows @ rows, R, R, N))
    return _Prepared(X.to(torch.float32), rows, self_u)


def linear_cka(X: Float[Tensor, "N d1"], Y: Float[Tensor, "N d2"], debiased: bool = False) -> float:
    """Linear CKA of two representations of the same N inputs (feature form; module docstring)."""
    if X.shape[0] != Y.shape[0]:
        raise InterpError(f"CKA needs the same inputs on both sides: {X.shape[0]} vs {Y.shape[0]} rows")
    a, b = _prepare(X, debiased), _prepare(Y, debiased)
    return float(_combine(a, b, (a.X.double().T @ b.X.double()).pow(2).sum(), debiased))


def _combine(a: _Prepared, b: _Prepared, cross_sq, debiased: bool):
    if not debiased:
        return cross_sq
    N = a.X.shape[0]
    h = _hsic_unbiased(cross_sq, a.rows @ b.rows, a.rows.sum(), b.rows.sum(), N)
    return h / (max(a.self_u, 1e-300) * max(b.self_u, 1e-300)) ** 0.5


def model_cka(model_a, model_b, layer: str = "resid", debiased: bool = False) -> float:
    """CKA between two models' representations (``layer``) on the same p^2 inputs."""
    if model_a.cfg.p != model_b.cfg.p:
        raise InterpError(f"CKA needs the same inputs: models have p={model_a.cfg.p} and p={model_b.cfg.p}")
    return linear_cka(layer_activations(model_a, layer), layer_activations(model_b, layer), debiased)


# ----------------------------------------------------------------------------- many checkpoints


@dataclass
class CKAMatrix:
    """CKA between checkpoints: ``matrix[i, j]`` = CKA(rows checkpoint i, columns checkpoint j).

    ``epochs_a`` label the rows, ``epochs_b`` the columns (the same list for one run's
    checkpoint-by-checkpoint matrix). ``ranks``: features kept per row / column checkpoint after
    compression (the full width when ``energy_tol`` is 0).
    """

    matrix: Float[Tensor, "Ta Tb"]
    epochs_a: list[int]
    epochs_b: list[int]
    layer: str
    debiased: bool
    energy_tol: float
    run_a: str = ""
    run_b: str = ""
    ranks_a: Optional[list[int]] = None
    ranks_b: Optional[list[int]] = None


def _blocks(T: int, width: int, N: int, memory_bytes: int) -> int:
    """Checkpoints per block so that two blocks of float32 activations fit in ``memory_bytes``."""
    per = max(1, N * width * 4)
    return int(max(1, min(T, memory_bytes // (2 * per))))


def _cross_block(A: list[_Prepared], B: list[_Prepared], debiased: bool) -> Tensor:
    """CKA of every (a in A, b in B) in one matrix product."""
    Za = torch.cat([x.X for x in A], dim=1)
    Zb = torch.cat([x.X for x in B], dim=1)
    G = (Za.T @ Zb).double().pow(2)  # float32 product, float64 squares: entries are <= 1 after scaling
    seg_a = torch.repeat_interleave(torch.arange(len(A)), torch.tensor([x.X.shape[1] for x in A]))
    seg_b = torch.repeat_interleave(torch.arange(len(B)), torch.tensor([x.X.shape[1] for x in B]))
    S = torch.zeros(len(A), G.shape[1], dtype=torch.float64).index_add_(0, seg_a, G)
    S = torch.zeros(len(A), len(B), dtype=torch.float64).index_add_(1, seg_b, S)
    if not debiased:
        return S
    N = Za.shape[0]
    Ra = torch.stack([x.rows for x in A])
    Rb = torch.stack([x.rows for x in B])
    h = _hsic_unbiased(S, Ra @ Rb.T, Ra.sum(1)[:, None], Rb.sum(1)[None, :], N)
    ua = torch.tensor([x.self_u for x in A], dtype=torch.float64).clamp_min(1e-300)
    ub = torch.tensor([x.self_u for x in B], dtype=torch.float64).clamp_min(1e-300)
    return h / (ua[:, None] * ub[None, :]).sqrt()


def cka_cross(
    load_a: Callable[[int], Tensor],
    n_a: int,
    load_b: Optional[Callable[[int], Tensor]] = None,
    n_b: Optional[int] = None,
    debiased: bool = False,
    energy_tol: float = 0.0,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    progress: bool = False,
) -> tuple[Tensor, list[int], list[int]]:
    """CKA matrix between representations produced on demand.

    ``load_a(i)`` returns representation i of side A ([N, d]); without ``load_b`` the matrix is
    A against itself (symmetric, only the upper triangle is computed). Representations are held
    in blocks sized to ``memory_bytes`` and recomputed when they do not all fit.
    Returns (matrix [n_a, n_b], ranks_a, ranks_b).
    """
    symmetric = load_b is None
    if symmetric:
        load_b, n_b = load_a, n_a
    if n_a == 0 or n_b == 0:
        raise ValueError("CKA matrix needs at least one checkpoint on each side")
    first = _prepare(load_a(0), debiased, energy_tol)
    N, width = first.X.shape[0], first.X.shape[1]
    Ba = _blocks(n_a, width, N, memory_bytes)
    Bb = Ba if symmetric else _blocks(n_b, width, N, memory_bytes)
    ranks_a: dict[int, int] = {}
    ranks_b: dict[int, int] = {}

    def prep(load, i: int, ranks: dict[int, int]) -> _Prepared:
        x = first if (load is load_a and i == 0) else _prepare(load(i), debiased, energy_tol)
        if x.X.shape[0] != N:
            raise ValueError(f"CKA needs the same inputs everywhere: {x.X.shape[0]} vs {N} rows")
        ranks[i] = x.X.shape[1]
        return x

    M = torch.full((n_a, n_b), float("nan"), dtype=torch.float64)
    blocks_a = [list(range(s, min(s + Ba, n_a))) for s in range(0, n_a, Ba)]
    blocks_b = [list(range(s, min(s + Bb, n_b))) for s in range(0, n_b, Bb)]
    pairs = [(i, j) for i in range(len(blocks_a)) for j in range(len(blocks_b)) if not symmetric or j >= i]
    bar = tqdm(total=len(pairs), desc="CKA", unit="block", disable=not progress, dynamic_ncols=True)
    # Blocks are sized so two fit in memory: block i of A stays while the blocks of B stream past
    # (recomputed per row of blocks; when everything fits in one block nothing is recomputed).
    for bi, ia in enumerate(blocks_a):
        A = [prep(load_a, i, ranks_a) for i in ia]
        for bj, jb in enumerate(blocks_b):
            if symmetric and bj < bi:
                continue
            B = A if symmetric and bj == bi else [prep(load_b, j, ranks_b) for j in jb]
            S = _cross_block(A, B, debiased)
            M[ia[0] : ia[-1] + 1, jb[0] : jb[-1] + 1] = S
            if symmetric:
                M[jb[0] : jb[-1] + 1, ia[0] : ia[-1] + 1] = S.T
            bar.update(1)
    bar.close()
    if symmetric:
        ranks_b = ranks_a
    return M, [ranks_a[i] for i in range(n_a)], [ranks_b.get(i, ranks_a.get(i, 0)) for i in range(n_b)]


def _run_loader(run, epochs: list[int], layer: str) -> Callable[[int], Tensor]:
    from interp.model import Transformer
    from interp.store import load_model_state

    model = Transformer(run.model_config)

    def load(i: int) -> Tensor:
        e = epochs[i]
        load_model_state(model, run.load_state_dict(e), str(run.checkpoint_path(e)))
        return layer_activations(model, layer)

    return load


def _run_epochs(run, epochs: Optional[Sequence[int]], max_checkpoints: Optional[int]) -> list[int]:
    have = run.checkpoint_epochs()
    if not have:
        raise InterpError(f"{run.path}: the run has no checkpoints")
    if epochs is None:
        eps = have
    else:
        eps = [int(e) for e in epochs]
        missing = [e for e in eps if e not in set(have)]
        if missing:
            near = run.nearest_epochs(missing[0])
            raise InterpError(
                f"{run.path}: no checkpoint at epoch {missing[0]}; nearest available: {', '.join(map(str, near))}"
            )
    if max_checkpoints is not None and len(eps) > max_checkpoints:
        if max_checkpoints < 2:
            raise InterpError("max_checkpoints must be >= 2")
        # evenly spaced over the list (keeping the first and the last)
        idx = torch.linspace(0, len(eps) - 1, max_checkpoints).round().long().unique().tolist()
        eps = [eps[i] for i in idx]
    return eps


def _open(run_or_path):
    from interp.store import Run

    return run_or_path if isinstance(run_or_path, Run) else Run.open(run_or_path)


def checkpoint_cka_matrix(
    run,
    layer: str = "resid",
    epochs: Optional[Sequence[int]] = None,
    max_checkpoints: Optional[int] = None,
    debiased: bool = False,
    energy_tol: float = 0.0,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    progress: bool = False,
) -> CKAMatrix:
    """CKA between every pair of checkpoints of one run (``layer``: "resid" or "mlp").

    ``epochs``: which checkpoints (default: all); ``max_checkpoints``: thin them evenly to at most
    that many. ``energy_tol`` > 0 compresses each representation to the singular directions
    holding all but that fraction of its energy (relative error of an entry <~ 2 sqrt(d) energy_tol).
    """
    run = _open(run)
    _check_layer(layer)
    eps = _run_epochs(run, epochs, max_checkpoints)
    M, ra, _ = cka_cross(
        _run_loader(run, eps, layer),
        len(eps),
        debiased=debiased,
        energy_tol=energy_tol,
        memory_bytes=memory_bytes,
        progress=progress,
    )
    return CKAMatrix(M, eps, eps, layer, debiased, energy_tol, str(run.path), str(run.path), ra, ra)


def run_cka(
    run_a,
    run_b,
    layer: str = "resid",
    epochs_a: Optional[Sequence[int]] = None,
    epochs_b: Optional[Sequence[int]] = None,
    max_checkpoints: Optional[int] = None,
    debiased: bool = False,
    energy_tol: float = 0.0,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    progress: bool = False,
) -> CKAMatrix:
    """CKA between the checkpoints of two runs (rows: run A, columns: run B) on the same inputs.

    The runs must share task and p (the same p^2 inputs); widths may differ.
    """
    run_a, run_b = _open(run_a), _open(run_b)
    _check_layer(layer)
    ca, cb = run_a.config, run_b.config
    if (ca.task, ca.p) != (cb.task, cb.p):
        raise InterpError(
            f"CKA needs the same inputs: {run_a.path} is {ca.task} mod {ca.p}, {run_b.path} is {cb.task} mod {cb.p}"
        )
    ea = _run_epochs(run_a, epochs_a, max_checkpoints)
    eb = _run_epochs(run_b, epochs_b, max_checkpoints)
    M, ra, rb = cka_cross(
        _run_loader(run_a, ea, layer),
        len(ea),
        _run_loader(run_b, eb, layer),
        len(eb),
        debiased=debiased,
        energy_tol=energy_tol,
        memory_bytes=memory_bytes,
        progress=progress,
    )
    return CKAMatrix(M, ea, eb, layer, debiased, energy_tol, str(run_a.path), str(run_b.path), ra, rb)
