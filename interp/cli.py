"""The ``interp`` command line: ``train``, ``info``, ``import``, ``analyze``, ``compare``, ``report``.
Every user-facing failure is an ``InterpError`` printed as one line (``interp: error: ...``) with
exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any, Optional, Sequence

from interp.config import RESUME_OVERRIDABLE
from interp.errors import InterpError


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (``interp: error: train: ...``)."""

    def error(self, message: str) -> typing.NoReturn:  # type: ignore[override]
        sub = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        raise InterpError(f"{sub}: {message}" if sub else message)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    from interp.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        t = hints[f.name]
        if t is bool:
            p.add_argument(
                _flag(f.name),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"(default {f.default})",
            )
            continue
        base = [a for a in typing.get_args(t) if a is not type(None)][0] if typing.get_origin(t) is typing.Union else t
        p.add_argument(
            _flag(f.name),
            dest=f.name,
            type=_lenient(base),
            default=None,
            metavar=base.__name__.upper(),
            help=f"(default {f.default})",
        )


def _lenient(base: type):
    """Parse a flag value as its field's type where it is one, and otherwise pass it on as given
    (``2.5`` for an int field, ``abc`` for a number): TrainConfig then refuses it with the same
    message as the Python API (``epochs must be an integer, got 2.5``)."""
    if base is str:
        return str

    def parse(text: str):
        for conv in (int, float) if base is int else (float,):
            try:
                return conv(text)
            except ValueError:
                pass
        return text

    parse.__name__ = base.__name__
    return parse


def _explicit_config(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the flags given on the command line, those plus the preset's fields)."""
    from interp.config import PRESETS, TrainConfig

    given = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name) is not None
    }
    return given, {**(PRESETS[args.preset] if args.preset else {}), **given}


def _resume(path: Path, overrides: dict[str, Any], progress: bool, forecast=None):
    """Continue the run in ``path`` (``train`` verifies it first: ``store.verify_resumable``)."""
    from interp.training.loop import train

    return train(None, path, resume=True, progress=progress, overrides=overrides or None, forecast=forecast)  # type: ignore[arg-type]


def cmd_train(args: argparse.Namespace) -> int:
    from interp.config import TrainConfig, preset
    from interp.store import CONFIG_FILE, Run, config_differences, is_unstarted
    from interp.training.loop import train

    overrides, explicit = _explicit_config(args)
    progress = not args.no_progress
    if args.resume:
        # nothing the user typed is ignored: --preset / --out / --resume-if-exists name another run
        # or config, and only the fields of RESUME_OVERRIDABLE may change
        for flag, given in (
            ("--preset", args.preset),
            ("--out", args.out),
            ("--resume-if-exists", args.resume_if_exists),
        ):
            if given:
                raise InterpError(f"--resume {args.resume} continues that run with its saved config; drop {flag}")
        fixed = sorted(set(overrides) - set(RESUME_OVERRIDABLE))
        if fixed:
            raise InterpError(
                f"--resume continues a run with its saved config; only {', '.join(_flag(k) for k in RESUME_OVERRIDABLE)} "
                f"may change, drop {', '.join(_flag(k) for k in fixed)}"
            )
        run = _resume(Path(args.resume), overrides, progress, _forecast_calibration(args))
        print(f"run saved in {run.path}")
        return 0
    cfg = preset(args.preset, **overrides) if args.preset else TrainConfig(**overrides)
    out = Path(args.out) if args.out else Path("checkpoints") / cfg.run_name
    if args.resume_if_exists and (out / CONFIG_FILE).exists() and not is_unstarted(out):
        saved = Run.open(out).config
        # every flag (and preset field) must agree with the saved run, except those a resume may change
        differ = [k for k, v in explicit.items() if k not in RESUME_OVERRIDABLE and getattr(saved, k) != v]
        if differ:
            diffs = config_differences({k: getattr(saved, k) for k in differ}, {k: explicit[k] for k in differ})
            raise InterpError(
                f"--resume-if-exists: {out} holds a run with another config ({'; '.join(diffs)}); "
                "drop those flags to resume it, or choose another --out"
            )
        changes = {k: v for k, v in explicit.items() if k in RESUME_OVERRIDABLE and getattr(saved, k) != v}
        if changes:
            print(
                f"resuming {out} with "
                + ", ".join(f"{k}={v!r} (was {getattr(saved, k)!r})" for k, v in changes.items())
            )
        run = _resume(out, changes, progress, _forecast_calibration(args))
    else:  # train() creates the directory through store.new_run_dir (an unstarted leftover is reused)
        run = train(cfg, out, resume=False, progress=progress, forecast=_forecast_calibration(args))
    print(f"run saved in {run.path}")
    return 0


