"""Study: the effective-theory toy model of grokking (Liu et al. 2022; REFERENCE §6), beside the paper.

The toy (``interp.theory.toy``): p = 10, a + b over the 55 unordered pairs, 1-D learnable
representations, a tanh MLP decoder, AdamW (lr 1e-3 for E, 1e-4 for the decoder), full batch.
Every group of runs below is trained as one stack (run axis first), on CPU.

(a) Steps to RQI > 0.95 against the training-set size (budget 1e4 steps, several seeds per size; each
    seed draws its own training set and initialisation), trained on the task and, for comparison,
    on the effective loss alone. Paper: never within 1e4 steps at fraction <= 0.36 (20 of 55);
    ~830-1,270 steps with 45 or more of 55.
(b) The critical training fraction: the smallest size from which on (at it and every larger size)
    most seeds (more than half) reach RQI > 0.95 within the budget. Paper: ~0.4. Also the probability
    that the training parallelograms pin the representation to a line (paper: 0.43 at 22 of 55, 0.99
    at 31), counted exactly over random training sets.
(c) The phase diagram over decoder learning rate (log grid 1e-5..1e-2) x decoder weight decay (0..10),
    one run per cell (the same initialisation and training set in every cell: the first seed whose
    training set implies every test answer, ``acc_implied`` = 1, so that test accuracy >= 0.9 is
    reachable), classified with the shared rule (``interp.theory.phase_diagram``: threshold 0.9,
    budget 1e4, tau 1e3).

Writes analyses/results/effective_theory.{md,json,html}.

    python analyses/effective_theory.py [--seeds 8] [--budget 10000] [--lr-cells 7] [--wd-cells 6]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from interp.theory.phase_diagram import PHASES, PhaseRule
from interp.theory.toy import (
    RQI_TARGET,
    ToyConfig,
    implied_accuracy,
    n_pairs_of,
    train_mask,
    train_toys,
    unique_probability,
)

SIZES = (10, 15, 20, 22, 25, 28, 31, 35, 40, 45, 50)
PAPER = {
    "never_at_fraction_le": 0.36,
    "steps_at_45_of_55": [830, 1270],
    "critical_fraction": 0.4,
    "p_unique": {"22": 0.43, "31": 0.99},
}
PHASE_COLORS = {"comprehension": "#2ca02c", "grokking": "#ff7f0e", "memorisation": "#1f77b4", "confusion": "#d62728"}


def _median(xs: list) -> float | None:
    """Median with "never" (None) counted as +inf; None when the median itself is never."""
    v = np.array([np.inf if x is None else x for x in xs], dtype=float)
    m = float(np.median(v)) if v.size else float("inf")
    return None if not np.isfinite(m) else m


def size_sweep(seeds: int, budget: int, log_every: int, objective: str) -> dict:
    cfgs = [ToyConfig(n_train=n, seed=s, steps=budget, log_every=log_every) for n in SIZES for s in range(seeds)]
    t0 = time.time()
    hs = train_toys(cfgs, objective=objective, stop_at={"rqi": RQI_TARGET})
    wall = time.time() - t0
    rows = []
    for n in SIZES:
        group = [h for h in hs if h.config.n_train == n]
        t = [h.t_rqi() for h in group]
        rows.append(
            {
                "n_train": n,
                "fraction": round(n / 55, 4),
                "t_rqi": t,
                "reached": sum(x is not None for x in t),
                "seeds": len(group),
                "median_t_rqi": _median(t),
                "final_rqi": [round(h.final("rqi"), 4) for h in group],
                "test_acc_at_stop": [round(h.final("test_acc"), 4) for h in group],
                "acc_pred_at_stop": [round(h.final("acc_pred"), 4) for h in group],
                "acc_implied": [round(h.acc_implied, 4) for h in group],
                "linear_unique": [bool(h.linear_unique) for h in group],
            }
        )
    return {"objective": objective, "rows": rows, "wall_seconds": round(wall, 1), "runs": len(cfgs)}


def critical_size(rows: list[dict]) -> int | None:
    """Smallest size from which on every size has more than half of its seeds reaching RQI > 0.95."""
    ok = [r["reached"] * 2 > r["seeds"] for r in rows]
    crit = None
    for r, good in zip(reversed(rows), reversed(ok)):
        if not good:
            break
        crit = r["n_train"]
    return crit


def phase_diagram(lr_cells: int, wd_cells: int, wd_max: float, budget: int, log_every: int) -> dict:
    p, n_train = 10, 45
    seed = next(s for s in range(100) if implied_accuracy(p, train_mask(p, n_train, s))[0] == 1.0)
    lrs = [float(x) for x in np.logspace(-5, -2, lr_cells)]
    wds = [float(x) for x in np.linspace(0, wd_max, wd_cells)]
    cfgs = [
        ToyConfig(n_train=n_train, seed=seed, lr_decoder=lr, wd_decoder=wd, steps=budget, log_every=log_every)
        for wd in wds
        for lr in lrs
    ]
    rule = PhaseRule(budget=budget)
    t0 = time.time()
    hs = train_toys(cfgs, stop_at={"train_acc": rule.threshold, "test_acc": rule.threshold})
    wall = time.time() - t0
    cells = []
    for h in hs:
        c = h.config
        cells.append(
            {
                "lr_decoder": c.lr_decoder,
                "wd_decoder": c.wd_decoder,
                "phase": h.phase(rule),
                "t_train": h.first("train_acc", rule.threshold),
                "t_test": h.first("test_acc", rule.threshold),
                "t_rqi": h.t_rqi(),
                "final_rqi": round(h.final("rqi"), 4),
                "final_train_acc": round(h.final("train_acc"), 4),
                "final_test_acc": round(h.final("test_acc"), 4),
                "stopped_at": h.stopped_at,
            }
        )
    counts = {ph: sum(c["phase"] == ph for c in cells) for ph in PHASES}
    return {
        "rule": rule.to_dict(),
        "seed": seed,
        "n_train": n_train,
        "lrs": lrs,
        "wds": wds,
        "cells": cells,
        "counts": counts,
        "wall_seconds": round(wall, 1),
    }


def _fmt_t(x) -> str:
    return "never" if x is None else f"{x:,.0f}"


def write_figure(task: dict, eff: dict, pdg: dict, path: Path) -> None:
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=(
            "steps to RQI > 0.95 vs training fraction (budget 1e4; never drawn at the top)",
            "phase diagram (decoder lr x decoder weight decay)",
        ),
        horizontal_spacing=0.12,
    )
    budget = pdg["rule"]["budget"]
    for res, name, color in ((task, "task (cross-entropy)", "#1f77b4"), (eff, "effective loss alone", "#9467bd")):
        xs, ys, never = [], [], []
        for r in res["rows"]:
            for t in r["t_rqi"]:
                (xs if t is not None else never).append(r["fraction"])
                if t is not None:
                    ys.append(t)
        fig.add_scatter(x=xs, y=ys, mode="markers", name=f"{name}: runs", marker=dict(color=color, size=6, opacity=0.5))
        fig.add_scatter(
            x=never,
            y=[budget * 1.15] * len(never),
            mode="markers",
            name=f"{name}: never",
            marker=dict(color=color, symbol="x", size=7),
        )
        med = [(r["fraction"], r["median_t_rqi"]) for r in res["rows"] if r["median_t_rqi"] is not None]
        fig.add_scatter(
            x=[m[0] for m in med], y=[m[1] for m in med], mode="lines", name=f"{name}: median", line=dict(color=color)
        )
    fig.add_scatter(
        x=[45 / 55, 45 / 55],
        y=PAPER["steps_at_45_of_55"],
        mode="lines+markers",
        name="paper: 830-1,270 at 45/55",
        line=dict(color="black", width=4),
    )
    fig.add_vline(x=PAPER["never_at_fraction_le"], line_dash="dot", line_color="gray", row=1, col=1)
    fig.add_vline(x=PAPER["critical_fraction"], line_dash="dash", line_color="black", row=1, col=1)
    fig.update_yaxes(type="log", title_text="steps", row=1, col=1)
    fig.update_xaxes(title_text="training fraction (of 55 pairs)", row=1, col=1)
    for ph in PHASES:
        cs = [c for c in pdg["cells"] if c["phase"] == ph]
        fig.add_scatter(
            x=[c["lr_decoder"] for c in cs],
            y=[c["wd_decoder"] for c in cs],
            mode="markers",
            name=ph,
            marker=dict(color=PHASE_COLORS[ph], size=22, symbol="square"),
            text=[
                f"{ph}<br>t_train {_fmt_t(c['t_train'])}, t_test {_fmt_t(c['t_test'])}<br>RQI {c['final_rqi']}"
                for c in cs
            ],
            hoverinfo="text",
            row=1,
            col=2,
        )
    fig.update_xaxes(type="log", title_text="decoder learning rate", row=1, col=2)
    fig.update_yaxes(title_text="decoder weight decay", row=1, col=2)
    fig.update_layout(
        template="plotly_white", width=1300, height=560, title="Effective-theory toy model (REFERENCE §6)"
    )
    fig.write_html(path, include_plotlyjs="cdn")


def run_study(args: argparse.Namespace) -> dict:
    """Train everything and return the JSON-able result."""
    torch.set_num_threads(args.threads)
    t0 = time.time()
    task = size_sweep(args.seeds, args.budget, args.log_every, "task")
    print(f"(a) task sweep: {task['runs']} runs in {task['wall_seconds']:.0f} s", flush=True)
    eff = size_sweep(args.seeds, args.budget, args.log_every, "effective")
    print(f"    effective-loss sweep: {eff['runs']} runs in {eff['wall_seconds']:.0f} s", flush=True)
    uniq = {str(n): unique_probability(10, n, args.unique_samples, seed=n) for n in (22, 31)}
    pdg = phase_diagram(args.lr_cells, args.wd_cells, args.wd_max, args.budget, args.log_every)
    print(f"(c) phase diagram: {len(pdg['cells'])} runs in {pdg['wall_seconds']:.0f} s", flush=True)
    wall = time.time() - t0

    crit = critical_size(task["rows"])
    crit_eff = critical_size(eff["rows"])
    n_pairs = n_pairs_of(10)
    # the paper's "<= 0.36" is 20 / 55 = 0.364 rounded: sizes up to 20
    le36 = [r for r in task["rows"] if round(r["fraction"], 2) <= PAPER["never_at_fraction_le"]]
    ge45 = [t for r in task["rows"] if r["n_train"] >= 45 for t in r["t_rqi"]]
    ge45_ok = [t for t in ge45 if t is not None]
    return {
        "command": "python analyses/effective_theory.py "
        + f"--seeds {args.seeds} --budget {args.budget} --lr-cells {args.lr_cells} --wd-cells {args.wd_cells} "
        + f"--wd-max {args.wd_max}",
        "wall_seconds": round(wall, 1),
        "threads": args.threads,
        "log_every": args.log_every,
        "paper": PAPER,
        "size_sweep_task": task,
        "size_sweep_effective": eff,
        "critical_size": crit,
        "critical_fraction": None if crit is None else round(crit / n_pairs, 4),
        "critical_size_effective": crit_eff,
        "critical_fraction_effective": None if crit_eff is None else round(crit_eff / n_pairs, 4),
        "reached_at_fraction_le_0.36": {
            "reached": sum(r["reached"] for r in le36),
            "runs": sum(r["seeds"] for r in le36),
            "sizes": [r["n_train"] for r in le36],
        },
        "t_rqi_at_45_or_more": {
            "reached": len(ge45_ok),
            "runs": len(ge45),
            "min": min(ge45_ok) if ge45_ok else None,
            "median": _median(ge45),
            "max": max(ge45_ok) if ge45_ok else None,
        },
        "p_unique": uniq,
        "unique_samples": args.unique_samples,
        "phase_diagram": pdg,
    }


def render(result: dict) -> str:
    """The markdown summary, ours beside the paper's."""
    task, eff, pdg = result["size_sweep_task"], result["size_sweep_effective"], result["phase_diagram"]
    wall, crit, crit_eff, uniq = (
        result["wall_seconds"],
        result["critical_size"],
        result["critical_size_effective"],
        result["p_unique"],
    )
    seeds, budget = task["rows"][0]["seeds"], pdg["rule"]["budget"]
    le36, g = result["reached_at_fraction_le_0.36"], result["t_rqi_at_45_or_more"]

    def frac(n):
        return "n/a" if n is None else f"{n / 55:.2f}"

    lines = [
        "# The effective-theory toy model (Liu et al. 2022; REFERENCE §6)",
        "",
        f"`{result['command']}`: {wall / 60:.1f} min on this machine (CPU, {result['threads']} torch thread, shared "
        "with other jobs). Figure: `effective_theory.html`. Numbers: `effective_theory.json`.",
        "",
        "Toy (`interp.theory.toy`): p = 10, a + b over the 55 unordered pairs, 1-D representations E ~ U[-1/2, 1/2], "
        "decoder (E_a + E_b) -> 200 -> 200 -> 19 with tanh, AdamW (lr 1e-3 for E, 1e-4 for the decoder, no weight "
        "decay unless stated), full batch; RQI = `rqi_linear` (70 parallelograms, so > 0.95 means >= 67 close), "
        f"logged every {result['log_every']} steps. Each seed draws its own training set and initialisation. "
        "All runs of a group are trained as one stack (run axis first).",
        "",
        f"## (a, b) Steps to RQI > 0.95 vs training-set size ({seeds} seeds, budget {budget:,} steps)",
        "",
        "acc_implied: the fraction of test pairs whose answer the training parallelograms imply (the test accuracy a "
        "representation with zero effective loss earns); line unique: seeds whose training parallelograms leave only "
        "E_k = alpha + beta k.",
        "",
        "| size | fraction | task: reached | task: median steps | task: steps per seed | effective loss: reached | "
        "effective: median steps | task: test acc at stop | acc_implied | line unique |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r, e in zip(task["rows"], eff["rows"]):
        lines.append(
            f"| {r['n_train']} | {r['fraction']:.2f} | {r['reached']}/{r['seeds']} | {_fmt_t(r['median_t_rqi'])} | "
            + ", ".join(_fmt_t(t) for t in r["t_rqi"])
            + f" | {e['reached']}/{e['seeds']} | {_fmt_t(e['median_t_rqi'])} | "
            + f"{np.mean(r['test_acc_at_stop']):.2f} | {np.mean(r['acc_implied']):.2f} | "
            + f"{sum(r['linear_unique'])}/{r['seeds']} |"
        )
    lines += [
        "",
        "| claim (paper) | ours |",
        "|---|---|",
        f"| RQI > 0.95 never reached within 1e4 steps at fraction <= 0.36 | reached in {le36['reached']} of "
        f"{le36['runs']} runs at sizes {', '.join(map(str, le36['sizes']))} (20 / 55 = 0.364) |",
        f"| ~830-1,270 steps with 45 or more of 55 | {g['reached']}/{g['runs']} runs reach it; min / median / max "
        f"{_fmt_t(g['min'])} / {_fmt_t(g['median'])} / {_fmt_t(g['max'])} steps |",
        f"| critical training fraction ~0.4 | {_fmt_t(crit)} of 55 = {frac(crit)} (task); "
        f"{_fmt_t(crit_eff)} of 55 = {frac(crit_eff)} (effective loss alone) |",
        f"| linear representation unique with probability 0.43 at 22 of 55 | {uniq['22']:.3f} "
        f"({result['unique_samples']} random training sets) |",
        f"| ... and 0.99 at 31 of 55 | {uniq['31']:.3f} |",
        "",
        f"## (c) Phase diagram (budget {budget:,}, tau {pdg['rule']['tau']:,}, threshold {pdg['rule']['threshold']})",
        "",
        f"One run per cell, {pdg['n_train']} of 55 training pairs, seed {pdg['seed']} (the first seed whose training "
        "set implies every test answer, so that test accuracy 0.9 is reachable) in every cell; runs stop once train "
        "and test accuracy have both reached 0.9. Cell: phase (t_train / t_test / final RQI).",
        "",
        "| wd \\ lr | " + " | ".join(f"{lr:.1e}" for lr in pdg["lrs"]) + " |",
        "|---|" + "---|" * len(pdg["lrs"]),
    ]
    k = 0
    for wd in pdg["wds"]:
        row = []
        for _ in pdg["lrs"]:
            c = pdg["cells"][k]
            k += 1
            row.append(f"{c['phase']} ({_fmt_t(c['t_train'])} / {_fmt_t(c['t_test'])} / {c['final_rqi']:.2f})")
        lines.append(f"| {wd:g} | " + " | ".join(row) + " |")
    present = [ph for ph in PHASES if pdg["counts"][ph]]
    lines += [
        "",
        "Cells per phase: " + ", ".join(f"{ph} {pdg['counts'][ph]}" for ph in PHASES) + ". "
        f"Phases present: {', '.join(present)} ({len(present)} of 4).",
        "",
    ]
    if NOTES:
        lines += ["## Where we differ from the paper, and why", ""] + NOTES + [""]
    return "\n".join(lines) + "\n"


# Written for the run recorded in analyses/results (numbers quoted from its tables); rerunning with other
# settings keeps this text, so check it against the new tables.
NOTES: list[str] = [
    "- **Speed at 45-50 of 55: faster than the paper.** Our runs reach RQI > 0.95 after 430-660 steps (median "
    "535) where the paper reports ~830-1,270. We have not established why; candidates are details §6 does not "
    "fix (the decoder's initialisation, which we take from `torch.nn.Linear`; how often and how exactly the "
    "paper evaluates RQI; Adam vs AdamW, identical here because weight decay is 0). The ordering the paper "
    "reports (faster with more data) holds: median 735 steps at 35, 655 at 40, 560 at 45, 530 at 50.",
    "- **Critical fraction: 0.64 with the task loss, 0.40 with the effective loss.** The paper's ~0.4 is met by "
    "training E on the effective loss alone (22 of 55: 5 of 8 seeds) and by the count of training sets that "
    "pin E to a line (0.425 at 22, 0.990 at 31, both matching the paper's 0.43 / 0.99). With the full task "
    "(cross-entropy through the decoder, decoder lr 1e-4) many seeds at 22-31 never reach RQI > 0.95 in 1e4 "
    "steps although their training parallelograms do determine a line: the decoder fits the training pairs "
    "first, after which (presumably; we did not measure it) little gradient reaches E. So in our toy the data suffice at ~0.4 but "
    "the optimisation needs ~0.64 for most seeds; the paper's 0.4 may reflect its evaluation (e.g. other "
    "seeds or a longer look) rather than the task dynamics we measure. An honest gap, not tuned away.",
    "- **Test accuracy is capped by the training set.** acc_implied (mean 0.91 at 45 of 55) shows that some "
    "random training sets leave test answers that no training parallelogram implies (a test sum with no "
    "training pair, or a symbol left free), so test accuracy >= 0.9 can be out of reach whatever the "
    "representation. The phase diagram therefore uses a training set with acc_implied = 1 (seed 1); with "
    "seed 0 (acc_implied 0.8) every cell that fits its training set is 'memorisation' (checked while building "
    "the study). The 'test acc at stop' column is read when RQI first exceeds 0.95, so it is still rising.",
    "- **Phase diagram: all four phases, the paper's arrangement along the learning-rate axis, budget-limited "
    "edges.** Memorisation fills high decoder learning rates (>= 3.2e-4 at small weight decay: the decoder "
    "fits the training set in 110-720 steps while RQI stays at 0.04-0.39), comprehension lies at lr "
    "3.2e-5..1e-4 with small weight decay, grokking cells sit between comprehension and memorisation at "
    "weight decay 4-8 (at lr 3.2e-4, weight decay 6-8 turns memorisation into grokking, in line with the "
    "paper's picture), "
    "and confusion appears at the largest weight decay (10, and >= 6 at lr 1e-2) as the paper found. Two "
    "differences come from the 1e4-step budget: the whole lr = 1e-5 column is 'confusion' although its "
    "representation is linear (RQI 1.00) - the decoder is too slow to fit 45 pairs in 1e4 steps - and the "
    "'memorisation' cells at lr 3.2e-5..1e-4, weight decay 6-8, with RQI 1.00 fit their training set only "
    "after 4,490-9,650 steps, so their test accuracy may simply not have had time. A 1e5-step budget (which "
    "the paper also used) would likely move both; we did not run it (10x the cost). One seed per cell: the "
    "boundaries are noisy at the scale of one cell.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=8, help="seeds per training-set size")
    ap.add_argument("--budget", type=int, default=10_000, help="steps (REFERENCE §6: 1e4)")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--lr-cells", type=int, default=7, help="decoder lr cells, log-spaced over 1e-5..1e-2")
    ap.add_argument("--wd-cells", type=int, default=6, help="decoder weight-decay cells over 0..--wd-max")
    ap.add_argument("--wd-max", type=float, default=10.0)
    ap.add_argument("--unique-samples", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    ap.add_argument("--out", default="analyses/results")
    ap.add_argument("--render-only", action="store_true", help="rewrite the md and html from the existing json")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        result = json.loads((out / "effective_theory.json").read_text())
    else:
        result = run_study(args)
        (out / "effective_theory.json").write_text(json.dumps(result, indent=2) + "\n")
    write_figure(
        result["size_sweep_task"],
        result["size_sweep_effective"],
        result["phase_diagram"],
        out / "effective_theory.html",
    )
    text = render(result)
    (out / "effective_theory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
