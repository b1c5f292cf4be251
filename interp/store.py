"""The checkpoint store: one directory per run, the single definition of the on-disk format.

Layout of a run directory::

    config.json                 TrainConfig fields + format version + config hash (+ for imported
                                runs: ``import`` provenance and ``history``, see ``Run.history``)
    split.safetensors           train / test pair indices (row-major, pair = a * p + b)
    metrics.csv                 one row per epoch: epoch, train/test loss and accuracy,
                                sum of squared weights (total and per parameter)
    checkpoints/epoch_NNNNNN.safetensors
                                model weights (TransformerLens names); metadata: epoch,
                                config_hash, config (the hashed fields as JSON), sha256 of the
                                tensor bytes
    optimizer.safetensors       AdamW state at the newest checkpoint (for --resume)
    .lock                       held (flock) by the trainer while it runs

Every file is written atomically (temp file, fsync, rename, fsync of the directory), so a
crash leaves either the old or the new version, never a torn file; a failed write (full disk)
removes its temp file and raises a one-line ``InterpError`` naming the file. Safetensors files
are serialised here with a sorted header, so the same tensors give the same bytes. Checkpoints
carry a checksum: a truncated or corrupted file is reported by name and never used.

Names: ``check_name`` is the one rule for a user-chosen name that becomes a file or directory
name (run names, import names); ``sanitize_name`` turns any label into such a name.
Run directories for new runs are created by ``new_run_dir`` (removed again when the command
fails before anything was trained); ``verify_resumable`` checks a run before it is continued.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

import torch
from safetensors.torch import load as st_load

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
TRAINING_LOG_FILE = "training_log.jsonl"
# written when a sweep stopped the run early because it was forecast not to grok in budget
STOPPED_FILE = "stopped.json"
# sweep directories (interp.training.sweep): the spec, one run directory per grid point, the index
SWEEP_FILE = "sweep.json"
SWEEP_RUNS_DIR = "runs"
SWEEP_INDEX_FILE = "index.csv"
SWEEP_PHASES_FILE = "phases.json"  # interp phases
SWEEP_LOG_FILE = "sweep_log.jsonl"  # one line per run_sweep call: its wall time
SWEEP_LAW_FILE = "law.json"  # interp law
BASE_METRICS = ["epoch", "train_loss", "test_loss", "train_acc", "test_acc", "sq_total"]
# What `info` (and the analysis) say for T_mem / T_grok of a run whose accuracies were never
# recorded (imported paper files record losses only).
NO_ACCURACY_HISTORY = "unknown (no accuracy history)"

# ---------------------------------------------------------------------------------------------
# names

MAX_NAME_LEN = 100  # leaves room under NAME_MAX (255 bytes) for temp-file prefixes and suffixes
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@,-]*")


def check_name(name: Any, what: str = "name") -> str:
    """The one rule for a user-chosen name that becomes a file or directory name.

    Letters, digits and ``. _ + = @ -``, starting with a letter or digit (so never ``.``, ``..``,
    a hidden file or an option-like ``-x``), at most ``MAX_NAME_LEN`` characters: a name can
    never leave the folder it is put in. Returns the name; InterpError otherwise.
    """
    if not isinstance(name, str) or not name:
        raise InterpError(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LEN:
        raise InterpError(f"{what} is {len(name)} characters long; at most {MAX_NAME_LEN} are allowed")
    if not _NAME_RE.fullmatch(name):
        raise InterpError(
            f"{what} {name!r} is not a plain file name: use letters, digits and . _ + = @ , -, "
            "starting with a letter or digit (no '/', no '..')"
        )
    return name


def sanitize_name(label: str) -> str:
    """Turn any label (``RUN@T_mem``, a path) into a name that passes ``check_name``."""
    s = re.sub(r"[^A-Za-z0-9._+=-]+", "_", str(label).replace("@", "_at_")).strip("._-") or "unnamed"
    if not s[0].isalnum():
        s = "x" + s
    return s[:MAX_NAME_LEN]


# ---------------------------------------------------------------------------------------------
# atomic files


def _os_error(path: Path, e: OSError, doing: str = "write") -> InterpError:
    return InterpError(f"cannot {doing} {path}: {e.strerror or e}")


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def is_temp_file(name: str) -> bool:
    """A temp file left by an interrupted ``atomic_write_bytes`` (``.<name>.tmp<pid>``)."""
    return bool(re.fullmatch(r"\..+\.tmp\d+", name))


def remove_stale_temp_files(run_dir: str | os.PathLike) -> list[str]:
    """Remove the temp files a killed writer left in a run directory and its checkpoints folder.

    Call it only while holding the run's lock (``RunLock``): then no other process is writing, so
    every temp file is a leftover of a SIGKILL during an atomic write. Returns the names removed.
    """
    removed = []
    for d in (Path(run_dir), Path(run_dir) / CKPT_DIR):
        if not d.is_dir():
            continue
        for f in d.iterdir():
            if is_temp_file(f.name) and f.is_file():
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
                removed.append(f.name)
    return removed


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    On failure (full disk, read-only or missing folder) the temp file is removed and a one-line
    InterpError names ``path``; the old file is untouched.
    """
    path = Path(path)
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _os_error(path, e) from None
    except BaseException:  # KeyboardInterrupt mid-write: no temp file left behind either
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise _os_error(path, e, "open") from None
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories; the rename is done either way
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# safetensors, serialised here so that the bytes are reproducible

