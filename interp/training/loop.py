"""The trainer: R >= 1 runs in one process, each writing an ordinary run directory (REFERENCE §1).

``train(cfg, out_dir)`` trains one run; ``train_ensemble(cfgs, out_dirs)`` trains several runs of
one shape at once. There is one training loop: a single run is an ensemble of one.

Members of an ensemble share the model's shape, the device and the checkpoint schedule
(``ensemble_key``) and may differ in everything else: seeds, split (``data_seed``,
``frac_train``: each member's pairs are padded to the longest and masked), init, optimiser and its
hyperparameters, warm-up, epochs and ``stop_after_grok``. Their parameters are stacked along a
leading run axis and go through the one fast path (``interp.model.fast.eq_logits``) together; the
optimiser applies each member's own settings (``interp.training.optim``). A member that finishes
is dropped from the stacks, so it stops costing compute. On CPU, large members go through the
forward and backward a chunk of members at a time (``members_per_chunk``): memory traffic, not
per-call overhead, bounds them there, and a chunk is an ensemble of its own.

Epoch bookkeeping: the checkpoint of epoch E holds the weights after E optimiser steps, and the
metrics row of epoch E describes those weights. The train forward of epoch E both records the
row and provides the gradient of step E + 1 (its backward follows at once, while the
activations are still in cache). Test metrics are computed every ``eval_every``
epochs, at every checkpoint and at the last epoch (other rows leave them empty); T_grok is the
first evaluated epoch with test accuracy >= 0.99, so its resolution is ``eval_every``.

Minibatches (``batch_size``, REFERENCE §5's setup): each epoch is one optimiser step on
``batch_size`` train pairs drawn with replacement (``batch_rows``: seeded by the run's seeds and
the step, so resume and ensembles draw what a single uninterrupted run draws). Train loss and
accuracy are then measured on the whole train set at evaluated epochs, like the test metrics, so
T_mem keeps its meaning; other rows leave them empty. Grokfast filters (``grokfast``) act on the
gradient between backward and the update (``interp.training.optim.GrokfastFilter``).

The loss (``interp.analysis.losses``) keeps the precision of a float64 log-softmax because
late-training losses reach 1e-7, below float32's resolution next to 1.

Resume: each member continues from its own newest optimiser file. After a crash members may
stand at different epochs; the ones behind train on their own until they reach the others, then
all continue together. A single run is bit-identical to the earlier single-model trainer on CPU
(same kernels), and a resumed run to an uninterrupted one.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from interp.analysis import phases
from interp.analysis.losses import run_loss_and_accuracy
from interp.config import TrainConfig, resolve_device
from interp.errors import InterpError
from interp.model import Transformer
from interp.model.fast import eq_logits
from interp.numerics import flush_subnormals, retain_freed_memory, warm_up_vector_math
from interp.store import (
    BASE_METRICS,
    CKPT_DIR,
    METRICS_FILE,
    OPTIMIZER_FILE,
    STOPPED_FILE,
    TRAINING_LOG_FILE,
    MetricsWriter,
    Run,
    RunLock,
    atomic_write_bytes,
    load_tensors,
    new_run_dir,
    remove_stale_temp_files,
    save_checkpoint,
    save_tensors,
    verify_resumable,
    write_config,
    write_split,
)
from interp.tasks import labels, make_split
from interp.training import probes as probing
from interp.training.optim import EnsembleOptimizer, MemberFilter, MemberOptim, project_norm, squared_norms

GROK_ACC = phases.ACC_THRESHOLD  # T_grok's threshold, defined once in interp.analysis.phases

# What members of one ensemble must share: the model's shape, where it runs, when it checkpoints.
ENSEMBLE_FIELDS = (
    "task",
    "p",
    "d_model",
    "n_heads",
    "d_head",
    "d_mlp",
    "act_fn",
    "train_biases",
    "device",
    "checkpoint_every",
    "log_checkpoints_until",
    "eval_every",
    "batch_size",  # full batch and minibatch members step differently
)


def ensemble_key(cfg: TrainConfig) -> tuple:
    """Runs with equal keys can be trained as one ensemble."""
    return tuple(getattr(cfg, f) for f in ENSEMBLE_FIELDS)


def build_model(cfg: TrainConfig) -> Transformer:
    """The model at epoch 0: every weight ~ N(0, init_std^2), biases zero, then times ``init_scale`` (REFERENCE §4)."""
    model = Transformer(cfg.model_config()).init_weights(cfg.resolved_init_std, cfg.seed)
    if cfg.init_scale != 1.0:
        with torch.no_grad():
            for prm in model.parameters():
                prm.mul_(cfg.init_scale)
    return model


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of optimiser step ``step`` (1-based): optional linear warm-up, then constant."""
    if cfg.warmup_steps > 0:
        return cfg.lr * min(1.0, step / cfg.warmup_steps)
    return cfg.lr


