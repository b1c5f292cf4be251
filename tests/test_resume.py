import os
import signal
import subprocess
import sys
import time

import torch

from interp.store import Run, load_tensors
from interp.training.loop import train

from conftest import REPO, tiny_config


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
    args = ["--p", "13", "--frac-train", "0.5", "--d-model", "16", "--n-heads", "2", "--d-head", "8",
            "--d-mlp", "32", "--epochs", "3000", "--checkpoint-every", "20", "--lr", "0.003", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "interp.cli", "train", "--out", str(killed), *args],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    r = subprocess.run([sys.executable, "-m", "interp.cli", "train", "--resume", str(killed), "--no-progress"],
                       cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref"
    r = subprocess.run([sys.executable, "-m", "interp.cli", "train", "--out", str(ref), *args],
                       cwd=REPO, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = _weights(Run.open(ref), 3000), _weights(Run.open(killed), 3000)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (ref / "metrics.csv").read_bytes() == (killed / "metrics.csv").read_bytes()


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    run = train(tiny_config(epochs=40), tmp_path / "r", progress=False)
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p.name not in (".lock", "training_log.jsonl")}
    train(None, run.path, resume=True, progress=False)
    after = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p.name not in (".lock", "training_log.jsonl")}
    assert before == after
    assert int(run.metrics()["epoch"].iloc[-1]) == 40
