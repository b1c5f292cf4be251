"""analyze(run): the per-checkpoint table, its incremental updates, the CLI, and bad input."""

import json
import shutil

import pytest
import torch
from conftest import run_cli, tiny_config

from interp.analysis import measures as ms
from interp.analysis.results import ANALYSIS_FILES
from interp.analysis.run_table import analyze, load_analysis
from interp.cli import main as cli_main
from interp.errors import InterpError
from interp.model import Transformer
from interp.store import CKPT_DIR, METRICS_FILE, Run, save_checkpoint

torch.set_num_threads(1)


@pytest.fixture
def run_copy(quick_run, tmp_path):
    """A private copy of the session's quick run (these tests write into it)."""
    dst = tmp_path / "run"
    shutil.copytree(quick_run.path, dst)
    for f in ANALYSIS_FILES:
        (dst / f).unlink(missing_ok=True)
    return Run.open(dst)


def test_quick_run_table_summary_and_acceptance_shape(run_copy):
    table, s = analyze(run_copy, progress=False)
    eps = run_copy.checkpoint_epochs()
    assert table["epoch"].tolist() == eps and s.computed == len(eps)
    for col in [
        "train_loss",
        "test_loss",
        "train_acc",
        "test_acc",
        "restricted_loss",
        "excluded_loss",
        "gini_W_E",
        "gini_W_L",
        "frac_neurons_fve",
        "key_freqs",
        "cos_fve",
        "sq_total",
        "sq_embed.W_E",
        "neurons_k1",
        "emb_norm_k0",
        "wl_norm_k1",
    ]:
        assert col in table.columns, col
    assert all(f"excluded_loss_k{k}" in table.columns and f"cos_coef_k{k}" in table.columns for k in s.key_freqs)
    assert 1 <= len(s.key_freqs) <= 7 and s.key_freqs_source == "final checkpoint"
    ph = s.phases
    assert ph.t_mem is not None and ph.t_grok is not None and ph.t_mem <= ph.t_grok
    assert ph.memorisation[1] == ph.circuit_formation[0]
    # one-way data path: the saved table holds only what the metrics lack; the losses, accuracies
    # and squared weights of the returned view are the trainer's own numbers, not recomputed
    saved_cols = set(load_analysis(run_copy.path)[0].columns)
    assert not saved_cols & {"train_loss", "test_loss", "train_acc", "test_acc", "sq_total", "sq_embed.W_E"}
    assert not any(c.startswith("ckpt_") for c in saved_cols)  # the metrics cover every checkpoint
    m = run_copy.metrics().set_index("epoch").loc[eps]
    for col in ("train_loss", "test_loss", "test_acc", "sq_total"):
        assert table[col].tolist() == m[col].tolist()
    # shapes the issue asks of a grokking run
    at = lambda col, e: float(table.loc[table.epoch == e, col].iloc[0])  # noqa: E731
    first_ge = lambda e: int(table.epoch[table.epoch >= e].iloc[0])  # noqa: E731
    tm, end = first_ge(ph.t_mem), eps[-1]
    assert at("gini_W_E", end) > at("gini_W_E", tm) and at("gini_W_L", end) > at("gini_W_L", tm)
    assert at("excluded_loss", end) > at("excluded_loss", 0)
    saved, meta = load_analysis(run_copy.path)
    assert saved["epoch"].tolist() == eps
    assert meta["signature"]["definitions_version"] == ms.DEFINITIONS_VERSION
    assert meta["summary"]["T_grok"] == ph.t_grok


def test_incremental_and_recomputed_on_change(run_copy, monkeypatch):
    n = len(run_copy.checkpoint_epochs())
    _, s = analyze(run_copy, progress=False)
    assert s.computed == n
    _, s = analyze(run_copy, progress=False)
    assert s.computed == 0
    last = run_copy.checkpoint_epochs()[-1]
    save_checkpoint(run_copy.path, last + 50, run_copy.load_model(last), run_copy.config)
    table, s = analyze(run_copy, progress=False)
    assert s.computed == 1 and table["epoch"].iloc[-1] == last + 50
    monkeypatch.setattr(ms, "DEFINITIONS_VERSION", ms.DEFINITIONS_VERSION + 1)
    _, s = analyze(run_copy, progress=False)
    assert s.computed == n + 1
    k = s.key_freqs[0]
    table, s = analyze(run_copy, progress=False, key_freqs=str(k))
    assert s.computed == n + 1 and s.key_freqs == [k] and s.key_freqs_source == "user"
    assert f"excluded_loss_k{k}" in table.columns


