"""Optimisers for R stacked runs, each member with its own hyperparameters.

Parameters are stacked along a leading run axis (``{name: [R, ...]}``, see ``interp.model.fast``).
``EnsembleOptimizer`` applies AdamW, Adam or SGD to every member with that member's own learning
rate, betas and weight decay. Members that share their hyperparameters (and step count) are updated
by one call of PyTorch's fused kernel over the stacked tensors, so an ensemble costs a few kernel
calls per step rather than one per member and parameter (the trainer stacks members that share
their settings next to each other, so each such group is one slice of every tensor), and a single
run (R = 1) performs exactly the update ``torch.optim.AdamW(fused=True)`` performs (bit-identical; tested).

``StackedAdamW`` is AdamW with each run's learning rate and weight decay as tensors, per parameter
group: the effective-theory toy's grids, where every run has its own learning rate.

Weight-decay conventions (REFERENCE §5: gamma_eff = eta lambda for SGD, >= eta lambda for AdamW):

- ``adamw``: decoupled decay, theta <- theta (1 - eta lambda) before the Adam step (Loshchilov & Hutter);
- ``adam``: L2 decay, lambda theta added to the gradient before the moments (``torch.optim.Adam``);
- ``sgd``: plain gradient descent on loss + (lambda / 2) ||theta||^2, i.e. theta <- theta - eta (g + lambda theta)
  (``torch.optim.SGD`` without momentum); V then contracts by (1 - eta lambda)^2 ~ 1 - 2 eta lambda per step.

Constant-norm training (Omnigrok, REFERENCE §4): ``project_norm`` rescales every member's parameters
jointly (L2 over all of them) to its target norm after each step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

EPS = 1e-8  # torch.optim default


@dataclass(frozen=True)
class MemberOptim:
    """One member's optimiser settings (from its TrainConfig)."""

    kind: str  # adamw | adam | sgd
    beta1: float
    beta2: float
    weight_decay: float


