"""Two checkpoints side by side: memorising versus generalising (issue #4).

``compare(a, b)`` takes two models (or ``Checkpoint``s resolved from ``RUN@EPOCH`` specs) and
returns a ``Comparison``: for each side the progress measures of REFERENCE §3
(``interp.analysis.measures.progress_measures``), the key frequencies and their strength, the neuron FVE,
the RQI of the embedding (REFERENCE §6, ``interp.analysis.representation``), weight norms, and, between
the two sides, the linear CKA of the final residual stream and of the MLP activations
(``interp.analysis.cka``). ``Comparison.to_frame()`` is the side-by-side table; ``format_table()`` the text
that ``interp compare`` prints.

Which frequencies restricted / excluded loss and the RQI planes use (``key_freqs``):

* ``"auto"`` (default): one set for both sides, the key frequencies of the side that generalises
  better (lower test loss; with neither split, lower loss), or of the other side if it has none.
  This is the paper's convention (the generalised model's frequencies, applied to every
  checkpoint), and it makes the two columns measure the same thing.
* ``"own"``: each side its own key frequencies.
* a list of ints: those, for both sides.

Checkpoint specs (``resolve_checkpoint``): ``RUN`` (its final checkpoint), ``RUN@EPOCH``,
``RUN@final``, ``RUN@T_mem``, ``RUN@T_grok``. T_mem / T_grok are the first epochs with train / test
accuracy >= 0.99 (REFERENCE §5, from the per-epoch metrics); the spec resolves to the first
checkpoint at or after that epoch (the first saved model past the threshold).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from jaxtyping import Float
from torch import Tensor

from interp.analysis import measures as ms
from interp.analysis.cka import linear_cka
from interp.analysis.fourier import check_frequencies, frame
from interp.analysis.representation import embedding_rqi, embedding_spectrum, final_position_activations
from interp.analysis.results import json_safe
from interp.analysis.rqi import RQI_TOL, RQIResult
from interp.errors import InterpError
from interp.tasks import Split

__all__ = [
    "Checkpoint",
    "parse_spec",
    "resolve_checkpoint",
    "Side",
    "Comparison",
    "ComparisonSummary",
    "compare",
    "compare_specs",
    "output_path",
    "file_label",
    "SHAPE_FIELDS",
]

# What must match for two models to be compared (the ModelConfig fields that give parameter shapes).
SHAPE_FIELDS = ("p", "d_model", "n_heads", "d_head", "d_mlp")
_NAMED_EPOCHS = {"final": "final", "t_mem": "T_mem", "tmem": "T_mem", "t_grok": "T_grok", "tgrok": "T_grok"}


# ----------------------------------------------------------------------------- checkpoint specs


@dataclass
class Checkpoint:
    """A model with where it came from. ``split`` comes from the run; the task is the model's own
    (``model.cfg.task``). ``note`` says how a named epoch was resolved (e.g. "T_mem = 1130, first
    checkpoint at or after")."""

    model: Any
    label: str
    split: Optional[Split] = None
    epoch: Optional[int] = None
    run_path: Optional[str] = None
    spec: str = ""
    note: str = ""

    @property
    def task(self) -> str:
        return self.model.cfg.task


def parse_spec(spec: str) -> tuple[str, Optional[str]]:
    """Split ``RUN@WHEN`` into (RUN, WHEN); a bare ``RUN`` gives (RUN, None). The last '@' counts,
    unless the whole string names an existing directory."""
    import os

    if not spec or not spec.strip():
        raise InterpError("empty checkpoint spec; use RUN, RUN@EPOCH, RUN@final, RUN@T_mem or RUN@T_grok")
    if "@" not in spec or os.path.isdir(spec):
        return spec, None
    path, when = spec.rsplit("@", 1)
    if not path:
        raise InterpError(f"checkpoint spec {spec!r} names no run; use RUN@EPOCH")
    if not when:
        raise InterpError(f"checkpoint spec {spec!r} has nothing after '@'; use an epoch, final, T_mem or T_grok")
    return path, when


def _threshold_epoch(run, column: str) -> Optional[int]:
    """First epoch whose ``column`` (train_acc / test_acc) is >= 0.99: per-epoch metrics when they
    hold the column, else the accuracies of the saved checkpoints."""
    from interp.analysis.phases import ACC_THRESHOLD, first_epoch_reaching
    from interp.store import NO_ACCURACY_HISTORY

    if not run.accuracy_history:
        name = "T_mem" if column == "train_acc" else "T_grok"
        raise InterpError(f"{run.path}: {name} is {NO_ACCURACY_HISTORY}; name a checkpoint by its epoch instead")
    try:
        df = run.metrics()
    except InterpError:
        df = None
    if df is not None and column in df.columns and df[column].notna().any():
        return first_epoch_reaching(df["epoch"], df[column].fillna(-1.0), ACC_THRESHOLD)
    # e.g. an imported legacy run without accuracies: measure the checkpoints themselves
    from interp.analysis.losses import correct
    from interp.model import Transformer, all_logits
    from interp.store import load_model_state
    from interp.tasks import labels

    split = run.split
    idx = split.train if column == "train_acc" else split.test
    y = labels(run.config.task, run.config.p)[idx]
    model = Transformer(run.model_config)
    for e in run.checkpoint_epochs():
        load_model_state(model, run.load_state_dict(e), str(run.checkpoint_path(e)))
        if float(correct(all_logits(model)[idx], y).double().mean()) >= ACC_THRESHOLD:
            return e
    return None


def resolve_checkpoint(spec: str, device: str = "cpu") -> Checkpoint:
    """Load the checkpoint a spec names (see the module docstring); InterpError on anything missing.

    A missing epoch lists the nearest available ones.
    """
    from interp.store import Run

    path, when = parse_spec(spec)
    run = Run.open(path)
    epoch, note = resolve_epoch(run, when, path)
    model = run.load_model(epoch, device=device)
    return Checkpoint(model, f"{run.name}@{epoch}", run.split, epoch, str(run.path), spec, note)


def resolve_epoch(run, when: Optional[str], path: str = "RUN") -> tuple[int, str]:
    """The checkpoint epoch that ``when`` (None, an epoch, final, T_mem or T_grok) names in ``run``,
    and a note on how a named one was resolved; InterpError when there is none."""
    eps = run.checkpoint_epochs()
    if not eps:
        raise InterpError(f"{run.path}: the run has no checkpoints")
    note = ""
    if when is None or _NAMED_EPOCHS.get(when.lower()) == "final":
        epoch = eps[-1]
        note = "final checkpoint"
    elif when.lower() in _NAMED_EPOCHS:
        name = _NAMED_EPOCHS[when.lower()]
        col = "train_acc" if name == "T_mem" else "test_acc"
        t = _threshold_epoch(run, col)
        if t is None:
            which = "train" if name == "T_mem" else "test"
            raise InterpError(
                f"{run.path}: {which} accuracy never reached 0.99, so {name} is undefined "
                f"(checkpoints {eps[0]}..{eps[-1]}); pick an epoch with {path}@EPOCH"
            )
        later = [e for e in eps if e >= t]
        epoch = later[0] if later else eps[-1]
        note = f"{name} = {t}" + ("" if epoch == t else f"; first checkpoint at or after it: {epoch}")
    else:
        try:
            epoch = int(when)
        except ValueError:
            raise InterpError(
                f"bad checkpoint spec {path}@{when}: after '@' put an epoch number, final, T_mem or T_grok"
            ) from None
        if epoch not in set(eps):
            near = run.nearest_epochs(epoch)
            raise InterpError(
                f"{run.path} has no checkpoint at epoch {epoch}; nearest available: {', '.join(map(str, near))}"
            )
    return epoch, note


# ----------------------------------------------------------------------------- one side


@dataclass
class Side:
    """Everything measured on one side of a comparison."""

    label: str
    epoch: Optional[int]
    run_path: Optional[str]
    note: str
    measures: ms.ProgressMeasures
    rqi: RQIResult
    rqi_linear: RQIResult
    mean_fve: float
    embedding_energy: Float[Tensor, "k1"]  # share of W_E's non-constant energy per frequency


def _as_checkpoint(x, split: Optional[Split], label: str) -> Checkpoint:
    if isinstance(x, Checkpoint):
        return x
    if not hasattr(x, "cfg") or not hasattr(x, "W_E"):
        raise TypeError(f"compare needs models or checkpoints, got {type(x).__name__}")
    return Checkpoint(x, label, split)


def _check_shapes(a: Checkpoint, b: Checkpoint, same_shape: bool) -> None:
    ca, cb = a.model.cfg, b.model.cfg
    if a.task != b.task:
        raise InterpError(f"cannot compare {a.label} ({a.task}) with {b.label} ({b.task}): different tasks")
    fields = SHAPE_FIELDS if same_shape else ("p",)
    diff = [f for f in fields if getattr(ca, f) != getattr(cb, f)]
    if diff:
        what = ", ".join(f"{f} {getattr(ca, f)} vs {getattr(cb, f)}" for f in diff)
        raise InterpError(f"cannot compare models of different shapes: {a.label} and {b.label} differ in {what}")


def _measure(
    c: Checkpoint, freqs: Optional[list[int]], tol: float
) -> tuple[ms.ProgressMeasures, RQIResult, RQIResult, float, Tensor]:
    pm = ms.progress_measures(c.model, c.split, key_freqs=freqs)
    spectrum = embedding_spectrum(c.model)
    planes = freqs if freqs is not None else pm.key_freqs
    if not planes:
        # no frequency to look at: the embedding's strongest one, so the circle RQI is still defined
        planes = spectrum.top_frequencies(1)
    rqi = embedding_rqi(c.model, planes, tol)
    rqi_lin = embedding_rqi(c.model, None, tol, chart="linear")
    return pm, rqi, rqi_lin, float(pm.clusters.fve.double().mean()), spectrum.energy_share()


# ----------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    """A side-by-side comparison (see the module docstring).

    ``rows``: (measure, value on A, value on B); values are floats, ints or strings. The CKA rows hold
    the one number between A and B in both columns. ``analysis_freqs``: frequencies used by
    restricted / excluded loss and the RQI planes on each side.
    """

    a: Side
    b: Side
    analysis_freqs: tuple[list[int], list[int]]
    freqs_source: str
    cka: dict[str, float]
    rows: list[tuple[str, Any, Any]] = field(default_factory=list)

    @property
    def labels(self) -> tuple[str, str]:
        la, lb = self.a.label, self.b.label
        return (la, lb) if la != lb else (f"{la} (A)", f"{lb} (B)")

    def to_frame(self):
        """The table as a pandas DataFrame: index = measure, columns = the two labels."""
        import pandas as pd

        la, lb = self.labels
        return pd.DataFrame([(a, b) for _, a, b in self.rows], index=[r[0] for r in self.rows], columns=[la, lb])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary: labels, notes, the frequencies used, CKA, and the rows."""
        la, lb = self.labels
        return json_safe(
            {
                "a": {"label": la, "epoch": self.a.epoch, "run": self.a.run_path, "note": self.a.note},
                "b": {"label": lb, "epoch": self.b.epoch, "run": self.b.run_path, "note": self.b.note},
                "analysis_freqs": {
                    "a": self.analysis_freqs[0],
                    "b": self.analysis_freqs[1],
                    "source": self.freqs_source,
                },
                "cka": self.cka,
                "rows": [{"measure": m, "a": a, "b": b} for m, a, b in self.rows],
            }
        )

    def summary(self) -> "ComparisonSummary":
        """The plain data a figure or a report shows (JSON round-trip: ``to_dict`` / ``from_dict``)."""
        sides = (self.a, self.b)
        return ComparisonSummary(
            labels=list(self.labels),
            notes=[s.note for s in sides],
            epochs=[s.epoch for s in sides],
            run_paths=[s.run_path for s in sides],
            rows=[list(r) for r in self.rows],
            embedding_energy=[s.embedding_energy.tolist() for s in sides],
            neuron_counts=[s.measures.clusters.sizes(s.measures.threshold).tolist() for s in sides],
            threshold=self.a.measures.threshold,
            analysis_freqs=[list(f) for f in self.analysis_freqs],
            freqs_source=self.freqs_source,
            cka=dict(self.cka),
        )

    def format_table(self) -> str:
        """Plain-text table (what ``interp compare`` prints)."""
        la, lb = self.labels
        cells = [(m, _fmt(a), _fmt(b)) for m, a, b in self.rows]
        w0 = max(len("measure"), *(len(c[0]) for c in cells))
        w1 = max(len(la), *(len(c[1]) for c in cells))
        w2 = max(len(lb), *(len(c[2]) for c in cells))
        lines = [f"{'measure':<{w0}}  {la:>{w1}}  {lb:>{w2}}", f"{'-' * w0}  {'-' * w1}  {'-' * w2}"]
        lines += [f"{m:<{w0}}  {a:>{w1}}  {b:>{w2}}" for m, a, b in cells]
        notes = [f"{lab}: {s.note}" for lab, s in ((la, self.a), (lb, self.b)) if s.note]
        src = {
            "auto": "key frequencies of the better-generalising side, used for both",
            "own": "each side's own key frequencies",
            "user": "given by the user",
        }[self.freqs_source]
        lines.append("")
        lines.append(f"restricted / excluded loss and RQI planes: {src}")
        lines.append(f"key frequencies: {ms.KEY_RULE}")
        lines.append(
            f"RQI: circle chart (z_i z_j = z_m z_n in each plane, sums mod n, tol {self.a.rqi.tol}); "
            "linear: REFERENCE §6 verbatim (integer sums)"
        )
        lines += notes
        return "\n".join(lines)


@dataclass
class ComparisonSummary:
    """A ``Comparison`` as plain data (labels, notes, the rows, and per side the share of W_E's
    squared Fourier norm and the clearly assigned neurons per frequency k = 0..n//2). What
    ``interp.viz`` draws and what the analysis stores (``results.COMPARISON_FILE``)."""

    labels: list[str]
    notes: list[str]
    epochs: list[Optional[int]]
    run_paths: list[Optional[str]]
    rows: list[list[Any]]
    embedding_energy: list[list[float]]
    neuron_counts: list[list[int]]
    threshold: float
    analysis_freqs: list[list[int]]
    freqs_source: str
    cka: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ComparisonSummary":
        nan = float("nan")
        rows = [[m, nan if a is None else a, nan if b is None else b] for m, a, b in d["rows"]]
        return cls(**{**d, "rows": rows})


def output_path(comp: Comparison, suffix: str) -> Path:
    """Where a comparison is saved by default: ``<run of B>/compare/<A>__<B><suffix>``, the labels
    made safe as file names (run names may hold anything)."""
    la, lb = comp.labels
    base = Path(comp.b.run_path) if comp.b.run_path else Path(".")
    return base / "compare" / f"{file_label(la)}__{file_label(lb)}{suffix}"


def file_label(label: str) -> str:
    """A checkpoint label as a file-name part: ``run@500`` -> ``run_at_500``; anything but letters,
    digits, '.', '_' and '-' becomes '_'."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", label.replace("@", "_at_")).strip("._")
    return s or "checkpoint"


def _fmt(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if v is None:
        return "-"
    x = float(v)
    if math.isnan(x):
        return "-"
    if x == 0:
        return "0"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.3e}"
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


def _freq_list(fs: Sequence[int]) -> str:
    return " ".join(map(str, fs)) if fs else "none"


def compare(
    model_a,
    model_b,
    split_a: Optional[Split] = None,
    split_b: Optional[Split] = None,
    key_freqs: Union[str, Sequence[int]] = "auto",
    labels: tuple[str, str] = ("A", "B"),
    same_shape: bool = True,
    rqi_tol: float = RQI_TOL,
    debiased_cka: bool = False,
) -> Comparison:
    """Compare two models (or ``Checkpoint``s) side by side, each in its task's frame.

    ``split_*`` / ``labels`` apply to plain models (a ``Checkpoint`` carries its own); without a
    split, train and test measures use all inputs. ``key_freqs``: "auto", "own" or a list
    (module docstring). ``same_shape``: refuse models whose parameter shapes differ (InterpError);
    with False only p must agree (CKA needs the same inputs; widths may differ).
    """
    a = _as_checkpoint(model_a, split_a, labels[0])
    b = _as_checkpoint(model_b, split_b, labels[1])
    _check_shapes(a, b, same_shape)
    n = frame(a.task, a.model.cfg.p).n

    if isinstance(key_freqs, str):
        if key_freqs not in ("auto", "own"):
            raise InterpError(f"key_freqs must be 'auto', 'own' or a list of frequencies, got {key_freqs!r}")
        source = key_freqs
    else:
        user = sorted(check_frequencies(n, key_freqs))
        source = "user"

    if source == "user":
        fa = fb = user
        ra, rb = _measure(a, fa, rqi_tol), _measure(b, fb, rqi_tol)
    else:
        own_a, own_b = _measure(a, None, rqi_tol), _measure(b, None, rqi_tol)
        if source == "own":
            ra, rb = own_a, own_b
            fa, fb = own_a[0].key_freqs, own_b[0].key_freqs
        else:
            pa, pb = own_a[0], own_b[0]
            better_b = (pb.test_loss, pb.train_loss) < (pa.test_loss, pa.train_loss)
            first, second = (pb, pa) if better_b else (pa, pb)
            shared = first.key_freqs or second.key_freqs
            fa = fb = list(shared)
            ra = own_a if pa.analysis_freqs == shared else _measure(a, shared, rqi_tol)
            rb = own_b if pb.analysis_freqs == shared else _measure(b, shared, rqi_tol)

    sides = []
    for c, (pm, rqi, rqi_lin, mean_fve, energy) in ((a, ra), (b, rb)):
        sides.append(Side(c.label, c.epoch, c.run_path, c.note, pm, rqi, rqi_lin, mean_fve, energy))
    sa, sb = sides

    acts_a, acts_b = final_position_activations(a.model), final_position_activations(b.model)  # once per model
    cka = {
        "resid": linear_cka(acts_a.resid, acts_b.resid, debiased_cka),
        "mlp": linear_cka(acts_a.mlp, acts_b.mlp, debiased_cka),
    }
    comp = Comparison(sa, sb, (fa, fb), source, cka)
    comp.rows = _rows(sa, sb, fa, fb, cka, debiased_cka)
    return comp


def _rows(
    sa: Side, sb: Side, fa: list[int], fb: list[int], cka: dict[str, float], debiased: bool
) -> list[tuple[str, Any, Any]]:
    A, B = sa.measures, sb.measures
    rows: list[tuple[str, Any, Any]] = []

    def add(name: str, fn):
        rows.append((name, fn(sa, A), fn(sb, B)))

    add("epoch", lambda s, m: s.epoch if s.epoch is not None else "-")
    add("train loss", lambda s, m: m.train_loss)
    add("test loss", lambda s, m: m.test_loss)
    add("train accuracy", lambda s, m: m.train_acc)
    add("test accuracy", lambda s, m: m.test_acc)
    add("key frequencies (own)", lambda s, m: _freq_list(m.key_freqs))
    add("embedding frequencies (cross-check)", lambda s, m: _freq_list(m.embedding_freqs))
    add(
        "W_E energy in own key freqs", lambda s, m: float(s.embedding_energy[m.key_freqs].sum()) if m.key_freqs else 0.0
    )
    shown = sorted(set(A.key_freqs) | set(B.key_freqs) | set(fa) | set(fb))
    for k in shown:
        add(f"  k={k}: W_E energy share", lambda s, m, k=k: float(s.embedding_energy[k]))
        add(f"  k={k}: neurons (FVE > {A.threshold})", lambda s, m, k=k: int(m.clusters.sizes(m.threshold)[k]))
        add(f"  k={k}: cos(w(a+b-c)) amplitude", lambda s, m, k=k: float(m.cos_coefs[k]))
        add(f"  k={k}: RQI of its plane alone", lambda s, m, k=k: s.rqi.per_plane.get(k, float("nan")))
    add("Gini of W_E Fourier norms", lambda s, m: m.gini_W_E)
    add("Gini of W_L Fourier norms", lambda s, m: m.gini_W_L)
    add(f"neurons with FVE > {ms.CLEAR_FVE_THRESHOLD}", lambda s, m: m.frac_neurons_clear)
    add("mean neuron FVE", lambda s, m: s.mean_fve)
    add("RQI (circle chart, planes jointly)", lambda s, m: s.rqi.rqi)
    add(
        "RQI (circle chart, mean over planes)",
        lambda s, m: sum(s.rqi.per_plane.values()) / len(s.rqi.per_plane) if s.rqi.per_plane else float("nan"),
    )
    add("  RQI planes", lambda s, m: _freq_list(s.rqi.freqs))
    add("RQI (linear, §6 verbatim)", lambda s, m: s.rqi_linear.rqi)
    add("analysis frequencies", lambda s, m: _freq_list(m.analysis_freqs))
    add("restricted loss (all inputs)", lambda s, m: m.restricted_loss)
    add("restricted loss (test)", lambda s, m: m.restricted_loss_test)
    add("excluded loss (train)", lambda s, m: m.excluded_loss)
    for k in sorted(set(fa) | set(fb)):
        add(f"  excluded loss, k={k} only", lambda s, m, k=k: m.excluded_loss_per_freq.get(k, float("nan")))
    add("cos(w(a+b-c)) FVE of logits", lambda s, m: m.cos_fve)
    add("margin the frequencies allow / logit RMS", lambda s, m: m.interference_margin)
    add("train margin / logit RMS (median)", lambda s, m: m.train_margin_ratio)
    add("weight norm ||theta||", lambda s, m: math.sqrt(m.sq_weights["total"]))
    add("sum of squared weights", lambda s, m: m.sq_weights["total"])
    names = [k for k in A.sq_weights if k != "total"]
    for name in names:
        if A.sq_weights.get(name, 0.0) == 0.0 and B.sq_weights.get(name, 0.0) == 0.0:
            continue  # frozen zero biases
        add(f"  sq {name}", lambda s, m, name=name: m.sq_weights.get(name, float("nan")))
    kind = "debiased" if debiased else "linear"
    rows.append((f"CKA A vs B, final residual ({kind})", cka["resid"], cka["resid"]))
    rows.append((f"CKA A vs B, MLP activations ({kind})", cka["mlp"], cka["mlp"]))
    return rows


def compare_specs(spec_a: str, spec_b: str, device: str = "cpu", **kw) -> Comparison:
    """``compare`` two checkpoint specs (``RUN``, ``RUN@EPOCH``, ``RUN@final``, ``RUN@T_mem``, ``RUN@T_grok``)."""
    return compare(resolve_checkpoint(spec_a, device), resolve_checkpoint(spec_b, device), **kw)