def test_run_without_metrics_evaluates_its_checkpoints(run_copy):
    """No metrics.csv (e.g. an imported model): split losses come from the checkpoints, under ckpt_ names,
    with the trainer's numerics (so they equal what the trainer logged, to float32 rounding of the logits)."""
    logged = run_copy.metrics().set_index("epoch")
    (run_copy.path / METRICS_FILE).unlink()
    table, s = analyze(run_copy, progress=False, views=False)
    saved, _ = load_analysis(run_copy.path)
    assert {"ckpt_train_loss", "ckpt_test_acc", "ckpt_sq_total"} <= set(saved.columns)
    assert "test_loss" not in saved.columns and "ckpt_test_loss" not in table.columns
    eps = run_copy.checkpoint_epochs()
    for col in ("train_loss", "test_loss"):
        assert torch.allclose(torch.tensor(table[col].values), torch.tensor(logged.loc[eps, col].values), rtol=1e-5)
    assert table["test_acc"].tolist() == logged.loc[eps, "test_acc"].tolist()
    assert s.phases.t_grok is not None


def test_multiplication_run_is_analysed_in_discrete_log_coordinates(tmp_path):
    from interp.training.loop import train

    run = train(tiny_config(task="mul", p=13, epochs=40), tmp_path / "mul", progress=False)
    table, s = analyze(run, progress=False)
    assert len(table) == len(run.checkpoint_epochs())
    assert "neurons_k6" in table.columns and "neurons_k7" not in table.columns  # n = p - 1 = 12


def test_legacy_fixture_through_import_and_analyze(fixture_path, tmp_path):
    from interp.legacy import import_run

    run = import_run(fixture_path, tmp_path / "legacy")
    table, s = analyze(run, progress=False)
    assert s.key_freqs == [3, 6, 23, 39]
    assert s.final["restricted_loss"] == pytest.approx(3.6e-3, rel=0.1)
    assert s.final["excluded_loss_per_freq"][23] == pytest.approx(8.15, rel=0.05)


def _one_line_error(capsys, argv):
    rc = cli_main(argv)
    err = capsys.readouterr().err
    assert rc != 0
    assert len(err.strip().splitlines()) == 1 and err.startswith("interp: error:") and "Traceback" not in err
    return err


def test_bad_input(run_copy, capsys, tmp_path):
    # no checkpoints
    empty = tmp_path / "empty"
    shutil.copytree(run_copy.path, empty)
    shutil.rmtree(empty / CKPT_DIR)
    with pytest.raises(InterpError, match="no checkpoints"):
        analyze(empty, progress=False)
    assert "no checkpoints" in _one_line_error(capsys, ["analyze", str(empty)])
    # a checkpoint of another shape (same config hash, different d_mlp)
    odd = tmp_path / "odd"
    shutil.copytree(run_copy.path, odd)
    cfg = run_copy.config
    other = Transformer(cfg.model_config().__class__(**{**cfg.model_config().to_dict(), "d_mlp": cfg.d_mlp + 8}))
    save_checkpoint(odd, run_copy.checkpoint_epochs()[-1], other, cfg)
    with pytest.raises(InterpError, match="has shape"):
        analyze(odd, progress=False)
    assert "has shape" in _one_line_error(capsys, ["analyze", str(odd), "--no-progress"])
    # a task without Fourier structure
    weird = tmp_path / "weird"
    shutil.copytree(run_copy.path, weird)
    cj = json.loads((weird / "config.json").read_text())
    cj["config"]["task"] = "pow"
    (weird / "config.json").write_text(json.dumps(cj))
    with pytest.raises(InterpError, match="unknown task 'pow'|no Fourier structure"):
        analyze(weird, progress=False)
    # bad --key-freqs
    assert "out of range" in _one_line_error(capsys, ["analyze", str(run_copy.path), "--key-freqs", "999"])
    assert "integers" in _one_line_error(capsys, ["analyze", str(run_copy.path), "--key-freqs", "3,x"])
    # and once through the real console script, as a user would
    r = run_cli("analyze", str(weird))
    assert r.returncode != 0 and "'pow'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_cli_text_and_json(run_copy, capsys):
    assert cli_main(["analyze", str(run_copy.path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for needle in ("key frequencies", "T_mem", "T_grok", "memorisation", "cleanup", "restricted loss", "excluded loss"):
        assert needle in out
    assert cli_main(["analyze", str(run_copy.path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["key_freqs"] and "T_mem" in d and d["phases"]["rule"]
    assert set(d["final"]) >= {"restricted_loss", "excluded_loss", "excluded_loss_per_freq"}
