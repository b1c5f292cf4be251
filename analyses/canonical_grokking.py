"""Study: does the canonical run (REFERENCE §1) grok, and do its progress measures behave as
Nanda et al. (2023) report?

Reads a trained run (default checkpoints/canonical; train it with `make main` or
`interp train --preset canonical`), analyses every checkpoint, and checks the headline claims:
train accuracy >= 99% before epoch 2,000 and test accuracy >= 99% before 20,000; 3-7 key
frequencies; >= 70% of neurons with FVE > 0.85; restricted loss falls below half its peak before
the test loss does; excluded loss rises above its memorisation level during circuit formation;
Gini of W_E and W_L higher at the end than at T_mem; sum of squared weights lower.

Writes <out>/canonical_grokking.md and <out>/canonical_grokking.json.
Usage: python analyses/canonical_grokking.py [RUN] [--out analyses/results]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from interp.analysis.run_table import analyze
from interp.store import Run


def first_below(epochs: np.ndarray, values: np.ndarray, level: float, after: int) -> int | None:
    ok = (epochs >= after) & (values < level)
    return int(epochs[ok][0]) if ok.any() else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", nargs="?", default="checkpoints/canonical")
    ap.add_argument("--out", default="analyses/results")
    args = ap.parse_args()
    run = Run.open(args.run)
    metrics = run.metrics()
    table, summary = analyze(run, progress=True)
    ph = summary.phases
    ep = table["epoch"].to_numpy()

    def at(epoch: int, col: str) -> float:
        i = int(np.searchsorted(ep, epoch))  # first checkpoint at or after epoch
        return float(table[col].iloc[min(i, len(ep) - 1)])

    t_mem, t_grok = ph.t_mem, ph.t_grok
    rest, test = table["restricted_loss"].to_numpy(), table["test_loss"].to_numpy()
    i_rp, i_tp = int(np.argmax(rest)), int(np.argmax(test))
    rest_half = first_below(ep, rest, rest[i_rp] / 2, int(ep[i_rp]))
    test_half = first_below(ep, test, test[i_tp] / 2, int(ep[i_tp]))
    excl = table["excluded_loss"].to_numpy()
    mem_end = ph.memorisation[1] if ph.memorisation else None
    cf = ph.circuit_formation
    excl_mem = float(excl[ep <= mem_end][-1]) if mem_end is not None else float("nan")
    excl_cf_max = float(excl[(ep >= cf[0]) & (ep <= cf[1])].max()) if cf else float("nan")
    last = table.iloc[-1]
    log = {}
    log_path = run.path / "training_log.jsonl"
    if log_path.exists():
        calls = [json.loads(l) for l in log_path.read_text().splitlines() if l.strip()]
        log = {"training_seconds": round(sum(c["seconds"] for c in calls), 1), "calls": calls}
    checks = {
        "T_mem < 2000": t_mem is not None and t_mem < 2000,
        "T_grok < 20000": t_grok is not None and t_grok < 20000,
        "3 <= #key freqs <= 7": 3 <= len(summary.final_key_freqs) <= 7,
        "frac neurons FVE>0.85 >= 0.70": float(last["frac_neurons_fve"]) >= 0.70,
        "restricted loss halves before test loss": rest_half is not None
        and test_half is not None
        and rest_half < test_half,
        "excluded loss rises in circuit formation": excl_cf_max > excl_mem,
        "Gini W_E end > at T_mem": t_mem is not None and float(last["gini_W_E"]) > at(t_mem, "gini_W_E"),
        "Gini W_L end > at T_mem": t_mem is not None and float(last["gini_W_L"]) > at(t_mem, "gini_W_L"),
        "sum sq weights end < at T_mem": t_mem is not None and float(last["sq_total"]) < at(t_mem, "sq_total"),
    }
    head = {
        "run": str(run.path),
        "epochs_trained": int(metrics["epoch"].iloc[-1]),
        "checkpoints": len(ep),
        "T_mem": t_mem,
        "T_grok": t_grok,
        "phases": {"memorisation": ph.memorisation, "circuit_formation": cf, "cleanup": ph.cleanup},
        "phase_rule": ph.rule,
        "peak_test_loss": {"epoch": int(ep[i_tp]), "value": float(test[i_tp])},
        "key_freqs": summary.final_key_freqs,
        "embedding_freqs": summary.final_embedding_freqs,
        "frac_neurons_fve_gt_0.85": float(last["frac_neurons_fve"]),
        "restricted_loss_half_peak_epoch": rest_half,
        "test_loss_half_peak_epoch": test_half,
        "excluded_loss_end_of_memorisation": excl_mem,
        "excluded_loss_max_in_circuit_formation": excl_cf_max,
        "gini_W_E": {"T_mem": at(t_mem, "gini_W_E") if t_mem is not None else None, "final": float(last["gini_W_E"])},
        "gini_W_L": {"T_mem": at(t_mem, "gini_W_L") if t_mem is not None else None, "final": float(last["gini_W_L"])},
        "sq_total": {"T_mem": at(t_mem, "sq_total") if t_mem is not None else None, "final": float(last["sq_total"])},
        "final": summary.final,
        **log,
        "checks": checks,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "canonical_grokking.json").write_text(json.dumps(head, indent=2, default=str) + "\n")
    lines = [
        f"# Canonical run: {run.path}",
        "",
        f"- T_mem {t_mem}, T_grok {t_grok}, trained to epoch {head['epochs_trained']}"
        + (f" in {log['training_seconds']} s" if log else ""),
        f"- phases: memorisation {ph.memorisation}, circuit formation {cf}, cleanup {ph.cleanup}",
        f"- key frequencies {summary.final_key_freqs} (embedding cross-check {summary.final_embedding_freqs}); "
        f"{100 * float(last['frac_neurons_fve']):.1f}% of neurons with FVE > 0.85",
        f"- restricted loss below half its peak at epoch {rest_half}; test loss at {test_half}",
        f"- excluded loss {excl_mem:.3g} at the end of memorisation, up to {excl_cf_max:.3g} in circuit formation",
        f"- Gini W_E {head['gini_W_E']}, Gini W_L {head['gini_W_L']}, sum sq weights {head['sq_total']}",
        "- final: "
        + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.final.items()),
        "",
        "| check | result |",
        "|---|---|",
    ] + [f"| {k} | {'PASS' if v else 'FAIL'} |" for k, v in checks.items()]
    (out / "canonical_grokking.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out / 'canonical_grokking.md'} and {out / 'canonical_grokking.json'}")


if __name__ == "__main__":
    main()
