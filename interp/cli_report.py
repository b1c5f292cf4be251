"""``interp report``: the self-contained HTML report of a run, or of two checkpoints (issue #5).

``interp report RUN [-o FILE]`` writes ``<RUN>/report.html`` by default; ``interp report A B``
compares two checkpoints (``RUN``, ``RUN@EPOCH``, ``RUN@final``, ``RUN@T_mem``, ``RUN@T_grok``) and
writes ``<run of B>/compare/<A>__<B>.html`` by default. Prints the written path and its size.
"""

from __future__ import annotations

import argparse
import sys


def cmd_report(args: argparse.Namespace) -> int:
    from .errors import InterpError
    from .report import file_size, write_comparison_report, write_report

    if len(args.runs) == 1:
        from .compare import parse_spec

        path, when = parse_spec(args.runs[0])
        if when is not None:
            raise InterpError(f"a run report takes a run directory, not a checkpoint ({args.runs[0]!r}); "
                              "to look at one checkpoint against another use `interp report A B`")
        out = write_report(path, args.output, progress=not args.no_progress)
    elif len(args.runs) == 2:
        out = write_comparison_report(args.runs[0], args.runs[1], args.output)
    else:
        raise InterpError(f"report takes one run or two checkpoints, got {len(args.runs)}")
    print(f"report written to {out} ({file_size(out)})")
    sys.stdout.flush()
    return 0


def register(subparsers) -> None:
    """Add ``report`` to the ``interp`` command line."""
    r = subparsers.add_parser(
        "report", help="self-contained HTML report of a run, or of two checkpoints side by side",
        description="Write one HTML file that works offline (plotly.js embedded): for one RUN, a summary (config, "
                    "T_mem, T_grok, phases, key frequencies), every figure, and T_mem against the final checkpoint; "
                    "for A B (RUN, RUN@EPOCH, RUN@final, RUN@T_mem, RUN@T_grok), the two side by side.")
    r.add_argument("runs", nargs="+", metavar="RUN", help="a run directory, or two checkpoints A B")
    r.add_argument("-o", "--output", metavar="FILE",
                   help="where to write (default <RUN>/report.html, or <run of B>/compare/<A>__<B>.html)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar while analysing")
    r.set_defaults(func=cmd_report)
