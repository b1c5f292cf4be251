"""Phases of learning (Liu et al. 2022, "Towards understanding grokking: an effective theory"; REFERENCE §6).

The rule, defined once here and used for transformer sweeps and the effective-theory toy model
alike: with budget B steps and gap threshold tau, t_train and t_test are the first steps with train
and test accuracy >= ``threshold`` (0.9 in the paper; never reached = B).

- comprehension: both reached and t_test - t_train < tau;
- grokking: both reached and t_test - t_train >= tau (the paper writes "> tau"; a gap of exactly
  tau is put with grokking so that every pair of times has one phase);
- memorisation: train reached, test not;
- confusion: train not reached (whether or not test was: a run that "generalises" without fitting
  its training set has learnt nothing the rule can name).

Over a sweep (``interp phases SWEEP``): ``sweep_phases`` reads each finished run's metrics.csv and
gives one row per run (its swept values, t_train, t_test, the gap and the phase; ``PhaseTable``,
the rule stored with it); ``phase_grid`` pools the runs over two swept axes (other axes, such as
seeds, aggregated) into cells holding the majority phase and the count of each phase
(``PhaseGrid``); ``write_phases`` saves both to ``SWEEP/phases.json``. Epochs are steps here: the
trainer takes one full-batch step per epoch.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from interp.analysis.phases import first_epoch_reaching  # the one first-reach rule (NaN rows skip)
from interp.errors import InterpError
from interp.store import SWEEP_PHASES_FILE

if TYPE_CHECKING:  # pandas is imported where it is used: the toy model needs only the rule
    import pandas as pd

PHASES = ("comprehension", "grokking", "memorisation", "confusion")
PHASE_THRESHOLD = 0.9  # REFERENCE §6: accuracy that counts as "reached"
PHASE_TAU = 1000  # REFERENCE §6: the authors' gap threshold, in steps


@dataclass(frozen=True)
class PhaseRule:
    """The parameters of the phase rule, stored with every classification."""

    budget: int
    tau: int = PHASE_TAU
    threshold: float = PHASE_THRESHOLD

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"phase rule: budget must be >= 1, got {self.budget}")
        if self.tau < 0:
            raise ValueError(f"phase rule: tau must be >= 0, got {self.tau}")
        if not (0.0 < self.threshold <= 1.0):
            raise ValueError(f"phase rule: threshold must lie in (0, 1], got {self.threshold}")

    def to_dict(self) -> dict:
        return asdict(self)


def classify_phase(t_train: Optional[int], t_test: Optional[int], rule: PhaseRule) -> str:
    """The phase of one run from its first-reach times (None or >= budget: not reached)."""
    train_ok = t_train is not None and t_train < rule.budget
    test_ok = t_test is not None and t_test < rule.budget
    if not train_ok:
        return "confusion"
    if not test_ok:
        return "memorisation"
    return "comprehension" if t_test - t_train < rule.tau else "grokking"


# ---------------------------------------------------------------------------------------------- sweeps


RULE_TEXT = (
    "t_train / t_test: first epoch with train / test accuracy >= threshold (not reached within the budget: "
    "null). comprehension: both reached, t_test - t_train < tau; grokking: both reached, gap >= tau; "
    "memorisation: train reached, test not; confusion: train not reached."
)
SEED_AXES = ("seed",)  # axes aggregated within a cell rather than drawn

TAU_NOTE = (
    "tau is the gap t_test - t_train, in epochs (one full-batch step per epoch), above which a run "
    "that generalises counts as grokking. The paper's tau = 1000 is meant for budgets of 1e4-1e5 steps; "
    "the `small` preset memorises in ~100 epochs and groks in hundreds to a few thousand, so at its "
    "scale tau = 1000 calls most grokking runs comprehension: set tau relative to the budget "
    "(the paper's ratio tau / B = 1/10 gives tau = 300 at B = 3000)."
)


@dataclass
class PhaseTable:
    """One row per finished run of a sweep: its swept values, t_train, t_test, gap, phase."""

    rule: PhaseRule
    axes: list[str]  # the sweep's axes (grid axes and linked points), seed included
    runs: pd.DataFrame  # run, *axes, epochs_trained, t_train, t_test, gap, phase
    skipped: list[str] = field(default_factory=list)  # runs not finished (not classified)
    source: str = ""

    @property
    def swept(self) -> list[str]:
        """Axes that take more than one value among the classified runs."""
        return [a for a in self.axes if self.runs[a].nunique(dropna=False) > 1]

    def counts(self) -> dict[str, int]:
        vc = self.runs["phase"].value_counts()
        return {p: int(vc.get(p, 0)) for p in PHASES}

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "rule": self.rule.to_dict(),
            "axes": list(self.axes),
            "counts": self.counts(),
            "skipped": list(self.skipped),
            "runs": _records(self.runs),
        }


@dataclass
class PhaseGrid:
    """The phase diagram over two axes: per cell, the majority phase and the count of each phase."""

    x: str
    y: str
    rule: PhaseRule
    cells: pd.DataFrame  # x, y, phase (majority), n, tie, one count column per phase

    @property
    def x_values(self) -> list:
        return sorted(self.cells[self.x].unique().tolist())

    @property
    def y_values(self) -> list:
        return sorted(self.cells[self.y].unique().tolist())

    def label(self, row) -> str:
        """``grokking (2/3)``: the majority phase and how many of the cell's runs it holds."""
        return f"{row['phase']} ({int(row[row['phase']])}/{int(row['n'])})" + (" tie" if row["tie"] else "")

    def labels(self) -> pd.DataFrame:
        """The table of ``label``s: rows = y values, columns = x values."""
        lab = self.cells.assign(label=self.cells.apply(self.label, axis=1))
        return lab.pivot(index=self.y, columns=self.x, values="label").reindex(
            index=self.y_values, columns=self.x_values
        )

    def format_table(self) -> str:
        tab = self.labels().fillna("-")
        tab.index = [f"{self.y}={_fmt(v)}" for v in tab.index]
        tab.columns = [f"{self.x}={_fmt(v)}" for v in tab.columns]
        return tab.to_string()

    def to_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "rule": self.rule.to_dict(), "cells": _records(self.cells)}


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _records(df: pd.DataFrame) -> list[dict]:
    """Strict-JSON records (NaN -> null, numpy scalars -> Python)."""
    return json.loads(df.to_json(orient="records"))


