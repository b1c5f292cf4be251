"""What a checkpoint has learned: the structure of its representations (issue #4).

Every function takes a model in memory (``interp.model.Transformer``) or tensors and returns
tensors or small dataclasses; nothing here reads or writes files. Fourier work uses the task's
group coordinates (``interp.analysis.fourier.frame``: for add and sub the token order itself, for mul and
div the discrete-log order, n = p - 1) and the one basis ``interp.analysis.fourier.fourier_basis``.

* ``embedding_spectrum``: W_E in the Fourier basis and its per-frequency norms (REFERENCE §2).
* ``embedding_circles``: every token's embedding projected onto the plane spanned by the cos k and
  sin k Fourier components of W_E, for chosen (key) frequencies k: the circles of Nanda et al. 2023.
* ``embedding_svd``: SVD of the (centred) token embeddings, with the Fourier content of each
  singular vector.
* ``neuron_clusters``: MLP neurons grouped by frequency with their FVE (REFERENCE §2; computed by
  ``interp.analysis.measures``, the single definition).
* ``neuron_activation_maps``: activations of chosen neurons over all (a, b) and their 2D spectra.
* ``attention_from_eq``: attention paid by the '=' position to a, b and itself, per head, per input.
* ``neuron_logit_spectrum``: W_L = W_out @ W_U in the Fourier basis (REFERENCE §2).
* ``rqi_linear`` / ``rqi_circle`` / ``embedding_rqi``: the Representation Quality Index of
  Liu et al. 2022 (REFERENCE §6), see the RQI section below for how it is read on circles;
  ``embedding_circle_points`` / ``rqi_circle_batch``: the same circle-chart RQI for many checkpoints
  at once (what the analysis table's ``rqi`` column uses).
* ``final_position_activations``: residual stream and MLP activations at '=' on all p^2 inputs
  (what ``interp.analysis.cka`` compares).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import einops
import torch
from jaxtyping import Complex, Float, Int
from torch import Tensor

from interp.analysis import measures as ms
from interp.analysis.fourier import (
    basis_labels,
    check_frequencies,
    fft1d,
    fft2d,
    frame,
    frequency_norms,
    frequency_rows,
)
from interp.analysis.rqi import RQI_TOL, RQIResult, _plane_angles, parallelogram_classes, rqi_circle, rqi_linear
from interp.errors import InterpError
from interp.model.fast import all_operands, eq_activations, eq_pattern, eq_tables, run_params

__all__ = [
    "EmbeddingSpectrum",
    "embedding_spectrum",
    "Circle",
    "embedding_circles",
    "EmbeddingSVD",
    "embedding_svd",
    "NeuronClusterSummary",
    "neuron_clusters",
    "NeuronMaps",
    "neuron_activation_maps",
    "AttentionFromEq",
    "attention_from_eq",
    "NeuronLogitSpectrum",
    "neuron_logit_spectrum",
    "embedding_rqi",
    "embedding_circle_points",
    "rqi_circle_batch",
    "default_frequencies",
    "FinalActivations",
    "final_position_activations",
    "CheckpointViews",
    "checkpoint_views",
]

# REFERENCE §6 (Liu et al. 2022): a parallelogram closes when mean_d (E_i + E_j - E_m - E_n)^2 < 0.01.


def _token_embeddings(model) -> tuple[Float[Tensor, "n d_model"], Int[Tensor, "n"]]:
    """W_E rows of the group's tokens, in group order (the model's task), float64 (the '=' row is not a number)."""
    fr = frame(model.cfg.task, model.cfg.p)
    return model.W_E.detach().double().index_select(0, fr.a_tokens.to(model.W_E.device)).cpu(), fr.a_tokens


# ----------------------------------------------------------------------------- embedding spectrum


@dataclass
class EmbeddingSpectrum:
    """W_E (number tokens, group order) in the Fourier basis (REFERENCE §2).

    ``coefs[r]`` is the d_model-vector of basis row r (``labels[r]``: const, cos 1, sin 1, ...);
    ``row_norms[r]`` its norm; ``freq_norms[k]`` the norm of frequency k (cos and sin rows joined,
    k = 0..n//2). ``tokens[i]`` is the token at group index i.
    """

    coefs: Float[Tensor, "n d_model"]
    row_norms: Float[Tensor, "n"]
    freq_norms: Float[Tensor, "k1"]
    labels: list[str]
    tokens: Int[Tensor, "n"]

    def energy_share(self) -> Float[Tensor, "k1"]:
        """Share of the embedding's non-constant squared norm in each frequency (k = 0 gets 0)."""
        sq = self.freq_norms.pow(2).clone()
        sq[0] = 0
        tot = sq.sum()
        return sq / tot if tot > 0 else sq

    def top_frequencies(self, m: int) -> list[int]:
        """The m non-constant frequencies with the largest norms, strongest first."""
        return [int(k) + 1 for k in self.freq_norms[1:].argsort(descending=True)[:m]]


def embedding_spectrum(model) -> EmbeddingSpectrum:
    """F @ W_E[tokens in group order] and its norms per basis row and per frequency (REFERENCE §2)."""
    E, tokens = _token_embeddings(model)
    coefs = fft1d(E)
    return EmbeddingSpectrum(
        coefs, coefs.norm(dim=1), frequency_norms(coefs).norm(dim=1), basis_labels(E.shape[0]), tokens
    )


def default_frequencies(model) -> list[int]:
    """The frequencies the structural views use when the caller names none.

    The model's key frequencies (neuron FVE rule, ``measures.key_frequencies``); if it has none
    (e.g. a memorising or random model), the embedding's strong frequencies
    (``measures.embedding_frequencies``); if there are none either, the single frequency with the
    largest embedding norm, so that a view always has something to show.
    """
    keys = ms.key_frequencies(ms.model_neuron_clusters(model))
    if keys:
        return keys
    spec = embedding_spectrum(model)
    emb = ms.embedding_frequencies(spec.freq_norms)
    return emb if emb else spec.top_frequencies(1)


# ----------------------------------------------------------------------------- circles


@dataclass
class Circle:
    """The token embeddings projected onto the plane of frequency k (Nanda et al. 2023, Fig. 3).

    The plane is spanned by the cos k and sin k Fourier components of W_E (rows 2k-1, 2k of
    ``embedding_spectrum(...).coefs``); ``basis`` is an orthonormal basis of it (d_model x 2) and
    ``coords[i]`` the centred embedding of the token at group index i in that basis.

    ``energy_share``: fraction of the centred embedding's squared norm inside the plane.
    ``circularity``: how well one rotating phasor of frequency k explains the points: with
    z_i = x_i + i y_i, max over the orientation s = +-1 of |sum_i z_i e^{-i s w i}|^2 / (n sum_i |z_i|^2),
    w = 2 pi k / n. 1 for a perfect circle traversed at frequency k, 0.9 for a 2:1 ellipse, ~1/n for
    unstructured points. ``orientation``: the s that attains it.
    """

    k: int
    coords: Float[Tensor, "n 2"]
    basis: Float[Tensor, "d_model 2"]
    tokens: Int[Tensor, "n"]
    energy_share: float
    circularity: float
    orientation: int


def _plane_basis(coefs: Float[Tensor, "n d"], n: int, k: int) -> Float[Tensor, "d 2"]:
    rows = coefs[frequency_rows(n, k)].T  # [d, 1 or 2]
    Q, R = torch.linalg.qr(rows)
    # A degenerate plane (the cos and sin components parallel, or zero) keeps its one real direction.
    keep = R.diagonal().abs() > 1e-12 * max(float(R.abs().max()), 1e-300)
    Q = Q[:, keep]
    if Q.shape[1] < 2:
        Q = torch.cat([Q, torch.zeros(Q.shape[0], 2 - Q.shape[1], dtype=Q.dtype)], dim=1)
    return Q


def _circularity(z: Complex[Tensor, "n"], n: int, k: int) -> tuple[float, int]:
    tot = float(z.abs().pow(2).sum())
    if tot <= 0:
        return 0.0, 1
    ph = torch.exp(-2j * math.pi * k * torch.arange(n, dtype=torch.float64) / n)
    fwd = float((z * ph).sum().abs() ** 2) / (n * tot)
    bwd = float((z * ph.conj()).sum().abs() ** 2) / (n * tot)
    return (fwd, 1) if fwd >= bwd else (bwd, -1)


def embedding_circles(model, freqs: Optional[Sequence[int]] = None) -> list[Circle]:
    """One ``Circle`` per frequency in ``freqs`` (default: ``default_frequencies``), in that order."""
    E, tokens = _token_embeddings(model)
    n = E.shape[0]
    freqs = check_frequencies(n, default_frequencies(model) if freqs is None else freqs)
    Ec = E - E.mean(0)
    coefs = fft1d(Ec)
    total = float(Ec.pow(2).sum())
    out = []
    for k in freqs:
        Q = _plane_basis(coefs, n, k)
        xy = Ec @ Q
        circ, s = _circularity(torch.complex(xy[:, 0], xy[:, 1]), n, k)
        out.append(Circle(k, xy, Q, tokens, float(xy.pow(2).sum()) / total if total > 0 else 0.0, circ, s))
    return out


# ----------------------------------------------------------------------------- SVD


@dataclass
class EmbeddingSVD:
    """SVD of the centred token embeddings E - mean (rows: tokens in group order): E = U diag(S) Vh.

    ``explained[r]``: S_r^2 / sum S^2. ``freq_norms[k, r]``: norm of frequency k in the left
    singular vector U[:, r] (a function over tokens); ``dominant_freq[r]``: its argmax. In a
    generalising model the top singular vectors come in cos/sin pairs of the key frequencies.
    """

    U: Float[Tensor, "n r"]
    S: Float[Tensor, "r"]
    Vh: Float[Tensor, "r d_model"]
    explained: Float[Tensor, "r"]
    freq_norms: Float[Tensor, "k1 r"]
    dominant_freq: Int[Tensor, "r"]
    tokens: Int[Tensor, "n"]


def embedding_svd(model, centre: bool = True) -> EmbeddingSVD:
    """SVD of W_E's number-token rows (group order), centred over tokens unless ``centre=False``."""
    E, tokens = _token_embeddings(model)
    if centre:
        E = E - E.mean(0)
    U, S, Vh = torch.linalg.svd(E, full_matrices=False)
    tot = S.pow(2).sum()
    fn = frequency_norms(fft1d(U))
    return EmbeddingSVD(U, S, Vh, S.pow(2) / tot if tot > 0 else S.pow(2), fn, fn.argmax(0), tokens)


# ----------------------------------------------------------------------------- neurons


@dataclass
class NeuronClusterSummary:
    """MLP neurons grouped by frequency (REFERENCE §2; values from ``interp.analysis.measures``).

    ``frequency[i]``: neuron i's best frequency (0: constant / dead); ``fve[i]``: the fraction of its
    centred variance that frequency explains; ``fve_by_freq[k, i]``: the same for every k.
    ``sizes[k]``: neurons of frequency k with FVE > ``threshold``; ``mean_fve[k]``: their mean FVE
    (nan where empty). ``key_freqs``: ``measures.key_frequencies`` at ``threshold``.
    ``frac_clear``: fraction of all neurons with FVE > 0.85 (the paper's 84.6%).
    """

    frequency: Int[Tensor, "d_mlp"]
    fve: Float[Tensor, "d_mlp"]
    fve_by_freq: Float[Tensor, "k1 d_mlp"]
    threshold: float
    sizes: Int[Tensor, "k1"]
    mean_fve: Float[Tensor, "k1"]
    key_freqs: list[int]
    frac_clear: float

    def members(self, k: int) -> Int[Tensor, "m"]:
        """Indices of the neurons of frequency k with FVE above the threshold, by decreasing FVE."""
        idx = torch.nonzero((self.frequency == k) & (self.fve > self.threshold)).flatten()
        return idx[self.fve[idx].argsort(descending=True)]


def neuron_clusters(
    model, threshold: float = ms.KEY_FVE_THRESHOLD, post: Optional[Float[Tensor, "n n d_mlp"]] = None
) -> NeuronClusterSummary:
    """Cluster the neurons by frequency with ``measures``' FVE (``post``: precomputed group-order activations)."""
    cl = ms.neuron_clusters(ms.neuron_fve(post)) if post is not None else ms.model_neuron_clusters(model)
    k1 = cl.fve_by_freq.shape[0]
    sel = cl.fve > threshold
    sizes = torch.bincount(cl.frequency[sel], minlength=k1)
    sums = torch.zeros(k1, dtype=torch.float64).index_add_(0, cl.frequency[sel], cl.fve[sel].double())
    mean = torch.where(sizes > 0, sums / sizes.clamp_min(1), torch.full_like(sums, float("nan")))
    return NeuronClusterSummary(
        cl.frequency,
        cl.fve,
        cl.fve_by_freq,
        threshold,
        sizes,
        mean,
        ms.key_frequencies(cl, threshold),
        cl.frac_above(ms.CLEAR_FVE_THRESHOLD),
    )


@dataclass
class NeuronMaps:
    """Activations of chosen neurons over all inputs and their 2D Fourier spectra (REFERENCE §2).

    ``maps[m, i, j]``: activation (``blocks.0.mlp.hook_post`` at '=') of neuron ``neurons[m]`` on the
    input a = ``a_tokens[i]``, b = ``b_tokens[j]`` (group order; for add it is the token order).
    ``spectra[m]``: fft2d of the map centred over all inputs, rows / columns labelled like
    ``fourier.basis_labels(n)``; ``freq_norms[m, ka, kb]``: its norm per pair of frequencies.
    ``frequency`` / ``fve``: each neuron's cluster and FVE.
    """

    neurons: Int[Tensor, "m"]
    maps: Float[Tensor, "m n n"]
    spectra: Float[Tensor, "m n n"]
    freq_norms: Float[Tensor, "m k1 k1"]
    frequency: Int[Tensor, "m"]
    fve: Float[Tensor, "m"]
    a_tokens: Int[Tensor, "n"]
    b_tokens: Int[Tensor, "n"]


def neuron_activation_maps(model, neurons: Optional[Sequence[int]] = None) -> NeuronMaps:
    """Activation maps and spectra of ``neurons`` (default: the highest-FVE neuron of every key
    frequency, or the first four neurons when there is no key frequency)."""
    acts = ms.all_pair_activations(model)
    return _maps(acts, neuron_clusters(model, post=acts.post), neurons)


def _maps(acts: ms.AllPairs, cl: NeuronClusterSummary, neurons: Optional[Sequence[int]]) -> NeuronMaps:
    post = acts.post  # [n, n, d_mlp] group order
    d_mlp = post.shape[2]
    if neurons is None:
        picks = [int(cl.members(k)[0]) for k in cl.key_freqs]
        neurons = picks if picks else list(range(min(4, d_mlp)))
    idx = torch.as_tensor(list(neurons), dtype=torch.long)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= d_mlp):
        raise InterpError(f"neuron index out of range 0..{d_mlp - 1}: {list(neurons)}")
    maps = einops.rearrange(post.index_select(2, idx), "a b neuron -> neuron a b").double()
    centred = maps - maps.mean(dim=(1, 2), keepdim=True)
    spectra = einops.rearrange(
        fft2d(einops.rearrange(centred, "neuron a b -> a b neuron")), "ka kb neuron -> neuron ka kb"
    )
    fn = frequency_norms(frequency_norms(spectra, dim=1), dim=2)
    return NeuronMaps(idx, maps, spectra, fn, cl.frequency[idx], cl.fve[idx], acts.frame.a_tokens, acts.frame.b_tokens)


