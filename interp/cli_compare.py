"""``interp compare A B``: two checkpoints side by side (issue #4; the work is ``interp.compare``).

A and B are ``RUN``, ``RUN@EPOCH``, ``RUN@final``, ``RUN@T_mem`` or ``RUN@T_grok``. The table is
printed (``--json``: as JSON) and saved: ``-o FILE`` picks the file, its extension the format
(.json, .csv, anything else: the printed text); by default ``<run of B>/compare/<A>__<B>.json``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from .errors import InterpError


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", label).replace("@", "_at_")


def _render(comp, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(comp.to_dict(), indent=2) + "\n"
    if fmt == "csv":
        return comp.to_frame().to_csv(index_label="measure")
    return comp.format_table() + "\n"


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_specs
    from .store import atomic_write_bytes

    key_freqs: object = args.key_freqs
    if key_freqs not in ("auto", "own"):
        try:
            key_freqs = [int(x) for x in str(key_freqs).replace(",", " ").split()]
        except ValueError:
            raise InterpError(f"--key-freqs takes auto, own or frequencies like 14,35,41; got {args.key_freqs!r}") from None
        if not key_freqs:
            raise InterpError("--key-freqs is empty")
    comp = compare_specs(args.a, args.b, device=args.device, key_freqs=key_freqs, debiased_cka=args.debiased_cka)
    out = Path(args.output) if args.output else None
    if out is None:
        base = Path(comp.b.run_path) if comp.b.run_path else Path(".")
        la, lb = comp.labels
        out = base / "compare" / f"{_safe(la)}__{_safe(lb)}.json"
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


def register(subparsers) -> None:
    """Add ``compare`` to the ``interp`` command line."""
    c = subparsers.add_parser(
        "compare", help="two checkpoints side by side (memorising vs generalising)",
        description="Compare checkpoints A and B: losses, accuracies, key frequencies and their strength, Gini, FVE, "
                    "RQI, weight norms, restricted/excluded loss, and CKA between them. A and B are RUN (final "
                    "checkpoint), RUN@EPOCH, RUN@final, RUN@T_mem or RUN@T_grok.",
    )
    c.add_argument("a", metavar="A", help="checkpoint: RUN, RUN@EPOCH, RUN@final, RUN@T_mem, RUN@T_grok")
    c.add_argument("b", metavar="B", help="checkpoint, as A")
    c.add_argument("--json", action="store_true", help="print JSON instead of the table")
    c.add_argument("-o", "--output", metavar="FILE",
                   help="save to FILE (.json, .csv or text by extension; default <run of B>/compare/<A>__<B>.json)")
    c.add_argument("--key-freqs", default="auto", metavar="auto|own|K,K,...",
                   help="frequencies for restricted/excluded loss and RQI planes (default auto: those of the side "
                        "with the lower test loss, for both)")
    c.add_argument("--debiased-cka", action="store_true", help="debiased (unbiased HSIC) CKA instead of the standard one")
    c.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    c.set_defaults(func=cmd_compare)