def _forecast_calibration(args: argparse.Namespace):
    """The calibration of ``--forecast-calibration SWEEP|FILE`` (None when not given)."""
    if not getattr(args, "forecast_calibration", None):
        return None
    from interp.theory.forecast import load_calibration

    return load_calibration(args.forecast_calibration)


def run_summary(path: str) -> dict[str, Any]:
    """What ``interp info`` shows, as a dict. T_mem / T_grok come from ``interp.analysis.phases``
    (first epoch with train / test accuracy >= its threshold); for a run without accuracy history
    (imported paper files) both are ``store.NO_ACCURACY_HISTORY``."""
    from interp.analysis.phases import first_epoch_reaching
    from interp.store import NO_ACCURACY_HISTORY, Run

    run = Run.open(path)
    eps = run.checkpoint_epochs()
    out: dict[str, Any] = {
        "run": str(run.path),
        "config": run.config.to_dict(),
        "config_hash": run.config.config_hash(),
        "checkpoints": len(eps),
        "checkpoint_epochs": [eps[0], eps[-1]] if eps else None,
    }
    try:
        df = run.metrics()
    except InterpError:
        df = None
    if df is not None and len(df):
        last = df.iloc[-1]
        out["epochs_trained"] = int(last["epoch"])
        out["final"] = {k: float(last[k]) for k in ("train_loss", "test_loss", "train_acc", "test_acc", "sq_total")}
        if run.accuracy_history:
            out["T_mem"] = first_epoch_reaching(df["epoch"], df["train_acc"])
            out["T_grok"] = first_epoch_reaching(df["epoch"], df["test_acc"])
        else:
            out["T_mem"] = out["T_grok"] = NO_ACCURACY_HISTORY
    if run.extra:
        out.update({k: v for k, v in run.extra.items() if k in ("import", "history")})
    return out


def cmd_info(args: argparse.Namespace) -> int:
    from interp.training.sweep import is_sweep

    if is_sweep(args.run):
        return _sweep_info(args.run, args.json)
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
        print(
            f"final         train loss {f['train_loss']:.3e}  test loss {f['test_loss']:.3e}  "
            f"train acc {f['train_acc']:.4f}  test acc {f['test_acc']:.4f}  sum sq weights {f['sq_total']:.1f}"
        )
        print(f"T_mem         {s['T_mem'] if s['T_mem'] is not None else 'not reached'}  (train acc >= 0.99)")
        print(f"T_grok        {s['T_grok'] if s['T_grok'] is not None else 'not reached'}  (test acc >= 0.99)")
    if "history" in s:
        for note in s["history"].get("notes", []):
            print(f"history       {note}")
    if "import" in s:
        imp = s["import"]
        print(f"imported      {imp.get('file')} ({imp.get('format')} format)")
        if imp.get("from_file"):
            print("  from file   " + ", ".join(f"{k}={v}" for k, v in imp["from_file"].items()))
        if imp.get("assumed"):
            print("  assumed     " + ", ".join(f"{k}={v}" for k, v in imp["assumed"].items()))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from interp.legacy import import_run
    from interp.store import check_name, sanitize_name

    src = Path(args.file)
    if args.name is not None:
        check_name(args.name, "--name")
    out = Path(args.out) if args.out else Path("checkpoints") / (args.name or sanitize_name(src.stem))
    run = import_run(src, out, run_name=args.name)
    print(f"imported {src} -> {run.path} (epoch {run.checkpoint_epochs()[-1]})")
    return 0


def _fmt_interval(iv) -> str:
    return "-" if iv is None else f"{iv[0]} .. {iv[1]}"


