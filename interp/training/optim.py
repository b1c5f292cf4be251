"""Optimisers for R stacked runs, each member with its own hyperparameters.

Parameters are stacked along a leading run axis (``{name: [R, ...]}``, see ``interp.model.fast``).
``EnsembleOptimizer`` applies AdamW, Adam or SGD to every member with that member's own learning
rate, betas and weight decay. Members that share their hyperparameters (and step count) are updated
by one call of PyTorch's fused kernel over the stacked tensors, so an ensemble costs a few kernel
calls per step rather than one per member and parameter, and a single run (R = 1) performs exactly
the update ``torch.optim.AdamW(fused=True)`` performs (bit-identical; tested).

Weight-decay conventions (REFERENCE §5: gamma_eff = eta lambda for SGD, >= eta lambda for AdamW):

- ``adamw``: decoupled decay, theta <- theta (1 - eta lambda) before the Adam step (Loshchilov & Hutter);
- ``adam``: L2 decay, lambda theta added to the gradient before the moments (``torch.optim.Adam``);
- ``sgd``: plain gradient descent on loss + (lambda / 2) ||theta||^2, i.e. theta <- theta - eta (g + lambda theta)
  (``torch.optim.SGD`` without momentum); V then contracts by (1 - eta lambda)^2 ~ 1 - 2 eta lambda per step.

Constant-norm training (Omnigrok, REFERENCE §4): ``project_norm`` rescales every member's parameters
jointly (L2 over all of them) to its target norm after each step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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

    def __init__(self, params: dict[str, Tensor], members: Sequence[MemberOptim]):
        self.params = params
        self.members = list(members)
        self.steps = [0] * len(self.members)
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}

    @property
    def names(self) -> list[str]:
        return list(self.params)

    @torch.no_grad()
    def step(self, lrs: Sequence[float]) -> None:
        """One update of every member, member r with learning rate ``lrs[r]``; grads are zeroed after."""
        R = len(self.members)
        groups: dict[tuple, list[int]] = {}
        for r, m in enumerate(self.members):
            groups.setdefault((m, float(lrs[r]), self.steps[r]), []).append(r)
        names = self.names
        for (m, lr, step), idx in groups.items():
            if len(idx) == R:  # the whole ensemble: one kernel call over the stacked tensors
                tensors = [
                    (self.params[n].detach(), self.params[n].grad, self.exp_avg[n], self.exp_avg_sq[n]) for n in names
                ]
            else:  # a subset: views of its members' slices
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

    def select(self, keep: Sequence[int], params: dict[str, Tensor]) -> None:
        """Keep only members ``keep`` (finished members stop costing compute); ``params`` are the new leaves."""
        self.params = params
        self.members = [self.members[r] for r in keep]
        self.steps = [self.steps[r] for r in keep]
        idx = torch.tensor(list(keep), dtype=torch.long)
        self.exp_avg = {n: t.index_select(0, idx.to(t.device)) for n, t in self.exp_avg.items()}
        self.exp_avg_sq = {n: t.index_select(0, idx.to(t.device)) for n, t in self.exp_avg_sq.items()}


def squared_norms(params: dict[str, Tensor]) -> Float[Tensor, "run name"]:
    """Per member, the sum of squares of each parameter (float64): V = ||theta||^2 by parameter."""
    return torch.stack([p.detach().double().pow(2).flatten(1).sum(1) for p in params.values()], 1)


@torch.no_grad()
def project_norm(params: dict[str, Tensor], target: Float[Tensor, "run"], active: Tensor) -> None:
    """Rescale each active member's parameters jointly so that ||theta|| (L2 over all) equals ``target``."""
    norm = squared_norms(params).sum(1).sqrt()
    scale = torch.where(active, target / norm, torch.ones_like(norm))
    for p in params.values():
        p.mul_(scale.to(p.dtype).view(-1, *([1] * (p.dim() - 1))))
