"""Training probes (interp.training.probes): columns, values against their definitions, resume, cost knobs."""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_config

from interp.analysis.losses import run_loss_and_accuracy
from interp.errors import InterpError
from interp.model.fast import eq_logits
from interp.store import load_tensors
from interp.tasks import labels
from interp.training.loop import train
from interp.training.probes import PROBES, hjorth, hjorths, parse_probes, probe_columns, probes_in_header


def test_probe_columns_follow_their_definitions(tmp_path):
    """grad_total at epoch 2 is the gradient norm at the weights of epoch 1 and update_ratio the
    relative step between the two checkpoints; rows off the schedule are empty."""
    cfg = tiny_config(epochs=8, probe_every=2, checkpoint_every=8)
    run = train(cfg, tmp_path / "r", progress=False)
    df = run.metrics().set_index("epoch")
    assert df.loc[[1, 3], "grad_total"].isna().all() and df.loc[[2, 4], "grad_total"].notna().all()
    w1, _ = load_tensors(run.checkpoint_path(1))
    w2, _ = load_tensors(run.checkpoint_path(2))
    names = [n for n in w1 if n in {f"{c[5:]}" for c in df.columns if c.startswith("grad_") and c != "grad_total"}]
    num = sum((w2[n].double() - w1[n].double()).pow(2).sum() for n in w1)
    den = sum(w1[n].double().pow(2).sum() for n in w1)
    assert math.isclose(df.loc[2, "update_ratio"], float((num / den).sqrt()), rel_tol=1e-6)
    P = {n: t[None].clone().requires_grad_(n in names) for n, t in w1.items()}
    idx = run.split.train
    p = cfg.p
    y = labels(cfg.task, p)[idx]
    loss, _ = run_loss_and_accuracy(eq_logits(P, cfg.model_config(), (idx // p)[None], (idx % p)[None]), y[None])
    loss.sum().backward()
    g = torch.stack([P[n].grad.double().pow(2).sum() for n in names]).sum().sqrt()
    assert math.isclose(df.loc[2, "grad_total"], float(g), rel_tol=1e-5)
    per = np.array([df.loc[2, f"grad_{n}"] for n in names])
    assert math.isclose(float(np.sqrt((per**2).sum())), df.loc[2, "grad_total"], rel_tol=1e-9)
    assert 0 <= df.loc[2, "gini_W_E"] < 1 and df.loc[2, "loss_activity"] > 0


def test_hjorth_activity_and_mobility():
    t = np.arange(400)
    x = 1.0 + 0.5 * np.sin(0.2 * t)
    activity, mobility = hjorth(list(x))
    assert math.isclose(activity, float((x**2).sum()))
    assert math.isclose(mobility, 2 * math.sin(0.1), rel_tol=0.02)  # a sine's mobility: its step frequency
    assert all(math.isnan(v) for v in hjorth([1.0, 2.0]))
    assert not math.isnan(hjorth([1.0, float("nan"), 2.0, 3.0])[0])  # empty rows (minibatch runs) skipped
    # many windows at once (the trainer's form): each row is that window's hjorth, ragged and NaN windows too
    rng = np.random.default_rng(0)
    windows = [list(np.exp(-5 * rng.random(50))) for _ in range(6)] + [[2.0] * 50]
    windows[1][3] = float("nan")
    for batch in (windows, windows[:3] + [[1.0, 2.0], [1.0, 2.0, 4.0]]):
        rows = hjorths(batch)
        assert rows.shape == (len(batch), 2)
        for w, row in zip(batch, rows.tolist()):
            x = np.array([v for v in w if np.isfinite(v)])
            if len(x) < 3:
                expect = [np.nan, np.nan]
            else:
                expect = [(x**2).sum(), np.sqrt(np.diff(x).var() / x.var()) if x.var() > 0 else np.nan]
            assert np.allclose(row, expect, rtol=1e-12, equal_nan=True)
    assert math.isnan(hjorths(windows)[-1, 1])  # a constant window has no mobility


def test_probe_selection_and_headers(tmp_path):
    assert parse_probes("default") == PROBES and parse_probes("none") == ()
    assert parse_probes("update_ratio,grad_norm") == ("grad_norm", "update_ratio")
    with pytest.raises(InterpError, match="unknown probe"):
        tiny_config(probes="grad_norm,spectra")
    with pytest.raises(InterpError, match="probe_every"):
        tiny_config(probe_every=0)
    run = train(tiny_config(epochs=10, probes="none"), tmp_path / "r", progress=False)
    assert not any(c.startswith(("grad_", "update_", "loss_", "gini_")) for c in run.metrics().columns)
    header = ["epoch", "train_loss"] + probe_columns(["update_ratio", "loss_hjorth"], ["a"])
    assert probes_in_header(header, ["a"]) == ("update_ratio", "loss_hjorth")
