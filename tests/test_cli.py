"""Bad input through the real CLI: one line on stderr, non-zero exit, nothing saved is touched."""

import pytest
from conftest import TINY_CLI, cli_in_process, one_line_error, run_cli, tiny_config

from interp.training.loop import train


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--p", "1"], "p must be an integer >= 2"),
        (["--task", "mul", "--p", "12"], "needs a prime modulus"),
        (["--frac-train", "0"], "frac_train must lie strictly between 0 and 1"),
        (["--frac-train", "1.2"], "frac_train must lie strictly between 0 and 1"),
        (["--lr", "-0.001"], "lr must be > 0"),
        (["--weight-decay", "-1"], "weight_decay must be >= 0"),
        (["--task", "pow"], "unknown task 'pow'"),
        (["--p", "abc"], "p must be an integer, got 'abc'"),
        (["--lr", "inf"], "lr must be a finite number, got inf"),
        (["--weight-decay", "inf"], "weight_decay must be a finite number, got inf"),
        (["--init-std", "inf"], "init_std must be a finite number, got inf"),
        (["--lr", "1e6"], "lr must be > 0 and at most 10"),
        (["--epochs", "2.5"], "epochs must be an integer, got 2.5"),
        (["--data-seed", "99999999999999999999999"], "data_seed must lie in [0, 2**63 - 1]"),
        (["--p", "13", "--frac-train", "0.001"], "leaves an empty train or test set"),
        (["--run-name", "x" * 300], "at most 100 are allowed"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--p"], "train: argument --p: expected one argument"),
    ],
)
def test_train_bad_input(tmp_path, args, needle):
    r = cli_in_process("train", "--out", str(tmp_path / "x"), "--no-progress", *args)
    assert r.returncode != 0
    assert needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("interp: error: ") and r.stderr.count("interp") == 1
    assert r.returncode == 2
    assert not (tmp_path / "x").exists()


def test_bad_input_ends_a_real_process_with_status_2(tmp_path):
    """As above, through a new Python process: the exit status and the one line a shell sees."""
    for args, needle in ((["--p", "1"], "p must be an integer >= 2"), (["--bogus"], "unrecognized arguments: --bogus")):
        assert needle in one_line_error(run_cli("train", "--out", str(tmp_path / "x"), "--no-progress", *args))
        assert not (tmp_path / "x").exists()


def test_missing_run_directory(tmp_path):
    for cmd in (["info", str(tmp_path / "nope")], ["train", "--resume", str(tmp_path / "nope")]):
        r = cli_in_process(*cmd)
        assert r.returncode != 0 and "does not exist" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_corrupted_checkpoint_on_resume_is_named_and_files_kept(tmp_path):
    run = train(tiny_config(epochs=40), tmp_path / "r", progress=False)
    (run.path / "optimizer.safetensors").write_bytes(b"\x00garbage")
    before = {p: p.read_bytes() for p in run.path.rglob("*") if p.is_file() and p.name != ".lock"}
    r = cli_in_process("train", "--resume", str(run.path), "--no-progress")
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
    r = run_cli(
        "train",
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
        "5",
        "--run-name",
        "cli",
        "--no-progress",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "checkpoints" / "cli" / "checkpoints" / "epoch_000005.safetensors").exists()


def test_resume_may_extend_training_but_not_change_the_recipe(tmp_path):
    run = train(tiny_config(epochs=20), tmp_path / "r", progress=False)
    r = cli_in_process("train", "--resume", str(run.path), "--lr", "0.1")
    assert r.returncode != 0 and "--lr" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("train", "--resume", str(run.path), "--epochs", "40", "--no-progress")
    assert r.returncode == 0, r.stderr
    from interp.store import Run

    again = Run.open(run.path)
    assert again.config.epochs == 40 and again.checkpoint_epochs()[-1] == 40
    assert list(again.metrics()["epoch"]) == list(range(41))


def _snapshot(path):
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file() and p.name not in (".lock", "training_log.jsonl")}


def test_version():
    r = run_cli("--version")
    import interp

    assert r.returncode == 0 and r.stdout.strip() == f"interp {interp.__version__}"


def test_out_is_an_existing_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("keep me")
    line = one_line_error(cli_in_process("train", "--out", str(f), "--p", "7", "--epochs", "2", "--no-progress"))
    assert "exists and is not a directory" in line and f.read_text() == "keep me"


def test_unwritable_location(tmp_path):
    for out in ("/proc/interp-test/run", str(tmp_path / ("y" * 300) / "run")):
        line = one_line_error(cli_in_process("train", "--out", out, "--p", "7", "--epochs", "2", "--no-progress"))
        assert "cannot create" in line


def test_names_cannot_escape(tmp_path):
    line = one_line_error(
        run_cli("train", "--run-name", "..", "--p", "7", "--epochs", "2", "--no-progress", cwd=tmp_path)
    )
    assert "run_name '..' is not a plain file name" in line
    src = tmp_path / "m.pt"
    import torch

    from interp.config import ModelConfig
    from interp.model import Transformer

    torch.save(
        Transformer(ModelConfig(p=7, d_model=8, n_heads=2, d_head=4, d_mlp=8)).init_weights(0.2, 0).state_dict(), src
    )
    (tmp_path / "work").mkdir()
    line = one_line_error(run_cli("import", str(src), "--name", "../../x", cwd=tmp_path / "work"))
    assert "--name '../../x' is not a plain file name" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "work"] and not any((tmp_path / "work").iterdir())


