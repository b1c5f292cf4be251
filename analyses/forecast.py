"""Study: how well can T_grok be forecast, and how early? (REFERENCE §5, §7)

Trains a sweep of the `small` preset over learning rate x weight decay x seeds with the training
probes on (so the Fourier forecaster sees gini_W_E every 10 epochs), with some cells too slow to grok
within the budget, then evaluates the forecasters of ``interp.theory.forecast`` by leave-cells-out:
for each (lr, weight decay) cell, calibrate on the other cells and forecast the cell's runs at T_mem
and at T_mem + 25% of the true delay. Prints the mean absolute percentage error of T_grok per
forecaster beside the published forecasters (34.6% for the three-input predictor of the delay-law
paper, 17.7% for the calibrated follow-up), the accuracy of the will-it-grok call, and how early the
combined forecast settles within 20% of the truth. ``--extra SWEEP`` adds other sweeps' runs as
separate evaluations (each calibrated on its own cells).

Writes analyses/results/forecast.{md,json}.

    python analyses/forecast.py [--epochs 5000] [--seeds 3] [--extra checkpoints/sweep32]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from interp.errors import InterpError
from interp.theory.forecast import (
    FORECASTERS,
    calibrate,
    evaluate_leave_cells_out,
    forecast,
    summarise_evaluation,
    sweep_histories,
)
from interp.training.sweep import SweepSpec, run_sweep, sweep_seconds

LRS = [1e-3, 3e-3]
WDS = [0.1, 0.3, 1.0, 3.0]
SETTLE = 0.2  # "settled": every later forecast within 20% of the true T_grok


def settle_fraction(h, cal, step: int = 50):
    """First epoch (as a fraction of T_grok) after which the combined forecast stays within 20% of the truth."""
    epochs = list(range(h.t_mem, h.t_grok, step))
    ok = []
    for e in epochs:
        f = next((f for f in forecast(h.until(e), cal) if f.forecaster == "combined"), None)
        ok.append(f is not None and f.t_grok is not None and abs(f.t_grok - h.t_grok) <= SETTLE * h.t_grok)
    for i in range(len(ok)):
        if all(ok[i:]):
            return epochs[i] / h.t_grok
    return None


def live_settle(run_dir: Path, calibration: str, step: int = 100) -> dict:
    """The forecasts a live run would have shown, every ``step`` epochs from T_mem to T_grok, and when each
    forecaster settled within 20% of the true T_grok for good."""
    from interp.store import Run
    from interp.theory.forecast import load_calibration, run_history

    cal = load_calibration(calibration)
    h = run_history(Run.open(run_dir))
    if h.t_mem is None or h.t_grok is None:
        raise InterpError(f"{run_dir}: the live evaluation needs a run that memorised and grokked")
    series: dict[str, list] = {}
    for e in range(h.t_mem, h.t_grok, step):
        for f in forecast(h.until(e), cal):
            series.setdefault(f.forecaster, []).append((e, f.t_grok))
    settle = {}
    for name, pts in series.items():
        ok = [t is not None and abs(t - h.t_grok) <= SETTLE * h.t_grok for _, t in pts]
        settle[name] = next((pts[i][0] for i in range(len(ok)) if all(ok[i:])), None)
    return {
        "run": str(run_dir),
        "calibration": calibration,
        "t_mem": h.t_mem,
        "t_grok": h.t_grok,
        "settle_epoch": settle,
        "at_t_mem": {k: v[0][1] for k, v in series.items()},
    }


def evaluate(sweep_dir: Path) -> dict:
    hs, cells, names = sweep_histories(sweep_dir)
    ev = evaluate_leave_cells_out(hs, cells)
    summary = summarise_evaluation(ev)
    settle = []
    for cell in sorted(set(cells), key=repr):
        try:
            cal = calibrate([h for h, c in zip(hs, cells) if c != cell])
        except InterpError:
            continue
        for h, c in zip(hs, cells):
            if c == cell and h.t_mem is not None and h.t_grok is not None and h.t_grok > h.t_mem:
                settle.append(settle_fraction(h, cal))
    reached = [s for s in settle if s is not None]
    return {
        "sweep": str(sweep_dir),
        "runs": len(hs),
        "grokked": int(sum(h.t_grok is not None for h in hs)),
        "cells": len(set(cells)),
        "summary": summary.to_dict(orient="records"),
        "settle_fraction_median": float(np.median(reached)) if reached else None,
        "settled_runs": f"{len(reached)}/{len(settle)}",
    }


def table(res: dict) -> list[str]:
    s = {(r["forecaster"], r["at"]): r for r in res["summary"]}
    lines = [
        f"### {res['sweep']}: {res['runs']} runs in {res['cells']} cells, {res['grokked']} grokked",
        "",
        "| forecaster | MAPE of T_grok at T_mem | at T_mem + 25% of the delay | will-it-grok call at T_mem |",
        "|---|---|---|---|",
    ]
    for name in (*FORECASTERS, "combined"):
        a, b = s.get((name, 0.0)), s.get((name, 0.25))

        def fmt(r):
            return (
                "no answer"
                if r is None or r["mape"] is None or math.isnan(r["mape"])
                else f"{r['mape']:.1f}% (n {r['n_grokked']})"
            )

        call = "-" if a is None or math.isnan(a["call_accuracy"]) else f"{a['call_accuracy']:.0%} (n {a['n_calls']})"
        lines.append(f"| {name} | {fmt(a)} | {fmt(b)} | {call} |")
    sf = res["settle_fraction_median"]
    lines += [
        "",
        f"Combined forecast settled within 20% of the true T_grok (and stayed there) in {res['settled_runs']} "
        f"held-out runs" + (f", at a median of {sf:.0%} of T_grok." if sf is not None else "."),
        "",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--root", default="checkpoints/studies/forecast")
    ap.add_argument("--extra", action="append", default=[], help="another sweep directory to evaluate")
    ap.add_argument("--out", default="analyses/results")
    ap.add_argument("--live-run", help="a grokked run to replay the live forecast on (e.g. checkpoints/canonical)")
    ap.add_argument("--live-calibration", help="sweep or calibration file for --live-run")
    args = ap.parse_args()
    spec = SweepSpec.from_dict(
        {
            "preset": "small",
            "name": "forecast",
            "fixed": {"epochs": args.epochs, "stop_after_grok": 200},
            "grid": {"lr": LRS, "weight_decay": WDS},
            "seeds": args.seeds,
        }
    )
    root = Path(args.root)
    run_sweep(spec, root, resume=(root / "sweep.json").exists())
    train_s = sweep_seconds(root)  # summed over the invocations that trained it
    t0 = time.time()
    results = [evaluate(root)] + [evaluate(Path(e)) for e in args.extra]
    live = live_settle(Path(args.live_run), args.live_calibration) if args.live_run else None
    eval_s = time.time() - t0
    wall = train_s + eval_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "forecast.json").write_text(
        json.dumps(
            {
                "wall_seconds": round(wall, 1),
                "train_seconds": round(train_s, 1),
                "evaluations": results,
                "live": live,
            },
            indent=2,
            default=float,
        )
        + "\n"
    )
    lines = [
        "# Forecasting T_grok (REFERENCE §5, §7): leave-cells-out on our sweeps",
        "",
        f"`python analyses/forecast.py --epochs {args.epochs} --seeds {args.seeds}"
        + "".join(f" --extra {e}" for e in args.extra)
        + (f" --live-run {args.live_run} --live-calibration {args.live_calibration}" if args.live_run else "")
        + f"`: {wall / 60:.1f} min on this machine ({train_s / 60:.1f} min training, summed over invocations; "
        f"{eval_s / 60:.1f} min evaluation).",
        "",
        "Published: the delay-law paper's three-input predictor (eta, lambda, V_mem) 34.6% mean absolute error "
        "at T_mem (N = 60); the calibrated follow-up 17.7% MAPE on held-out runs. Issue aim: <= 25% at T_mem, "
        "<= 15% at T_mem + 25% of the delay.",
        "",
    ]
    for r in results:
        lines += table(r)
    if live is not None:

        def when(e):
            return "never" if e is None else f"epoch {e:,} ({e / live['t_grok']:.0%} of T_grok)"

        lines += [
            f"### Live forecast replayed on {live['run']} (T_mem {live['t_mem']}, T_grok {live['t_grok']:,}), "
            f"calibrated on {live['calibration']}",
            "",
            "| forecaster | forecast at T_mem | settled within 20% for good |",
            "|---|---|---|",
        ]
        for name, e in live["settle_epoch"].items():
            t = live["at_t_mem"].get(name)
            lines.append(f"| {name} | {'-' if t is None else f'{t:,.0f}'} | {when(e)} |")
        lines.append("")
    lines += [
        "Each cell (hyperparameters other than the seed) is held out in turn: the forecasters are calibrated on the "
        "other cells only, so a held-out learning rate or weight decay is extrapolated. Runs that never grok count "
        "for the will-it-grok call only. Forecasts are clipped to 'not before now'.",
    ]
    (out / "forecast.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