class EnsembleOptimizer:
    """AdamW / Adam / SGD over stacked parameters with per-member hyperparameters.

    ``params``: the trainable stacked leaves ``{name: [R, ...]}``; ``members``: one ``MemberOptim`` each.
    State per member and parameter: the step count and Adam's two moments. ``member_state`` /
    ``load_member_state`` use the key layout of ``torch.optim`` state saved by name
    (``step.<name>``, ``exp_avg.<name>``, ``exp_avg_sq.<name>``), so run directories written by the
    earlier single-run trainer resume unchanged.
    """

    def __init__(
        self,
        params: dict[str, Tensor],
        members: Sequence[MemberOptim],
        filters: Optional[Sequence["MemberFilter"]] = None,
    ):
        self.params = params
        self.members = list(members)
        self.kernel_settings = [self._kernel_settings(m) for m in self.members]  # fixed: computed once
        # Grokfast (REFERENCE §7): between backward and the update, only when some member asks for it
        gf = GrokfastFilter(params, filters) if filters and any(f.kind for f in filters) else None
        self.grokfast = gf
        self.steps = [0] * len(self.members)
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}

    @property
    def names(self) -> list[str]:
        return list(self.params)

    @torch.no_grad()
    def step(self, lrs: Sequence[float]) -> None:
        """One update of every member, member r with learning rate ``lrs[r]``; grads are zeroed after.

        Members are updated together when they share the kernel's settings (``_kernel_settings``):
        one call per group, over one slice of each tensor when the group's members are neighbours
        in the stack (the trainer stacks them so). AdamW members that differ only in weight decay
        share a group on CPU; their decay is then applied here, before the kernel (``_decay``).
        """
        if self.grokfast is not None:
            self.grokfast.apply(self.params)
        groups: dict[tuple, list[int]] = {}
        for r, settings in enumerate(self.kernel_settings):
            groups.setdefault((settings, float(lrs[r]), self.steps[r]), []).append(r)
        mixed = any(len({self.members[r].weight_decay for r in idx}) > 1 for idx in groups.values())
        if mixed:
            self._decay(lrs)
        names = self.names
        for (settings, lr, step), idx in groups.items():
            m = settings if mixed else self.members[idx[0]]  # decayed already, or each group's own decay
            lo, hi = idx[0], idx[-1] + 1
            if hi - lo == len(idx):  # neighbours in the stack (the whole ensemble, or a block): one slice per tensor
                tensors = [
                    (
                        self.params[n].detach()[lo:hi],
                        self.params[n].grad[lo:hi],
                        self.exp_avg[n][lo:hi],
                        self.exp_avg_sq[n][lo:hi],
                    )
                    for n in names
                ]
            else:  # scattered members: a view of each member's slice (R x as many tensors for the kernel)
                tensors = [
                    (self.params[n].detach()[r], self.params[n].grad[r], self.exp_avg[n][r], self.exp_avg_sq[n][r])
                    for n in names
                    for r in idx
                ]
            self._update(m, lr, step + 1, *map(list, zip(*tensors)))
            for r in idx:
                self.steps[r] = step + 1
        for p in self.params.values():
            p.grad = None

    def _kernel_settings(self, m: MemberOptim) -> MemberOptim:
        """What must be equal for members to share a kernel call: all of ``m`` but, for AdamW on CPU,
        the weight decay (applied apart by ``_decay``, which gives the kernel's bits there).

        PyTorch's CUDA kernel decays as theta - (lr lambda) theta, which rounds differently, so on a
        GPU members with other weight decays keep their own calls and stay bit-identical to single runs.
        """
        if m.kind == "adamw" and next(iter(self.params.values())).device.type == "cpu":
            return dataclasses.replace(m, weight_decay=0.0)
        return m

    def _decay(self, lrs: Sequence[float]) -> None:
        """AdamW's decoupled decay of every AdamW member, theta <- theta * float32(1 - lr lambda).

        This is the fused CPU kernel's first operation, one rounding per element, so doing it here and
        calling the kernel with lambda = 0 gives the same bits (tested against ``torch.optim.AdamW``):
        a sweep over weight decay costs one kernel call per step, not one per weight decay.
        """
        factor = [
            1 - float(lr) * m.weight_decay if m.kind == "adamw" else 1.0  # in double, as the kernel computes it
            for m, lr in zip(self.members, lrs)
        ]
        first = next(iter(self.params.values()))  # the stacked parameters share one precision and device
        f = torch.tensor(factor, dtype=first.dtype, device=first.device)  # rounded once to that precision
        for p in self.params.values():
            p.detach().mul_(f.view(-1, *([1] * (p.dim() - 1))))

    @staticmethod
    def _update(m: MemberOptim, lr: float, step: int, params, grads, exp_avgs, exp_avg_sqs) -> None:
        if m.kind == "sgd":
            if m.weight_decay:
                grads = torch._foreach_add(grads, params, alpha=m.weight_decay)
            torch._foreach_add_(params, grads, alpha=-lr)
            return
        steps = [torch.tensor(float(step), device=params[0].device) for _ in params]
        fused = torch._fused_adamw_ if m.kind == "adamw" else torch._fused_adam_
        fused(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            amsgrad=False,
            lr=lr,
            beta1=m.beta1,
            beta2=m.beta2,
            weight_decay=m.weight_decay,
            eps=EPS,
            maximize=False,
            grad_scale=None,
            found_inf=None,
        )

    def member_state(self, r: int) -> dict[str, Tensor]:
        """Member r's state as ``{step.<name>, exp_avg.<name>, exp_avg_sq.<name>}`` (empty before its first step)."""
        if self.steps[r] == 0:
            return {}
        out: dict[str, Tensor] = {}
        for n in self.names:
            out[f"step.{n}"] = torch.tensor(float(self.steps[r]))
            out[f"exp_avg.{n}"] = self.exp_avg[n][r]
            out[f"exp_avg_sq.{n}"] = self.exp_avg_sq[n][r]
        if self.grokfast is not None:
            out.update(self.grokfast.member_state(r))
        return out

    @torch.no_grad()
    def load_member_state(self, r: int, state: dict[str, Tensor], source: str) -> None:
        """Restore what ``member_state`` saved; ValueError naming ``source`` if a key is missing."""
        if not state:
            self.steps[r] = 0
            return
        steps = set()
        for n in self.names:
            for key in ("step", "exp_avg", "exp_avg_sq"):
                if f"{key}.{n}" not in state:
                    raise KeyError(f"{source}: missing optimizer state {key}.{n}")
            steps.add(int(state[f"step.{n}"].item()))
            self.exp_avg[n][r].copy_(state[f"exp_avg.{n}"])
            self.exp_avg_sq[n][r].copy_(state[f"exp_avg_sq.{n}"])
        if len(steps) != 1:
            raise KeyError(f"{source}: parameters disagree on the step count ({sorted(steps)})")
        self.steps[r] = steps.pop()
        if self.grokfast is not None:
            self.grokfast.load_member_state(r, state, source)


