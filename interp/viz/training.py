"""Figures over training, from tables: each function returns a ``plotly.graph_objects.Figure``.

Inputs are the trainer's per-epoch metrics (``store.Run.metrics()``) and the analysis's
checkpoint table (``interp.analysis.analyze`` / ``run_table.checkpoint_table``), or stored
analysis results; nothing here loads a model.

* ``loss_curves``: train / test loss (log scale) and accuracy (REFERENCE §1, §5: T_mem, T_grok).
* ``progress_measures``: every progress measure of REFERENCE §3 with the phases shaded (§1).
* ``weight_norms``: sum of squared weights, total and per parameter (REFERENCE §3-5).
* ``representation_quality``: the embedding's RQI over training (REFERENCE §6), beside test accuracy.
* ``spectral_exponents``: HTSR alpha and correlation traps per weight matrix over training (REFERENCE §7).
* ``embedding_fourier_heatmap`` / ``neuron_logit_fourier_heatmap``: share of W_E's / W_L's
  Fourier norm in each frequency, frequency x epoch (REFERENCE §2).
* ``cka_matrix``: linear CKA between checkpoints (issue #4).
* ``embedding_fourier_norms_slider`` / ``neuron_cluster_sizes_slider`` (from the table) and
  ``embedding_circles_slider`` (from ``{epoch: [representation.Circle]}``): one figure with a
  slider over epochs.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.analysis.run_views import SLIDER_FRAMES, pick_epochs
from interp.errors import InterpError
from interp.viz.checkpoint import _circle_traces
from interp.viz.style import (
    MAX_LINE_POINTS,
    PALETTE,
    TEMPLATE,
    TEST_COLOR,
    TRAIN_COLOR,
    EmptyFigure,
    _bar_colors,
    _cols,
    _epochs,
    _esc,
    _f32,
    _np,
    _require,
    _shade_phases,
    _slider,
    _square_axes,
    _thin_frame,
    _title,
    _xscale_buttons,
    phase_spans,
)


def loss_curves(
    metrics, phases: Any = None, run_name: Optional[str] = None, max_points: int = MAX_LINE_POINTS
) -> go.Figure:
    """Train and test loss (log scale) and accuracy over training (REFERENCE §1).

    ``metrics``: the per-epoch table of ``store.Run.metrics()`` (or the analysis table). The loss
    panel shows the grokking signature: train loss falls first, test loss peaks at the end of
    memorisation and collapses at T_grok (dotted lines: T_mem, T_grok of REFERENCE §5; shaded bands:
    the phases when ``phases`` is given).
    """
    cols = ["train_loss", "test_loss", "train_acc", "test_acc"]
    _require(metrics, ["epoch", *cols], "loss_curves")
    df = _thin_frame(metrics, cols, max_points)
    x = _epochs(df["epoch"])
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("cross-entropy loss (log scale)", "accuracy"), horizontal_spacing=0.08
    )
    for split, color in (("train", TRAIN_COLOR), ("test", TEST_COLOR)):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_f32(df[f"{split}_loss"]),
                name=f"{split} loss",
                mode="lines",
                line=dict(color=color),
                legendgroup=split,
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_f32(df[f"{split}_acc"]),
                name=f"{split} accuracy",
                mode="lines",
                line=dict(color=color, dash="dash"),
                legendgroup=split,
            ),
            row=1,
            col=2,
        )
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    _shade_phases(fig, phases, [(1, 1), (1, 2)])
    fig.update_layout(
        template=TEMPLATE,
        title=_title("Loss and accuracy", run_name),
        height=420,
        updatemenus=_xscale_buttons(2),
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def _present(table, *series: tuple[str, str]) -> list[tuple[str, str, dict]]:
    """The (column, label) pairs whose column the table has, as a panel's plain line series."""
    return [(c, label, {}) for c, label in series if c in table.columns]


