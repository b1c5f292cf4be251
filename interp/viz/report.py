"""One self-contained HTML report of a run (or of two checkpoints), readable offline.

``write_report(run, out_path)`` analyses the run (``interp.analysis.run_table.analyze``, incremental: the
saved table is reused), loads the checkpoints the figures need, and writes one HTML file with

* a summary: the config, T_mem and T_grok, the phases and the rule behind them, the key
  frequencies (with the rule and the embedding cross-check), the final measures;
* every figure of ``interp.viz.plots``: losses and accuracies, progress measures with the phases
  shaded, weight norms, the embedding's RQI over training, the HTSR spectra (when the table has
  them: ``analyze(spectra=True)``), W_E and W_L Fourier norms over training, the single-checkpoint views of
  the final model (embedding norms, neuron clusters, circles, activation maps and spectra,
  attention, W_L), the same three views with a slider over epochs, the CKA matrix;
* the comparison of the T_mem checkpoint with the final one (``interp.analysis.compare``).

``write_comparison_report(a, b, out_path)`` does the same for two checkpoints (``RUN`` or
``RUN@EPOCH`` specs, see ``interp.analysis.compare.resolve_checkpoint``).

Offline and safe by construction:

* plotly.js is embedded once, in the page head (``plotly.offline.get_plotlyjs``); nothing is
  loaded from the network (no CDN, no MathJax, no fonts).
* Every user string (run names, notes, paths, config values) goes into the HTML through
  ``html.escape``, and into figures escaped as well (plotly.js reads some HTML in text).
* Figures go into ``<script>`` elements as JSON in which ``<``, ``>``, ``/``, ``&`` and the JS line
  separators are ``\\uXXXX`` escapes, so no string can close the script element early.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from interp.errors import InterpError
from interp.viz.style import EmptyFigure, _fmt_value, script_safe_json

__all__ = ["write_report", "write_comparison_report", "render_html", "Section", "FigureItem"]

PLOTLY_CONFIG = {"responsive": True, "displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}

esc = html.escape  # HTML text and attributes; figures escape their own strings (style._esc)


@dataclass
class FigureItem:
    """One figure in the report: a heading, what it shows, and the plotly figure (or why it is missing)."""

    title: str
    caption: str
    figure: Any = None
    error: Optional[str] = None


@dataclass
class Section:
    title: str
    intro_html: str = ""  # already escaped / built from escaped parts
    figures: list[FigureItem] = field(default_factory=list)


# ----------------------------------------------------------------------------- HTML


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222; background: #fafafa; }
header { background: #243447; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px 0; font-size: 24px; }
header .sub { opacity: 0.8; font-size: 13px; }
main { padding: 8px 32px 48px 32px; max-width: 1400px; }
nav { font-size: 13px; margin: 12px 0; }
nav a { margin-right: 14px; }
h2 { border-bottom: 2px solid #243447; padding-bottom: 4px; margin-top: 36px; }
h3 { margin: 22px 0 4px 0; font-size: 16px; }
p.caption { margin: 2px 0 8px 0; font-size: 13px; color: #444; max-width: 1100px; }
div.figure { background: #fff; border: 1px solid #ddd; border-radius: 4px; width: 100%; min-height: 200px; }
div.error { background: #fff4f4; border: 1px solid #e0b4b4; padding: 8px 12px; font-size: 13px; }
table.kv { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px 0; background: #fff; }
table.kv td, table.kv th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
table.kv th { background: #eef2f7; font-weight: 600; }
.cols { display: flex; flex-wrap: wrap; gap: 24px; }
.small { font-size: 12px; color: #555; }
details { margin: 8px 0; }
code { background: #eef; padding: 0 3px; }
"""


def kv_table(rows: Sequence[tuple[str, Any]], header: Optional[tuple[str, str]] = None) -> str:
    """A two-column table; both columns are escaped here."""
    out = ['<table class="kv">']
    if header:
        out.append(f"<tr><th>{esc(header[0])}</th><th>{esc(header[1])}</th></tr>")
    for k, v in rows:
        out.append(f"<tr><th>{esc(str(k))}</th><td>{esc(_fmt(v))}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def rows_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ['<table class="kv">', "<tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in header) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{esc(_fmt(v))}</td>" for v in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _fmt(v: Any) -> str:
    """A cell: lists joined (``none`` when empty), everything else by ``style._fmt_value``."""
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v) if v else "none"
    return _fmt_value(v)


