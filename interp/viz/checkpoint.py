"""Figures of one checkpoint, from the analysis's dataclasses (``interp.analysis.representation``,
``compare.ComparisonSummary``): each function returns a ``plotly.graph_objects.Figure``.

* ``embedding_fourier_norms`` (REFERENCE §2), ``neuron_cluster_sizes`` (§2), ``embedding_circles``
  (Nanda et al. 2023 Fig. 3; REFERENCE §2), ``neuron_activations`` (maps and 2D spectra, §2),
  ``attention_patterns`` (attention from '=' per head), ``neuron_logit_fourier`` (W_L, §2).
* ``checkpoint_comparison``: two checkpoints side by side (memorising vs generalising).

``representation.checkpoint_views(model)`` computes every input at once from a model.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.viz.style import (
    TEMPLATE,
    TEST_COLOR,
    TRAIN_COLOR,
    EmptyFigure,
    _bar_colors,
    _esc,
    _f32,
    _fmt_value,
    _np,
    _square_axes,
)


def embedding_fourier_norms(
    spectrum, key_freqs: Optional[Sequence[int]] = None, title: Optional[str] = None
) -> go.Figure:
    """Norm of the embedding W_E's Fourier components per frequency k at one checkpoint (REFERENCE §2).

    ``spectrum``: a ``representation.EmbeddingSpectrum``. A generalising model concentrates its
    embedding on a few key frequencies (red when ``key_freqs`` is given); a memorising or random one
    spreads it over all of them.
    """
    fn = _np(spectrum.freq_norms)
    ks = np.arange(1, fn.shape[0], dtype=np.int32)
    fig = go.Figure(
        go.Bar(
            x=ks,
            y=_f32(fn[1:]),
            marker_color=_bar_colors(ks, key_freqs or []),
            hovertemplate="frequency %{x}<br>norm %{y:.3g}<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="frequency k")
    fig.update_yaxes(title_text="‖F W_E‖ (cos and sin rows)")
    fig.update_layout(template=TEMPLATE, title=title or "Embedding Fourier norms", height=360, bargap=0.1)
    return fig


def neuron_cluster_sizes(clusters, title: Optional[str] = None) -> go.Figure:
    """How many MLP neurons belong to each frequency at one checkpoint (REFERENCE §2).

    A neuron belongs to frequency k when k explains more than the FVE threshold of its variance;
    the title counts the neurons that belong to none. ``clusters``: a
    ``representation.NeuronClusterSummary``.
    """
    sizes, total, thr = _np(clusters.sizes).astype(np.int64)[1:], int(clusters.frequency.shape[0]), clusters.threshold
    ks = np.arange(1, sizes.shape[0] + 1, dtype=np.int32)
    unassigned = total - int(sizes.sum())
    fig = go.Figure(
        go.Bar(
            x=ks,
            y=sizes.astype(np.int32),
            marker_color="#2ca02c",
            hovertemplate="frequency %{x}<br>%{y} neurons<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="frequency k")
    fig.update_yaxes(title_text=f"neurons with FVE > {thr:g}")
    fig.update_layout(
        template=TEMPLATE,
        height=360,
        bargap=0.1,
        title=title or f"Neuron clusters by frequency ({unassigned} of {total} neurons unassigned)",
    )
    return fig


def _circle_traces(circles, normalise: bool, showscale: bool) -> list[go.Scatter]:
    out = []
    for i, c in enumerate(circles):
        xy = _np(c.coords).astype(float)
        if normalise:
            r = np.sqrt((xy**2).sum(1)).max()
            xy = xy / r if r > 0 else xy
        toks = _np(c.tokens).astype(np.int32)
        out.append(
            go.Scatter(
                x=_f32(xy[:, 0]),
                y=_f32(xy[:, 1]),
                mode="markers",
                name=f"k={c.k}",
                showlegend=False,
                marker=dict(
                    color=toks,
                    colorscale="Twilight",
                    size=7,
                    line=dict(width=0.5, color="#333"),
                    showscale=showscale and i == 0,
                    colorbar=dict(title="token") if showscale and i == 0 else None,
                ),
                customdata=toks,
                hovertemplate=f"k={c.k}<br>token %{{customdata}}<extra></extra>",
            )
        )
    return out


def _circle_title(c) -> str:
    return f"k={c.k}: {c.energy_share:.0%} of norm², circularity {c.circularity:.2f}"


def embedding_circles(circles: Sequence, title: Optional[str] = None) -> go.Figure:
    """Each token's embedding projected onto the (cos k, sin k) plane of W_E, one panel per key
    frequency k (Nanda et al. 2023 Fig. 3; REFERENCE §2). Colour: the token (a cyclic scale).

    In a generalising model token a sits at angle w_k a on a circle, so the colours go round in
    order (k times); in a memorising one the points form a blob. Panel titles give the plane's
    share of the embedding's squared norm and the circularity of ``representation.Circle``.
    """
    if not circles:
        raise EmptyFigure("no frequencies to draw circles for")
    n = len(circles)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[_circle_title(c) for c in circles],
        horizontal_spacing=0.04,
        vertical_spacing=0.12 / rows,
    )
    for i, tr in enumerate(_circle_traces(circles, False, True)):
        fig.add_trace(tr, row=i // cols + 1, col=i % cols + 1)
    _square_axes(fig, n)
    fig.update_annotations(font_size=11)
    fig.update_layout(
        template=TEMPLATE,
        title=title or "Embedding circles (projection on each key frequency's plane)",
        height=300 * rows + 100,
    )
    return fig


def neuron_activations(nm, title: Optional[str] = None) -> go.Figure:
    """Activation maps of chosen MLP neurons over all inputs (a, b) and their 2D Fourier spectra
    (REFERENCE §2). Top row: the activation at '=' for every (a, b); a frequency-k neuron shows
    stripes of period p/k along a + b. Bottom row: norm of the centred map's fft2d per pair of
    frequencies (ka, kb); a clean neuron lights up the (0, k), (k, 0) and (k, k) cells.
    Default neurons: the highest-FVE neuron of every key frequency (``representation.neuron_activation_maps``).
    """
    m = int(nm.neurons.shape[0])
    if m == 0:
        raise EmptyFigure("no neurons to draw")
    m = min(m, 6)  # more panels than this are unreadable side by side
    a_t, b_t = _np(nm.a_tokens).astype(np.int32), _np(nm.b_tokens).astype(np.int32)
    titles = [f"neuron {int(nm.neurons[i])} (k={int(nm.frequency[i])}, FVE {float(nm.fve[i]):.2f})" for i in range(m)]
    titles += [f"spectrum of neuron {int(nm.neurons[i])}" for i in range(m)]
    fig = make_subplots(rows=2, cols=m, subplot_titles=titles, vertical_spacing=0.14, horizontal_spacing=0.03)
    maps, fn = _np(nm.maps), _np(nm.freq_norms)
    kk = np.arange(fn.shape[1], dtype=np.int32)
    for i in range(m):
        fig.add_trace(
            go.Heatmap(
                z=_f32(maps[i]),
                x=b_t,
                y=a_t,
                colorscale="RdBu",
                reversescale=True,
                showscale=False,
                hovertemplate="a=%{y}, b=%{x}<br>activation %{z:.3g}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
        fig.add_trace(
            go.Heatmap(
                z=_f32(fn[i]),
                x=kk,
                y=kk,
                colorscale="Viridis",
                showscale=False,
                hovertemplate="k_a=%{y}, k_b=%{x}<br>norm %{z:.3g}<extra></extra>",
            ),
            row=2,
            col=i + 1,
        )
    for i in range(1, 2 * m + 1):
        sx = "" if i == 1 else str(i)
        # square cells: shrink the panel (constrain="domain") rather than pad the axis with empty range
        fig.layout[f"yaxis{sx}"].update(scaleanchor=f"x{sx}", scaleratio=1, autorange="reversed", constrain="domain")
        fig.layout[f"xaxis{sx}"].update(constrain="domain")
    fig.update_xaxes(title_text="b", row=1)
    fig.update_yaxes(title_text="a", row=1, col=1)
    fig.update_xaxes(title_text="k_b", row=2)
    fig.update_yaxes(title_text="k_a", row=2, col=1)
    fig.update_annotations(font_size=10)
    fig.update_layout(
        template=TEMPLATE,
        title=title or "Neuron activation maps and their 2D Fourier spectra",
        # panels are square: two rows of (page width / m) each, for a ~1300 px page
        height=int(min(900, max(420, 2 * 0.9 * 1300 / max(m, 1) + 140))),
    )
    return fig


def attention_patterns(att, title: Optional[str] = None) -> go.Figure:
    """Attention paid by the '=' position to a (top row) and to b (bottom row), per head, over all
    inputs (a, b) (issue #4, ``representation.attention_from_eq``). Heads of the grokked model
    split their attention between a and b as a function of one token each (stripes)."""
    to_a, to_b = _np(att.to_a), _np(att.to_b)
    H, p = to_a.shape[0], to_a.shape[1]
    toks = np.arange(p, dtype=np.int32)
    titles = [f"head {h}: '=' → a" for h in range(H)] + [f"head {h}: '=' → b" for h in range(H)]
    fig = make_subplots(rows=2, cols=H, subplot_titles=titles, vertical_spacing=0.12, horizontal_spacing=0.03)
    for h in range(H):
        for r, z in ((1, to_a[h]), (2, to_b[h])):
            fig.add_trace(
                go.Heatmap(
                    z=_f32(z),
                    x=toks,
                    y=toks,
                    zmin=0,
                    zmax=1,
                    colorscale="Blues",
                    showscale=(h == 0 and r == 1),
                    colorbar=dict(title="weight"),
                    hovertemplate="a=%{y}, b=%{x}<br>weight %{z:.3f}<extra></extra>",
                ),
                row=r,
                col=h + 1,
            )
    for i in range(1, 2 * H + 1):
        sx = "" if i == 1 else str(i)
        # square cells: shrink the panel (constrain="domain") rather than pad the axis with empty range
        fig.layout[f"yaxis{sx}"].update(scaleanchor=f"x{sx}", scaleratio=1, autorange="reversed", constrain="domain")
        fig.layout[f"xaxis{sx}"].update(constrain="domain")
    fig.update_xaxes(title_text="b")
    fig.update_yaxes(title_text="a", col=1)
    fig.update_annotations(font_size=10)
    fig.update_layout(
        template=TEMPLATE,
        title=title or "Attention from '=' per head",
        height=int(min(900, max(420, 2 * 0.9 * 1300 / max(H, 1) + 140))),
    )
    return fig


def neuron_logit_fourier(spec, clusters, title: Optional[str] = None) -> go.Figure:
    """The neuron-logit map W_L = W_out W_U in the Fourier basis over outputs (REFERENCE §2).

    Left: |coefficient| of every neuron (rows, grouped by the neuron's frequency cluster) on every
    basis function (columns: const, cos 1, sin 1, ...); a generalising model writes each neuron's
    output onto cos/sin of its own frequency only. Right: the norm per frequency over all neurons.
    """
    coefs = np.abs(_np(spec.coefs)).T  # [d_mlp, n]
    freq = _np(clusters.frequency).astype(np.int64)
    order = np.lexsort((np.arange(freq.shape[0]), freq))  # by cluster, then index
    fn = _np(spec.freq_norms)
    ks = np.arange(1, fn.shape[0], dtype=np.int32)
    fig = make_subplots(
        rows=1,
        cols=2,
        column_widths=[0.72, 0.28],
        horizontal_spacing=0.08,
        subplot_titles=("|W_L| in the Fourier basis (neurons sorted by cluster)", "norm per frequency"),
    )
    # Row labels name the neuron and its cluster for the hover; one label per row costs a few kB,
    # a per-cell customdata array would cost as much as z itself.
    rows = [f"neuron {int(i)} (k={int(freq[i])})" for i in order]
    fig.add_trace(
        go.Heatmap(
            z=_f32(coefs[order]),
            x=list(spec.labels),
            y=rows,
            colorscale="Viridis",
            colorbar=dict(title="|coef|", x=0.68),
            hovertemplate="%{y}<br>%{x}<br>%{z:.3g}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=ks,
            y=_f32(fn[1:]),
            marker_color="#9467bd",
            showlegend=False,
            hovertemplate="frequency %{x}<br>norm %{y:.3g}<extra></extra>",
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(showticklabels=False, title_text="basis function (const, cos 1, sin 1, ...)", row=1, col=1)
    fig.update_yaxes(showticklabels=False, title_text="neuron", autorange="reversed", type="category", row=1, col=1)
    fig.update_xaxes(title_text="frequency k", row=1, col=2)
    fig.update_layout(template=TEMPLATE, title=title or "Neuron-logit map W_L in the Fourier basis", height=460)
    return fig


def checkpoint_comparison(comparison, title: Optional[str] = None) -> go.Figure:
    """Two checkpoints side by side (issue #4: memorising vs generalising), from a
    ``compare.ComparisonSummary`` (``Comparison.summary()``).

    Top: the share of each embedding's squared Fourier norm per frequency, and the neurons clearly
    assigned to each frequency, as grouped bars (a generalising model has a few tall bars at its
    key frequencies, a memorising one a flat spread). Bottom: the comparison table (losses,
    accuracies, key frequencies and their strength, Gini, FVE, RQI, weight norms, restricted /
    excluded loss, CKA between the two).
    """
    la, lb = (_esc(x) for x in comparison.labels)
    shares = [np.asarray(e, dtype=float)[1:] for e in comparison.embedding_energy]
    counts = [np.asarray(c, dtype=np.int64)[1:] for c in comparison.neuron_counts]
    rows = [(str(m), _fmt_value(a), _fmt_value(b)) for m, a, b in comparison.rows]
    thr = comparison.threshold
    fig = make_subplots(
        rows=2,
        cols=2,
        specs=[[{"type": "xy"}, {"type": "xy"}], [{"type": "table", "colspan": 2}, None]],
        vertical_spacing=0.08,
        row_heights=[0.3, 0.7],
        subplot_titles=("share of W_E's squared Fourier norm per frequency", f"neurons per frequency (FVE > {thr:g})"),
    )
    for col, vals in ((1, shares), (2, counts)):
        for i, (v, lbl, color) in enumerate(zip(vals, (la, lb), (TRAIN_COLOR, TEST_COLOR))):
            fig.add_trace(
                go.Bar(
                    x=np.arange(1, len(v) + 1, dtype=np.int32),
                    y=_f32(v),
                    name=lbl,
                    marker_color=color,
                    legendgroup=f"s{i}",
                    showlegend=col == 1,
                    hovertemplate=f"{lbl}<br>frequency %{{x}}<br>%{{y:.3g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text="frequency k", row=1, col=col)
    fig.add_trace(
        go.Table(
            columnwidth=[3, 1.4, 1.4],
            header=dict(values=["measure", la, lb], fill_color="#e8eef6", align="left", font=dict(size=12)),
            cells=dict(
                values=[[_esc(r[0]) for r in rows], [_esc(r[1]) for r in rows], [_esc(r[2]) for r in rows]],
                align=["left", "right", "right"],
                font=dict(size=11),
                height=21,
            ),
        ),
        row=2,
        col=1,
    )
    fig.update_layout(
        template=TEMPLATE,
        barmode="group",
        bargap=0.15,
        title=title or f"{la} vs {lb}",
        height=360 + 21 * len(rows) + 80,
        # above the panel titles, so it covers neither
        legend=dict(orientation="h", y=1.0, x=1, xanchor="right", yanchor="bottom", yref="container"),
    )
    return fig
