"""Figures of interp.viz (training, checkpoint, style): each returns a plotly Figure holding the data it
claims to show, built from tables and analysis dataclasses (no model)."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch

from interp.analysis import representation as rep
from interp.analysis.run_views import SLIDER_FRAMES, pick_epochs
from interp.errors import InterpError
from interp.viz import checkpoint as ck
from interp.viz import style
from interp.viz import training as tr


@pytest.fixture(scope="module")
def analysed(quick_run):
    from interp.analysis.run_table import analyze

    table, summary = analyze(quick_run, progress=False, views=False)
    eps = quick_run.checkpoint_epochs()
    models = {e: quick_run.load_model(e) for e in pick_epochs(eps, 8, [summary.t_mem])}
    return dict(
        run=quick_run,
        table=table,
        summary=summary,
        metrics=quick_run.metrics(),
        final=quick_run.load_model(),
        models=models,
    )


def _points(fig: go.Figure) -> int:
    """Number of plotted values over all traces (typed arrays decoded by plotly's to_dict)."""
    n = 0
    for trace in fig.data:
        for key in ("y", "z"):
            v = getattr(trace, key, None)
            if v is not None:
                n += int(np.asarray(v).size)
    return n


def test_over_training_figures(analysed):
    a = analysed
    figs = [
        tr.loss_curves(a["metrics"], a["summary"], "quick"),
        tr.progress_measures(a["table"], a["summary"], "quick"),
        tr.weight_norms(a["metrics"], a["summary"].phases, "quick"),
        tr.embedding_fourier_heatmap(a["table"], "quick", a["summary"]),
        tr.neuron_logit_fourier_heatmap(a["table"], "quick", a["summary"]),
    ]
    for f in figs:
        assert isinstance(f, go.Figure) and _points(f) > 0
    loss, prog = figs[0], figs[1]
    # log-scale losses, phases shaded on every panel of the progress measures
    assert loss.layout.yaxis.type == "log"
    n_panels = len({t.xaxis for t in prog.data if t.xaxis})  # panels with data (an odd count leaves a cell empty)
    spans, marks = style.phase_spans(a["summary"])
    assert spans, "the quick run goes through its phases"
    assert len(prog.layout.shapes) == n_panels * (len(spans) + sum(v is not None for v in marks.values()))
    names = {t.name for t in prog.data}
    for want in (
        "restricted loss",
        "excluded loss (train)",
        "Gini of W_E Fourier norms",
        "sum of squared weights",
        "neurons with FVE > 0.85",
        "allowed by the key frequencies",
        "measured (median over train inputs)",
    ):
        assert want in names
    # the heatmap shows shares: every checkpoint's column sums to 1
    z = np.asarray(figs[3].data[0].z, dtype=float)
    assert z.shape[1] == len(a["table"])
    assert np.allclose(z.sum(0), 1, atol=1e-5)


def test_single_checkpoint_figures(analysed):
    m, keys = analysed["final"], analysed["summary"].key_freqs
    p = m.cfg.p
    v = rep.checkpoint_views(m)  # the figures take these dataclasses, not the model
    assert [c.k for c in v.circles] == keys == v.clusters.key_freqs
    efn = ck.embedding_fourier_norms(v.spectrum, keys)
    assert len(efn.data[0].y) == p // 2
    ncs = ck.neuron_cluster_sizes(v.clusters)
    assert int(np.asarray(ncs.data[0].y).sum()) > 0
    circ = ck.embedding_circles(v.circles)
    assert len(circ.data) == len(keys) and all(len(t.x) == p for t in circ.data)
    act = ck.neuron_activations(v.maps)
    assert np.asarray(act.data[0].z).shape == (p, p)
    att = ck.attention_patterns(v.attention)
    assert len(att.data) == 2 * m.cfg.n_heads
    wl = ck.neuron_logit_fourier(v.logit_spectrum, v.clusters)
    assert np.asarray(wl.data[0].z).shape == (m.cfg.d_mlp, p)
    # the views are what the single-purpose functions compute
    assert torch.equal(v.maps.maps, rep.neuron_activation_maps(m).maps)
    assert torch.equal(v.clusters.sizes, rep.neuron_clusters(m).sizes)


def test_slider_figures(analysed):
    a = analysed
    models, keys = a["models"], a["summary"].key_freqs
    circles = {e: rep.embedding_circles(m, keys) for e, m in models.items()}
    for fig, n in [
        (tr.embedding_fourier_norms_slider(a["table"], key_freqs=keys), min(len(a["table"]), SLIDER_FRAMES)),
        (tr.neuron_cluster_sizes_slider(a["table"], max_frames=10), 10),
        (tr.embedding_circles_slider(circles), len(models)),
    ]:
        assert len(fig.frames) == n
        steps = fig.layout.sliders[0].steps
        assert [s.label for s in steps] == [fr.name for fr in fig.frames]
        assert all(len(fr.data) == len(fig.data) for fr in fig.frames)
    # the model's own measurement agrees with the analysis table's columns at the final checkpoint
    last = max(models)
    from_table = tr.neuron_cluster_sizes_slider(a["table"]).frames[-1].data[0].y
    assert list(np.asarray(from_table)) == rep.neuron_clusters(models[last]).sizes[1:].tolist()


def test_cka_and_comparison_figures(analysed):
    from interp.analysis.cka import checkpoint_cka_matrix
    from interp.analysis.compare import compare, resolve_checkpoint

    run = analysed["run"]
    m = checkpoint_cka_matrix(run, "resid", max_checkpoints=5)
    fig = tr.cka_matrix(m.matrix, m.epochs_a, run_name="quick")
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z.shape == (len(m.epochs_a),) * 2 and np.allclose(np.diag(z), 1, atol=1e-4)
    comp = compare(resolve_checkpoint(f"{run.path}@T_mem"), resolve_checkpoint(f"{run.path}@final"))
    summary = comp.summary()
    cf = ck.checkpoint_comparison(type(summary).from_dict(summary.to_dict()))  # as stored by the analysis
    tables = [t for t in cf.data if t.type == "table"]
    assert len(tables) == 1 and len(tables[0].cells.values[0]) == len(comp.rows)
    assert sum(t.type == "bar" for t in cf.data) == 4


def _long_metrics(n: int = 25_001) -> pd.DataFrame:
    e = np.arange(n)
    test = 4.7 * np.exp(-e / 3000.0) + 1e-7
    test[1400] = 40.0  # a one-epoch spike (the test-loss peak) must survive thinning
    return pd.DataFrame(
        {
            "epoch": e,
            "train_loss": np.exp(-e / 500.0) + 1e-8,
            "test_loss": test,
            "train_acc": np.minimum(1, e / 1000),
            "test_acc": np.minimum(1, e / 15000),
            "sq_total": 1000 - e / 50,
            "sq_embed.W_E": 100 - e / 500,
            "sq_blocks.0.attn.b_Q": 0.0,
        }
    )


def test_long_runs_are_thinned_and_light():
    df = _long_metrics()
    idx = style.thin_indices(len(df), 1000, keep=[1400])
    assert len(idx) <= 1003 and idx[0] == 0 and idx[-1] == len(df) - 1 and 1400 in idx
    assert (np.diff(idx) > 0).all()
    fig = tr.loss_curves(df)
    test_trace = next(t for t in fig.data if t.name == "test loss")
    assert len(test_trace.y) <= style.MAX_LINE_POINTS + 10
    assert float(np.max(test_trace.y)) == pytest.approx(40.0)
    wn = tr.weight_norms(df)
    assert {t.name for t in wn.data} == {"total", "embed.W_E"}  # the all-zero frozen bias is left out
    assert len(pio.to_json(fig, validate=False)) < 200_000


def test_user_strings_are_escaped_in_figures(analysed):
    fig = tr.loss_curves(analysed["metrics"], run_name="<b onmouseover=alert(1)>x</b>")
    title = fig.layout.title.text
    assert "<b" not in title and "&lt;b onmouseover=alert(1)&gt;" in title


def test_missing_columns_are_clear_errors():
    with pytest.raises(InterpError, match="needs column"):
        tr.loss_curves(pd.DataFrame({"epoch": [0, 1]}))
    with pytest.raises(InterpError, match="emb_norm_k"):
        tr.embedding_fourier_heatmap(pd.DataFrame({"epoch": [0, 1]}))
    with pytest.raises(style.EmptyFigure):  # nothing to draw is not a user mistake
        tr.embedding_circles_slider({})


def test_script_json_guard_is_a_real_check(monkeypatch):
    fig = go.Figure(go.Bar(x=[1], y=[2], name="</script><script>alert(1)</script>"))
    s = style.script_safe_json(fig)
    assert "</" not in s and "<" not in s and "alert(1)" in s
    # the guard holds even if escaping were broken (it is not an assert, so python -O keeps it)
    monkeypatch.setattr(style, "_JS_ESCAPES", {})
    monkeypatch.setattr(pio, "to_json", lambda fig, validate=False: '{"name": "</script>"}')
    with pytest.raises(RuntimeError, match="refusing"):
        style.script_safe_json(fig)