class StackedAdamW:
    """AdamW (decoupled decay, ``torch.optim.AdamW`` arithmetic) over stacked parameters, every run
    with its own learning rate and weight decay per parameter group, all runs updated by the same
    tensor operations.

    The optimiser of grids in which every run has its own learning rate (the effective theory's
    phase diagrams, ``interp.theory.toy``): its cost does not grow with the number of distinct
    settings, where ``EnsembleOptimizer`` calls the fused kernel once per learning rate. It matches
    ``torch.optim.AdamW`` per run to rounding (tested in float64 to 1e-12 over 20 steps), not bit for
    bit, so the trainer, whose single runs must equal ``torch.optim.AdamW(fused=True)`` exactly,
    keeps ``EnsembleOptimizer``. ``lr`` / ``wd``: {name: [R]}; betas per run as [R] tensors (all kept in
    float64, as torch keeps them in Python floats). All runs share the step count (they start
    together)."""

    def __init__(
        self,
        params: dict[str, Tensor],
        lr: dict[str, Tensor],
        wd: dict[str, Tensor],
        beta1: Tensor,
        beta2: Tensor,
        eps: float = 1e-8,
    ):
        f64 = torch.float64
        self.params, self.eps = params, eps
        self.lr = {n: torch.as_tensor(v, dtype=f64) for n, v in lr.items()}
        self.wd = {n: torch.as_tensor(v, dtype=f64) for n, v in wd.items()}
        self.beta1, self.beta2 = torch.as_tensor(beta1, dtype=f64), torch.as_tensor(beta2, dtype=f64)
        self.t = 0
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for n, p in self.params.items():
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)

            def col(x: Tensor) -> Tensor:  # [R] float64 -> broadcastable in p's dtype
                return x.view(shape).to(p.dtype)

            b1, b2 = self.beta1, self.beta2
            g = p.grad
            p.mul_(col(1 - self.lr[n] * self.wd[n]))
            m, v = self.exp_avg[n], self.exp_avg_sq[n]
            m.lerp_(g, col(1 - b1))
            v.mul_(col(b2)).addcmul_(g, g * col(1 - b2))
            step_size = col(self.lr[n] / (1 - b1**self.t))
            denom = (v.sqrt() / col((1 - b2**self.t).sqrt())).add_(self.eps)
            p.addcdiv_(m * step_size, denom, value=-1.0)
            p.grad = None

    def select(self, keep: Tensor, params: dict[str, Tensor]) -> None:
        """Keep only runs ``keep``; ``params`` are the new (selected) leaves."""
        self.params = params
        self.lr = {n: v.index_select(0, keep) for n, v in self.lr.items()}
        self.wd = {n: v.index_select(0, keep) for n, v in self.wd.items()}
        self.beta1, self.beta2 = self.beta1.index_select(0, keep), self.beta2.index_select(0, keep)
        self.exp_avg = {n: v.index_select(0, keep) for n, v in self.exp_avg.items()}
        self.exp_avg_sq = {n: v.index_select(0, keep) for n, v in self.exp_avg_sq.items()}