def test_wrong_types_in_config_json(tmp_path):
    import json

    run = train(tiny_config(epochs=4), tmp_path / "r", progress=False)
    raw = json.loads((run.path / "config.json").read_text())
    for field, bad, needle in (
        ("p", "31", "p must be an integer, got '31'"),
        ("train_biases", "yes", "train_biases must be true or false, got 'yes'"),
    ):
        edited = {**raw, "config": {**raw["config"], field: bad}}
        (run.path / "config.json").write_text(json.dumps(edited))
        for cmd in (["info", str(run.path)], ["train", "--resume", str(run.path), "--no-progress"]):
            line = one_line_error(cli_in_process(*cmd))
            assert "config.json" in line and needle in line


def test_info_into_a_closed_pipe_ends_quietly(tmp_path):
    import os
    import subprocess
    import sys

    run = train(tiny_config(epochs=4), tmp_path / "r", progress=False)
    rd, wr = os.pipe()
    os.close(rd)  # the reader (`| true`) is gone before interp writes
    try:
        r = subprocess.run(
            [sys.executable, "-m", "interp.cli", "info", str(run.path)],
            stdout=wr,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(wr)
    assert r.stderr == "" and r.returncode == 141


def test_compare_on_cuda_without_cuda(quick_run):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    line = one_line_error(cli_in_process("compare", str(quick_run.path), str(quick_run.path), "--device", "cuda"))
    assert "CUDA is not available" in line


def test_import_of_partial_or_odd_state_dicts(tmp_path):
    import torch

    from interp.config import ModelConfig
    from interp.model import Transformer

    sd = Transformer(ModelConfig(p=7, d_model=8, n_heads=2, d_head=4, d_mlp=8)).init_weights(0.2, 0).state_dict()
    partial = {k: v for k, v in sd.items() if not k.startswith("unembed")}
    odd = {**sd, "blocks.0.attn.W_Q": torch.zeros(3)}
    not_tensors = {**sd, "embed.W_E": [1, 2, 3]}
    for name, obj in (("partial", partial), ("odd", odd), ("lists", not_tensors), ("list", [1, 2])):
        torch.save(obj, tmp_path / f"{name}.pt")
        line = one_line_error(
            cli_in_process("import", str(tmp_path / f"{name}.pt"), "--out", str(tmp_path / f"o_{name}"))
        )
        assert f"{name}.pt" in line
        assert not (tmp_path / f"o_{name}").exists()


def test_resume_flags_are_never_ignored(tmp_path):
    run = train(tiny_config(epochs=20), tmp_path / "r", progress=False)
    before = _snapshot(run.path)
    line = one_line_error(cli_in_process("train", "--resume", str(run.path), "--preset", "quick", "--no-progress"))
    assert "drop --preset" in line
    line = one_line_error(
        cli_in_process("train", "--resume", str(run.path), "--out", str(tmp_path / "other"), "--no-progress")
    )
    assert "drop --out" in line and not (tmp_path / "other").exists()
    line = one_line_error(cli_in_process("train", "--resume", str(run.path), "--epochs", "10", "--no-progress"))
    assert "--epochs 10 is below the 20 epochs already trained" in line
    base = [
        "train",
        "--out",
        str(run.path),
        "--resume-if-exists",
        "--no-progress",
        "--run-name",
        "tiny",
        *TINY_CLI,
        "--checkpoint-every",
        "20",
        "--log-checkpoints-until",
        "8",
        "--lr",
        "0.003",
    ]
    line = one_line_error(cli_in_process(*base, "--epochs", "20", "--weight-decay", "0.5"))
    assert "another config (weight_decay: 1.0 -> 0.5)" in line
    assert _snapshot(run.path) == before
    r = run_cli(*base, "--epochs", "30")
    assert r.returncode == 0, r.stderr
    assert "epochs=30 (was 20)" in r.stdout
    from interp.store import Run

    assert Run.open(run.path).checkpoint_epochs()[-1] == 30


def test_resume_that_fails_leaves_config_json_alone(tmp_path):
    run = train(tiny_config(epochs=40), tmp_path / "r", progress=False)
    ck = run.checkpoint_path(40)
    raw = bytearray(ck.read_bytes())
    raw[-3] ^= 0xFF
    ck.write_bytes(bytes(raw))
    before = _snapshot(run.path)
    line = one_line_error(cli_in_process("train", "--resume", str(run.path), "--epochs", "80", "--no-progress"))
    assert "epoch_000040.safetensors" in line and "checksum" in line
    assert _snapshot(run.path) == before


def test_edited_config_is_refused_naming_the_field(tmp_path):
    import json

    run = train(tiny_config(epochs=20), tmp_path / "r", progress=False)
    raw = json.loads((run.path / "config.json").read_text())
    raw["config"]["weight_decay"] = 0.5
    (run.path / "config.json").write_text(json.dumps(raw))
    before = _snapshot(run.path)
    line = one_line_error(cli_in_process("train", "--resume", str(run.path), "--epochs", "40", "--no-progress"))
    assert "weight_decay: 1.0 -> 0.5" in line and "epoch_000020.safetensors" in line
    assert _snapshot(run.path) == before


def test_truncated_metrics_refuse_resume(tmp_path):
    run = train(tiny_config(epochs=40), tmp_path / "r", progress=False, max_epochs_this_call=30)
    m = run.path / "metrics.csv"
    lines = m.read_text().splitlines(keepends=True)
    m.write_text("".join(lines[:11]))  # rows 0..9 only; the resume point is epoch 20
    before = _snapshot(run.path)
    line = one_line_error(cli_in_process("train", "--resume", str(run.path), "--no-progress"))
    assert "metrics.csv" in line and "before epoch 10" in line and "epoch 20" in line
    assert _snapshot(run.path) == before
    m.unlink()
    line = one_line_error(cli_in_process("train", "--resume", str(run.path), "--no-progress"))
    assert "metrics.csv: missing" in line
