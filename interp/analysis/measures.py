"""Progress measures of one checkpoint (REFERENCE §2-3; Nanda et al. 2023).

Everything here works on ONE model (or its activations / logits) in memory and returns
tensors or small dataclasses; reading runs and writing tables lives in ``interp.analysis``.

Measures, in the papers' words:

* ``neuron_fve``: for every MLP neuron and frequency k, the fraction of the neuron's
  (centred, last-position) activation variance over all inputs that lies in the 2D Fourier
  block {0, cos k, sin k}^2 minus the constant-constant term (REFERENCE §2). Each neuron's
  frequency is the argmax; it is *clearly assigned* when that FVE exceeds ``KEY_FVE_THRESHOLD``.
* ``key_frequencies``: the rule of REFERENCE §2, made concrete (see ``key_frequencies``),
  cross-checked against the embedding's Fourier norms (``embedding_frequencies``).
* ``restricted_loss`` / ``excluded_loss`` (all key frequencies, and each one alone).
* ``gini`` of the Fourier-component norms of W_E and W_L (Hurley & Rickard 2009).
* ``sum_squared_weights`` (total and per parameter).
* ``cos_coefficients``: the amplitude of each cos(w_k(a+b-c)) term in the logits.
* ``logit_margins`` and ``margin_ratios``: each input's margin, alone and over its ``logit_rms``;
  ``interference_margin``: the margin a set of key frequencies allows in those units (their
  near-agreement at some d != 0).
* train / test loss and accuracy (``interp.analysis.losses``; a run's analysis reads them from the
  trainer's metrics instead).

All Fourier work happens in the task's group coordinates (``interp.analysis.fourier.frame``), so add,
sub, mul and div are analysed alike; the basis is ``interp.analysis.fourier.fourier_basis``, nothing else.

Speed and precision (``progress_measures`` is called on every checkpoint of a run):

* The forward pass is the one fast path, ``interp.model.fast.eq_activations`` (float32, only the
  '=' position, attention and MLP input from per-token tables). Inputs go through it in a few
  chunks whose activations are reduced to sufficient statistics (``NeuronSums``) at once.
* Neuron FVE never forms the 2D spectrum: the energy of block {0, cos k, sin k}^2 is the energy
  at frequency k of four 1D signals of a neuron, its row sums, column sums, and sums along the
  anti-diagonals (i + j = m) and diagonals (i - j = m), because {cos k, sin k} x {cos k, sin k}
  is spanned by cos/sin k(a+b) and cos/sin k(a-b) (see ``_block_energy``).
* Projections of the logits onto cos_k(a+b), sin_k(a+b) depend only on the sums of the logits
  along anti-diagonals, so restricted logits are an [n, n] table (one row per value of a+b).
* float64 is kept where the result feeds a log-softmax or a loss: the late-training losses reach
  1e-7, below float32's resolution next to 1 (REFERENCE §1). Cross-entropy is the one definition
  of ``interp.analysis.losses`` (float64 log-softmax, as in training); the anti-diagonal logit sums
  and the restricted / excluded logits are float64; weights-only measures (norms, Gini, sum of
  squares) are float64 because they are cheap. Activations and logits themselves are float32, as
  in training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.analysis.fourier import (
    Frame,
    check_frequencies,
    fft1d,
    fourier_basis,
    frame,
    frequency_norms,
    frequency_of_row,
    frequency_rows,
)
from interp.analysis.losses import correct, cross_entropy
from interp.errors import InterpError
from interp.model.fast import eq_activations, run_params
from interp.tasks import Split, labels

# A neuron is "clearly assigned" to its frequency when that frequency explains more than 85% of
# its variance (Nanda et al. 2023; REFERENCE §1-2). The progress measure frac_neurons_fve counts them.
CLEAR_FVE_THRESHOLD = 0.85
# The key-frequency rule counts neurons above a lower bar. Measured: in randomly initialised models
# no neuron exceeds 0.18 (p = 113) or 0.52 (p = 23, 31); in the legacy fixture a whole cluster of a
# real key frequency (k = 3, 88 neurons, its excluded loss 0.35) sits at FVE ~0.77 because its
# ReLU harmonic 2k = 6 is itself a key frequency, so 0.85 would miss it (restricted loss 0.21
# instead of 0.0036). 0.6 lies between the two with margin on both sides.
KEY_FVE_THRESHOLD = 0.6
# A frequency is key when at least max(MIN_KEY_NEURONS, MIN_KEY_NEURON_FRACTION * d_mlp)
# neurons are clearly assigned to it: one stray neuron is not a circuit.
MIN_KEY_NEURONS = 2
MIN_KEY_NEURON_FRACTION = 0.01
# Cross-check: an embedding frequency is one whose squared Fourier norm in W_E is at least
# this many times the mean over the non-constant frequencies (a random embedding stays near 1).
EMBED_NORM_RATIO = 3.0
# A neuron whose activation varies by less than this fraction of its squared mean is treated
# as constant (FVE 0): its centred variance would be float32 rounding noise.
_CONSTANT_NEURON_RTOL = 1e-6

# Bump when any definition above or in this module changes: saved analysis tables are recomputed.
DEFINITIONS_VERSION = 2  # 2: interference_margin and train_margin_ratio

KEY_RULE = (
    f"k is a key frequency when at least max({MIN_KEY_NEURONS}, ceil({MIN_KEY_NEURON_FRACTION} * d_mlp)) neurons "
    f"have k as their best frequency with FVE > {KEY_FVE_THRESHOLD} (FVE: share of the neuron's centred variance "
    "in the 2D Fourier block {0, cos k, sin k}^2 minus const-const, over all inputs); cross-check: frequencies "
    f"whose squared W_E Fourier norm is >= {EMBED_NORM_RATIO}x the mean over frequencies"
)

# Inputs per call of the fast path in ``_sweep``: each call rebuilds the fast path's per-token tables
# (~1 ms at canonical size), so a few large chunks; 4096 inputs of activations (8 MB) still reduce quickly.
_CHUNK_PAIRS = 4096


# ----------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Which inputs the fused forward evaluates, in which order, and their labels.

    The grid is [len(row_tokens), len(col_tokens)] = [p, p] inputs (a, b). Its top-left
    [n, n] block is the task's group grid in group order (row i holds a = frame.a_tokens[i],
    column j holds b = frame.b_tokens[j]), so Fourier work needs no reindexing; for mul/div the
    token 0 comes last in each axis (it is not in the multiplicative group).
    """

    task: str
    p: int
    frame: Frame
    row_tokens: Int[Tensor, "p"]
    col_tokens: Int[Tensor, "p"]
    y: Int[Tensor, "p p"]  # answer token of each grid input
    train: Optional[torch.BoolTensor]  # [p, p] grid mask of the training pairs (None: no split)
    test: Optional[torch.BoolTensor]

    @property
    def n(self) -> int:
        return self.frame.n

    @property
    def group_is_identity(self) -> bool:
        """True when output c_tokens are 0..n-1 in order (add, sub): no reindexing of outputs."""
        return bool(torch.equal(self.frame.c_tokens, torch.arange(self.p)))


