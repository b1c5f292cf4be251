"""Memorising versus generalising side by side (issue #4): compare, checkpoint specs, the CLI."""

import json
import math

import pytest
from helpers import fourier_transformer

from interp import cli
from interp.analysis.compare import compare, parse_spec, resolve_checkpoint
from interp.config import ModelConfig, TrainConfig
from interp.errors import InterpError
from interp.model import Transformer
from interp.store import BASE_METRICS, METRICS_FILE, MetricsWriter, Run, save_checkpoint, write_config, write_split
from interp.tasks import make_split

P = 23  # random models at p = 13 can show spurious key frequencies (few frequencies to spread over)
FREQS = [2, 5]


def synth_config(name: str) -> TrainConfig:
    # the shape of fourier_transformer(P, FREQS): d_mlp = len(FREQS) * P^2, trained biases
    return TrainConfig(
        run_name=name,
        p=P,
        frac_train=0.5,
        d_model=32,
        n_heads=2,
        d_head=8,
        d_mlp=len(FREQS) * P * P,
        train_biases=True,
        epochs=300,
    )


def random_like(cfg: TrainConfig, seed: int) -> Transformer:
    return Transformer(cfg.model_config()).init_weights(0.8 / math.sqrt(cfg.d_model), seed=seed)


def make_run(path, models: dict, train_acc: dict, test_acc: dict) -> Run:
    """A run directory with the given checkpoints and a per-epoch metrics table (no training)."""
    cfg = synth_config(path.name)
    path.mkdir(parents=True)
    write_config(path, cfg)
    write_split(path, make_split(P, cfg.frac_train, cfg.data_seed))
    for e, m in models.items():
        save_checkpoint(path, e, m, cfg)
    w = MetricsWriter(path / METRICS_FILE, BASE_METRICS)
    for e in range(max(models) + 1):
        w.add([e, 1.0, 1.0, train_acc(e), test_acc(e), 0.0])
    w.flush()
    return Run.open(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """'grok': random weights until epoch 200, the exact Fourier circuit at 300 (T_mem 130, T_grok 250).
    'mem': random weights throughout, memorises at 60 and never generalises."""
    root = tmp_path_factory.mktemp("cmp")
    cfg = synth_config("x")
    gen = fourier_transformer(P, FREQS)
    grok = make_run(
        root / "grok",
        {0: random_like(cfg, 0), 100: random_like(cfg, 1), 200: random_like(cfg, 2), 300: gen},
        lambda e: float(e >= 130),
        lambda e: float(e >= 250),
    )
    mem = make_run(
        root / "mem",
        {0: random_like(cfg, 3), 150: random_like(cfg, 4), 300: random_like(cfg, 5)},
        lambda e: float(e >= 60),
        lambda e: 0.05,
    )
    return grok, mem


def test_specs(runs):
    grok, mem = runs
    assert parse_spec("a/b@12") == ("a/b", "12") and parse_spec("a/b") == ("a/b", None)
    assert resolve_checkpoint(str(grok.path)).epoch == 300
    assert resolve_checkpoint(f"{grok.path}@final").epoch == 300
    assert resolve_checkpoint(f"{grok.path}@100").epoch == 100
    c = resolve_checkpoint(f"{grok.path}@T_mem")  # T_mem = 130 -> first checkpoint at or after it
    assert c.epoch == 200 and "T_mem = 130" in c.note and c.label == "grok@200"
    assert resolve_checkpoint(f"{grok.path}@t_grok").epoch == 300
    assert c.split is not None and c.task == "add"


def test_bad_specs(runs, tmp_path):
    grok, mem = runs
    with pytest.raises(InterpError, match=r"no checkpoint at epoch 180; nearest available: 100, 200, 300"):
        resolve_checkpoint(f"{grok.path}@180")
    with pytest.raises(InterpError, match="T_grok is undefined"):
        resolve_checkpoint(f"{mem.path}@T_grok")
    with pytest.raises(InterpError, match="bad checkpoint spec"):
        resolve_checkpoint(f"{grok.path}@soon")
    with pytest.raises(InterpError, match="does not exist"):
        resolve_checkpoint(f"{tmp_path}/nope@3")
    with pytest.raises(InterpError, match="nothing after '@'"):
        resolve_checkpoint(f"{grok.path}@")


def test_generalising_side_wins(runs):
    grok, mem = runs
    comp = compare(resolve_checkpoint(f"{mem.path}@final"), resolve_checkpoint(f"{grok.path}@final"))
    A, B = comp.a.measures, comp.b.measures
    assert B.key_freqs == FREQS and A.key_freqs == []
    assert comp.analysis_freqs == (FREQS, FREQS) and comp.freqs_source == "auto"
    assert B.gini_W_E > A.gini_W_E and B.gini_W_L > A.gini_W_L
    assert B.frac_neurons_clear > A.frac_neurons_clear and comp.b.mean_fve > comp.a.mean_fve
    assert B.restricted_loss < A.restricted_loss
    assert comp.b.rqi.rqi == pytest.approx(1.0) and comp.a.rqi.rqi < 0.05
    assert 0.0 <= comp.cka["resid"] <= 1.0 and 0.0 <= comp.cka["mlp"] <= 1.0
    df = comp.to_frame()
    assert list(df.columns) == ["mem@300", "grok@300"]
    for row in (
        "train loss",
        "test accuracy",
        "key frequencies (own)",
        "Gini of W_E Fourier norms",
        "RQI (circle chart, planes jointly)",
        "  k=5: RQI of its plane alone",
        "restricted loss (all inputs)",
        "excluded loss (train)",
        "sum of squared weights",
        "  k=2: W_E energy share",
        "CKA A vs B, final residual (linear)",
    ):
        assert row in df.index
    assert df.loc["key frequencies (own)", "grok@300"] == "2 5"
    json.dumps(comp.to_dict())  # JSON-safe
    text = comp.format_table()
    assert "grok@300" in text and "RQI" in text


def test_compare_models_in_memory():
    cfg = synth_config("x")
    m = random_like(cfg, 7)
    comp = compare(m, m, key_freqs=[3])
    assert comp.cka["resid"] == pytest.approx(1.0, abs=1e-5) and comp.cka["mlp"] == pytest.approx(1.0, abs=1e-5)
    assert comp.labels == ("A", "B") and comp.a.measures.analysis_freqs == [3]
    own = compare(fourier_transformer(P, FREQS), m, key_freqs="own")
    assert own.analysis_freqs == (FREQS, [])


def test_shape_mismatch():
    small = Transformer(ModelConfig(p=P, d_model=16, n_heads=2, d_head=8, d_mlp=32)).init_weights(0.2, seed=0)
    wide = Transformer(ModelConfig(p=P, d_model=24, n_heads=2, d_head=8, d_mlp=32)).init_weights(0.2, seed=0)
    other_p = Transformer(ModelConfig(p=11, d_model=16, n_heads=2, d_head=8, d_mlp=32)).init_weights(0.2, seed=0)
    with pytest.raises(InterpError, match="different shapes: A and B differ in d_model 16 vs 24"):
        compare(small, wide)
    with pytest.raises(InterpError, match="differ in p 23 vs 11"):
        compare(small, other_p, same_shape=False)
    assert compare(small, wide, same_shape=False).cka["mlp"] < 1.0
    with pytest.raises(InterpError, match="key_freqs"):
        compare(small, small, key_freqs="best")
    with pytest.raises(InterpError, match="out of range"):
        compare(small, small, key_freqs=[P])


def test_cli(runs, tmp_path, capsys):
    grok, mem = runs
    out = tmp_path / "cmp.json"
    assert cli.main(["compare", f"{grok.path}@T_mem", str(grok.path), "--json", "-o", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed == saved and saved["a"]["label"] == "grok@200" and saved["b"]["label"] == "grok@300"
    assert cli.main(["compare", str(mem.path), str(grok.path), "-o", str(tmp_path / "t.csv")]) == 0
    text = capsys.readouterr().out
    assert "restricted loss" in text and "saved to" in text
    assert (tmp_path / "t.csv").read_text().startswith("measure,mem@300,grok@300")
    # default output: next to run B
    assert cli.main(["compare", f"{mem.path}@150", f"{grok.path}@100"]) == 0
    assert (grok.path / "compare" / "mem_at_150__grok_at_100.json").exists()
    capsys.readouterr()
    assert cli.main(["compare", f"{grok.path}@7", str(grok.path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nearest available: 0, 100" in err[0]
