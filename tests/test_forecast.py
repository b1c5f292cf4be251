"""T_grok forecasts (interp.theory.forecast): calibration, the forecasters, the command line, live stopping."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

from interp.errors import InterpError
from interp.theory.forecast import (
    Calibration,
    LiveForecaster,
    calibrate,
    evaluate_leave_cells_out,
    forecast,
    history,
    summarise_evaluation,
)

KAPPA, V_STAR, T_MEM = 0.25, 800.0, 100


def _law_run(lr: float, wd: float, v_mem: float, budget: int = 20_000) -> pd.DataFrame:
    """Metrics of a run that obeys the calibrated delay law exactly: V contracts at 2 kappa eta lambda from
    V_mem at T_mem, test accuracy jumps when V reaches V*, and V stays there."""
    e = np.arange(0, budget + 1, 10)
    delay = math.log(v_mem / V_STAR) / (2 * KAPPA * lr * wd)
    t_grok = T_MEM + delay
    v = np.where(e < T_MEM, v_mem * (0.5 + 0.5 * e / T_MEM), v_mem * np.exp(-2 * KAPPA * lr * wd * (e - T_MEM)))
    v = np.maximum(v, V_STAR)
    return pd.DataFrame(
        {
            "epoch": e,
            "sq_total": v,
            "train_acc": np.where(e >= T_MEM, 1.0, 0.5),
            "test_acc": np.where(e >= t_grok, 1.0, 0.1),
            "gini_W_E": np.clip(0.1 + 0.3 * (e - T_MEM) / delay, 0.1, 0.6),
        }
    )


def _sweep(lams=(0.5, 1.0, 2.0), seeds=(1500.0, 1700.0)):
    hs, cells = [], []
    for lam in lams:
        for v_mem in seeds:
            hs.append(history(_law_run(1e-3, lam, v_mem), 1e-3, lam, 20_000))
            cells.append((lam,))
    return hs, cells


def test_runs_that_obey_the_law_are_forecast_at_t_mem():
    hs, cells = _sweep()
    cal = calibrate(hs, "synthetic")
    assert math.isclose(cal.kappa, KAPPA, rel_tol=0.02) and math.isclose(cal.v_star, V_STAR, rel_tol=1e-6)
    ev = summarise_evaluation(evaluate_leave_cells_out(hs, cells)).set_index(["forecaster", "at"])
    assert ev.loc[("delay_law", 0.0), "mape"] < 2.0  # held-out cells: the law's 1/lambda carries over
    assert ev.loc[("delay_law", 0.0), "call_accuracy"] == 1.0


def test_no_weight_decay_is_forecast_never_and_the_budget_decides_the_call():
    hs, _ = _sweep()
    cal = calibrate(hs)
    flat = _law_run(1e-3, 1.0, 1600.0)
    out = {f.forecaster: f for f in forecast(history(flat, 1e-3, 0.0, 20_000).until(T_MEM), cal)}
    assert out["delay_law"].will_grok is False and out["delay_law"].t_grok is None
    assert out["combined"].will_grok is False
    short = {f.forecaster: f for f in forecast(history(flat, 1e-3, 0.1, 3000).until(T_MEM), cal)}
    assert short["delay_law"].t_grok > 3000 and short["delay_law"].will_grok is False  # lambda 0.1: too slow
    lo, hi = short["delay_law"].interval
    assert T_MEM < lo <= short["delay_law"].t_grok <= hi


def test_forecast_needs_memorisation_and_calibration_needs_grokked_runs():
    hs, _ = _sweep()
    cal = calibrate(hs)
    with pytest.raises(InterpError, match="has not memorised yet"):
        forecast(hs[0].until(T_MEM - 10), cal)
    with pytest.raises(InterpError, match="at least 2 runs"):
        calibrate([h.until(T_MEM) for h in hs], "early")
    with pytest.raises(InterpError, match="no weight-norm data"):
        history(pd.DataFrame({"epoch": [0], "train_acc": [1.0], "test_acc": [0.0]}), 1e-3, 1.0, 10)
    live = LiveForecaster(cal, every=100)
    assert live.update("x", [0, 1.0, 1.0, 0.5, 0.1]) is None  # before T_mem: nothing to say


def test_calibration_round_trips_and_refuses_other_files(tmp_path):
    cal = calibrate(_sweep()[0], "synthetic")
    cal.save(tmp_path / "cal.json")
    assert Calibration.load(tmp_path / "cal.json") == cal
    (tmp_path / "bad.json").write_text(json.dumps({"kappa": 1}))
    with pytest.raises(InterpError, match="not a forecast calibration"):
        Calibration.load(tmp_path / "bad.json")


def test_sweep_stops_hopeless_runs_and_forecast_cli(tmp_path, capsys):
    """A tiny sweep calibrated on another: the run without weight decay is stopped at T_mem, marked in the
    index, left stopped by --resume; `interp forecast` answers for each kind of run and refuses bad input.
    The sweeps and most commands run in this process (``interp.cli.main``); one bad input goes through the
    real command line."""
    from interp.cli import main

    base = ["--preset", "quick", "--no-progress"]
    cal_sweep = tmp_path / "cal"
    assert (
        main(["sweep", "--out", str(cal_sweep), *base, "--grid", "weight_decay=2,3", "--grid", "frac_train=0.6,0.7"])
        == 0
    )
    sw = tmp_path / "sw"
    args = ["sweep", "--out", str(sw), *base, "--grid", "weight_decay=0,3"]
    assert main([*args, "--forecast-calibration", str(cal_sweep), "--stop-hopeless"]) == 0
    index = pd.read_csv(sw / "index.csv").set_index("weight_decay")
    assert index.loc[0.0, "status"] == "stopped" and index.loc[0.0, "epochs_trained"] == index.loc[0.0, "T_mem"]
    assert index.loc[3.0, "status"] == "done"
    stopped = sw / "runs" / index.loc[0.0, "run"]
    assert "forecast not to grok" in json.loads((stopped / "stopped.json").read_text())["reason"]
    assert main(["sweep", "--resume", str(sw), "--no-progress"]) == 0
    assert pd.read_csv(sw / "index.csv").set_index("weight_decay").loc[0.0, "status"] == "stopped"
    capsys.readouterr()

    assert main(["forecast", str(stopped), "--calibration", str(cal_sweep)]) == 0
    assert "will not grok" in capsys.readouterr().out
    grokked = sw / "runs" / index.loc[3.0, "run"]
    assert main(["forecast", str(grokked), "--calibration", str(cal_sweep), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["status"] == "grokked" and body["forecasts"]
    assert main(["forecast", str(grokked), "--calibration", str(cal_sweep), "--at", "1"]) == 0
    assert "not memorised yet" in capsys.readouterr().out
    for argv, message in (
        ((str(tmp_path), "--calibration", str(cal_sweep)), "is not a run directory"),
        ((str(grokked), "--calibration", str(tmp_path / "none")), "neither a sweep directory nor a calibration"),
    ):
        assert main(["forecast", *argv]) == 2
        assert message in capsys.readouterr().err
    r = run_cli("forecast", str(sw), "--calibration", str(cal_sweep))
    assert r.returncode == 2 and "is a sweep directory" in r.stderr and "Traceback" not in r.stderr, r.stderr
