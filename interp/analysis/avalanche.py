"""The gradient-avalanche dimension D (Wang 2026; REFERENCE §7), a documented re-derivation.

REFERENCE §7: parameters are the nodes of a graph (Barabasi-Albert in the paper); a gradient snapshot
is injected as stress; sites above a threshold topple and pass their excess to their neighbours
(Olami-Feder-Christensen style, with dissipation); an avalanche is the cascade; D comes from
finite-size scaling of the largest cascade, s_max ~ N^D, across model sizes. The paper publishes
no code and neither its threshold, its dissipation nor its graph parameters, only two checks: i.i.d.
Gaussian gradients give D ~ 1 on any graph, and D(t) of modular-addition transformers descends
through 1 from above at grokking (runs that never grok stay above 1). Every choice below is ours,
calibrated on the first check only (the second is what ``analyses/avalanche.py`` tests).

The model, step by step (defaults in ``AvalancheConfig``):

1. **Graph.** N nodes, one per trainable parameter; a Barabasi-Albert graph with ``m = 3`` edges
   per new node, built in numpy by the Batagelj-Brandes (2005) linear-time algorithm (each edge of
   node v picks its target uniformly from the endpoint list so far, i.e. by degree), vectorised by
   pointer-chasing; self-loops are dropped and parallel edges merged, so a few nodes have degree
   < m (a node left without neighbours, which almost never happens, dissipates all it receives).
   The parameters are placed on the nodes by a seeded random permutation: the graph carries no
   architecture, so hubs are random parameters (placing them in flattening order would make the
   embedding the hubs).
2. **Stress.** z_i = |g_i| / mean_j |g_j|: scale-free (the loss scale, the learning stage and the
   width change |g| by orders of magnitude; only the shape of the distribution is compared across
   sizes), and the mean stress is 1 for every N. The mean rather than a quantile keeps the tail
   shape in z: a quantile would fix the fraction of sites above threshold by construction.
3. **Toppling.** A site with z_i > ``threshold`` = 1.5 (in units of the mean stress) topples: it
   keeps ``threshold`` and passes its excess e_i = z_i - threshold on, each of its k_i neighbours
   receiving (1 - ``dissipation``) e_i / k_i with ``dissipation`` = 0.1 (the rest is lost: OFC with
   dissipation, on a graph with no boundary). All unstable sites topple at once in a relaxation
   round, one sparse matrix-vector product per round, z <- z - e + (1 - alpha) A (e / k), until no
   site exceeds threshold * (1 + ``tol``) (tol = 1e-9 only stops re-toppling on rounding-size
   excess; the excess is conserved exactly: sum z_final = sum z_0 - alpha * sum of all excess passed).
4. **Avalanches.** The sites that toppled at least once, split into the connected components of
   the graph restricted to them: each component is one cascade (seeded by the sites that started
   above threshold, grown by the ones their excess pushed over). Size = distinct sites in it (not
   toppling events: a site at threshold re-topples on every tiny arrival, so event counts depend on
   ``tol``, distinct sites do not). ``Avalanches.sizes`` is the size distribution; s_max its largest.
5. **Dimension.** For each size N, s_max is averaged over ``seeds`` = 3 graphs (each its own BA
   graph and permutation); D is the least-squares slope of log mean s_max on log N (at least two
   distinct sizes), with the slope of each seed's own fit for a spread.

Calibration (the null; ``gaussian_null``). i.i.d. N(0, 1) gradients, N = 1e3 ... 6.4e4, 3 graphs,
two draws: with threshold 1.5 the toppled sites percolate (~28% of the nodes are in the largest
avalanche at every N) and D = 0.99-1.01 for m in {2, 3} and dissipation 0.05-0.3, and likewise for
Laplace, Student-t(3) and 95%-sparse Gaussian gradients. With threshold 2 the largest cascade is
near the percolation point of the BA graph (~6% of the nodes, growing slowly with N as BA's
threshold falls like 1/log N) and the null drifts to D = 1.0-1.15; with 2.5 it is subcritical-ish
and D scatters over 1.0-1.2 (and 0.4 at dissipation 0.2). So threshold 1.5 is the value at which
the paper's null holds robustly; the price is that D measures a supercritical cascade, whose
largest cluster is a fraction f(N) of the graph: D = 1 + d log f / d log N. Any i.i.d. draw from a
fixed distribution has f constant in N, so D != 1 needs the *shape* of the normalised gradient
distribution to change with model size.

Why model sizes, not subsamples of one model (the brief allowed either): a random subsample of n
of a model's parameters, placed at random on an n-node graph, is an i.i.d. draw from that model's
|g| distribution, so by the argument above it gives D -> 1 for every model (``subsample_dimension``
shows it: it is a second null, not a measurement). The size axis has to be a width sweep, as the
paper's 8 XOR widths are; ``analyses/avalanche.py`` uses d_model in {32, 48, 64, 96}.

``gradient_snapshot`` computes the full-batch train gradient of the loss (the trainer's
cross-entropy, ``interp.analysis.losses``) at a run's checkpoint through the fast '=' path
(``interp.model.fast.eq_logits``), flattened over the trainable parameters in
``named_parameters`` order (the frozen zero biases of ``train_biases = False`` are left out).
Weight decay is not part of the loss, so it is not in the gradient.

Cost: one relaxation of a 1.2e5-node graph (d_model 96) is ~30-60 relaxation rounds of a sparse
product over ~7e5 stored edges, a fraction of a second on one thread.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from interp.errors import InterpError

__all__ = [
    "AvalancheConfig",
    "Graph",
    "Toppling",
    "Avalanches",
    "AvalancheDimension",
    "GradientSnapshot",
    "ba_graph",
    "stress",
    "topple",
    "avalanches",
    "s_max",
    "fit_dimension",
    "dimension",
    "subsample_dimension",
    "gaussian_null",
    "gradient_snapshot",
]


@dataclass(frozen=True)
class AvalancheConfig:
    """The free parameters of the re-derivation (see the module docstring; none is published)."""

    m: int = 3  # BA edges per new node
    threshold: float = 1.5  # toppling threshold, in units of the mean stress (z = |g| / mean |g|)
    dissipation: float = 0.1  # fraction of each toppled excess that is lost
    seeds: int = 3  # graphs (BA graph + placement) averaged per size
    tol: float = 1e-9  # a site re-topples only above threshold * (1 + tol)
    max_rounds: int = 100_000  # relaxation rounds before giving up (never reached in practice)

    def __post_init__(self):
        if not (isinstance(self.m, int) and self.m >= 1):
            raise InterpError(f"avalanche graph: m must be an integer >= 1, got {self.m!r}")
        if not (math.isfinite(self.threshold) and self.threshold > 0):
            raise InterpError(f"avalanche threshold must be a positive number, got {self.threshold!r}")
        if not (0.0 < self.dissipation <= 1.0):
            raise InterpError(f"avalanche dissipation must lie in (0, 1], got {self.dissipation!r}")
        if not (isinstance(self.seeds, int) and self.seeds >= 1):
            raise InterpError(f"avalanche seeds must be an integer >= 1, got {self.seeds!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Graph:
    """A Barabasi-Albert graph and the placement of N parameters on its nodes.

    ``adjacency``: symmetric 0/1 CSR matrix [N, N]; ``degree``: its row sums; ``placement``:
    node i holds parameter ``placement[i]``.
    """

    adjacency: sp.csr_matrix
    degree: np.ndarray
    placement: np.ndarray
    seed: int

    @property
    def n(self) -> int:
        return self.adjacency.shape[0]


@dataclass
class Toppling:
    """One relaxation: the stable stress, how often each site toppled, the excess passed and lost."""

    stress: np.ndarray  # final stress per node
    topplings: np.ndarray  # toppling events per node
    rounds: int
    released: float  # sum of all excess e_i passed on (before dissipation)
    dissipated: float  # dissipation * released

    @property
    def toppled(self) -> np.ndarray:
        return self.topplings > 0


@dataclass
class Avalanches:
    """The avalanches of one snapshot on one graph: sizes (distinct sites), largest first."""

    n: int
    sizes: np.ndarray
    topplings: int  # toppling events in all
    rounds: int
    released: float
    dissipated: float

    @property
    def s_max(self) -> int:
        return int(self.sizes[0]) if len(self.sizes) else 0

    @property
    def count(self) -> int:
        return len(self.sizes)


@dataclass
class AvalancheDimension:
    """D from s_max ~ N^D: per size N, the mean s_max over graphs; the fit and its per-seed spread."""

    D: float  # slope of log mean s_max on log N (NaN when some size had no avalanche)
    intercept: float
    r2: float
    D_seed_sd: float  # standard deviation of the per-seed slopes (NaN with one seed)
    sizes: list[int]  # N
    s_max: list[float]  # mean over seeds, per N
    s_max_per_seed: list[list[int]]  # [size][seed]
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GradientSnapshot:
    """The full-batch train gradient of one checkpoint, flattened (float64), and the loss there."""

    epoch: int
    grad: np.ndarray
    loss: float
    names: list[str]  # trainable parameters, in flattening order

    @property
    def n(self) -> int:
        return len(self.grad)


# ------------------------------------------------------------------------------------------ graph


def ba_graph(n: int, m: int = 3, seed: int = 0) -> Graph:
    """A seeded Barabasi-Albert graph on n nodes (Batagelj-Brandes, vectorised) and a random placement.

    Slot k = v m + i (edge i of node v) has source v and target ``M[r_k]``, r_k uniform in [0, 2k],
    where M lists the endpoints of all earlier slots (M[2k] = v, M[2k + 1] = the target): picking
    a uniform entry of M is picking a node with probability proportional to its degree. Odd
    entries are themselves targets, so r is chased back until it lands on an even (source) entry.
    """
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise InterpError(f"an avalanche graph needs at least 2 nodes, got {n!r}")
    if not isinstance(m, (int, np.integer)) or m < 1:
        raise InterpError(f"avalanche graph: m must be an integer >= 1, got {m!r}")
    n, m = int(n), int(m)
    rng_graph, rng_place = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    k = np.arange(n * m, dtype=np.int64)
    r = np.floor(rng_graph.random(n * m) * (2 * k + 1)).astype(np.int64)
    pos = r.copy()
    odd = pos % 2 == 1
    while odd.any():  # each step moves to a strictly earlier slot: terminates
        pos[odd] = r[(pos[odd] - 1) // 2]
        odd = pos % 2 == 1
    src, tgt = k // m, (pos // 2) // m
    keep = src != tgt
    a = sp.coo_matrix((np.ones(int(keep.sum())), (src[keep], tgt[keep])), shape=(n, n)).tocsr()
    a = (a + a.T).tocsr()
    a.data[:] = 1.0  # merge parallel edges
    a.sort_indices()
    degree = np.asarray(a.sum(axis=1)).ravel()
    return Graph(adjacency=a, degree=degree, placement=rng_place.permutation(n), seed=int(seed))


# --------------------------------------------------------------------------------------- toppling


def _check_grad(grad) -> np.ndarray:
    g = np.asarray(grad, dtype=np.float64).ravel()
    if g.size == 0:
        raise InterpError("avalanche: the gradient is empty")
    if g.size < 2:
        raise InterpError(f"avalanche: a gradient needs at least 2 entries, got {g.size}")
    if not np.isfinite(g).all():
        raise InterpError("avalanche: the gradient has non-finite entries")
    if not np.any(g):
        raise InterpError("avalanche: the gradient is all zeros (no stress to inject)")
    return g


def stress(grad) -> np.ndarray:
    """z = |g| / mean |g| (float64): the injected stress, mean 1 (module docstring, step 2)."""
    a = np.abs(_check_grad(grad))
    return a / a.mean()


def topple(
    z: np.ndarray,
    adjacency: sp.spmatrix,
    threshold: float = 1.5,
    dissipation: float = 0.1,
    tol: float = 1e-9,
    max_rounds: int = 100_000,
) -> Toppling:
    """Relax stress ``z`` on a graph: every site above threshold passes its excess on, in parallel rounds.

    One round: e = (z - threshold) on the unstable sites (0 elsewhere); z <- z - e + (1 - dissipation)
    A (e / k), k the degree (module docstring, step 3). Conserves stress up to dissipation.
    """
    z = np.array(z, dtype=np.float64)
    n = z.shape[0]
    if z.ndim != 1 or n == 0:
        raise InterpError("avalanche: stress must be a non-empty vector")
    a = sp.csr_matrix(adjacency)
    if a.shape != (n, n):
        raise InterpError(f"avalanche: adjacency is {a.shape}, stress has {n} sites")
    degree = np.asarray(a.sum(axis=1)).ravel()
    inv_k = np.divide(1.0, degree, out=np.zeros(n), where=degree > 0)
    counts = np.zeros(n, dtype=np.int64)
    limit = threshold * (1.0 + tol)
    released = 0.0
    rounds = 0
    over = z > limit
    while over.any():
        if rounds >= max_rounds:
            raise RuntimeError(f"avalanche relaxation did not settle in {max_rounds} rounds")
        e = np.where(over, z - threshold, 0.0)
        released += float(e.sum())
        z -= e
        z += (1.0 - dissipation) * (a @ (e * inv_k))
        counts += over
        rounds += 1
        over = z > limit
    return Toppling(stress=z, topplings=counts, rounds=rounds, released=released, dissipated=dissipation * released)


def avalanches(grad, graph: Graph, config: AvalancheConfig = AvalancheConfig()) -> Avalanches:
    """Inject ``grad`` as stress on ``graph``, relax, and split the toppled sites into avalanches."""
    z = stress(grad)
    if z.size != graph.n:
        raise InterpError(f"avalanche: the gradient has {z.size} entries, the graph {graph.n} nodes")
    t = topple(z[graph.placement], graph.adjacency, config.threshold, config.dissipation, config.tol, config.max_rounds)
    idx = np.flatnonzero(t.toppled)
    if idx.size:
        sub = graph.adjacency[idx][:, idx]
        _, labels = connected_components(sub, directed=False)
        sizes = np.sort(np.bincount(labels))[::-1]
    else:
        sizes = np.zeros(0, dtype=np.int64)
    return Avalanches(
        n=graph.n,
        sizes=sizes,
        topplings=int(t.topplings.sum()),
        rounds=t.rounds,
        released=t.released,
        dissipated=t.dissipated,
    )


def _seed_list(config: AvalancheConfig, seed: int) -> list[int]:
    return [seed * 1000 + i for i in range(config.seeds)]


def s_max(
    grad,
    config: AvalancheConfig = AvalancheConfig(),
    seed: int = 0,
    graphs: Optional[dict] = None,
) -> list[int]:
    """The largest avalanche of ``grad`` on each of ``config.seeds`` graphs (one BA graph + placement each).

    ``graphs``: an optional cache {(N, m, graph seed): Graph}, filled as graphs are built, so that a
    study reuses one set of graphs per size across checkpoints (then D(t) moves with the gradients only).
    """
    g = _check_grad(grad)
    out = []
    for s in _seed_list(config, seed):
        key = (g.size, config.m, s)
        graph = graphs.get(key) if graphs is not None else None
        if graph is None:
            graph = ba_graph(g.size, config.m, s)
            if graphs is not None:
                graphs[key] = graph
        out.append(avalanches(g, graph, config).s_max)
    return out


# -------------------------------------------------------------------------------------- dimension


def _slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss if ss > 0 else float("nan")
    return float(slope), float(intercept), r2


def fit_dimension(sizes: Sequence[int], s_max_per_seed: Sequence[Sequence[int]], config: Optional[dict] = None):
    """D = slope of log mean s_max on log N (module docstring, step 5), from s_max per size and seed."""
    n = np.asarray(sizes, dtype=np.float64)
    if n.size < 2 or np.unique(n).size < 2:
        raise InterpError(f"avalanche dimension needs at least 2 distinct model sizes, got {list(map(int, n))}")
    per = np.asarray(s_max_per_seed, dtype=np.float64)
    if per.ndim != 2 or per.shape[0] != n.size:
        raise InterpError("avalanche dimension: s_max must hold one row of seeds per size")
    mean = per.mean(axis=1)
    nan = float("nan")
    if np.all(mean > 0):
        D, b, r2 = _slope(np.log(n), np.log(mean))
    else:
        D, b, r2 = nan, nan, nan
    seed_D = [_slope(np.log(n), np.log(col))[0] for col in per.T if np.all(col > 0)]
    sd = float(np.std(seed_D, ddof=1)) if len(seed_D) > 1 else nan
    return AvalancheDimension(
        D=D,
        intercept=b,
        r2=r2,
        D_seed_sd=sd,
        sizes=[int(x) for x in n],
        s_max=[float(x) for x in mean],
        s_max_per_seed=[[int(v) for v in row] for row in per],
        config=dict(config or {}),
    )


def dimension(
    grads: Sequence, config: AvalancheConfig = AvalancheConfig(), seed: int = 0, graphs: Optional[dict] = None
) -> AvalancheDimension:
    """D across model sizes: one gradient snapshot per model (their lengths are the sizes N)."""
    grads = [_check_grad(g) for g in grads]
    if len(grads) < 2:
        raise InterpError(f"avalanche dimension needs gradients of at least 2 model sizes, got {len(grads)}")
    sizes = [g.size for g in grads]
    per = [s_max(g, config, seed, graphs) for g in grads]
    return fit_dimension(sizes, per, config.to_dict())


def subsample_dimension(
    grad, sizes: Sequence[int], config: AvalancheConfig = AvalancheConfig(), seed: int = 0
) -> AvalancheDimension:
    """D over random subsamples of one model's parameters (sizes n < N): a null, not a measurement.

    A random subsample is an i.i.d. draw from the model's |g| distribution, so D -> 1 whatever the
    model (module docstring); kept to show why the study scales across widths instead.
    """
    g = _check_grad(grad)
    sizes = [int(s) for s in sizes]
    if len(set(sizes)) < 2:
        raise InterpError(f"avalanche dimension needs at least 2 distinct subsample sizes, got {sizes}")
    if min(sizes) < 2 or max(sizes) > g.size:
        raise InterpError(f"subsample sizes must lie in [2, {g.size}], got {sizes}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    per = []
    for n in sizes:
        row = []
        for s in _seed_list(config, seed):
            sub = g[rng.choice(g.size, size=n, replace=False)]
            row.append(avalanches(sub, ba_graph(n, config.m, s), config).s_max if np.any(sub) else 0)
        per.append(row)
    return fit_dimension(sizes, per, config.to_dict())


def gaussian_null(
    sizes: Iterable[int] = (1000, 2000, 4000, 8000, 16000), config: AvalancheConfig = AvalancheConfig(), seed: int = 0
) -> AvalancheDimension:
    """D of i.i.d. N(0, 1) gradients: REFERENCE §7's null, D ~ 1 (one draw per size and seed)."""
    sizes = [int(s) for s in sizes]
    if len(set(sizes)) < 2:
        raise InterpError(f"avalanche dimension needs at least 2 distinct sizes, got {sizes}")
    if min(sizes) < 2:
        raise InterpError(f"an avalanche graph needs at least 2 nodes, got sizes {sizes}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    per = [
        [avalanches(rng.standard_normal(n), ba_graph(n, config.m, s), config).s_max for s in _seed_list(config, seed)]
        for n in sizes
    ]
    return fit_dimension(sizes, per, config.to_dict())