def cmd_analyze(args: argparse.Namespace) -> int:
    from interp.analysis.results import TABLE_FILE, json_safe
    from interp.analysis.run_table import analyze

    table, s = analyze(
        args.run,
        key_freqs=args.key_freqs,
        progress=not (args.json or args.no_progress),
        recompute=args.recompute,
        spectra=args.spectra,
    )
    if args.json:
        print(json.dumps(json_safe(s.to_dict()), indent=2))
        return 0
    ph = s.phases
    f = s.final
    print(
        f"run              {s.run}  ({s.task} mod {s.p}; {s.n_checkpoints} checkpoints, epochs "
        f"{s.first_epoch}..{s.final_epoch}; {s.computed} analysed now)"
    )
    print(f"key frequencies  {', '.join(map(str, s.key_freqs)) or 'none'}  ({s.key_freqs_source})")
    if s.key_freqs_source == "user":
        print(f"                 final checkpoint's own: {', '.join(map(str, s.final_key_freqs)) or 'none'}")
    agree = set(s.final_embedding_freqs) == set(s.final_key_freqs)
    print(
        f"embedding check  {', '.join(map(str, s.final_embedding_freqs)) or 'none'}  "
        f"({'agrees' if agree else 'differs from the neuron clusters'})"
    )
    print(f"T_mem            {ph.describe('t_mem')}  (train acc >= 0.99)")
    print(f"T_grok           {ph.describe('t_grok')}  (test acc >= 0.99)")
    print(f"memorisation     {_fmt_interval(ph.memorisation)}")
    print(f"circuit form.    {_fmt_interval(ph.circuit_formation)}")
    print(f"cleanup          {_fmt_interval(ph.cleanup)}")
    for n in ph.notes:
        print(f"note             {n}")
    print(
        f"final            train loss {f['train_loss']:.3e}  test loss {f['test_loss']:.3e}  "
        f"test acc {f['test_acc']:.4f}"
    )
    print(f"                 restricted loss {f['restricted_loss']:.3e}  excluded loss {f['excluded_loss']:.3e}")
    if f["excluded_loss_per_freq"]:
        per = "  ".join(f"k={k}: {v:.3e}" for k, v in f["excluded_loss_per_freq"].items())
        print(f"                 excluded loss per frequency  {per}")
    print(
        f"                 Gini W_E {f['gini_W_E']:.3f}  W_L {f['gini_W_L']:.3f}  neurons FVE>0.85 "
        f"{f['frac_neurons_fve']:.1%}  sum sq weights {f['sq_total']:.1f}"
    )
    if f.get("rqi") is not None:
        print(f"                 RQI {f['rqi']:.3f} (circle chart on the key-frequency planes)")
    print(f"table            {s.run}/{TABLE_FILE}")
    return 0