def run_phases(index: pd.DataFrame, metrics: Callable[[str], pd.DataFrame], rule: PhaseRule, axes: Sequence[str]):
    """Classify runs: ``index`` has a ``run`` column and the ``axes``; ``metrics(run)`` returns that
    run's metrics table (epoch, train_acc, test_acc; NaN where not evaluated). Returns the rows
    run, *axes, epochs_trained, t_train, t_test, gap, phase (t_* = NA: not reached within the budget)."""
    import pandas as pd

    rows = []
    for run in index["run"]:
        m = metrics(run)
        rows.append(
            (
                int(m["epoch"].iloc[-1]) if len(m) else 0,
                first_epoch_reaching(m["epoch"], m["train_acc"], rule.threshold),
                first_epoch_reaching(m["epoch"], m["test_acc"], rule.threshold),
            )
        )
    out = index[["run", *axes]].reset_index(drop=True).copy()
    out["epochs_trained"] = [r[0] for r in rows]
    # reached at or after the budget counts as never reached (classify_phase's rule)
    t_train = pd.array([t if t is not None and t < rule.budget else None for _, t, _ in rows], dtype="Int64")
    t_test = pd.array([t if t is not None and t < rule.budget else None for _, _, t in rows], dtype="Int64")
    out["t_train"], out["t_test"] = t_train, t_test
    out["gap"] = out["t_test"] - out["t_train"]
    out["phase"] = [
        classify_phase(None if pd.isna(a) else int(a), None if pd.isna(b) else int(b), rule)
        for a, b in zip(t_train, t_test)
    ]
    return out


def _require_sweep(path: Path) -> None:
    from interp.store import CONFIG_FILE, SWEEP_FILE

    if (path / SWEEP_FILE).is_file():
        return
    if (path / CONFIG_FILE).is_file():
        raise InterpError(
            f"{path} is a run directory, not a sweep (phases are classified across the runs of a sweep; "
            "give the sweep directory that holds runs/)"
        )
    raise InterpError(f"{path} is not a sweep directory (no {SWEEP_FILE})")