def squared_norms(params: dict[str, Tensor]) -> Float[Tensor, "run name"]:
    """Per member, the sum of squares of each parameter (float64): V = ||theta||^2 by parameter.

    The last axis is summed first, then the rest: a sum to one value per tensor (a single run's
    [1, ...] stack) is split across threads once it is large (>= 32768 values, e.g. the canonical
    W_in), which rounds differently from an ensemble's one-value-per-member sums. Summed row by row,
    each member's value is the same alone and in any ensemble.
    """
    return torch.stack([_row_sums(p.detach().double().pow(2)) for p in params.values()], 1)


def _row_sums(x: Tensor) -> Float[Tensor, "run"]:
    rows = x.sum(-1)
    return rows if rows.dim() == 1 else rows.flatten(1).sum(1)


@torch.no_grad()
def project_norm(params: dict[str, Tensor], target: Float[Tensor, "run"], active: Tensor) -> None:
    """Rescale each active member's parameters jointly so that ||theta|| (L2 over all) equals ``target``."""
    norm = squared_norms(params).sum(1).sqrt()
    scale = torch.where(active, target / norm, torch.ones_like(norm))
    for p in params.values():
        p.mul_(scale.to(p.dtype).view(-1, *([1] * (p.dim() - 1))))


@dataclass(frozen=True)
class MemberFilter:
    """One member's Grokfast filter (from its TrainConfig): kind None, "ema" or "ma"."""

    kind: Optional[str]
    alpha: float
    lamb: float
    window: int