def _register_analyze(subparsers) -> None:
    p = subparsers.add_parser("analyze", help="progress measures, key frequencies and phases of every checkpoint")
    p.add_argument("run", help="run directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON only")
    p.add_argument(
        "--key-freqs",
        metavar="K1,K2,...",
        help="frequencies for restricted/excluded loss (default: the final checkpoint's key frequencies)",
    )
    p.add_argument("--recompute", action="store_true", help="ignore the saved table and analyse every checkpoint")
    p.add_argument(
        "--spectra",
        action="store_true",
        help="also the HTSR alpha and correlation traps of every weight matrix (interp.analysis.spectra; "
        "~0.5 s per canonical checkpoint; kept once computed)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_analyze)


def _render(comp, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(comp.to_dict(), indent=2) + "\n"
    if fmt == "csv":
        return comp.to_frame().to_csv(index_label="measure")
    return comp.format_table() + "\n"


def cmd_compare(args: argparse.Namespace) -> int:
    from interp.analysis.compare import compare_specs, output_path
    from interp.analysis.fourier import parse_frequencies
    from interp.store import atomic_write_bytes

    key_freqs: object = args.key_freqs
    if key_freqs not in ("auto", "own"):
        key_freqs = parse_frequencies(key_freqs)
    comp = compare_specs(args.a, args.b, device=args.device, key_freqs=key_freqs, debiased_cka=args.debiased_cka)
    out = Path(args.output) if args.output else output_path(comp, ".json")
    fmt = {".json": "json", ".csv": "csv"}.get(out.suffix.lower(), "text")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, _render(comp, fmt).encode())
    except OSError as e:
        raise InterpError(f"cannot write {out}: {e.strerror or e}") from None
    if args.json:
        print(_render(comp, "json"), end="")
    else:
        print(_render(comp, "text"), end="")
        print(f"saved to {out}")
    return 0


def _register_compare(subparsers) -> None:
    """Add ``compare`` to the ``interp`` command line."""
    c = subparsers.add_parser(
        "compare",
        help="two checkpoints side by side (memorising vs generalising)",
        description="Compare checkpoints A and B: losses, accuracies, key frequencies and their strength, Gini, FVE, "
        "RQI, weight norms, restricted/excluded loss, and CKA between them. A and B are RUN (final "
        "checkpoint), RUN@EPOCH, RUN@final, RUN@T_mem or RUN@T_grok.",
    )
    c.add_argument("a", metavar="A", help="checkpoint: RUN, RUN@EPOCH, RUN@final, RUN@T_mem, RUN@T_grok")
    c.add_argument("b", metavar="B", help="checkpoint, as A")
    c.add_argument("--json", action="store_true", help="print JSON instead of the table")
    c.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="save to FILE (.json, .csv or text by extension; default <run of B>/compare/<A>__<B>.json)",
    )
    c.add_argument(
        "--key-freqs",
        default="auto",
        metavar="auto|own|K,K,...",
        help="frequencies for restricted/excluded loss and RQI planes (default auto: those of the side "
        "with the lower test loss, for both)",
    )
    c.add_argument(
        "--debiased-cka", action="store_true", help="debiased (unbiased HSIC) CKA instead of the standard one"
    )
    c.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    c.set_defaults(func=cmd_compare)


def cmd_report(args: argparse.Namespace) -> int:
    from interp.training.sweep import is_sweep
    from interp.viz.report import file_size, write_comparison_report, write_report

    if len(args.runs) == 1 and is_sweep(args.runs[0]):
        from interp.viz.sweep import write_sweep_report

        out = write_sweep_report(args.runs[0], args.output)
    elif len(args.runs) == 1:
        from interp.analysis.compare import parse_spec

        path, when = parse_spec(args.runs[0])
        if when is not None:
            raise InterpError(
                f"a run report takes a run directory, not a checkpoint ({args.runs[0]!r}); "
                "to look at one checkpoint against another use `interp report A B`"
            )
        out = write_report(path, args.output, progress=not args.no_progress)
    elif len(args.runs) == 2:
        out = write_comparison_report(args.runs[0], args.runs[1], args.output)
    else:
        raise InterpError(f"report takes one run or two checkpoints, got {len(args.runs)}")
    print(f"report written to {out} ({file_size(out)})")
    sys.stdout.flush()
    return 0


def _register_report(subparsers) -> None:
    """Add ``report`` to the ``interp`` command line."""
    r = subparsers.add_parser(
        "report",
        help="self-contained HTML report of a run, or of two checkpoints side by side",
        description="Write one HTML file that works offline (plotly.js embedded): for one RUN, a summary (config, "
        "T_mem, T_grok, phases, key frequencies), every figure, and T_mem against the final checkpoint; "
        "for A B (RUN, RUN@EPOCH, RUN@final, RUN@T_mem, RUN@T_grok), the two side by side.",
    )
    r.add_argument("runs", nargs="+", metavar="RUN", help="a run directory, or two checkpoints A B")
    r.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="where to write (default <RUN>/report.html, or <run of B>/compare/<A>__<B>.html)",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar while analysing")
    r.set_defaults(func=cmd_report)


def _sweep_spec(args: argparse.Namespace):
    """The spec of ``interp sweep``: a TOML file, and/or --preset/--set/--grid/--seeds on the command line."""
    from interp.training.sweep import SweepSpec, parse_axis

    raw: dict[str, Any] = {}
    if args.spec:
        raw = SweepSpec.from_toml(args.spec).to_dict()
    if args.preset:
        raw["preset"] = args.preset
    fixed, grid = dict(raw.get("fixed", {})), dict(raw.get("grid", {}))
    for item in args.set or []:
        k, v = _key_value(item, "--set")
        fixed[k] = parse_axis(k, v)[0]
    for item in args.grid or []:
        k, v = _key_value(item, "--grid")
        grid[k] = parse_axis(k, v)
    raw.update(fixed=fixed, grid=grid)
    if args.seeds is not None:
        raw["seeds"] = args.seeds
    return SweepSpec.from_dict({k: v for k, v in raw.items() if v is not None}, "command line")