def make_layout(task: str, p: int, split: Optional[Split] = None) -> Layout:
    """The input grid of ``task`` mod ``p`` (see ``Layout``), with the split's masks if given."""
    fr = frame(task, p)
    rest_a = torch.tensor(sorted(set(range(p)) - set(fr.a_tokens.tolist())), dtype=torch.long)
    rest_b = torch.tensor(sorted(set(range(p)) - set(fr.b_tokens.tolist())), dtype=torch.long)
    rows = torch.cat([fr.a_tokens, rest_a])
    cols = torch.cat([fr.b_tokens, rest_b])
    pair = rows[:, None] * p + cols[None, :]
    y = labels(task, p)[pair]
    train = test = None
    if split is not None:
        flat_tr = torch.zeros(p * p, dtype=torch.bool)
        flat_tr[split.train] = True
        flat_te = torch.zeros(p * p, dtype=torch.bool)
        flat_te[split.test] = True
        train, test = flat_tr[pair], flat_te[pair]
    return Layout(task, p, fr, rows, cols, y, train, test)


# ----------------------------------------------------------------------------- forward


@dataclass
class NeuronSums:
    """Sufficient statistics of the neurons' activations X[i, j] over the group grid.

    row[i] = sum_j X[i, j]; col[j] = sum_i X[i, j]; anti[m] = sum_{i+j=m} X; diag[m] = sum_{i-j=m} X
    (indices mod n, group coordinates); total: sum of X over all n^2 inputs; total_sq: sum of
    (X - shift)^2, where ``shift`` (per neuron, close to its mean) keeps the centred variance
    total_sq - (total - N shift)^2 / N free of cancellation when accumulated in float32.
    """

    row: Float[Tensor, "n d_mlp"]
    col: Float[Tensor, "n d_mlp"]
    anti: Float[Tensor, "n d_mlp"]
    diag: Float[Tensor, "n d_mlp"]
    total: Float[Tensor, "d_mlp"]
    total_sq: Float[Tensor, "d_mlp"]
    shift: Float[Tensor, "d_mlp"]


@lru_cache(maxsize=8)
def _diag_index(n: int) -> tuple[Tensor, Tensor]:
    i = torch.arange(n)
    return ((i[:, None] + i[None, :]) % n).reshape(-1), ((i[:, None] - i[None, :]) % n).reshape(-1)