def sweep_phases(
    sweep: str | os.PathLike,
    tau: Optional[int] = None,
    budget: Optional[int] = None,
    threshold: Optional[float] = None,
) -> PhaseTable:
    """The phase of every finished run of a sweep directory.

    The budget defaults to the runs' epochs (the smallest, if ``epochs`` differs between runs, so
    that every run had the whole budget); tau to ``PHASE_TAU`` (see ``TAU_NOTE``); the threshold to
    ``PHASE_THRESHOLD``. Runs not finished (status other than done) are listed in ``skipped``.
    """
    from interp.store import SWEEP_RUNS_DIR, Run
    from interp.training.sweep import open_sweep, read_index

    path = Path(sweep)
    _require_sweep(path)
    spec, _ = open_sweep(path)
    index = read_index(path)
    done = index["status"] == "done"
    if not done.any():
        raise InterpError(f"{path}: no finished run to classify ({len(index)} runs, none done; train it first)")
    trained = min(c.epochs for c in spec.configs())
    if budget is None:
        budget = trained
    elif budget > trained:
        raise InterpError(
            f"{path}: budget {budget} exceeds the {trained} epochs the runs were given; a run not reached by "
            "then might reach later, so the budget can be at most that"
        )
    try:
        rule = PhaseRule(
            budget=int(budget),
            tau=PHASE_TAU if tau is None else int(tau),
            threshold=PHASE_THRESHOLD if threshold is None else float(threshold),
        )
    except ValueError as e:
        raise InterpError(str(e)) from None
    runs = path / SWEEP_RUNS_DIR
    table = run_phases(index[done], lambda r: Run.open(runs / r).metrics(), rule, spec.axes)
    return PhaseTable(rule, list(spec.axes), table, index.loc[~done, "run"].tolist(), str(path))


def grid_axes(table: PhaseTable, x: Optional[str] = None, y: Optional[str] = None) -> tuple[str, str]:
    """The two axes of the diagram: those given, or the two swept axes other than seed."""
    swept = [a for a in table.swept if a not in SEED_AXES]
    for name, a in (("x", x), ("y", y)):
        if a is not None and a not in table.swept:
            why = "not an axis of the sweep" if a not in table.axes else "takes one value only"
            raise InterpError(f"{table.source}: --{name} {a} is {why}; swept axes: {', '.join(table.swept) or 'none'}")
    if x is not None and x == y:
        raise InterpError(f"{table.source}: --x and --y are both {x}; give two different axes")
    if x is None or y is None:
        rest = [a for a in swept if a not in (x, y)]
        need = (x is None) + (y is None)
        if len(rest) < need:
            raise InterpError(
                f"{table.source}: a phase diagram needs two swept axes besides seed; this sweep has "
                f"{len(swept)} ({', '.join(swept) or 'none'})"
            )
        if len(rest) > need:
            raise InterpError(
                f"{table.source}: more than two swept axes ({', '.join(swept)}); choose them with --x and --y"
            )
        x = x if x is not None else rest.pop(0)
        y = y if y is not None else rest.pop(0)
    return x, y


def phase_grid(table: PhaseTable, x: Optional[str] = None, y: Optional[str] = None) -> PhaseGrid:
    """Aggregate runs into cells over axes x and y (other axes, seeds included, pooled): the
    majority phase (ties go to the earlier phase in ``PHASES`` and are flagged) and counts."""
    import pandas as pd

    x, y = grid_axes(table, x, y)
    counts = pd.crosstab([table.runs[x], table.runs[y]], table.runs["phase"])
    counts = counts.reindex(columns=list(PHASES), fill_value=0)
    top = counts.max(axis=1)
    cells = counts.reset_index()
    cells.columns.name = None
    cells["n"] = counts.sum(axis=1).to_numpy()
    cells["phase"] = counts.idxmax(axis=1).to_numpy()  # first maximum in PHASES order
    cells["tie"] = (counts.eq(top, axis=0).sum(axis=1) > 1).to_numpy()
    cells = cells[[x, y, "phase", "n", "tie", *PHASES]].sort_values([y, x]).reset_index(drop=True)
    return PhaseGrid(x, y, table.rule, cells)


def write_phases(sweep: str | os.PathLike, table: PhaseTable, grid: Optional[PhaseGrid]) -> Path:
    """``SWEEP/phases.json``: the rule, every run's row and, where drawn, the grid."""
    from interp.store import atomic_write_bytes

    body = {"format_version": 1, "definitions": RULE_TEXT, "tau_note": TAU_NOTE}
    body.update(table.to_dict())
    body["grid"] = grid.to_dict() if grid is not None else None
    out = Path(sweep) / SWEEP_PHASES_FILE
    atomic_write_bytes(out, (json.dumps(body, indent=2) + "\n").encode())
    return out