def _key_value(item: str, flag: str) -> tuple[str, str]:
    if "=" not in item:
        raise InterpError(f"{flag} takes FIELD=VALUES, got {item!r}")
    k, v = item.split("=", 1)
    return k.strip().replace("-", "_"), v


def cmd_sweep(args: argparse.Namespace) -> int:
    from interp.training.sweep import open_sweep, run_sweep

    if args.resume:
        if args.spec or args.grid or args.set or args.preset or args.seeds is not None:
            given = _sweep_spec(args)
            saved, _ = open_sweep(args.resume)
            if given.spec_hash() != saved.spec_hash():
                raise InterpError(f"--resume continues {args.resume} with its saved spec; the spec given here differs")
        spec, _ = open_sweep(args.resume)
        out = args.resume
    else:
        if not args.out:
            raise InterpError("sweep needs --out DIR (or --resume DIR)")
        spec = _sweep_spec(args)
        if not spec.grid and not spec.points:
            raise InterpError("the sweep has no grid axis: give --grid FIELD=VALUES, a [grid] table or [[points]]")
        out = args.out
    if args.max_members < 1:
        raise InterpError(f"--max-members must be >= 1, got {args.max_members}")
    index = run_sweep(
        spec,
        out,
        resume=bool(args.resume) or Path(out, "sweep.json").exists(),
        device=args.device,
        executor=args.executor,
        address=args.address,
        max_members=args.max_members,
        progress=not args.no_progress,
        threads=args.threads,
        forecast=_forecast_calibration(args),
        stop_hopeless=args.stop_hopeless,
    )
    done = int((index["status"] == "done").sum())
    print(
        f"sweep {out}: {done}/{len(index)} runs done, {int(index['T_grok'].notna().sum())} grokked; index {out}/index.csv"
    )
    return 0


def _sweep_info(path: str, as_json: bool) -> int:
    from interp.training.sweep import open_sweep, read_index

    spec, body = open_sweep(path)
    df = read_index(path)
    if as_json:
        print(
            json.dumps(
                {"sweep": path, "spec": spec.to_dict(), "index": json.loads(df.to_json(orient="records"))}, indent=2
            )
        )
        return 0
    print(f"sweep         {path}  (spec hash {body['spec_hash']}, {len(df)} runs)")
    print(f"preset        {spec.preset or '-'}; fixed " + (", ".join(f"{k}={v}" for k, v in spec.fixed.items()) or "-"))
    print("grid          " + "; ".join(f"{k} = {', '.join(map(str, v))}" for k, v in spec.grid.items()))
    if spec.points:
        print("points        " + "; ".join(", ".join(f"{k}={v}" for k, v in q.items()) for q in spec.points))
    counts = df["status"].value_counts().to_dict()
    print(
        "status        "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + f"; {int(df['T_grok'].notna().sum())} grokked"
    )
    cols = ["run", *spec.axes, "status", "epochs_trained", "T_mem", "T_grok", "test_acc", "V_mem", "V_final"]
    print(df[[c for c in cols if c in df]].to_string(index=False))
    return 0


