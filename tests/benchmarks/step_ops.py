"""Benchmark: where an ensemble's forward and backward spend their time, operation by operation.

Trains nothing: builds R members of one size (the sizes of ``sweep.py``), each with its own split
as the trainer makes it, and times the trainer's full-batch step (fast-path forward, float64
loss, backward) first as it runs, then under a ``TorchDispatchMode`` that times every ATen
operation where it runs, inside the step. A profiler's per-operation figures were unreliable on
this machine (it reported 0.9 ms for a ReLU that takes 0.2 ms in the step); the dispatch timer
adds a few microseconds of Python per operation to the total but times each operation itself
in place, with the caches and allocations of the real step.

    python tests/benchmarks/step_ops.py SIZE R [--top 25] [--steps 50]

Prints ms per step, the number of dispatched operations, and the operations taking the most
time, with their input shapes, summed per step.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).parent))
from sweep import SIZES  # noqa: E402

from interp.analysis.losses import run_loss_and_accuracy  # noqa: E402
from interp.config import TrainConfig  # noqa: E402
from interp.model.fast import eq_logits, stack_params  # noqa: E402
from interp.numerics import flush_subnormals, retain_freed_memory, warm_up_vector_math  # noqa: E402
from interp.tasks import labels, make_split  # noqa: E402
from interp.training.loop import build_model  # noqa: E402


class OpTimer(TorchDispatchMode):
    """Wall time and calls of each ATen operation, keyed by name and the shapes of its first two tensor inputs."""

    def __init__(self):
        super().__init__()
        self.seconds: dict = collections.defaultdict(float)
        self.calls: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        t = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        key = (str(func), tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))[:2])
        self.seconds[key] += time.perf_counter() - t
        self.calls[key] += 1
        return out


def member_stack(cfgs: list[TrainConfig]):
    """The members' parameters stacked as the trainer stacks a chunk (leaves that take gradients),
    their model config and their splits (one frac_train: one train and one test length)."""
    P = {n: t.detach().requires_grad_(True) for n, t in stack_params([build_model(c) for c in cfgs]).items()}
    return P, cfgs[0].model_config(), [make_split(c.p, c.frac_train, c.data_seed) for c in cfgs]


def member_pairs(mcfg, splits, which: str = "train"):
    """(a, b, y) of every member's ``which`` pairs, [R, pairs] each."""
    idx = torch.stack([getattr(s, which) for s in splits])
    return idx // mcfg.p, idx % mcfg.p, labels(mcfg.task, mcfg.p)[idx]


def step(P, mcfg, a, b, y) -> None:
    """The trainer's full-batch forward, float64 loss and backward; the gradients are then dropped."""
    loss, _ = run_loss_and_accuracy(eq_logits(P, mcfg, a, b), y)
    loss.sum().backward()
    for t in P.values():
        t.grad = None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("size", choices=list(SIZES))
    ap.add_argument("R", type=int, help="members in one stack (the trainer's chunk)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    if args.R < 1 or args.steps < 1:
        sys.exit("step_ops.py: R and --steps must be >= 1")
    flush_subnormals()  # as the trainer does, before any tensor work
    warm_up_vector_math()
    retain_freed_memory()
    shape = {k: v for k, v in SIZES[args.size].items() if k != "epochs"}
    P, mcfg, splits = member_stack([TrainConfig(run_name=f"m{r}", seed=r, data_seed=r, **shape) for r in range(args.R)])
    a, b, y = member_pairs(mcfg, splits)

    for _ in range(5):
        step(P, mcfg, a, b, y)
    t = time.perf_counter()
    for _ in range(args.steps):
        step(P, mcfg, a, b, y)
    plain = (time.perf_counter() - t) / args.steps * 1e3
    timer = OpTimer()
    with timer:
        for _ in range(args.steps):
            step(P, mcfg, a, b, y)
    n = args.steps
    total = sum(timer.seconds.values()) / n * 1e3
    print(f"{args.size} R = {args.R}: {plain:.2f} ms per forward + backward ({plain / args.R:.3f} per member)")
    print(f"under the timer: {total:.2f} ms in {sum(timer.calls.values()) // n} dispatched operations per step")
    print(f"{'ms/step':>8} {'share':>6} {'calls':>5}  operation and input shapes")
    for key, s in sorted(timer.seconds.items(), key=lambda kv: -kv[1])[: args.top]:
        ms = s / n * 1e3
        print(f"{ms:8.3f} {ms / total:6.1%} {timer.calls[key] // n:5d}  {key[0]} {key[1]}")


if __name__ == "__main__":
    main()
