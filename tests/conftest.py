import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from interp.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "pmp_low_precision_mod_addition.pth"


# the shape of tiny_config() as `interp train` flags, for tests that go through the command line
TINY_CLI = ["--p", "13", "--frac-train", "0.5", "--d-model", "16", "--n-heads", "2", "--d-head", "8", "--d-mlp", "32"]


def tiny_config(**kw) -> TrainConfig:
    """A run small enough for unit tests (a few ms per epoch)."""
    base = dict(
        run_name="tiny",
        p=13,
        frac_train=0.5,
        d_model=16,
        n_heads=2,
        d_head=8,
        d_mlp=32,
        epochs=60,
        checkpoint_every=20,
        log_checkpoints_until=8,
        lr=3e-3,
        weight_decay=1.0,
    )
    base.update(kw)
    return TrainConfig(**base)


def p31_config(**kw) -> TrainConfig:
    """A p = 31 run that learns within a few hundred epochs (d_model 32, two heads of 16, d_mlp 64)."""
    base = dict(
        run_name="m",
        p=31,
        frac_train=0.5,
        d_model=32,
        n_heads=2,
        d_head=16,
        d_mlp=64,
        epochs=300,
        checkpoint_every=50,
        log_checkpoints_until=4,
        lr=3e-3,
        weight_decay=1.0,
    )
    return tiny_config(**{**base, **kw})


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the installed CLI as a user would (a separate process)."""
    return subprocess.run(
        [sys.executable, "-m", "interp.cli", *args], capture_output=True, text=True, cwd=cwd or REPO, timeout=timeout
    )


def cli_in_process(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI's ``main`` in this process, its output captured, as ``run_cli`` reports it.

    For commands that fail on bad input before any work, or only read a run or a sweep: the same
    code path and the same one-line error and exit status, without the ~3 s of a new Python
    process importing torch (the suite makes dozens of such calls). Commands that train stay in
    ``run_cli``: training sets process-wide numerics (``interp.numerics``) a user's process owns.
    """
    from interp.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own exits (--version, usage errors)
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    return subprocess.CompletedProcess(["interp", *args], code, out.getvalue(), err.getvalue())


def one_line_error(r: subprocess.CompletedProcess, code: int | None = 2) -> str:
    """The one stderr line ``interp: error: ...`` of a refused command (exit status ``code``; None: any
    non-zero), asserting there is nothing else there: the README's promise for bad input."""
    assert r.returncode == code if code is not None else r.returncode != 0, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interp: error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """The `quick` preset trained once per session (p=31, groks in ~200 epochs)."""
    from interp.config import preset
    from interp.training.loop import train

    out = tmp_path_factory.mktemp("runs") / "quick"
    return train(preset("quick"), out, progress=False)


@pytest.fixture
def fixture_path():
    if not FIXTURE.exists():
        pytest.skip(f"legacy fixture not present at {FIXTURE}")
    return FIXTURE