# ----------------------------------------------------------------------------- attention


@dataclass
class AttentionFromEq:
    """Attention weights of the '=' query on every input, per head (``blocks.0.attn.hook_pattern``
    at query position 2). ``to_a[h, a, b]``, ``to_b``, ``to_eq``: weight on position 0 (a), 1 (b)
    and 2 ('=') for input [a, b, =], token order (not group order). They sum to 1."""

    to_a: Float[Tensor, "n_heads p p"]
    to_b: Float[Tensor, "n_heads p p"]
    to_eq: Float[Tensor, "n_heads p p"]

    def mean(self) -> Float[Tensor, "n_heads 3"]:
        """Mean weight on (a, b, =) per head over all inputs."""
        return torch.stack([self.to_a.mean((1, 2)), self.to_b.mean((1, 2)), self.to_eq.mean((1, 2))], dim=1)


@torch.no_grad()
def attention_from_eq(model) -> AttentionFromEq:
    """The '=' position's attention pattern on all p^2 inputs (``interp.model.fast``'s score tables;
    the query at '=' is the same for every input, so no forward pass)."""
    cfg = model.cfg
    a, b = all_operands(cfg.p, model.W_E.device)
    pattern, _ = eq_pattern(eq_tables(run_params(model), cfg), cfg, a[None], b[None])
    w = einops.rearrange(pattern[0].cpu(), "(a b) head src -> src head a b", a=cfg.p)
    return AttentionFromEq(w[0].contiguous(), w[1].contiguous(), w[2].contiguous())