def progress_measures(
    table, phases: Any = None, run_name: Optional[str] = None, max_points: int = MAX_LINE_POINTS
) -> go.Figure:
    """Every progress measure of REFERENCE §3 over training, one panel each, phases shaded.

    ``table``: the analysis table of ``analysis.analyze`` (a row per checkpoint). Panels:
    losses (train, test, restricted, excluded; log scale), excluded loss per key frequency, the
    Gini coefficients of W_E's and W_L's Fourier norms, the sum of squared weights, the fraction of
    neurons with FVE > 0.85 and the share of logit variance explained by the key cos(w(a+b-c))
    terms, the cos(w(a+b-c)) coefficients, and the number of key frequencies found at each
    checkpoint. ``phases``: ``Phases`` / ``AnalysisSummary`` (bands: memorisation, circuit
    formation, cleanup; dotted lines: T_mem, T_grok).
    """
    _require(table, ["epoch", "train_loss", "test_loss"], "progress_measures")
    panels: list[tuple[str, list[tuple[str, str, dict]], bool]] = []
    loss_series = _present(
        table,
        ("train_loss", "train loss"),
        ("test_loss", "test loss"),
        ("restricted_loss", "restricted loss"),
        ("excluded_loss", "excluded loss (train)"),
    )
    panels.append(("losses (log scale)", loss_series, True))
    ex = _cols(table, "excluded_loss_k")
    if ex:
        panels.append(
            ("excluded loss per key frequency (train, log)", [(c, f"excluded k={k}", {}) for k, c in ex], True)
        )
    gini = _present(table, ("gini_W_E", "Gini of W_E Fourier norms"), ("gini_W_L", "Gini of W_L Fourier norms"))
    if gini:
        panels.append(("Gini coefficient (sparsity in frequency)", gini, False))
    if "sq_total" in table.columns:
        panels.append(("sum of squared weights", [("sq_total", "sum of squared weights", {})], False))
    frac = _present(
        table,
        ("frac_neurons_fve", "neurons with FVE > 0.85"),
        ("cos_fve", "logit variance in key cos(w(a+b-c)) terms"),
    )
    if frac:
        panels.append(("fractions", frac, False))
    margins = _present(
        table,
        ("interference_margin", "allowed by the key frequencies"),
        ("train_margin_ratio", "measured (median over train inputs)"),
    )
    if margins:
        panels.append(("logit margin / logit RMS", margins, False))
    cos = _cols(table, "cos_coef_k")
    if cos:
        panels.append(("cos(w(a+b-c)) coefficients", [(c, f"cos coef k={k}", {}) for k, c in cos], False))
    if "n_key_freqs" in table.columns:
        panels.append(
            ("number of key frequencies", [("n_key_freqs", "key frequencies at checkpoint", {"shape": "hv"})], False)
        )
    if "train_acc" in table.columns:
        panels.append(("accuracy", [("train_acc", "train accuracy", {}), ("test_acc", "test accuracy", {})], False))

    ncols = 2
    nrows = math.ceil(len(panels) / ncols)
    fig = make_subplots(
        rows=nrows,
        cols=ncols,
        subplot_titles=[p[0] for p in panels],
        vertical_spacing=0.32 / nrows,
        horizontal_spacing=0.1,
    )
    all_cols = [c for _, series, _ in panels for c, _, _ in series]
    df = _thin_frame(table, all_cols, max_points)
    x = _epochs(df["epoch"])
    color_of: dict[str, str] = {
        "train_loss": TRAIN_COLOR,
        "test_loss": TEST_COLOR,
        "train_acc": TRAIN_COLOR,
        "test_acc": TEST_COLOR,
        "restricted_loss": "#2ca02c",
        "excluded_loss": "#9467bd",
    }
    cells = []
    for i, (name, series, logy) in enumerate(panels):
        r, c = i // ncols + 1, i % ncols + 1
        cells.append((r, c))
        for j, (col, label, line) in enumerate(series):
            color = color_of.get(col, PALETTE[j % len(PALETTE)])
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=_f32(df[col]),
                    name=label,
                    mode="lines",
                    line=dict(color=color, **line),
                    showlegend=True,
                    legendgroup=f"p{i}",
                    hovertemplate=f"{label}<br>epoch %{{x}}<br>%{{y:.4g}}<extra></extra>",
                ),
                row=r,
                col=c,
            )
        if logy:
            fig.update_yaxes(type="log", exponentformat="power", row=r, col=c)
    _shade_phases(fig, phases, cells)
    fig.update_xaxes(title_text="epoch", title_standoff=4)
    fig.update_layout(
        template=TEMPLATE,
        title=_title("Progress measures over training", run_name),
        height=300 * nrows + 120,
        updatemenus=_xscale_buttons(len(cells), y=1.0 + 0.3 / nrows),
        legend=dict(font=dict(size=10)),
    )
    return fig


