"""analyze(run): the per-checkpoint table, its incremental updates, the CLI, and bad input."""

import json
import math
import shutil

import pytest
import torch
from conftest import cli_in_process, one_line_error, run_cli, tiny_config
from helpers import fourier_transformer

from interp.analysis import measures as ms
from interp.analysis.representation import rqi_circle_batch
from interp.analysis.results import ANALYSIS_FILES
from interp.analysis.rqi import rqi_circle
from interp.analysis.run_table import analyze, checkpoint_rqi, load_analysis
from interp.cli import main as cli_main
from interp.errors import InterpError
from interp.model import Transformer
from interp.store import CKPT_DIR, METRICS_FILE, Run, save_checkpoint, write_config, write_split

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
        "interference_margin",
        "train_margin_ratio",
        "sq_total",
        "sq_embed.W_E",
        "neurons_k1",
        "emb_norm_k0",
        "wl_norm_k1",
        "rqi",
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
    # RQI on the final key-frequency planes: chance at init, circles after grokking (module notes of rqi.py)
    assert at("rqi", 0) < 0.05 and at("rqi", end) > 0.1
    assert not any(c.startswith(("alpha_", "traps_")) for c in table.columns)  # spectra only when asked
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


def test_rqi_fast_path_equals_the_literal_count():
    g = torch.Generator().manual_seed(0)
    n, K = 17, 3
    k = torch.tensor([1.0, 3.0, 7.0], dtype=torch.float64)[:, None]
    circle = torch.exp(2j * math.pi * k * torch.arange(n, dtype=torch.float64) / n)  # [K, n]
    sets = [circle]
    for noise in (0.02, 0.05, 0.2, 3.0):  # from almost all closed to chance
        sets.append(circle * torch.exp(1j * noise * torch.randn(K, n, generator=g, dtype=torch.float64)))
    odd = sets[2].clone()
    odd[1, 4] = 0  # a point at the origin (no angle) closes nothing in its plane
    sets.append(odd)
    fast = rqi_circle_batch(torch.stack(sets))
    literal = [rqi_circle(z).rqi for z in sets]
    assert fast.tolist() == literal
    assert literal[0] == 1.0 and 0.05 < literal[2] < 0.95 and literal[4] < 0.05


def test_rqi_column_perfect_circles_vs_random(tmp_path):
    """A run whose final checkpoint is an exact Fourier circuit (tests/helpers.py: its embedding is a
    circle per key frequency) reads RQI 1 there and ~0 at a random first checkpoint, on the same planes."""
    from interp.config import TrainConfig
    from interp.tasks import make_split

    freqs = [2, 5]
    exact = fourier_transformer(13, freqs)
    mc = exact.cfg
    cfg = TrainConfig(
        run_name="circles",
        p=13,
        d_model=mc.d_model,
        n_heads=mc.n_heads,
        d_head=mc.d_head,
        d_mlp=mc.d_mlp,
        train_biases=True,
        epochs=1,
        checkpoint_every=1,
        log_checkpoints_until=0,
    )
    path = tmp_path / "circles"
    path.mkdir()
    write_config(path, cfg)
    write_split(path, make_split(cfg.p, cfg.frac_train, cfg.data_seed))
    rnd = Transformer(mc)
    rnd.init_weights(1 / math.sqrt(mc.d_model), seed=0)
    save_checkpoint(path, 0, rnd, cfg)
    save_checkpoint(path, 1, exact, cfg)
    table, s = analyze(path, progress=False, views=False)
    assert s.key_freqs == freqs
    rqi = dict(zip(table["epoch"], table["rqi"]))
    assert rqi[1] == pytest.approx(1.0) and rqi[0] < 0.05
    assert checkpoint_rqi(exact, freqs) == pytest.approx(1.0) and math.isnan(checkpoint_rqi(exact, []))
    assert s.final["rqi"] == pytest.approx(1.0)


