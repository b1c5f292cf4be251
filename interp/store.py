"""The checkpoint store: one directory per run, the single definition of the on-disk format.

Layout of a run directory::

    config.json                 TrainConfig fields + format version + config hash
    split.safetensors           train / test pair indices (row-major, pair = a * p + b)
    metrics.csv                 one row per epoch: epoch, train/test loss and accuracy,
                                sum of squared weights (total and per parameter)
    checkpoints/epoch_NNNNNN.safetensors
                                model weights (TransformerLens names); metadata: epoch,
                                config_hash, sha256 of the tensor bytes
    optimizer.safetensors       AdamW state at the newest checkpoint (for --resume)
    .lock                       held (flock) by the trainer while it runs

Every file is written atomically (temp file, fsync, rename, fsync of the directory), so a
crash leaves either the old or the new version, never a torn file. Checkpoints carry a
checksum: a truncated or corrupted file is reported by name and never used.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from interp.config import ModelConfig, TrainConfig
from interp.errors import InterpError
from interp.tasks import Split

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
SPLIT_FILE = "split.safetensors"
METRICS_FILE = "metrics.csv"
OPTIMIZER_FILE = "optimizer.safetensors"
CKPT_DIR = "checkpoints"
LOCK_FILE = ".lock"
BASE_METRICS = ["epoch", "train_loss", "test_loss", "train_acc", "test_acc", "sq_total"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Atomically save tensors as safetensors with a checksum in the metadata."""
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**metadata, "sha256": _tensor_digest(cpu)}
    atomic_write_bytes(path, st_save(cpu, metadata=meta))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file written by ``save_tensors``; InterpError naming the file if it is damaged."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InterpError(f"{path}: file not found") from None
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except Exception as e:  # noqa: BLE001 - any parse failure means a damaged file
        raise InterpError(f"{path}: corrupted or truncated checkpoint ({type(e).__name__})") from None
    want = meta.get("sha256")
    if want is None or _tensor_digest(tensors) != want:
        raise InterpError(f"{path}: corrupted checkpoint (checksum mismatch)")
    return tensors, meta


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:06d}.safetensors"