def weight_norms(
    metrics, phases: Any = None, run_name: Optional[str] = None, max_points: int = MAX_LINE_POINTS
) -> go.Figure:
    """Sum of squared weights over training, total and per parameter, log scale (REFERENCE §3-5).

    ``metrics``: a table with ``epoch`` and ``sq_total`` / ``sq_<parameter>`` columns (the trainer's
    metrics or the analysis table). Parameters that stay exactly zero (frozen biases) are left out.
    Weight decay shrinks the total during circuit formation and cleanup (Omnigrok's LU picture).
    """
    _require(metrics, ["epoch", "sq_total"], "weight_norms")
    cols = ["sq_total"] + [
        c
        for c in metrics.columns
        if str(c).startswith("sq_")
        and c != "sq_total"
        and float(np.nanmax(np.abs(metrics[c].to_numpy(dtype=float)))) > 0
    ]
    df = _thin_frame(metrics, cols, max_points)
    x = _epochs(df["epoch"])
    fig = go.Figure()
    for j, c in enumerate(cols):
        label = "total" if c == "sq_total" else c[3:]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_f32(df[c]),
                name=_esc(label),
                mode="lines",
                line=dict(width=3 if c == "sq_total" else 1.5, color="#000" if c == "sq_total" else PALETTE[j % 10]),
                hovertemplate=f"{_esc(label)}<br>epoch %{{x}}<br>%{{y:.4g}}<extra></extra>",
            )
        )
    fig.update_yaxes(type="log", exponentformat="power", title_text="sum of squared weights")
    fig.update_xaxes(title_text="epoch")
    _shade_phases(fig, phases)
    fig.update_layout(
        template=TEMPLATE,
        title=_title("Weight norms per parameter", run_name),
        height=440,
        updatemenus=_xscale_buttons(1),
    )
    return fig


def representation_quality(
    table, phases: Any = None, run_name: Optional[str] = None, max_points: int = MAX_LINE_POINTS
) -> go.Figure:
    """The Representation Quality Index of the embedding over training (REFERENCE §6), from the
    analysis table's ``rqi`` column (circle chart on the final key frequencies, the same planes at
    every checkpoint), with test accuracy for reference; phases shaded, T_mem / T_grok marked."""
    _require(table, ["epoch", "rqi"], "representation_quality")
    if not np.isfinite(table["rqi"].to_numpy(dtype=float)).any():
        raise EmptyFigure("no RQI: the run has no key frequencies to draw circles on")
    cols = ["rqi"] + (["test_acc"] if "test_acc" in table.columns else [])
    df = _thin_frame(table, cols, max_points)
    x = _epochs(df["epoch"])
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=x,
            y=_f32(df["rqi"]),
            name="RQI (circle chart, key-frequency planes)",
            mode="lines+markers",
            marker=dict(size=4),
            line=dict(color="#9467bd", width=2),
            hovertemplate="epoch %{x}<br>RQI %{y:.4g}<extra></extra>",
        )
    )
    if "test_acc" in cols:
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_f32(df["test_acc"]),
                name="test accuracy",
                mode="lines",
                line=dict(color=TEST_COLOR, dash="dash", width=1),
                hovertemplate="epoch %{x}<br>test accuracy %{y:.4g}<extra></extra>",
            )
        )
    fig.update_yaxes(range=[0, 1.02], title_text="RQI")
    fig.update_xaxes(title_text="epoch")
    _shade_phases(fig, phases)
    fig.update_layout(
        template=TEMPLATE,
        title=_title("Representation Quality Index of the embedding", run_name),
        height=420,
        updatemenus=_xscale_buttons(1),
    )
    return fig