def test_spectra_columns_on_request_and_incremental(tmp_path):
    from interp.training.loop import train

    run = train(tiny_config(d_model=32, d_mlp=64), tmp_path / "tiny", progress=False)
    n = len(run.checkpoint_epochs())
    table, s = analyze(run, progress=False, views=False, spectra=True)
    assert s.computed == n
    for m in ("W_E", "W_U", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out"):
        assert table[f"traps_{m}"].notna().all() and f"alpha_{m}" in table.columns
    assert table["alpha_W_in"].notna().all() and (table["alpha_W_in"] >= 1).all()  # 32 eigenvalues: fitted
    assert "alpha_W_in" in s.final and "traps_W_in" in s.final
    # kept by a later call without spectra; a new checkpoint gets them only when asked
    table, s = analyze(run, progress=False, views=False)
    assert s.computed == 0 and table["traps_W_in"].notna().all()
    last = run.checkpoint_epochs()[-1]
    save_checkpoint(run.path, last + 10, run.load_model(last), run.config)
    table, s = analyze(run, progress=False, views=False)
    assert s.computed == 1 and math.isnan(table["traps_W_in"].iloc[-1])
    table, s = analyze(run, progress=False, views=False, spectra=True)
    assert s.computed == 1 and table["traps_W_in"].notna().all()
    assert table["alpha_W_in"].iloc[-1] == table["alpha_W_in"].iloc[-2]  # same weights, same seeded shuffle
    saved, _ = load_analysis(run.path)
    assert saved["traps_W_in"].notna().all()


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


def test_bad_input(run_copy, tmp_path):
    # no checkpoints
    empty = tmp_path / "empty"
    shutil.copytree(run_copy.path, empty)
    shutil.rmtree(empty / CKPT_DIR)
    with pytest.raises(InterpError, match="no checkpoints"):
        analyze(empty, progress=False)
    assert "no checkpoints" in one_line_error(cli_in_process("analyze", str(empty)), code=None)
    # a checkpoint of another shape (same config hash, different d_mlp)
    odd = tmp_path / "odd"
    shutil.copytree(run_copy.path, odd)
    cfg = run_copy.config
    other = Transformer(cfg.model_config().__class__(**{**cfg.model_config().to_dict(), "d_mlp": cfg.d_mlp + 8}))
    save_checkpoint(odd, run_copy.checkpoint_epochs()[-1], other, cfg)
    with pytest.raises(InterpError, match="has shape"):
        analyze(odd, progress=False)
    assert "has shape" in one_line_error(cli_in_process("analyze", str(odd), "--no-progress"), code=None)
    # a task without Fourier structure
    weird = tmp_path / "weird"
    shutil.copytree(run_copy.path, weird)
    cj = json.loads((weird / "config.json").read_text())
    cj["config"]["task"] = "pow"
    (weird / "config.json").write_text(json.dumps(cj))
    with pytest.raises(InterpError, match="unknown task 'pow'|no Fourier structure"):
        analyze(weird, progress=False)
    # bad --key-freqs
    assert "out of range" in one_line_error(
        cli_in_process("analyze", str(run_copy.path), "--key-freqs", "999"), code=None
    )
    assert "integers" in one_line_error(cli_in_process("analyze", str(run_copy.path), "--key-freqs", "3,x"), code=None)
    # and once through the real console script, as a user would
    assert "'pow'" in one_line_error(run_cli("analyze", str(weird)), code=None)


def test_cli_text_and_json(run_copy, capsys):
    assert cli_main(["analyze", str(run_copy.path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    for needle in ("key frequencies", "T_mem", "T_grok", "memorisation", "cleanup", "restricted loss", "excluded loss"):
        assert needle in out
    assert cli_main(["analyze", str(run_copy.path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["key_freqs"] and "T_mem" in d and d["phases"]["rule"]
    assert set(d["final"]) >= {"restricted_loss", "excluded_loss", "excluded_loss_per_freq"}
