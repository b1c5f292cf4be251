"""The effective-theory toy model of grokking (Liu et al. 2022, "Towards understanding grokking: an
effective theory of representation learning"; REFERENCE §6), trained as a stack of R runs at once.

The task: p symbols (p = 10), non-modular addition a + b over the p (p + 1) / 2 unordered pairs
{a, b} (a <= b; 55 for p = 10), 2p - 1 classes (the sums 0..2p-2); a seeded subset of ``n_train``
pairs is the training set, the rest the test set. The model: learnable representations E (p x d,
d = 1 by default, init uniform in [-1/2, 1/2]) and a decoder MLP (E_a + E_b) -> 200 -> 200 -> 2p-1
with tanh after each hidden layer (the output layer is linear; weights initialised as
``torch.nn.Linear`` does). AdamW, full batch, with lr 1e-3 for E and 1e-4 for the decoder and no
weight decay by default (each run may set its own learning rates and weight decays).

Two objectives: ``"task"``, cross-entropy on the training pairs; ``"effective"``, the effective loss
alone (only E moves; the decoder keeps its initial weights, so accuracies stay near chance).

Measured every ``log_every`` steps (step t = after t updates; step 0 is the initialisation):

- ``train_acc`` / ``test_acc``: argmax accuracy on the training / test pairs;
- ``rqi``: ``interp.analysis.rqi.rqi_linear`` of E (integer sums; REFERENCE §6 verbatim). For p = 10
  there are 70 parallelograms, so RQI > 0.95 means at least 67 of them close (0.95 x 70 = 66.5, so
  ">" and ">=" agree);
- ``l_eff``: the effective loss, sum over *training* parallelograms (both pairs in the training set,
  i + j = m + n, {i, j} != {m, n}) of |E_i + E_j - E_m - E_n|^2, divided by sum_k |E_k|^2
  (REFERENCE §6; the sum is not divided by the number of training parallelograms). Note that the
  normalisation is not translation invariant: adding a constant to every E_k leaves the numerator
  unchanged and grows the denominator, so gradient descent on l_eff also drifts the mean of E; the
  RQI standardises E, so this drift does not affect it;
- ``acc_pred``: the parallelogram-predicted accuracy of the current representation. A test pair
  {i, j} counts as predicted when some *training* pair {m, n} with m + n = i + j closes the
  parallelogram with it in the RQI's sense (E standardised per dimension, mean_d of the squared
  residual < 0.01): then the decoder sees (almost) the input it was trained to map to the class
  i + j. This is the reading of Liu et al.'s "accuracy predicted by the representation" used here
  (written from first principles; the paper's exact wording may differ). A test pair whose sum no
  training pair has can never be predicted.

Per run, fixed by its training set (independent of training):

- ``acc_implied``: the fraction of test pairs whose parallelogram with some training pair of the same
  sum is *implied* by the training parallelograms: the vector e_i + e_j - e_m - e_n lies in the row
  span of the constraint matrix whose rows are e_a + e_b - e_c - e_d over all training
  parallelograms. Every representation with l_eff = 0 then closes it, so it is the value
  ``acc_pred`` takes once the effective loss is exactly zero, whatever solution is found;
- ``linear_unique``: the constraints leave only E_k = alpha + beta k (per dimension): the null space of
  the constraint matrix has dimension 2 (REFERENCE §6: probability 0.43 at 22 of 55 pairs, 0.99 at 31).

Vectorised over runs: every parameter has a leading run axis [R, ...], the decoder is a batched
matmul, the training masks are [R, pairs], and ``StackedAdamW`` (``interp.training.optim``)
applies per-run learning rates and weight decays as tensors, so one step costs the same number of
kernel calls for any R (no loop over runs inside the step). Runs may stop early (``stop_at``); finished runs are dropped from the stack.
Phases use the shared rule of ``interp.theory.phase_diagram`` (``ToyHistory.phase``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from interp.analysis.phases import first_epoch_reaching
from interp.analysis.rqi import RQI_TOL, rqi_linear
from interp.errors import InterpError
from interp.theory.phase_diagram import PhaseRule, classify_phase
from interp.training.optim import StackedAdamW

RQI_TARGET = 0.95  # REFERENCE §6: "steps to RQI > 0.95"
METRICS = ("train_acc", "test_acc", "rqi", "l_eff", "acc_pred")
OBJECTIVES = ("task", "effective")


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ToyConfig:
    """One toy run (REFERENCE §6 defaults). ``seed`` seeds the initialisation; ``split_seed`` the
    training subset (None: ``seed``). Fields marked *shared* must agree across the runs of one stack."""

    p: int = 10  # shared
    n_train: int = 45
    d: int = 1  # shared
    hidden: int = 200  # shared
    lr_embed: float = 1e-3
    lr_decoder: float = 1e-4
    wd_embed: float = 0.0
    wd_decoder: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    seed: int = 0
    split_seed: Optional[int] = None
    steps: int = 10_000  # shared
    log_every: int = 10  # shared

    def __post_init__(self) -> None:
        if self.p < 2:
            raise InterpError(f"toy model: p must be >= 2, got {self.p}")
        n_pairs = n_pairs_of(self.p)
        if not (1 <= self.n_train <= n_pairs):
            raise InterpError(
                f"toy model: n_train must lie in 1..{n_pairs} (the unordered pairs of p = {self.p}), got {self.n_train}"
            )
        for name in ("d", "hidden", "steps", "log_every"):
            if getattr(self, name) < 1:
                raise InterpError(f"toy model: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_embed", "lr_decoder", "wd_embed", "wd_decoder"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise InterpError(f"toy model: {name} must be finite and >= 0, got {v}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise InterpError(f"toy model: betas must lie in [0, 1), got ({self.beta1}, {self.beta2})")

    @property
    def n_pairs(self) -> int:
        return n_pairs_of(self.p)

    @property
    def train_fraction(self) -> float:
        return self.n_train / self.n_pairs

    def to_dict(self) -> dict:
        return asdict(self)


_SHARED = ("p", "d", "hidden", "steps", "log_every")


# ----------------------------------------------------------------------------- data


def n_pairs_of(p: int) -> int:
    return p * (p + 1) // 2


def unordered_pairs(p: int) -> tuple[Int[Tensor, "P"], Int[Tensor, "P"]]:
    """The unordered pairs {i, j}, i <= j, in ``torch.triu_indices`` order; their label is i + j."""
    i, j = torch.triu_indices(p, p)
    return i, j


def train_mask(p: int, n_train: int, seed: int) -> Bool[Tensor, "P"]:
    """A seeded random subset of ``n_train`` of the unordered pairs."""
    P = n_pairs_of(p)
    if not (1 <= n_train <= P):
        raise InterpError(f"toy model: n_train must lie in 1..{P}, got {n_train}")
    g = torch.Generator().manual_seed(int(seed))
    mask = torch.zeros(P, dtype=torch.bool)
    mask[torch.randperm(P, generator=g)[:n_train]] = True
    return mask


def parallelograms(p: int) -> tuple[Int[Tensor, "Q"], Int[Tensor, "Q"]]:
    """Every parallelogram as a pair of indices (a < b) into ``unordered_pairs(p)`` with equal sums
    (70 for p = 10)."""
    i, j = unordered_pairs(p)
    s = i + j
    a, b = torch.triu_indices(s.numel(), s.numel(), offset=1)
    keep = s[a] == s[b]
    return a[keep], b[keep]


def _constraint_rows(p: int, x: Tensor, y: Tensor) -> np.ndarray:
    """Rows e_i + e_j - e_m - e_n for the pairs x = {i, j}, y = {m, n} (indices into ``unordered_pairs``)."""
    i, j = unordered_pairs(p)
    v = np.zeros((x.numel(), p))
    for col, sign in ((i[x], 1), (j[x], 1), (i[y], -1), (j[y], -1)):
        np.add.at(v, (np.arange(x.numel()), col.numpy()), sign)
    return v


def _null_space(p: int, mask: Bool[Tensor, "P"]) -> np.ndarray:
    """Basis [p, k] of the representations (per dimension) that close every training parallelogram."""
    a, b = parallelograms(p)
    tr = mask[a] & mask[b]
    A = _constraint_rows(p, a[tr], b[tr])
    if not A.shape[0]:
        return np.eye(p)
    _, sv, vt = np.linalg.svd(A)
    rank = int((sv > 1e-9 * max(sv.max(), 1.0)).sum())
    return vt[rank:].T


def linear_unique(p: int, mask: Bool[Tensor, "P"]) -> bool:
    """Whether the training parallelograms leave only E_k = alpha + beta k (null space of dimension 2)."""
    return _null_space(p, mask.cpu()).shape[1] == 2


def implied_accuracy(p: int, mask: Bool[Tensor, "P"]) -> tuple[float, bool]:
    """(acc_implied, linear_unique) of one training set (module notes): which test pairs every
    representation with zero effective loss must answer correctly, and whether the training
    parallelograms pin E down to alpha + beta k. acc_implied is NaN when there is no test pair."""
    m = mask.cpu()
    null = _null_space(p, m)
    unique = null.shape[1] == 2
    test = torch.nonzero(~m).flatten()
    if test.numel() == 0:
        return float("nan"), unique
    i, j = unordered_pairs(p)
    s = i + j
    trn = torch.nonzero(m).flatten()
    ok = np.zeros(test.numel(), dtype=bool)
    for k, t in enumerate(test.tolist()):
        partners = trn[s[trn] == s[t]]  # training pairs of the same sum
        if partners.numel():
            v = _constraint_rows(p, torch.full_like(partners, t), partners)
            ok[k] = bool((np.abs(v @ null) < 1e-8).all(1).any())
    return float(ok.mean()), unique


# ----------------------------------------------------------------------------- model


@dataclass
class ToyParams:
    """Stacked parameters, run axis first (weights stored [in, out] for x @ W)."""

    E: Float[Tensor, "run p d"]
    W1: Float[Tensor, "run d h"]
    b1: Float[Tensor, "run h"]
    W2: Float[Tensor, "run h h"]
    b2: Float[Tensor, "run h"]
    W3: Float[Tensor, "run h c"]
    b3: Float[Tensor, "run c"]

    DECODER = ("W1", "b1", "W2", "b2", "W3", "b3")

    def tensors(self) -> dict[str, Tensor]:
        return {k: getattr(self, k) for k in ("E",) + self.DECODER}

    @staticmethod
    def init(configs: Sequence[ToyConfig]) -> "ToyParams":
        """Each run's parameters from its own generator (seeded by its ``seed``), so a run starts the
        same whether trained alone or in a stack: E ~ U[-1/2, 1/2], the decoder as ``nn.Linear``
        (weights and biases ~ U[-1/sqrt(fan_in), 1/sqrt(fan_in)])."""
        c0 = configs[0]
        p, d, H, C = c0.p, c0.d, c0.hidden, 2 * c0.p - 1
        shapes = {"E": (p, d), "W1": (d, H), "b1": (H,), "W2": (H, H), "b2": (H,), "W3": (H, C), "b3": (C,)}
        fan_in = {"W1": d, "b1": d, "W2": H, "b2": H, "W3": H, "b3": H}
        out: dict[str, list[Tensor]] = {k: [] for k in shapes}
        for c in configs:  # initialisation only, not the training step
            g = torch.Generator().manual_seed(int(c.seed))
            for k, shape in shapes.items():
                bound = 0.5 if k == "E" else 1.0 / math.sqrt(fan_in[k])
                out[k].append((torch.rand(shape, generator=g) * 2 - 1) * bound)
        return ToyParams(**{k: torch.stack(v).requires_grad_(True) for k, v in out.items()})

    def select(self, keep: Int[Tensor, "k"]) -> "ToyParams":
        return ToyParams(
            **{k: v.detach().index_select(0, keep).requires_grad_(True) for k, v in self.tensors().items()}
        )


def decoder_logits(params: ToyParams, i: Int[Tensor, "P"], j: Int[Tensor, "P"]) -> Float[Tensor, "run P c"]:
    """(E_i + E_j) -> tanh(. W1 + b1) -> tanh(. W2 + b2) -> . W3 + b3, batched over runs."""
    x = params.E[:, i] + params.E[:, j]
    h = torch.tanh(torch.baddbmm(params.b1[:, None], x, params.W1))
    h = torch.tanh(torch.baddbmm(params.b2[:, None], h, params.W2))
    return torch.baddbmm(params.b3[:, None], h, params.W3)


def effective_loss(E: Float[Tensor, "run p d"], mask: Bool[Tensor, "run P"]) -> Float[Tensor, "run"]:
    """l_eff per run (REFERENCE §6): sum over training parallelograms of |E_i + E_j - E_m - E_n|^2
    over sum_k |E_k|^2."""
    p = E.shape[1]
    i, j = unordered_pairs(p)
    a, b = parallelograms(p)
    S = E[:, i] + E[:, j]  # [R, P, d]
    r2 = (S[:, a] - S[:, b]).pow(2).sum(-1)  # [R, Q]
    w = (mask[:, a] & mask[:, b]).to(E.dtype)
    return (r2 * w).sum(1) / E.pow(2).sum((1, 2))


def predicted_accuracy(
    E: Float[Tensor, "run p d"], mask: Bool[Tensor, "run P"], tol: float = RQI_TOL
) -> Float[Tensor, "run"]:
    """acc_pred per run (module notes): the fraction of test pairs closing a parallelogram (RQI
    tolerance, standardised E) with some training pair of the same sum. NaN for a run without test
    pairs."""
    E = E.detach().double()
    Z = (E - E.mean(1, keepdim=True)) / E.std(1, unbiased=False, keepdim=True).clamp_min(1e-300)
    p, d = E.shape[1], E.shape[2]
    i, j = unordered_pairs(p)
    a, b = parallelograms(p)
    S = Z[:, i] + Z[:, j]
    closed = (S[:, a] - S[:, b]).pow(2).sum(-1) / d < tol  # [R, Q]
    ma, mb = mask[:, a], mask[:, b]
    # a parallelogram predicts its test pair when the other pair is a training pair
    hit_a = closed & ~ma & mb  # test pair a predicted by training pair b
    hit_b = closed & ~mb & ma
    P = i.numel()
    pred = torch.zeros(E.shape[0], P, dtype=torch.bool)
    pred.scatter_reduce_(1, a.expand(E.shape[0], -1), hit_a, "amax")
    pred.scatter_reduce_(1, b.expand(E.shape[0], -1), hit_b, "amax")
    n_test = (~mask).sum(1)
    return torch.where(n_test > 0, (pred & ~mask).sum(1) / n_test.clamp_min(1), torch.nan)


# ----------------------------------------------------------------------------- optimiser


# ----------------------------------------------------------------------------- results


@dataclass
class ToyHistory:
    """One run's logged curves (numpy arrays over its logged steps) and its fixed quantities."""

    config: ToyConfig
    objective: str
    steps: np.ndarray
    metrics: dict[str, np.ndarray]
    acc_implied: float
    linear_unique: bool
    E_final: np.ndarray
    stopped_at: int  # last step trained (config.steps unless stopped early)
    extra: dict = field(default_factory=dict)

    def first(self, metric: str, level: float) -> Optional[int]:
        """First logged step with ``metric`` >= ``level`` (None: never)."""
        return first_epoch_reaching(self.steps, self.metrics[metric], level)

    def t_rqi(self, level: float = RQI_TARGET) -> Optional[int]:
        """Steps to RQI > ``level`` (REFERENCE §6; None: not within the run)."""
        hit = np.flatnonzero(self.metrics["rqi"] > level)
        return int(self.steps[hit[0]]) if hit.size else None

    def phase(self, rule: PhaseRule) -> str:
        """The shared phase rule (``interp.theory.phase_diagram``) on this run's accuracy curves."""
        return classify_phase(self.first("train_acc", rule.threshold), self.first("test_acc", rule.threshold), rule)

    def final(self, metric: str) -> float:
        return float(self.metrics[metric][-1])