def spectral_exponents(
    table, phases: Any = None, run_name: Optional[str] = None, max_points: int = MAX_LINE_POINTS
) -> go.Figure:
    """HTSR over training (REFERENCE §7), from the table's ``alpha_<matrix>`` / ``traps_<matrix>``
    columns (``interp analyze`` with spectra): the power-law exponent of each weight matrix's
    eigenvalue tail (dotted lines at alpha = 2, ideal, and 6: above it under-trained, below 2
    over-correlated) and the number of correlation traps; checkpoints without spectra are skipped."""
    alphas = [c for c in table.columns if str(c).startswith("alpha_")]
    if not alphas:
        raise InterpError("the table has no alpha_<matrix> columns (run `interp analyze` with spectra)")
    traps = [c for c in table.columns if str(c).startswith("traps_")]
    t = table.dropna(subset=alphas + traps, how="all")
    if not len(t):
        raise EmptyFigure("no checkpoint has spectra")
    df = _thin_frame(t, alphas + traps, max_points)
    x = _epochs(df["epoch"])
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("power-law exponent alpha of the ESD tail", "correlation traps"),
        horizontal_spacing=0.08,
    )
    for j, c in enumerate(alphas):
        name = _esc(str(c)[len("alpha_") :])
        color = PALETTE[j % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=x,
                y=_f32(df[c]),
                name=name,
                mode="lines+markers",
                marker=dict(size=4),
                line=dict(color=color),
                legendgroup=name,
                hovertemplate=f"{name}<br>epoch %{{x}}<br>alpha %{{y:.3g}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        tc = f"traps_{str(c)[len('alpha_') :]}"
        if tc in df.columns:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=_f32(df[tc]),
                    name=name,
                    mode="lines",
                    line=dict(color=color, shape="hv"),
                    legendgroup=name,
                    showlegend=False,
                    hovertemplate=f"{name}<br>epoch %{{x}}<br>%{{y}} traps<extra></extra>",
                ),
                row=1,
                col=2,
            )
    for y, label in ((2.0, "alpha = 2 (ideal; below: over-correlated)"), (6.0, "alpha = 6 (above: under-trained)")):
        fig.add_hline(y=y, line_dash="dot", line_color="#444", line_width=1, row=1, col=1)
        fig.add_annotation(
            x=1.0,
            xref="x domain",
            y=y,
            yref="y",
            text=label,
            showarrow=False,
            xanchor="right",
            yanchor="bottom",
            font=dict(size=9),
        )
    fig.update_yaxes(title_text="alpha", row=1, col=1)
    fig.update_yaxes(title_text="traps", rangemode="tozero", row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    _shade_phases(fig, phases, [(1, 1), (1, 2)])
    fig.update_layout(
        template=TEMPLATE,
        title=_title("Heavy-tailed spectra of the weight matrices (HTSR)", run_name),
        height=460,
        updatemenus=_xscale_buttons(2),
    )
    return fig


def _freq_epoch_heatmap(table, prefix: str, what: str, run_name: Optional[str], phases: Any) -> go.Figure:
    cols = [(k, c) for k, c in _cols(table, prefix) if k >= 1]
    if not cols:
        raise InterpError(f"the table has no {prefix}<k> columns (run `interp analyze` first)")
    t = table.sort_values("epoch")
    norms = t[[c for _, c in cols]].to_numpy(dtype=float)  # [epochs, K]
    sq = norms**2
    tot = sq.sum(1, keepdims=True)
    share = np.divide(sq, tot, out=np.zeros_like(sq), where=tot > 0)
    # Checkpoints are log-spaced early then every N epochs; equal-width columns (one per
    # checkpoint) keep the early ones visible, the hover tells the epoch.
    epochs = _epochs(t["epoch"])
    ks = np.array([k for k, _ in cols], dtype=np.int32)
    fig = go.Figure(
        go.Heatmap(
            z=_f32(share.T),
            x=np.arange(len(epochs), dtype=np.int32),
            y=ks,
            colorscale="Viridis",
            customdata=np.broadcast_to(epochs, share.T.shape).astype(np.int32),
            colorbar=dict(title="share of<br>norm²"),
            hovertemplate="epoch %{customdata}<br>frequency %{y}<br>share %{z:.3f}<extra></extra>",
        )
    )
    ticks = pick_epochs(range(len(epochs)), 12)
    fig.update_xaxes(
        title_text="checkpoint (epoch)", tickmode="array", tickvals=ticks, ticktext=[str(int(epochs[i])) for i in ticks]
    )
    fig.update_yaxes(title_text="frequency k")
    spans, marks = phase_spans(phases)
    for name, e in marks.items():
        if e is not None:
            i = float(np.searchsorted(epochs, int(e)))
            fig.add_vline(x=i - 0.5, line_dash="dot", line_color="white", line_width=1)
            fig.add_annotation(
                x=i - 0.5, y=1.0, yref="y domain", text=name, showarrow=False, yanchor="bottom", font=dict(size=9)
            )
    fig.update_layout(
        template=TEMPLATE, title=_title(f"{what}: share of squared Fourier norm per frequency", run_name), height=440
    )
    return fig


def embedding_fourier_heatmap(table, run_name: Optional[str] = None, phases: Any = None) -> go.Figure:
    """W_E's Fourier norms over training: frequency x checkpoint heatmap (REFERENCE §2).

    Colour: share of the embedding's non-constant squared Fourier norm in frequency k, from the
    analysis table's ``emb_norm_k{k}`` columns. It starts spread over all frequencies and
    concentrates on the key frequencies as the circuit forms and cleanup removes the rest.
    """
    return _freq_epoch_heatmap(table, "emb_norm_k", "Embedding W_E", run_name, phases)


def neuron_logit_fourier_heatmap(table, run_name: Optional[str] = None, phases: Any = None) -> go.Figure:
    """W_L = W_out W_U's Fourier norms over training, frequency x checkpoint (REFERENCE §2), from
    the ``wl_norm_k{k}`` columns; the same sparsification as the embedding's."""
    return _freq_epoch_heatmap(table, "wl_norm_k", "Neuron-logit map W_L", run_name, phases)


def cka_matrix(
    matrix,
    epochs: Optional[Sequence[int]] = None,
    title: str = "Linear CKA between checkpoints",
    run_name: Optional[str] = None,
    labels_b: Optional[Sequence[Any]] = None,
) -> go.Figure:
    """Linear CKA between checkpoints (issue #4): entry (i, j) compares the representation at
    checkpoint i with that at checkpoint j (1 = the same up to rotation and scale).

    ``matrix``: [n, n] (or [n, m] between two runs, columns labelled by ``labels_b``); a pandas
    DataFrame supplies its own labels. Axes are one cell per checkpoint, labelled by epoch.
    """
    if hasattr(matrix, "to_numpy") and hasattr(matrix, "index"):
        epochs = list(matrix.index) if epochs is None else epochs
        labels_b = list(matrix.columns) if labels_b is None else labels_b
        matrix = matrix.to_numpy(dtype=float)
    M = _np(matrix).astype(float)
    if M.ndim != 2:
        raise ValueError(f"a CKA matrix must be 2-D, got shape {M.shape}")
    rows = [str(e) for e in (epochs if epochs is not None else range(M.shape[0]))]
    cols = [str(e) for e in (labels_b if labels_b is not None else rows)]
    fig = go.Figure(
        go.Heatmap(
            z=_f32(M),
            x=cols,
            y=rows,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            colorbar=dict(title="CKA"),
            hovertemplate="%{y} vs %{x}<br>CKA %{z:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(type="category", title_text="epoch", nticks=12)
    fig.update_yaxes(type="category", title_text="epoch", nticks=12, autorange="reversed")
    fig.update_layout(template=TEMPLATE, title=_title(_esc(title), run_name), height=560, width=640)
    return fig


def embedding_fourier_norms_slider(
    table,
    key_freqs: Optional[Sequence[int]] = None,
    max_frames: int = SLIDER_FRAMES,
    title: Optional[str] = None,
    include: Iterable[Optional[int]] = (),
) -> go.Figure:
    """``checkpoint.embedding_fourier_norms`` at many checkpoints, one figure with a slider over epochs.

    ``table``: the analysis table (its ``emb_norm_k{k}`` columns). The y range is fixed to the
    largest norm of all frames so that growth and decay are visible.
    """
    cols = [(k, c) for k, c in _cols(table, "emb_norm_k") if k >= 1]
    if not cols:
        raise InterpError("the table has no emb_norm_k<k> columns (run `interp analyze` first)")
    t = table.sort_values("epoch").set_index("epoch")
    epochs = pick_epochs(t.index, max_frames, include)
    data = {e: t.loc[e, [c for _, c in cols]].to_numpy(dtype=float) for e in epochs}
    K = len(next(iter(data.values())))
    ks = np.arange(1, K + 1, dtype=np.int32)
    colors = _bar_colors(ks, key_freqs or [])
    ymax = max(float(np.nanmax(v)) for v in data.values()) * 1.05 or 1.0

    def bar(e: int) -> go.Bar:
        return go.Bar(
            x=ks, y=_f32(data[e]), marker_color=colors, hovertemplate="frequency %{x}<br>norm %{y:.3g}<extra></extra>"
        )

    labels = [str(e) for e in epochs]
    # frames carry only what changes (y): the marker colours and hover text stay from the base trace
    fig = go.Figure(
        data=[bar(epochs[-1])],
        frames=[go.Frame(data=[{"type": "bar", "y": _f32(data[e])}], name=str(e)) for e in epochs],
    )
    _slider(fig, labels, len(labels) - 1)
    fig.update_xaxes(title_text="frequency k")
    fig.update_yaxes(title_text="‖F W_E‖", range=[0, ymax])
    fig.update_layout(template=TEMPLATE, title=title or "Embedding Fourier norms over training", height=460, bargap=0.1)
    return fig


def neuron_cluster_sizes_slider(
    table, max_frames: int = SLIDER_FRAMES, title: Optional[str] = None, include: Iterable[Optional[int]] = ()
) -> go.Figure:
    """``checkpoint.neuron_cluster_sizes`` at many checkpoints, one figure with a slider over epochs.

    ``table``: the analysis table (its ``neurons_k{k}`` columns).
    """
    cols = _cols(table, "neurons_k")
    if not cols:
        raise InterpError("the table has no neurons_k<k> columns (run `interp analyze` first)")
    t = table.sort_values("epoch").set_index("epoch")
    epochs = pick_epochs(t.index, max_frames, include)
    data = {e: t.loc[e, [c for _, c in cols]].to_numpy(dtype=float) for e in epochs}
    ks = np.array([k for k, _ in cols], dtype=np.int32)
    ymax = max(1.0, max(float(np.nanmax(v)) for v in data.values()) * 1.05)

    def bar(e: int) -> go.Bar:
        return go.Bar(
            x=ks,
            y=np.nan_to_num(data[e]).astype(np.int32),
            marker_color="#2ca02c",
            hovertemplate="frequency %{x}<br>%{y} neurons<extra></extra>",
        )

    labels = [str(e) for e in epochs]
    frames = [
        go.Frame(data=[{"type": "bar", "y": np.nan_to_num(data[e]).astype(np.int32)}], name=str(e)) for e in epochs
    ]
    fig = go.Figure(data=[bar(epochs[-1])], frames=frames)
    _slider(fig, labels, len(labels) - 1)
    fig.update_xaxes(title_text="frequency k")
    fig.update_yaxes(title_text="neurons clearly assigned", range=[0, ymax])
    fig.update_layout(
        template=TEMPLATE, title=title or "Neuron clusters by frequency over training", height=460, bargap=0.1
    )
    return fig


def embedding_circles_slider(
    circles: Mapping[int, Sequence],
    max_frames: int = SLIDER_FRAMES,
    title: Optional[str] = None,
    include: Iterable[Optional[int]] = (),
) -> go.Figure:
    """``checkpoint.embedding_circles`` on fixed frequencies (usually the final key frequencies) at
    many checkpoints, one figure with a slider over epochs: the circles form out of a blob.

    ``circles``: {epoch: [representation.Circle, one per frequency]} (``run_views.RunViews.circles``).
    Each panel is scaled to its largest radius in every frame (the axes stay put; weight decay
    would otherwise shrink the picture); the current frame's plane share and circularity are in
    the hover text.
    """
    if not circles:
        raise EmptyFigure("no checkpoints given for the circles slider")
    epochs = pick_epochs(circles.keys(), max_frames, include)
    per_epoch = {e: list(circles[e]) for e in epochs}
    freqs = [c.k for c in per_epoch[epochs[-1]]]
    if not freqs:
        raise EmptyFigure("the circles slider needs at least one frequency")
    n = len(freqs)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"k={k}" for k in freqs],
        horizontal_spacing=0.04,
        vertical_spacing=0.12 / rows,
    )

    def hover(e: int, c) -> str:
        return (
            f"k={c.k} at epoch {e}<br>token %{{customdata}}<br>plane share {c.energy_share:.0%}, "
            f"circularity {c.circularity:.2f}<extra></extra>"
        )

    last = epochs[-1]
    for i, (tr, c) in enumerate(zip(_circle_traces(per_epoch[last], True, False), per_epoch[last])):
        tr.hovertemplate = hover(last, c)
        fig.add_trace(tr, row=i // cols + 1, col=i % cols + 1)

    def frame_data(e: int) -> list[dict]:
        # only what changes per frame (positions, hover text); colours and tokens stay from the base traces
        out = []
        for c in per_epoch[e]:
            xy = _np(c.coords).astype(float)
            r = np.sqrt((xy**2).sum(1)).max()
            xy = xy / r if r > 0 else xy
            out.append({"type": "scatter", "x": _f32(xy[:, 0]), "y": _f32(xy[:, 1]), "hovertemplate": hover(e, c)})
        return out

    fig.frames = [go.Frame(data=frame_data(e), name=str(e), traces=list(range(n))) for e in epochs]
    _square_axes(fig, n, fixed=1.1)
    _slider(fig, [str(e) for e in epochs], len(epochs) - 1)
    fig.update_layout(
        template=TEMPLATE,
        title=title or "Embedding circles over training (each panel scaled to radius 1)",
        height=300 * rows + 160,
    )
    return fig