# ----------------------------------------------------------------------------- W_L


@dataclass
class NeuronLogitSpectrum:
    """W_L = W_out @ W_U (d_mlp x p, outputs in group order) in the Fourier basis over outputs
    (REFERENCE §2). ``coefs[r, i]``: basis row r of neuron i's logit vector; ``row_norms[r]`` and
    ``freq_norms[k]`` over all neurons; ``per_neuron[k, i]``: neuron i's norm at frequency k."""

    coefs: Float[Tensor, "n d_mlp"]
    row_norms: Float[Tensor, "n"]
    freq_norms: Float[Tensor, "k1"]
    per_neuron: Float[Tensor, "k1 d_mlp"]
    labels: list[str]


def neuron_logit_spectrum(model) -> NeuronLogitSpectrum:
    """W_L in the Fourier basis (computed by ``measures.neuron_logit_fourier``) and its norms."""
    coefs = ms.neuron_logit_fourier(model)
    per = frequency_norms(coefs)
    return NeuronLogitSpectrum(coefs, coefs.norm(dim=1), per.norm(dim=1), per, basis_labels(coefs.shape[0]))


def embedding_rqi(
    model, freqs: Optional[Sequence[int]] = None, tol: float = RQI_TOL, chart: str = "circle"
) -> RQIResult:
    """RQI of the model's number-token embeddings (REFERENCE §6; see the module notes).

    ``chart="circle"`` (default): planes of ``freqs`` (default ``default_frequencies``: the key
    frequencies), points from ``embedding_circles``, whitened, angles only; sums mod n. ``chart="linear"``: §6
    verbatim on W_E's number rows in group order, integer sums.
    """
    if chart == "linear":
        E, _ = _token_embeddings(model)
        return rqi_linear(E, None, tol)
    if chart != "circle":
        raise InterpError(f"unknown RQI chart {chart!r}; choose 'circle' or 'linear'")
    freqs = check_frequencies(
        _token_embeddings(model)[0].shape[0], default_frequencies(model) if freqs is None else freqs
    )
    return rqi_circle(embedding_circle_points(model, freqs), tol, freqs)