def _register_sweep(subparsers) -> None:
    s = subparsers.add_parser(
        "sweep",
        help="train a grid of runs (ensembles on one device, or Ray tasks)",
        description="Train every point of a grid into DIR/runs/<name> (ordinary run directories) and keep an "
        "index DIR/index.csv. SPEC is a TOML file (preset, seeds, [fixed], [grid]); the same can be "
        "said with --preset, --set FIELD=VALUE, --grid FIELD=V1,V2 or FIELD=A:B, --seeds N.",
    )
    s.add_argument("spec", nargs="?", help="TOML spec file")
    s.add_argument("--out", help="sweep directory")
    s.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR with its saved spec")
    s.add_argument("--preset", help="base preset of every run")
    s.add_argument("--set", action="append", metavar="FIELD=VALUE", help="a field fixed for every run")
    s.add_argument("--grid", action="append", metavar="FIELD=VALUES", help="a grid axis: V1,V2,... or A:B")
    s.add_argument("--seeds", type=int, help="shorthand for --grid seed=0:N")
    s.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    s.add_argument("--executor", choices=["local", "ray"], default="local", help="in this process, or Ray tasks")
    s.add_argument(
        "--address", help="Ray cluster address (auto, HOST:6379 or ray://HOST:10001); default: a local instance"
    )
    s.add_argument(
        "--max-members", type=int, default=64, help="largest ensemble (default 64; memory may make it smaller)"
    )
    s.add_argument("--threads", type=int, help="torch threads per ensemble (default: torch's)")
    s.add_argument(
        "--forecast-calibration",
        metavar="SWEEP|FILE",
        help="show how many runs are forecast (after memorising) not to grok in budget (interp.theory.forecast)",
    )
    s.add_argument(
        "--stop-hopeless",
        action="store_true",
        help="stop runs forecast not to grok within their budget (index status 'stopped'; needs "
        "--forecast-calibration)",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sweep)


def cmd_law(args: argparse.Namespace) -> int:
    from interp.store import SWEEP_LAW_FILE, SWEEP_RUNS_DIR, Run, atomic_write_bytes
    from interp.theory.delay_law import delay_law, format_law
    from interp.training.sweep import is_sweep, read_index

    if not is_sweep(args.sweep):
        raise InterpError(f"{args.sweep} is not a sweep directory (the delay law is fitted across the runs of a sweep)")
    index = read_index(args.sweep)
    law = delay_law(index, lambda run: Run.open(Path(args.sweep) / SWEEP_RUNS_DIR / run).metrics(), source=args.sweep)
    body = json.dumps(law.to_dict(), indent=2, default=float) + "\n"
    atomic_write_bytes(Path(args.sweep) / SWEEP_LAW_FILE, body.encode())
    print(body if args.json else format_law(law))
    return 0


def _register_law(subparsers) -> None:
    s = subparsers.add_parser(
        "law",
        help="fit the norm-separation delay law on a sweep (REFERENCE §5)",
        description="T_grok vs 1/lambda and vs 1/eta, the delay vs ln(V_mem/V_final)/(eta "
        "lambda), escape times; saved to SWEEP/law.json.",
    )
    s.add_argument("sweep", help="sweep directory")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_law)


def cmd_forecast(args: argparse.Namespace) -> int:
    from interp.store import Run
    from interp.theory.forecast import forecast_run, format_run_forecast, load_calibration
    from interp.training.sweep import is_sweep

    if is_sweep(args.run):
        raise InterpError(f"{args.run} is a sweep directory; forecast one of its runs (its runs/ subdirectories)")
    Run.open(args.run)  # a one-line error when it is not a run directory
    cal = load_calibration(args.calibration, exclude=args.run)
    if args.save_calibration:
        cal.save(args.save_calibration)
    rf = forecast_run(args.run, cal, at=args.at)
    print(json.dumps(rf.to_dict(), indent=2, default=float) if args.json else format_run_forecast(rf))
    return 0


