import os

import numpy as np
import pandas as pd
import pytest
import torch

from interp.errors import InterpError
from interp.store import RunLock, Run, load_tensors, save_tensors
from interp.training.loop import train

from conftest import tiny_config


def test_run_directory_layout_and_schedule(tmp_path):
    cfg = tiny_config(epochs=70, checkpoint_every=20, log_checkpoints_until=8)
    run = train(cfg, tmp_path / "r", progress=False)
    assert run.checkpoint_epochs() == [0, 1, 2, 4, 8, 20, 40, 60, 70]
    df = run.metrics()
    assert list(df["epoch"]) == list(range(71))
    assert {"train_loss", "test_loss", "train_acc", "test_acc", "sq_total", "sq_blocks.0.mlp.W_in"} <= set(df.columns)
    arr = np.genfromtxt(run.path / "metrics.csv", delimiter=",", names=True)
    assert arr["test_loss"][-1] == pytest.approx(df["test_loss"].iloc[-1])
    sq_cols = [c for c in df.columns if c.startswith("sq_") and c != "sq_total"]
    assert np.allclose(df[sq_cols].sum(axis=1), df["sq_total"])
    # the stored split is the seeded split and metrics describe the stored checkpoint
    s = run.split
    assert len(s.train) == int(0.5 * 169) and len(set(s.train.tolist()) & set(s.test.tolist())) == 0
    _, meta = load_tensors(run.checkpoint_path(70))
    assert meta["epoch"] == "70" and meta["config_hash"] == cfg.config_hash()
    m = run.load_model(70)
    sq = sum(p.detach().double().pow(2).sum().item() for p in m.parameters())
    assert sq == pytest.approx(df["sq_total"].iloc[-1], rel=1e-12)


def test_corrupted_and_truncated_checkpoints_are_named(tmp_path):
    run = train(tiny_config(epochs=20), tmp_path / "r", progress=False)
    path = run.checkpoint_path(20)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InterpError, match="epoch_000020.safetensors.*(corrupted|truncated)"):
        run.load_model(20)
    flipped = bytearray(raw)
    flipped[-5] ^= 0xFF  # a bit flip inside tensor data: only the checksum can catch it
    path.write_bytes(bytes(flipped))
    with pytest.raises(InterpError, match="epoch_000020.safetensors.*checksum"):
        run.load_model(20)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    save_tensors(tmp_path / "x.safetensors", {"a": torch.arange(5)}, {"k": "v"})
    save_tensors(tmp_path / "x.safetensors", {"a": torch.arange(6)}, {"k": "v"})
    assert os.listdir(tmp_path) == ["x.safetensors"]
    t, meta = load_tensors(tmp_path / "x.safetensors")
    assert t["a"].tolist() == list(range(6)) and meta["k"] == "v"


def test_second_trainer_is_refused(tmp_path):
    (tmp_path / "r").mkdir()
    with RunLock(tmp_path / "r"):
        with pytest.raises(InterpError, match="in use by another trainer"):
            with RunLock(tmp_path / "r"):
                pass
    with RunLock(tmp_path / "r"):  # released again
        pass


def test_existing_run_is_not_overwritten(tmp_path):
    run = train(tiny_config(epochs=20), tmp_path / "r", progress=False)
    before = {p.name: p.read_bytes() for p in (run.path / "checkpoints").iterdir()}
    with pytest.raises(InterpError, match="already exists"):
        train(tiny_config(epochs=20, lr=1e-2), tmp_path / "r", progress=False)
    after = {p.name: p.read_bytes() for p in (run.path / "checkpoints").iterdir()}
    assert before == after


def test_missing_epoch_lists_nearest(tmp_path):
    run = train(tiny_config(epochs=40), tmp_path / "r", progress=False)
    with pytest.raises(InterpError, match="nearest available: 8, 20, 40"):
        run.load_model(33)


def test_stop_after_grok(quick_run):
    df = quick_run.metrics()
    assert df["test_acc"].max() >= 0.99  # the quick preset generalises
    from interp.config import preset

    g = int(df.loc[df["test_acc"] >= 0.99, "epoch"].iloc[0])
    assert preset("quick").epochs > g + 10


def test_stop_after_grok_stops(tmp_path):
    from interp.config import preset

    run = train(preset("quick", stop_after_grok=10), tmp_path / "g", progress=False)
    df = run.metrics()
    g = int(df.loc[df["test_acc"] >= 0.99, "epoch"].iloc[0])
    assert int(df["epoch"].iloc[-1]) == g + 10
    assert run.checkpoint_epochs()[-1] == g + 10
