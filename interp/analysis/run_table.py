"""Analyse every checkpoint of a run: progress measures, key frequencies, phases, report views.

``analyze(run)`` computes ``interp.analysis.measures.progress_measures`` at every checkpoint and saves
in the run directory (file names in ``interp.analysis.results``):

    analysis.csv    one row per checkpoint (columns: see ``TABLE_COLUMNS_DOC``): only what the
                    trainer's metrics.csv does not have; split losses and accuracies, and squared
                    weights, stay in metrics.csv (``checkpoint_table`` joins the two)
    analysis.json   definitions version, the key frequencies used, and the summary

and then what the report needs from models (``interp.analysis.run_views``).

Two columns families beyond ``progress_measures``:

* ``rqi``, at every checkpoint: the Representation Quality Index of the embedding in the circle
  chart (``representation.embedding_rqi``; REFERENCE §6) on the planes of the key frequencies used
  for restricted / excluded loss (by default the final checkpoint's), the same planes at every
  checkpoint so that the curve is comparable. Fast path ``representation.rqi_circle_batch``: ~8 ms
  per canonical checkpoint (p = 113, four planes) against ~130 ms for the progress measures (one
  thread, loaded 2-core machine).
* ``alpha_<matrix>`` / ``traps_<matrix>``, only with ``analyze(..., spectra=True)``: HTSR power-law
  exponent and correlation traps of each weight matrix (``interp.analysis.spectra``). The power-law
  fits cost ~0.55 s per canonical checkpoint (4x the rest), hence opt-in; once computed they are kept
  in the table (a later call without ``spectra`` leaves them, and fills only new checkpoints' other
  columns).

It is incremental: a second call computes only checkpoints that are not in the table yet. The
whole table is recomputed when ``measures.DEFINITIONS_VERSION`` changes, when the frequencies used
for restricted / excluded loss change (by default the final checkpoint's key frequencies, as in
Nanda et al., so a run that trained further can change them), or when the run's config changed.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd
from tqdm.auto import tqdm

from interp.analysis import measures as ms
from interp.analysis import spectra as sp
from interp.analysis.fourier import check_frequencies, frame, parse_frequencies
from interp.analysis.phases import Phases, find_phases
from interp.analysis.representation import embedding_circle_points, rqi_circle_batch
from interp.analysis.results import META_FILE, TABLE_FILE, json_safe, write_json  # noqa: F401 - re-exported
from interp.analysis.rqi import RQI_TOL
from interp.errors import InterpError
from interp.store import atomic_write_bytes

# The trainer's per-epoch columns that the checkpoint view takes from metrics.csv.
METRIC_COLUMNS = ("train_loss", "test_loss", "train_acc", "test_acc", "sq_total")
# A run whose metrics lack them at a checkpoint (an imported model) gets them evaluated from the
# checkpoint (interp.analysis.losses, the trainer's numerics) under these names.
EVAL_PREFIX = "ckpt_"

TABLE_COLUMNS_DOC = """\
epoch                      checkpoint epoch
restricted_loss            logits restricted to cos/sin k(a+b) of the key frequencies (+ per-output mean), all inputs
restricted_loss_test       the same on the test inputs
excluded_loss              key-frequency components removed, train inputs
excluded_loss_k{k}         one key frequency k removed, train inputs
gini_W_E, gini_W_L         Gini coefficient of the Fourier-component norms (per basis row) of W_E and W_L
frac_neurons_fve           fraction of neurons whose best frequency explains > 0.85 of their variance
n_key_freqs, key_freqs     this checkpoint's own key frequencies (space separated)
embedding_freqs            frequencies strong in W_E's Fourier norms (cross-check)
cos_fve                    fraction of logit variance explained by the key cos(w(a+b-c)) terms
cos_coef_k{k}              amplitude of cos(w_k(a+b-c)) in the logits, per key frequency
interference_margin        the margin the key frequencies at those amplitudes allow the correct output over its
                           nearest rival, over the logits' RMS (measures.interference_margin; NaN: none)
train_margin_ratio         median over train inputs of (correct logit - largest other) / that input's logit RMS
neurons_k{k}               neurons clearly assigned (FVE > threshold) to frequency k, k = 1..n//2
emb_norm_k{k}              norm of W_E's Fourier components of frequency k, k = 0..n//2
wl_norm_k{k}               norm of W_L's Fourier components of frequency k, k = 0..n//2
rqi                        Representation Quality Index of W_E, circle chart (REFERENCE §6), on the planes
                           of the key frequencies used above (the same planes at every checkpoint)
