"""The look shared by every figure and the report: template, palette, phase shading, escaping,
thinning of long curves, and one number formatter.

Size: a figure's numbers travel as base64 typed arrays (plotly >= 6), in float32 where the
plotted precision allows it (``_f32``), and per-epoch curves are thinned to ``MAX_LINE_POINTS``
epochs (``thin_indices``: log-spaced early, evenly spaced later, with each curve's extremes kept),
so the report of a 25k-epoch, 250-checkpoint run stays a few MB.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from interp.errors import InterpError


class EmptyFigure(ValueError):
    """The data hold nothing to draw (a run with no key frequency has no circles): the report shows
    a note in the figure's place. Not a user mistake, so not an ``InterpError``."""


# A 25k-epoch curve drawn with 1,500 points is indistinguishable at screen resolution from the
# full one (the page is < 1,500 px wide) and 17x smaller.
MAX_LINE_POINTS = 1500

TEMPLATE = "plotly_white"
TRAIN_COLOR, TEST_COLOR = "#1f77b4", "#d62728"
PHASE_COLORS = {"memorisation": "#9ecae1", "circuit formation": "#fdd0a2", "cleanup": "#a1d99b"}
# Colours for the lines of many series (key frequencies, parameters); plotly's default cycle.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


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
    for key, label in (
        ("memorisation", "memorisation"),
        ("circuit_formation", "circuit formation"),
        ("cleanup", "cleanup"),
    ):
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
            shapes.append(
                dict(
                    type="rect",
                    x0=max(x0, 0.5),
                    x1=max(x1, x0 + 1.0),
                    fillcolor=PHASE_COLORS[label],
                    opacity=0.35,
                    line=dict(width=0),
                    **base,
                )
            )
        for name, x in marks.items():
            if x is not None:
                shapes.append(
                    dict(
                        type="line",
                        x0=max(float(x), 0.5),
                        x1=max(float(x), 0.5),
                        line=dict(color="#444", dash=MARK_DASH[name], width=1),
                        **base,
                    )
                )
    # one assignment: plotly's add_vrect per subplot re-validates every shape each time (quadratic)
    fig.update_layout(shapes=list(fig.layout.shapes or ()) + shapes)
    for label, x0, x1 in spans:
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=f"{label} {int(x0)}–{int(x1)}",
                marker=dict(symbol="square", size=12, color=PHASE_COLORS[label]),
                legendgroup="phases",
                legendgrouptitle_text="phases",
            )
        )
    for name, x in marks.items():
        if x is not None:
            fig.add_trace(
                go.Scatter(
                    x=[None],
                    y=[None],
                    mode="lines",
                    name=f"{name} = {int(x)}",
                    line=dict(color="#444", dash=MARK_DASH[name], width=1),
                    legendgroup="phases",
                )
            )


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

    return [
        dict(
            type="buttons",
            direction="right",
            x=1.0,
            xanchor="right",
            y=y,
            yanchor="bottom",
            showactive=True,
            buttons=[
                dict(label="linear epochs", method="relayout", args=[relayout("linear")]),
                dict(label="log epochs", method="relayout", args=[relayout("log")]),
            ],
        )
    ]


def _title(text: str, run_name: Optional[str]) -> str:
    return f"{text} — {_esc(run_name)}" if run_name else text


def _require(df, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InterpError(
            f"{what} needs column(s) {', '.join(missing)} (got {', '.join(map(str, df.columns[:8]))}, ...)"
        )


def _cols(df, prefix: str) -> list[tuple[int, str]]:
    """[(k, column)] for columns named ``<prefix><k>``, sorted by k."""
    out = []
    for c in df.columns:
        m = re.fullmatch(re.escape(prefix) + r"(\d+)", str(c))
        if m:
            out.append((int(m.group(1)), c))
    return sorted(out)


def _bar_colors(ks: Sequence[int], key: Iterable[int]) -> list[str]:
    key = {int(k) for k in key}
    return [TEST_COLOR if int(k) in key else "#7f9fbf" for k in ks]


def _square_axes(fig: go.Figure, n: int, fixed: Optional[float] = None) -> None:
    for i in range(1, n + 1):
        sx = "" if i == 1 else str(i)
        fig.layout[f"yaxis{sx}"].update(
            scaleanchor=f"x{sx}", scaleratio=1, showticklabels=False, zeroline=False, constrain="domain"
        )
        fig.layout[f"xaxis{sx}"].update(showticklabels=False, zeroline=False, constrain="domain")
        if fixed is not None:
            fig.layout[f"xaxis{sx}"].update(range=[-fixed, fixed])
            fig.layout[f"yaxis{sx}"].update(range=[-fixed, fixed])


def _slider(fig: go.Figure, labels: Sequence[str], active: int, prefix: str = "epoch ") -> None:
    """A slider (and play / pause buttons) that shows one frame per label."""
    anim = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    steps = [dict(method="animate", label=lbl, args=[[lbl], anim]) for lbl in labels]
    fig.update_layout(
        sliders=[
            dict(
                active=active,
                steps=steps,
                currentvalue=dict(prefix=prefix, font=dict(size=13, color="#222")),
                # one tick label per step would overlap: the current value says the epoch
                font=dict(color="rgba(0,0,0,0)", size=1),
                pad=dict(t=40, b=10),
                len=0.9,
                x=0.1,
            )
        ],
        updatemenus=[
            dict(
                type="buttons",
                direction="left",
                x=0.0,
                y=0,
                xanchor="left",
                yanchor="top",
                pad=dict(t=45),
                buttons=[
                    dict(
                        label="▶",
                        method="animate",
                        args=[
                            None,
                            dict(
                                mode="immediate",
                                fromcurrent=True,
                                frame=dict(duration=250, redraw=True),
                                transition=dict(duration=0),
                            ),
                        ],
                    ),
                    dict(label="❚❚", method="animate", args=[[None], anim]),
                ],
            )
        ],
    )


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


_JS_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "/": "\\u002f", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_safe_json(fig) -> str:
    """The figure as JSON that is safe inside ``<script>``: plotly's encoder already writes ``<``,
    ``>`` and ``/`` as ``\\uXXXX``; this also covers ``&`` and U+2028/2029 and checks the result,
    because a run name like ``</script><script>...`` must never end the element."""
    import plotly.io as pio

    s = pio.to_json(fig, validate=False)
    for ch, rep in _JS_ESCAPES.items():
        if ch in s:
            s = s.replace(ch, rep)
    if "</" in s or "<!--" in s:
        raise RuntimeError("a figure's JSON still holds '</' or '<!--' after escaping; refusing to write it")
    return s