# ----------------------------------------------------------------------------- training


def _check_stack(configs: Sequence[ToyConfig], objective: str) -> None:
    if not configs:
        raise InterpError("toy model: no runs to train")
    if objective not in OBJECTIVES:
        raise InterpError(f"toy model: objective must be one of {OBJECTIVES}, got {objective!r}")
    for name in _SHARED:
        vals = {getattr(c, name) for c in configs}
        if len(vals) > 1:
            raise InterpError(f"toy model: runs trained together must share {name}, got {sorted(vals)}")


def train_toys(
    configs: Sequence[ToyConfig],
    objective: str = "task",
    stop_at: Optional[Mapping[str, float]] = None,
    dtype: torch.dtype = torch.float32,
) -> list[ToyHistory]:
    """Train every config as one stack of runs; one ``ToyHistory`` per config, in order.

    ``objective``: "task" (cross-entropy on each run's training pairs, mean over them) or
    "effective" (l_eff alone; only E is updated). The per-run losses are summed, so each run's
    gradient is its own. ``stop_at``: {metric: level}; a run stops (and leaves the stack) at the
    first logged step by which every listed metric has reached its level at some logged step
    (``>=``; for "rqi" ``>``, the same thing for p = 10). Example: ``{"rqi": 0.95}``.
    """
    configs = list(configs)
    _check_stack(configs, objective)
    stop_at = dict(stop_at or {})
    for k in stop_at:
        if k not in METRICS:
            raise InterpError(f"toy model: stop_at metric must be one of {METRICS}, got {k!r}")
    c0 = configs[0]
    R, p, steps, every = len(configs), c0.p, c0.steps, c0.log_every
    i, j = unordered_pairs(p)
    label = i + j
    masks = torch.stack([train_mask(p, c.n_train, c.seed if c.split_seed is None else c.split_seed) for c in configs])
    fixed = [implied_accuracy(p, m) for m in masks]

    params = ToyParams.init(configs)
    params = ToyParams(**{k: v.detach().to(dtype).requires_grad_(True) for k, v in params.tensors().items()})
    names = ("E",) if objective == "effective" else ("E",) + ToyParams.DECODER

    def vec(attr: str) -> Tensor:
        return torch.tensor([getattr(c, attr) for c in configs], dtype=torch.float64)

    lr = {n: vec("lr_embed" if n == "E" else "lr_decoder") for n in names}
    wd = {n: vec("wd_embed" if n == "E" else "wd_decoder") for n in names}
    opt = StackedAdamW({n: getattr(params, n) for n in names}, lr, wd, vec("beta1"), vec("beta2"))

    active = torch.arange(R)  # original run index of each stack slot
    mask_a = masks
    logs: list[dict[str, list]] = [{"step": [], **{m: [] for m in METRICS}} for _ in range(R)]
    reached = torch.zeros(R, len(stop_at), dtype=torch.bool)
    stopped_at = [steps] * R
    E_final: list[Optional[np.ndarray]] = [None] * R
    n_train = mask_a.sum(1).clamp_min(1)

    for t in range(steps + 1):
        log_now = t % every == 0 or t == steps
        if objective == "task" or log_now:
            with torch.set_grad_enabled(objective == "task"):
                logits = decoder_logits(params, i, j)  # [R, P, C]
        if log_now:
            with torch.no_grad():
                correct = logits.argmax(-1) == label
                tr_acc = (correct & mask_a).sum(1) / n_train
                n_test = (~mask_a).sum(1)
                te_acc = torch.where(n_test > 0, (correct & ~mask_a).sum(1) / n_test.clamp_min(1), torch.nan)
                l_eff = effective_loss(params.E.detach().double(), mask_a)
                acc_pred = predicted_accuracy(params.E, mask_a)
                E_np = params.E.detach().double()
                rqi = torch.tensor([rqi_linear(E_np[r]).rqi for r in range(E_np.shape[0])], dtype=torch.float64)
            row = {"train_acc": tr_acc, "test_acc": te_acc, "rqi": rqi, "l_eff": l_eff, "acc_pred": acc_pred}
            for k, g in enumerate(active.tolist()):
                logs[g]["step"].append(t)
                for m in METRICS:
                    logs[g][m].append(float(row[m][k]))
            if stop_at:
                for c, (m, level) in enumerate(stop_at.items()):
                    v = row[m].double()
                    hit = v > level if m == "rqi" else v >= level
                    reached[active, c] |= hit.nan_to_num(0).bool()
                done = reached[active].all(1)
                if bool(done.any()) and t < steps:
                    for k in torch.nonzero(done).flatten().tolist():
                        g = int(active[k])
                        stopped_at[g] = t
                        E_final[g] = params.E.detach()[k].double().numpy().copy()
                    keep = torch.nonzero(~done).flatten()
                    if keep.numel() == 0:
                        break
                    active, mask_a, n_train = active[keep], mask_a[keep], n_train[keep]
                    logits = logits[keep]
                    params = params.select(keep)
                    opt.select(keep, {n: getattr(params, n) for n in names})
                    if objective == "task":  # recompute the graph for the kept runs
                        logits = decoder_logits(params, i, j)
        if t == steps:
            break
        if objective == "task":
            ce = F.cross_entropy(logits.flatten(0, 1), label.repeat(logits.shape[0]), reduction="none").view(
                logits.shape[0], -1
            )
            loss = ((ce * mask_a).sum(1) / n_train).sum()
        else:
            loss = effective_loss(params.E, mask_a).sum()
        loss.backward()
        opt.step()

    for k, g in enumerate(active.tolist()):
        if E_final[g] is None:
            E_final[g] = params.E.detach()[k].double().numpy().copy()
    out = []
    for r, c in enumerate(configs):
        lg = logs[r]
        out.append(
            ToyHistory(
                config=c,
                objective=objective,
                steps=np.asarray(lg["step"], dtype=np.int64),
                metrics={m: np.asarray(lg[m], dtype=float) for m in METRICS},
                acc_implied=fixed[r][0],
                linear_unique=fixed[r][1],
                E_final=E_final[r],
                stopped_at=stopped_at[r],
            )
        )
    return out


def train_toy(config: ToyConfig, objective: str = "task", **kw) -> ToyHistory:
    """One run (a stack of one)."""
    return train_toys([config], objective, **kw)[0]


def unique_probability(p: int, n_train: int, samples: int, seed: int = 0) -> float:
    """Fraction of ``samples`` random training sets of size ``n_train`` whose training parallelograms
    pin E down to a line (``linear_unique``; REFERENCE §6: 0.43 at 22 of 55, 0.99 at 31)."""
    g = np.random.default_rng(seed)
    P = n_pairs_of(p)
    hits = 0
    for _ in range(samples):
        m = torch.zeros(P, dtype=torch.bool)
        m[torch.from_numpy(g.permutation(P)[:n_train])] = True
        hits += linear_unique(p, m)
    return hits / samples
