"""Benchmark: ms per training step, project fast path vs a plain TransformerBridge loop.

Both run the canonical configuration (p = 113, 3830 training pairs, d_model 128, d_mlp 512),
full batch, AdamW (lr 1e-3, wd 1.0, betas (0.9, 0.98)), float64 log-softmax loss, in one
process on the same data. The project step is `interp.training.loop`'s for an ensemble of one: `eq_logits`
forward, float64 loss, backward, the per-member fused AdamW step. The bridge step runs `TransformerBridge.boot_native(cfg)` on
the full [a, b, =] sequences and reads the last position.

Usage: python tests/benchmarks/train_step.py [--steps N] [--rounds R] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from interp.analysis.losses import run_loss_and_accuracy
from interp.config import TrainConfig
from interp.legacy import to_bridge
from interp.model.fast import eq_logits, stack_params
from interp.numerics import retain_freed_memory
from interp.tasks import labels, make_split
from interp.training.loop import build_model
from interp.training.optim import EnsembleOptimizer, MemberOptim


def time_block(step, n: int, device: str) -> float:
    """Mean ms per step over ``n`` consecutive steps."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30, help="project steps per round (bridge: a third)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    cfg = TrainConfig(device=args.device)
    retain_freed_memory()  # as `interp.training.train` does; applies to both loops
    dev = args.device
    split = make_split(cfg.p, cfg.frac_train, cfg.data_seed)
    y_all = labels(cfg.task, cfg.p)
    idx = split.train
    a, b, y = (idx // cfg.p).to(dev), (idx % cfg.p).to(dev), y_all[idx].to(dev)
    tokens = torch.stack([a, b, torch.full_like(a, cfg.p)], dim=1)

    # the trainer's step (interp.training.loop) for an ensemble of one: stacked leaves, the fast
    # path, the float64 loss, the per-member fused AdamW
    model = build_model(cfg)
    trainable = {n for n, t in model.named_parameters() if t.requires_grad}
    P = {n: t.detach().to(dev).requires_grad_(n in trainable) for n, t in stack_params([model]).items()}
    opt = EnsembleOptimizer(
        {n: P[n] for n in trainable}, [MemberOptim("adamw", cfg.beta1, cfg.beta2, cfg.weight_decay)]
    )
    mcfg = cfg.model_config()

    def project_step():
        loss, _ = run_loss_and_accuracy(eq_logits(P, mcfg, a[None], b[None]), y[None])
        loss.sum().backward()
        opt.step([cfg.lr])

    bridge = to_bridge(build_model(cfg)).to(dev)
    bridge.train()
    bopt = torch.optim.AdamW(
        bridge.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(cfg.beta1, cfg.beta2)
    )

    def bridge_step():
        logits = bridge(tokens)[:, -1]
        loss = -logits.double().log_softmax(-1).gather(-1, y[:, None]).mean()
        loss.backward()
        bopt.step()
        bopt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        project_step()
        bridge_step()
    # Alternate the two loops in rounds and report medians: on a shared or virtualised machine
    # the speed drifts over seconds, which would bias a ratio of two back-to-back averages.
    ours_r, theirs_r = [], []
    for _ in range(args.rounds):
        ours_r.append(time_block(project_step, args.steps, dev))
        theirs_r.append(time_block(bridge_step, max(5, args.steps // 3), dev))
    ours, theirs = statistics.median(ours_r), statistics.median(theirs_r)
    res = {
        "device": dev,
        "threads": torch.get_num_threads(),
        "project_ms_per_step": round(ours, 2),
        "bridge_ms_per_step": round(theirs, 2),
        "speedup": round(theirs / ours, 2),
        "project_rounds": [round(x, 2) for x in ours_r],
        "bridge_rounds": [round(x, 2) for x in theirs_r],
    }
    print(f"project step : {ours:8.2f} ms  (median of {args.rounds} rounds, {min(ours_r):.2f}-{max(ours_r):.2f})")
    print(f"bridge step  : {theirs:8.2f} ms  (median of {args.rounds} rounds, {min(theirs_r):.2f}-{max(theirs_r):.2f})")
    print(f"ratio        : {theirs / ours:8.2f}x")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
