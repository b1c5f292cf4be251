"""Bad input through the real CLI: one line on stderr, non-zero exit, nothing saved is touched."""

import pytest

from conftest import run_cli, tiny_config
from interp.training.loop import train


@pytest.mark.parametrize("args,needle", [
    (["--p", "1"], "p must be an integer >= 2"),
    (["--task", "mul", "--p", "12"], "needs a prime modulus"),
    (["--frac-train", "0"], "frac_train must lie strictly between 0 and 1"),
    (["--frac-train", "1.2"], "frac_train must lie strictly between 0 and 1"),
    (["--lr", "-0.001"], "lr must be > 0"),
    (["--weight-decay", "-1"], "weight_decay must be >= 0"),
    (["--task", "pow"], "unknown task 'pow'"),
    (["--p", "abc"], "invalid int value"),
])
def test_train_bad_input(tmp_path, args, needle):
    r = run_cli("train", "--out", str(tmp_path / "x"), "--no-progress", *args)
    assert r.returncode != 0
    assert needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_missing_run_directory(tmp_path):
    for cmd in (["info", str(tmp_path / "nope")], ["train", "--resume", str(tmp_path / "nope")]):
        r = run_cli(*cmd)
        assert r.returncode != 0 and "does not exist" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_corrupted_checkpoint_on_resume_is_named_and_files_kept(tmp_path):
    run = train(tiny_config(epochs=40), tmp_path / "r", progress=False)
    (run.path / "optimizer.safetensors").write_bytes(b"\x00garbage")
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p.name != ".lock"}
    r = run_cli("train", "--resume", str(run.path), "--no-progress")
    assert r.returncode != 0
    assert "optimizer.safetensors" in r.stderr and "corrupted" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    after = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p.name != ".lock"}
    assert before == after


def test_info_reports_tmem_and_tgrok(quick_run):
    r = run_cli("info", str(quick_run.path))
    assert r.returncode == 0, r.stderr
    df = quick_run.metrics()
    t_mem = int(df.loc[df["train_acc"] >= 0.99, "epoch"].iloc[0])
    assert f"T_mem         {t_mem}" in r.stdout
    assert "T_grok" in r.stdout and "checkpoints" in r.stdout


def test_train_cli_writes_default_run_dir(tmp_path):
    r = run_cli("train", "--p", "7", "--d-model", "8", "--n-heads", "2", "--d-head", "4", "--d-mlp", "8",
                "--epochs", "5", "--run-name", "cli", "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "checkpoints" / "cli" / "checkpoints" / "epoch_000005.safetensors").exists()


def test_resume_may_extend_training_but_not_change_the_recipe(tmp_path):
    run = train(tiny_config(epochs=20), tmp_path / "r", progress=False)
    r = run_cli("train", "--resume", str(run.path), "--lr", "0.1")
    assert r.returncode != 0 and "--lr" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("train", "--resume", str(run.path), "--epochs", "40", "--no-progress")
    assert r.returncode == 0, r.stderr
    from interp.store import Run

    again = Run.open(run.path)
    assert again.config.epochs == 40 and again.checkpoint_epochs()[-1] == 40
    assert list(again.metrics()["epoch"]) == list(range(41))