@torch.no_grad()
def _sweep(model, layout: Layout, keep_post: bool = False, chunk_pairs: int = _CHUNK_PAIRS):
    """The model on the whole input grid, through the one fast path (``interp.model.fast``).

    Returns (logits [p, p, p] float32 in grid order, NeuronSums over the group block, post)
    where post is the [n, n, d_mlp] group-block activations if ``keep_post`` else None.
    Activations are reduced chunk by chunk of grid rows, while they are still in cache.
    """
    if model.cfg.p != layout.p:
        raise ValueError(f"model has p={model.cfg.p} but the layout is for p={layout.p}")
    P, cfg = run_params(model), model.cfg
    p, n, M = layout.p, layout.n, cfg.d_mlp
    dev = P["embed.W_E"].device
    rows, cols = layout.row_tokens.to(dev), layout.col_tokens.to(dev)
    idx_anti, idx_diag = _diag_index(n)
    dtype = P["embed.W_E"].dtype
    logits = torch.empty(p, p, p, dtype=dtype)
    row_s = torch.empty(n, M, dtype=dtype)
    col_s = torch.zeros(n, M, dtype=dtype)
    anti = torch.zeros(n, M, dtype=dtype)
    diag = torch.zeros(n, M, dtype=dtype)
    total_sq = torch.zeros(M, dtype=torch.float64)
    post_keep = torch.empty(n, n, M, dtype=dtype) if keep_post else None
    step = max(1, chunk_pairs // p)
    for s in range(0, p, step):
        a = rows[s : s + step]
        r = a.shape[0]
        acts = eq_activations(P, cfg, a.repeat_interleave(p)[None], cols.repeat(r)[None])
        post = acts.post[0].reshape(r, p, M).cpu()
        logits[s : s + r] = acts.logits[0].reshape(r, p, p).cpu()
        g = min(r, max(0, n - s))  # rows of this chunk inside the group block
        if g:
            X = post[:g, :n]  # [g, n, M]
            Xf = X.reshape(g * n, M) if n == p else X.reshape(g * n, M).contiguous()
            anti.index_add_(0, idx_anti[s * n : (s + g) * n], Xf)
            diag.index_add_(0, idx_diag[s * n : (s + g) * n], Xf)
            row_s[s : s + g] = X.sum(1)
            col_s += X.sum(0)
            if s == 0:
                shift = Xf.mean(0)
            total_sq += (Xf - shift).square_().sum(0).double()
            if keep_post:
                post_keep[s : s + g] = X
    row_d = row_s.double()
    sums = NeuronSums(row_d, col_s.double(), anti.double(), diag.double(), row_d.sum(0), total_sq, shift.double())
    return logits, sums, post_keep


# ----------------------------------------------------------------------------- activations API


@dataclass
class AllPairs:
    """Last-position activations and logits on every input (fast path, float32).

    ``post``: MLP activations (``blocks.0.mlp.hook_post`` at '=') on the group grid, [n, n, d_mlp],
    group order (row i: a = frame.a_tokens[i]; column j: b = frame.b_tokens[j]).
    ``logits``: [p^2, p] in row-major pair order (pair = a * p + b), like ``interp.model.all_logits``.
    """

    frame: Frame
    post: Float[Tensor, "n n d_mlp"]
    logits: Float[Tensor, "pairs p"]


def all_pair_activations(model) -> AllPairs:
    """MLP activations (group order) and logits (row-major) of ``model`` on all p^2 inputs (its task's frame)."""
    lay = make_layout(model.cfg.task, model.cfg.p)
    grid, _, post = _sweep(model, lay, keep_post=True)
    p = lay.p
    # grid order -> row-major: invert the row / column token permutations
    inv_r = torch.empty(p, dtype=torch.long)
    inv_r[lay.row_tokens] = torch.arange(p)
    inv_c = torch.empty(p, dtype=torch.long)
    inv_c[lay.col_tokens] = torch.arange(p)
    logits = grid.index_select(0, inv_r).index_select(1, inv_c).reshape(p * p, p)
    return AllPairs(lay.frame, post, logits)


def group_logits(logits: Float[Tensor, "pairs p"], task: str, p: int) -> Float[Tensor, "n n n"]:
    """Row-major logits [p^2, p] -> [n(i), n(j), n(c)] in group order (pairs and answers)."""
    fr = frame(task, p)
    return fr.logits_to_group(logits).reshape(fr.n, fr.n, fr.n)


# ----------------------------------------------------------------------------- neuron FVE


def _block_energy(sums: NeuronSums, n: int) -> Float[Tensor, "k1 d_mlp"]:
    """Energy of every neuron in the 2D Fourier block {0, cos k, sin k}^2 minus const-const, per k.

    The block (without const-const) is spanned by the orthonormal functions
    const (x) {cos k, sin k}, {cos k, sin k} (x) const, cos/sin k(a+b) and cos/sin k(a-b);
    their coefficients are the frequency-k coefficients (in ``fourier_basis``) of the column
    sums, row sums, anti-diagonal sums and diagonal sums, each divided by sqrt(n). For the
    Nyquist frequency of even n the two diagonal families coincide and count once.
    """
    e = frequency_norms(fft1d(sums.row)).pow(2)
    e = e + frequency_norms(fft1d(sums.col)).pow(2)
    e = e + frequency_norms(fft1d(sums.anti)).pow(2)
    ed = frequency_norms(fft1d(sums.diag)).pow(2)
    if n % 2 == 0:
        ed[n // 2] = 0
    e = (e + ed) / n
    e[0] = 0  # the constant frequency holds no centred variance
    return e


def _fve_from_sums(sums: NeuronSums, n: int) -> Float[Tensor, "k1 d_mlp"]:
    energy = _block_energy(sums, n)
    N = n * n
    centred = sums.total_sq - (sums.total - N * sums.shift).pow(2) / N
    scale = sums.total_sq + N * sums.shift.pow(2)  # ~ sum of X^2
    constant = centred <= _CONSTANT_NEURON_RTOL * scale.clamp_min(1e-300)
    # rounding can leave the centred energy a hair below the sum of its parts
    centred = torch.maximum(centred, energy.sum(0))
    fve = energy / centred.clamp_min(1e-300)
    fve[:, constant] = 0
    return fve


def neuron_sums(post: Float[Tensor, "n n d_mlp"]) -> NeuronSums:
    """``NeuronSums`` of activations already in group order (see ``all_pair_activations``)."""
    n = post.shape[0]
    if post.shape[1] != n:
        raise ValueError(f"neuron activations must be [n, n, d_mlp] over the group grid, got {tuple(post.shape)}")
    X = post.double()
    ia, idg = _diag_index(n)
    flat = X.reshape(n * n, -1)
    M = flat.shape[1]
    return NeuronSums(
        row=X.sum(1),
        col=X.sum(0),
        anti=torch.zeros(n, M, dtype=X.dtype).index_add_(0, ia, flat),
        diag=torch.zeros(n, M, dtype=X.dtype).index_add_(0, idg, flat),
        total=flat.sum(0),
        total_sq=flat.pow(2).sum(0),
        shift=torch.zeros(M, dtype=X.dtype),
    )


def neuron_fve(post: Float[Tensor, "n n d_mlp"]) -> Float[Tensor, "k1 d_mlp"]:
    """FVE[k, neuron]: fraction of each neuron's centred variance in frequency k (REFERENCE §2).

    ``post`` is the neuron activations over the n x n group grid (group order). Row k = 0 is 0;
    rows 1..n//2 are the frequencies. Constant (e.g. dead) neurons get 0 everywhere.
    """
    return _fve_from_sums(neuron_sums(post), post.shape[0])


@dataclass
class NeuronClusters:
    """Each neuron's frequency (argmax of its FVE over k) and that FVE (REFERENCE §2).

    ``frequency[i]`` is 0 for a constant (e.g. dead) neuron.
    """

    frequency: Int[Tensor, "d_mlp"]
    fve: Float[Tensor, "d_mlp"]
    fve_by_freq: Float[Tensor, "k1 d_mlp"]

    def sizes(self, threshold: float = KEY_FVE_THRESHOLD) -> Int[Tensor, "k1"]:
        """sizes[k]: neurons of frequency k with FVE above ``threshold``."""
        return torch.bincount(self.frequency[self.fve > threshold], minlength=self.fve_by_freq.shape[0])

    def frac_above(self, threshold: float = CLEAR_FVE_THRESHOLD) -> float:
        """Fraction of neurons whose FVE exceeds ``threshold`` (the progress measure uses 0.85)."""
        return float((self.fve > threshold).double().mean())


def neuron_clusters(fve_by_freq: Float[Tensor, "k1 d_mlp"]) -> NeuronClusters:
    """Assign every neuron to its best frequency (REFERENCE §2)."""
    fve, freq = fve_by_freq.max(dim=0)
    freq = torch.where(fve > 0, freq, torch.zeros_like(freq))
    return NeuronClusters(freq, fve, fve_by_freq)


def min_key_neurons(d_mlp: int) -> int:
    """Smallest cluster that makes a key frequency: max(MIN_KEY_NEURONS, 1% of d_mlp)."""
    return max(MIN_KEY_NEURONS, math.ceil(MIN_KEY_NEURON_FRACTION * d_mlp))


def key_frequencies(
    clusters: NeuronClusters, threshold: float = KEY_FVE_THRESHOLD, min_neurons: Optional[int] = None
) -> list[int]:
    """The key frequencies: the rule of this toolkit (REFERENCE §2; ``KEY_RULE``).

    k is a key frequency when at least ``min_neurons`` neurons (default ``min_key_neurons(d_mlp)``)
    have k as their frequency with FVE above ``threshold`` (default ``KEY_FVE_THRESHOLD``).
    Sorted ascending.
    """
    m = min_key_neurons(clusters.frequency.shape[0]) if min_neurons is None else min_neurons
    sizes = clusters.sizes(threshold)
    return [k for k in range(1, sizes.shape[0]) if int(sizes[k]) >= m]


# ----------------------------------------------------------------------------- weights


def embedding_fourier_of(
    W_E: Float[Tensor, "... d_vocab d_model"], task: str, p: int
) -> Float[Tensor, "... n d_model"]:
    """F @ W_E[a tokens in group order]: the embedding in the Fourier basis (REFERENCE §2), for one
    embedding or a stack of them (leading run axes)."""
    fr = frame(task, p)
    return fft1d(W_E.detach().double().index_select(-2, fr.a_tokens.to(W_E.device)), dim=-2)


def neuron_logit_fourier_of(
    W_out: Float[Tensor, "... d_mlp d_model"], W_U: Float[Tensor, "... d_model d_vocab_out"], task: str, p: int
) -> Float[Tensor, "... n d_mlp"]:
    """W_L = W_out @ W_U over the outputs in group order, in the Fourier basis: [basis row, neuron]
    (REFERENCE §2), for one model's weights or a stack of them (leading run axes)."""
    fr = frame(task, p)
    W_L = (W_out.detach().double() @ W_U.detach().double()).index_select(-1, fr.c_tokens.to(W_out.device))
    return fft1d(W_L.transpose(-1, -2), dim=-2)


def embedding_fourier(model) -> Float[Tensor, "n d_model"]:
    """``embedding_fourier_of`` one model."""
    return embedding_fourier_of(model.W_E, model.cfg.task, model.cfg.p)


def neuron_logit_fourier(model) -> Float[Tensor, "n d_mlp"]:
    """``neuron_logit_fourier_of`` one model."""
    return neuron_logit_fourier_of(model.W_out, model.W_U, model.cfg.task, model.cfg.p)


def fourier_norms(coefs: Float[Tensor, "n d"]) -> tuple[Float[Tensor, "n"], Float[Tensor, "k1"]]:
    """(norm per basis row, norm per frequency) of Fourier coefficients [basis row, feature]."""
    return coefs.norm(dim=1), frequency_norms(coefs).norm(dim=1)


def ginis(x: Float[Tensor, "... N"]) -> Float[Tensor, "..."]:
    """Gini coefficient of non-negative values along the last axis (Hurley & Rickard 2009; REFERENCE §3).

    Sort c ascending; G = 1 - 2 sum_k (c_k / ||c||_1) (N - k + 1/2) / N, k = 1..N.
    0 for equal values, (N-1)/N for a single non-zero value; 0 where all values are 0 (or N = 0).
    """
    c = x.detach().double().sort(-1).values
    N = c.shape[-1]
    s = c.sum(-1, keepdim=True)
    k = torch.arange(1, N + 1, dtype=torch.float64, device=c.device)
    g = 1 - 2 * ((c / s) * (N - k + 0.5) / N).sum(-1)
    return torch.where(s[..., 0] > 0, g, torch.zeros_like(g))


def gini(x: Float[Tensor, "N"]) -> float:
    """``ginis`` of all values of ``x`` as one vector."""
    return float(ginis(x.flatten()))


def embedding_frequencies(freq_norms: Float[Tensor, "k1"], ratio: float = EMBED_NORM_RATIO) -> list[int]:
    """Cross-check of the key frequencies from the embedding alone.

    Frequencies k >= 1 whose squared norm in W_E's Fourier transform is at least ``ratio``
    times the mean squared norm over all non-constant frequencies.
    """
    sq = freq_norms[1:].double().pow(2)
    if sq.numel() == 0 or float(sq.mean()) <= 0:
        return []
    return [int(k) + 1 for k in torch.nonzero(sq >= ratio * sq.mean()).flatten()]


def sum_squared_weights(model_or_state) -> dict[str, float]:
    """Sum of squared weights per parameter (TransformerLens names) and ``total`` (REFERENCE §3)."""
    items = model_or_state.items() if isinstance(model_or_state, dict) else model_or_state.named_parameters()
    out = {k: float(v.detach().double().pow(2).sum()) for k, v in items}
    out["total"] = float(sum(out.values()))
    return out


# ----------------------------------------------------------------------------- logits


def anti_diagonal_sums(logits: Float[Tensor, "n n n"]) -> Float[Tensor, "n n"]:
    """S[m, c] = sum over inputs with i + j = m (mod n) of logit c, in float64 (group coordinates).

    Every projection onto cos_k(a+b) / sin_k(a+b) (and onto cos w(a+b-c)) depends on the logits
    only through S, because those directions are functions of a + b.
    """
    n = logits.shape[0]
    ia, _ = _diag_index(n)
    return torch.zeros(n, logits.shape[2], dtype=torch.float64).index_add_(0, ia, logits.reshape(n * n, -1).double())


def _key_rows(n: int, freqs: Iterable[int], const: bool) -> list[int]:
    rows = [0] if const else []
    for k in check_frequencies(n, freqs):
        rows += frequency_rows(n, k)
    return rows


def trig_projection(S: Float[Tensor, "n n"], freqs: Iterable[int], const: bool) -> Float[Tensor, "n n"]:
    """Projection of the logits onto span{cos_k(a+b), sin_k(a+b) : k in freqs} (+ constant).

    Returns P[m, c]: the projected logit c of every input with a + b = m. The span of functions
    of a + b is isometric to functions of m (scaled by sqrt n), so this is the 1D projection of the
    anti-diagonal means onto the basis rows of ``freqs`` (and row 0 when ``const``: the per-output
    mean over all inputs).
    """
    n = S.shape[0]
    Fb = fourier_basis(n).index_select(0, torch.tensor(_key_rows(n, freqs, const), dtype=torch.long))
    return Fb.T @ (Fb @ (S / n))


def _group_targets(n: int) -> Int[Tensor, "n n"]:
    i = torch.arange(n)
    return (i[:, None] + i[None, :]) % n


def restricted_loss_from_sums(
    S: Float[Tensor, "n n"], freqs: Sequence[int], weights: Optional[Float[Tensor, "n"]] = None
) -> float:
    """Restricted loss (REFERENCE §3) from anti-diagonal logit sums.

    Restricted logits keep only the components along cos_k(a+b), sin_k(a+b) for k in ``freqs``
    plus each output's mean; they depend on the input only through m = a + b, and the answer is m,
    so the loss over inputs is a weighted mean over m of CE(P[m], m). ``weights[m]``: how many of
    the evaluated inputs have a + b = m (default: all n^2 inputs, n per m).
    """
    n = S.shape[0]
    P = trig_projection(S, freqs, const=True)
    ce = cross_entropy(P, torch.arange(n))
    if weights is None:
        return float(ce.mean())
    w = weights.double()
    return float((ce * w).sum() / w.sum())


def restricted_loss(logits: Float[Tensor, "n n n"], freqs: Sequence[int], pair_mask: Optional[Tensor] = None) -> float:
    """Restricted loss on the group-ordered logits [n, n, n] (all inputs, or those in ``pair_mask``)."""
    return _restricted_masked(anti_diagonal_sums(logits), freqs, pair_mask)


def _restricted_masked(S: Tensor, freqs: Sequence[int], pair_mask: Optional[Tensor]) -> float:
    n = S.shape[0]
    w = None
    if pair_mask is not None:
        w = torch.zeros(n, dtype=torch.float64).index_add_(
            0, _group_targets(n).reshape(-1), pair_mask.reshape(-1).double()
        )
    return restricted_loss_from_sums(S, freqs, w)


def _excluded_losses(
    logits: Float[Tensor, "n n n"],
    S: Float[Tensor, "n n"],
    freq_sets: Sequence[Sequence[int]],
    pair_mask: Optional[Tensor],
) -> list[float]:
    n = S.shape[0]
    tgt = _group_targets(n).reshape(-1)
    flat = logits.reshape(n * n, n)
    if pair_mask is not None:
        sel = pair_mask.reshape(-1)
        flat, tgt = flat[sel], tgt[sel]
    if flat.shape[0] == 0:
        return [float("nan")] * len(freq_sets)
    out = []
    for fs in freq_sets:
        # P is float64 (exact projection); the difference goes back to the logits' dtype, whose
        # rounding (~1e-7 of a logit) moves the loss by ~1e-6 of itself.
        P = trig_projection(S, fs, const=False).to(flat.dtype)
        out.append(float(cross_entropy(flat - P.index_select(0, tgt), tgt).mean()))
    return out


def excluded_loss(logits: Float[Tensor, "n n n"], freqs: Sequence[int], pair_mask: Optional[Tensor] = None) -> float:
    """Excluded loss (REFERENCE §3): the logits minus their cos_k(a+b), sin_k(a+b) components for
    k in ``freqs`` (the per-output mean stays), cross-entropy on the inputs in ``pair_mask`` (the
    training pairs, in the paper), in group order."""
    return _excluded_losses(logits, anti_diagonal_sums(logits), [list(freqs)], pair_mask)[0]


def cos_coefficients_from_sums(S: Float[Tensor, "n n"]) -> Float[Tensor, "k1"]:
    """alpha_k: least-squares amplitude of cos(w_k(a+b-c)) in the logits, k = 0..n//2 (k = 0: 0).

    cos w(m - c) = cos wm cos wc + sin wm sin wc, so <L, cos w(a+b-c)> is the sum of the
    (cos k, cos k) and (sin k, sin k) entries of F S F^T times n/2, and ||cos w(a+b-c)||^2 = n^3/2
    (n^3 at the Nyquist frequency); both give alpha_k = (those entries) / n^2.
    """
    n = S.shape[0]
    Fb = fourier_basis(n)
    D = ((Fb @ S) * Fb).sum(1)  # diagonal of F S F^T
    a = torch.zeros(n // 2 + 1, dtype=torch.float64).index_add_(0, frequency_of_row(n), D) / (n * n)
    a[0] = 0
    return a


def cos_fve(logits: Float[Tensor, "n n n"], freqs: Sequence[int], alpha: Optional[Tensor] = None) -> float:
    """Fraction of the logits' variance (each input's logits centred over outputs) explained by
    sum_{k in freqs} alpha_k cos(w_k(a+b-c)) (the terms are orthogonal to each other and to
    per-input constants). ``alpha``: precomputed ``cos_coefficients`` of these logits."""
    n = logits.shape[0]
    a = cos_coefficients(logits) if alpha is None else alpha
    # a ratio, so float32 squares summed in float64 suffice
    row = logits.sum(-1).double()
    var = float(logits.square().sum().double() - row.square().sum() / n)
    if var <= 0:
        return 0.0
    expl = 0.0
    for k in freqs:
        norm_sq = n**3 if (n % 2 == 0 and k == n // 2) else n**3 / 2
        expl += float(a[int(k)]) ** 2 * norm_sq
    return expl / var


def cos_coefficients(logits: Float[Tensor, "n n n"]) -> Float[Tensor, "k1"]:
    """alpha_k of every frequency for group-ordered logits [n, n, n] (see ``cos_coefficients_from_sums``)."""
    return cos_coefficients_from_sums(anti_diagonal_sums(logits))


def logit_margins(logits: Float[Tensor, "N c"], target: Int[Tensor, "N"]) -> Float[Tensor, "N"]:
    """Each input's margin: its target's logit minus the largest other logit (> 0: correct, unique)."""
    right = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, target.unsqueeze(-1), float("-inf"))
    return right - others.amax(-1)


def logit_rms(logits: Float[Tensor, "N c"]) -> Float[Tensor, "N"]:
    """Each input's logit scale: the RMS of its logits about their mean over outputs (float64)."""
    x = logits.double()
    return (x - x.mean(-1, keepdim=True)).square().mean(-1).sqrt()


def margin_ratios(logits: Float[Tensor, "N c"], target: Int[Tensor, "N"]) -> Float[Tensor, "N"]:
    """Each input's ``logit_margins`` over its ``logit_rms``: the units of ``interference_margin``."""
    return logit_margins(logits.double(), target) / logit_rms(logits)


@dataclass(frozen=True)
class InterferenceMargin:
    """How far the correct output stands above its nearest rival in idealised logits (``interference_margin``)."""

    gap: float  # (l(0) - max_{d != 0} l(d)) / RMS over d of l
    rival: int  # that largest d in 1..n//2 (outputs c = (a + b) -+ d in group coordinates tie with it)


def interference_margin(n: int, freqs: Sequence[int], alpha: Optional[Tensor] = None) -> InterferenceMargin:
    """The margin a set of key frequencies allows, relative to the logits' scale.

    In Nanda et al. 2023's algorithm (§4) the logit of output c is l(d) = sum_k alpha_k cos(w_k d),
    w_k = 2 pi k / n, d = (a + b) - c: every term peaks at the correct output d = 0 (constructive
    interference). Few frequencies can nearly agree at some d != 0 as well: {41, 54} at n = 113 reach
    1.96 of their 2.0 at d = 44 (41 * 44 = -4 and 54 * 44 = 3 mod 113), a gap of 0.039 of the logits'
    RMS, where {9, 18, 53} give 0.25 and the canonical run's {8, 19, 41, 54} 0.79. A model whose logits
    have a given scale (bounded by its weight norm) then has margins of about ``gap`` times that
    scale, which bounds its loss from below. ``alpha``: amplitudes indexed by frequency, e.g.
    ``cos_coefficients`` of a model's logits (default 1 for each of ``freqs``).
    """
    ks = check_frequencies(n, freqs, "interference_margin")
    if not ks:
        raise InterpError("interference_margin needs at least one frequency")
    w = torch.ones(len(ks), dtype=torch.float64) if alpha is None else alpha.double()[ks]
    d = torch.arange(n, dtype=torch.float64)
    ideal = (w[:, None] * torch.cos(2 * math.pi * torch.tensor(ks, dtype=torch.float64)[:, None] * d / n)).sum(0)
    rms = float(ideal.square().mean().sqrt())
    if rms == 0:
        raise InterpError("interference_margin: every amplitude is zero")
    # l(d) = l(n - d) (cosines are even), so the rival is looked for in 1..n//2 only, where rounding cannot pick
    rival = int(ideal[1 : n // 2 + 1].argmax()) + 1
    return InterferenceMargin(gap=float(ideal[0] - ideal[rival]) / rms, rival=rival)


# ----------------------------------------------------------------------------- everything at once


@dataclass
class ProgressMeasures:
    """All progress measures of one checkpoint (REFERENCE §2-3).

    Scalars are floats; per-frequency arrays are indexed by k = 0..n//2 (k = 0 is the constant).
    ``key_freqs``: found at this checkpoint by ``key_frequencies``. ``analysis_freqs``: the
    frequencies that restricted / excluded loss and cos_fve used (given, or ``key_freqs``).
    """

    train_loss: float
    test_loss: float
    train_acc: float
    test_acc: float
    key_freqs: list[int]
    analysis_freqs: list[int]
    restricted_loss: float  # all inputs of the group grid
    restricted_loss_test: float  # test inputs only
    excluded_loss: float  # train inputs, all analysis_freqs removed
    excluded_loss_per_freq: dict[int, float]  # train inputs, one frequency removed
    frac_neurons_clear: float  # FVE > CLEAR_FVE_THRESHOLD (0.85)
    clusters: NeuronClusters
    embedding_norms: Float[Tensor, "k1"]  # per frequency
    embedding_freqs: list[int]
    neuron_logit_norms: Float[Tensor, "k1"]  # W_L Fourier norms per frequency
    gini_W_E: float
    gini_W_L: float
    sq_weights: dict[str, float]  # per parameter and "total"
    cos_coefs: Float[Tensor, "k1"]
    cos_fve: float
    interference_margin: float  # what analysis_freqs at their cos_coefs amplitudes allow, / logit RMS (NaN: none)
    train_margin_ratio: float  # median over train inputs of (logit margin / the input's logit RMS)
    threshold: float = KEY_FVE_THRESHOLD

    @property
    def embedding_agrees(self) -> bool:
        """Cross-check: the embedding's strong frequencies equal the neuron key frequencies."""
        return set(self.embedding_freqs) == set(self.key_freqs)

    def row(self) -> dict[str, float | int | str]:
        """A flat dict for the analysis table (``run_table.TABLE_COLUMNS_DOC``): what the trainer's
        metrics do not have (so no split losses, accuracies or squared weights)."""
        r: dict[str, float | int | str] = {
            "restricted_loss": self.restricted_loss,
            "restricted_loss_test": self.restricted_loss_test,
            "excluded_loss": self.excluded_loss,
        }
        for k, v in self.excluded_loss_per_freq.items():
            r[f"excluded_loss_k{k}"] = v
        r.update(
            {
                "gini_W_E": self.gini_W_E,
                "gini_W_L": self.gini_W_L,
                "frac_neurons_fve": self.frac_neurons_clear,
                "n_key_freqs": len(self.key_freqs),
                "key_freqs": " ".join(map(str, self.key_freqs)),
                "embedding_freqs": " ".join(map(str, self.embedding_freqs)),
                "cos_fve": self.cos_fve,
                "interference_margin": self.interference_margin,
                "train_margin_ratio": self.train_margin_ratio,
            }
        )
        for k in self.analysis_freqs:
            r[f"cos_coef_k{k}"] = float(self.cos_coefs[k])
        sizes = self.clusters.sizes(self.threshold)
        for k in range(1, sizes.shape[0]):
            r[f"neurons_k{k}"] = int(sizes[k])
        for k in range(self.embedding_norms.shape[0]):
            r[f"emb_norm_k{k}"] = float(self.embedding_norms[k])
        for k in range(self.neuron_logit_norms.shape[0]):
            r[f"wl_norm_k{k}"] = float(self.neuron_logit_norms[k])
        return r


def progress_measures(
    model,
    split: Optional[Split] = None,
    key_freqs: Optional[Sequence[int]] = None,
    threshold: float = KEY_FVE_THRESHOLD,
    layout: Optional[Layout] = None,
    split_losses: bool = True,
) -> ProgressMeasures:
    """Every progress measure of one model (REFERENCE §2-3), on the fast path, in its task's frame.

    ``split``: train / test pairs (row-major indices); without one, train and test measures use
    all inputs. ``key_freqs``: frequencies for restricted / excluded loss and cos_fve (the paper
    uses the final checkpoint's; default: this checkpoint's own key frequencies).
    ``layout``: precomputed ``make_layout(task, p, split)`` (saves work over many checkpoints).
    ``split_losses``: also train / test loss and accuracy (``interp.analysis.losses``); a run's
    analysis leaves them to the trainer's metrics (NaN here).
    """
    task, p = model.cfg.task, model.cfg.p
    lay = layout if layout is not None else make_layout(task, p, split)
    if lay.task != task or lay.p != p:
        raise ValueError(f"layout is for {lay.task} mod {lay.p}, model is {task} mod {p}")
    n = lay.n
    grid, sums, _ = _sweep(model, lay)
    fve = _fve_from_sums(sums, n)
    clusters = neuron_clusters(fve)
    keys = key_frequencies(clusters, threshold)
    used = sorted(check_frequencies(n, key_freqs if key_freqs is not None else keys, f"{task} mod {p}"))

    nan = float("nan")
    train_loss = test_loss = train_acc = test_acc = nan
    flat, y = grid.reshape(p * p, p), lay.y.reshape(-1)
    if split_losses:
        ce, ok = cross_entropy(flat, y), correct(flat, y).double()
        if lay.train is not None:
            tr, te = lay.train.reshape(-1), lay.test.reshape(-1)
            train_loss, train_acc = float(ce[tr].mean()), float(ok[tr].mean())
            test_loss, test_acc = float(ce[te].mean()), float(ok[te].mean())
        else:
            train_loss, train_acc = test_loss, test_acc = float(ce.mean()), float(ok.mean())

    # Fourier views of the logits: group block, outputs in group order
    L = grid[:n, :n]
    if not lay.group_is_identity:
        L = L.index_select(2, lay.frame.c_tokens)
    S = anti_diagonal_sums(L)
    g_train = lay.train[:n, :n] if lay.train is not None else None
    g_test = lay.test[:n, :n] if lay.test is not None else None
    restricted = restricted_loss_from_sums(S, used)
    restricted_test = _restricted_masked(S, used, g_test) if g_test is not None else restricted
    ex = _excluded_losses(L, S, [used] + [[k] for k in used], g_train)

    W_E_f = embedding_fourier(model)
    W_L_f = neuron_logit_fourier(model)
    row_E, freq_E = fourier_norms(W_E_f)
    row_L, freq_L = fourier_norms(W_L_f)
    cos_a = cos_coefficients_from_sums(S)
    train = slice(None) if lay.train is None else lay.train.reshape(-1)
    ratio = margin_ratios(flat[train], y[train])
    return ProgressMeasures(
        train_loss=train_loss,
        test_loss=test_loss,
        train_acc=train_acc,
        test_acc=test_acc,
        key_freqs=keys,
        analysis_freqs=used,
        restricted_loss=restricted,
        restricted_loss_test=restricted_test,
        excluded_loss=ex[0],
        excluded_loss_per_freq={k: v for k, v in zip(used, ex[1:])},
        frac_neurons_clear=clusters.frac_above(CLEAR_FVE_THRESHOLD),
        clusters=clusters,
        embedding_norms=freq_E,
        embedding_freqs=embedding_frequencies(freq_E),
        neuron_logit_norms=freq_L,
        gini_W_E=gini(row_E),
        gini_W_L=gini(row_L),
        sq_weights=sum_squared_weights(model),
        cos_coefs=cos_a,
        cos_fve=cos_fve(L, used, cos_a),
        interference_margin=interference_margin(n, used, cos_a).gap if bool(cos_a[used].any()) else nan,
        train_margin_ratio=float(ratio.median()),
        threshold=threshold,
    )


def model_neuron_clusters(model) -> NeuronClusters:
    """Neuron frequencies and FVE of a model in memory (fast path, its task's frame)."""
    lay = make_layout(model.cfg.task, model.cfg.p)
    _, sums, _ = _sweep(model, lay)
    return neuron_clusters(_fve_from_sums(sums, lay.n))