class GrokfastFilter:
    """Grokfast's gradient filters over stacked gradients, each member with its own filter (REFERENCE §7).

    Lee et al. 2024 amplify the slow part of the gradient, between backward and the optimiser step:

    - EMA: mu_t = a mu_{t-1} + (1 - a) g_t with mu_1 = g_1, then g_t <- g_t + lambda mu_t;
    - MA: g_t <- g_t + lambda * mean(g_{t-w+1}, ..., g_t), applied once w gradients have been
      seen (before that the gradient passes unchanged, as in the authors' code with warm-up).

    Members without a filter pass unchanged. All members are filtered by the same few tensor
    operations (per-member a, lambda as [R, 1, ...] factors; the MA windows share one ring buffer
    [R, max w, ...] and each member averages the slots of its own last w gradients), so the cost does not grow with a loop over
    members. The state (mu, the last w gradients in order, the count) is part of the member's
    optimiser file, so a resumed run filters exactly as an uninterrupted one.
    """

    def __init__(self, params: dict[str, Tensor], members: Sequence[MemberFilter]):
        self.members = list(members)
        dev = next(iter(params.values())).device
        self.count = torch.zeros(len(self.members), dtype=torch.long)
        # one ring buffer as long as the longest MA window; each member averages its own last w
        self.window = max((m.window for m in self.members if m.kind == "ma"), default=0)
        self.member_window = torch.tensor([m.window if m.kind == "ma" else 1 for m in self.members], device=dev)
        ema = [m.kind == "ema" for m in self.members]
        ma = [m.kind == "ma" for m in self.members]
        self.any_ema, self.any_ma = any(ema), any(ma)
        f64 = dict(dtype=torch.float32, device=dev)
        self.alpha = torch.tensor([m.alpha if e else 0.0 for m, e in zip(self.members, ema)], **f64)
        self.lamb_ema = torch.tensor([m.lamb if e else 0.0 for m, e in zip(self.members, ema)], **f64)
        self.lamb_ma = torch.tensor([m.lamb if a else 0.0 for m, a in zip(self.members, ma)], **f64)
        self.mu = {n: torch.zeros_like(p) for n, p in params.items()} if self.any_ema else {}
        self.buf = (
            {n: p.new_zeros((p.shape[0], self.window, *p.shape[1:])) for n, p in params.items()} if self.any_ma else {}
        )

    @property
    def active(self) -> bool:
        return self.any_ema or self.any_ma

    @staticmethod
    def _per_run(x: Tensor, like: Tensor) -> Tensor:
        return x.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    @torch.no_grad()
    def apply(self, params: dict[str, Tensor]) -> None:
        """Filter every parameter's ``.grad`` in place."""
        dev = next(iter(params.values())).device
        first = (self.count == 0).to(dev)
        count = self.count.to(dev)
        slot = count % max(self.window, 1)
        runs = torch.arange(len(self.members), device=dev)
        if self.any_ma:
            full = count + 1 >= self.member_window
            # a slot belongs to member r's window when it was written in its last w_r steps
            age = (slot[:, None] - torch.arange(self.window, device=dev)[None]) % self.window
            in_window = age < self.member_window[:, None]
            ma_scale = torch.where(full, self.lamb_ma / self.member_window, torch.zeros_like(self.lamb_ma))
        for n, p in params.items():
            g = p.grad
            if self.any_ema:
                a = self._per_run(torch.where(first, torch.zeros_like(self.alpha), self.alpha), g)
                mu = self.mu[n]
                mu.mul_(a).add_((1 - a) * g)
                ema_term = self._per_run(self.lamb_ema, g) * mu
            if self.any_ma:
                buf = self.buf[n]
                buf[runs, slot] = g
                mask = in_window.to(g.dtype).view(*in_window.shape, *([1] * (g.dim() - 1)))
                ma_term = self._per_run(ma_scale, g) * (buf * mask).sum(1)
            if self.any_ema:
                g.add_(ema_term)
            if self.any_ma:
                g.add_(ma_term)
        self.count += 1

    def member_state(self, r: int) -> dict[str, Tensor]:
        """Member r's filter state: ``grokfast_count``, ``grokfast_mu.<name>`` (EMA) or
        ``grokfast_ma.<name>`` (MA: its last min(count, w) gradients, oldest first)."""
        kind = self.members[r].kind
        if kind is None or int(self.count[r]) == 0:
            return {}
        c = int(self.count[r])
        out = {"grokfast_count": torch.tensor(float(c))}
        if kind == "ema":
            out.update({f"grokfast_mu.{n}": t[r] for n, t in self.mu.items()})
        else:
            k = min(c, self.members[r].window)
            order = torch.tensor([(c - k + j) % self.window for j in range(k)], dtype=torch.long)
            out.update({f"grokfast_ma.{n}": t[r].index_select(0, order.to(t.device)) for n, t in self.buf.items()})
        return out

    @torch.no_grad()
    def load_member_state(self, r: int, state: dict[str, Tensor], source: str) -> None:
        """Restore what ``member_state`` saved (KeyError naming ``source`` when a filtered member's state is missing)."""
        kind = self.members[r].kind
        if kind is None:
            return
        if "grokfast_count" not in state:
            if any(k.startswith("exp_avg.") for k in state):  # trained before: its filter state must be there
                raise KeyError(f"{source}: missing grokfast filter state")
            return
        c = int(state["grokfast_count"].item())
        self.count[r] = c
        if kind == "ema":
            for n in self.mu:
                self.mu[n][r].copy_(state[f"grokfast_mu.{n}"])
        else:
            k = min(c, self.members[r].window)
            for n, t in self.buf.items():
                saved = state[f"grokfast_ma.{n}"]
                if saved.shape[0] != k:
                    raise KeyError(f"{source}: grokfast window holds {saved.shape[0]} gradients, expected {k}")
                for j in range(k):
                    t[r, (c - k + j) % self.window].copy_(saved[j])
