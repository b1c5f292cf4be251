import os

import numpy as np
import pytest
import torch
from conftest import tiny_config

from interp.errors import InterpError
from interp.store import Run, RunLock, load_tensors, save_tensors
from interp.training.loop import train


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


# --- issue 15 -------------------------------------------------------------------------------


def test_same_tensors_give_the_same_bytes(tmp_path):
    import subprocess
    import sys

    t = {
        "b": torch.randn(4, 3, generator=torch.Generator().manual_seed(0)),
        "a": torch.arange(7),
        "c": torch.tensor(True),
    }
    meta = {"epoch": "3", "config_hash": "abc", "format_version": "1", "config": "{}"}
    blobs = set()
    for i in range(5):
        save_tensors(tmp_path / f"x{i}.safetensors", t, meta)
        blobs.add((tmp_path / f"x{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    back, m = load_tensors(tmp_path / "x0.safetensors")  # still a valid safetensors file
    assert all(torch.equal(back[k], t[k]) for k in t) and m["epoch"] == "3"
    code = (
        "import torch, sys; from interp.store import save_tensors; "
        "t = {'b': torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), 'a': torch.arange(7), 'c': torch.tensor(True)}; "
        "save_tensors(sys.argv[1], t, {'epoch': '3', 'config_hash': 'abc', 'format_version': '1', 'config': '{}'})"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "other.safetensors")], check=True)
    assert (tmp_path / "other.safetensors").read_bytes() in blobs


def test_two_trainings_write_identical_checkpoint_files(tmp_path):
    a = train(tiny_config(epochs=8), tmp_path / "a", progress=False)
    b = train(tiny_config(epochs=8), tmp_path / "b", progress=False)
    for e in a.checkpoint_epochs():
        assert a.checkpoint_path(e).read_bytes() == b.checkpoint_path(e).read_bytes()
    assert (a.path / "optimizer.safetensors").read_bytes() == (b.path / "optimizer.safetensors").read_bytes()


def test_checkpoint_whose_epoch_does_not_match_its_name_is_refused(tmp_path):
    from interp.store import verify_resumable

    run = train(tiny_config(epochs=20), tmp_path / "r", progress=False)
    os.replace(run.checkpoint_path(8), run.checkpoint_path(10))
    with pytest.raises(
        InterpError, match=r"epoch_000010.safetensors: its metadata says epoch 8, its file name says 10"
    ):
        run.load_model(10)
    with pytest.raises(InterpError, match="its metadata says epoch 8"):
        verify_resumable(run.path)


def test_checkpoint_from_another_config_names_the_field(tmp_path):
    import dataclasses

    run = train(tiny_config(epochs=4), tmp_path / "r", progress=False)
    edited = Run(path=run.path, config=dataclasses.replace(run.config, lr=0.01, seed=3))
    with pytest.raises(InterpError, match=r"lr: 0.003 -> 0.01; seed: 999 -> 3"):
        edited.load_model(4)


def _metrics_run(tmp_path):
    run = train(tiny_config(epochs=40), tmp_path / "r", progress=False, max_epochs_this_call=30)
    return run, run.path / "metrics.csv"


def test_verify_metrics(tmp_path):
    from interp.store import verify_metrics

    run, m = _metrics_run(tmp_path)
    full = m.read_text()
    lines = full.splitlines(keepends=True)
    assert verify_metrics(run.path, 20) == 20  # rows 21..30 past the resume point are allowed
    assert verify_metrics(run.path, 31) == 31
    m.write_text(full + "31,0.5,nan")  # a torn last line (crash mid-append) is allowed
    assert verify_metrics(run.path, 31) == 31
    m.write_text("".join(lines[:15]))  # rows 0..13
    with pytest.raises(
        InterpError,
        match="metrics.csv: truncated or damaged: rows stop before epoch 14, but the checkpoints reach epoch 20",
    ):
        verify_metrics(run.path, 20)
    m.write_text("".join(lines[:5] + lines[6:]))  # epoch 4 missing
    with pytest.raises(InterpError, match="before epoch 4"):
        verify_metrics(run.path, 20)
    m.write_text("".join(lines[:5] + ["4,0.1\n"] + lines[6:]))  # a damaged row
    with pytest.raises(InterpError, match="before epoch 4"):
        verify_metrics(run.path, 20)
    m.write_text("epoch,foo\n" + "".join(lines[1:]))
    with pytest.raises(InterpError, match="unexpected header"):
        verify_metrics(run.path, 20, columns=lines[0].strip().split(","))
    m.unlink()
    assert verify_metrics(run.path, 0) == 0
    with pytest.raises(InterpError, match="metrics.csv: missing"):
        verify_metrics(run.path, 20)