def render_html(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole page: plotly.js once in the head, then every section with its figures.

    ``title`` / ``subtitle`` are plain text (escaped here); section intros are HTML built by the
    caller from escaped parts.
    """
    import plotly
    from plotly.offline import get_plotlyjs

    plotlyjs = get_plotlyjs()
    if "</script" in plotlyjs.lower():  # would end the element early; never seen, but cheap to check
        raise RuntimeError("the installed plotly.js cannot be inlined (it contains '</script')")
    body: list[str] = []
    nav = []
    n_fig = 0
    for si, sec in enumerate(sections):
        sid = f"s{si}"
        nav.append(f'<a href="#{sid}">{esc(sec.title)}</a>')
        body.append(f'<section id="{sid}"><h2>{esc(sec.title)}</h2>')
        if sec.intro_html:
            body.append(sec.intro_html)
        for item in sec.figures:
            body.append(f"<h3>{esc(item.title)}</h3>")
            if item.caption:
                body.append(f'<p class="caption">{esc(item.caption)}</p>')
            if item.figure is None:
                body.append(f'<div class="error">not drawn: {esc(item.error or "no data")}</div>')
                continue
            fid = f"fig{n_fig}"
            n_fig += 1
            body.append(f'<div class="figure" id="{fid}" data-title="{esc(item.title)}"></div>')
            body.append(f"<script>drawFigure({json.dumps(fid)}, {script_safe_json(item.figure)});</script>")
        body.append("</section>")
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    config = json.dumps(PLOTLY_CONFIG)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{_CSS}</style>
<script type="text/javascript">/* plotly.js {esc(plotly.__version__)}, embedded so the report works offline */
{plotlyjs}</script>
<script>
// Figures are drawn as the page is parsed; a figure that fails says so in place of the plot.
window.PLOTLY_CONFIG = {config};
function drawFigure(id, fig) {{
  var el = document.getElementById(id);
  try {{
    var p = Plotly.newPlot(el, {{data: fig.data, layout: fig.layout, frames: fig.frames || [], config: window.PLOTLY_CONFIG}});
    if (p && p.catch) p.catch(function (e) {{ el.textContent = "figure failed: " + e; el.className = "error"; throw e; }});
  }} catch (e) {{ el.textContent = "figure failed: " + e; el.className = "error"; throw e; }}
}}
</script>
</head>
<body>
<header><h1>{esc(title)}</h1><div class="sub">{esc(subtitle)}</div></header>
<main>
<nav>{" ".join(nav)}</nav>
{chr(10).join(body)}
<p class="small">Written by interp on {esc(when)} with plotly {esc(plotly.__version__)}; {n_fig} figures; self-contained (no network).</p>
</main>
</body>
</html>
"""


def _write(out_path: Path, text: str) -> Path:
    from interp.store import atomic_write_bytes

    out_path = Path(out_path)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out_path, text.encode("utf-8"))
    except OSError as e:
        raise InterpError(f"cannot write {out_path}: {e.strerror or e}") from None
    return out_path


def _figure(title: str, caption: str, build: Callable[[], Any], errors: list[str]) -> FigureItem:
    """Build one figure; a figure that cannot be drawn (a run with no key frequency has no
    circles) becomes a note in the report instead of aborting the whole report."""
    try:
        return FigureItem(title, caption, build())
    except (InterpError, EmptyFigure) as e:
        errors.append(f"{title}: {e}")
        return FigureItem(title, caption, None, str(e))


# ----------------------------------------------------------------------------- run report


def _open(run_or_path):
    from interp.store import Run

    return run_or_path if isinstance(run_or_path, Run) else Run.open(run_or_path)