def embedding_circle_points(model, freqs: Sequence[int]) -> Complex[Tensor, "K n"]:
    """The circle-chart points ``embedding_rqi`` reads: for each frequency in ``freqs`` (in that
    order), the whitened angle e^{i theta} of every number token on W_E's (cos k, sin k) plane."""
    circles = embedding_circles(model, freqs)
    return torch.stack([_plane_angles(c.coords) for c in circles])


def rqi_circle_batch(z: Complex[Tensor, "B K n"], tol: float = RQI_TOL, chunk: int = 1) -> Float[Tensor, "B"]:
    """``rqi.rqi_circle(z[b], tol).rqi`` for B point sets at once (B checkpoints on the same planes):
    the same parallelograms, residuals and threshold (tested against ``rqi_circle``).

    Fast path: in one class of pairs with equal sums, the residual of the parallelogram of pairs a, b
    is mean_k |u_ak - u_bk|^2 with u_ak = z_ki z_kj, i.e. (|u_a|^2 + |u_b|^2 - 2 Re<u_a, u_b>) / K, so
    one batched Gram matrix per class replaces ``rqi_circle``'s per-plane distance matrices (about
    5 ms per checkpoint instead of 20 for p = 113 and four planes). No per-plane RQI here. ``chunk``:
    point sets per batched product; 1 measured fastest on the CPU (larger chunks leave the cache).
    """
    if z.ndim != 3:
        raise ValueError(f"rqi_circle_batch takes points of shape [B, K, n], got {tuple(z.shape)}")
    B, K, n = z.shape
    if K == 0:
        raise ValueError("RQI in the circle chart needs at least one frequency plane")
    I, J, valid = parallelogram_classes(n, n)
    C, L = valid.shape
    pair = valid[:, :, None] & valid[:, None, :] & torch.triu(torch.ones(L, L, dtype=torch.bool), 1)  # [C, L, L]
    ideal = int(pair.sum())
    z = z.to(torch.complex128)
    out = torch.empty(B, dtype=torch.float64)
    for b0 in range(0, B, chunk):
        u = z[b0 : b0 + chunk, :, I] * z[b0 : b0 + chunk, :, J]  # [b, K, C, L]
        b = u.shape[0]
        v = torch.cat([u.real, u.imag], 1).permute(0, 2, 3, 1).reshape(b * C, L, 2 * K)  # [b C, L, 2K]
        sq = v.pow(2).sum(-1)  # [b C, L]
        r = (sq[:, :, None] + sq[:, None, :] - 2 * torch.bmm(v, v.transpose(1, 2))) / K
        closed = (r < tol).reshape(b, C, L, L) & pair
        out[b0 : b0 + b] = closed.flatten(1).sum(-1).double() / ideal
    return out


