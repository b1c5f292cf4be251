"""Full-batch AdamW training with dense, crash-safe checkpoints (REFERENCE §1).

``train(cfg, out_dir)`` trains one run into a run directory (see ``interp.store``). The
training forward is ``last_position_logits`` (only the '=' position is computed); the loss
is a float64 log-softmax because late-training losses reach 1e-7, below float32's resolution
next to 1.

Epoch bookkeeping: the checkpoint of epoch E holds the weights after E optimiser steps, and the
metrics row of epoch E describes those weights. The train forward of epoch E both records the
row and provides the gradient of step E + 1.

The step is written against one model; training many runs at once later means stacking
parameters along a leading ensemble axis (every batch-free table product in
``last_position_logits`` becomes a batched one) without changing the store or the metrics
layout. (torch.func.vmap would need a vmap rule for the fast path's hand-written backward.)
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from interp.analysis import phases
from interp.config import TrainConfig
from interp.errors import InterpError
from interp.model import Transformer, last_position_logits
from interp.store import (
    BASE_METRICS,
    CKPT_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    OPTIMIZER_FILE,
    MetricsWriter,
    Run,
    RunLock,
    load_model_state,
    load_optimizer,
    load_tensors,
    save_checkpoint,
    save_optimizer,
    write_config,
    write_split,
)
from interp.tasks import labels, make_split

GROK_ACC = phases.ACC_THRESHOLD  # T_grok's threshold, defined once in interp.analysis.phases


@dataclass
class Batch:
    a: torch.Tensor
    b: torch.Tensor
    y: torch.Tensor


def make_batches(cfg: TrainConfig, split, device: str) -> tuple[Batch, Batch]:
    p = cfg.p
    y = labels(cfg.task, p)

    def batch(idx: torch.Tensor) -> Batch:
        return Batch((idx // p).to(device), (idx % p).to(device), y[idx].to(device))

    return batch(split.train), batch(split.test)


def loss_and_accuracy(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy (float64 log-softmax) and accuracy."""
    logp = logits.double().log_softmax(-1)
    loss = -logp.gather(-1, y[:, None]).mean()
    acc = (logits.argmax(-1) == y).double().mean()
    return loss, acc


def build_model(cfg: TrainConfig) -> Transformer:
    return Transformer(cfg.model_config()).init_weights(cfg.resolved_init_std, cfg.seed)


