"""Study: heavy-tailed spectra of the canonical run's weight matrices (HTSR; REFERENCE §7).

Per weight matrix (``interp.analysis.spectra``: W_E, W_U, W_Q, W_K, W_V, W_O with the heads
concatenated per layer, W_in, W_out) at initialisation, T_mem, T_grok and the final checkpoint (the
first checkpoint at or after each): the power-law exponent alpha of the tail of the eigenvalues of
W^T W and the correlation traps (eigenvalues of the element-shuffled matrix above the
Marchenko-Pastur edge plus a Tracy-Widom margin; counted over several seeded shuffles), printed
beside REFERENCE §7's reading: alpha ~ 2 ideal, < 2 over-correlated, > 6 under-trained; traps (with
alpha < 2) herald anti-grokking (Prakash & Martin).

Writes <out>/spectra.md, spectra.json and spectra.png (the empirical tail distribution of each
matrix at those checkpoints, log-log, with the fitted xmin and the shuffled bulk's edge).
Usage: python analyses/spectra.py [RUN] [--out analyses/results] [--shuffles 5]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from interp.analysis import spectra as sp
from interp.analysis.run_table import analyze, load_summary
from interp.errors import InterpError
from interp.store import Run


def at_or_after(epochs: list[int], e: int | None) -> int | None:
    if e is None:
        return None
    later = [x for x in epochs if x >= e]
    return later[0] if later else epochs[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?", default="checkpoints/canonical")
    ap.add_argument("--out", default="analyses/results")
    ap.add_argument("--shuffles", type=int, default=5, help="seeded shuffles per matrix for the trap count")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    run = Run.open(args.run)
    try:
        summary = load_summary(run)
    except InterpError:
        _, summary = analyze(run, progress=True)
    epochs = run.checkpoint_epochs()
    points = {
        "init": epochs[0],
        "T_mem": at_or_after(epochs, summary.t_mem),
        "T_grok": at_or_after(epochs, summary.t_grok),
        "end": epochs[-1],
    }
    results: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    for label, e in points.items():
        if e is None:
            continue
        state = run.load_state_dict(e)
        specs = sp.model_spectra(state, seed=0)
        mats = sp.weight_matrices(state)
        rows = {}
        for s in specs:
            traps = [s.n_traps] + [
                sp.matrix_spectrum(mats[s.name], s.name, seed=k, fit=False).n_traps for k in range(1, args.shuffles)
            ]
            rows[s.name] = {
                **s.to_dict(),
                "traps_per_shuffle": traps,
                "reading": sp.reading(s.alpha),
            }
            curves.setdefault(s.name, {})[label] = (s.evals, s.xmin, s.threshold)
        results[label] = {"epoch": e, "matrices": rows}
    wall = time.time() - t0

    names = list(next(iter(results.values()))["matrices"])
    cols = [lab for lab in points if lab in results]
    cmd = "python analyses/spectra.py" + ("" if args.run == "checkpoints/canonical" else f" {args.run}")
    cmd += "" if args.shuffles == 5 else f" --shuffles {args.shuffles}"
    lines = [
        "# Heavy-tailed spectra of the weight matrices (HTSR, REFERENCE §7)",
        "",
        f"`{cmd}` on `{run.path}` ({run.config.task} mod {run.config.p}, d_model {run.config.d_model}, "
        f"d_mlp {run.config.d_mlp}, wd {run.config.weight_decay}; T_mem {summary.t_mem}, T_grok {summary.t_grok}, "
        f"final epoch {epochs[-1]}): {wall:.1f} s wall on this machine (one thread).",
        "",
        f"Rule: {sp.SPECTRA_RULE}. W_Q, W_K, W_V, W_O: heads concatenated per layer. Checkpoints: the first at or "
        "after each epoch: " + ", ".join(f"{lab} = epoch {results[lab]['epoch']}" for lab in cols) + ".",
        "",
        "## alpha (power-law exponent of the eigenvalue tail ± its standard error; in brackets: eigenvalues in the "
        "fitted tail of those above the zero threshold)",
        "",
        "| matrix | shape | " + " | ".join(f"{lab} (epoch {results[lab]['epoch']})" for lab in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for n in names:
        cells = []
        for lab in cols:
            r = results[lab]["matrices"][n]
            cells.append(
                f"no fit: {r['n_nonzero']} eigenvalues > {sp.EVALS_THRESH:g}"
                if not math.isfinite(r["alpha"])
                else f"{r['alpha']:.2f} ± {r['alpha_sigma']:.2f} ({r['n_tail']} of {r['n_nonzero']})"
            )
        shape = results[cols[0]]["matrices"][n]["shape"]
        lines.append(f"| {n} | {shape[0]}x{shape[1]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Reading (REFERENCE §7: alpha ~ 2 ideal, < 2 over-correlated, > 6 under-trained)",
        "",
        "| matrix | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(results[lab]["matrices"][n]["reading"] for lab in cols) + " |")
    lines += [
        "",
        f"## Correlation traps (per shuffle, {args.shuffles} seeded shuffles) and spikes of W itself",
        "",
        "Traps: eigenvalues of the shuffled matrix above the fitted MP edge + Tracy-Widom margin. Spikes: W's own "
        "eigenvalues above that threshold (learnt structure).",
        "",
        "| matrix | " + " | ".join(f"{lab} traps / spikes" for lab in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for n in names:
        cells = []
        for lab in cols:
            r = results[lab]["matrices"][n]
            cells.append(f"{' '.join(map(str, r['traps_per_shuffle']))} / {r['n_spikes']}")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")

    # verdict beside the reference
    fin = results[cols[-1]]["matrices"]
    under2 = [n for n in names if math.isfinite(fin[n]["alpha"]) and fin[n]["alpha"] < 2]
    over6 = [n for n in names if math.isfinite(fin[n]["alpha"]) and fin[n]["alpha"] > 6]
    trapped = {lab: [n for n in names if max(results[lab]["matrices"][n]["traps_per_shuffle"]) > 0] for lab in cols}
    persistent = {
        lab: [n for n in names if np.median(results[lab]["matrices"][n]["traps_per_shuffle"]) > 0] for lab in cols
    }
    n_tests = len(names) * len(cols) * args.shuffles
    n_hits = sum(int(t > 0) for lab in cols for n in names for t in results[lab]["matrices"][n]["traps_per_shuffle"])
    lowrank = [
        f"{n} ({fin[n]['n_tail']} of {fin[n]['n_nonzero']} in the tail, eigenvalues over "
        f"{math.log10(fin[n]['lambda_max'] / max(fin[n]['xmin'], 1e-300)):.1f} decades)"
        for n in under2
    ]
    nofit = [n for n in names if not math.isfinite(fin[n]["alpha"])]
    tm = results.get("T_mem", {}).get("matrices", {})
    early = [n for n in tm if math.isfinite(tm[n]["alpha"]) and tm[n]["alpha"] < 2]
    lines += [
        "",
        "## Against REFERENCE §7",
        "",
        f"- At the end (epoch {results[cols[-1]]['epoch']}): alpha < 2 (over-correlated) for "
        f"{', '.join(under2) or 'none'}; > 6 (under-trained) for {', '.join(over6) or 'none'}.",
        "- Matrices with a trap in any shuffle: "
        + "; ".join(f"{lab}: {', '.join(trapped[lab]) or 'none'}" for lab in cols)
        + f". Shuffles with a trap: {n_hits} of {n_tests}; the Tracy-Widom margin is its 99th percentile, so about "
        f"{0.01 * n_tests:.1f} are expected from i.i.d. matrices alone. Matrices with a trap in most shuffles: "
        + "; ".join(f"{lab}: {', '.join(persistent[lab]) or 'none'}" for lab in cols)
        + ".",
        "- How to read alpha < 2 here: weight decay drives the directions a matrix does not use towards zero, so "
        "the trained spectra span many decades and the fitted tail is nearly the whole spectrum: "
        + ("; ".join(lowrank) if lowrank else "none")
        + ". This is the low-rank signature of the cleaned-up circuit rather than a few dominant correlations. "
        + (f"Already below 2 at T_mem: {', '.join(early) or 'none'}. " if "T_mem" in results else "")
        + (
            f"{', '.join(nofit)}: too few eigenvalues above {sp.EVALS_THRESH:g} at the end to fit (rank collapse)."
            if nofit
            else ""
        ),
        "- At initialisation the spectra are Marchenko-Pastur bulks, not power laws: the alphas fitted there (3-6) "
        "describe the bulk's edge and REFERENCE §7's reading does not apply to them.",
        "- Anti-grokking (test accuracy collapsing after ~1e7 steps, heralded by alpha < 2 and traps) cannot be "
        f"checked on this run: it stops {epochs[-1]} epochs in, with test accuracy "
        f"{summary.final.get('test_acc', float('nan')):.4f} at the end.",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    body = {
        "command": cmd,
        "run": str(run.path),
        "wall_seconds": round(wall, 1),
        "rule": sp.SPECTRA_RULE,
        "T_mem": summary.t_mem,
        "T_grok": summary.t_grok,
        "checkpoints": {lab: results[lab]["epoch"] for lab in cols},
        "results": results,
        "reference": "REFERENCE §7: alpha ~ 2 ideal, < 2 over-correlated, > 6 under-trained; traps herald anti-grokking",
    }
    (out / "spectra.json").write_text(json.dumps(body, indent=2, default=float) + "\n")
    (out / "spectra.md").write_text("\n".join(lines) + "\n")
    try:
        figure(curves, cols, results, out / "spectra.png", run.name)
    except ImportError as e:  # matplotlib comes with powerlaw; without it, no figure
        print(f"no figure: {e}", file=sys.stderr)
    print("\n".join(lines))


def figure(curves: dict, cols: list[str], results: dict, path: Path, run_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(curves)
    ncol = 4
    nrow = math.ceil(len(names) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3.3 * nrow), squeeze=False)
    colors = {"init": "#7f7f7f", "T_mem": "#1f77b4", "T_grok": "#ff7f0e", "end": "#2ca02c"}
    for ax, n in zip(axes.flat, names):
        for lab in cols:
            ev, xmin, thr = curves[n][lab]
            ev = np.sort(ev[ev > sp.EVALS_THRESH])
            if not ev.size:
                continue
            ccdf = 1.0 - np.arange(ev.size) / ev.size
            a = results[lab]["matrices"][n]["alpha"]
            ax.loglog(ev, ccdf, ".", ms=3, color=colors[lab], label=f"{lab}: alpha {a:.2f}")
            if math.isfinite(xmin):
                ax.axvline(xmin, color=colors[lab], lw=0.7, ls="--")
            ax.axvline(thr, color=colors[lab], lw=0.7, ls=":")
        ax.set_title(n, fontsize=10)
        ax.set_xlabel("eigenvalue of W^T W", fontsize=8)
        ax.set_ylabel("P(lambda >= x)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(
        f"{run_name}: eigenvalue tails (CCDF; slope -(alpha-1)); dashed: fitted xmin, dotted: shuffled bulk edge + TW",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
