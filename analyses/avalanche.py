"""Study: the gradient-avalanche dimension D(t) across a width sweep (Wang 2026; REFERENCE §7).

The paper: D from s_max ~ N^D across model sizes; i.i.d. Gaussian gradients give D ~ 1; XOR MLPs
have D ~ 0.90 before grokking and ~1.20 after; modular-addition transformers' D(t) descends through
1 from above at the transition, runs that never grok stay above 1, and grokked and ungrokked D(t)
separate 100-200 epochs before the transition. Our model of the avalanche is a re-derivation
(``interp.analysis.avalanche``; its docstring lists every choice): BA graph m = 3, stress |g| / mean
|g|, threshold 1.5, dissipation 0.1, 3 graphs per size, calibrated on the Gaussian null only.

Runs: the `small` preset (p = 59, 50% train, AdamW lr 3e-3, full batch) at four widths, d_model in
{32, 48, 64, 96} with 4 heads of d_model / 4 and d_mlp = 4 d_model, one seed (999) each, at weight
decay 1 (groks) and weight decay 0 (the contrast: memorises, does not grok in the budget); a fixed
budget of epochs (no early stop, so every width has the same checkpoint epochs), checkpoints every
50 epochs (plus the log-spaced early ones). At every checkpoint epoch the full-batch train gradient
of each width gives s_max(N) on the same graphs for every epoch and both weight decays; D(t) is the
slope over the four widths.

    python analyses/avalanche.py [--epochs 2000] [--threads 1]

Writes analyses/results/avalanche.{md,json,html}.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from interp.analysis.avalanche import (
    AvalancheConfig,
    fit_dimension,
    gaussian_null,
    gradient_snapshot,
    s_max,
    stress,
    subsample_dimension,
)
from interp.store import SWEEP_RUNS_DIR, Run
from interp.training.sweep import SweepSpec, run_sweep

WIDTHS = [32, 48, 64, 96]
GROUPS = {1.0: "wd 1 (groks)", 0.0: "wd 0 (no grokking)"}
ALT_THRESHOLD = 2.0


def train(args, root: Path):
    spec = SweepSpec.from_dict(
        {
            "preset": "small",
            "name": "avalanche",
            "fixed": {"epochs": args.epochs, "checkpoint_every": args.checkpoint_every, "stop_after_grok": None},
            "grid": {"weight_decay": list(GROUPS)},
            "points": [{"d_model": w, "d_head": w // 4, "d_mlp": 4 * w} for w in args.widths],
        }
    )
    t = time.time()
    index = run_sweep(spec, root, resume=(root / "sweep.json").exists(), threads=args.threads)
    return index, time.time() - t


def d_series(runs: dict[int, Run], cfg: AvalancheConfig, graphs: dict) -> list[dict]:
    """D at every checkpoint epoch the runs share: one gradient snapshot per width."""
    epochs = sorted(set.intersection(*(set(r.checkpoint_epochs()) for r in runs.values())))
    out = []
    for e in epochs:
        snaps = {w: gradient_snapshot(r, e) for w, r in runs.items()}
        per = [s_max(snaps[w].grad, cfg, 0, graphs) for w in runs]
        d = fit_dimension([snaps[w].n for w in runs], per, {})
        out.append(
            {
                "epoch": e,
                "D": d.D,
                "D_seed_sd": d.D_seed_sd,
                "r2": d.r2,
                "N": d.sizes,
                "s_max": d.s_max,
                "f": [s / n for s, n in zip(d.s_max, d.sizes)],
                "over_threshold": [float((stress(snaps[w].grad) > cfg.threshold).mean()) for w in runs],
                "train_loss": [snaps[w].loss for w in runs],
            }
        )
    return out


def crossings(series: list[dict]) -> list[dict]:
    """Epochs (linearly interpolated) where D(t) - 1 changes sign, with the direction."""
    out = []
    for a, b in zip(series, series[1:]):
        da, db = a["D"] - 1, b["D"] - 1
        if math.isfinite(da) and math.isfinite(db) and da * db < 0:
            e = a["epoch"] + (b["epoch"] - a["epoch"]) * da / (da - db)
            out.append({"epoch": round(e, 1), "direction": "down" if da > 0 else "up"})
    return out


def window_mean(series: list[dict], lo: float, hi: float) -> dict:
    v = [s["D"] for s in series if lo <= s["epoch"] < hi and math.isfinite(s["D"])]
    return {
        "from": lo,
        "to": hi,
        "n": len(v),
        "mean": float(np.mean(v)) if v else None,
        "min": float(np.min(v)) if v else None,
        "max": float(np.max(v)) if v else None,
    }


def settles(series: list[dict], below: bool) -> float | None:
    """First epoch from which D stays below (or above) 1 to the end."""
    ok = [(s["D"] < 1) == below for s in series]
    for i in range(len(ok) - 2):  # at least three checkpoints to the end
        if all(ok[i:]):
            return series[i]["epoch"]
    return None


def separation(grok: list[dict], other: list[dict], k: float = 2.0, min_run: int = 3) -> list[dict]:
    """Stretches of >= ``min_run`` consecutive checkpoints where |D_grok - D_other| > k * (their graph-seed
    spreads combined), with the mean difference D_grok - D_other over each (the spread is over graphs
    only: one training seed per width, so it is a lower bound on the real uncertainty)."""
    out, cur = [], []
    for a, b in zip(grok, other):
        if abs(a["D"] - b["D"]) > k * math.hypot(a["D_seed_sd"], b["D_seed_sd"]):
            cur.append((a["epoch"], a["D"] - b["D"]))
            continue
        if len(cur) >= min_run:
            out.append(cur)
        cur = []
    if len(cur) >= min_run:
        out.append(cur)
    return [
        {"from": c[0][0], "to": c[-1][0], "checkpoints": len(c), "mean_difference": float(np.mean([d for _, d in c]))}
        for c in out
    ]


def sep_text(stretches: list[dict]) -> str:
    return (
        "; ".join(
            f"epochs {x['from']}-{x['to']} ({x['checkpoints']} checkpoints, D_wd1 - D_wd0 = {x['mean_difference']:+.3f})"
            for x in stretches
        )
        or "never (3+ checkpoints in a row)"
    )


def summarise(s: list[dict], tm: list[int], tg: list[int]) -> dict:
    """Crossings of 1, the share of epochs above 1, and D's mean over the grokking runs' phases."""
    return {
        "crossings": crossings(s),
        "fraction_of_epochs_above_1": float(np.mean([x["D"] > 1 for x in s])),
        "settles_below_1_from": settles(s, below=True),
        "settles_above_1_from": settles(s, below=False),
        # windows of the grokking runs' phases (all widths: before every T_mem, between the last
        # T_mem and the first T_grok, after the last T_grok); empty where a phase was not reached
        "windows": {
            "before_T_mem": window_mean(s, 0, min(tm) if tm else -1),
            "memorised_before_T_grok": window_mean(s, max(tm) if tm else math.inf, min(tg) if tg else math.inf),
            "after_T_grok": window_mean(s, max(tg) if tg else math.inf, math.inf),
        },
    }


def reading(summary: dict, alt: dict, tg: list[int]) -> str:
    """The paper's two claims checked in words, from the numbers above."""
    out = []
    for name, sm in (("threshold 1.5", summary), (f"threshold {ALT_THRESHOLD:g}", alt)):
        w = sm[1.0]["windows"]
        before, after = w["memorised_before_T_grok"]["mean"], w["after_T_grok"]["mean"]
        if before is None or after is None:
            out.append(f"{name}: a phase was not reached, no verdict.")
            continue
        descends = before > 1 > after
        out.append(
            f"{name}: the grokking runs' D goes from {before:.3f} (memorised, before the first T_grok) to "
            f"{after:.3f} (after the last T_grok): it {'descends through 1 from above, as the paper reports' if descends else ('rises' if after > before else 'falls') + ', it does not descend through 1 from above as the paper reports'}; "
            f"the wd 0 run has D > 1 at {sm[0.0]['fraction_of_epochs_above_1']:.0%} of checkpoints."
        )
    return " ".join(out)