def build_optimizer(cfg: TrainConfig, model: Transformer) -> tuple[torch.optim.Optimizer, dict[str, torch.nn.Parameter]]:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # The fused kernel (CPU and CUDA) is the fastest update; like every AdamW implementation it
    # is elementwise and deterministic, so a resumed run stays bit-identical.
    opt = torch.optim.AdamW(
        list(params.values()), lr=cfg.lr, weight_decay=cfg.weight_decay,
        betas=(cfg.beta1, cfg.beta2), fused=True,
    )
    return opt, params


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of optimiser step ``step`` (1-based): optional linear warm-up, then constant."""
    if cfg.warmup_steps > 0:
        return cfg.lr * min(1.0, step / cfg.warmup_steps)
    return cfg.lr


def retain_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of handing it back to the kernel (Linux only).

    A training step allocates and frees a few dozen tensors of 1-20 MB. By default glibc maps
    such blocks fresh from the kernel and unmaps them on free, so every step pays page faults
    and page zeroing on ~100 MB (measured: 12% of the canonical step on 2 cores). Raising the
    mmap threshold to its maximum (32 MB) and the trim threshold to 1 GB makes freed blocks
    reusable. The cost is that the process keeps its peak heap; called by ``train`` only.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): keep the default
        pass


def resolve_device(name: str) -> str:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InterpError(f"device {name!r} requested but CUDA is not available")
    return name


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    max_epochs_this_call: Optional[int] = None,
    overrides: Optional[dict] = None,
) -> Run:
    """Train ``cfg`` into ``out_dir`` (new run) or continue it (``resume=True``).

    ``max_epochs_this_call`` stops early without marking the run complete (used by tests
    that simulate interruptions).
    """
    out = Path(out_dir)
    if resume:
        run = Run.open(out)
        cfg = run.config
        if overrides:
            # only fields outside the config hash may change, so every saved checkpoint stays valid
            cfg = dataclasses.replace(cfg, **overrides).validate()
            if cfg.config_hash() != run.config.config_hash():
                raise InterpError(f"{out}: these changes would alter the run's trajectory; start a new run instead")
    else:
        cfg.validate()
        if out.exists() and any(out.iterdir()):
            raise InterpError(f"{out} already exists and is not empty; use --resume to continue it or choose another --out")
    device = resolve_device(cfg.device)
    retain_freed_memory()
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        if resume and overrides:
            write_config(out, cfg)
        return _train_locked(cfg, out, resume, device, progress, max_epochs_this_call)


def _train_locked(cfg, out: Path, resume: bool, device: str, progress: bool, max_epochs_this_call) -> Run:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    opt, params = build_optimizer(cfg, model)
    names = {id(p): n for n, p in params.items()}
    all_names = [n for n, _ in model.named_parameters()]
    columns = BASE_METRICS + [f"sq_{n}" for n in all_names]

    if not resume:
        split = make_split(cfg.p, cfg.frac_train, cfg.data_seed)
        write_split(out, split)
        (out / CKPT_DIR).mkdir(exist_ok=True)
        metrics = MetricsWriter(out / METRICS_FILE, columns)
        start = 0
        write_config(out, cfg)
    else:
        run = Run.open(out)
        split = run.split
        metrics_path = out / METRICS_FILE
        if not (out / OPTIMIZER_FILE).exists():
            # killed before the first checkpoint completed: start over in place
            start = 0
            if metrics_path.exists():
                metrics_path.unlink()
        else:
            # The optimizer file is written after its checkpoint, so its epoch is always resumable.
            start = load_optimizer(out, opt, params)
            state, _ = load_tensors(run.checkpoint_path(start))
            load_model_state(model, state, str(run.checkpoint_path(start)))
        metrics = MetricsWriter(metrics_path, columns)

    model.to(device)
    for st in opt.state.values():
        for k, v in st.items():
            if torch.is_tensor(v):
                st[k] = v.to(device)
    train_b, test_b = make_batches(cfg, split, device)
    schedule = set(cfg.checkpoint_epochs())
    grok_epoch = _first_grok_epoch(out / METRICS_FILE) if resume else None
    final_epoch = _final_epoch(cfg, grok_epoch)
    if resume:
        if start >= final_epoch and _last_logged_epoch(out / METRICS_FILE) == final_epoch:
            return Run.open(out)  # already complete: touch nothing
        # rows past the resume point belong to the interrupted call; row `start` is recomputed
        metrics.truncate_to(start)

    all_params = list(model.named_parameters())
    bar = tqdm(total=final_epoch, initial=start, disable=not progress, unit="ep", dynamic_ncols=True,
               desc=cfg.run_name)
    t0 = time.perf_counter()
    epoch = start
    stop_here = None if max_epochs_this_call is None else start + max_epochs_this_call
    while True:
        train_logits = last_position_logits(model, train_b.a, train_b.b)
        train_loss, train_acc = loss_and_accuracy(train_logits, train_b.y)
        with torch.no_grad():
            test_loss, test_acc = loss_and_accuracy(last_position_logits(model, test_b.a, test_b.b), test_b.y)
            sq = torch.stack([p.detach().double().pow(2).sum() for _, p in all_params])
            row = torch.cat([torch.stack([train_loss.detach(), test_loss, train_acc, test_acc, sq.sum()]), sq]).tolist()
        metrics.add([epoch] + row)
        if grok_epoch is None and row[3] >= GROK_ACC:
            grok_epoch = epoch
            final_epoch = _final_epoch(cfg, grok_epoch)
            bar.total = final_epoch
        if epoch in schedule or epoch == final_epoch:
            save_checkpoint(out, epoch, model, cfg)
            save_optimizer(out, epoch, opt, names, cfg)
            metrics.flush()
        if epoch % 10 == 0 or epoch == final_epoch:
            bar.set_postfix(train=f"{row[0]:.2e}", test=f"{row[1]:.2e}", test_acc=f"{row[3]:.3f}", refresh=False)
            bar.n = epoch
            bar.refresh()
        if epoch >= final_epoch or (stop_here is not None and epoch >= stop_here):
            break
        epoch += 1
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, epoch)
        train_loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    metrics.flush()
    bar.close()
    dt = time.perf_counter() - t0
    _log_call(out, start, epoch, dt, device)
    if progress:
        print(f"{cfg.run_name}: epochs {start}..{epoch} in {dt:.1f} s ({1000 * dt / max(1, epoch - start):.1f} ms/epoch) -> {out}")
    return Run.open(out)


def _log_call(out: Path, start: int, end: int, seconds: float, device: str) -> None:
    """Append this call's wall time to training_log.jsonl (how long a run took, across resumes)."""
    import json

    entry = {"start_epoch": start, "end_epoch": end, "seconds": round(seconds, 2),
             "ms_per_epoch": round(1000 * seconds / max(1, end - start), 2), "device": device,
             "threads": torch.get_num_threads(), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(out / "training_log.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _final_epoch(cfg: TrainConfig, grok_epoch: Optional[int]) -> int:
    if cfg.stop_after_grok is not None and grok_epoch is not None:
        return min(cfg.epochs, grok_epoch + cfg.stop_after_grok)
    return cfg.epochs


def _last_logged_epoch(path: Path) -> Optional[int]:
    if not path.exists():
        return None
    lines = path.read_text().rstrip("\n").splitlines()
    try:
        return int(lines[-1].split(",")[0]) if len(lines) > 1 else None
    except ValueError:
        return None


def _first_grok_epoch(path: Path) -> Optional[int]:
    if not path.exists():
        return None
    import pandas as pd

    return first_epoch_reaching(pd.read_csv(path), "test_acc")


def first_epoch_reaching(df, column: str, threshold: float = GROK_ACC) -> Optional[int]:
    """First logged epoch whose ``column`` is >= threshold (T_mem / T_grok, REFERENCE §5), or None."""
    return phases.first_epoch_reaching(df["epoch"], df[column], threshold)