"""``interp analyze RUN``: progress measures at every checkpoint, key frequencies and phases.

Registered by ``interp.cli``; errors are ``InterpError`` (one line, non-zero exit).
"""

from __future__ import annotations

import argparse
import json


def _fmt_epoch(e) -> str:
    return "not reached" if e is None else str(e)


def _fmt_interval(iv) -> str:
    return "-" if iv is None else f"{iv[0]} .. {iv[1]}"


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import TABLE_FILE, json_safe, analyze

    table, s = analyze(args.run, key_freqs=args.key_freqs, progress=not (args.json or args.no_progress),
                       recompute=args.recompute)
    if args.json:
        print(json.dumps(json_safe(s.to_dict()), indent=2))
        return 0
    ph = s.phases
    f = s.final
    print(f"run              {s.run}  ({s.task} mod {s.p}; {s.n_checkpoints} checkpoints, epochs "
          f"{s.first_epoch}..{s.final_epoch}; {s.computed} analysed now)")
    print(f"key frequencies  {', '.join(map(str, s.key_freqs)) or 'none'}  ({s.key_freqs_source})")
    if s.key_freqs_source == "user":
        print(f"                 final checkpoint's own: {', '.join(map(str, s.final_key_freqs)) or 'none'}")
    agree = set(s.final_embedding_freqs) == set(s.final_key_freqs)
    print(f"embedding check  {', '.join(map(str, s.final_embedding_freqs)) or 'none'}  "
          f"({'agrees' if agree else 'differs from the neuron clusters'})")
    print(f"T_mem            {_fmt_epoch(ph.t_mem)}  (train acc >= 0.99)")
    print(f"T_grok           {_fmt_epoch(ph.t_grok)}  (test acc >= 0.99)")
    print(f"memorisation     {_fmt_interval(ph.memorisation)}")
    print(f"circuit form.    {_fmt_interval(ph.circuit_formation)}")
    print(f"cleanup          {_fmt_interval(ph.cleanup)}")
    for n in ph.notes:
        print(f"note             {n}")
    print(f"final            train loss {f['train_loss']:.3e}  test loss {f['test_loss']:.3e}  "
          f"test acc {f['test_acc']:.4f}")
    print(f"                 restricted loss {f['restricted_loss']:.3e}  excluded loss {f['excluded_loss']:.3e}")
    if f["excluded_loss_per_freq"]:
        per = "  ".join(f"k={k}: {v:.3e}" for k, v in f["excluded_loss_per_freq"].items())
        print(f"                 excluded loss per frequency  {per}")
    print(f"                 Gini W_E {f['gini_W_E']:.3f}  W_L {f['gini_W_L']:.3f}  neurons FVE>0.85 "
          f"{f['frac_neurons_fve']:.1%}  sum sq weights {f['sq_total']:.1f}")
    print(f"table            {s.run}/{TABLE_FILE}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="progress measures, key frequencies and phases of every checkpoint")
    p.add_argument("run", help="run directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON only")
    p.add_argument("--key-freqs", metavar="K1,K2,...",
                   help="frequencies for restricted/excluded loss (default: the final checkpoint's key frequencies)")
    p.add_argument("--recompute", action="store_true", help="ignore the saved table and analyse every checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_analyze)
