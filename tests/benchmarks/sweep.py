"""Benchmark: run-epochs per second of an R-member ensemble against the same runs one after another.

For three sizes (canonical p = 113; small p = 59; tiny p = 31, d_model 32) and R in {1, 4, 16, 32},
the ensemble trains R runs (seeds 0..R-1) for a few epochs with ``train_ensemble``; the sequential
baseline trains runs of the same shape one at a time with ``train`` in the same way (all runs of
one shape cost the same per epoch, so the baseline times min(R, 3) of them and reports run-epochs
per second). Both include everything a user pays for: metrics rows, the per-epoch test evaluation,
checkpoints at the end. Each measurement runs in its own process, so the peak memory (max RSS, or
the GPU's peak allocation) belongs to it alone.

    python tests/benchmarks/sweep.py [--sizes canonical,small,tiny] [--members 1,4,16,32] [--device cpu] [--repeats 3]
                                     [--vary seed|weight_decay] [--eval-every N]

``--vary weight_decay`` gives every member its own weight decay, as a sweep over weight decay does
(the optimiser then updates members that differ only in weight decay together, see
``interp.training.optim``); by default members differ in their seed only. ``--eval-every N`` takes
the test metrics every N epochs in both modes (default 1; the ``canonical`` and ``small`` presets,
and so the sweeps built on them, use 10).

Each measurement is taken in ``--repeats`` separate processes and the median is reported.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {
    "canonical": dict(p=113, frac_train=0.3, d_model=128, n_heads=4, d_head=32, d_mlp=512, epochs=12),
    "small": dict(p=59, frac_train=0.4, d_model=64, n_heads=4, d_head=16, d_mlp=256, epochs=40),
    "tiny": dict(p=31, frac_train=0.5, d_model=32, n_heads=2, d_head=16, d_mlp=64, epochs=150),
}


def configs(size: str, R: int, epochs: int, eval_every: int = 1, device: str = "cpu", vary: str = "seed") -> list:
    """R runs of one size (seeds 0..R-1) as the benchmarks train them: no checkpoints but the last."""
    from interp.config import TrainConfig

    shape = {k: v for k, v in SIZES[size].items() if k != "epochs"}
    return [
        TrainConfig(
            run_name=f"b{r}",
            seed=r,
            # a sweep over weight decay: every member its own (0.5, 0.6, ...), as in a delay-law grid
            **({"weight_decay": 0.5 + 0.1 * r} if vary == "weight_decay" else {}),
            epochs=epochs,
            eval_every=eval_every,
            checkpoint_every=10**6,
            log_checkpoints_until=0,
            device=device,
            **shape,
        )
        for r in range(R)
    ]


def one(size: str, R: int, mode: str, device: str, vary: str = "seed", eval_every: int = 1) -> dict:
    import torch

    from interp.training.loop import train, train_ensemble

    epochs = SIZES[size]["epochs"]
    cfgs = configs(size, R, epochs, eval_every, device, vary)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        if mode == "ensemble":
            train_ensemble(cfgs, [Path(tmp) / c.run_name for c in cfgs])
            n = R
        else:
            n = min(R, 3)
            for c in cfgs[:n]:
                train(c, Path(tmp) / c.run_name, progress=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
    peak = (
        torch.cuda.max_memory_allocated()
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {"run_epochs_per_s": n * (epochs + 1) / dt, "seconds": dt, "peak_mb": peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="canonical,small,tiny")
    ap.add_argument("--members", default="1,4,16,32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3, help="processes per measurement; the median is reported")
    ap.add_argument(
        "--vary",
        choices=("seed", "weight_decay"),
        default="seed",
        help="what the members differ in besides the seed (weight_decay: each member its own, as in a sweep)",
    )
    ap.add_argument("--eval-every", type=int, default=1, help="test metrics every N epochs, in both modes")
    ap.add_argument("--one", nargs=3, metavar=("SIZE", "R", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.one[2], args.device, args.vary, args.eval_every)))
        return
    import torch

    print(
        f"device {args.device}, torch threads {torch.get_num_threads()}, members differ in: {args.vary}, "
        f"test metrics every {args.eval_every} epoch(s)"
    )
    print(f"{'size':<10}{'R':>4}{'ensemble run-ep/s':>20}{'sequential run-ep/s':>22}{'ratio':>8}{'peak MB (ens)':>15}")
    results = []
    for size in args.sizes.split(","):
        seq = None
        for R in map(int, args.members.split(",")):
            res = {}
            for mode in ("ensemble", "sequential"):
                if mode == "sequential" and seq is not None:
                    res[mode] = seq  # one shape, one cost per run-epoch: measured once per size
                    continue
                runs = []
                for _ in range(args.repeats):  # a few seconds each: the median of several tames the noise
                    out = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--one",
                            size,
                            str(R),
                            mode,
                            "--device",
                            args.device,
                            "--vary",
                            args.vary,
                            "--eval-every",
                            str(args.eval_every),
                        ],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                res[mode] = sorted(runs, key=lambda r: r["run_epochs_per_s"])[len(runs) // 2]
            seq = res["sequential"]
            ratio = res["ensemble"]["run_epochs_per_s"] / seq["run_epochs_per_s"]
            print(
                f"{size:<10}{R:>4}{res['ensemble']['run_epochs_per_s']:>20.1f}{seq['run_epochs_per_s']:>22.1f}"
                f"{ratio:>8.2f}{res['ensemble']['peak_mb']:>15.0f}",
                flush=True,
            )
            results.append(
                {"size": size, "R": R, **{f"{m}_{k}": v for m in res for k, v in res[m].items()}, "ratio": ratio}
            )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