def test_names_are_checked_in_one_place():
    from interp.store import check_name, sanitize_name

    for ok in ("canonical", "quick-2", "lr=0.001,wd=1.0", "a.b_c+d@e"):
        assert check_name(ok) == ok
    for bad in ("", ".", "..", "../x", "a/b", ".hidden", "-rf", "x" * 101, "a\x00b", "a b", None):
        with pytest.raises(InterpError):
            check_name(bad, "run name")
    for label in ("../../etc/passwd", "run@T_mem", "..", "/abs/path", "x" * 300, "-a"):
        assert check_name(sanitize_name(label)) == sanitize_name(label)


def test_failed_atomic_write_leaves_no_temp_file_and_names_the_file(tmp_path, monkeypatch):
    import errno

    from interp import store

    save_tensors(tmp_path / "x.safetensors", {"a": torch.arange(5)}, {"k": "v"})
    before = (tmp_path / "x.safetensors").read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "fsync", full)
    with pytest.raises(InterpError, match=r"cannot write .*x.safetensors: No space left on device"):
        save_tensors(tmp_path / "x.safetensors", {"a": torch.arange(6)}, {"k": "v"})
    assert os.listdir(tmp_path) == ["x.safetensors"] and (tmp_path / "x.safetensors").read_bytes() == before


def test_metrics_writer_cuts_back_a_failed_row(tmp_path, monkeypatch):
    import errno

    from interp import store

    w = store.MetricsWriter(tmp_path / "metrics.csv", ["epoch", "x"])
    w.add([0, 1.0])
    real_write = os.write

    def half(fd, data):
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "write", half)
    with pytest.raises(InterpError, match="metrics.csv: No space left on device"):
        w.add([1, 2.0])
    monkeypatch.undo()
    assert (tmp_path / "metrics.csv").read_text() == "epoch,x\n0,1.0\n"


def test_metrics_writer_fsyncs_only_rows_not_yet_synced(tmp_path, monkeypatch):
    from interp import store

    w = store.MetricsWriter(tmp_path / "metrics.csv", ["epoch", "x"])
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(store.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    w.add([0, 1.0])
    w.flush()
    w.flush()  # nothing new: the trainer flushes at a checkpoint and again when the run ends
    assert len(synced) == 1
    w.add([1, 2.0])
    w.flush()
    assert len(synced) == 2
    assert (tmp_path / "metrics.csv").read_text() == "epoch,x\n0,1.0\n1,2.0\n"


def test_unstarted_directories_are_recognised_and_reused(tmp_path):
    from interp.store import is_unstarted, new_run_dir

    d = tmp_path / "r"
    (d / "checkpoints").mkdir(parents=True)
    (d / ".lock").write_text("123")
    (d / "metrics.csv").write_text("epoch\n")
    (d / ".split.safetensors.tmp77").write_bytes(b"x")
    assert is_unstarted(d)
    (d / "notes.txt").write_text("mine")
    assert not is_unstarted(d)
    with pytest.raises(InterpError, match="already exists and is not empty"):
        with new_run_dir(d):
            pass
    (d / "notes.txt").unlink()
    with new_run_dir(d):
        assert list(d.iterdir()) == []
    # a failure before anything was trained takes back what the call created, parents included
    with pytest.raises(KeyboardInterrupt):
        with new_run_dir(tmp_path / "new" / "deep"):
            (tmp_path / "new" / "deep" / "config.json").write_text("{}")
            raise KeyboardInterrupt
    assert not (tmp_path / "new").exists()


def test_failure_before_training_leaves_no_directory(tmp_path, monkeypatch):
    from interp import cli
    from interp.training import loop

    def boom(*a, **k):
        raise KeyboardInterrupt  # Ctrl-C in the first second

    monkeypatch.setattr(loop, "make_split", boom)
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--p", "7", "--epochs", "2", "--no-progress"]) == 130
    assert not (tmp_path / "r").exists()


def test_directory_killed_before_its_config_is_restartable(tmp_path):
    from conftest import cli_in_process, run_cli

    d = tmp_path / "r"
    (d / "checkpoints").mkdir(parents=True)
    (d / ".lock").write_text("4242")
    (d / "metrics.csv").write_text("epoch\n")
    flags = [
        "--p",
        "7",
        "--d-model",
        "8",
        "--n-heads",
        "2",
        "--d-head",
        "4",
        "--d-mlp",
        "8",
        "--epochs",
        "3",
        "--no-progress",
    ]
    r = cli_in_process("train", "--resume", str(d))
    assert r.returncode == 2 and "interrupted before its config was written" in r.stderr and f"--out {d}" in r.stderr
    r = run_cli("train", "--out", str(d), "--resume-if-exists", *flags)
    assert r.returncode == 0, r.stderr
    assert Run.open(d).checkpoint_epochs()[-1] == 3
    (d2 := tmp_path / "r2").mkdir()
    (d2 / ".lock").write_text("")
    r = run_cli("train", "--out", str(d2), *flags)
    assert r.returncode == 0, r.stderr