BATCH_BLOCK = 128  # optimiser steps whose minibatches are drawn together


def batch_rows(cfg: TrainConfig, n_train: int, block: int) -> Int[Tensor, "step batch"]:
    """Rows of the train set that steps ``block * BATCH_BLOCK + 1 ..`` use: ``batch_size`` each, with replacement.

    The draw depends only on the run's seeds and the block number (a generator seeded from
    ``seed``, ``data_seed`` and ``block``), so a resumed run draws the batches an uninterrupted one
    draws, and a member of an ensemble the ones it would draw alone.
    """
    digest = hashlib.sha256(f"batches:{cfg.seed}:{cfg.data_seed}:{block}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    u = torch.rand(BATCH_BLOCK, cfg.batch_size, generator=gen, dtype=torch.float64)
    return (u * n_train).long().clamp_(max=n_train - 1)


# On CPU, members go through the forward and backward a chunk at a time, so that one chunk's
# activations ([members, pairs, d_mlp + d_vocab] float32) stay near this size: measured at the
# canonical size, an 8-member stack cost 52 ms per member-step against 36-39 ms for one member
# alone (memory traffic), while tiny and small members gain from large stacks (per-call overhead).
# Each chunk is an ensemble of its own, which trains its members bit-identically to single runs.
CHUNK_BYTES = 48 << 20


def even_chunk_size(n: int, most: int) -> int:
    """Size of the chunks that split ``n`` items into as few chunks of at most ``most`` as possible,
    all of (nearly) equal size: 32 at most 10 a chunk go as 8, 8, 8, 8, not 10, 10, 10, 2, whose
    small last chunk would cost nearly as much per member as single runs."""
    return math.ceil(n / math.ceil(n / most))


def members_per_chunk(mcfg, device: str) -> int:
    """How many members go through one forward and backward together (all of them on a GPU)."""
    if not device.startswith("cpu"):
        return 1 << 30
    per_member = mcfg.p**2 * (mcfg.d_mlp + mcfg.d_vocab_out) * 4
    return max(1, CHUNK_BYTES // per_member)


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    resume: bool = False,
    progress: bool = True,
    max_epochs_this_call: Optional[int] = None,
    overrides: Optional[dict] = None,
    forecast=None,
) -> Run:
    """Train ``cfg`` into ``out_dir`` (new run) or continue it (``resume=True``; ``cfg`` is then read from it).

    ``overrides``: on resume, fields outside the config hash to change (``epochs``,
    ``stop_after_grok``, ``device``, ``eval_every``). ``max_epochs_this_call`` stops early without
    marking the run complete (used by tests that simulate interruptions). ``forecast``: a
    ``interp.theory.forecast.Calibration``; the progress bar then shows the forecast T_grok.
    """
    flush_subnormals()  # before any tensor work starts torch's thread pool
    out = Path(out_dir)
    # --- run-directory checks, defined in interp.store (issue 15) ---------------------------
    # resume: verify_resumable reads only (config types, overrides, --epochs, checkpoint and
    # optimizer integrity and config, metrics history) so a refused resume changes nothing; new
    # run: new_run_dir refuses files and foreign directories, reuses an unstarted leftover and
    # takes the directory back if training fails before anything was trained.
    if resume:
        cfg, _ = verify_resumable(out, overrides)
        guard = contextlib.nullcontext()
    else:
        cfg.validate()
        guard = new_run_dir(out)
    # ------------------------------------------------------------------------------------------
    with guard:
        bar = _RunBar(cfg, progress, out, forecast)
        runs = train_ensemble(
            [cfg], [out], resume=resume, on_progress=bar, max_epochs_this_call=max_epochs_this_call, report=progress
        )
        bar.close()
    return runs[0]


class _RunBar:
    """The single-run progress bar: epochs, train/test loss and test accuracy; with a forecast
    calibration, the forecast T_grok once the run has memorised (``interp.theory.forecast``)."""

    def __init__(self, cfg: TrainConfig, enabled: bool, out: Optional[Path] = None, forecast=None):
        self.bar = tqdm(total=cfg.epochs, disable=not enabled, unit="ep", dynamic_ncols=True, desc=cfg.run_name)
        self.out = out
        self.live = None
        if forecast is not None and enabled:
            from interp.theory.forecast import LiveForecaster

            self.live = LiveForecaster(forecast)

    def __call__(self, event: "ProgressEvent") -> None:
        if event.kind == "start":
            self.bar.n = event.epoch
            self.bar.total = event.final_epoch
        elif event.kind == "epoch":
            f = self.live.update(self.out, event.row) if self.live is not None else None
            if event.epoch % 10 == 0 or event.epoch == event.final_epoch:
                self.bar.total = event.final_epoch
                row = event.row
                post = dict(train=f"{row[1]:.2e}", test=f"{row[2]:.2e}", test_acc=f"{row[4]:.3f}")
                if f is not None:
                    post["T_grok"] = "never" if f.t_grok is None else f"~{f.t_grok:,.0f}"
                self.bar.set_postfix(**post, refresh=False)
                self.bar.n = event.epoch
                self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


@dataclass
class ProgressEvent:
    """What the trainer reports: ``start`` (a member begins at ``epoch``), ``epoch`` (a member's
    row of ``epoch``), ``done`` (a member finished its run or this call)."""

    kind: str
    member: int
    epoch: int
    final_epoch: int
    row: Optional[list[float]] = None
    grok_epoch: Optional[int] = None
    complete: bool = False
    # set by a handler of an "epoch" event: stop this member here (saved, marked stopped: STOPPED_FILE)
    stop: Optional[str] = None


@dataclass
class _Pairs:
    """Each member's pairs, padded to the longest with pair 0; ``lengths``: real rows per member (None: no padding).

    ``chunks``: (first member, end, the chunk's pairs), members ``chunk`` at a time; the views are
    made once, so the fast path's cache of table rows (keyed on the index tensors) holds across epochs.
    """

    a: Int[Tensor, "run batch"]
    b: Int[Tensor, "run batch"]
    y: Int[Tensor, "run batch"]
    lengths: Optional[list[int]]
    chunks: list = field(default_factory=list)

    @classmethod
    def stack(cls, idx: Sequence[Tensor], ys: Sequence[Tensor], p: int, device: str, chunk: int) -> "_Pairs":
        n = max(len(i) for i in idx)
        padded = torch.zeros(len(idx), n, dtype=torch.long)
        y = torch.zeros(len(idx), n, dtype=torch.long)
        for r, (i, yr) in enumerate(zip(idx, ys)):
            padded[r, : len(i)] = i
            y[r, : len(i)] = yr[i]
        lengths = [len(i) for i in idx]
        out = cls(
            (padded // p).to(device), (padded % p).to(device), y.to(device), None if min(lengths) == n else lengths
        )
        size = even_chunk_size(len(idx), chunk)
        for lo in range(0, len(idx), size):
            hi = min(len(idx), lo + size)
            part = None if min(lengths[lo:hi]) == n else lengths[lo:hi]
            out.chunks.append((lo, hi, cls(out.a[lo:hi], out.b[lo:hi], out.y[lo:hi], part)))
        return out


@dataclass(eq=False)  # identity: members are looked up in lists every epoch, and field-wise == compares tensors
class _Member:
    """One run of the ensemble: its directory, metrics writer and position in training."""

    cfg: TrainConfig
    out: Path
    metrics: MetricsWriter
    train_idx: Tensor
    test_idx: Tensor
    y: Tensor
    schedule: set[int]
    epoch: int
    start: int
    grok_epoch: Optional[int]
    state: dict[str, Tensor]  # weights while not stacked
    opt_state: dict[str, Tensor]  # optimiser state while not stacked ({} before the first step)
    target_norm: Optional[float] = None
    probes: tuple[str, ...] = ()
    trainable: list[str] = field(default_factory=list)
    probe_layout: list = field(default_factory=list)  # (probe, its metrics columns), in column order
    losses: collections.deque = field(default_factory=collections.deque)  # trailing train losses (Hjorth)
    step_probes: dict = field(default_factory=dict)  # epoch -> {column: value} measured at the step into it
    stop_here: Optional[int] = None
    done: bool = False
    t0: float = field(default_factory=time.perf_counter)

    @property
    def final_epoch(self) -> int:
        if self.cfg.stop_after_grok is not None and self.grok_epoch is not None:
            return min(self.cfg.epochs, self.grok_epoch + self.cfg.stop_after_grok)
        return self.cfg.epochs

    @property
    def stops_at(self) -> int:
        return self.final_epoch if self.stop_here is None else min(self.final_epoch, self.stop_here)

    def optim(self) -> MemberOptim:
        wd = self.cfg.weight_decay
        return MemberOptim(self.cfg.optimizer, self.cfg.beta1, self.cfg.beta2, wd)

    @property
    def update_group(self) -> tuple:
        """What decides the optimiser update besides the weights: members equal here step together, and
        AdamW members that differ only in weight decay too (weight decay last, so they stand together)."""
        c = self.cfg
        return (c.optimizer, c.beta1, c.beta2, c.lr, c.warmup_steps, c.weight_decay)

    def filter(self) -> MemberFilter:
        c = self.cfg
        return MemberFilter(c.grokfast, c.grokfast_alpha, c.resolved_grokfast_lamb, c.grokfast_window)

    def probes_at(self, epoch: int) -> bool:
        return bool(self.probes) and epoch % self.cfg.probe_every == 0

    def evaluates(self, epoch: int) -> bool:
        return epoch % self.cfg.eval_every == 0 or epoch in self.schedule or epoch >= self.final_epoch


def train_ensemble(
    cfgs: Sequence[TrainConfig],
    out_dirs: Sequence[str | os.PathLike],
    resume: bool | Sequence[bool] = False,
    on_progress: Optional[Callable[[ProgressEvent], None]] = None,
    max_epochs_this_call: Optional[int] = None,
    report: bool = False,
) -> list[Run]:
    """Train several runs of one shape at once, each into its own run directory.

    ``resume``: per run (or for all), continue the run in its directory instead of starting it
    (``cfgs[i]`` must then be its saved config, possibly with fields outside the hash changed).
    Returns the runs, opened for reading.
    """
    if not cfgs:
        return []
    if len(cfgs) != len(out_dirs):
        raise ValueError("one output directory per config")
    resumes = [resume] * len(cfgs) if isinstance(resume, bool) else list(resume)
    keys = {ensemble_key(c) for c in cfgs}
    if len(keys) > 1:
        diff = [f for i, f in enumerate(ENSEMBLE_FIELDS) if len({k[i] for k in keys}) > 1]
        raise InterpError(f"runs of one ensemble must share {', '.join(diff)}")
    for c in cfgs:
        c.validate()
    flush_subnormals()
    warm_up_vector_math()
    device = resolve_device(cfgs[0].device)
    retain_freed_memory()
    outs = [Path(o) for o in out_dirs]
    if len(set(map(os.path.abspath, outs))) != len(outs):
        raise InterpError("two runs of one ensemble write to the same directory")
    with contextlib.ExitStack() as stack:
        for o in outs:
            o.mkdir(parents=True, exist_ok=True)
            stack.enter_context(RunLock(o))
        members = [_open_member(c, o, r, max_epochs_this_call) for c, o, r in zip(cfgs, outs, resumes)]
        _Engine(members, device, on_progress).run()
        for m in members:
            m.metrics.flush()
            _log_call(m, device, report)
    return [Run.open(o) for o in outs]


def _open_member(cfg: TrainConfig, out: Path, resume: bool, max_epochs_this_call: Optional[int]) -> _Member:
    """Prepare one run directory (new, or resumed from its newest optimiser file) and its state."""
    params = list(build_model(cfg).named_parameters())
    init = {n: t.detach() for n, t in params}  # the epoch-0 weights
    names = list(init)
    trainable = [n for n, t in params if t.requires_grad]
    metrics_path = out / METRICS_FILE
    probes = probing.parse_probes(cfg.probes)
    if resume and metrics_path.exists():  # the run's header names its probes (older runs have none)
        with open(metrics_path) as f:
            probes = probing.probes_in_header(f.readline().strip().split(","), trainable)
    columns = BASE_METRICS + [f"sq_{n}" for n in names] + probing.probe_columns(probes, trainable)
    y = labels(cfg.task, cfg.p)
    state: dict[str, Tensor] = {}
    opt_state: dict[str, Tensor] = {}
    grok_epoch = None
    logged = None
    start = 0
    if not resume:
        split = make_split(cfg.p, cfg.frac_train, cfg.data_seed)
        write_split(out, split)
        (out / CKPT_DIR).mkdir(exist_ok=True)
        metrics = MetricsWriter(metrics_path, columns)
        write_config(out, cfg)
    else:
        remove_stale_temp_files(out)  # we hold the lock: temp files are leftovers of a killed writer
        (out / STOPPED_FILE).unlink(missing_ok=True)  # resumed on purpose: no longer stopped
        run = Run.open(out)
        split = run.split
        if (out / OPTIMIZER_FILE).exists():
            # The optimizer file is written after its checkpoint, so its epoch is always resumable.
            opt_state, meta = load_tensors(out / OPTIMIZER_FILE)
            start = int(meta["epoch"])
            saved = run.load_state_dict(start)
            state = {n: saved[n] for n in names}  # the model's parameter order: metrics columns and sums follow it
        elif metrics_path.exists():  # killed before the first checkpoint completed: start over in place
            metrics_path.unlink()
        if cfg.to_dict() != run.config.to_dict():
            write_config(out, cfg)  # fields outside the hash changed (train() checked); checkpoints loaded fine
        metrics = MetricsWriter(metrics_path, columns)
        logged = _read_metrics(metrics_path)  # read once: T_grok so far, and the probes' resume state
        grok_epoch = None if logged is None else phases.first_epoch_reaching(logged["epoch"], logged["test_acc"])
    if not state:
        state = init
    m = _Member(
        cfg,
        out,
        metrics,
        split.train,
        split.test,
        y,
        set(cfg.checkpoint_epochs()),
        start,
        start,
        grok_epoch,
        state,
        opt_state,
    )
    m.probes, m.trainable = probes, trainable
    m.probe_layout = [(p, probing.probe_columns([p], trainable)) for p in probes]
    m.losses = collections.deque(maxlen=cfg.probe_window)
    if cfg.constant_norm:
        # the target is the norm at initialisation (after init_scale) unless given
        m.target_norm = cfg.target_norm or math.sqrt(sum(float(t.double().pow(2).sum()) for t in init.values()))
    if max_epochs_this_call is not None:
        m.stop_here = start + max_epochs_this_call
    if resume:
        if start >= m.final_epoch and _last_logged_epoch(metrics_path) == m.final_epoch:
            m.done = True  # already complete: touch nothing
        else:
            _resume_probes(m, logged, start)
            metrics.truncate_to(start)  # rows past the resume point belong to the interrupted call
    return m


def _resume_probes(m: _Member, df, start: int) -> None:
    """Probe state a resumed member needs to write what an uninterrupted run writes: the step
    probes of the step into ``start`` (its row is recomputed, the step is not) and the trailing
    train losses of the Hjorth window, from the logged rows ``df`` (``repr`` floats, which pandas
    reads back exactly)."""
    if not m.probes or df is None:
        return
    step_cols = [c for p, cols in m.probe_layout if p in probing.STEP_PROBES for c in cols]
    row = df[df["epoch"] == start]
    if step_cols and len(row):
        values = {c: float(row[c].iloc[0]) for c in step_cols}
        if not any(math.isnan(v) for v in values.values()):
            m.step_probes[start] = values
    if "loss_hjorth" in m.probes:
        m.losses.extend(df.loc[df["epoch"] < start, "train_loss"].tolist())


class _Engine:
    """Steps the live members together; members behind the others (after a crash) catch up first."""

    def __init__(self, members: list[_Member], device: str, on_progress):
        self.members = members
        self.device = device
        self.on_progress = on_progress or (lambda e: None)
        self.mcfg = members[0].cfg.model_config()
        self._batch_key: Optional[tuple] = None
        self._batch_rows: Optional[Tensor] = None

    def run(self) -> None:
        live = [m for m in self.members if not m.done]
        for m in self.members:
            if m.done:
                self.on_progress(
                    ProgressEvent(
                        "done",
                        self.members.index(m),
                        m.epoch,
                        m.final_epoch,
                        grok_epoch=m.grok_epoch,
                        complete=m.epoch >= m.final_epoch,
                    )
                )
        while live:
            e0 = min(m.epoch for m in live)
            later = [m.epoch for m in live if m.epoch > e0]
            cohort = [m for m in live if m.epoch == e0]
            self._train_cohort(cohort, min(later) if later else None)
            live = [m for m in live if not m.done]

    def _train_cohort(self, cohort: list[_Member], until: Optional[int]) -> None:
        """Train members standing at one epoch together until they finish or reach ``until``."""
        for m in cohort:
            self.on_progress(ProgressEvent("start", self.members.index(m), m.epoch, m.final_epoch))
        # members that share their optimiser settings side by side: each group is then one slice of the
        # stacked tensors for the optimiser (a sweep over weight decay: a few kernel calls, not one per member)
        active = sorted(cohort, key=lambda m: m.update_group)
        P, opt, tr, te = self._stack(active)
        minibatch = active[0].cfg.batch_size is not None  # shared: part of the ensemble key
        epoch = active[0].epoch
        record = True
        while True:
            if until is not None and epoch >= until:  # the members ahead wait here: merge before recording
                for m in active:
                    m.epoch = epoch
                self._unstack(active, P, opt)
                return
            if minibatch:
                train_loss = train_acc = None
            else:  # full batch: this forward both records epoch's row and gives the next step's gradient
                train_loss, train_acc = self._loss_and_gradient(P, tr)
            if record:
                if minibatch:
                    train_loss, train_acc = self._train_metrics(active, P, tr, epoch)
                finished = self._record(active, P, opt, te, epoch, train_loss, train_acc)
                if finished:
                    self._unstack(active, P, opt)
                    active = [m for r, m in enumerate(active) if r not in finished]
                    if not active:
                        return
                    P, opt, tr, te = self._stack(active)
                    if not minibatch:
                        # the forward of this epoch again, on the smaller stack, for the next step's gradient
                        record = False
                        continue
            record = True
            epoch += 1
            if minibatch:
                a, b, y = self._batch(active, tr, epoch)
                train_loss, _ = run_loss_and_accuracy(eq_logits(P, self.mcfg, a, b), y)
                train_loss.sum().backward()
            probe = [m.probes_at(epoch) and any(p in probing.STEP_PROBES for p in m.probes) for m in active]
            if any(probe):
                grads = probing.grad_norms(opt.params)
                before = {n: t.detach().clone() for n, t in P.items()}
            opt.step([lr_at(m.cfg, epoch) for m in active])
            self._project(P, active)
            if any(probe):
                self._step_probes(active, probe, epoch, grads, probing.update_ratio(before, P), list(opt.params))

    def _loss_and_gradient(self, P, pairs: _Pairs) -> tuple[Tensor, Tensor]:
        """Full batch: each member's loss and accuracy on its pairs, and the gradient of its loss in
        ``P[name].grad``, a chunk of members at a time (``members_per_chunk``)."""
        losses, accs = [], []
        for n, t in P.items():
            if t.requires_grad and t.grad is None:
                t.grad = torch.empty_like(t)
        for lo, hi, c in pairs.chunks:
            # leaves of their own: autograd then writes each chunk's gradient, not zeros around it
            Pc = {n: t.detach()[lo:hi].requires_grad_(t.requires_grad) for n, t in P.items()}
            loss, acc = run_loss_and_accuracy(eq_logits(Pc, self.mcfg, c.a, c.b, c.lengths), c.y, c.lengths)
            loss.sum().backward()
            for n, t in Pc.items():
                if t.requires_grad:
                    P[n].grad[lo:hi] = t.grad if t.grad is not None else 0
            losses.append(loss.detach())
            accs.append(acc)
        return torch.cat(losses), torch.cat(accs)

    @torch.no_grad()
    def _evaluate(self, P, pairs: _Pairs) -> tuple[Tensor, Tensor]:
        """Each member's loss and accuracy on its pairs (no gradient), a chunk of members at a time."""
        out = [
            run_loss_and_accuracy(
                eq_logits({n: t[lo:hi] for n, t in P.items()}, self.mcfg, c.a, c.b, c.lengths), c.y, c.lengths
            )
            for lo, hi, c in pairs.chunks
        ]
        return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])

    @staticmethod
    def _step_probes(active, probe, epoch, grads: Tensor, ratio: Tensor, trainable: list[str]) -> None:
        """Keep each probing member's step measurements until its row of ``epoch`` is written."""
        cols = probing.probe_columns(probing.STEP_PROBES, trainable)  # grad_total, grad_<param>..., update_ratio
        values = torch.cat([grads, ratio[:, None]], 1).tolist()
        for m, due, row in zip(active, probe, values):
            if due:
                m.step_probes[epoch] = dict(zip(cols, row))

    @torch.no_grad()
    def _train_metrics(self, active: list[_Member], P, tr: _Pairs, epoch: int) -> tuple[Tensor, Tensor]:
        """Minibatch runs: loss and accuracy on the whole train set at evaluated epochs, NaN elsewhere."""
        evaluate = torch.tensor([m.evaluates(epoch) for m in active], device=self.device)
        nan = torch.full((len(active),), math.nan, dtype=torch.float64, device=self.device)
        if not bool(evaluate.any()):
            return nan, nan
        loss, acc = self._evaluate(P, tr)
        return torch.where(evaluate, loss, nan), torch.where(evaluate, acc.double(), nan)

    def _batch(self, active: list[_Member], tr: _Pairs, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """Each member's minibatch of optimiser step ``step``, drawn a block of steps at a time."""
        block, row = divmod(step - 1, BATCH_BLOCK)
        key = (block, tuple(id(m) for m in active))
        if self._batch_key != key:
            rows = [batch_rows(m.cfg, len(m.train_idx), block) for m in active]
            self._batch_rows = torch.stack(rows).to(self.device)  # [run, step, batch]
            self._batch_key = key
        rows = self._batch_rows[:, row]
        return tr.a.gather(1, rows), tr.b.gather(1, rows), tr.y.gather(1, rows)

    def _record(
        self,
        active: list[_Member],
        P,
        opt: EnsembleOptimizer,
        te: _Pairs,
        epoch: int,
        train_loss: Tensor,
        train_acc: Tensor,
    ) -> list[int]:
        """Each member's metrics row of ``epoch``, its checkpoint when due; returns the members that finish."""
        evaluate = [m.evaluates(epoch) for m in active]
        with torch.no_grad():
            if any(evaluate):
                test_loss, test_acc = self._evaluate(P, te)
                test = torch.stack([test_loss, test_acc], 1).tolist()
            sq = squared_norms(P)
            rows = torch.cat([torch.stack([train_loss.detach(), train_acc], 1), sq.sum(1, keepdim=True), sq], 1)
            probe = [m.probes_at(epoch) for m in active]
            ginis = None
            if any(p and "fourier_gini" in m.probes for p, m in zip(probe, active)):
                ginis = probing.fourier_ginis(P, self.mcfg.task, self.mcfg.p).tolist()
        values = rows.tolist()
        for m, row in zip(active, values):
            if "loss_hjorth" in m.probes:
                m.losses.append(row[0])
        due = [r for r, m in enumerate(active) if probe[r] and "loss_hjorth" in m.probes]
        hjorths = dict(zip(due, probing.hjorths([active[r].losses for r in due]).tolist()))
        finished = []
        for r, (m, row) in enumerate(zip(active, values)):
            te_loss, te_acc = test[r] if evaluate[r] else (math.nan, math.nan)
            full = [epoch, row[0], te_loss, row[1], te_acc] + row[2:]
            if m.probes:
                full += self._probe_values(m, epoch, probe[r], ginis[r] if ginis and probe[r] else None, hjorths.get(r))
            m.metrics.add(full)
            m.epoch = epoch
            if m.grok_epoch is None and te_acc >= GROK_ACC:
                m.grok_epoch = epoch
            if epoch in m.schedule or epoch == m.final_epoch:
                self._save_state(m, r, epoch, P, opt)
            index = self.members.index(m)
            event = ProgressEvent("epoch", index, epoch, m.final_epoch, full)
            self.on_progress(event)
            if event.stop and epoch < m.stops_at:
                self._stop_member(m, r, epoch, P, opt, event.stop)
                finished.append(r)
                self.on_progress(ProgressEvent("done", index, epoch, m.final_epoch, grok_epoch=m.grok_epoch))
                continue
            if epoch >= m.stops_at:
                finished.append(r)
                m.done = True
                m.metrics.flush()
                self.on_progress(
                    ProgressEvent(
                        "done", index, epoch, m.final_epoch, grok_epoch=m.grok_epoch, complete=epoch >= m.final_epoch
                    )
                )
        return finished

    @staticmethod
    def _save_state(m: _Member, r: int, epoch: int, P, opt: EnsembleOptimizer) -> None:
        """Member ``m``'s checkpoint of ``epoch``, then its optimiser file (the order resume relies on)."""
        save_checkpoint(m.out, epoch, {n: t[r] for n, t in P.items()}, m.cfg)
        save_tensors(
            m.out / OPTIMIZER_FILE, opt.member_state(r), {"epoch": str(epoch), "config_hash": m.cfg.config_hash()}
        )
        m.metrics.flush()

    @staticmethod
    def _stop_member(m: _Member, r: int, epoch: int, P, opt: EnsembleOptimizer, reason: str) -> None:
        """Stop member ``m`` at ``epoch`` on request: its state is saved there, so the run directory is
        whole (and resumable by ``interp train --resume``), and STOPPED_FILE says why."""
        if epoch not in m.schedule:
            _Engine._save_state(m, r, epoch, P, opt)
        m.metrics.flush()
        body = {"epoch": epoch, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_bytes(m.out / STOPPED_FILE, (json.dumps(body) + "\n").encode())
        m.done = True

    @staticmethod
    def _probe_values(m: _Member, epoch: int, due: bool, ginis, hjorth) -> list[float]:
        """Member ``m``'s probe columns for its row of ``epoch`` (NaN where a probe is not due); ``ginis``
        and ``hjorth``: its values of those probes, computed for all members together."""
        step = m.step_probes.pop(epoch, {})
        out: list[float] = []
        nan = math.nan
        for p, names in m.probe_layout:
            if p in probing.STEP_PROBES:
                out += [step.get(c, nan) if due else nan for c in names]
            elif p == "loss_hjorth":
                out += list(hjorth) if due and hjorth is not None else [nan, nan]
            elif p == "fourier_gini":
                out += list(ginis) if due and ginis is not None else [nan, nan]
        return out

    def _project(self, P: dict[str, Tensor], active: list[_Member]) -> None:
        """Constant-norm training: members that ask for it go back to their target norm."""
        if any(m.target_norm is not None for m in active):
            target = torch.tensor([m.target_norm or 0.0 for m in active], dtype=torch.float64, device=self.device)
            project_norm(P, target, target > 0)

    def _stack(self, active: list[_Member]):
        """Stack the members' weights and optimiser state; build their padded pairs."""
        names = list(active[0].state)
        trainable = set(active[0].trainable)  # shared: train_biases is part of the ensemble key
        P = {n: torch.stack([m.state[n] for m in active]).to(self.device).requires_grad_(n in trainable) for n in names}
        opt = EnsembleOptimizer(
            {n: P[n] for n in names if n in trainable}, [m.optim() for m in active], [m.filter() for m in active]
        )
        for r, m in enumerate(active):
            opt.load_member_state(
                r, {k: v.to(self.device) for k, v in m.opt_state.items()}, str(m.out / OPTIMIZER_FILE)
            )
        p, chunk = self.mcfg.p, members_per_chunk(self.mcfg, self.device)
        tr = _Pairs.stack([m.train_idx for m in active], [m.y for m in active], p, self.device, chunk)
        te = _Pairs.stack([m.test_idx for m in active], [m.y for m in active], p, self.device, chunk)
        return P, opt, tr, te

    @staticmethod
    def _unstack(active: list[_Member], P: dict[str, Tensor], opt: EnsembleOptimizer) -> None:
        for r, m in enumerate(active):
            m.state = {n: t[r].detach().clone() for n, t in P.items()}
            m.opt_state = {k: v.clone() for k, v in opt.member_state(r).items()}


def _log_call(m: _Member, device: str, report: bool) -> None:
    """Append this call's wall time to training_log.jsonl (how long a run took, across resumes)."""
    end = m.epoch
    if end <= m.start:
        return
    seconds = time.perf_counter() - m.t0
    entry = {
        "start_epoch": m.start,
        "end_epoch": end,
        "seconds": round(seconds, 2),
        "ms_per_epoch": round(1000 * seconds / max(1, end - m.start), 2),
        "device": device,
        "threads": torch.get_num_threads(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with open(m.out / TRAINING_LOG_FILE, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
    if report:
        print(
            f"{m.cfg.run_name}: epochs {m.start}..{end} in {seconds:.1f} s "
            f"({entry['ms_per_epoch']:.1f} ms/epoch) -> {m.out}"
        )


def _last_logged_epoch(path: Path) -> Optional[int]:
    if not path.exists():
        return None
    lines = path.read_text().rstrip("\n").splitlines()
    try:
        return int(lines[-1].split(",")[0]) if len(lines) > 1 else None
    except ValueError:
        return None


def _read_metrics(path: Path):
    """The logged metrics rows (a DataFrame), or None when there is no metrics file."""
    if not path.exists():
        return None
    import pandas as pd

    return pd.read_csv(path)
