"""Sweeps: a grid of runs trained as ensembles, one ordinary run directory each, and an index.

A ``SweepSpec`` names a base preset, fixed fields and grid axes (their cartesian product is the
set of runs). ``plan`` groups the runs that can share an ensemble (``loop.ensemble_key``) into
ensembles sized to the device's memory; ``run_sweep`` trains them, in this process or as Ray
tasks, each ensemble resuming from its members' checkpoints, so a killed sweep (or a Ray task
that died and was retried) continues where it stopped and ends bit-identical to an uninterrupted
one. The layout of a sweep directory is defined in ``interp.store`` (``SWEEP_FILE``,
``SWEEP_RUNS_DIR``, ``SWEEP_INDEX_FILE``).

Spec (TOML)::

    preset = "small"                # optional base preset
    seeds = 4                       # optional: shorthand for the axis seed = 0..3
    [fixed]                         # fields shared by every run
    epochs = 3000
    [grid]                          # axes: a list of values, or "a:b" for the integers a..b-1
    weight_decay = [0.3, 1.0, 3.0]
    [[points]]                      # optional: settings that go together (crossed with the grid)
    constant_norm = true
    weight_decay = 0.0
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from tqdm.auto import tqdm

from interp.config import PRESETS, TrainConfig, preset
from interp.errors import InterpError
from interp.store import (
    CONFIG_FILE,
    STOPPED_FILE,
    SWEEP_FILE,
    SWEEP_INDEX_FILE,
    SWEEP_LOG_FILE,
    SWEEP_RUNS_DIR,
    Run,
    atomic_write_bytes,
    clear_unstarted,
    is_unstarted,
    verify_resumable,
)
from interp.training.loop import ProgressEvent, ensemble_key, even_chunk_size, train_ensemble

SPEC_KEYS = {"preset", "fixed", "grid", "points", "seeds", "name"}
FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
NOT_SWEPT = {"run_name", "device"}  # set by the sweep itself / the command line


def parse_axis(name: str, raw: Any) -> list[Any]:
    """Values of one grid axis: a list, a scalar, ``"a:b"`` (integers a..b-1) or ``"v1,v2,..."``."""
    if isinstance(raw, list):
        values = raw
    elif isinstance(raw, str):
        text = raw.strip()
        if ":" in text and "," not in text:
            try:
                lo, hi = (int(x) for x in text.split(":"))
            except ValueError:
                raise InterpError(f"grid axis {name}: {raw!r} is not a range a:b of integers") from None
            values = list(range(lo, hi))
        else:
            values = [_parse_scalar(name, v.strip()) for v in text.split(",") if v.strip()]
    else:
        values = [raw]
    if not values:
        raise InterpError(f"grid axis {name} is empty")
    return values


def _parse_scalar(name: str, text: str) -> Any:
    """A value from the command line, typed by the config field it is for."""
    kind = FIELD_TYPES.get(name, "str")
    kind = str(kind)
    try:
        if "bool" in kind:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if "int" in kind and "float" not in kind:
            return int(text)
        if "float" in kind:
            return None if text.lower() == "none" else float(text)
    except ValueError:
        raise InterpError(f"{name}: cannot read {text!r} as {kind}") from None
    return text


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep trains: base preset, fixed fields and grid axes (cartesian product)."""

    preset: Optional[str] = None
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    points: list[dict[str, Any]] = field(default_factory=list)
    name: str = "sweep"

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "spec") -> "SweepSpec":
        unknown = set(d) - SPEC_KEYS
        if unknown:
            raise InterpError(
                f"{source}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(SPEC_KEYS))}"
            )
        grid = {k: parse_axis(k, v) for k, v in dict(d.get("grid", {})).items()}
        if "seeds" in d:
            seeds = d["seeds"]
            grid["seed"] = list(range(seeds)) if isinstance(seeds, int) else parse_axis("seed", seeds)
        points = d.get("points", [])
        if not isinstance(points, list) or not all(isinstance(q, dict) and q for q in points):
            raise InterpError(f"{source}: points must be a list of non-empty tables of fields")
        spec = cls(
            preset=d.get("preset"),
            fixed=dict(d.get("fixed", {})),
            grid=grid,
            points=[dict(q) for q in points],
            name=str(d.get("name", "sweep")),
        )
        spec.check(source)
        return spec

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "SweepSpec":
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise InterpError(f"{path}: no such spec file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise InterpError(f"{path}: not a valid TOML file ({e})") from None
        return cls.from_dict(raw, str(path))

    def check(self, source: str = "spec") -> None:
        """Unknown fields, empty axes, a field both fixed and swept, invalid values: one-line errors."""
        if self.preset is not None and self.preset not in PRESETS:
            raise InterpError(f"{source}: unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        linked = {k for q in self.points for k in q}
        for where, keys in (("fixed", self.fixed), ("grid", self.grid), ("points", linked)):
            for k in keys:
                if k not in FIELD_TYPES:
                    raise InterpError(f"{source}: [{where}] has unknown field {k!r}")
                if k in NOT_SWEPT:
                    raise InterpError(
                        f"{source}: [{where}] may not set {k!r} (the sweep names its runs; "
                        "the device is a command-line option)"
                    )
        both = (set(self.fixed) & (set(self.grid) | linked)) | (set(self.grid) & linked)
        if both:
            raise InterpError(f"{source}: {', '.join(sorted(both))} set in more than one of fixed, grid and points")
        for k, v in self.grid.items():
            if not v:
                raise InterpError(f"{source}: grid axis {k} is empty")
            if len(set(map(repr, v))) != len(v):
                raise InterpError(f"{source}: grid axis {k} repeats a value")
        for cfg in self.configs():  # every run's config validated when built (names the bad field)
            cfg.validate()

    @property
    def axes(self) -> list[str]:
        """The fields that vary between runs (grid axes, then fields of linked points)."""
        return list(self.grid) + [k for k in dict.fromkeys(k for q in self.points for k in q) if k not in self.grid]

    def grid_points(self) -> list[dict[str, Any]]:
        axes = list(self.grid)
        grid = [dict(zip(axes, values)) for values in itertools.product(*(self.grid[a] for a in axes))]
        return [{**q, **g} for q in (self.points or [{}]) for g in grid]

    def configs(self, device: str = "cpu") -> list[TrainConfig]:
        """One TrainConfig per grid point, named ``r<index>`` plus its axis values."""
        out = []
        for i, point in enumerate(self.grid_points()):
            name = "_".join([f"r{i:04d}"] + [f"{k}={_short(v)}" for k, v in point.items()])
            fields_ = {**self.fixed, **point, "run_name": name[:100], "device": device}
            try:
                out.append(preset(self.preset, **fields_) if self.preset else TrainConfig(**fields_))
            except TypeError as e:
                raise InterpError(f"spec: {e}") from None
        return out

    def to_dict(self) -> dict[str, Any]:
        d = {"preset": self.preset, "fixed": self.fixed, "grid": self.grid, "name": self.name}
        return {**d, "points": self.points} if self.points else d

    def spec_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _short(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------------------------------------- plan


def member_bytes(cfg: TrainConfig) -> int:
    """Rough peak memory of one ensemble member during a step (activations dominate)."""
    n_train = round(cfg.frac_train * cfg.p**2)
    n_test = cfg.p**2 - n_train
    per_pair_train = cfg.d_mlp * 4 + cfg.p * 8 + cfg.n_heads * 3 * 6  # pre/post/grads, logits (+float64)
    per_pair_test = cfg.d_mlp + cfg.p * 3
    n_params = (
        (cfg.p + 1 + 3) * cfg.d_model
        + 4 * cfg.n_heads * cfg.d_head * cfg.d_model
        + 2 * cfg.d_model * cfg.d_mlp
        + cfg.d_model * cfg.p
    )
    return 4 * (n_train * per_pair_train + n_test * per_pair_test + 8 * n_params)


def available_bytes(device: str) -> int:
    """Memory an ensemble may use: half of what is free (RAM, or the GPU's)."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.5)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * 0.5)
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def plan(cfgs: Sequence[TrainConfig], max_members: int = 64, memory: Optional[int] = None) -> list[list[int]]:
    """Group runs (indices into ``cfgs``) into ensembles: compatible shapes, sized to memory."""
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(cfgs):
        groups.setdefault(ensemble_key(c), []).append(i)
    out = []
    for idx in groups.values():
        budget = memory if memory is not None else available_bytes(cfgs[idx[0]].device)
        size = max(1, min(max_members, budget // max(1, max(member_bytes(cfgs[i]) for i in idx))))
        per = even_chunk_size(len(idx), size)  # no straggler ensemble of one
        out.extend(idx[k : k + per] for k in range(0, len(idx), per))
    return out


# ---------------------------------------------------------------------------------------------- sweep dir


def sweep_runs(out: Path, cfgs: Sequence[TrainConfig]) -> list[Path]:
    return [out / SWEEP_RUNS_DIR / c.run_name for c in cfgs]


def open_sweep(path: str | os.PathLike) -> tuple[SweepSpec, dict[str, Any]]:
    """The spec saved in a sweep directory; InterpError if ``path`` is not one."""
    path = Path(path)
    f = path / SWEEP_FILE
    if not f.is_file():
        raise InterpError(f"{path} is not a sweep directory (no {SWEEP_FILE})")
    try:
        body = json.loads(f.read_text())
        spec = SweepSpec.from_dict(body["spec"], str(f))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise InterpError(f"{f}: unreadable sweep file ({type(e).__name__})") from None
    if spec.spec_hash() != body.get("spec_hash"):
        raise InterpError(
            f"{f}: the spec was edited after the sweep started (hash {spec.spec_hash()} != "
            f"{body.get('spec_hash')}); start a new sweep in another directory"
        )
    return spec, body


def is_sweep(path: str | os.PathLike) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def _prepare(spec: SweepSpec, out: Path, resume: bool) -> None:
    """Write the spec (new sweep) or check it against the saved one (resume / same directory)."""
    if is_sweep(out):
        saved, _ = open_sweep(out)
        if saved.spec_hash() != spec.spec_hash():
            raise InterpError(
                f"{out} holds another sweep (spec hash {saved.spec_hash()}, this one {spec.spec_hash()}); "
                "choose another --out, or `interp sweep --resume` it with its own spec"
            )
        return
    if resume:
        raise InterpError(f"{out} is not a sweep directory (no {SWEEP_FILE}); nothing to resume")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InterpError(f"{out} exists and is not an empty directory; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    body = {
        "format_version": 1,
        "spec": spec.to_dict(),
        "spec_hash": spec.spec_hash(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_bytes(out / SWEEP_FILE, (json.dumps(body, indent=2) + "\n").encode())


# ---------------------------------------------------------------------------------------------- index

INDEX_COLUMNS = [
    "run",
    "status",
    "epochs_trained",
    "eval_every",
    "T_mem",
    "T_grok",
    "train_loss",
    "test_loss",
    "train_acc",
    "test_acc",
    "V_init",
    "V_mem",
    "V_final",
]


def run_row(cfg: TrainConfig, path: Path, axes: Sequence[str]) -> dict[str, Any]:
    """One index row: the run's hyperparameters, status, T_mem/T_grok, final metrics and V."""
    from interp.analysis import phases

    row: dict[str, Any] = {"run": cfg.run_name, **{a: getattr(cfg, a) for a in axes}}
    for f in ("lr", "weight_decay", "seed", "frac_train", "p", "optimizer", "init_scale"):
        row.setdefault(f, getattr(cfg, f))
    row.update(status="pending", epochs_trained=None, eval_every=cfg.eval_every)
    if not (path / CONFIG_FILE).exists():
        return row
    try:
        df = Run.open(path).metrics()
    except InterpError:
        return {**row, "status": "started"}
    if not len(df):
        return {**row, "status": "started"}
    last = df.iloc[-1]
    t_mem = phases.first_epoch_reaching(df["epoch"], df["train_acc"])
    t_grok = phases.first_epoch_reaching(df["epoch"], df["test_acc"])
    final = (
        cfg.epochs if cfg.stop_after_grok is None or t_grok is None else min(cfg.epochs, t_grok + cfg.stop_after_grok)
    )
    tested = df[df["test_acc"].notna()]
    sq = dict(zip(df["epoch"], df["sq_total"]))
    stopped = path / STOPPED_FILE
    status = "done" if int(last["epoch"]) >= final else "partial"
    if stopped.exists() and status == "partial":
        status = "stopped"  # by the sweep, forecast not to grok in budget (reason in STOPPED_FILE)
    row.update(
        status=status,
        epochs_trained=int(last["epoch"]),
        T_mem=t_mem,
        T_grok=t_grok,
        train_loss=float(last["train_loss"]),
        train_acc=float(last["train_acc"]),
        test_loss=float(tested["test_loss"].iloc[-1]) if len(tested) else None,
        test_acc=float(tested["test_acc"].iloc[-1]) if len(tested) else None,
        V_init=float(df["sq_total"].iloc[0]),
        V_mem=sq.get(t_mem),
        V_final=float(last["sq_total"]),
    )
    return row


def write_index(spec: SweepSpec, out: Path, cfgs: Optional[Sequence[TrainConfig]] = None):
    """Rebuild ``index.csv`` from the run directories (the runs are the truth); returns the DataFrame."""
    import pandas as pd

    cfgs = cfgs if cfgs is not None else spec.configs()
    axes = spec.axes
    rows = [run_row(c, p, axes) for c, p in zip(cfgs, sweep_runs(out, cfgs))]
    df = pd.DataFrame(rows)
    for c in INDEX_COLUMNS:
        if c not in df:
            df[c] = None
    df = df[["run"] + [c for c in df.columns if c not in INDEX_COLUMNS] + INDEX_COLUMNS[1:]]
    atomic_write_bytes(out / SWEEP_INDEX_FILE, df.to_csv(index=False).encode())
    return df


def read_index(path: str | os.PathLike):
    """The index of a sweep directory as a pandas DataFrame (rebuilt if missing)."""
    import pandas as pd

    path = Path(path)
    spec, _ = open_sweep(path)
    f = path / SWEEP_INDEX_FILE
    return pd.read_csv(f) if f.exists() else write_index(spec, path)


# ---------------------------------------------------------------------------------------------- run


class SweepBar:
    """One progress bar for a sweep: run-epochs (rate, ETA), runs done, grokked so far; with a forecast
    calibration, also the runs forecast not to grok in budget (and, with ``stop_hopeless``, stopped)."""

    def __init__(self, cfgs: Sequence[TrainConfig], enabled: bool, forecast=None, stop_hopeless: bool = False):
        from interp.theory.forecast import LiveForecaster

        self.n_runs = len(cfgs)
        self.done: set[str] = set()
        self.grokked: set[str] = set()
        self.hopeless: set[str] = set()
        self.live = LiveForecaster(forecast) if forecast is not None else None
        self.stop_hopeless = stop_hopeless
        self.bar = tqdm(
            total=sum(c.epochs for c in cfgs),
            disable=not enabled,
            unit="run-ep",
            dynamic_ncols=True,
            desc="sweep",
            smoothing=0.05,
        )

    def _postfix(self) -> dict:
        d = {"runs": f"{len(self.done)}/{self.n_runs}", "grokked": len(self.grokked)}
        if self.live is not None:
            d["stopped" if self.stop_hopeless else "forecast_no_grok"] = len(self.hopeless)
        return d

    def handler(self, cfgs: Sequence[TrainConfig], dirs: Optional[Sequence[Path]] = None):
        positions: dict[int, int] = {}

        def on(event: ProgressEvent) -> None:
            cfg = cfgs[event.member]
            # every event carries the member's epoch: the bar advances by what it has not counted yet
            self.bar.update(max(0, event.epoch - positions.get(event.member, 0)))
            positions[event.member] = max(event.epoch, positions.get(event.member, 0))
            if event.kind == "epoch":
                if event.row and event.row[4] >= 0.99:
                    self.grokked.add(cfg.run_name)
                if self.live is not None and dirs is not None:
                    f = self.live.update(dirs[event.member], event.row)
                    if f is not None and f.will_grok is False:
                        self.hopeless.add(cfg.run_name)
                        if self.stop_hopeless:
                            event.stop = f"forecast not to grok by epoch {cfg.epochs} ({f.note or 'combined'})"
                    elif f is not None:
                        self.hopeless.discard(cfg.run_name)
                return
            if event.kind == "done":
                if event.grok_epoch is not None:
                    self.grokked.add(cfg.run_name)
                if event.complete:
                    self.done.add(cfg.run_name)
                    # a run that stops early (stop_after_grok) frees the rest of its budget
                    self.bar.total -= cfg.epochs - event.epoch
                elif cfg.run_name in self.hopeless and self.stop_hopeless:
                    self.bar.total -= cfg.epochs - event.epoch
            self.bar.set_postfix(**self._postfix(), refresh=False)
            self.bar.refresh()

        return on

    def close(self) -> None:
        self.bar.set_postfix(**self._postfix())
        self.bar.close()


def _resume_flags(dirs: Sequence[Path], cfgs: Sequence[TrainConfig]) -> list[bool]:
    """Per run: continue it (it has a config: verified as ``interp train --resume`` verifies it,
    and it must be the sweep's config for that point) or start it (no directory, or an unstarted
    leftover, which is cleared)."""
    flags = []
    for d, cfg in zip(dirs, cfgs):
        if d.exists() and is_unstarted(d):
            clear_unstarted(d)
        resume = (d / CONFIG_FILE).exists()
        if resume:
            saved, _ = verify_resumable(d)
            if saved.config_hash() != cfg.config_hash():
                raise InterpError(f"{d}: holds another run than the sweep's point {cfg.run_name} (config hash differs)")
        flags.append(resume)
    return flags


def train_members(
    cfg_dicts: list[dict], dirs: list[str], threads: Optional[int] = None, on_progress: Optional[Callable] = None
) -> list[str]:
    """Train (or continue) one ensemble; the unit of work of every executor. Returns the run paths."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    cfgs = [TrainConfig.from_dict(d) for d in cfg_dicts]
    paths = [Path(d) for d in dirs]
    train_ensemble(cfgs, paths, resume=_resume_flags(paths, cfgs), on_progress=on_progress)
    return dirs


def run_sweep(
    spec: SweepSpec,
    out: str | os.PathLike,
    resume: bool = False,
    device: str = "cpu",
    executor: str = "local",
    address: Optional[str] = None,
    max_members: int = 64,
    progress: bool = True,
    threads: Optional[int] = None,
    forecast=None,
    stop_hopeless: bool = False,
):
    """Train every run of ``spec`` into ``out`` (or continue them); returns the index DataFrame.

    ``forecast``: a ``interp.theory.forecast.Calibration``; the progress bar then shows how many runs
    are forecast (after memorising) not to grok within their budget, and with ``stop_hopeless`` those
    runs are stopped there (status "stopped" in the index; their directories stay resumable)."""
    out = Path(out)
    cfgs = spec.configs(device)
    _prepare(spec, out, resume)
    t0 = time.time()
    dirs = sweep_runs(out, cfgs)
    # runs the sweep stopped early (forecast not to grok) stay stopped; `interp train --resume` continues one
    todo = [i for i, d in enumerate(dirs) if not (d / STOPPED_FILE).exists()]
    groups = [[todo[i] for i in g] for g in plan([cfgs[i] for i in todo], max_members=max_members)]
    if stop_hopeless and forecast is None:
        raise InterpError("--stop-hopeless needs a forecast calibration (--forecast-calibration)")
    if stop_hopeless and executor != "local":
        raise InterpError("--stop-hopeless works with the local executor only")
    bar = SweepBar(cfgs, progress, forecast=forecast, stop_hopeless=stop_hopeless)
    try:
        if executor == "local":
            for g in groups:
                members = [cfgs[i] for i in g]
                train_members(
                    [c.to_dict() for c in members],
                    [str(dirs[i]) for i in g],
                    threads,
                    on_progress=bar.handler(members, [dirs[i] for i in g]),
                )
                write_index(spec, out, cfgs)
        elif executor == "ray":
            from interp.training.ray_executor import run_groups

            run_groups(
                [[cfgs[i].to_dict() for i in g] for g in groups],
                [[str(dirs[i]) for i in g] for g in groups],
                device,
                address,
                bar,
                lambda: write_index(spec, out, cfgs),
                threads,
            )
        else:
            raise InterpError(f"unknown executor {executor!r}; choose local or ray")
    finally:
        bar.close()
        entry = {
            "seconds": round(time.time() - t0, 2),
            "executor": executor,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        with open(out / SWEEP_LOG_FILE, "a") as f:
            f.write(json.dumps(entry) + "\n")
    return write_index(spec, out, cfgs)


def sweep_seconds(path: str | os.PathLike) -> float:
    """Wall time spent training a sweep, summed over the ``run_sweep`` calls that worked on it
    (one stopped by an exception or Ctrl-C included, a killed one not: it wrote nothing; a call that
    found everything done adds its few seconds)."""
    f = Path(path) / SWEEP_LOG_FILE
    if not f.exists():
        return 0.0
    return sum(json.loads(line)["seconds"] for line in f.read_text().splitlines() if line.strip())