# ------------------------------------------------------------------------------------ a run's gradient


def gradient_snapshot(run, epoch: int) -> GradientSnapshot:
    """Full-batch train gradient of the loss at checkpoint ``epoch`` of ``run`` (an ``interp.store.Run``).

    The trainer's loss (float64 log-softmax cross-entropy over the run's train pairs) at '=' through
    ``interp.model.fast.eq_logits``; gradients of the trainable parameters, concatenated in
    ``named_parameters`` order, as float64.
    """
    import torch

    from interp.analysis.losses import run_loss_and_accuracy
    from interp.model.fast import all_operands, eq_logits, run_params
    from interp.tasks import labels

    model = run.load_model(epoch)
    cfg = run.config
    train = run.split.train
    a, b = all_operands(cfg.p)
    y = labels(cfg.task, cfg.p)[train]
    named = [(n, prm) for n, prm in model.named_parameters() if prm.requires_grad]
    with torch.enable_grad():
        logits = eq_logits(run_params(model), model.cfg, a[train][None], b[train][None])
        loss, _ = run_loss_and_accuracy(logits, y[None])
        grads = torch.autograd.grad(loss[0], [prm for _, prm in named])
    flat = torch.cat([g.reshape(-1) for g in grads]).double().cpu().numpy()
    return GradientSnapshot(epoch=int(epoch), grad=flat, loss=float(loss[0].detach()), names=[n for n, _ in named])
