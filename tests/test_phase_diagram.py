"""Phase diagrams of sweeps (REFERENCE §6): the rule on hand-made metrics, majority cells, and
``interp phases`` on a tiny sweep through the real command line, with its one-line errors."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import cli_in_process, one_line_error, run_cli

from interp.errors import InterpError
from interp.theory.phase_diagram import (
    PHASES,
    PhaseRule,
    PhaseTable,
    phase_grid,
    run_phases,
)

TINY_SET = [
    a
    for k, v in dict(
        p=13, frac_train=0.5, d_model=16, n_heads=2, d_head=8, d_mlp=32, checkpoint_every=20, log_checkpoints_until=4
    ).items()
    for a in ("--set", f"{k}={v}")
]


def metrics(t_train, t_test, epochs=100, eval_every=10) -> pd.DataFrame:
    """A metrics table whose train / test accuracy first reach 0.9 at t_train / t_test (None: never);
    test metrics only every ``eval_every`` epochs, as the trainer logs them."""
    e = np.arange(epochs + 1)
    train = np.where(e >= t_train, 1.0, 0.3) if t_train is not None else np.full(len(e), 0.3)
    test = np.where(e >= t_test, 0.95, 0.05) if t_test is not None else np.full(len(e), 0.85)
    test = np.where(e % eval_every == 0, test, np.nan)
    return pd.DataFrame({"epoch": e, "train_loss": 1.0, "train_acc": train, "test_acc": test})


def classify(runs: dict, rule: PhaseRule, **axes) -> pd.DataFrame:
    index = pd.DataFrame({"run": list(runs), **axes})
    return run_phases(index, runs.__getitem__, rule, list(axes))


def test_each_phase_from_hand_made_metrics():
    rule = PhaseRule(budget=100, tau=30)
    runs = {
        "comprehension": metrics(10, 30),  # gap 20 < tau
        "grokking": metrics(10, 40),  # gap 30 = tau: grokking (see the module's rule)
        "memorisation": metrics(10, None),  # test stays at 0.85 < 0.9
        "confusion": metrics(None, None),
        "late test": metrics(10, 100),  # reached at the budget itself: never within it
        "unfit but general": metrics(None, 20),  # test reached without the train set: confusion
        "between evaluations": metrics(12, 47),  # test logged every 10 epochs: first seen at 50
    }
    out = classify(runs, rule, lr=[1] * len(runs)).set_index("run")
    assert out.loc["comprehension", "phase"] == "comprehension"
    assert out.loc["grokking", "phase"] == "grokking" and out.loc["grokking", "gap"] == 30
    assert out.loc["memorisation", "phase"] == "memorisation" and pd.isna(out.loc["memorisation", "t_test"])
    assert out.loc["confusion", "phase"] == "confusion"
    assert out.loc["late test", "phase"] == "memorisation" and pd.isna(out.loc["late test", "t_test"])
    assert out.loc["unfit but general", "phase"] == "confusion"
    assert (out.loc["between evaluations", "t_train"], out.loc["between evaluations", "t_test"]) == (12, 50)
    assert out.loc["between evaluations", "phase"] == "grokking"
    # the threshold and tau of the rule decide: at 0.8 the 0.85 plateau counts as reached at epoch 0
    loose = classify(runs, PhaseRule(budget=100, tau=30, threshold=0.8), lr=[1] * len(runs)).set_index("run")
    assert loose.loc["memorisation", "phase"] == "comprehension"
    assert classify(runs, PhaseRule(budget=100, tau=1000), lr=[1] * len(runs))["phase"].tolist().count("grokking") == 0


def test_majority_per_cell_pools_seeds_and_flags_ties():
    rule = PhaseRule(budget=100, tau=30)
    runs = {
        "a0": metrics(10, 20),
        "a1": metrics(10, 80),
        "a2": metrics(10, 90),  # cell a: grokking 2 of 3
        "b0": metrics(10, None),
        "b1": metrics(None, None),  # cell b: a tie, memorisation before confusion in PHASES
        "c0": metrics(None, None),
    }
    table = PhaseTable(
        rule,
        ["lr", "weight_decay", "seed"],
        classify(
            runs,
            rule,
            lr=[1e-3, 1e-3, 1e-3, 1e-2, 1e-2, 1e-3],
            weight_decay=[0, 0, 0, 0, 0, 1],
            seed=[0, 1, 2, 0, 1, 0],
        ),
        source="hand-made",
    )
    assert table.swept == ["lr", "weight_decay", "seed"]
    grid = phase_grid(table)  # the two swept axes other than seed
    assert (grid.x, grid.y) == ("lr", "weight_decay")
    cells = grid.cells.set_index(["lr", "weight_decay"])
    a, b, c = cells.loc[(1e-3, 0)], cells.loc[(1e-2, 0)], cells.loc[(1e-3, 1)]
    assert (a["phase"], a["n"], a["grokking"], a["comprehension"], a["tie"]) == ("grokking", 3, 2, 1, False)
    assert (b["phase"], b["tie"], b["memorisation"], b["confusion"]) == ("memorisation", True, 1, 1)
    assert c["phase"] == "confusion" and c["n"] == 1
    assert list(grid.cells.columns[-4:]) == list(PHASES)
    labels = grid.labels()
    assert labels.loc[0, 1e-3] == "grokking (2/3)" and labels.loc[0, 1e-2] == "memorisation (1/2) tie"
    assert pd.isna(labels.loc[1, 1e-2])  # no run there
    text = grid.format_table()
    assert "weight_decay=0" in text and "lr=0.001" in text and "grokking (2/3)" in text
    d = grid.to_dict()
    assert d["rule"] == {"budget": 100, "tau": 30, "threshold": 0.9} and len(d["cells"]) == 3
    json.dumps(table.to_dict())  # strict JSON: NA times become null
    assert table.to_dict()["runs"][-1]["t_train"] is None
    # axes: given, not swept, the same twice, too few and too many
    assert (phase_grid(table, x="weight_decay", y="seed").x, phase_grid(table, "weight_decay", "seed").y) == (
        "weight_decay",
        "seed",
    )
    with pytest.raises(InterpError, match="--x p is not an axis of the sweep"):
        phase_grid(table, x="p")
    with pytest.raises(InterpError, match="--x and --y are both lr"):
        phase_grid(table, x="lr", y="lr")
    one = PhaseTable(rule, ["lr", "seed"], table.runs.drop(columns="weight_decay"), source="s")
    with pytest.raises(InterpError, match=r"needs two swept axes besides seed; this sweep has 1 \(lr\)"):
        phase_grid(one)
    three = PhaseTable(rule, ["lr", "weight_decay", "frac_train"], table.runs.assign(frac_train=[0.3, 0.5] * 3))
    with pytest.raises(InterpError, match="more than two swept axes"):
        phase_grid(three)


def _one_line_error(r, needle: str) -> None:
    assert needle in one_line_error(r), r.stderr


def test_phases_cli_on_a_tiny_sweep_and_its_bad_input(tmp_path):
    out = tmp_path / "sw"
    r = run_cli(
        "sweep", *TINY_SET, "--set", "epochs=60", "--grid", "weight_decay=0,1", "--grid", "lr=1e-3,1e-2",
        "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cli_in_process("phases", str(out), "--tau", "20")
    assert r.returncode == 0, r.stderr
    assert "budget 60 epochs, tau 20" in r.stdout and "weight_decay=0" in r.stdout and "lr=0.01" in r.stdout
    saved = json.loads((out / "phases.json").read_text())
    assert saved["rule"] == {"budget": 60, "tau": 20, "threshold": 0.9}
    assert len(saved["runs"]) == 4 and sum(saved["counts"].values()) == 4
    assert {c["phase"] for c in saved["grid"]["cells"]} <= set(PHASES)
    assert sum(c["n"] for c in saved["grid"]["cells"]) == 4
    assert (saved["grid"]["x"], saved["grid"]["y"]) == ("weight_decay", "lr")
    js = cli_in_process("phases", str(out), "--x", "lr", "--y", "weight_decay", "--budget", "30", "--json")
    assert js.returncode == 0, js.stderr
    body = json.loads(js.stdout)
    assert body["rule"]["budget"] == 30 and body["rule"]["tau"] == 1000 and body["grid"]["x"] == "lr"
    # the sweep report draws the diagram with the rule interp phases saved
    rep = cli_in_process("report", str(out))
    assert rep.returncode == 0, rep.stderr
    page = (out / "report.html").read_text()
    assert "Phase diagram (interp phases)" in page and "weight_decay against lr" in page
    # bad input: one line each, exit 2
    run_dir = next((out / "runs").iterdir())
    _one_line_error(cli_in_process("phases", str(run_dir)), "is a run directory, not a sweep")
    _one_line_error(cli_in_process("phases", str(out), "--x", "seed"), "--x seed is not an axis of the sweep")
    _one_line_error(cli_in_process("phases", str(out), "--tau", "-1"), "tau must be >= 0")
    _one_line_error(cli_in_process("phases", str(tmp_path / "nowhere")), "is not a sweep directory")
    _one_line_error(cli_in_process("phases", str(out), "--budget", "61"), "budget 61 exceeds the 60 epochs")
    one = tmp_path / "one"
    r = run_cli(
        "sweep", *TINY_SET, "--set", "epochs=3", "--grid", "weight_decay=0,1", "--seeds", "2",
        "--out", str(one), "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    _one_line_error(
        cli_in_process("phases", str(one)), "needs two swept axes besides seed; this sweep has 1 (weight_decay)"
    )
    assert not (one / "phases.json").exists()
    shutil.rmtree(one / "runs")  # the runs gone: the rebuilt index holds no finished run
    (one / "index.csv").unlink()
    _one_line_error(cli_in_process("phases", str(one)), "no finished run to classify")