# ----------------------------------------------------------------------------- activations at '='


@dataclass
class FinalActivations:
    """Activations at the '=' position on all p^2 inputs, row-major (pair = a * p + b).

    ``resid``: ``blocks.0.hook_resid_post`` (the final residual stream, what W_U reads);
    ``mlp``: ``blocks.0.mlp.hook_post`` (neuron activations).
    """

    resid: Float[Tensor, "pairs d_model"]
    mlp: Float[Tensor, "pairs d_mlp"]


@torch.no_grad()
def final_position_activations(model, chunk_rows: Optional[int] = None) -> FinalActivations:
    """Final-position residual stream and MLP activations for all p^2 inputs (float32, row-major),
    from ``interp.model.fast.eq_activations``; ``chunk_rows``: rows of a per call (default: all)."""
    p = model.cfg.p
    P = run_params(model)
    a, b = all_operands(p, model.W_E.device)
    step = p * (p if chunk_rows is None else max(1, chunk_rows))
    parts = [
        eq_activations(P, model.cfg, a[None, i : i + step], b[None, i : i + step], resid=True)
        for i in range(0, p * p, step)
    ]
    return FinalActivations(torch.cat([x.resid[0] for x in parts]), torch.cat([x.post[0] for x in parts]))


# ----------------------------------------------------------------------------- everything a report shows