def fmt(x, spec=".3f"):
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=2000)
    ap.add_argument("--checkpoint-every", type=int, default=50)
    ap.add_argument("--widths", type=lambda s: [int(x) for x in s.split(",")], default=WIDTHS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--root", default="checkpoints/studies/avalanche")
    ap.add_argument("--out", default="analyses/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.root)
    cfg = AvalancheConfig()
    t0 = time.time()
    index, train_s = train(args, root)

    t1 = time.time()
    runs: dict[float, dict[int, Run]] = {wd: {} for wd in GROUPS}
    info: dict[float, dict[int, dict]] = {wd: {} for wd in GROUPS}
    for _, r in index.iterrows():
        run = Run.open(root / SWEEP_RUNS_DIR / r["run"])
        wd, w = float(run.config.weight_decay), run.config.d_model
        runs[wd][w] = run
        info[wd][w] = {
            "run": r["run"],
            "T_mem": None if pd.isna(r["T_mem"]) else int(r["T_mem"]),
            "T_grok": None if pd.isna(r["T_grok"]) else int(r["T_grok"]),
            "test_acc": float(r["test_acc"]),
        }
    graphs: dict = {}
    widths = {wd: {w: runs[wd][w] for w in sorted(runs[wd])} for wd in GROUPS}
    series = {wd: d_series(widths[wd], cfg, graphs) for wd in GROUPS}
    sizes = series[1.0][0]["N"]
    null = gaussian_null(sizes, cfg)  # the same sizes and the same graphs as the study
    # sensitivity: the near-critical threshold 2 (its Gaussian null drifts to 1.0-1.15; module docstring)
    alt_cfg = AvalancheConfig(threshold=ALT_THRESHOLD)
    alt_series = {wd: d_series(widths[wd], alt_cfg, graphs) for wd in GROUPS}
    alt_null = gaussian_null(sizes, alt_cfg)
    mid = runs[1.0][sorted(runs[1.0])[len(runs[1.0]) // 2]]
    sub_null = {
        e: subsample_dimension(gradient_snapshot(mid, e).grad, [s // 8 for s in sizes], cfg).D
        for e in (0, mid.checkpoint_epochs()[-1])
    }
    analysis_s = time.time() - t1
    wall = time.time() - t0

    tg = [v["T_grok"] for v in info[1.0].values() if v["T_grok"] is not None]
    tm = [v["T_mem"] for v in info[1.0].values() if v["T_mem"] is not None]
    tg_med = float(np.median(tg)) if tg else None
    summary = {wd: summarise(s, tm, tg) for wd, s in series.items()}
    alt_summary = {wd: summarise(s, tm, tg) for wd, s in alt_series.items()}
    sep = separation(series[1.0], series[0.0])
    alt_sep = separation(alt_series[1.0], alt_series[0.0])

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = f"python analyses/avalanche.py --epochs {args.epochs} --threads {args.threads}"
    result = {
        "command": cmd,
        "wall_seconds": {"total": round(wall, 1), "training": round(train_s, 1), "analysis": round(analysis_s, 1)},
        "avalanche_config": cfg.to_dict(),
        "widths": sorted(runs[1.0]),
        "N": sizes,
        "runs": {GROUPS[wd]: {str(w): v for w, v in sorted(info[wd].items())} for wd in GROUPS},
        "T_grok_median": tg_med,
        "gaussian_null": null.to_dict(),
        "subsample_null_D": {str(e): d for e, d in sub_null.items()},
        "summary": {GROUPS[wd]: v for wd, v in summary.items()},
        "separation": sep,
        "series": {GROUPS[wd]: s for wd, s in series.items()},
        "sensitivity_threshold_2": {
            "avalanche_config": alt_cfg.to_dict(),
            "gaussian_null": alt_null.to_dict(),
            "summary": {GROUPS[wd]: v for wd, v in alt_summary.items()},
            "separation": alt_sep,
            "series": {
                GROUPS[wd]: [{k: x[k] for k in ("epoch", "D", "D_seed_sd", "f")} for x in s]
                for wd, s in alt_series.items()
            },
        },
    }
    (out / "avalanche.json").write_text(json.dumps(result, indent=2, default=float) + "\n")

    g, n = summary[1.0], summary[0.0]
    gw, nw = g["windows"], n["windows"]
    tg_txt = f"{min(tg)}-{max(tg)} (median {tg_med:.0f})" if tg else "not reached"
    cross_txt = ", ".join(f"{c['epoch']:.0f} ({c['direction']})" for c in g["crossings"]) or "none"
    cross_n = ", ".join(f"{c['epoch']:.0f} ({c['direction']})" for c in n["crossings"]) or "none"
    lines = [
        "# Gradient-avalanche dimension D(t) (REFERENCE §7) on a width sweep of the `small` transformer",
        "",
        f"`{cmd}`: {len(index)} runs trained in {train_s / 60:.1f} min, D(t) at "
        f"{len(series[1.0])} checkpoint epochs in {analysis_s / 60:.1f} min ({wall / 60:.1f} min in all, one "
        "thread on a shared 2-core machine).",
        "",
        "Avalanche model (re-derived; the paper publishes no parameters): "
        + ", ".join(f"{k} {v}" for k, v in cfg.to_dict().items())
        + "; stress |g| / mean |g| on a Barabasi-Albert graph, parameters placed at random; s_max = the largest "
        "connected set of toppled sites, averaged over the graphs; D = slope of log s_max on log N over the widths.",
        "",
        "| d_model | N (trainable params) | wd 1: T_mem | wd 1: T_grok | wd 0: T_mem | wd 0: T_grok | wd 0: final test acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for w, N in zip(sorted(runs[1.0]), sizes):
        a, b = info[1.0][w], info[0.0][w]
        lines.append(
            f"| {w} | {N} | {fmt(a['T_mem'], 'd')} | {fmt(a['T_grok'], 'd')} | {fmt(b['T_mem'], 'd')} | "
            f"{fmt(b['T_grok'], 'd')} | {b['test_acc']:.3f} |"
        )
    lines += [
        "",
        "| measure | ours | paper |",
        "|---|---|---|",
        f"| i.i.d. Gaussian gradients, same N and graphs | D = {null.D:.3f} (seed sd {null.D_seed_sd:.3f}) | ~1 |",
        "| random subsamples of one model (wd 1, middle width; epoch 0 / last) | "
        + " / ".join(f"{d:.3f}" for d in sub_null.values())
        + " | (not reported; a null by construction here) |",
        f"| D before T_mem (wd 1) | {fmt(gw['before_T_mem']['mean'])} | - |",
        f"| D memorised, before grokking (wd 1, [max T_mem, min T_grok)) | {fmt(gw['memorised_before_T_grok']['mean'])} "
        f"(range {fmt(gw['memorised_before_T_grok']['min'])}-{fmt(gw['memorised_before_T_grok']['max'])}) | "
        "XOR MLPs ~0.90; mod-add transformers > 1 |",
        f"| D after grokking (wd 1, >= max T_grok) | {fmt(gw['after_T_grok']['mean'])} "
        f"(range {fmt(gw['after_T_grok']['min'])}-{fmt(gw['after_T_grok']['max'])}) | XOR MLPs ~1.20; mod-add < 1 |",
        f"| D(t) crosses 1 (wd 1) at | {cross_txt}; T_grok {tg_txt} | descends through 1 from above at the transition |",
        f"| D stays below 1 from (wd 1) | {fmt(g['settles_below_1_from'], '.0f')} | after the transition |",
        f"| non-grokking run: fraction of epochs with D > 1 | {n['fraction_of_epochs_above_1']:.2f} "
        f"(crossings: {cross_n}; memorised window mean {fmt(nw['memorised_before_T_grok']['mean'])}, "
        f"late window mean {fmt(nw['after_T_grok']['mean'])}) | stays above 1 |",
        f"| wd 1 and wd 0 D(t) apart by > 2 graph-seed sd | {sep_text(sep)} | separate 100-200 epochs before the "
        "transition |",
        "",
        f"Sensitivity, threshold {ALT_THRESHOLD:g} (near the BA percolation point; more sensitive, but its own "
        f"Gaussian null is D = {alt_null.D:.3f}, seed sd {alt_null.D_seed_sd:.3f}):",
        "",
        "| run | D before T_mem | D memorised, before T_grok | D after T_grok | crossings of 1 | epochs with D > 1 |",
        "|---|---|---|---|---|---|",
    ]
    for wd, v in alt_summary.items():
        w = v["windows"]
        cr = ", ".join(f"{c['epoch']:.0f} ({c['direction']})" for c in v["crossings"]) or "none"
        lines.append(
            f"| {GROUPS[wd]} | {fmt(w['before_T_mem']['mean'])} | {fmt(w['memorised_before_T_grok']['mean'])} | "
            f"{fmt(w['after_T_grok']['mean'])} | {cr} | {v['fraction_of_epochs_above_1']:.2f} |"
        )
    lines += [
        "",
        f"Threshold {ALT_THRESHOLD:g}: wd 1 and wd 0 apart by > 2 graph-seed sd: {sep_text(alt_sep)}.",
        "",
        "## Reading",
        "",
        reading(summary, alt_summary, tg),
        "",
        "See the json for D(t), its seed spread, f = s_max / N per width and the fraction of sites above "
        "threshold per width at every checkpoint. With the threshold that makes the Gaussian null hold "
        "(1.5 mean stresses), the largest cascade is a giant cluster holding a fraction f(N) of the graph, "
        "so D - 1 = d log f / d log N: D departs from 1 only as far as the shape of the normalised gradient "
        "distribution changes with width.",
        "",
        "Caveats. The four widths grok at different epochs (the T_grok column), so between the first and the "
        "last T_grok D(t) mixes grokked and ungrokked widths; the seed spread is over graphs only (one "
        "training seed per width), so differences of a few hundredths between runs are not shown to survive "
        "a change of training seed. What was tried: the calibrated threshold 1.5 (null D ~ 1 at every "
        "dissipation and m we tried), the near-critical threshold 2 (more sensitive, null still ~1 at these "
        "sizes but drifting to 1.15 on other draws; module docstring), and subsamples of one model (a second "
        "null: D ~ 1 whatever the model). No parameter was tuned on the study's own D(t).",
    ]
    (out / "avalanche.md").write_text("\n".join(lines) + "\n")

    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(
            rows=2, cols=1, shared_xaxes=True, subplot_titles=("D(t) across widths", "f = s_max / N per width")
        )
        colours = {1.0: "#1f77b4", 0.0: "#d62728"}
        for wd, s in series.items():
            ep = [x["epoch"] for x in s]
            D = np.array([x["D"] for x in s])
            sd = np.nan_to_num(np.array([x["D_seed_sd"] for x in s]))
            fig.add_trace(
                go.Scatter(
                    x=ep + ep[::-1],
                    y=list(D + sd) + list((D - sd)[::-1]),
                    fill="toself",
                    opacity=0.2,
                    line={"width": 0},
                    fillcolor=colours[wd],
                    showlegend=False,
                    hoverinfo="skip",
                ),
                1,
                1,
            )
            fig.add_trace(go.Scatter(x=ep, y=D, name=GROUPS[wd], line={"color": colours[wd]}), 1, 1)
            for i, w in enumerate(sorted(runs[wd])):
                fig.add_trace(
                    go.Scatter(
                        x=ep,
                        y=[x["f"][i] for x in s],
                        name=f"{GROUPS[wd]}, d_model {w}",
                        line={"color": colours[wd], "width": 1 + i * 0.7},
                        showlegend=False,
                    ),
                    2,
                    1,
                )
        for wd, s in alt_series.items():
            fig.add_trace(
                go.Scatter(
                    x=[x["epoch"] for x in s],
                    y=[x["D"] for x in s],
                    name=f"{GROUPS[wd]}, threshold {ALT_THRESHOLD:g}",
                    line={"color": colours[wd], "dash": "dash", "width": 1},
                ),
                1,
                1,
            )
        fig.add_hline(y=1.0, line_dash="dot", row=1, col=1)
        for w, v in sorted(info[1.0].items()):
            if v["T_grok"] is not None:
                fig.add_vline(x=v["T_grok"], line_dash="dash", line_color="grey", opacity=0.6)
        if tg_med is not None:
            fig.add_annotation(
                x=tg_med,
                y=1,
                yref="paper",
                text=f"T_grok (wd 1, widths {min(tg)}-{max(tg)})",
                showarrow=False,
                yanchor="bottom",
            )
        fig.update_xaxes(title_text="epoch", row=2, col=1)
        fig.update_yaxes(title_text="D", row=1, col=1)
        fig.update_yaxes(title_text="f", row=2, col=1)
        fig.update_layout(title="Gradient-avalanche dimension (small preset, width sweep)", height=800)
        fig.write_html(out / "avalanche.html", include_plotlyjs="cdn")
    except ImportError:
        pass
    print("\n".join(lines))


if __name__ == "__main__":
    main()
