"""Plotly figures of every measure: each function returns a ``plotly.graph_objects.Figure``.

Nothing here reads or writes files: figures are built from tables and models already in memory
(``store.Run.metrics()``, ``analysis.analyze(run)``, ``store.Run.load_model(epoch)``), so a notebook
can show any of them and ``interp.viz.report`` can put them all in one HTML page.

Over training (one point per logged epoch or per checkpoint):

* ``loss_curves``: train / test loss (log scale) and accuracy (REFERENCE §1, §5: T_mem, T_grok).
* ``progress_measures``: every progress measure of REFERENCE §3 with the phases shaded (§1).
* ``weight_norms``: sum of squared weights, total and per parameter (REFERENCE §3-5).
* ``embedding_fourier_heatmap`` / ``neuron_logit_fourier_heatmap``: share of W_E's / W_L's
  Fourier norm in each frequency, frequency x epoch (REFERENCE §2).
* ``cka_matrix``: linear CKA between checkpoints (issue #4).

One checkpoint (a model in memory):

* ``embedding_fourier_norms`` (REFERENCE §2), ``neuron_cluster_sizes`` (§2), ``embedding_circles``
  (Nanda et al. 2023 Fig. 3; REFERENCE §2), ``neuron_activations`` (maps and 2D spectra, §2),
  ``attention_patterns`` (attention from '=' per head), ``neuron_logit_fourier`` (W_L, §2).
* ``embedding_fourier_norms_slider`` / ``neuron_cluster_sizes_slider`` / ``embedding_circles_slider``:
  the same three views over many checkpoints, as one figure with a slider over epochs.
* ``checkpoint_comparison``: two checkpoints side by side (memorising vs generalising).

Size: a figure's numbers travel as base64 typed arrays (plotly >= 6), in float32 where the
plotted precision allows it, and per-epoch curves are thinned to ``MAX_LINE_POINTS`` epochs
(log-spaced early, evenly spaced later, with each curve's extremes kept), so the report of a
25k-epoch, 250-checkpoint run stays a few MB.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from interp.errors import InterpError

__all__ = [
    "MAX_LINE_POINTS", "MAX_SLIDER_FRAMES", "thin_indices", "phase_spans",
    "loss_curves", "progress_measures", "weight_norms", "embedding_fourier_heatmap",
    "neuron_logit_fourier_heatmap", "cka_matrix", "embedding_fourier_norms", "neuron_cluster_sizes",
    "embedding_circles", "neuron_activations", "attention_patterns", "neuron_logit_fourier",
    "embedding_fourier_norms_slider", "neuron_cluster_sizes_slider", "embedding_circles_slider",
    "checkpoint_comparison", "pick_epochs",
]

# A 25k-epoch curve drawn with 1,500 points is indistinguishable at screen resolution from the
# full one (the page is < 1,500 px wide) and 17x smaller.
MAX_LINE_POINTS = 1500
# More slider steps than this cannot be told apart by dragging, and every frame costs bytes.
MAX_SLIDER_FRAMES = 60

TEMPLATE = "plotly_white"
TRAIN_COLOR, TEST_COLOR = "#1f77b4", "#d62728"
PHASE_COLORS = {"memorisation": "#9ecae1", "circuit formation": "#fdd0a2", "cleanup": "#a1d99b"}
# Colours for the lines of many series (key frequencies, parameters); plotly's default cycle.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def _esc(s: Any) -> str:
    """Text that plotly renders literally: plotly.js reads a subset of HTML in titles, labels and
    hover text, so a user string (run name, notes) is escaped before it goes into a figure."""
    return html.escape(str(s), quote=True)


# ----------------------------------------------------------------------------- thinning


def thin_indices(n: int, max_points: int = MAX_LINE_POINTS, keep: Iterable[int] = ()) -> np.ndarray:
    """Indices of at most ~``max_points`` (+ ``keep``) rows out of ``n`` consecutive epochs.

    Half the budget is log-spaced (grokking happens on a log clock: epochs 1, 2, 4, ... matter as
    much as 10k..20k), half evenly spaced (so the long flat stretches keep their shape); the
    first and last rows and the rows in ``keep`` (each curve's extremes) are always kept.
    """
    if n <= max_points:
        return np.arange(n)
    half = max(2, max_points // 2)
    lin = np.linspace(0, n - 1, half)
    log = np.geomspace(1, n, half) - 1
    extra = np.fromiter((int(k) for k in keep), dtype=np.int64)
    idx = np.concatenate([np.rint(lin), np.rint(log), extra, [0, n - 1]]).astype(np.int64)
    return np.unique(np.clip(idx, 0, n - 1))


def _thin_frame(df, columns: Sequence[str], max_points: int):
    """Rows of ``df`` (sorted by epoch) thinned by ``thin_indices``, keeping each column's min and max."""
    df = df.sort_values("epoch").reset_index(drop=True)
    keep = []
    for c in columns:
        v = df[c].to_numpy(dtype=float)
        if np.isfinite(v).any():
            keep += [int(np.nanargmin(v)), int(np.nanargmax(v))]
    return df.iloc[thin_indices(len(df), max_points, keep)]


def _f32(x) -> np.ndarray:
    """float32 for plotting: 7 significant digits, half the bytes of float64. Values beyond float32's
    range (losses of 1e-300) are clamped to its smallest normal number instead of becoming 0."""
    a = np.asarray(x, dtype=np.float64)
    tiny = np.finfo(np.float32).tiny
    a = np.where((a != 0) & (np.abs(a) < tiny), np.sign(a) * tiny, a)
    return a.astype(np.float32)


def _epochs(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64).astype(np.int32)


def _np(t) -> np.ndarray:
    """A tensor or array as a numpy array (detached, on the CPU)."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.asarray(t)


def pick_epochs(epochs: Sequence[int], max_count: int = MAX_SLIDER_FRAMES, include: Iterable[Optional[int]] = ()) -> list[int]:
    """At most ~``max_count`` of ``epochs``, evenly spread over the checkpoint list (whose schedule is
    already log-spaced early), always with the first, the last and the epochs nearest ``include``."""
    eps = sorted({int(e) for e in epochs})
    if len(eps) <= max_count:
        return eps
    idx = set(np.rint(np.linspace(0, len(eps) - 1, max_count)).astype(int).tolist())
    arr = np.asarray(eps)
    for e in include:
        if e is not None:
            idx.add(int(np.abs(arr - int(e)).argmin()))
    return [eps[i] for i in sorted(idx)]


# ----------------------------------------------------------------------------- phases


def phase_spans(phases: Any) -> tuple[list[tuple[str, float, float]], dict[str, Optional[int]]]:
    """([(phase name, start, end)], {"T_mem": .., "T_grok": ..}) from whatever describes the phases.

    Accepts an ``interp.analysis.phases.Phases``, an ``interp.analysis.AnalysisSummary`` (its ``.phases``),
    their ``to_dict()`` forms, or None (no phases).
    """
    if phases is None:
        return [], {}
    if hasattr(phases, "phases") and not isinstance(phases, dict):
        phases = phases.phases
    if isinstance(phases, dict) and "phases" in phases and isinstance(phases["phases"], dict):
        phases = phases["phases"]
    get = phases.get if isinstance(phases, dict) else (lambda k, d=None: getattr(phases, k, d))
    spans = []
    for key, label in (("memorisation", "memorisation"), ("circuit_formation", "circuit formation"), ("cleanup", "cleanup")):
        iv = get(key)
        if iv is not None and len(iv) == 2 and iv[0] is not None and iv[1] is not None:
            spans.append((label, float(iv[0]), float(iv[1])))
    marks = {"T_mem": get("t_mem", get("T_mem")), "T_grok": get("t_grok", get("T_grok"))}
    return spans, marks


def _shade_phases(fig: go.Figure, phases: Any, cells: Optional[Sequence[tuple[int, int]]] = None) -> None:
    """Shade each phase as a vertical band and mark T_mem (dashed) and T_grok (dotted), on every
    subplot in ``cells`` (default: the figure's only plot).

    Bands and lines are shapes (a few bytes each, unlike filled traces). They are named in the
    legend through empty traces rather than by text annotations, because annotations on a log
    axis take log10 coordinates and would drift when the reader switches the epoch axis to log.
    """
    spans, marks = phase_spans(phases)
    shapes = []
    for cell in cells or [None]:
        xr, yr = ("x", "y") if cell is None else _axis_ref(fig, *cell)
        base = dict(xref=xr, yref=f"{yr} domain", y0=0, y1=1, layer="below")
        for label, x0, x1 in spans:
            # a band may not start at epoch 0: on a log axis log(0) breaks the shape's path
            shapes.append(dict(type="rect", x0=max(x0, 0.5), x1=max(x1, x0 + 1.0), fillcolor=PHASE_COLORS[label],
                               opacity=0.35, line=dict(width=0), **base))
        for name, x in marks.items():
            if x is not None:
                shapes.append(dict(type="line", x0=max(float(x), 0.5), x1=max(float(x), 0.5),
                                   line=dict(color="#444", dash=MARK_DASH[name], width=1), **base))
    # one assignment: plotly's add_vrect per subplot re-validates every shape each time (quadratic)
    fig.update_layout(shapes=list(fig.layout.shapes or ()) + shapes)
    for label, x0, x1 in spans:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{label} {int(x0)}–{int(x1)}",
                                 marker=dict(symbol="square", size=12, color=PHASE_COLORS[label]),
                                 legendgroup="phases", legendgrouptitle_text="phases"))
    for name, x in marks.items():
        if x is not None:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"{name} = {int(x)}",
                                     line=dict(color="#444", dash=MARK_DASH[name], width=1), legendgroup="phases"))


MARK_DASH = {"T_mem": "dash", "T_grok": "dot"}


def _axis_ref(fig: go.Figure, row: int, col: int) -> tuple[str, str]:
    sp = fig.get_subplot(row, col)
    return sp.xaxis.plotly_name.replace("axis", ""), sp.yaxis.plotly_name.replace("axis", "")


def _xscale_buttons(n_axes: int, y: float = 1.12) -> list[dict]:
    """Buttons that switch every x axis between linear and log epochs (grokking reads better on
    a log clock early and on a linear one late)."""
    def relayout(kind: str) -> dict:
        d = {}
        for i in range(1, n_axes + 1):
            d[f"xaxis{'' if i == 1 else i}.type"] = kind
        return d
    return [dict(type="buttons", direction="right", x=1.0, xanchor="right", y=y, yanchor="bottom", showactive=True,
                 buttons=[dict(label="linear epochs", method="relayout", args=[relayout("linear")]),
                          dict(label="log epochs", method="relayout", args=[relayout("log")])])]


def _title(text: str, run_name: Optional[str]) -> str:
    return f"{text} — {_esc(run_name)}" if run_name else text


def _require(df, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InterpError(f"{what} needs column(s) {', '.join(missing)} (got {', '.join(map(str, df.columns[:8]))}, ...)")


# ----------------------------------------------------------------------------- over training


def loss_curves(metrics, phases: Any = None, run_name: Optional[str] = None, max_points: int = MAX_LINE_POINTS) -> go.Figure:
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
    fig = make_subplots(rows=1, cols=2, subplot_titles=("cross-entropy loss (log scale)", "accuracy"),
                        horizontal_spacing=0.08)
    for split, color in (("train", TRAIN_COLOR), ("test", TEST_COLOR)):
        fig.add_trace(go.Scatter(x=x, y=_f32(df[f"{split}_loss"]), name=f"{split} loss", mode="lines",
                                 line=dict(color=color), legendgroup=split), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=_f32(df[f"{split}_acc"]), name=f"{split} accuracy", mode="lines",
                                 line=dict(color=color, dash="dash"), legendgroup=split), row=1, col=2)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    _shade_phases(fig, phases, [(1, 1), (1, 2)])
    fig.update_layout(template=TEMPLATE, title=_title("Loss and accuracy", run_name), height=420,
                      updatemenus=_xscale_buttons(2), legend=dict(orientation="h", y=-0.2))
    return fig


def _cols(df, prefix: str) -> list[tuple[int, str]]:
    """[(k, column)] for columns named ``<prefix><k>``, sorted by k."""
    out = []
    for c in df.columns:
        m = re.fullmatch(re.escape(prefix) + r"(\d+)", str(c))
        if m:
            out.append((int(m.group(1)), c))
    return sorted(out)


def progress_measures(table, phases: Any = None, run_name: Optional[str] = None, max_points: int = MAX_LINE_POINTS) -> go.Figure:
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
    loss_series = [(c, lbl, {}) for c, lbl in (("train_loss", "train loss"), ("test_loss", "test loss"),
                                                ("restricted_loss", "restricted loss"),
                                                ("excluded_loss", "excluded loss (train)")) if c in table.columns]
    panels.append(("losses (log scale)", loss_series, True))
    ex = _cols(table, "excluded_loss_k")
    if ex:
        panels.append(("excluded loss per key frequency (train, log)", [(c, f"excluded k={k}", {}) for k, c in ex], True))
    gini = [(c, lbl, {}) for c, lbl in (("gini_W_E", "Gini of W_E Fourier norms"), ("gini_W_L", "Gini of W_L Fourier norms"))
            if c in table.columns]
    if gini:
        panels.append(("Gini coefficient (sparsity in frequency)", gini, False))
    if "sq_total" in table.columns:
        panels.append(("sum of squared weights", [("sq_total", "sum of squared weights", {})], False))
    frac = [(c, lbl, {}) for c, lbl in (("frac_neurons_fve", "neurons with FVE > 0.85"),
                                        ("cos_fve", "logit variance in key cos(w(a+b-c)) terms")) if c in table.columns]
    if frac:
        panels.append(("fractions", frac, False))
    cos = _cols(table, "cos_coef_k")
    if cos:
        panels.append(("cos(w(a+b-c)) coefficients", [(c, f"cos coef k={k}", {}) for k, c in cos], False))
    if "n_key_freqs" in table.columns:
        panels.append(("number of key frequencies", [("n_key_freqs", "key frequencies at checkpoint", {"shape": "hv"})], False))
    if "train_acc" in table.columns:
        panels.append(("accuracy", [("train_acc", "train accuracy", {}), ("test_acc", "test accuracy", {})], False))

    ncols = 2
    nrows = math.ceil(len(panels) / ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[p[0] for p in panels], vertical_spacing=0.32 / nrows,
                        horizontal_spacing=0.1)
    all_cols = [c for _, series, _ in panels for c, _, _ in series]
    df = _thin_frame(table, all_cols, max_points)
    x = _epochs(df["epoch"])
    color_of: dict[str, str] = {"train_loss": TRAIN_COLOR, "test_loss": TEST_COLOR, "train_acc": TRAIN_COLOR,
                                "test_acc": TEST_COLOR, "restricted_loss": "#2ca02c", "excluded_loss": "#9467bd"}
    cells = []
    for i, (name, series, logy) in enumerate(panels):
        r, c = i // ncols + 1, i % ncols + 1
        cells.append((r, c))
        for j, (col, label, line) in enumerate(series):
            color = color_of.get(col, PALETTE[j % len(PALETTE)])
            fig.add_trace(go.Scatter(x=x, y=_f32(df[col]), name=label, mode="lines", line=dict(color=color, **line),
                                     showlegend=True, legendgroup=f"p{i}",
                                     hovertemplate=f"{label}<br>epoch %{{x}}<br>%{{y:.4g}}<extra></extra>"),
                          row=r, col=c)
        if logy:
            fig.update_yaxes(type="log", exponentformat="power", row=r, col=c)
    _shade_phases(fig, phases, cells)
    fig.update_xaxes(title_text="epoch", title_standoff=4)
    fig.update_layout(template=TEMPLATE, title=_title("Progress measures over training", run_name),
                      height=300 * nrows + 120, updatemenus=_xscale_buttons(len(cells), y=1.0 + 0.3 / nrows),
                      legend=dict(font=dict(size=10)))
    return fig


def weight_norms(metrics, phases: Any = None, run_name: Optional[str] = None, max_points: int = MAX_LINE_POINTS) -> go.Figure:
    """Sum of squared weights over training, total and per parameter, log scale (REFERENCE §3-5).

    ``metrics``: a table with ``epoch`` and ``sq_total`` / ``sq_<parameter>`` columns (the trainer's
    metrics or the analysis table). Parameters that stay exactly zero (frozen biases) are left out.
    Weight decay shrinks the total during circuit formation and cleanup (Omnigrok's LU picture).
    """
    _require(metrics, ["epoch", "sq_total"], "weight_norms")
    cols = ["sq_total"] + [c for c in metrics.columns if str(c).startswith("sq_") and c != "sq_total"
                           and float(np.nanmax(np.abs(metrics[c].to_numpy(dtype=float)))) > 0]
    df = _thin_frame(metrics, cols, max_points)
    x = _epochs(df["epoch"])
    fig = go.Figure()
    for j, c in enumerate(cols):
        label = "total" if c == "sq_total" else c[3:]
        fig.add_trace(go.Scatter(x=x, y=_f32(df[c]), name=_esc(label), mode="lines",
                                 line=dict(width=3 if c == "sq_total" else 1.5, color="#000" if c == "sq_total" else PALETTE[j % 10]),
                                 hovertemplate=f"{_esc(label)}<br>epoch %{{x}}<br>%{{y:.4g}}<extra></extra>"))
    fig.update_yaxes(type="log", exponentformat="power", title_text="sum of squared weights")
    fig.update_xaxes(title_text="epoch")
    _shade_phases(fig, phases)
    fig.update_layout(template=TEMPLATE, title=_title("Weight norms per parameter", run_name), height=440,
                      updatemenus=_xscale_buttons(1))
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
    fig = go.Figure(go.Heatmap(
        z=_f32(share.T), x=np.arange(len(epochs), dtype=np.int32), y=ks, colorscale="Viridis",
        customdata=np.broadcast_to(epochs, share.T.shape).astype(np.int32),
        colorbar=dict(title="share of<br>norm²"),
        hovertemplate="epoch %{customdata}<br>frequency %{y}<br>share %{z:.3f}<extra></extra>"))
    ticks = pick_epochs(range(len(epochs)), 12)
    fig.update_xaxes(title_text="checkpoint (epoch)", tickmode="array", tickvals=ticks, ticktext=[str(int(epochs[i])) for i in ticks])
    fig.update_yaxes(title_text="frequency k")
    spans, marks = phase_spans(phases)
    for name, e in marks.items():
        if e is not None:
            i = float(np.searchsorted(epochs, int(e)))
            fig.add_vline(x=i - 0.5, line_dash="dot", line_color="white", line_width=1)
            fig.add_annotation(x=i - 0.5, y=1.0, yref="y domain", text=name, showarrow=False, yanchor="bottom",
                               font=dict(size=9))
    fig.update_layout(template=TEMPLATE, title=_title(f"{what}: share of squared Fourier norm per frequency", run_name),
                      height=440)
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


def cka_matrix(matrix, epochs: Optional[Sequence[int]] = None, title: str = "Linear CKA between checkpoints",
               run_name: Optional[str] = None, labels_b: Optional[Sequence[Any]] = None) -> go.Figure:
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
        raise InterpError(f"a CKA matrix must be 2-D, got shape {M.shape}")
    rows = [str(e) for e in (epochs if epochs is not None else range(M.shape[0]))]
    cols = [str(e) for e in (labels_b if labels_b is not None else rows)]
    fig = go.Figure(go.Heatmap(z=_f32(M), x=cols, y=rows, zmin=0, zmax=1, colorscale="Viridis",
                               colorbar=dict(title="CKA"),
                               hovertemplate="%{y} vs %{x}<br>CKA %{z:.3f}<extra></extra>"))
    fig.update_xaxes(type="category", title_text="epoch", nticks=12)
    fig.update_yaxes(type="category", title_text="epoch", nticks=12, autorange="reversed")
    fig.update_layout(template=TEMPLATE, title=_title(_esc(title), run_name), height=560, width=640)
    return fig


# ----------------------------------------------------------------------------- one checkpoint


def _rep():
    from interp.analysis import representation

    return representation


def _freq_norms_of(model, task: str) -> np.ndarray:
    return _np(_rep().embedding_spectrum(model, task).freq_norms)


def _bar_colors(ks: Sequence[int], key: Iterable[int]) -> list[str]:
    key = {int(k) for k in key}
    return [TEST_COLOR if int(k) in key else "#7f9fbf" for k in ks]


def embedding_fourier_norms(model, task: str = "add", key_freqs: Optional[Sequence[int]] = None,
                            title: Optional[str] = None) -> go.Figure:
    """Norm of the embedding W_E's Fourier components per frequency k at one checkpoint (REFERENCE §2).

    A generalising model concentrates its embedding on a few key frequencies (red when
    ``key_freqs`` is given); a memorising or random one spreads it over all of them.
    """
    fn = _freq_norms_of(model, task)
    ks = np.arange(1, fn.shape[0], dtype=np.int32)
    fig = go.Figure(go.Bar(x=ks, y=_f32(fn[1:]), marker_color=_bar_colors(ks, key_freqs or []),
                           hovertemplate="frequency %{x}<br>norm %{y:.3g}<extra></extra>"))
    fig.update_xaxes(title_text="frequency k")
    fig.update_yaxes(title_text="‖F W_E‖ (cos and sin rows)")
    fig.update_layout(template=TEMPLATE, title=title or "Embedding Fourier norms", height=360, bargap=0.1)
    return fig


def _cluster_counts(clusters, threshold: Optional[float] = None) -> tuple[np.ndarray, int, float]:
    """(clearly assigned neurons per frequency k = 1.., total neurons, FVE threshold) of a
    ``representation.NeuronClusterSummary`` (sizes precomputed) or a ``measures.NeuronClusters``
    (sizes a function of the threshold)."""
    thr = float(threshold if threshold is not None else getattr(clusters, "threshold", _key_threshold()))
    sizes = clusters.sizes(thr) if callable(clusters.sizes) else clusters.sizes
    return _np(sizes).astype(np.int64)[1:], int(_np(clusters.frequency).shape[0]), thr


def _key_threshold() -> float:
    from interp.analysis.measures import KEY_FVE_THRESHOLD

    return KEY_FVE_THRESHOLD


def neuron_cluster_sizes(model_or_clusters, task: str = "add", title: Optional[str] = None) -> go.Figure:
    """How many MLP neurons belong to each frequency at one checkpoint (REFERENCE §2).

    A neuron belongs to frequency k when k explains more than the FVE threshold of its variance;
    the title counts the neurons that belong to none. ``model_or_clusters``: a model, or a
    ``representation.NeuronClusterSummary``.
    """
    cl = model_or_clusters if hasattr(model_or_clusters, "sizes") else _rep().neuron_clusters(model_or_clusters, task)
    sizes, total, thr = _cluster_counts(cl)
    ks = np.arange(1, sizes.shape[0] + 1, dtype=np.int32)
    unassigned = total - int(sizes.sum())
    fig = go.Figure(go.Bar(x=ks, y=sizes.astype(np.int32), marker_color="#2ca02c",
                           hovertemplate="frequency %{x}<br>%{y} neurons<extra></extra>"))
    fig.update_xaxes(title_text="frequency k")
    fig.update_yaxes(title_text=f"neurons with FVE > {thr:g}")
    fig.update_layout(template=TEMPLATE, height=360, bargap=0.1,
                      title=title or f"Neuron clusters by frequency ({unassigned} of {total} neurons unassigned)")
    return fig


def _circle_traces(circles, normalise: bool, showscale: bool) -> list[go.Scatter]:
    out = []
    for i, c in enumerate(circles):
        xy = _np(c.coords).astype(float)
        if normalise:
            r = np.sqrt((xy**2).sum(1)).max()
            xy = xy / r if r > 0 else xy
        toks = _np(c.tokens).astype(np.int32)
        out.append(go.Scatter(
            x=_f32(xy[:, 0]), y=_f32(xy[:, 1]), mode="markers", name=f"k={c.k}", showlegend=False,
            marker=dict(color=toks, colorscale="Twilight", size=7, line=dict(width=0.5, color="#333"),
                        showscale=showscale and i == 0, colorbar=dict(title="token") if showscale and i == 0 else None),
            customdata=toks, hovertemplate=f"k={c.k}<br>token %{{customdata}}<extra></extra>"))
    return out


def _circle_title(c) -> str:
    return f"k={c.k}: {c.energy_share:.0%} of norm², circularity {c.circularity:.2f}"


def embedding_circles(model, freqs: Optional[Sequence[int]] = None, task: str = "add", title: Optional[str] = None) -> go.Figure:
    """Each token's embedding projected onto the (cos k, sin k) plane of W_E, one panel per key
    frequency k (Nanda et al. 2023 Fig. 3; REFERENCE §2). Colour: the token (a cyclic scale).

    In a generalising model token a sits at angle w_k a on a circle, so the colours go round in
    order (k times); in a memorising one the points form a blob. Panel titles give the plane's
    share of the embedding's squared norm and the circularity of ``representation.Circle``.
    """
    circles = _rep().embedding_circles(model, freqs, task)
    if not circles:
        raise InterpError("no frequencies to draw circles for")
    n = len(circles)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[_circle_title(c) for c in circles],
                        horizontal_spacing=0.04, vertical_spacing=0.12 / rows)
    for i, tr in enumerate(_circle_traces(circles, False, True)):
        fig.add_trace(tr, row=i // cols + 1, col=i % cols + 1)
    _square_axes(fig, n)
    fig.update_annotations(font_size=11)
    fig.update_layout(template=TEMPLATE, title=title or "Embedding circles (projection on each key frequency's plane)",
                      height=300 * rows + 100)
    return fig


def _square_axes(fig: go.Figure, n: int, fixed: Optional[float] = None) -> None:
    for i in range(1, n + 1):
        sx = "" if i == 1 else str(i)
        fig.layout[f"yaxis{sx}"].update(scaleanchor=f"x{sx}", scaleratio=1, showticklabels=False, zeroline=False,
                                        constrain="domain")
        fig.layout[f"xaxis{sx}"].update(showticklabels=False, zeroline=False, constrain="domain")
        if fixed is not None:
            fig.layout[f"xaxis{sx}"].update(range=[-fixed, fixed])
            fig.layout[f"yaxis{sx}"].update(range=[-fixed, fixed])


def neuron_activations(model, neurons: Optional[Sequence[int]] = None, task: str = "add", title: Optional[str] = None) -> go.Figure:
    """Activation maps of chosen MLP neurons over all inputs (a, b) and their 2D Fourier spectra
    (REFERENCE §2). Top row: the activation at '=' for every (a, b); a frequency-k neuron shows
    stripes of period p/k along a + b. Bottom row: norm of the centred map's fft2d per pair of
    frequencies (ka, kb); a clean neuron lights up the (0, k), (k, 0) and (k, k) cells.
    Default neurons: the highest-FVE neuron of every key frequency (``representation.neuron_activation_maps``).
    """
    nm = _rep().neuron_activation_maps(model, neurons, task)
    m = int(nm.neurons.shape[0])
    if m == 0:
        raise InterpError("no neurons to draw")
    m = min(m, 6)  # more panels than this are unreadable side by side
    a_t, b_t = _np(nm.a_tokens).astype(np.int32), _np(nm.b_tokens).astype(np.int32)
    titles = [f"neuron {int(nm.neurons[i])} (k={int(nm.frequency[i])}, FVE {float(nm.fve[i]):.2f})" for i in range(m)]
    titles += [f"spectrum of neuron {int(nm.neurons[i])}" for i in range(m)]
    fig = make_subplots(rows=2, cols=m, subplot_titles=titles, vertical_spacing=0.14, horizontal_spacing=0.03)
    maps, fn = _np(nm.maps), _np(nm.freq_norms)
    kk = np.arange(fn.shape[1], dtype=np.int32)
    for i in range(m):
        fig.add_trace(go.Heatmap(z=_f32(maps[i]), x=b_t, y=a_t, colorscale="RdBu", reversescale=True, showscale=False,
                                 hovertemplate="a=%{y}, b=%{x}<br>activation %{z:.3g}<extra></extra>"), row=1, col=i + 1)
        fig.add_trace(go.Heatmap(z=_f32(fn[i]), x=kk, y=kk, colorscale="Viridis", showscale=False,
                                 hovertemplate="k_a=%{y}, k_b=%{x}<br>norm %{z:.3g}<extra></extra>"), row=2, col=i + 1)
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
    fig.update_layout(template=TEMPLATE, title=title or "Neuron activation maps and their 2D Fourier spectra",
                      # panels are square: two rows of (page width / m) each, for a ~1300 px page
                      height=int(min(900, max(420, 2 * 0.9 * 1300 / max(m, 1) + 140))))
    return fig


def attention_patterns(model, title: Optional[str] = None) -> go.Figure:
    """Attention paid by the '=' position to a (top row) and to b (bottom row), per head, over all
    inputs (a, b) (issue #4, ``representation.attention_from_eq``). Heads of the grokked model
    split their attention between a and b as a function of one token each (stripes)."""
    att = _rep().attention_from_eq(model)
    to_a, to_b = _np(att.to_a), _np(att.to_b)
    H, p = to_a.shape[0], to_a.shape[1]
    toks = np.arange(p, dtype=np.int32)
    titles = [f"head {h}: '=' → a" for h in range(H)] + [f"head {h}: '=' → b" for h in range(H)]
    fig = make_subplots(rows=2, cols=H, subplot_titles=titles, vertical_spacing=0.12, horizontal_spacing=0.03)
    for h in range(H):
        for r, z in ((1, to_a[h]), (2, to_b[h])):
            fig.add_trace(go.Heatmap(z=_f32(z), x=toks, y=toks, zmin=0, zmax=1, colorscale="Blues",
                                     showscale=(h == 0 and r == 1), colorbar=dict(title="weight"),
                                     hovertemplate="a=%{y}, b=%{x}<br>weight %{z:.3f}<extra></extra>"),
                          row=r, col=h + 1)
    for i in range(1, 2 * H + 1):
        sx = "" if i == 1 else str(i)
        # square cells: shrink the panel (constrain="domain") rather than pad the axis with empty range
        fig.layout[f"yaxis{sx}"].update(scaleanchor=f"x{sx}", scaleratio=1, autorange="reversed", constrain="domain")
        fig.layout[f"xaxis{sx}"].update(constrain="domain")
    fig.update_xaxes(title_text="b")
    fig.update_yaxes(title_text="a", col=1)
    fig.update_annotations(font_size=10)
    fig.update_layout(template=TEMPLATE, title=title or "Attention from '=' per head",
                      height=int(min(900, max(420, 2 * 0.9 * 1300 / max(H, 1) + 140))))
    return fig


def neuron_logit_fourier(model, task: str = "add", title: Optional[str] = None) -> go.Figure:
    """The neuron-logit map W_L = W_out W_U in the Fourier basis over outputs (REFERENCE §2).

    Left: |coefficient| of every neuron (rows, grouped by the neuron's frequency cluster) on every
    basis function (columns: const, cos 1, sin 1, ...); a generalising model writes each neuron's
    output onto cos/sin of its own frequency only. Right: the norm per frequency over all neurons.
    """
    rep = _rep()
    spec = rep.neuron_logit_spectrum(model, task)
    coefs = np.abs(_np(spec.coefs)).T  # [d_mlp, n]
    freq = _np(rep.neuron_clusters(model, task).frequency).astype(np.int64)
    order = np.lexsort((np.arange(freq.shape[0]), freq))  # by cluster, then index
    fn = _np(spec.freq_norms)
    ks = np.arange(1, fn.shape[0], dtype=np.int32)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.72, 0.28], horizontal_spacing=0.08,
                        subplot_titles=("|W_L| in the Fourier basis (neurons sorted by cluster)", "norm per frequency"))
    # Row labels name the neuron and its cluster for the hover; one label per row costs a few kB,
    # a per-cell customdata array would cost as much as z itself.
    rows = [f"neuron {int(i)} (k={int(freq[i])})" for i in order]
    fig.add_trace(go.Heatmap(z=_f32(coefs[order]), x=list(spec.labels), y=rows,
                             colorscale="Viridis", colorbar=dict(title="|coef|", x=0.68),
                             hovertemplate="%{y}<br>%{x}<br>%{z:.3g}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=ks, y=_f32(fn[1:]), marker_color="#9467bd", showlegend=False,
                         hovertemplate="frequency %{x}<br>norm %{y:.3g}<extra></extra>"), row=1, col=2)
    fig.update_xaxes(showticklabels=False, title_text="basis function (const, cos 1, sin 1, ...)", row=1, col=1)
    fig.update_yaxes(showticklabels=False, title_text="neuron", autorange="reversed", type="category", row=1, col=1)
    fig.update_xaxes(title_text="frequency k", row=1, col=2)
    fig.update_layout(template=TEMPLATE, title=title or "Neuron-logit map W_L in the Fourier basis", height=460)
    return fig


# ----------------------------------------------------------------------------- sliders


def _slider(fig: go.Figure, labels: Sequence[str], active: int, prefix: str = "epoch ") -> None:
    """A slider (and play / pause buttons) that shows one frame per label."""
    anim = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    steps = [dict(method="animate", label=lbl, args=[[lbl], anim]) for lbl in labels]
    fig.update_layout(
        sliders=[dict(active=active, steps=steps, currentvalue=dict(prefix=prefix, font=dict(size=13, color="#222")),
                      # one tick label per step would overlap: the current value says the epoch
                      font=dict(color="rgba(0,0,0,0)", size=1), pad=dict(t=40, b=10), len=0.9, x=0.1)],
        updatemenus=[dict(type="buttons", direction="left", x=0.0, y=0, xanchor="left", yanchor="top", pad=dict(t=45),
                          buttons=[dict(label="▶", method="animate",
                                        args=[None, dict(mode="immediate", fromcurrent=True,
                                                         frame=dict(duration=250, redraw=True), transition=dict(duration=0))]),
                                   dict(label="❚❚", method="animate", args=[[None], anim])])])


def _models_or_table(source) -> tuple[str, Any]:
    if hasattr(source, "columns") and hasattr(source, "to_numpy"):
        return "table", source
    if isinstance(source, Mapping):
        if not source:
            raise InterpError("no checkpoints given for the slider")
        return "models", dict(sorted(source.items()))
    raise InterpError("a slider figure needs the analysis table or a mapping {epoch: model}")


def embedding_fourier_norms_slider(source, task: str = "add", key_freqs: Optional[Sequence[int]] = None,
                                   max_frames: int = MAX_SLIDER_FRAMES, title: Optional[str] = None,
                                   include: Iterable[Optional[int]] = ()) -> go.Figure:
    """``embedding_fourier_norms`` at many checkpoints, one figure with a slider over epochs.

    ``source``: the analysis table (its ``emb_norm_k{k}`` columns) or a mapping {epoch: model}.
    The y range is fixed to the largest norm of all frames so that growth and decay are visible.
    """
    kind, src = _models_or_table(source)
    if kind == "table":
        cols = [(k, c) for k, c in _cols(src, "emb_norm_k") if k >= 1]
        if not cols:
            raise InterpError("the table has no emb_norm_k<k> columns")
        t = src.sort_values("epoch").set_index("epoch")
        epochs = pick_epochs(t.index, max_frames, include)
        data = {e: t.loc[e, [c for _, c in cols]].to_numpy(dtype=float) for e in epochs}
    else:
        epochs = pick_epochs(src.keys(), max_frames, include)
        data = {e: _freq_norms_of(src[e], task)[1:] for e in epochs}
    K = len(next(iter(data.values())))
    ks = np.arange(1, K + 1, dtype=np.int32)
    colors = _bar_colors(ks, key_freqs or [])
    ymax = max(float(np.nanmax(v)) for v in data.values()) * 1.05 or 1.0

    def bar(e: int) -> go.Bar:
        return go.Bar(x=ks, y=_f32(data[e]), marker_color=colors, hovertemplate="frequency %{x}<br>norm %{y:.3g}<extra></extra>")

    labels = [str(e) for e in epochs]
    # frames carry only what changes (y): the marker colours and hover text stay from the base trace
    fig = go.Figure(data=[bar(epochs[-1])], frames=[go.Frame(data=[{"type": "bar", "y": _f32(data[e])}], name=str(e))
                                                    for e in epochs])
    _slider(fig, labels, len(labels) - 1)
    fig.update_xaxes(title_text="frequency k")
    fig.update_yaxes(title_text="‖F W_E‖", range=[0, ymax])
    fig.update_layout(template=TEMPLATE, title=title or "Embedding Fourier norms over training", height=460, bargap=0.1)
    return fig


def neuron_cluster_sizes_slider(source, task: str = "add", max_frames: int = MAX_SLIDER_FRAMES,
                                title: Optional[str] = None, include: Iterable[Optional[int]] = ()) -> go.Figure:
    """``neuron_cluster_sizes`` at many checkpoints, one figure with a slider over epochs.

    ``source``: the analysis table (its ``neurons_k{k}`` columns) or a mapping {epoch: model}.
    """
    kind, src = _models_or_table(source)
    if kind == "table":
        cols = _cols(src, "neurons_k")
        if not cols:
            raise InterpError("the table has no neurons_k<k> columns")
        t = src.sort_values("epoch").set_index("epoch")
        epochs = pick_epochs(t.index, max_frames, include)
        data = {e: t.loc[e, [c for _, c in cols]].to_numpy(dtype=float) for e in epochs}
        ks = np.array([k for k, _ in cols], dtype=np.int32)
    else:
        epochs = pick_epochs(src.keys(), max_frames, include)
        data = {e: _cluster_counts(_rep().neuron_clusters(src[e], task))[0].astype(float) for e in epochs}
        ks = np.arange(1, len(next(iter(data.values()))) + 1, dtype=np.int32)
    ymax = max(1.0, max(float(np.nanmax(v)) for v in data.values()) * 1.05)

    def bar(e: int) -> go.Bar:
        return go.Bar(x=ks, y=np.nan_to_num(data[e]).astype(np.int32), marker_color="#2ca02c",
                      hovertemplate="frequency %{x}<br>%{y} neurons<extra></extra>")

    labels = [str(e) for e in epochs]
    frames = [go.Frame(data=[{"type": "bar", "y": np.nan_to_num(data[e]).astype(np.int32)}], name=str(e)) for e in epochs]
    fig = go.Figure(data=[bar(epochs[-1])], frames=frames)
    _slider(fig, labels, len(labels) - 1)
    fig.update_xaxes(title_text="frequency k")
    fig.update_yaxes(title_text="neurons clearly assigned", range=[0, ymax])
    fig.update_layout(template=TEMPLATE, title=title or "Neuron clusters by frequency over training", height=460, bargap=0.1)
    return fig


def embedding_circles_slider(models: Mapping[int, Any], freqs: Sequence[int], task: str = "add",
                             max_frames: int = MAX_SLIDER_FRAMES, title: Optional[str] = None,
                             include: Iterable[Optional[int]] = ()) -> go.Figure:
    """``embedding_circles`` for fixed frequencies (usually the final key frequencies) at many
    checkpoints, one figure with a slider over epochs: the circles form out of a blob.

    Each panel is scaled to its largest radius in every frame (the axes stay put; weight decay
    would otherwise shrink the picture); the current frame's plane share and circularity are in
    the hover text.
    """
    _, src = _models_or_table(models)
    freqs = [int(k) for k in freqs]
    if not freqs:
        raise InterpError("embedding_circles_slider needs at least one frequency")
    epochs = pick_epochs(src.keys(), max_frames, include)
    rep = _rep()
    per_epoch = {e: rep.embedding_circles(src[e], freqs, task) for e in epochs}
    n = len(freqs)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"k={k}" for k in freqs],
                        horizontal_spacing=0.04, vertical_spacing=0.12 / rows)

    def hover(e: int, c) -> str:
        return (f"k={c.k} at epoch {e}<br>token %{{customdata}}<br>plane share {c.energy_share:.0%}, "
                f"circularity {c.circularity:.2f}<extra></extra>")

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
    fig.update_layout(template=TEMPLATE, title=title or "Embedding circles over training (each panel scaled to radius 1)",
                      height=300 * rows + 160)
    return fig


# ----------------------------------------------------------------------------- comparison


def _fmt_value(v: Any) -> str:
    """A table cell: integers as they are, floats with 4 significant digits, missing as '-'."""
    if v is None:
        return "-"
    if isinstance(v, (bool, str)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    x = float(v)
    if math.isnan(x):
        return "-"
    return f"{x:.4g}" if 1e-3 <= abs(x) < 1e5 or x == 0 else f"{x:.3e}"


def checkpoint_comparison(comparison, title: Optional[str] = None) -> go.Figure:
    """Two checkpoints side by side (issue #4: memorising vs generalising), from ``compare.compare``.

    Top: the share of each embedding's squared Fourier norm per frequency, and the neurons clearly
    assigned to each frequency, as grouped bars (a generalising model has a few tall bars at its
    key frequencies, a memorising one a flat spread). Bottom: the comparison table (losses,
    accuracies, key frequencies and their strength, Gini, FVE, RQI, weight norms, restricted /
    excluded loss, CKA between the two).
    """
    la, lb = (_esc(x) for x in comparison.labels)
    sides = (comparison.a, comparison.b)
    shares = [_np(s.embedding_energy)[1:] for s in sides]
    counts = [_cluster_counts(s.measures.clusters, s.measures.threshold)[0] for s in sides]
    rows = [(str(m), _fmt_value(a), _fmt_value(b)) for m, a, b in comparison.rows]
    thr = sides[0].measures.threshold
    fig = make_subplots(rows=2, cols=2, specs=[[{"type": "xy"}, {"type": "xy"}], [{"type": "table", "colspan": 2}, None]],
                        vertical_spacing=0.08, row_heights=[0.3, 0.7],
                        subplot_titles=("share of W_E's squared Fourier norm per frequency",
                                        f"neurons per frequency (FVE > {thr:g})"))
    for col, vals in ((1, shares), (2, counts)):
        for i, (v, lbl, color) in enumerate(zip(vals, (la, lb), (TRAIN_COLOR, TEST_COLOR))):
            fig.add_trace(go.Bar(x=np.arange(1, len(v) + 1, dtype=np.int32), y=_f32(v), name=lbl, marker_color=color,
                                 legendgroup=f"s{i}", showlegend=col == 1,
                                 hovertemplate=f"{lbl}<br>frequency %{{x}}<br>%{{y:.3g}}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="frequency k", row=1, col=col)
    fig.add_trace(go.Table(
        columnwidth=[3, 1.4, 1.4],
        header=dict(values=["measure", la, lb], fill_color="#e8eef6", align="left", font=dict(size=12)),
        cells=dict(values=[[_esc(r[0]) for r in rows], [_esc(r[1]) for r in rows], [_esc(r[2]) for r in rows]],
                   align=["left", "right", "right"], font=dict(size=11), height=21)), row=2, col=1)
    fig.update_layout(template=TEMPLATE, barmode="group", bargap=0.15, title=title or f"{la} vs {lb}",
                      height=360 + 21 * len(rows) + 80,
                      # above the panel titles, so it covers neither
                      legend=dict(orientation="h", y=1.0, x=1, xanchor="right", yanchor="bottom", yref="container"))
    return fig
