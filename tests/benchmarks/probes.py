"""Benchmark: what the training probes cost, as a percentage of epoch time.

Trains the same run with no probes, with each probe alone and with the default set, through the
real trainer (``interp.training.train``), interleaving the settings for several rounds in one
process, and reports the median ms per epoch of each (from the run's training_log.jsonl) and its
overhead over no probes. Probes run every ``probe_every`` epochs (default 10), so this measures
their amortised cost.

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
from interp.training.probes import PROBES


def ms_per_epoch(cfg, root: Path, tag: str) -> float:
    run = train(cfg, root / tag, progress=False)
    entry = json.loads((run.path / TRAINING_LOG_FILE).read_text().splitlines()[-1])
    return entry["ms_per_epoch"]


def component_ms(preset_name: str, n: int = 50) -> dict[str, float]:
    """ms per call of each probe's computation on one model of the preset (what a probing epoch adds)."""
    import time

    import torch

    from interp.training import probes as pr
    from interp.training.loop import build_model

    cfg = preset(preset_name)
    P = {k: t.detach()[None].clone().requires_grad_(t.requires_grad) for k, t in build_model(cfg).named_parameters()}
    for t in P.values():
        if t.requires_grad:
            t.grad = torch.randn_like(t)
    trainable = {k: t for k, t in P.items() if t.requires_grad}
    calls = {
        "grad_norm": lambda: pr.grad_norms(trainable),
        "update_ratio": lambda: pr.update_ratio({k: t.detach().clone() for k, t in P.items()}, P),
        "loss_hjorth": lambda: pr.hjorth([float(i) for i in range(cfg.probe_window)]),
        "fourier_gini": lambda: pr.fourier_ginis(P, cfg.task, cfg.p),
    }
    out = {}
    for name, f in calls.items():
        f()
        t = time.perf_counter()
        for _ in range(n):
            f()
        out[name] = (time.perf_counter() - t) / n * 1000
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="canonical")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--probe-every", type=int, default=10)
    args = ap.parse_args()
    base = dict(epochs=args.epochs, checkpoint_every=args.epochs, log_checkpoints_until=0, stop_after_grok=None)
    settings = ["none", *PROBES, "default"]
    times: dict[str, list[float]] = {k: [] for k in settings}
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.rounds):
            for probes in settings:
                cfg = preset(args.preset, probes=probes, probe_every=args.probe_every, **base)
                times[probes].append(ms_per_epoch(cfg, Path(d), f"{probes}{i}"))
    off = statistics.median(times["none"])
    parts = component_ms(args.preset)
    total = sum(parts.values())
    print(
        "per probing epoch: "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in parts.items())
        + f"; all {total:.2f} ms = {100 * total / args.probe_every / off:.1f}% of an epoch amortised"
    )
    print(f"{args.preset}, {args.epochs} epochs x {args.rounds} rounds, probes every {args.probe_every} epochs")
    for k in settings:
        on = statistics.median(times[k])
        print(f"{k:<14} {on:7.2f} ms/epoch  overhead {100 * (on - off) / off:+5.1f}%  {times[k]}")


if __name__ == "__main__":
    main()