alpha_<M>                  only with spectra: HTSR power-law exponent of the eigenvalue tail of M^T M,
                           M = W_E, W_U, W_Q, W_K, W_V, W_O (heads concatenated), W_in, W_out (REFERENCE §7)
traps_<M>                  only with spectra: correlation traps of M (shuffled M's eigenvalues above the
                           Marchenko-Pastur edge + Tracy-Widom margin)
ckpt_train_loss, ...       only where metrics.csv lacks a checkpoint's train/test loss, accuracy or
                           sq_total: those evaluated from the checkpoint (ckpt_ + the metrics name)
"""


RQI_RULE = (
    f"circle chart (representation.embedding_rqi), tol {RQI_TOL}, planes = the key frequencies used for "
    "restricted / excluded loss"
)


def checkpoint_rqi(model, freqs: Sequence[int]) -> float:
    """The table's ``rqi``: ``embedding_rqi(model, freqs).rqi`` on the fast path (NaN without planes)."""
    if not freqs:
        return math.nan
    return float(rqi_circle_batch(embedding_circle_points(model, freqs)[None])[0])


def _has_spectra(row: dict) -> bool:
    vals = [v for k, v in row.items() if str(k).startswith("traps_")]
    return bool(vals) and all(v is not None and math.isfinite(float(v)) for v in vals)


@dataclass
class AnalysisSummary:
    """What ``interp analyze`` prints: key frequencies, T_mem, T_grok, phases, final losses."""

    run: str
    task: str
    p: int
    n_checkpoints: int
    first_epoch: int
    final_epoch: int
    key_freqs: list[int]  # used for restricted / excluded loss
    key_freqs_source: str  # "final checkpoint" or "user"
    final_key_freqs: list[int]  # found at the final checkpoint
    final_embedding_freqs: list[int]  # cross-check
    key_rule: str
    phases: Phases
    final: dict[str, Any]
    definitions_version: int = ms.DEFINITIONS_VERSION
    computed: int = 0  # checkpoints analysed by this call (the rest came from the saved table)

    @property
    def t_mem(self) -> Optional[int]:
        return self.phases.t_mem

    @property
    def t_grok(self) -> Optional[int]:
        return self.phases.t_grok

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phases"] = self.phases.to_dict()
        d["T_mem"], d["T_grok"] = d["phases"]["t_mem"], d["phases"]["t_grok"]
        return d


def _open(run_or_path):
    from interp.store import Run

    return run_or_path if isinstance(run_or_path, Run) else Run.open(run_or_path)


def _freq_str(v) -> str:
    """Frequencies as saved in the table: space-separated integers ('' for none; CSV reads NaN)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return str(int(v))
    return str(v).strip()


def _split_freqs(v) -> list[int]:
    return [int(x) for x in _freq_str(v).split()]


def _read_saved(path: Path) -> tuple[Optional[pd.DataFrame], dict]:
    table, meta = path / TABLE_FILE, path / META_FILE
    if not (table.exists() and meta.exists()):
        return None, {}
    try:
        return pd.read_csv(table), json.loads(meta.read_text())
    except (OSError, ValueError, pd.errors.ParserError):  # a damaged cache is simply recomputed
        return None, {}


def _metrics(run) -> Optional[pd.DataFrame]:
    try:
        return run.metrics()
    except InterpError:
        return None


def _covered_epochs(metrics: Optional[pd.DataFrame]) -> set[int]:
    """Epochs at which the trainer's metrics hold every column of ``METRIC_COLUMNS``."""
    if metrics is None or not set(METRIC_COLUMNS) <= set(metrics.columns):
        return set()
    ok = metrics[list(METRIC_COLUMNS)].notna().all(axis=1)
    return {int(e) for e in metrics.loc[ok, "epoch"]}


def checkpoint_table(table: pd.DataFrame, metrics: Optional[pd.DataFrame]) -> pd.DataFrame:
    """The analysis table joined with the trainer's metrics at the checkpoint epochs: one row per
    checkpoint with every analysis column and ``train_loss``, ``test_loss``, ``train_acc``,
    ``test_acc``, ``sq_total`` and ``sq_<param>`` from metrics.csv (the ``ckpt_`` values where the
    metrics lack them). What phases, summaries and figures read."""
    view = table.copy()
    if metrics is not None and len(metrics):
        cols = ["epoch"] + [c for c in metrics.columns if c in METRIC_COLUMNS or str(c).startswith("sq_")]
        view = view.merge(metrics[cols].drop_duplicates("epoch", keep="last"), on="epoch", how="left")
    for col in METRIC_COLUMNS:
        ev = EVAL_PREFIX + col
        if ev in view.columns:
            view[col] = view[col].fillna(view[ev]) if col in view.columns else view[ev]
    return view.drop(columns=[c for c in view.columns if str(c).startswith(EVAL_PREFIX)])


