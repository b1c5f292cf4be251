"""The sweep report: T_grok against every swept hyperparameter, the delay-law fits, the phase diagram
(when the sweep has two swept axes besides seed), every run's norm trajectory on one figure, and a
table of runs linking their own reports (``interp report SWEEP``).

Reads the sweep's index and the runs' metrics only (no model is loaded); the fits are those of
``interp.theory.delay_law``.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from interp.errors import InterpError
from interp.store import SWEEP_RUNS_DIR, Run, check_writable_file
from interp.viz.report import FigureItem, Section, _figure, _write, kv_table, render_html
from interp.viz.style import _esc, thin_indices

MAX_TRAJECTORIES = 200
# The four phases of the effective theory (REFERENCE §6), one categorical colour each: green for
# comprehension, orange for grokking, blue for memorisation (as style.PHASE_COLORS shades a run's
# memorisation), grey for confusion.
PHASE_DIAGRAM_COLORS = {
    "comprehension": "#2ca02c",
    "grokking": "#ff7f0e",
    "memorisation": "#6baed6",
    "confusion": "#bdbdbd",
}


def t_grok_figure(index: pd.DataFrame, axis: str) -> go.Figure:
    """T_mem and T_grok of every run against one swept hyperparameter; runs that never grok on the top edge."""
    x = index[axis]
    budget = index["epochs_trained"].max()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=index["T_mem"], mode="markers", name="T_mem", text=index["run"]))
    g = index["T_grok"].notna()
    fig.add_trace(go.Scatter(x=x[g], y=index.loc[g, "T_grok"], mode="markers", name="T_grok", text=index.loc[g, "run"]))
    if (~g).any():
        fig.add_trace(
            go.Scatter(
                x=x[~g],
                y=[budget] * int((~g).sum()),
                mode="markers",
                name="never grokked (at budget)",
                marker={"symbol": "x", "color": "grey"},
                text=index.loc[~g, "run"],
            )
        )
    numeric = pd.api.types.is_numeric_dtype(x) and (x > 0).all() and x.max() / max(x.min(), 1e-300) > 20
    fig.update_layout(xaxis_title=axis, yaxis_title="epoch", xaxis_type="log" if numeric else None, height=380)
    return fig


def _is_log_spaced(values) -> bool:
    """Positive numbers spanning a decade or more: drawn on a log axis."""
    v = np.asarray(values)
    if v.dtype.kind not in "iuf" or len(v) < 2:
        return False
    return bool((v > 0).all() and v.max() / v.min() >= 10)


def _fmt_axis(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def phase_figure(grid) -> go.Figure:
    """The phase diagram: one cell per (x, y), coloured by its majority phase and labelled
    ``phase (n/m)``; a log axis where the values are log-spaced (positive, a decade or more),
    otherwise one column per value."""
    from interp.theory.phase_diagram import PHASES

    xs, ys = grid.x_values, grid.y_values
    cells = grid.cells.set_index([grid.x, grid.y])
    z = np.full((len(ys), len(xs)), np.nan)
    text = np.full((len(ys), len(xs)), "", dtype=object)
    hover = np.full((len(ys), len(xs)), "no run", dtype=object)
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            if (xv, yv) not in cells.index:
                continue
            c = cells.loc[(xv, yv)]
            z[i, j] = PHASES.index(c["phase"])
            text[i, j] = f"{c['phase']}<br>({int(c[c['phase']])}/{int(c['n'])})" + (" tie" if c["tie"] else "")
            where = f"{_esc(grid.x)} {_esc(_fmt_axis(xv))}, {_esc(grid.y)} {_esc(_fmt_axis(yv))}"
            hover[i, j] = where + "<br>" + ", ".join(f"{p} {int(c[p])}" for p in PHASES if c[p])
    # a discrete colour scale: phase k fills [k/4, (k+1)/4] of the colour range 0..3
    n = len(PHASES)
    scale = []
    for k, p in enumerate(PHASES):
        scale += [[k / n, PHASE_DIAGRAM_COLORS[p]], [(k + 1) / n, PHASE_DIAGRAM_COLORS[p]]]
    axes = {}
    coords = {}
    for name, values in (("x", xs), ("y", ys)):
        label = grid.x if name == "x" else grid.y
        if _is_log_spaced(values):
            # drawn at log10 of the value, labelled with the value: a log axis whose cells are
            # centred on the swept values (plotly's own log axis centres a heatmap's cells on
            # arithmetic midpoints and labels 7, 8, 9 between decades)
            coords[name] = np.log10(np.asarray(values, dtype=float))
            axes[f"{name}axis"] = dict(
                title=_esc(f"{label} (log scale)"),
                tickvals=coords[name],
                ticktext=[_esc(_fmt_axis(v)) for v in values],
            )
        else:
            coords[name] = [_esc(_fmt_axis(v)) for v in values]
            axes[f"{name}axis"] = dict(title=_esc(label), type="category")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=coords["x"],
            y=coords["y"],
            text=text,
            texttemplate="%{text}",
            textfont={"size": 10},
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            colorscale=scale,
            zmin=-0.5,
            zmax=n - 0.5,
            xgap=1,
            ygap=1,
            colorbar=dict(tickvals=list(range(n)), ticktext=list(PHASES), title="phase"),
        )
    )
    r = grid.rule
    fig.update_layout(
        height=120 + 60 * len(ys),
        title=f"majority phase per cell (budget {r.budget}, tau {r.tau}, accuracy >= {r.threshold:g})",
        **axes,
    )
    return fig


def _phase_section(sweep: Path, errors: list[str]) -> Optional[Section]:
    """The phase diagram, when the sweep has two swept axes besides seed (with the rule and axes of
    ``interp phases`` where it was run: SWEEP/phases.json), else None."""
    import json

    from interp.store import SWEEP_PHASES_FILE
    from interp.theory.phase_diagram import TAU_NOTE, phase_grid, sweep_phases
    from interp.training.sweep import open_sweep

    spec, _ = open_sweep(sweep)
    points = spec.grid_points()
    swept = [a for a in spec.axes if a != "seed" and len({repr(q.get(a)) for q in points}) > 1]
    if len(swept) < 2:
        return None
    saved: dict = {}
    try:
        saved = json.loads((sweep / SWEEP_PHASES_FILE).read_text())
    except (OSError, ValueError):
        pass
    rule, where = saved.get("rule") or {}, saved.get("grid") or {}
    try:
        table = sweep_phases(sweep, tau=rule.get("tau"), budget=rule.get("budget"), threshold=rule.get("threshold"))
        grid = phase_grid(table, where.get("x"), where.get("y"))
    except InterpError as e:
        return Section("Phase diagram (interp phases)", f'<div class="error">{html.escape(str(e))}</div>')
    counts = ", ".join(f"{p} {n}" for p, n in table.counts().items())
    intro = kv_table(
        [
            ("rule", "t_train / t_test: first epoch with train / test accuracy >= threshold; see REFERENCE §6"),
            ("budget, tau, threshold", f"{grid.rule.budget}, {grid.rule.tau}, {grid.rule.threshold:g}"),
            ("runs per phase", counts),
            ("unfinished (left out)", len(table.skipped)),
        ]
    )
    fig = _figure(
        f"{grid.y} against {grid.x}",
        "each cell: the majority phase of its runs (other axes, such as seeds, pooled) and how many runs it "
        "holds; `interp phases SWEEP --tau N` sets the rule used here. " + TAU_NOTE,
        lambda: phase_figure(grid),
        errors,
    )
    return Section("Phase diagram (interp phases)", intro, [fig])


def norm_figure(trajectories: dict[str, pd.DataFrame]) -> go.Figure:
    """||theta|| = sqrt(V) over training, one line per run."""
    fig = go.Figure()
    for name, m in trajectories.items():
        i = thin_indices(len(m))
        fig.add_trace(
            go.Scatter(
                x=m["epoch"].to_numpy()[i],
                y=np.sqrt(m["sq_total"].to_numpy()[i]),
                name=name,
                mode="lines",
                line={"width": 1},
            )
        )
    fig.update_layout(xaxis_title="epoch", yaxis_title="||theta||", height=480, showlegend=len(trajectories) <= 20)
    return fig


def law_figure(index: pd.DataFrame, law) -> go.Figure:
    """The delay against ln(V_mem / V_final) / (eta lambda), with the fitted line."""
    g = index[index["T_grok"].notna() & (index["weight_decay"] > 0) & (index["V_mem"] > index["V_final"])]
    x = np.log(g["V_mem"] / g["V_final"]) / (g["lr"] * g["weight_decay"])
    fig = go.Figure([go.Scatter(x=x, y=g["T_grok"] - g["T_mem"], mode="markers", text=g["run"], name="runs")])
    if law.delay_vs_theory is not None:
        xs = np.linspace(0, float(x.max()), 50)
        fig.add_trace(go.Scatter(x=xs, y=law.delay_vs_theory.slope * xs + law.delay_vs_theory.intercept, name="fit"))
    fig.update_layout(xaxis_title="ln(V_mem / V_final) / (eta lambda)", yaxis_title="T_grok - T_mem", height=380)
    return fig


def _runs_table(index: pd.DataFrame, sweep: Path, out: Path, axes: list[str]) -> str:
    cols = ["run", *axes, "status", "T_mem", "T_grok", "test_acc", "V_mem", "V_final"]
    cols = [c for c in cols if c in index.columns]
    rows = ['<table class="kv">', "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"]
    for _, r in index.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            text = html.escape("-" if pd.isna(v) else (f"{v:.4g}" if isinstance(v, float) else str(v)))
            report = sweep / SWEEP_RUNS_DIR / str(r["run"]) / "report.html"
            if c == "run" and report.exists():
                href = html.escape(os.path.relpath(report, out.parent), quote=True)
                text = f'<a href="{href}">{text}</a>'
            cells.append(f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def write_sweep_report(sweep: str | os.PathLike, out_path: Optional[str | os.PathLike] = None) -> Path:
    """One offline HTML page for a sweep (default ``SWEEP/report.html``)."""
    from interp.theory.delay_law import delay_law, format_law
    from interp.training.sweep import open_sweep, read_index

    sweep = Path(sweep)
    spec, body = open_sweep(sweep)
    index = read_index(sweep)
    out = check_writable_file(Path(out_path) if out_path else sweep / "report.html")
    errors: list[str] = []
    axes = spec.axes
    runs = sweep / SWEEP_RUNS_DIR
    trajectories = {}
    for name in index["run"][:MAX_TRAJECTORIES]:
        try:
            trajectories[name] = Run.open(runs / name).metrics()[["epoch", "sq_total"]]
        except InterpError:
            continue
    summary = kv_table(
        [
            ("sweep", str(sweep)),
            ("spec hash", body["spec_hash"]),
            ("preset", spec.preset or "-"),
            ("fixed", ", ".join(f"{k}={v}" for k, v in spec.fixed.items()) or "-"),
            ("axes", ", ".join(axes)),
            ("runs", len(index)),
            ("done", int((index["status"] == "done").sum())),
            ("grokked", int(index["T_grok"].notna().sum())),
        ]
    )
    sections = [Section("Summary", summary)]
    sections.append(
        Section(
            "T_mem and T_grok against each swept hyperparameter",
            "",
            [
                _figure(
                    f"against {a}",
                    "each run's T_mem and T_grok (first epoch with train / test accuracy >= 0.99)",
                    lambda a=a: t_grok_figure(index, a),
                    errors,
                )
                for a in axes
            ],
        )
    )
    try:
        law = delay_law(index, source=str(sweep))
        law_html = f"<pre>{html.escape(format_law(law))}</pre>"
        figs = [
            _figure(
                "delay vs the norm-separation time",
                "REFERENCE §5; the line is the least-squares fit",
                lambda: law_figure(index, law),
                errors,
            )
        ]
    except InterpError as e:
        law_html, figs = f'<div class="error">{html.escape(str(e))}</div>', []
    sections.append(Section("Delay law (interp law)", law_html, figs))
    phase_section = _phase_section(sweep, errors)
    if phase_section is not None:
        sections.append(phase_section)
    sections.append(
        Section(
            "Weight norm of every run",
            "",
            [
                FigureItem(
                    "||theta|| over training",
                    "sqrt of the sum of squared weights, as logged every epoch",
                    norm_figure(trajectories),
                )
            ],
        )
    )
    sections.append(Section("Runs", _runs_table(index, sweep, out, axes)))
    page = render_html(f"interp sweep report: {spec.name}", f"{sweep} - {len(index)} runs", sections)
    return _write(out, page)