@dataclass
class CheckpointViews:
    """The single-checkpoint views of one model, computed together (the activations on all inputs
    once): what ``interp.viz.checkpoint`` draws and what the analysis stores for the report.

    ``circles`` are on ``freqs`` (given, else ``default_frequencies``); ``maps`` show the clearest
    neuron of each key frequency.
    """

    spectrum: EmbeddingSpectrum
    clusters: NeuronClusterSummary
    circles: list[Circle]
    maps: NeuronMaps
    attention: AttentionFromEq
    logit_spectrum: NeuronLogitSpectrum


def checkpoint_views(model, freqs: Optional[Sequence[int]] = None) -> CheckpointViews:
    """Every single-checkpoint view of ``model`` (in its task's frame), sharing one pass over all inputs."""
    acts = ms.all_pair_activations(model)
    clusters = neuron_clusters(model, post=acts.post)
    spectrum = embedding_spectrum(model)
    if freqs is None:  # default_frequencies, from what is already computed
        freqs = clusters.key_freqs or ms.embedding_frequencies(spectrum.freq_norms) or spectrum.top_frequencies(1)
    return CheckpointViews(
        spectrum,
        clusters,
        embedding_circles(model, freqs),
        _maps(acts, clusters, None),
        attention_from_eq(model),
        neuron_logit_spectrum(model),
    )