def _summary_html(run, summary, table, metrics) -> str:
    cfg = run.config
    ph = summary.phases
    parts = ['<div class="cols"><div>', "<h3>Run</h3>"]
    final = summary.final
    res = [
        ("run", run.name),
        ("directory", str(run.path)),
        ("task", f"{cfg.task} mod {cfg.p}"),
        ("checkpoints", f"{summary.n_checkpoints} (epochs {summary.first_epoch}..{summary.final_epoch})"),
    ]
    if metrics is not None and len(metrics):
        res.append(("epochs trained", int(metrics["epoch"].iloc[-1])))
    res += [
        ("T_mem (train acc >= 0.99)", ph.describe("t_mem")),
        ("T_grok (test acc >= 0.99)", ph.describe("t_grok")),
        ("memorisation", _interval(ph.memorisation)),
        ("circuit formation", _interval(ph.circuit_formation)),
        ("cleanup", _interval(ph.cleanup)),
        (f"key frequencies ({summary.key_freqs_source})", summary.key_freqs),
        ("key frequencies at the final checkpoint", summary.final_key_freqs),
        ("embedding frequencies (cross-check)", summary.final_embedding_freqs),
    ]
    parts.append(kv_table(res))
    if cfg.notes:
        parts.append(f"<p><b>notes:</b> {esc(cfg.notes)}</p>")
    parts.append("</div><div><h3>Final checkpoint</h3>")
    fin = [(k.replace("_", " "), v) for k, v in final.items() if not isinstance(v, dict)]
    for k, v in (final.get("excluded_loss_per_freq") or {}).items():
        fin.append((f"excluded loss, k={k} only", v))
    parts.append(kv_table(fin))
    parts.append("</div><div><h3>Config</h3>")
    parts.append(kv_table(list(cfg.to_dict().items())))
    parts.append("</div></div>")
    parts.append(
        f'<details><summary>Rules behind these numbers</summary><p class="small"><b>Phases.</b> {esc(ph.rule)}</p>'
        f'<p class="small"><b>Key frequencies.</b> {esc(summary.key_rule)}</p>'
        + "".join(f'<p class="small">{esc(n)}</p>' for n in ph.notes)
        + "</details>"
    )
    return "\n".join(parts)


def _interval(iv) -> str:
    return f"{iv[0]} – {iv[1]}" if iv else "not reached"


def _comparison_html(comp) -> str:
    """``comp``: a ``compare.ComparisonSummary``."""
    la, lb = comp.labels
    notes = [f"{lab}: {note}" for lab, note in zip(comp.labels, comp.notes) if note]
    rows = [(m, _fmt_value(a), _fmt_value(b)) for m, a, b in comp.rows]
    return (
        "".join(f'<p class="small">{esc(n)}</p>' for n in notes)
        + "<details><summary>the comparison as a text table</summary>"
        + rows_table(["measure", la, lb], rows)
        + "</details>"
    )


def _checkpoint_figures(views, label: str, key_freqs: Sequence[int], errors: list[str]) -> list[FigureItem]:
    """The single-checkpoint figures of one ``representation.CheckpointViews``."""
    from interp.viz import checkpoint as ck

    sfx = f": {label}" if label else ""
    return [
        _figure(
            f"Embedding Fourier norms{sfx}",
            "Norm of W_E's Fourier components per frequency; red: key frequencies (REFERENCE §2).",
            lambda: ck.embedding_fourier_norms(views.spectrum, key_freqs),
            errors,
        ),
        _figure(
            f"Neuron clusters{sfx}",
            "Neurons per frequency with FVE above the threshold (REFERENCE §2).",
            lambda: ck.neuron_cluster_sizes(views.clusters),
            errors,
        ),
        _figure(
            f"Embedding circles{sfx}",
            "Token embeddings on each key frequency's plane (Nanda et al. 2023, Fig. 3).",
            lambda: ck.embedding_circles(views.circles),
            errors,
        ),
        _figure(
            f"Neuron activation maps and spectra{sfx}",
            "Activation of the clearest neuron of each key frequency "
            "over all inputs (a, b), and the norm of its 2D Fourier spectrum per pair of frequencies.",
            lambda: ck.neuron_activations(views.maps),
            errors,
        ),
        _figure(
            f"Attention from '='{sfx}",
            "Weight the '=' position puts on a and on b, per head, for every input.",
            lambda: ck.attention_patterns(views.attention),
            errors,
        ),
        _figure(
            f"W_L in the Fourier basis{sfx}",
            "Each neuron's output onto the logits in the Fourier basis, neurons "
            "sorted by frequency cluster, and the norm per frequency (REFERENCE §2).",
            lambda: ck.neuron_logit_fourier(views.logit_spectrum, views.clusters),
            errors,
        ),
    ]