@dataclass
class Run:
    """A run directory opened for reading (see the module docstring for the layout)."""

    path: Path
    config: TrainConfig

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Run":
        path = Path(path)
        if not path.exists():
            raise InterpError(f"run directory {path} does not exist")
        if not path.is_dir():
            raise InterpError(f"{path} is not a directory")
        cfg_path = path / CONFIG_FILE
        if not cfg_path.exists():
            raise InterpError(f"{path} is not a run directory (no {CONFIG_FILE})")
        try:
            raw = json.loads(cfg_path.read_text())
            cfg = TrainConfig.from_dict(raw["config"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InterpError(f"{cfg_path}: unreadable run config ({type(e).__name__}: {e})") from None
        return cls(path=path, config=cfg)

    @property
    def name(self) -> str:
        return self.config.run_name

    @property
    def model_config(self) -> ModelConfig:
        return self.config.model_config()

    @property
    def split(self) -> Split:
        t, _ = load_tensors(self.path / SPLIT_FILE)
        return Split(train=t["train"], test=t["test"])

    def checkpoint_path(self, epoch: int) -> Path:
        return self.path / CKPT_DIR / checkpoint_name(epoch)

    def checkpoint_epochs(self) -> list[int]:
        d = self.path / CKPT_DIR
        if not d.is_dir():
            return []
        out = []
        for f in d.glob("epoch_*.safetensors"):
            try:
                out.append(int(f.stem.split("_")[1]))
            except ValueError:
                continue
        return sorted(out)

    def nearest_epochs(self, epoch: int, k: int = 3) -> list[int]:
        return sorted(sorted(self.checkpoint_epochs(), key=lambda e: (abs(e - epoch), e))[:k])

    def load_state_dict(self, epoch: int) -> dict[str, torch.Tensor]:
        path = self.checkpoint_path(epoch)
        if not path.exists():
            near = self.nearest_epochs(epoch)
            hint = f"; nearest available: {', '.join(map(str, near))}" if near else "; the run has no checkpoints"
            raise InterpError(f"{self.path}: no checkpoint at epoch {epoch}{hint}")
        tensors, meta = load_tensors(path)
        if meta.get("config_hash") != self.config.config_hash():
            raise InterpError(f"{path}: checkpoint belongs to a different config (hash {meta.get('config_hash')})")
        return tensors

    def load_model(self, epoch: int | None = None, device: str = "cpu"):
        """The model at ``epoch`` (default: the last checkpoint), in eval mode."""
        from interp.model import Transformer

        if epoch is None:
            eps = self.checkpoint_epochs()
            if not eps:
                raise InterpError(f"{self.path}: the run has no checkpoints")
            epoch = eps[-1]
        model = Transformer(self.model_config)
        state = self.load_state_dict(epoch)
        load_model_state(model, state, source=str(self.checkpoint_path(epoch)))
        return model.to(device).eval()

    def metrics(self):
        """The per-epoch metrics table as a pandas DataFrame (also readable with numpy.genfromtxt)."""
        import pandas as pd

        path = self.path / METRICS_FILE
        if not path.exists():
            raise InterpError(f"{path}: no metrics table")
        return pd.read_csv(path)


def load_model_state(model, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` with a clear error when names or shapes do not match."""
    own = dict(model.named_parameters())
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise InterpError(f"{source}: parameter names do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for k, prm in own.items():
        if tuple(state[k].shape) != tuple(prm.shape):
            raise InterpError(f"{source}: {k} has shape {tuple(state[k].shape)}, the model expects {tuple(prm.shape)}")
    with torch.no_grad():
        for k, prm in own.items():
            prm.copy_(state[k])


def write_config(path: Path, cfg: TrainConfig, extra: Optional[dict[str, Any]] = None) -> None:
    body = {"format_version": FORMAT_VERSION, "config_hash": cfg.config_hash(), "config": cfg.to_dict(), **(extra or {})}
    atomic_write_bytes(path / CONFIG_FILE, (json.dumps(body, indent=2) + "\n").encode())


def write_split(path: Path, split: Split) -> None:
    save_tensors(path / SPLIT_FILE, {"train": split.train, "test": split.test}, {"format_version": str(FORMAT_VERSION)})


def save_checkpoint(run_dir: Path, epoch: int, model, cfg: TrainConfig) -> Path:
    """Save the weights of epoch ``epoch``: ``model`` is a model or a ``{name: tensor}`` state dict."""
    d = run_dir / CKPT_DIR
    d.mkdir(exist_ok=True)
    path = d / checkpoint_name(epoch)
    state = dict(model) if isinstance(model, dict) else dict(model.named_parameters())
    save_tensors(path, state, {"epoch": str(epoch), "config_hash": cfg.config_hash(), "format_version": str(FORMAT_VERSION)})
    return path


class MetricsWriter:
    """Appends metric rows to metrics.csv; rows reach the disk (fsync) at each ``flush``."""

    def __init__(self, path: Path, columns: list[str]):
        self.path = path
        self.columns = columns
        if not path.exists():
            atomic_write_bytes(path, (",".join(columns) + "\n").encode())
        self._buf: list[list[float]] = []

    def add(self, row: list[float]) -> None:
        self._buf.append(row)

    def flush(self) -> None:
        if not self._buf:
            return
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        for row in self._buf:
            w.writerow([int(row[0])] + [repr(float(x)) for x in row[1:]])
        with open(self.path, "a") as f:
            f.write(out.getvalue())
            f.flush()
            os.fsync(f.fileno())
        self._buf.clear()

    def truncate_to(self, epoch_exclusive: int) -> None:
        """Keep only rows with epoch < ``epoch_exclusive`` (rows past a resume point are recomputed)."""
        lines = self.path.read_text().splitlines(keepends=True)
        header, rows = lines[0], lines[1:]
        kept = []
        for line in rows:
            parts = line.rstrip("\n").split(",")
            # a torn last line (crash mid-append) has the wrong number of fields: drop it
            if len(parts) != len(self.columns) or not line.endswith("\n"):
                continue
            if int(parts[0]) < epoch_exclusive:
                kept.append(line)
        atomic_write_bytes(self.path, (header + "".join(kept)).encode())


class RunLock:
    """An exclusive flock on ``<run>/.lock``; a second trainer on the same run is refused."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise InterpError(f"run directory {self.path.parent} is in use by another trainer (pid {holder})") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def save_optimizer(run_dir: Path, epoch: int, optimizer: torch.optim.Optimizer, names: dict[int, str], cfg: TrainConfig) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for prm in group["params"]:
            st = optimizer.state.get(prm)
            if not st:
                continue
            n = names[id(prm)]
            for k, v in st.items():
                tensors[f"{k}.{n}"] = v if torch.is_tensor(v) else torch.tensor(v)
    save_tensors(run_dir / OPTIMIZER_FILE, tensors, {"epoch": str(epoch), "config_hash": cfg.config_hash()})


def load_optimizer(run_dir: Path, optimizer: torch.optim.Optimizer, params: dict[str, torch.nn.Parameter]) -> int:
    """Restore AdamW state saved by ``save_optimizer``; returns the epoch it belongs to."""
    tensors, meta = load_tensors(run_dir / OPTIMIZER_FILE)
    if not tensors:  # saved before the first step (epoch 0): a fresh optimizer is the right state
        return int(meta["epoch"])
    for n, prm in params.items():
        st = {}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            t = tensors.get(f"{key}.{n}")
            if t is None:
                raise InterpError(f"{run_dir / OPTIMIZER_FILE}: missing optimizer state {key}.{n}")
            st[key] = t.to(prm.device)  # the fused AdamW kernel keeps "step" on the parameter's device
        optimizer.state[prm] = st
    return int(meta["epoch"])


def iter_checkpoints(run: Run, epochs: Optional[Iterable[int]] = None):
    """Yield (epoch, state_dict) for the chosen (default: all) checkpoints of a run."""
    for e in run.checkpoint_epochs() if epochs is None else epochs:
        yield e, run.load_state_dict(e)
