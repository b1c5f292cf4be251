"""Analyse every checkpoint of a run: progress measures, key frequencies and phases.

``analyze(run)`` computes ``interp.analysis.measures.progress_measures`` at every checkpoint and saves one
table in the run directory:

    analysis.csv    one row per checkpoint (columns: see ``TABLE_COLUMNS_DOC``)
    analysis.json   definitions version, the key frequencies used, and the summary

It is incremental: a second call computes only checkpoints that are not in the table yet. The
whole table is recomputed when ``measures.DEFINITIONS_VERSION`` changes, when the frequencies used
for restricted / excluded loss change (by default the final checkpoint's key frequencies, as in
Nanda et al., so a run that trained further can change them), or when the run's config changed.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd
from tqdm.auto import tqdm

from interp.analysis import measures as ms
from interp.errors import InterpError
from interp.analysis.fourier import frame
from interp.analysis.phases import Phases, find_phases

TABLE_FILE = "analysis.csv"
META_FILE = "analysis.json"

TABLE_COLUMNS_DOC = """\
epoch                      checkpoint epoch
train_loss, test_loss      cross-entropy on the stored split (float64-accurate, see measures.cross_entropy)
train_acc, test_acc        accuracy on the split
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
sq_total, sq_<param>       sum of squared weights, total and per parameter
neurons_k{k}               neurons clearly assigned (FVE > threshold) to frequency k, k = 1..n//2
emb_norm_k{k}              norm of W_E's Fourier components of frequency k, k = 0..n//2
wl_norm_k{k}               norm of W_L's Fourier components of frequency k, k = 0..n//2
"""


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
        d["T_mem"], d["T_grok"] = self.t_mem, self.t_grok
        return d


def _open(run_or_path):
    from interp.store import Run

    return run_or_path if isinstance(run_or_path, Run) else Run.open(run_or_path)


def _parse_freqs(key_freqs) -> Optional[list[int]]:
    if key_freqs is None:
        return None
    if isinstance(key_freqs, str):
        try:
            key_freqs = [int(x) for x in key_freqs.replace(" ", ",").split(",") if x.strip()]
        except ValueError:
            raise InterpError(f"key frequencies must be integers separated by commas, got {key_freqs!r}") from None
    out = sorted({int(k) for k in key_freqs})
    if not out:
        raise InterpError("key frequency list is empty")
    return out


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
    except Exception:  # noqa: BLE001 - a damaged cache is simply recomputed
        return None, {}


def _atomic_write(path: Path, data: bytes) -> None:
    from interp.store import atomic_write_bytes

    atomic_write_bytes(path, data)


def analyze(
    run_or_path,
    key_freqs: Optional[Sequence[int] | str] = None,
    progress: bool = True,
    recompute: bool = False,
    save: bool = True,
) -> tuple[pd.DataFrame, AnalysisSummary]:
    """Progress measures at every checkpoint of a run, its key frequencies and phases.

    ``run_or_path``: a ``store.Run`` or a run directory. ``key_freqs``: frequencies for restricted /
    excluded loss (default: the key frequencies of the final checkpoint). Returns the table (one
    row per checkpoint, sorted by epoch) and an ``AnalysisSummary``; saves both in the run
    directory (``analysis.csv``, ``analysis.json``) unless ``save`` is False.
    """
    from interp.model import Transformer
    from interp.store import load_model_state

    run = _open(run_or_path)
    cfg = run.config
    n = frame(cfg.task, cfg.p).n  # a task without Fourier structure fails here, before any work
    epochs = run.checkpoint_epochs()
    if not epochs:
        raise InterpError(f"{run.path}: the run has no checkpoints to analyse")
    user_freqs = _parse_freqs(key_freqs)
    bad = [k for k in user_freqs or [] if not 1 <= k <= n // 2]
    if bad:
        raise InterpError(f"key frequency {bad[0]} out of range 1..{n // 2} for {cfg.task} mod {cfg.p}")
    split = run.split
    layout = ms.make_layout(cfg.task, cfg.p, split)
    model = Transformer(run.model_config)

    def measure(epoch: int, freqs: Optional[list[int]]) -> ms.ProgressMeasures:
        load_model_state(model, run.load_state_dict(epoch), str(run.checkpoint_path(epoch)))
        return ms.progress_measures(model, cfg.task, split, key_freqs=freqs, layout=layout)

    base_sig = {
        "definitions_version": ms.DEFINITIONS_VERSION,
        "config_hash": cfg.config_hash(),
        "task": cfg.task,
        "p": cfg.p,
        "key_fve_threshold": ms.KEY_FVE_THRESHOLD,
    }
    old, meta = (None, {}) if recompute else _read_saved(run.path)
    saved: dict[int, dict] = {}
    if old is not None and "epoch" in old.columns and {k: v for k, v in meta.get("signature", {}).items() if k != "key_freqs"} == base_sig:
        saved = {int(r["epoch"]): r for r in old.to_dict("records")}
        for r in saved.values():
            for col in ("key_freqs", "embedding_freqs"):
                r[col] = _freq_str(r.get(col))

    # The final checkpoint decides the default key frequencies: read them from the saved table, or
    # measure that checkpoint first.
    final_epoch = epochs[-1]
    rows: dict[int, dict] = {}
    if final_epoch in saved:
        final_keys = _split_freqs(saved[final_epoch]["key_freqs"])
    else:
        fm = measure(final_epoch, user_freqs)
        final_keys = fm.key_freqs
        rows[final_epoch] = {"epoch": final_epoch, **fm.row()}  # measured with the frequencies used below
    used = user_freqs if user_freqs is not None else final_keys
    signature = {**base_sig, "key_freqs": used}
    if meta.get("signature") == signature:
        for e, r in saved.items():
            if e in epochs and e not in rows:
                rows[e] = r
    todo = [e for e in epochs if e not in rows]
    for e in tqdm(todo, desc=f"analyse {cfg.run_name}", unit="ckpt", disable=not progress or not todo, dynamic_ncols=True):
        rows[e] = {"epoch": e, **measure(e, used).row()}
    computed = len(todo) + (0 if final_epoch in saved else 1)
    table = pd.DataFrame([rows[e] for e in epochs])
    for col in ("key_freqs", "embedding_freqs"):
        table[col] = [_freq_str(v) for v in table[col]]

    metrics = None
    try:
        metrics = run.metrics()
    except InterpError:
        pass
    phases = find_phases(table, metrics)
    last = table.iloc[-1]
    final_vals = {
        k: float(last[k])
        for k in ("train_loss", "test_loss", "train_acc", "test_acc", "restricted_loss", "restricted_loss_test",
                  "excluded_loss", "gini_W_E", "gini_W_L", "frac_neurons_fve", "sq_total", "cos_fve")
    }
    final_vals["excluded_loss_per_freq"] = {int(k): float(last[f"excluded_loss_k{k}"]) for k in used}
    summary = AnalysisSummary(
        run=str(run.path), task=cfg.task, p=cfg.p, n_checkpoints=len(epochs), first_epoch=epochs[0],
        final_epoch=final_epoch, key_freqs=used, key_freqs_source="user" if user_freqs is not None else "final checkpoint",
        final_key_freqs=_split_freqs(last["key_freqs"]), final_embedding_freqs=_split_freqs(last["embedding_freqs"]),
        key_rule=ms.KEY_RULE, phases=phases, final=final_vals, computed=computed,
    )
    if save:
        buf = io.StringIO()
        table.to_csv(buf, index=False)
        _atomic_write(run.path / TABLE_FILE, buf.getvalue().encode())
        body = {"signature": signature, "columns": TABLE_COLUMNS_DOC, "summary": summary.to_dict()}
        _atomic_write(run.path / META_FILE, (json.dumps(json_safe(body), indent=2) + "\n").encode())
    return table, summary


def json_safe(o):
    """JSON-safe copy: NaN / inf become null (strict JSON has no NaN)."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        return json_safe(o.item())
    return o


def load_analysis(run_or_path) -> tuple[pd.DataFrame, dict]:
    """The saved table and JSON of a run analysed before (InterpError if there is none)."""
    run = _open(run_or_path)
    table, meta = _read_saved(run.path)
    if table is None:
        raise InterpError(f"{run.path}: no analysis saved yet; run `interp analyze {run.path}`")
    return table, meta
