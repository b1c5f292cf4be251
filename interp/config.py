"""Run configuration: every hyperparameter of a run in one dataclass (REFERENCE §1).

``TrainConfig`` is what ``interp train`` flags map onto and what the run directory stores as
``config.json``; ``ModelConfig`` is the architecture part, enough to rebuild a model from a
checkpoint. Validation lives here so the CLI and the Python API fail the same way.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, fields
from typing import Any, Optional

from interp.errors import InterpError
from interp.tasks import validate_task

# Bounds that refuse absurd values up front (before any directory is created).
MAX_SEED = 2**63 - 1
MAX_P = 2000  # p^2 pairs are evaluated at once
MAX_LR = 10.0
MAX_INIT_STD = 10.0
MAX_EPOCHS = 10_000_000
MAX_BATCH = 1_000_000
MAX_GROKFAST_WINDOW = 10_000


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    # resolving the annotations (strings under ``from __future__ import annotations``) compiles each
    # one: ~0.4 ms per call, paid by every config built, so once per class
    return typing.get_type_hints(cls)


def _fields_dict(cfg: Any) -> dict[str, Any]:
    # every field is a scalar: a plain dict, without ``dataclasses.asdict``'s deep copies
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


def check_field_types(cfg: Any) -> None:
    """Refuse a field whose value does not have its declared type (``"p": "31"``, ``epochs=2.5``,
    ``"train_biases": "yes"``) and a non-finite float. Ints are accepted for float fields; bools
    are not numbers here."""
    hints = _type_hints(type(cfg))
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        t = hints[f.name]
        optional = typing.get_origin(t) is typing.Union and type(None) in typing.get_args(t)
        if optional:
            if v is None:
                continue
            t = [a for a in typing.get_args(t) if a is not type(None)][0]
        if t is bool:
            ok, what = isinstance(v, bool), "true or false"
        elif t is int:
            ok, what = isinstance(v, int) and not isinstance(v, bool), "an integer"
        elif t is float:
            ok, what = isinstance(v, (int, float)) and not isinstance(v, bool), "a number"
            if ok and not math.isfinite(v):
                raise InterpError(f"{f.name} must be a finite number, got {v}")
        elif t is str:
            ok, what = isinstance(v, str), "a string"
        else:  # pragma: no cover - every field has one of the types above
            continue
        if not ok:
            raise InterpError(f"{f.name} must be {what}{' or null' if optional else ''}, got {v!r}")


def check_name(name: Any, what: str = "name") -> str:
    """A run name must be a safe single file name; the rule lives in ``interp.store.check_name``."""
    from interp.store import check_name as store_check_name

    return store_check_name(name, what)


def check_device_name(name: str) -> None:
    if not (name == "cpu" or re.fullmatch(r"cuda(:\d+)?", name)):
        raise InterpError(f"device must be 'cpu' or 'cuda[:N]', got {name!r}")


def resolve_device(name: str) -> str:
    """The one device check every command uses (train, compare, analysis): ``name`` if it can be
    used here, else an InterpError (``cuda`` without CUDA, a CUDA index that does not exist)."""
    check_device_name(name)
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise InterpError(f"device {name!r} requested but CUDA is not available on this machine")
        idx = int(name.split(":")[1]) if ":" in name else 0
        if idx >= torch.cuda.device_count():
            raise InterpError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return name


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the one-layer transformer (REFERENCE §1) and the task it computes.

    d_vocab = p + 1, d_vocab_out = p. The task travels with the model so that every analysis reads
    its Fourier frame from the model (``interp.analysis.fourier.frame(cfg.task, cfg.p)``) instead of
    being told, and possibly told wrongly.
    """

    task: str = "add"
    p: int = 113
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    n_ctx: int = 3
    act_fn: str = "relu"
    train_biases: bool = False

    @property
    def d_vocab(self) -> int:
        return self.p + 1

    @property
    def d_vocab_out(self) -> int:
        return self.p

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_field_types(self)
        if self.p < 2:
            raise InterpError(f"p must be an integer >= 2, got {self.p!r}")
        if self.p > MAX_P:
            raise InterpError(f"p must be at most {MAX_P}, got {self.p}")
        validate_task(self.task, self.p)
        for name in ("d_model", "n_heads", "d_head", "d_mlp"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise InterpError(f"{name} must be a positive integer, got {v!r}")
        if self.n_ctx != 3:
            raise InterpError(f"n_ctx must be 3 (tokens [a, b, =]), got {self.n_ctx}")
        if self.act_fn not in ("relu", "gelu"):
            raise InterpError(f"act_fn must be 'relu' or 'gelu', got {self.act_fn!r}")

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InterpError(f"unknown model config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


def log_spaced_epochs(max_epoch: int = 512) -> list[int]:
    """0, 1, 2, 4, ..., up to max_epoch (Pythia-style early checkpoints)."""
    out, e = [0], 1
    while e <= max_epoch:
        out.append(e)
        e *= 2
    return out


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run. Defaults are the canonical run of REFERENCE §1.

    Init: every weight ~ N(0, init_std^2) with ``init_std = 0.8 / sqrt(d_model)`` by default
    (the TransformerLens legacy recipe; REFERENCE §1 lists 1/sqrt(d_model) from the paper code
    as the alternative, selectable with ``init_std``). Biases start at zero.
    """

    run_name: str = "canonical"
    task: str = "add"
    p: int = 113
    frac_train: float = 0.3
    seed: int = 999  # model init
    data_seed: int = 598  # train/test split
    # model
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    act_fn: str = "relu"
    train_biases: bool = False
    init_std: Optional[float] = None  # None -> 0.8 / sqrt(d_model)
    # optimiser (full batch AdamW, one step per epoch)
    lr: float = 1e-3
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 0
    epochs: int = 25_000
    # checkpoint schedule: log-spaced up to log_checkpoints_until, then every checkpoint_every
    checkpoint_every: int = 100
    log_checkpoints_until: int = 512
    # stop this many epochs after test accuracy first reaches 99%; None = run all epochs
    stop_after_grok: Optional[int] = None
    # test metrics every eval_every epochs (and at every checkpoint); T_grok's resolution
    eval_every: int = 1
    # training options of the weight-norm studies (REFERENCE §4-5); the defaults are the canonical run
    optimizer: str = "adamw"  # adamw (decoupled decay), adam (L2 decay added to the gradient), sgd
    init_scale: float = 1.0  # Omnigrok's alpha: every parameter multiplied by it after init
    constant_norm: bool = False  # after every step rescale all parameters jointly to target_norm
    target_norm: Optional[float] = None  # None: the norm right after init (and init_scale)
    # minibatches of batch_size pairs sampled with replacement, one optimiser step per epoch;
    # None = full batch. Train metrics are then measured on the whole train set at evaluated epochs.
    batch_size: Optional[int] = None
    # Grokfast gradient filter (Lee et al. 2024; REFERENCE §7): None, "ema" or "ma"
    grokfast: Optional[str] = None
    grokfast_alpha: float = 0.98  # EMA momentum a
    grokfast_lamb: Optional[float] = None  # amplification lambda; None: 2 for ema, 5 for ma (the paper's)
    grokfast_window: int = 100  # MA window w
    # training probes (interp.training.probes): "default", "none" or a comma list; fixed at creation
    probes: str = "default"
    probe_every: int = 10  # probe columns every N epochs (other rows leave them empty)
    probe_window: int = 100  # trailing window of train losses for the Hjorth probe
    device: str = "cpu"
    notes: str = ""

    def model_config(self) -> ModelConfig:
        return ModelConfig(
            task=self.task,
            p=self.p,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=self.d_head,
            d_mlp=self.d_mlp,
            act_fn=self.act_fn,
            train_biases=self.train_biases,
        )

    @property
    def resolved_init_std(self) -> float:
        return self.init_std if self.init_std is not None else 0.8 / math.sqrt(self.d_model)

    def __post_init__(self) -> None:
        # validated when built, so the Python API fails exactly like the command line
        self.validate()

    def validate(self) -> "TrainConfig":
        check_field_types(self)
        check_name(self.run_name, "run_name")
        self.model_config().validate()
        for name in ("seed", "data_seed"):
            v = getattr(self, name)
            if not (0 <= v <= MAX_SEED):
                raise InterpError(f"{name} must lie in [0, 2**63 - 1], got {v}")
        if not (0.0 < self.frac_train < 1.0):
            raise InterpError(f"frac_train must lie strictly between 0 and 1, got {self.frac_train}")
        n_train = int(self.frac_train * self.p * self.p)  # the split's rule (interp.tasks.make_split)
        if n_train < 1 or n_train >= self.p * self.p:
            raise InterpError(f"frac_train={self.frac_train} leaves an empty train or test set for p={self.p}")
        if not (0 < self.lr <= MAX_LR):
            raise InterpError(f"lr must be > 0 and at most {MAX_LR:g}, got {self.lr}")
        if not (self.weight_decay >= 0):
            raise InterpError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.lr * self.weight_decay >= 1:
            # every optimiser here shrinks the weights by (1 - lr * weight_decay) per step
            raise InterpError(
                f"lr * weight_decay must be < 1 (each step scales the weights by 1 - lr * weight_decay), "
                f"got lr={self.lr}, weight_decay={self.weight_decay}"
            )
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if not (0.0 <= v < 1.0):
                raise InterpError(f"{name} must lie in [0, 1), got {v}")
        if not (1 <= self.epochs <= MAX_EPOCHS):
            raise InterpError(f"epochs must lie in [1, {MAX_EPOCHS:,}], got {self.epochs}")
        if self.checkpoint_every < 1:
            raise InterpError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.warmup_steps < 0:
            raise InterpError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.init_std is not None and not (0 < self.init_std <= MAX_INIT_STD):
            raise InterpError(f"init_std must be > 0 and at most {MAX_INIT_STD:g}, got {self.init_std}")
        if self.stop_after_grok is not None and self.stop_after_grok < 0:
            raise InterpError(f"stop_after_grok must be >= 0, got {self.stop_after_grok}")
        if self.eval_every < 1:
            raise InterpError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.optimizer not in OPTIMIZERS:
            raise InterpError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (0 < self.init_scale < 1e6):
            raise InterpError(f"init_scale must lie in (0, 1e6), got {self.init_scale}")
        if self.target_norm is not None and not (0 < self.target_norm < 1e12):
            raise InterpError(f"target_norm must lie in (0, 1e12), got {self.target_norm}")
        if self.batch_size is not None and not (1 <= self.batch_size <= MAX_BATCH):
            raise InterpError(
                f"batch_size must lie in [1, {MAX_BATCH:,}] or be null (full batch), got {self.batch_size}"
            )
        if self.grokfast is not None and self.grokfast not in GROKFAST_FILTERS:
            raise InterpError(f"grokfast must be one of {', '.join(GROKFAST_FILTERS)} or null, got {self.grokfast!r}")
        if not (0.0 <= self.grokfast_alpha < 1.0):
            raise InterpError(f"grokfast_alpha must lie in [0, 1), got {self.grokfast_alpha}")
        if self.grokfast_lamb is not None and not (0.0 <= self.grokfast_lamb <= 1e3):
            raise InterpError(f"grokfast_lamb must lie in [0, 1000], got {self.grokfast_lamb}")
        if not (1 <= self.grokfast_window <= MAX_GROKFAST_WINDOW):
            raise InterpError(f"grokfast_window must lie in [1, {MAX_GROKFAST_WINDOW}], got {self.grokfast_window}")
        from interp.training.probes import parse_probes

        parse_probes(self.probes)
        if not (1 <= self.probe_every <= MAX_EPOCHS):
            raise InterpError(f"probe_every must lie in [1, {MAX_EPOCHS:,}], got {self.probe_every}")
        if not (3 <= self.probe_window <= 100_000):
            raise InterpError(f"probe_window must lie in [3, 100,000], got {self.probe_window}")
        check_device_name(self.device)
        return self

    @property
    def resolved_grokfast_lamb(self) -> float:
        """Grokfast's amplification: as given, else the paper's (2 for EMA, 5 for MA); 0 without a filter."""
        if self.grokfast is None:
            return 0.0
        if self.grokfast_lamb is not None:
            return self.grokfast_lamb
        return GROKFAST_DEFAULT_LAMB[self.grokfast]

    def checkpoint_epochs(self) -> list[int]:
        """The checkpoint schedule: log-spaced early, every ``checkpoint_every``, and the last epoch."""
        s = set(log_spaced_epochs(self.log_checkpoints_until))
        s.update(range(0, self.epochs + 1, self.checkpoint_every))
        s.add(self.epochs)
        return sorted(e for e in s if e <= self.epochs)

    def to_dict(self) -> dict[str, Any]:
        return _fields_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InterpError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)

    def hashed_fields(self) -> dict[str, Any]:
        """The fields that determine the trajectory (what ``config_hash`` hashes)."""
        d = self.to_dict()
        for k in NOT_HASHED:
            d.pop(k)
        # fields added after format 1 enter the hash only when set, so earlier runs keep their hash
        for k, default in HASH_IF_SET.items():
            if d[k] == default:
                d.pop(k)
        return d

    def config_hash(self) -> str:
        """Hash of the fields that determine the trajectory (not run_name, device, notes, epochs)."""
        return hashlib.sha256(json.dumps(self.hashed_fields(), sort_keys=True).encode()).hexdigest()[:16]


OPTIMIZERS = ("adamw", "adam", "sgd")
# Fields outside the config hash: they do not change the trajectory so far.
NOT_HASHED = (
    "run_name",
    "device",
    "notes",
    "epochs",
    "stop_after_grok",
    "eval_every",
    "probes",
    "probe_every",
    "probe_window",
)
# The one definition of "fields that may change on resume": a resumed run may be trained longer,
# stop at another point after grokking, evaluate at another interval or move to another device.
RESUME_OVERRIDABLE = ("epochs", "stop_after_grok", "device", "eval_every")
HASH_IF_SET = {
    "optimizer": "adamw",
    "init_scale": 1.0,
    "constant_norm": False,
    "target_norm": None,
    "batch_size": None,
    "grokfast": None,
    "grokfast_alpha": 0.98,
    "grokfast_lamb": None,
    "grokfast_window": 100,
}
GROKFAST_FILTERS = ("ema", "ma")
GROKFAST_DEFAULT_LAMB = {"ema": 2.0, "ma": 5.0}  # Lee et al. 2024 (REFERENCE §7)

PRESETS: dict[str, dict[str, Any]] = {
    # REFERENCE §1. Cleanup continues well after test accuracy reaches 99% (neurons become
    # single-frequency as weight decay removes the memorising components: measured on our run,
    # 28% of neurons have FVE > 0.85 500 epochs after T_grok), so train 10k epochs past T_grok,
    # capped at the TransformerLens demo's 25k; a run that groks early stops early.
    # Test metrics every 10 epochs: the full-batch test pass cost ~40% of an epoch, and the paper
    # code logged test loss every 10 epochs too (T_grok is then known to 10 epochs).
    "canonical": dict(run_name="canonical", epochs=25_000, stop_after_grok=10_000, eval_every=10),
    # A tiny run for smoke tests and demos.
    # Measured: memorises by ~epoch 80, generalises by ~200 (5 ms/epoch on CPU).
    "quick": dict(
        run_name="quick",
        p=31,
        frac_train=0.6,
        d_model=64,
        n_heads=2,
        d_head=32,
        d_mlp=256,
        epochs=600,
        checkpoint_every=25,
        lr=3e-3,
        weight_decay=3.0,
    ),
    # The default size of the many-run studies: p = 59, half the model, 50% train (the delay-law
    # paper's split), lr 3e-3, weight decay 1. Tuned with a 12-run sweep (frac_train 0.3/0.4/0.5 x
    # wd 1/3 x lr 1e-3/3e-3, seed 999): this setting memorised at epoch 88 and grokked at 550; test
    # metrics every 10 epochs.
    "small": dict(
        run_name="small",
        p=59,
        frac_train=0.5,
        d_model=64,
        n_heads=4,
        d_head=16,
        d_mlp=256,
        lr=3e-3,
        weight_decay=1.0,
        epochs=5000,
        stop_after_grok=500,
        checkpoint_every=100,
        eval_every=10,
    ),
    # Memorisation: the canonical recipe without weight decay never generalises in budget.
    "memorise": dict(run_name="memorise", weight_decay=0.0, epochs=2000),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise InterpError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig(**{**PRESETS[name], **overrides})
