"""Benchmark: what the default training probes cost, as a percentage of epoch time.

Trains the same run with ``probes="default"`` and ``probes="none"`` through the real trainer
(``interp.training.train``), alternating the two for several rounds in one process, and reports
the median ms per epoch of each (from the run's training_log.jsonl) and the overhead. The probes
run every ``probe_every`` epochs (default 10), so this measures their amortised cost.

Usage: python tests/benchmarks/probes.py [--preset canonical] [--epochs 300] [--rounds 3] [--probe-every 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from interp.config import preset
from interp.store import TRAINING_LOG_FILE
from interp.training.loop import train


def ms_per_epoch(cfg, root: Path, tag: str) -> float:
    run = train(cfg, root / tag, progress=False)
    entry = json.loads((run.path / TRAINING_LOG_FILE).read_text().splitlines()[-1])
    return entry["ms_per_epoch"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="canonical")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--probe-every", type=int, default=10)
    args = ap.parse_args()
    base = dict(epochs=args.epochs, checkpoint_every=args.epochs, log_checkpoints_until=0, stop_after_grok=None)
    times: dict[str, list[float]] = {"none": [], "default": []}
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.rounds):
            for probes in ("none", "default"):
                cfg = preset(args.preset, probes=probes, probe_every=args.probe_every, **base)
                times[probes].append(ms_per_epoch(cfg, Path(d), f"{probes}{i}"))
    off, on = statistics.median(times["none"]), statistics.median(times["default"])
    print(f"{args.preset}, {args.epochs} epochs x {args.rounds} rounds, probes every {args.probe_every} epochs")
    print(f"probes off: {off:.2f} ms/epoch  {times['none']}")
    print(f"probes on:  {on:.2f} ms/epoch  {times['default']}")
    print(f"overhead: {100 * (on - off) / off:+.1f}% of epoch time")


if __name__ == "__main__":
    main()
