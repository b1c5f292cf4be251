"""The ``interp`` command line: ``train``, ``info``, ``import`` here; ``analyze``, ``compare`` and
``report`` are registered by their own modules. Every user-facing failure is an ``InterpError``
printed as one line (``interp: error: ...``) with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import typing
from typing import Any, Optional, Sequence

from .errors import InterpError

# Fields that do not change the trajectory so far (not in the config hash): a resumed run may
# be trained longer, stop at another point after grokking, or move to another device.
RESUME_OVERRIDABLE = {"epochs", "stop_after_grok", "device"}
SUBCOMMAND_MODULES = ("interp.cli_analyze", "interp.cli_compare", "interp.cli_report")


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        raise InterpError(f"{self.prog}: {message}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    from .config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        t = hints[f.name]
        if t is bool:
            p.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=f"(default {f.default})")
            continue
        base = [a for a in typing.get_args(t) if a is not type(None)][0] if typing.get_origin(t) is typing.Union else t
        p.add_argument(_flag(f.name), dest=f.name, type=base, default=None, metavar=base.__name__.upper(),
                       help=f"(default {f.default})")


def cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .config import TrainConfig, preset
    from .train import train

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None}
    if args.resume:
        fixed = sorted(set(overrides) - RESUME_OVERRIDABLE)
        if fixed:
            raise InterpError(f"--resume continues a run with its saved config; only {', '.join(_flag(k) for k in sorted(RESUME_OVERRIDABLE))} "
                              f"may change, drop {', '.join(_flag(k) for k in fixed)}")
        run = train(None, args.resume, resume=True, progress=not args.no_progress, overrides=overrides)  # type: ignore[arg-type]
    else:
        cfg = preset(args.preset, **overrides) if args.preset else TrainConfig(**overrides)
        cfg.validate()
        out = Path(args.out) if args.out else Path("checkpoints") / cfg.run_name
        resume = bool(args.resume_if_exists and (out / "config.json").exists())
        run = train(cfg, out, resume=resume, progress=not args.no_progress)
    print(f"run saved in {run.path}")
    return 0


def run_summary(path: str) -> dict[str, Any]:
    """What ``interp info`` shows, as a dict."""
    from .store import Run
    from .train import first_epoch_reaching

    run = Run.open(path)
    eps = run.checkpoint_epochs()
    out: dict[str, Any] = {"run": str(run.path), "config": run.config.to_dict(), "config_hash": run.config.config_hash(),
                           "checkpoints": len(eps), "checkpoint_epochs": [eps[0], eps[-1]] if eps else None}
    try:
        df = run.metrics()
    except InterpError:
        df = None
    if df is not None and len(df):
        last = df.iloc[-1]
        out["epochs_trained"] = int(last["epoch"])
        out["final"] = {k: float(last[k]) for k in ("train_loss", "test_loss", "train_acc", "test_acc", "sq_total")}
        out["T_mem"] = first_epoch_reaching(df, "train_acc")
        out["T_grok"] = first_epoch_reaching(df, "test_acc")
    return out


def cmd_info(args: argparse.Namespace) -> int:
    s = run_summary(args.run)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    cfg = s["config"]
    print(f"run           {s['run']}  (config hash {s['config_hash']})")
    print("config        " + ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "notes"))
    if cfg.get("notes"):
        print(f"notes         {cfg['notes']}")
    ce = s["checkpoint_epochs"]
    print(f"checkpoints   {s['checkpoints']}" + (f" (epochs {ce[0]}..{ce[1]})" if ce else ""))
    if "final" in s:
        f = s["final"]
        print(f"epochs        {s['epochs_trained']}")
        print(f"final         train loss {f['train_loss']:.3e}  test loss {f['test_loss']:.3e}  "
              f"train acc {f['train_acc']:.4f}  test acc {f['test_acc']:.4f}  sum sq weights {f['sq_total']:.1f}")
        print(f"T_mem         {s['T_mem'] if s['T_mem'] is not None else 'not reached'}  (train acc >= 0.99)")
        print(f"T_grok        {s['T_grok'] if s['T_grok'] is not None else 'not reached'}  (test acc >= 0.99)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .legacy import import_run

    src = Path(args.file)
    out = Path(args.out) if args.out else Path("checkpoints") / (args.name or src.stem)
    run = import_run(src, out, run_name=args.name)
    print(f"imported {src} -> {run.path} (epoch {run.checkpoint_epochs()[-1]})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="interp", description="Train and dissect grokking transformers on modular arithmetic.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train a run (canonical config by default)")
    t.add_argument("--preset", choices=["canonical", "quick", "memorise"], help="start from a named config")
    t.add_argument("--out", help="run directory (default checkpoints/<run-name>)")
    t.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    t.add_argument("--resume-if-exists", action="store_true", help="resume --out if it already holds a run")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_flags(t)
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("info", help="summarise a run directory")
    i.add_argument("run")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    im = sub.add_parser("import", help="import a legacy checkpoint file into a run directory")
    im.add_argument("file")
    im.add_argument("--out", help="run directory (default checkpoints/<file stem>)")
    im.add_argument("--name", help="run name")
    im.set_defaults(func=cmd_import)

    for mod in SUBCOMMAND_MODULES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue
            raise
        m.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except InterpError as e:
        print(f"interp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interp: interrupted (saved checkpoints are intact; continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
