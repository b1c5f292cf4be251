"""Training probes: columns the trainer adds to ``metrics.csv`` every ``probe_every`` epochs.

A probe is a cheap measurement taken while training, for monitoring and for the forecasters of
``interp.theory.forecast`` (issue "See grokking coming"). Each is computed for all members of an
ensemble at once from the stacked parameters. The probes, their columns and their meaning:

- ``grad_norm``: ``grad_total`` and ``grad_<param>``, the L2 norm of the full-batch (or minibatch)
  gradient of the step into this epoch, over all trainable parameters and per parameter (before
  any Grokfast filter).
- ``update_ratio``: ``update_ratio`` = ||theta_E - theta_{E-1}|| / ||theta_{E-1}||, the relative size
  of the step into this epoch (after weight decay and any norm projection).
- ``loss_hjorth``: the training loss's spectral signature over the trailing ``probe_window`` logged
  train losses (Notsawo et al. 2023; REFERENCE §7): ``loss_activity`` = sum of L(t)^2 over the
  window (its energy: by Parseval, equally the sum of |FFT L|^2 / window) and ``loss_mobility`` =
  sqrt(var(dL) / var(L)) with dL the first difference (Hjorth's mobility: the signal's mean
  frequency). NaN until the window holds 3 values.
- ``fourier_gini``: ``gini_W_E`` and ``gini_W_L``, the Gini coefficient of the Fourier-component
  norms of the embedding and of the neuron-logit map, the progress measures of REFERENCE §3 with the
  analysis's own definitions (``interp.analysis.measures``), so the trend is seen during training.

Rows where a probe is not due leave its columns empty. The probes of a run are fixed when it is
created (its metrics header names them); a run created before probes existed resumes without them.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from interp.analysis.measures import embedding_fourier_of, ginis, neuron_logit_fourier_of
from interp.errors import InterpError
from interp.training.optim import squared_norms

PROBES = ("grad_norm", "update_ratio", "loss_hjorth", "fourier_gini")
DEFAULT_PROBES = PROBES  # all four cost a few percent of an epoch (tests/benchmarks/probes.py)
STEP_PROBES = ("grad_norm", "update_ratio")  # measured around the optimiser step


def parse_probes(text: str) -> tuple[str, ...]:
    """``default``, ``none`` or a comma-separated list of probe names -> the probes, in PROBES order."""
    text = text.strip()
    if text == "default":
        return DEFAULT_PROBES
    if text in ("none", ""):
        return ()
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in PROBES]
    if unknown:
        raise InterpError(
            f"probes: unknown probe(s) {', '.join(unknown)}; choose from {', '.join(PROBES)}, 'default' or 'none'"
        )
    return tuple(p for p in PROBES if p in names)


def probe_columns(probes: Iterable[str], trainable: Sequence[str]) -> list[str]:
    """The metrics columns of ``probes`` for a model whose trainable parameters are ``trainable``."""
    cols: list[str] = []
    for p in probes:
        if p == "grad_norm":
            cols += ["grad_total"] + [f"grad_{n}" for n in trainable]
        elif p == "update_ratio":
            cols.append("update_ratio")
        elif p == "loss_hjorth":
            cols += ["loss_activity", "loss_mobility"]
        elif p == "fourier_gini":
            cols += ["gini_W_E", "gini_W_L"]
    return cols


def probes_in_header(header: Sequence[str], trainable: Sequence[str]) -> tuple[str, ...]:
    """The probes whose columns a metrics header holds (what a resumed run keeps measuring)."""
    have = set(header)
    return tuple(p for p in PROBES if all(c in have for c in probe_columns([p], trainable)))


@torch.no_grad()
def grad_norms(params: dict[str, Tensor]) -> Float[Tensor, "run k"]:
    """Per member: [total gradient norm, then each parameter's], over the parameters that have a gradient."""
    sq = squared_norms({n: p.grad for n, p in params.items()})
    return torch.cat([sq.sum(1, keepdim=True), sq], 1).sqrt()


@torch.no_grad()
def update_ratio(before: dict[str, Tensor], after: dict[str, Tensor]) -> Float[Tensor, "run"]:
    """Per member ||after - before|| / ||before|| over all parameters."""
    step = squared_norms({n: after[n].detach().double() - b.double() for n, b in before.items()})
    return (step.sum(1) / squared_norms(before).sum(1)).sqrt()


def hjorth(losses: Sequence[float]) -> tuple[float, float]:
    """(activity, mobility) of a loss window: sum of L^2, and sqrt(var(dL) / var(L)); NaN below 3 values."""
    activity, mobility = hjorths([losses])[0]
    return float(activity), float(mobility)


def hjorths(windows: Sequence[Sequence[float]]) -> np.ndarray:
    """``hjorth`` of many loss windows (one per member) as a [window, 2] array; non-finite losses
    are left out of their window. Windows with equally many finite losses are computed together
    (usually all of them: full windows of a full-batch run)."""
    out = np.full((len(windows), 2), np.nan)
    rows = [np.asarray(w, dtype=float) for w in windows]
    rows = [r[np.isfinite(r)] for r in rows]
    by_length: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_length.setdefault(len(r), []).append(i)
    for n, idx in by_length.items():
        if n < 3:
            continue
        x = np.stack([rows[i] for i in idx])
        var = x.var(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            mobility = np.where(var > 0, np.sqrt(np.diff(x, axis=1).var(1) / var), np.nan)
        out[idx] = np.stack([(x**2).sum(1), mobility], 1)
    return out


@torch.no_grad()
def fourier_ginis(params: dict[str, Tensor], task: str, p: int) -> Float[Tensor, "run 2"]:
    """Per member (gini_W_E, gini_W_L): the analysis's Gini of Fourier-row norms (REFERENCE §3), on the CPU.

    One member at a time: the Fourier transforms are matrix products whose rounding, with BLAS,
    depends on how many members share them (a member's value would then differ from its single
    run's in the last bits). This runs at probe epochs only, not in the training step.
    """
    W_E, W_out, W_U = params["embed.W_E"], params["blocks.0.mlp.W_out"], params["unembed.W_U"]
    members = range(W_E.shape[0])
    rows_E = torch.stack([embedding_fourier_of(W_E[r], task, p).norm(dim=-1) for r in members])
    rows_L = torch.stack([neuron_logit_fourier_of(W_out[r], W_U[r], task, p).norm(dim=-1) for r in members])
    return torch.stack([ginis(rows_E), ginis(rows_L)], 1).cpu()
