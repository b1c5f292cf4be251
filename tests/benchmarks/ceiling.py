"""Benchmark: the most an ensemble can gain over single runs, set by its matrix products.

An R-member ensemble does each member's arithmetic; what it saves is per-operation overhead. Its
batch-sized matrix products (``post @ W_L``, its two gradients, the mixing weights' gradient, and
the test pass's forward product) cannot shrink by batching members, so

    ceiling = (a single run's ms per epoch) / (the ensemble's product ms per member-epoch)

bounds the ratio ``sweep.py`` measures, however cheap everything else becomes. For each size (the
sizes of ``sweep.py``), in one process, rounds alternate three measurements and the medians are
reported:

- a single run's steady-state ms per epoch (``train``, everything included: step, optimiser,
  metrics; the difference of a long and a short run, so set-up and the final checkpoint drop out);
- the same for an R-member ensemble (``train_ensemble``), per member-epoch;
- the ensemble's matrix products alone, timed where they run inside its forward and backward (a
  ``TorchDispatchMode``, as ``step_ops.py``), plus one test-set forward every ``--eval-every`` epochs.

    python tests/benchmarks/ceiling.py [--sizes tiny,small,canonical] [--members 32,16,8] [--eval-every 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).parent))
from step_ops import member_pairs, member_stack, step  # noqa: E402
from sweep import SIZES, configs  # noqa: E402

from interp.model.fast import eq_logits  # noqa: E402
from interp.numerics import flush_subnormals, retain_freed_memory, warm_up_vector_math  # noqa: E402
from interp.training.loop import train, train_ensemble  # noqa: E402

PRODUCTS = {
    "aten.bmm.default",
    "aten.baddbmm.default",
    "aten.baddbmm_.default",
    "aten.mm.default",
    "aten.addmm.default",
}
# epochs of the short and long runs whose difference gives the steady-state cost, per size
EPOCHS = {"tiny": (20, 320), "small": (10, 110), "canonical": (4, 24)}
AIMS = {"tiny": 10.0, "small": 3.0, "canonical": 1.0}  # issue 11's ratios at R = 32, 16, 8


class ProductTimer(TorchDispatchMode):
    """Wall time of the matrix products (``PRODUCTS``) among the operations dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.seconds = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) not in PRODUCTS:
            return func(*args, **(kwargs or {}))
        t = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        self.seconds += time.perf_counter() - t
        return out


def steady_ms_per_member_epoch(size: str, R: int, eval_every: int) -> float:
    """Trainer ms per member-epoch without set-up and tear-down: (long - short run time) / extra epochs."""
    times = {}
    for epochs in EPOCHS[size]:
        cfgs = configs(size, R, epochs, eval_every)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            if R == 1:
                train(cfgs[0], Path(tmp) / cfgs[0].run_name, progress=False)
            else:
                train_ensemble(cfgs, [Path(tmp) / c.run_name for c in cfgs])
            times[epochs] = time.perf_counter() - t
    short, long = EPOCHS[size]
    return (times[long] - times[short]) / (long - short) / R * 1e3


def product_ms_per_member_epoch(size: str, R: int, eval_every: int, steps: int = 10) -> float:
    """The products of R members' forward and backward on their train pairs, plus a test forward
    every ``eval_every`` epochs, in ms per member-epoch."""
    P, mcfg, splits = member_stack(configs(size, R, 1, eval_every))
    (a, b, y), (ta, tb, _) = member_pairs(mcfg, splits, "train"), member_pairs(mcfg, splits, "test")

    def epoch(train_timer: ProductTimer, test_timer: ProductTimer) -> None:
        with train_timer:
            step(P, mcfg, a, b, y)
        with test_timer, torch.no_grad():
            eq_logits(P, mcfg, ta, tb)

    epoch(ProductTimer(), ProductTimer())  # warm-up, not counted
    train_timer, test_timer = ProductTimer(), ProductTimer()
    for _ in range(steps):
        epoch(train_timer, test_timer)
    return (train_timer.seconds + test_timer.seconds / eval_every) / steps / R * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="tiny,small,canonical")
    ap.add_argument("--members", default="32,16,8", help="one R per size, in the order of --sizes")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    sizes, members = args.sizes.split(","), [int(r) for r in args.members.split(",")]
    if len(sizes) != len(members) or any(s not in SIZES for s in sizes) or min(members) < 1 or args.rounds < 1:
        sys.exit("ceiling.py: --sizes (tiny, small, canonical) and --members (>= 1) must pair up; --rounds >= 1")
    flush_subnormals()  # as the trainer does, before any tensor work
    warm_up_vector_math()
    retain_freed_memory()
    print(f"torch threads {torch.get_num_threads()}, test metrics every {args.eval_every} epochs; ms per member-epoch")
    print(f"{'size':<10}{'R':>4}{'single':>9}{'ensemble':>10}{'ratio':>7}{'products':>10}{'ceiling':>9}{'aim':>6}")
    for size, R in zip(sizes, members):
        seq, ens, prod = [], [], []
        for _ in range(args.rounds):  # alternated, so a change in the machine's load reaches all three
            seq.append(steady_ms_per_member_epoch(size, 1, args.eval_every))
            ens.append(steady_ms_per_member_epoch(size, R, args.eval_every))
            prod.append(product_ms_per_member_epoch(size, R, args.eval_every))
        s, e, p = (statistics.median(v) for v in (seq, ens, prod))
        print(f"{size:<10}{R:>4}{s:>9.3f}{e:>10.3f}{s / e:>7.2f}{p:>10.3f}{s / p:>9.2f}{AIMS[size]:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