def build_run_sections(
    run, progress: bool = False, max_frames: Optional[int] = None
) -> tuple[list[Section], list[str]]:
    """Every section of a run's report (the figures built, nothing written). Returns (sections, notes
    about figures that could not be drawn).

    Reads the tables and the stored analysis results only; ``analyze`` brings them up to date
    first (incrementally: nothing is recomputed when they are current), so no model is loaded here.
    """
    from interp.analysis.run_table import analyze
    from interp.analysis.run_views import SLIDER_FRAMES, load_views, phase_marks
    from interp.viz import checkpoint as ck
    from interp.viz import training as tr

    run = _open(run)
    table, summary = analyze(run, progress=progress)
    views = load_views(run)
    try:
        metrics = run.metrics()
    except InterpError:
        metrics = None
    ph = summary.phases
    errors: list[str] = []
    name = run.name
    keys = list(summary.key_freqs)
    frames = max_frames or SLIDER_FRAMES
    marks = phase_marks(ph)

    sections = [Section("Summary", _summary_html(run, summary, table, metrics))]

    train = Section("Training")
    if metrics is not None and len(metrics):
        train.figures.append(
            _figure(
                "Loss and accuracy",
                "Train and test cross-entropy (log scale) and accuracy at every epoch (thinned for size), with the phases "
                "shaded and T_mem / T_grok marked (REFERENCE §1, §5). Buttons switch the epoch axis to log.",
                lambda: tr.loss_curves(metrics, ph, name),
                errors,
            )
        )
        train.figures.append(
            _figure(
                "Weight norms per parameter",
                "Sum of squared weights, total and per parameter (log scale); weight decay shrinks it during circuit "
                "formation and cleanup (REFERENCE §3-5).",
                lambda: tr.weight_norms(metrics, ph, name),
                errors,
            )
        )
    else:
        train.intro_html = '<p class="small">No per-epoch metrics in this run (an imported checkpoint?).</p>'
    sections.append(train)

    prog = Section("Progress measures")
    prog.figures.append(
        _figure(
            "Progress measures over training",
            f"Every measure of REFERENCE §3 at every checkpoint; restricted / excluded loss use the key frequencies "
            f"{_fmt(keys)} ({summary.key_freqs_source}). Restricted loss falls before test loss; excluded loss rises during "
            "circuit formation; the Gini coefficients rise and the weight norm falls as the circuit forms and cleans up.",
            lambda: tr.progress_measures(table, ph, name),
            errors,
        )
    )
    if "rqi" in table.columns:
        prog.figures.append(
            _figure(
                "Representation Quality Index over training",
                f"RQI of the embedding (Liu et al. 2022, REFERENCE §6) in the circle chart on the planes of the key "
                f"frequencies {_fmt(keys)}, the same planes at every checkpoint: the share of parallelograms "
                "i + j = m + n (mod p) whose angles close to within ~0.1 rad. Random points score ~0.05 per plane "
                "alone and ~0 jointly; a perfect circle representation scores 1. Test accuracy dashed for reference.",
                lambda: tr.representation_quality(table, ph, name),
                errors,
            )
        )
    if any(str(c).startswith("alpha_") for c in table.columns):
        prog.figures.append(
            _figure(
                "Heavy-tailed spectra of the weight matrices",
                "HTSR (REFERENCE §7, interp.analysis.spectra): the power-law exponent alpha of the tail of each weight "
                "matrix's eigenvalues of W^T W (alpha ~ 2 ideal, < 2 over-correlated, > 6 under-trained) and its "
                "correlation traps (eigenvalues of the element-shuffled matrix above the Marchenko-Pastur edge plus "
                "a Tracy-Widom margin; with alpha < 2 they herald anti-grokking). W_Q, W_K, W_V, W_O: heads "
                "concatenated per layer. Only checkpoints analysed with spectra.",
                lambda: tr.spectral_exponents(table, ph, name),
                errors,
            )
        )
    prog.figures.append(
        _figure(
            "Embedding Fourier norms over training",
            "Share of W_E's squared Fourier norm in each frequency at every checkpoint (one column per checkpoint); "
            "it concentrates on the key frequencies (REFERENCE §2).",
            lambda: tr.embedding_fourier_heatmap(table, name, ph),
            errors,
        )
    )
    prog.figures.append(
        _figure(
            "W_L Fourier norms over training",
            "The same for the neuron-logit map W_L = W_out W_U (REFERENCE §2).",
            lambda: tr.neuron_logit_fourier_heatmap(table, name, ph),
            errors,
        )
    )
    sections.append(prog)

    slide = Section("Over training, checkpoint by checkpoint")
    slide.intro_html = (
        f'<p class="small">Up to {frames} of {summary.n_checkpoints} checkpoints; drag the slider or press play.</p>'
    )
    slide.figures.append(
        _figure(
            "Embedding Fourier norms (slider)",
            "Norm of W_E's Fourier components per frequency at each checkpoint; red: the key frequencies.",
            lambda: tr.embedding_fourier_norms_slider(table, keys, frames, include=marks),
            errors,
        )
    )
    slide.figures.append(
        _figure(
            "Neuron clusters (slider)",
            "Neurons whose FVE by one frequency exceeds the threshold, per frequency, at each "
            "checkpoint (REFERENCE §2).",
            lambda: tr.neuron_cluster_sizes_slider(table, frames, include=marks),
            errors,
        )
    )
    if keys:
        slide.figures.append(
            _figure(
                "Embedding circles (slider)",
                f"Every token's embedding projected on the (cos k, sin k) plane of W_E for the "
                f"final key frequencies {_fmt(keys)}, at each checkpoint; colour = token. The circles form out of a blob.",
                lambda: tr.embedding_circles_slider(views.circles, frames, include=marks),
                errors,
            )
        )
    sections.append(slide)

    fin = Section(f"Final checkpoint (epoch {views.final_epoch})")
    fin.figures += _checkpoint_figures(views.final, "", keys, errors)
    sections.append(fin)

    sim = Section("Similarity between checkpoints")
    if views.cka is not None:
        m = views.cka
        sim.figures.append(
            _figure(
                "CKA matrix",
                f"Linear CKA of the final-position residual stream on all inputs between {len(m.epochs_a)} "
                "checkpoints (issue #4): blocks of similar checkpoints are the phases.",
                lambda: tr.cka_matrix(m.matrix, m.epochs_a, "Linear CKA of the final residual stream", name),
                errors,
            )
        )
    sections.append(sim)

    cmp = Section("Memorising vs generalising: T_mem against the final checkpoint")
    if views.comparison is not None:
        comp = views.comparison
        cmp.intro_html = _comparison_html(comp)
        cmp.figures.append(
            _figure(
                "T_mem vs final",
                "The checkpoint where training accuracy first reaches 99% (memorised) against the final "
                "one: embedding Fourier energy and neuron clusters per frequency, and every measure of the comparison.",
                lambda: ck.checkpoint_comparison(comp),
                errors,
            )
        )
    else:
        cmp.intro_html = f'<p class="small">No comparison: {esc(views.notes.get("comparison", ""))}</p>'
    sections.append(cmp)
    return sections, errors


