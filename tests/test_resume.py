import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, TINY_CLI, tiny_config

from interp.store import Run, load_tensors
from interp.training.loop import train


def _weights(run: Run, epoch: int) -> dict[str, torch.Tensor]:
    return load_tensors(run.checkpoint_path(epoch))[0]


def test_resume_after_interruption_is_bit_identical(tmp_path):
    cfg = tiny_config(epochs=120, checkpoint_every=20)
    full = train(cfg, tmp_path / "full", progress=False)
    part = train(cfg, tmp_path / "part", progress=False, max_epochs_this_call=50)  # stops at epoch 50
    assert part.checkpoint_epochs()[-1] == 40
    resumed = train(None, tmp_path / "part", resume=True, progress=False)
    assert resumed.checkpoint_epochs() == full.checkpoint_epochs()
    for e in full.checkpoint_epochs():
        a, b = _weights(full, e), _weights(resumed, e)
        assert all(torch.equal(a[k], b[k]) for k in a), e
    assert (full.path / "metrics.csv").read_bytes() == (resumed.path / "metrics.csv").read_bytes()


def test_sigkill_mid_training_then_resume(tmp_path):
    args = [
        *TINY_CLI,
        "--epochs",
        "3000",
        "--checkpoint-every",
        "20",
        "--lr",
        "0.003",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "interp.cli", "train", "--out", str(killed), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        ck = killed / "checkpoints"
        if ck.exists() and len(list(ck.glob("epoch_*.safetensors"))) >= 12:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = Run.open(killed)
    assert run.checkpoint_epochs()[-1] < 3000, "the run finished before it could be killed"
    r = subprocess.run(
        [sys.executable, "-m", "interp.cli", "train", "--resume", str(killed), "--no-progress"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref"
    r = subprocess.run(
        [sys.executable, "-m", "interp.cli", "train", "--out", str(ref), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    a, b = _weights(Run.open(ref), 3000), _weights(Run.open(killed), 3000)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (ref / "metrics.csv").read_bytes() == (killed / "metrics.csv").read_bytes()


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    run = train(tiny_config(epochs=40), tmp_path / "r", progress=False)
    before = {
        p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p.name not in (".lock", "training_log.jsonl")
    }
    train(None, run.path, resume=True, progress=False)
    after = {
        p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p.name not in (".lock", "training_log.jsonl")
    }
    assert before == after
    assert int(run.metrics()["epoch"].iloc[-1]) == 40


# --- issue 15: ten SIGKILLs, a full disk -------------------------------------------------------

_FLAGS = [
    *TINY_CLI,
    "--epochs",
    "1500",
    "--checkpoint-every",
    "20",
    "--lr",
    "0.003",
    "--no-progress",
]


def _cli(out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "interp.cli", "train", "--out", str(out), *_FLAGS, *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _checkpoints(d):
    ck = d / "checkpoints"
    return set(os.listdir(ck)) if ck.is_dir() else set()


def _same_run(ref, other):
    names = sorted(p.name for p in (ref / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (other / "checkpoints").iterdir())
    for n in names:
        assert (ref / "checkpoints" / n).read_bytes() == (other / "checkpoints" / n).read_bytes(), n
    for f in ("metrics.csv", "optimizer.safetensors", "split.safetensors", "config.json"):
        assert (ref / f).read_bytes() == (other / f).read_bytes(), f


def test_ten_sigkills_then_resume_give_the_same_files(tmp_path):
    """Kills inside the first second, right after a checkpoint appears and at random moments; each
    restart is `train --out DIR --resume-if-exists` with the same flags."""
    import random

    rng = random.Random(15)
    ref = _cli(tmp_path / "ref")  # the uninterrupted run, alongside
    killed = tmp_path / "killed"
    kinds = ["early", "early"] + ["after_checkpoint"] * 4 + ["random"] * 4
    for kind in kinds:
        proc = _cli(killed, "--resume-if-exists")
        t0 = time.time()
        if kind == "early":
            time.sleep(rng.uniform(0.05, 0.9))
        elif kind == "after_checkpoint":
            seen = _checkpoints(killed)
            while proc.poll() is None and _checkpoints(killed) <= seen and time.time() - t0 < 60:
                time.sleep(0.001)
        else:
            time.sleep(rng.uniform(1.5, 3.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (killed / "checkpoints" / "epoch_001500.safetensors").exists() is False, "finished before the last kill"
    proc = _cli(killed, "--resume-if-exists")
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    _same_run(tmp_path / "ref", killed)


def test_full_disk_is_one_line_leaves_no_temp_files_and_resumes(tmp_path):

    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mnt)], capture_output=True).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here")
    ref = _cli(tmp_path / "ref")  # the same run on a roomy disk, alongside
    try:
        out = mnt / "run"
        proc = _cli(out)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("interp: error: ") and "No space left on device" in lines[0], err
        assert not [p for p in out.rglob("*") if ".tmp" in p.name], "temporary files left behind"
        assert (out / "config.json").exists() and len(_checkpoints(out)) > 3
        subprocess.run(["mount", "-o", "remount,size=20m", str(mnt)], check=True)  # space freed
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run(
            [sys.executable, "-m", "interp.cli", "train", "--resume", str(out), "--no-progress"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        assert ref.wait(timeout=300) == 0
        _same_run(tmp_path / "ref", out)
    finally:
        if ref.poll() is None:
            ref.kill()
        subprocess.run(["umount", str(mnt)], capture_output=True)
