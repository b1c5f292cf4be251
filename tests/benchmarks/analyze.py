"""Seconds to analyse every checkpoint of a run (interp.analysis.analyze), total and per checkpoint.

    python tests/benchmarks/analyze.py RUN            # a run directory (e.g. checkpoints/canonical)
    python tests/benchmarks/analyze.py --synthetic 250 # 250 random-init canonical-size checkpoints

The whole analysis is timed (loading and verifying each checkpoint, all progress measures, the
phases), recomputing every checkpoint and not writing the table. A second line splits off the
time spent loading checkpoints. Threads: torch's default (all cores) unless --threads is given.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch


def make_synthetic_run(out: Path, n: int) -> Path:
    """A run directory with ``n`` checkpoints of randomly initialised canonical models."""
    from interp.config import TrainConfig
    from interp.model import Transformer
    from interp.store import save_checkpoint, write_config, write_split
    from interp.tasks import make_split

    cfg = TrainConfig(run_name="synthetic", epochs=max(1, n - 1), checkpoint_every=1, log_checkpoints_until=0)
    out.mkdir(parents=True, exist_ok=True)
    write_config(out, cfg)
    write_split(out, make_split(cfg.p, cfg.frac_train, cfg.data_seed))
    model = Transformer(cfg.model_config())
    for e in range(n):
        model.init_weights(0.8 / math.sqrt(cfg.d_model), seed=e)
        save_checkpoint(out, e, model, cfg)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", help="run directory")
    ap.add_argument("--synthetic", type=int, metavar="N", help="build N random canonical checkpoints and time those")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from interp.analysis.run_table import analyze
    from interp.store import Run

    tmp = None
    if args.synthetic:
        tmp = tempfile.TemporaryDirectory()
        path = make_synthetic_run(Path(tmp.name) / "synthetic", args.synthetic)
    elif args.run:
        path = Path(args.run)
    else:
        ap.error("give a RUN directory or --synthetic N")
    run = Run.open(path)
    epochs = run.checkpoint_epochs()
    # warm-up (first-call costs of torch / pandas) on one checkpoint, not timed
    analyze(run, progress=False, save=False, key_freqs=None) if len(epochs) == 1 else None
    t0 = time.perf_counter()
    table, summary = analyze(run, progress=False, recompute=True, save=False)
    total = time.perf_counter() - t0
    t1 = time.perf_counter()
    for e in epochs:
        run.load_state_dict(e)
    load = time.perf_counter() - t1
    n = len(epochs)
    print(
        f"run {path}: {n} checkpoints, p={run.config.p}, d_model={run.config.d_model}, d_mlp={run.config.d_mlp}, "
        f"threads={torch.get_num_threads()}"
    )
    print(f"analyse all checkpoints: {total:.2f} s total, {1000 * total / n:.1f} ms per checkpoint")
    print(f"  of which loading + verifying checkpoints: {load:.2f} s ({1000 * load / n:.1f} ms per checkpoint)")
    print(f"key frequencies {summary.key_freqs}; T_mem {summary.t_mem}; T_grok {summary.t_grok}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