def write_report(run, out_path=None, progress: bool = False, max_frames: Optional[int] = None) -> Path:
    """Write the report of ``run`` (a ``store.Run`` or a run directory) to ``out_path`` (default
    ``<run>/report.html``) and return the path. Brings the stored analysis up to date first (incremental)."""
    from interp.store import check_writable_file

    run = _open(run)
    out = check_writable_file(Path(out_path) if out_path is not None else run.path / "report.html")
    sections, errors = build_run_sections(run, progress, max_frames)
    if errors:
        sections[0].intro_html += "".join(f'<p class="small">Not drawn: {esc(e)}</p>' for e in errors)
    cfg = run.config
    text = render_html(
        f"Grokking report: {run.name}",
        f"{cfg.task} mod {cfg.p} · d_model {cfg.d_model} · {cfg.n_heads} heads · d_mlp {cfg.d_mlp} · "
        f"wd {cfg.weight_decay} · lr {cfg.lr} · train fraction {cfg.frac_train}",
        sections,
    )
    return _write(out, text)


# ----------------------------------------------------------------------------- comparison report


def _checkpoint(spec):
    from interp.analysis.compare import Checkpoint, resolve_checkpoint

    return spec if isinstance(spec, Checkpoint) else resolve_checkpoint(str(spec))