def analyze(
    run_or_path,
    key_freqs: Optional[Sequence[int] | str] = None,
    progress: bool = True,
    recompute: bool = False,
    save: bool = True,
    views: bool = True,
    spectra: bool = False,
) -> tuple[pd.DataFrame, AnalysisSummary]:
    """Progress measures at every checkpoint of a run, its key frequencies, phases and report views.

    ``run_or_path``: a ``store.Run`` or a run directory. ``key_freqs``: frequencies for restricted /
    excluded loss (default: the key frequencies of the final checkpoint; a string like "14,35,41"
    is parsed by ``fourier.parse_frequencies``). Returns ``checkpoint_table`` (one row per checkpoint,
    sorted by epoch, the analysis joined with the trainer's metrics) and an ``AnalysisSummary``; saves
    the analysis table and summary in the run directory unless ``save`` is False, and with ``views``
    (and ``save``) the report's views (``run_views.update_views``). ``spectra``: also the HTSR
    columns (``alpha_<matrix>``, ``traps_<matrix>``) at every checkpoint that lacks them (costly:
    see the module notes).
    """
    from interp.model import Transformer
    from interp.numerics import retain_freed_memory, warm_up_vector_math
    from interp.store import load_model_state

    retain_freed_memory()  # the sweep allocates MBs per chunk: page faults otherwise cost ~half of it
    warm_up_vector_math()  # the first parallel exp of a process can round differently (interp.numerics)
    run = _open(run_or_path)
    cfg = run.config
    n = frame(cfg.task, cfg.p).n  # a task without Fourier structure fails here, before any work
    epochs = run.checkpoint_epochs()
    if not epochs:
        raise InterpError(f"{run.path}: the run has no checkpoints to analyse")
    if isinstance(key_freqs, str):
        key_freqs = parse_frequencies(key_freqs)
    user_freqs = sorted(check_frequencies(n, key_freqs, f"{cfg.task} mod {cfg.p}")) if key_freqs is not None else None
    if user_freqs is not None and not user_freqs:
        raise InterpError("key frequency list is empty")
    split = run.split
    layout = ms.make_layout(cfg.task, cfg.p, split)
    model = Transformer(run.model_config)
    metrics = _metrics(run)
    covered = _covered_epochs(metrics)

    measured: list[int] = []

    def measure(epoch: int, freqs: Optional[list[int]]) -> dict:
        measured.append(epoch)
        state = run.load_state_dict(epoch)
        load_model_state(model, state, str(run.checkpoint_path(epoch)))
        evaluate = epoch not in covered
        pm = ms.progress_measures(model, split, key_freqs=freqs, layout=layout, split_losses=evaluate)
        row = {"epoch": epoch, **pm.row(), "rqi": checkpoint_rqi(model, pm.analysis_freqs)}
        if spectra:
            row.update(sp.table_row(sp.model_spectra(state)))
        if evaluate:  # the metrics lack this checkpoint: its losses from the checkpoint itself
            vals = {
                "train_loss": pm.train_loss,
                "test_loss": pm.test_loss,
                "train_acc": pm.train_acc,
                "test_acc": pm.test_acc,
                "sq_total": pm.sq_weights["total"],
            }
            row.update({EVAL_PREFIX + k: v for k, v in vals.items()})
        return row

    base_sig = {
        "definitions_version": ms.DEFINITIONS_VERSION,
        "config_hash": cfg.config_hash(),
        "task": cfg.task,
        "p": cfg.p,
        "key_fve_threshold": ms.KEY_FVE_THRESHOLD,
        "rqi": RQI_RULE,
        "spectra": sp.SPECTRA_RULE,
    }
    old, meta = (None, {}) if recompute else _read_saved(run.path)
    saved: dict[int, dict] = {}
    if (
        old is not None
        and "epoch" in old.columns
        and {k: v for k, v in meta.get("signature", {}).items() if k != "key_freqs"} == base_sig
    ):
        saved = {int(r["epoch"]): r for r in old.to_dict("records")}
        for r in saved.values():
            for col in ("key_freqs", "embedding_freqs"):
                r[col] = _freq_str(r.get(col))
            if int(r["epoch"]) not in covered and not math.isfinite(float(r.get(EVAL_PREFIX + "test_loss", math.nan))):
                r.clear()  # the metrics lost this checkpoint since: measure it again
        saved = {e: r for e, r in saved.items() if r}

    # The final checkpoint decides the default key frequencies: read them from the saved table, or
    # measure that checkpoint first.
    final_epoch = epochs[-1]
    rows: dict[int, dict] = {}
    if final_epoch in saved:
        final_keys = _split_freqs(saved[final_epoch]["key_freqs"])
    else:
        rows[final_epoch] = measure(final_epoch, user_freqs)  # measured with the frequencies used below
        final_keys = _split_freqs(rows[final_epoch]["key_freqs"])
    used = user_freqs if user_freqs is not None else final_keys
    signature = {**base_sig, "key_freqs": used}
    if meta.get("signature") == signature:
        for e, r in saved.items():
            if e in epochs and e not in rows:
                rows[e] = r
    todo = [e for e in epochs if e not in rows]
    for e in tqdm(
        todo, desc=f"analyse {cfg.run_name}", unit="ckpt", disable=not progress or not todo, dynamic_ncols=True
    ):
        rows[e] = measure(e, used)
    if spectra:  # saved checkpoints without the spectra columns: those alone
        missing = [e for e in epochs if not _has_spectra(rows[e])]
        for e in tqdm(missing, desc="spectra", unit="ckpt", disable=not progress or not missing, dynamic_ncols=True):
            rows[e].update(sp.table_row(sp.model_spectra(run.load_state_dict(e))))
            if e not in measured:
                measured.append(e)
    computed = len(measured)
    table = pd.DataFrame([rows[e] for e in epochs])
    for col in ("key_freqs", "embedding_freqs"):
        table[col] = [_freq_str(v) for v in table[col]]

    view = checkpoint_table(table, metrics)
    phases = find_phases(view, metrics, accuracy_history=run.accuracy_history)
    last = view.iloc[-1]
    final_vals = {
        k: float(last[k]) if k in last.index else math.nan
        for k in (
            "train_loss",
            "test_loss",
            "train_acc",
            "test_acc",
            "restricted_loss",
            "restricted_loss_test",
            "excluded_loss",
            "gini_W_E",
            "gini_W_L",
            "frac_neurons_fve",
            "sq_total",
            "cos_fve",
            "rqi",
        )
    }
    final_vals.update({k: float(last[k]) for k in last.index if str(k).startswith(("alpha_", "traps_"))})
    final_vals["excluded_loss_per_freq"] = {int(k): float(last[f"excluded_loss_k{k}"]) for k in used}
    summary = AnalysisSummary(
        run=str(run.path),
        task=cfg.task,
        p=cfg.p,
        n_checkpoints=len(epochs),
        first_epoch=epochs[0],
        final_epoch=final_epoch,
        key_freqs=used,
        key_freqs_source="user" if user_freqs is not None else "final checkpoint",
        final_key_freqs=_split_freqs(last["key_freqs"]),
        final_embedding_freqs=_split_freqs(last["embedding_freqs"]),
        key_rule=ms.KEY_RULE,
        phases=phases,
        final=final_vals,
        computed=computed,
    )
    if save:
        buf = io.StringIO()
        table.to_csv(buf, index=False)
        atomic_write_bytes(run.path / TABLE_FILE, buf.getvalue().encode())
        write_json(
            run.path / META_FILE, {"signature": signature, "columns": TABLE_COLUMNS_DOC, "summary": summary.to_dict()}
        )
        if views:
            from interp.analysis.run_views import update_views

            update_views(run, summary, progress)
    return view, summary