def _register_forecast(subparsers) -> None:
    s = subparsers.add_parser(
        "forecast",
        help="forecast whether and when a run will grok (delay law, norm contraction, Fourier trend)",
        description="From the run's history so far (or up to --at), each forecaster calibrated on a sweep "
        "predicts T_grok with a 95%% interval and whether it falls within the run's budget "
        "(interp.theory.forecast).",
    )
    s.add_argument("run", help="run directory")
    s.add_argument(
        "--calibration",
        required=True,
        metavar="SWEEP|FILE",
        help="a sweep directory to calibrate on (the run itself left out) or a saved calibration JSON",
    )
    s.add_argument("--at", type=int, metavar="EPOCH", help="forecast from the history up to this epoch")
    s.add_argument("--save-calibration", metavar="FILE", help="also write the calibration to FILE (JSON)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_forecast)


def cmd_phases(args: argparse.Namespace) -> int:
    from interp.theory.phase_diagram import PHASES, phase_grid, sweep_phases, write_phases

    table = sweep_phases(args.sweep, tau=args.tau, budget=args.budget, threshold=args.threshold)
    grid = phase_grid(table, args.x, args.y)
    out = write_phases(args.sweep, table, grid)
    if args.json:
        print(out.read_text(), end="")
        return 0
    r = table.rule
    print(
        f"phases of {args.sweep}: {len(table.runs)} runs (budget {r.budget} epochs, tau {r.tau}, "
        f"accuracy >= {r.threshold})" + (f"; {len(table.skipped)} unfinished runs left out" if table.skipped else "")
    )
    print("runs per phase: " + ", ".join(f"{p} {table.counts()[p]}" for p in PHASES))
    print(f"majority phase per cell ({grid.y} down, {grid.x} across; other axes pooled):")
    print(grid.format_table())
    print(f"saved to {out}")
    return 0


def _register_phases(subparsers) -> None:
    s = subparsers.add_parser(
        "phases",
        help="phase diagram of a sweep: comprehension, grokking, memorisation, confusion (REFERENCE §6)",
        description="Classify every finished run of SWEEP by t_train / t_test (first epoch with train / test "
        "accuracy >= the threshold) and draw the majority phase over two swept axes, other axes (seeds) "
        "pooled; saved to SWEEP/phases.json.",
    )
    s.add_argument("sweep", help="sweep directory")
    s.add_argument("--x", metavar="AXIS", help="axis across (default: the swept axes other than seed)")
    s.add_argument("--y", metavar="AXIS", help="axis down")
    s.add_argument(
        "--tau",
        type=int,
        help="gap t_test - t_train (epochs) from which a run groks (default 1000, the paper's, for budgets of "
        "1e4-1e5; the small preset groks within hundreds of epochs: try budget / 10)",
    )
    s.add_argument("--budget", type=int, help="epochs B: reached later counts as never (default: the runs' epochs)")
    s.add_argument("--threshold", type=float, help="accuracy that counts as reached (default 0.9)")
    s.add_argument("--json", action="store_true", help="print phases.json instead of the table")
    s.set_defaults(func=cmd_phases)


def build_parser() -> argparse.ArgumentParser:
    from interp import __version__

    parser = Parser(prog="interp", description="Train and dissect grokking transformers on modular arithmetic.")
    parser.add_argument("--version", action="version", version=f"interp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train a run (canonical config by default)")
    from interp.config import PRESETS

    t.add_argument("--preset", choices=list(PRESETS), help="start from a named config")
    t.add_argument("--out", help="run directory (default checkpoints/<run-name>)")
    t.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    t.add_argument("--resume-if-exists", action="store_true", help="resume --out if it already holds a run")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument(
        "--forecast-calibration",
        metavar="SWEEP|FILE",
        help="show the forecast T_grok in the progress bar once the run has memorised (interp.theory.forecast)",
    )
    _add_config_flags(t)
    t.set_defaults(func=cmd_train)

    i = sub.add_parser("info", help="summarise a run directory, or print a sweep's index")
    i.add_argument("run")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    im = sub.add_parser("import", help="import a legacy checkpoint file into a run directory")
    im.add_argument("file")
    im.add_argument("--out", help="run directory (default checkpoints/<file stem>)")
    im.add_argument("--name", help="run name")
    im.set_defaults(func=cmd_import)

    _register_analyze(sub)
    _register_compare(sub)
    _register_report(sub)
    _register_sweep(sub)
    _register_law(sub)
    _register_phases(sub)
    _register_forecast(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers below
        return code
    except InterpError as e:
        return _fail(str(e))
    except BrokenPipeError:
        # `interp info RUN | head -1`: the reader left; end quietly like other command-line tools
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the closed pipe
    except OSError as e:
        # the machine refused (full disk, read-only or missing location, name too long): one line
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        print("interp: interrupted (saved checkpoints are intact; continue with --resume)", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    try:
        print(f"interp: error: {first}", file=sys.stderr)
    except OSError:
        pass
    return 2


if __name__ == "__main__":
    sys.exit(main())