def build_comparison_sections(a, b, cka_checkpoints: int = 12) -> tuple[list[Section], list[str], Any]:
    """Sections of a comparison report of checkpoints ``a`` and ``b`` (specs or ``compare.Checkpoint``).

    Two chosen checkpoints are analysed here (each model loaded once): the comparison, and the
    single-checkpoint views of each (``representation.checkpoint_views``)."""
    from interp.analysis.cka import run_cka
    from interp.analysis.compare import compare, parse_spec
    from interp.analysis.representation import checkpoint_views
    from interp.store import Run
    from interp.viz import checkpoint as ck
    from interp.viz import training as tr

    ca, cb = _checkpoint(a), _checkpoint(b)
    full = compare(ca, cb)
    comp = full.summary()
    la, lb = comp.labels
    errors: list[str] = []
    freqs = comp.analysis_freqs[0] or None
    sections = []
    side_rows = []
    for lab, c in ((la, ca), (lb, cb)):
        side_rows.append(
            (
                lab,
                f"{c.run_path or '-'}; epoch {c.epoch if c.epoch is not None else '-'}"
                + (f" ({c.note})" if c.note else ""),
            )
        )
    intro = kv_table(side_rows, ("checkpoint", "where")) + _comparison_html(comp)
    s = Section("Comparison", intro)
    s.figures.append(
        _figure(
            f"{la} vs {lb}",
            "Embedding Fourier energy and neuron clusters per frequency, and every measure side by side (issue #4).",
            lambda: ck.checkpoint_comparison(comp),
            errors,
        )
    )
    sections.append(s)

    # Training curves of whole runs (a spec without '@') give the two checkpoints their context.
    runs = []
    for spec, c, lab in ((a, ca, la), (b, cb, lb)):
        if isinstance(spec, str) and parse_spec(spec)[1] is None and c.run_path:
            runs.append((lab, Run.open(c.run_path)))
    if runs:
        t = Section("Training of the runs")
        for lab, r in runs:
            try:
                m = r.metrics()
            except InterpError as e:
                errors.append(f"{lab}: {e}")
                continue
            t.figures.append(
                _figure(
                    f"Loss and accuracy: run {r.name}",
                    f"Training of the run {lab} comes from: train and test loss (log) and accuracy (REFERENCE §1).",
                    lambda m=m, r=r: tr.loss_curves(m, None, r.name),
                    errors,
                )
            )
        if len(runs) == 2:

            def cross():
                m = run_cka(runs[0][1], runs[1][1], "resid", max_checkpoints=cka_checkpoints)
                f = tr.cka_matrix(
                    m.matrix,
                    m.epochs_a,
                    f"Linear CKA, final residual: {la} (rows) vs {lb} (columns)",
                    labels_b=m.epochs_b,
                )
                f.update_yaxes(title_text=f"epoch of {esc(la)}")
                f.update_xaxes(title_text=f"epoch of {esc(lb)}")
                return f

            t.figures.append(
                _figure(
                    "CKA between the runs",
                    "Linear CKA of the final-position residual stream between checkpoints of the two runs (issue #4).",
                    cross,
                    errors,
                )
            )
        sections.append(t)

    for lab, c in ((la, ca), (lb, cb)):
        sec = Section(f"Checkpoint {lab}")
        sec.figures += _checkpoint_figures(checkpoint_views(c.model, freqs), lab, freqs or [], errors)
        sections.append(sec)
    return sections, errors, full


def write_comparison_report(a, b, out_path=None) -> Path:
    """Write a report comparing checkpoints ``a`` and ``b`` (``RUN`` or ``RUN@EPOCH`` specs, or
    ``compare.Checkpoint``s) to ``out_path`` (default ``<run of B>/compare/<A>__<B>.html``)."""
    from interp.analysis.compare import output_path
    from interp.store import check_writable_file

    if out_path is not None:
        check_writable_file(out_path)
    sections, errors, comp = build_comparison_sections(a, b)
    if errors:
        sections[0].intro_html += "".join(f'<p class="small">Not drawn: {esc(e)}</p>' for e in errors)
    la, lb = comp.labels
    out = Path(out_path) if out_path is not None else output_path(comp, ".html")
    return _write(out, render_html(f"Comparison: {la} vs {lb}", "memorising vs generalising, side by side", sections))


def file_size(path: os.PathLike) -> str:
    n = os.path.getsize(path)
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"
