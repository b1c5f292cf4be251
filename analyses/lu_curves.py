"""Study: Omnigrok's LU curves on the modular-addition transformer (Liu, Michaud, Tegmark 2023; REFERENCE §4).

Fixed-norm training at relative norms alpha = w / w0 = 10^linspace(-1, 1, N): every parameter is
multiplied by alpha after the default init, weight decay is 0, and after every AdamW step all
parameters are rescaled jointly to that norm. For each alpha the best (lowest) train and test loss
reached during training are recorded. The paper's claim: train loss against alpha is L-shaped
(high at small norm, then flat and low), test loss U-shaped (an interior minimum near the
generalising norm w_c).

Trains through the sweep engine (one ensemble of all alphas), at the `small` size by default.
``--scale-lr`` multiplies each alpha's learning rate by alpha: Adam's step has a fixed absolute
size, so at alpha = 10 it moves the weights 10x less relative to their size, and with the base lr
the large-norm runs had not fitted in 2000 epochs (best train loss 11 at alpha 6.3, 630 at 10);
scaling keeps the relative step of every alpha that of alpha = 1.
Writes analyses/results/lu_curves.{md,json} and lu_curves.html.

    python analyses/lu_curves.py [--size small] [--points 11] [--epochs 2000] [--seeds 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from interp.config import PRESETS, TrainConfig
from interp.store import SWEEP_RUNS_DIR, Run
from interp.theory.weight_norm import lu_curves, lu_shape
from interp.training.sweep import SweepSpec, run_sweep


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="small", help="preset giving the model and data (default small)")
    ap.add_argument("--points", type=int, default=11)
    ap.add_argument("--epochs", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--scale-lr", action="store_true", help="lr times alpha (equal relative Adam steps)")
    ap.add_argument("--sweep-dir", default="checkpoints/studies/lu_curves")
    ap.add_argument("--out", default="analyses/results")
    args = ap.parse_args()

    alphas = [round(float(a), 6) for a in 10 ** np.linspace(-1, 1, args.points)]
    base_lr = PRESETS[args.size].get("lr", TrainConfig.lr)
    if args.scale_lr:  # linked points: (alpha, lr * alpha)
        axes = {"points": [{"init_scale": a, "lr": round(base_lr * a, 9)} for a in alphas]}
    else:
        axes = {"grid": {"init_scale": alphas}}
    spec = SweepSpec.from_dict(
        {
            "preset": args.size,
            "seeds": args.seeds,
            "name": "lu_curves",
            **axes,
            "fixed": {
                "weight_decay": 0.0,
                "constant_norm": True,
                "epochs": args.epochs,
                "stop_after_grok": None,
                "eval_every": 10,
                "checkpoint_every": 1000,
            },
        }
    )
    t0 = time.time()
    index = run_sweep(spec, args.sweep_dir, resume=Path(args.sweep_dir, "sweep.json").exists())
    wall = time.time() - t0
    rows = []
    for _, r in index.iterrows():
        m = Run.open(Path(args.sweep_dir) / SWEEP_RUNS_DIR / r["run"]).metrics()
        rows.append(
            {
                "alpha": r["init_scale"],
                "seed": r["seed"],
                "best_train_loss": m["train_loss"].min(),
                "best_test_loss": m["test_loss"].min(),
                "final_train_acc": m["train_acc"].iloc[-1],
                "final_test_acc": m["test_acc"].dropna().iloc[-1],
                "T_grok": r["T_grok"],
            }
        )
    curve = lu_curves(pd.DataFrame(rows).drop(columns=["seed", "T_grok"]))
    shape = lu_shape(curve)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "spec": spec.to_dict(),
        "curve": curve.to_dict(orient="records"),
        "shape": shape,
        "wall_seconds": round(wall, 1),
    }
    (out / "lu_curves.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# LU curves on the transformer (Omnigrok, REFERENCE §4)",
        "",
        f"`python analyses/lu_curves.py --size {args.size} --points {args.points} --epochs {args.epochs} "
        f"--seeds {args.seeds}{' --scale-lr' if args.scale_lr else ''}`: fixed-norm AdamW (wd 0, lr "
        f"{'base lr x alpha' if args.scale_lr else f'{base_lr:g}'}), {args.epochs} epochs per alpha, "
        f"{len(index)} runs in {wall / 60:.1f} min on this machine.",
        "",
        "| alpha | best train loss | best test loss | final train acc | final test acc |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.alpha:.3g} | {r.best_train_loss:.3e} | {r.best_test_loss:.3e} | {r.final_train_acc:.3f} | "
        f"{r.final_test_acc:.3f} |"
        for r in curve.itertuples()
    ]
    lines += [
        "",
        "| claim (paper) | ours |",
        "|---|---|",
        f"| train loss L-shaped: falls, then flat | falls: {shape['train_falls']}, flat after its minimum "
        f"(alpha {shape['alpha_best_train']:.3g}): {shape['train_flat_after_minimum']} |",
        f"| test loss U-shaped: interior minimum | interior: {shape['test_minimum_interior']}, at alpha "
        f"{shape['alpha_best_test']:.3g} |",
    ]
    (out / "lu_curves.md").write_text("\n".join(lines) + "\n")
    try:
        import plotly.graph_objects as go

        fig = go.Figure(
            [
                go.Scatter(x=curve["alpha"], y=curve["best_train_loss"], name="best train loss"),
                go.Scatter(x=curve["alpha"], y=curve["best_test_loss"], name="best test loss"),
            ]
        )
        fig.update_layout(
            title="LU curves: fixed-norm training (Omnigrok)",
            xaxis_type="log",
            yaxis_type="log",
            xaxis_title="alpha = w / w0",
            yaxis_title="loss",
        )
        fig.write_html(out / "lu_curves.html", include_plotlyjs="cdn")
    except ImportError:
        pass
    print("\n".join(lines))


if __name__ == "__main__":
    main()
