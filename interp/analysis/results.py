"""Analysis results on disk: their file names in a run directory, and how dataclasses are stored.

``interp analyze`` writes everything the report needs into the run directory, so that
``interp report`` reads files and loads no model:

    analysis.csv                      one row per checkpoint: what the trainer's metrics do not have
    analysis.json                     definitions version, key frequencies used, signature, summary
    analysis_checkpoints.safetensors  single-checkpoint views of the final checkpoint and the
                                      embedding circles of the slider checkpoints
    analysis_cka.safetensors          CKA matrix between a spread of checkpoints
    analysis_comparison.json          the T_mem checkpoint against the final one

Dataclasses of tensors (``representation.Circle``, ``NeuronMaps``, ...) are stored field by field
(``pack`` / ``unpack``): tensors as safetensors entries under ``<prefix>.<field>``, everything else
as JSON in the file's metadata. Every file carries a signature; a result whose signature differs
from the current one is stale and recomputed by the analysis.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Optional

import torch

TABLE_FILE = "analysis.csv"
META_FILE = "analysis.json"
CHECKPOINT_VIEWS_FILE = "analysis_checkpoints.safetensors"
CKA_FILE = "analysis_cka.safetensors"
COMPARISON_FILE = "analysis_comparison.json"
ANALYSIS_FILES = (TABLE_FILE, META_FILE, CHECKPOINT_VIEWS_FILE, CKA_FILE, COMPARISON_FILE)


def json_safe(o):
    """JSON-safe copy: NaN / inf become null (strict JSON has no NaN), tensors and numpy scalars plain."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, torch.Tensor):
        return json_safe(o.tolist())
    if hasattr(o, "item") and not isinstance(o, (str, bytes)):
        return json_safe(o.item())
    return o


def pack(obj, prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Put a dataclass's tensor fields into ``tensors`` (keys ``<prefix>.<field>``); return the rest."""
    rest = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, torch.Tensor):
            tensors[f"{prefix}.{f.name}"] = v.detach().cpu().contiguous()
        else:
            rest[f.name] = v
    return rest


def unpack(cls, prefix: str, tensors: dict[str, torch.Tensor], rest: dict[str, Any]):
    """The dataclass ``cls`` back from ``pack``'s two halves."""
    kw = dict(rest)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        if key in tensors:
            kw[f.name] = tensors[key]
    return cls(**kw)


def save_result(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Atomically write tensors and JSON metadata (checksummed, see ``store.save_tensors``)."""
    from interp.store import save_tensors

    save_tensors(Path(path), tensors, {"result": json.dumps(json_safe(meta))})


def load_result(path: Path) -> Optional[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
    """(tensors, metadata) of a saved result, or None when it is missing or damaged (then it is recomputed)."""
    from interp.errors import InterpError
    from interp.store import load_tensors

    if not Path(path).exists():
        return None
    try:
        tensors, meta = load_tensors(Path(path))
        return tensors, json.loads(meta["result"])
    except (InterpError, KeyError, ValueError):
        return None


def write_json(path: Path, body: dict[str, Any]) -> None:
    from interp.store import atomic_write_bytes

    atomic_write_bytes(Path(path), (json.dumps(json_safe(body), indent=2) + "\n").encode())


def read_json(path: Path) -> Optional[dict[str, Any]]:
    """A saved JSON result, or None when it is missing or damaged."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