def load_summary(run_or_path) -> AnalysisSummary:
    """The summary saved by ``analyze`` (InterpError if there is none)."""
    run = _open(run_or_path)
    _, meta = _read_saved(run.path)
    if "summary" not in meta:
        raise InterpError(f"{run.path}: no analysis saved yet; run `interp analyze {run.path}`")
    d = dict(meta["summary"])
    ph = d.pop("phases")
    for k in ("T_mem", "T_grok"):
        d.pop(k, None)
    ph.pop("boundaries", None)
    for k in ("memorisation", "circuit_formation", "cleanup"):
        ph[k] = tuple(ph[k]) if ph[k] is not None else None
    d["final"] = {k: (math.nan if v is None else v) for k, v in d["final"].items()}
    if isinstance(d["final"].get("excluded_loss_per_freq"), dict):
        d["final"]["excluded_loss_per_freq"] = {int(k): v for k, v in d["final"]["excluded_loss_per_freq"].items()}
    return AnalysisSummary(phases=Phases(**ph), **d)


def load_analysis(run_or_path) -> tuple[pd.DataFrame, dict]:
    """The saved table (as saved: analysis columns only) and JSON of a run analysed before
    (InterpError if there is none)."""
    run = _open(run_or_path)
    table, meta = _read_saved(run.path)
    if table is None:
        raise InterpError(f"{run.path}: no analysis saved yet; run `interp analyze {run.path}`")
    return table, meta
