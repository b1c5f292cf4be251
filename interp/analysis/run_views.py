"""What the report of a run shows that comes from models, computed once by the analysis and stored.

``update_views(run, summary)`` (called by ``interp.analysis.analyze``) computes, when missing or
stale, and saves in the run directory (``interp.analysis.results``):

* ``CHECKPOINT_VIEWS_FILE``: the single-checkpoint views of the final checkpoint
  (``representation.checkpoint_views``) and the embedding circles, on the final key frequencies,
  of up to ``SLIDER_FRAMES`` checkpoints spread over training (the slider);
* ``CKA_FILE``: linear CKA of the final residual stream between up to ``CKA_CHECKPOINTS``
  checkpoints (``cka.cka_cross``);
* ``COMPARISON_FILE``: the T_mem checkpoint against the final one (``compare.compare``).

Each result records the signature it was computed for (definitions version, config hash, the
epochs and frequencies it used); a result whose signature no longer matches is recomputed. The
models needed by stale results are loaded once each, in one pass over the checkpoints.
``load_views(run)`` reads them back for ``interp report``, which loads no model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from interp.analysis import measures as ms
from interp.analysis import representation as rep
from interp.analysis.cka import CKAMatrix, cka_cross
from interp.analysis.compare import Checkpoint, ComparisonSummary, compare, resolve_epoch
from interp.analysis.results import (
    CHECKPOINT_VIEWS_FILE,
    CKA_FILE,
    COMPARISON_FILE,
    load_result,
    pack,
    read_json,
    save_result,
    unpack,
    write_json,
)
from interp.errors import InterpError

# More slider steps than this cannot be told apart by dragging, and every frame costs bytes.
SLIDER_FRAMES = 60
# Checkpoints in the CKA matrix: the cost grows with the square of this (each entry is a
# d_model x d_model cross-product over p^2 inputs), and 24 rows already resolve the phases.
CKA_CHECKPOINTS = 24
CKA_LAYER = "resid"


def pick_epochs(epochs: Sequence[int], max_count: int, include: Iterable[Optional[int]] = ()) -> list[int]:
    """At most ~``max_count`` of ``epochs``, evenly spread over the checkpoint list (whose schedule is
    already log-spaced early), always with the first, the last and the epochs nearest ``include``."""
    eps = sorted({int(e) for e in epochs})
    if len(eps) <= max_count:
        return eps
    idx = set(np.rint(np.linspace(0, len(eps) - 1, max_count)).astype(int).tolist())
    arr = np.asarray(eps)
    for e in include:
        if e is not None:
            idx.add(int(np.abs(arr - int(e)).argmin()))
    return [eps[i] for i in sorted(idx)]


def phase_marks(phases) -> list[Optional[int]]:
    """T_mem, T_grok and the phase ends: the epochs a spread of checkpoints should include."""
    ivs = (phases.memorisation, phases.circuit_formation, phases.cleanup)
    return [phases.t_mem, phases.t_grok] + [iv[1] for iv in ivs if iv]


@dataclass
class RunViews:
    """Everything of a run's report that comes from models (see the module docstring).

    ``circles[epoch]``: the embedding circles on ``key_freqs`` at each slider checkpoint (empty
    without key frequencies). ``cka`` / ``comparison`` are None when they could not be computed,
    ``notes`` say why.
    """

    final_epoch: int
    key_freqs: list[int]
    final: rep.CheckpointViews
    circles: dict[int, list[rep.Circle]]
    cka: Optional[CKAMatrix]
    comparison: Optional[ComparisonSummary]
    notes: dict[str, str]


def _signatures(run, summary) -> dict[str, dict]:
    epochs = run.checkpoint_epochs()
    base = {"definitions_version": ms.DEFINITIONS_VERSION, "config_hash": run.config.config_hash()}
    marks = phase_marks(summary.phases)
    return {
        "checkpoints": {
            **base,
            "final_epoch": epochs[-1],
            "key_freqs": list(summary.key_freqs),
            "slider_epochs": pick_epochs(epochs, SLIDER_FRAMES, marks),
        },
        "cka": {
            **base,
            "layer": CKA_LAYER,
            "epochs": pick_epochs(epochs, CKA_CHECKPOINTS, [summary.t_mem, summary.t_grok]),
        },
        "comparison": {**base, "final_epoch": epochs[-1], "t_mem": summary.t_mem},
    }


def _saved_signature(run, what: str) -> Optional[dict]:
    if what == "comparison":
        body = read_json(run.path / COMPARISON_FILE)
        return body.get("signature") if body else None
    res = load_result(run.path / (CHECKPOINT_VIEWS_FILE if what == "checkpoints" else CKA_FILE))
    return res[1].get("signature") if res else None


def stale_views(run, summary) -> list[str]:
    """Which stored results ("checkpoints", "cka", "comparison") are missing or stale."""
    return [w for w, sig in _signatures(run, summary).items() if _saved_signature(run, w) != sig]


def update_views(run, summary, progress: bool = False) -> list[str]:
    """Compute and save the stale results (module docstring); returns which were computed."""
    from tqdm.auto import tqdm

    from interp.model import Transformer
    from interp.store import load_model_state

    sigs = _signatures(run, summary)
    todo = [w for w, sig in sigs.items() if _saved_signature(run, w) != sig]
    if not todo:
        return []
    final_epoch = sigs["checkpoints"]["final_epoch"]
    keys = list(summary.key_freqs)
    slider = sigs["checkpoints"]["slider_epochs"] if "checkpoints" in todo and keys else []
    cka_epochs = sigs["cka"]["epochs"] if "cka" in todo else []
    cmp_epochs: list[int] = []
    cmp_note = ""
    if "comparison" in todo:
        try:
            t_mem_epoch, t_mem_note = resolve_epoch(run, "T_mem", str(run.path))
            cmp_epochs = [t_mem_epoch, final_epoch]
        except InterpError as e:
            cmp_note = str(e)
    need = sorted(set(slider) | set(cka_epochs) | set(cmp_epochs) | ({final_epoch} if "checkpoints" in todo else set()))

    model = Transformer(run.model_config)
    circles: dict[int, list[rep.Circle]] = {}
    acts = {}
    kept = {}
    final_views = None
    for e in tqdm(need, desc="report views", unit="ckpt", disable=not progress, dynamic_ncols=True):
        load_model_state(model, run.load_state_dict(e), str(run.checkpoint_path(e)))
        model.eval()
        if e in slider:
            circles[e] = rep.embedding_circles(model, keys)
        if e == final_epoch and "checkpoints" in todo:
            final_views = rep.checkpoint_views(model, keys or None)
        if e in cka_epochs:
            acts[e] = rep.final_position_activations(model).resid
        if e in cmp_epochs:
            kept[e] = copy.deepcopy(model)

    if "checkpoints" in todo:
        tensors: dict = {}
        body = {
            "signature": sigs["checkpoints"],
            "final_epoch": final_epoch,
            "key_freqs": keys,
            "final": _pack_views(final_views, "final", tensors),
            "circles": {
                str(e): [pack(c, f"circle.{e}.{i}", tensors) for i, c in enumerate(cs)] for e, cs in circles.items()
            },
        }
        save_result(run.path / CHECKPOINT_VIEWS_FILE, tensors, body)
    if "cka" in todo:
        M, ranks, _ = cka_cross(lambda i: acts[cka_epochs[i]], len(cka_epochs))
        m = CKAMatrix(M, cka_epochs, cka_epochs, CKA_LAYER, False, 0.0, str(run.path), str(run.path), ranks, ranks)
        tensors = {}
        save_result(run.path / CKA_FILE, tensors, {"signature": sigs["cka"], "cka": pack(m, "cka", tensors)})
    if "comparison" in todo:
        summary_cmp = None
        if cmp_epochs:
            split = run.split
            sides = [
                Checkpoint(kept[e], f"{run.name}@{e}", split, e, str(run.path), f"{run.path}@{w}", note)
                for e, w, note in ((cmp_epochs[0], "T_mem", t_mem_note), (final_epoch, "final", "final checkpoint"))
            ]
            summary_cmp = compare(*sides).summary().to_dict()
        write_json(
            run.path / COMPARISON_FILE, {"signature": sigs["comparison"], "comparison": summary_cmp, "note": cmp_note}
        )
    return todo


def _pack_views(v: rep.CheckpointViews, prefix: str, tensors: dict) -> dict:
    out = {}
    for name in ("spectrum", "clusters", "maps", "attention", "logit_spectrum"):
        out[name] = pack(getattr(v, name), f"{prefix}.{name}", tensors)
    out["circles"] = [pack(c, f"{prefix}.circle.{i}", tensors) for i, c in enumerate(v.circles)]
    return out


_VIEW_TYPES = {
    "spectrum": rep.EmbeddingSpectrum,
    "clusters": rep.NeuronClusterSummary,
    "maps": rep.NeuronMaps,
    "attention": rep.AttentionFromEq,
    "logit_spectrum": rep.NeuronLogitSpectrum,
}


def _unpack_views(d: dict, prefix: str, tensors: dict) -> rep.CheckpointViews:
    kw = {name: unpack(cls, f"{prefix}.{name}", tensors, d[name]) for name, cls in _VIEW_TYPES.items()}
    kw["circles"] = [unpack(rep.Circle, f"{prefix}.circle.{i}", tensors, c) for i, c in enumerate(d["circles"])]
    return rep.CheckpointViews(**kw)


def load_views(run) -> RunViews:
    """The stored results of ``update_views`` (InterpError when one is missing: analyse the run first)."""
    ck, cka = load_result(run.path / CHECKPOINT_VIEWS_FILE), load_result(run.path / CKA_FILE)
    cmp = read_json(run.path / COMPARISON_FILE)
    if ck is None or cka is None or cmp is None:
        raise InterpError(f"{run.path}: the report's analysis results are missing; run `interp analyze {run.path}`")
    tensors, body = ck
    circles = {
        int(e): [unpack(rep.Circle, f"circle.{e}.{i}", tensors, c) for i, c in enumerate(cs)]
        for e, cs in body["circles"].items()
    }
    m = unpack(CKAMatrix, "cka", cka[0], cka[1]["cka"])
    notes = {"comparison": cmp.get("note") or ""} if cmp.get("comparison") is None else {}
    comparison = ComparisonSummary.from_dict(cmp["comparison"]) if cmp.get("comparison") else None
    return RunViews(
        body["final_epoch"],
        body["key_freqs"],
        _unpack_views(body["final"], "final", tensors),
        dict(sorted(circles.items())),
        m,
        comparison,
        notes,
    )