_ST_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _raw_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """The safetensors encoding of ``tensors`` with a stable layout: header keys sorted (metadata
    included), tensors stored in name order. The same tensors and metadata always give the same
    bytes (``safetensors.torch.save`` orders the metadata differently from call to call)."""
    header: dict[str, Any] = {"__metadata__": {str(k): str(v) for k, v in sorted(metadata.items())}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _ST_DTYPES:
            raise TypeError(f"{name}: dtype {t.dtype} cannot be stored")
        raw = _raw_bytes(t)
        header[name] = {
            "dtype": _ST_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Atomically save tensors as safetensors with a checksum in the metadata (byte-reproducible)."""
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**metadata, "sha256": _tensor_digest(cpu)}
    atomic_write_bytes(path, safetensors_bytes(cpu, meta))


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file, reading only its header (no checksum check)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if n > 100_000_000:
                raise ValueError("header too large")
            meta = json.loads(f.read(n)).get("__metadata__") or {}
    except FileNotFoundError:
        raise InterpError(f"{path}: file not found") from None
    except (OSError, ValueError, struct.error, AttributeError) as e:
        raise InterpError(f"{path}: corrupted or truncated checkpoint ({type(e).__name__})") from None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file written by ``save_tensors``; InterpError naming the file if it is damaged."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InterpError(f"{path}: file not found") from None
    except OSError as e:
        raise _os_error(path, e, "read") from None
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


def _checkpoint_epoch_of(name: str) -> Optional[int]:
    m = re.fullmatch(r"epoch_(\d+)\.safetensors", name)
    return int(m.group(1)) if m else None


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``field: saved -> current`` for each trajectory field that differs (sorted by name)."""
    out = []
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k, "<absent>"), current.get(k, "<absent>")
        if a != b:
            out.append(f"{k}: {a!r} -> {b!r}")
    return out


# ---------------------------------------------------------------------------------------------
# reading a run


def _read_config_json(path: Path) -> dict[str, Any]:
    cfg_path = path / CONFIG_FILE
    try:
        raw = json.loads(cfg_path.read_text())
    except OSError as e:
        raise _os_error(cfg_path, e, "read") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InterpError(f"{cfg_path}: unreadable run config ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
        raise InterpError(f'{cfg_path}: unreadable run config (no "config" object)')
    return raw


@dataclass
class Run:
    """A run directory opened for reading (see the module docstring for the layout)."""

    path: Path
    config: TrainConfig
    extra: Optional[dict[str, Any]] = None  # config.json beyond the config (import provenance, history)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Run":
        path = Path(path)
        if not path.exists():
            raise InterpError(f"run directory {path} does not exist")
        if not path.is_dir():
            raise InterpError(f"{path} is not a directory")
        cfg_path = path / CONFIG_FILE
        if not cfg_path.exists():
            if is_unstarted(path):
                raise InterpError(
                    f"{path} holds no run: it was interrupted before its config was written, so nothing "
                    f"was trained; start it again with `interp train --out {path} ...`"
                )
            raise InterpError(f"{path} is not a run directory (no {CONFIG_FILE})")
        raw = _read_config_json(path)
        try:
            cfg = TrainConfig.from_dict(raw["config"])
        except InterpError as e:
            raise InterpError(f"{cfg_path}: {e}") from None
        except TypeError as e:
            raise InterpError(f"{cfg_path}: unreadable run config ({e})") from None
        extra = {k: v for k, v in raw.items() if k not in ("format_version", "config_hash", "config")}
        return cls(path=path, config=cfg, extra=extra)

    @property
    def name(self) -> str:
        return self.config.run_name

    @property
    def model_config(self) -> ModelConfig:
        return self.config.model_config()

    @property
    def history(self) -> dict[str, Any]:
        """What metrics.csv records (config.json ``history``; trained runs record everything).

        Imported paper files carry ``{"accuracy": False, "test_loss_interval": k, ...}``: their
        accuracies were never recorded, so T_mem / T_grok are ``NO_ACCURACY_HISTORY``.
        """
        h = (self.extra or {}).get("history")
        return h if isinstance(h, dict) else {"accuracy": True, "test_loss_interval": self.config.eval_every}

    @property
    def accuracy_history(self) -> bool:
        """False when the run's per-epoch accuracies were never recorded (T_mem / T_grok unknown)."""
        return bool(self.history.get("accuracy", True))

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
        out = [e for e in (_checkpoint_epoch_of(f.name) for f in d.iterdir()) if e is not None]
        return sorted(out)

    def nearest_epochs(self, epoch: int, k: int = 3) -> list[int]:
        return sorted(sorted(self.checkpoint_epochs(), key=lambda e: (abs(e - epoch), e))[:k])

    def check_checkpoint_metadata(self, epoch: int, meta: Mapping[str, str]) -> None:
        """Refuse a checkpoint whose metadata epoch differs from its file name, or whose config
        differs from config.json (naming the fields that differ)."""
        path = self.checkpoint_path(epoch)
        if meta.get("epoch") != str(epoch):
            raise InterpError(
                f"{path}: its metadata says epoch {meta.get('epoch')}, its file name says {epoch}; "
                "refusing a renamed or misplaced checkpoint"
            )
        want = self.config.config_hash()
        if meta.get("config_hash") != want:
            diffs = []
            with contextlib.suppress(ValueError, TypeError):
                diffs = config_differences(json.loads(meta["config"]), self.config.hashed_fields())
            what = (
                "; ".join(diffs)
                if diffs
                else f"config hash {meta.get('config_hash')} vs {want}; this checkpoint does not record which field"
            )
            raise InterpError(
                f"{path}: checkpoint was trained with another config than {self.path / CONFIG_FILE} "
                f"({what}); restore config.json or start a new run"
            )

    def load_state_dict(self, epoch: int) -> dict[str, torch.Tensor]:
        path = self.checkpoint_path(epoch)
        if not path.exists():
            near = self.nearest_epochs(epoch)
            hint = f"; nearest available: {', '.join(map(str, near))}" if near else "; the run has no checkpoints"
            raise InterpError(f"{self.path}: no checkpoint at epoch {epoch}{hint}")
        tensors, meta = load_tensors(path)
        self.check_checkpoint_metadata(epoch, meta)
        return tensors

    def load_model(self, epoch: int | None = None, device: str = "cpu"):
        """The model at ``epoch`` (default: the last checkpoint), in eval mode."""
        from interp.config import resolve_device
        from interp.model import Transformer

        device = resolve_device(device)
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
        try:
            return pd.read_csv(path)
        except (ValueError, pd.errors.ParserError) as e:
            raise InterpError(f"{path}: unreadable metrics table ({type(e).__name__})") from None


def load_model_state(model, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model`` with a clear error when names or shapes do not match."""
    own = dict(model.named_parameters())
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise InterpError(
            f"{source}: parameter names do not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for k, prm in own.items():
        if tuple(state[k].shape) != tuple(prm.shape):
            raise InterpError(f"{source}: {k} has shape {tuple(state[k].shape)}, the model expects {tuple(prm.shape)}")
    with torch.no_grad():
        for k, prm in own.items():
            prm.copy_(state[k])


# ---------------------------------------------------------------------------------------------
# writing a run


def write_config(path: Path, cfg: TrainConfig, extra: Optional[dict[str, Any]] = None) -> None:
    body = {
        "format_version": FORMAT_VERSION,
        "config_hash": cfg.config_hash(),
        "config": cfg.to_dict(),
        **(extra or {}),
    }
    atomic_write_bytes(Path(path) / CONFIG_FILE, (json.dumps(body, indent=2) + "\n").encode())


def write_split(path: Path, split: Split) -> None:
    save_tensors(
        Path(path) / SPLIT_FILE, {"train": split.train, "test": split.test}, {"format_version": str(FORMAT_VERSION)}
    )


def checkpoint_metadata(epoch: int, cfg: TrainConfig) -> dict[str, str]:
    """Metadata of a checkpoint: its epoch, the config hash and the hashed fields themselves (so a
    config that was edited later can be named field by field)."""
    return {
        "epoch": str(epoch),
        "config_hash": cfg.config_hash(),
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(cfg.hashed_fields(), sort_keys=True),
    }


def save_checkpoint(run_dir: Path, epoch: int, model, cfg: TrainConfig) -> Path:
    """Save the weights of ``model`` (a module, or a dict name -> tensor) as the checkpoint of ``epoch``."""
    d = Path(run_dir) / CKPT_DIR
    try:
        d.mkdir(exist_ok=True)
    except OSError as e:
        raise _os_error(d, e, "create") from None
    path = d / checkpoint_name(epoch)
    state = dict(model.named_parameters()) if hasattr(model, "named_parameters") else dict(model)
    save_tensors(path, state, checkpoint_metadata(epoch, cfg))
    return path


class MetricsWriter:
    """Appends metric rows to metrics.csv.

    Each row reaches the file as soon as it is added (one ``write``, no fsync), so a killed
    process never loses a row the page cache already has; ``flush`` fsyncs (the trainer calls it
    at every checkpoint). A failed write (full disk) cuts the file back to its last whole row and
    raises a one-line InterpError naming it.
    """

    def __init__(self, path: Path, columns: list[str]):
        self.path = Path(path)
        self.columns = columns
        if not self.path.exists():
            atomic_write_bytes(self.path, (",".join(columns) + "\n").encode())
        self._fd: Optional[int] = None
        self._unsynced = False  # rows written since the last fsync

    @staticmethod
    def format_row(row: Iterable[float]) -> str:
        # the shortest repr that round-trips; floats never need CSV quoting, so a plain join
        epoch, *values = row
        return f"{int(epoch)}," + ",".join(map(repr, map(float, values))) + "\n"

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            except OSError as e:
                raise _os_error(self.path, e, "open") from None
        return self._fd

    def add(self, row: list[float]) -> None:
        self._append(self.format_row(row).encode())

    def _append(self, data: bytes) -> None:
        fd = self._open()
        size = os.fstat(fd).st_size
        try:
            n = os.write(fd, data)
            if n != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._unsynced = True
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise _os_error(self.path, e) from None

    def flush(self) -> None:
        """fsync the rows written since the last flush (none: nothing to do; the trainer flushes at
        every checkpoint and again when a run ends, often with no row in between)."""
        if self._fd is None or not self._unsynced:
            return
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise _os_error(self.path, e) from None
        self._unsynced = False

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        self.close()

    def truncate_to(self, epoch_exclusive: int) -> None:
        """Keep only rows with epoch < ``epoch_exclusive`` (rows past a resume point are recomputed)."""
        self.close()
        lines = self.path.read_text().splitlines(keepends=True)
        header, rows = lines[0], lines[1:]
        kept = []
        for line in rows:
            parts = line.rstrip("\n").split(",")
            # a torn last line (crash mid-append) has the wrong number of fields: drop it
            if len(parts) != len(self.columns) or not line.endswith("\n"):
                continue
            try:
                epoch = int(parts[0])
            except ValueError:
                continue
            if epoch < epoch_exclusive:
                kept.append(line)
        atomic_write_bytes(self.path, (header + "".join(kept)).encode())


class RunLock:
    """An exclusive flock on ``<run>/.lock``; a second trainer on the same run is refused."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _os_error(self.path, e, "create") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise InterpError(f"run directory {self.path.parent} is in use by another trainer (pid {holder})") from None
        with contextlib.suppress(OSError):  # the pid is a courtesy for the message above; a full disk may refuse it
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def save_optimizer(
    run_dir: Path, epoch: int, optimizer: torch.optim.Optimizer, names: dict[int, str], cfg: TrainConfig
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for prm in group["params"]:
            st = optimizer.state.get(prm)
            if not st:
                continue
            n = names[id(prm)]
            for k, v in st.items():
                tensors[f"{k}.{n}"] = v if torch.is_tensor(v) else torch.tensor(v)
    save_tensors(Path(run_dir) / OPTIMIZER_FILE, tensors, {"epoch": str(epoch), "config_hash": cfg.config_hash()})


def load_optimizer(run_dir: Path, optimizer: torch.optim.Optimizer, params: dict[str, torch.nn.Parameter]) -> int:
    """Restore AdamW state saved by ``save_optimizer``; returns the epoch it belongs to."""
    tensors, meta = load_tensors(Path(run_dir) / OPTIMIZER_FILE)
    if not tensors:  # saved before the first step (epoch 0): a fresh optimizer is the right state
        return int(meta["epoch"])
    for n, prm in params.items():
        st = {}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            t = tensors.get(f"{key}.{n}")
            if t is None:
                raise InterpError(f"{Path(run_dir) / OPTIMIZER_FILE}: missing optimizer state {key}.{n}")
            st[key] = t.to(prm.device)  # the fused AdamW kernel keeps "step" on the parameter's device
        optimizer.state[prm] = st
    return int(meta["epoch"])


def iter_checkpoints(run: Run, epochs: Optional[Iterable[int]] = None):
    """Yield (epoch, state_dict) for the chosen (default: all) checkpoints of a run."""
    for e in run.checkpoint_epochs() if epochs is None else epochs:
        yield e, run.load_state_dict(e)


# ---------------------------------------------------------------------------------------------
# checks before a run is continued


def verify_metrics(run_dir: str | os.PathLike, resume_epoch: int, columns: Optional[list[str]] = None) -> int:
    """Check that metrics.csv can carry a run resumed from the checkpoint of ``resume_epoch``.

    Contract (the trainer calls this before resuming, after choosing the resume epoch E from the
    optimizer file): a resumed run keeps the rows of epochs 0 .. E-1 and recomputes rows E
    onward, so metrics.csv must exist (unless E == 0), start with the header (equal to
    ``columns`` when given) and hold one well-formed row for every epoch 0 .. E-1, in order.
    Rows at E and after, and a torn last line (a crash mid-append), are allowed: the trainer
    drops them (``MetricsWriter.truncate_to(E)``). Returns the number of rows that will be kept
    (E). Otherwise raises a one-line InterpError naming the file and the first missing epoch:
    the per-epoch history cannot be recomputed from checkpoints, and resuming over the gap would
    silently move T_mem / T_grok, so the run is refused instead. Reads only; changes nothing.
    """
    path = Path(run_dir) / METRICS_FILE
    if resume_epoch <= 0:
        return 0
    if not path.exists():
        raise InterpError(
            f"{path}: missing, but the checkpoints reach epoch {resume_epoch}; the per-epoch history "
            "cannot be recomputed, so the run cannot be resumed (retrain it into a new directory)"
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InterpError(f"{path}: unreadable ({type(e).__name__})") from None
    lines = text.split("\n")
    header = lines[0].split(",")
    if header[:1] != ["epoch"] or (columns is not None and header != list(columns)):
        raise InterpError(f"{path}: unexpected header {lines[0][:80]!r}; refusing to resume over it")
    expect = 0
    for line in lines[1:]:
        if expect >= resume_epoch:
            break
        parts = line.split(",")
        try:
            epoch = int(parts[0]) if len(parts) == len(header) else None
        except ValueError:
            epoch = None
        if epoch != expect:
            break
        expect += 1
    if expect < resume_epoch:
        raise InterpError(
            f"{path}: truncated or damaged: rows stop before epoch {expect}, but the checkpoints reach "
            f"epoch {resume_epoch}; the per-epoch history cannot be recomputed, so resuming would "
            "make T_mem / T_grok wrong (retrain it into a new directory)"
        )
    return expect


def verify_resumable(
    run_dir: str | os.PathLike, overrides: Optional[Mapping[str, Any]] = None
) -> tuple[TrainConfig, int]:
    """Check a run before it is continued; returns (its config with ``overrides`` applied, resume epoch).

    Reads only, so a refused resume changes nothing. Refuses (one-line InterpError):
    config.json with wrong types; ``overrides`` outside ``config.RESUME_OVERRIDABLE`` or that
    change the config hash; ``epochs`` below the epochs already trained; a checkpoint whose
    metadata epoch differs from its file name; a newest checkpoint or optimizer file that is
    damaged or was trained with another config (naming the field); a metrics.csv that cannot
    carry the resume (``verify_metrics``). The resume epoch is the optimizer file's (0 when the
    run was interrupted before its first checkpoint completed: it starts over).
    """
    from interp.config import RESUME_OVERRIDABLE

    run = Run.open(run_dir)
    saved = run.config
    cfg = saved
    if overrides:
        fixed = sorted(k for k, v in overrides.items() if k not in RESUME_OVERRIDABLE and getattr(saved, k, v) != v)
        if fixed:
            raise InterpError(
                f"{run.path}: resuming keeps the saved config; only {', '.join(RESUME_OVERRIDABLE)} may "
                f"change, not {', '.join(fixed)}"
            )
        try:
            cfg = dataclasses.replace(saved, **overrides)
        except TypeError as e:
            raise InterpError(f"{run.path}: {e}") from None
    eps = run.checkpoint_epochs()
    # every checkpoint's header: its epoch must match its name (cheap: headers only)
    for e in eps:
        meta = read_metadata(run.checkpoint_path(e))
        if meta.get("epoch") != str(e):
            run.check_checkpoint_metadata(e, meta)
    trained = eps[-1] if eps else 0
    if overrides and "epochs" in overrides and cfg.epochs < trained:
        raise InterpError(f"{run.path}: --epochs {cfg.epochs} is below the {trained} epochs already trained")
    opt_path = run.path / OPTIMIZER_FILE
    if not opt_path.exists():
        return cfg, 0
    _, ometa = load_tensors(opt_path)
    try:
        start = int(ometa["epoch"])
    except (KeyError, ValueError):
        raise InterpError(f"{opt_path}: no epoch in its metadata") from None
    run.load_state_dict(start)  # checksum, epoch vs name, config vs config.json (names the field)
    if ometa.get("config_hash") != saved.config_hash():
        raise InterpError(
            f"{opt_path}: optimizer state belongs to another config (hash {ometa.get('config_hash')}, "
            f"config.json {saved.config_hash()})"
        )
    verify_metrics(run.path, start)
    return cfg, start


# ---------------------------------------------------------------------------------------------
# creating run directories: nothing stuck, nothing left behind by a failed command

# What a trainer writes before anything is trained (plus temp files of interrupted writes).
_UNSTARTED_ENTRIES = {LOCK_FILE, CONFIG_FILE, SPLIT_FILE, METRICS_FILE, CKPT_DIR, TRAINING_LOG_FILE}


def is_unstarted(path: str | os.PathLike) -> bool:
    """True for a directory a trainer created but never trained in: no optimizer file, no
    checkpoint, and nothing but files a trainer writes before its first checkpoint (config.json
    possibly never written: killed or failed in the first second). Such a directory can be
    cleared and started again; a non-empty directory with anything else in it cannot."""
    path = Path(path)
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    if not entries:
        return False
    for e in entries:
        if is_temp_file(e.name):
            continue
        if e.name not in _UNSTARTED_ENTRIES:
            return False
        if e.name == CKPT_DIR:
            if not e.is_dir() or any(not is_temp_file(c.name) for c in e.iterdir()):
                return False
        elif e.is_dir():
            return False
    return True


def clear_unstarted(path: str | os.PathLike) -> None:
    """Remove what an unstarted run left (see ``is_unstarted``), under its lock; the directory stays."""
    path = Path(path)
    if not is_unstarted(path):
        raise InterpError(f"{path} is not an unstarted run directory; refusing to clear it")
    with RunLock(path):
        for e in path.iterdir():
            if e.name == LOCK_FILE:
                continue
            try:
                shutil.rmtree(e) if e.is_dir() else e.unlink()
            except OSError as err:
                raise _os_error(e, err, "remove") from None
    with contextlib.suppress(OSError):
        (path / LOCK_FILE).unlink()


def check_writable_file(path: str | os.PathLike) -> Path:
    """Refuse, before any work is done, an output file that cannot be written: a directory, or a
    location whose nearest existing parent is not a writable directory. Changes nothing (so a
    report that would fail at the end fails first, leaving the stored analysis as it was)."""
    path = Path(path)
    if path.is_dir():
        raise InterpError(f"cannot write {path}: it is a directory")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InterpError(f"cannot write {path}: {parent} is not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InterpError(f"cannot write {path}: {parent} is not writable")
            break
    if path.exists() and not os.access(path.parent, os.W_OK):
        raise InterpError(f"cannot write {path}: {path.parent} is not writable")
    return path


def check_new_run_dir(path: str | os.PathLike) -> Path:
    """Refuse a path that cannot become a new run directory (a file, a run or other files in
    it); an unstarted leftover (``is_unstarted``) is accepted. Changes nothing."""
    path = Path(path)
    try:
        return _check_new_run_dir(path)
    except OSError as e:  # e.g. a name too long for the file system
        raise _os_error(path, e, "create") from None


def _check_new_run_dir(path: Path) -> Path:
    if path.exists() or path.is_symlink():
        if not path.is_dir():
            raise InterpError(f"{path} exists and is not a directory; choose another --out")
        if any(path.iterdir()) and not is_unstarted(path):
            raise InterpError(
                f"{path} already exists and is not empty; use --resume to continue it or choose another --out"
            )
    else:
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise InterpError(f"cannot create {path}: {parent} is not a directory")
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise InterpError(f"cannot create {path}: {parent} is not writable")
                break
    return path


@contextlib.contextmanager
def new_run_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Create the directory of a new run, and take it back if the command fails before anything
    was trained.

    On entry: ``check_new_run_dir``; an unstarted leftover is cleared; the directory (and any
    missing parents) is created. If the block raises (including Ctrl-C) while the directory is
    still unstarted (no checkpoint and optimizer file yet: e.g. a bad split, a full disk at
    epoch 0), what this call created is removed again, and a leftover it reused is cleared; a
    directory with trained checkpoints is kept for ``--resume``. A SIGKILL cannot be cleaned up:
    the leftover it leaves is recognised by ``is_unstarted`` and accepted by the next call.
    """
    path = check_new_run_dir(path)
    created: Optional[Path] = None
    if path.is_dir():
        if any(path.iterdir()):
            clear_unstarted(path)
    else:
        top = path
        while not top.parent.exists():
            top = top.parent
        try:
            path.mkdir(parents=True)
        except OSError as e:
            raise _os_error(path, e, "create") from None
        created = top
    try:
        yield path
    except BaseException:
        with contextlib.suppress(OSError, InterpError):
            if created is not None and (not any(path.iterdir()) or is_unstarted(path)):
                shutil.rmtree(created)
            elif is_unstarted(path):
                clear_unstarted(path)
        raise
