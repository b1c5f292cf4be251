"""The Fourier basis and the task geometry every frequency analysis uses (REFERENCE §2).

Defined once here and imported everywhere:

* ``fourier_basis(n)``: orthonormal rows; row 0 constant, rows 2k-1 and 2k the normalised
  cos and sin of frequency k (and, for even n, a last Nyquist row cos(pi x)).
* ``fft1d`` / ``fft2d``: coefficients in that basis.
* ``Frame``: re-indexing that turns every supported task into addition in a cyclic group
  Z_n, so one set of trig directions serves all tasks:

  - add:  a, b, c in natural order (n = p).
  - sub:  b is read in the order -j mod p, so a - b = i + j; this is the sign convention for
    subtraction (equivalently, the sin_k(a+b) direction with b's sine flipped).
  - mul:  discrete log with the smallest generator g of Z_p^*: token g^i sits at index i
    (n = p - 1; token 0 is left out), so a * b = g^(i+j).
  - div:  as mul with b read as g^(-j).

* ``trig_directions``: the unit vectors cos_k(a+b) and sin_k(a+b) over the n^2 pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import InterpError
from interp.tasks import TASKS, is_prime


@lru_cache(maxsize=16)
def _basis(n: int, dtype: torch.dtype) -> Tensor:
    x = torch.arange(n, dtype=torch.float64)
    rows = [torch.ones(n, dtype=torch.float64)]
    for k in range(1, (n - 1) // 2 + 1):
        rows.append(torch.cos(2 * math.pi * k * x / n))
        rows.append(torch.sin(2 * math.pi * k * x / n))
    if n % 2 == 0:
        rows.append(torch.cos(math.pi * x))
    F = torch.stack(rows)
    return (F / F.norm(dim=1, keepdim=True)).to(dtype)


def fourier_basis(n: int, dtype: torch.dtype = torch.float64) -> Float[Tensor, "n n"]:
    """Orthonormal real Fourier basis of Z_n, one basis function per row (REFERENCE §2)."""
    if n < 2:
        raise ValueError(f"Fourier basis needs n >= 2, got {n}")
    return _basis(n, dtype)


def basis_labels(n: int) -> list[str]:
    out = ["const"]
    for k in range(1, (n - 1) // 2 + 1):
        out += [f"cos {k}", f"sin {k}"]
    if n % 2 == 0:
        out.append(f"cos {n // 2}")
    return out


def check_frequencies(n: int, freqs: Iterable[int], where: str = "") -> list[int]:
    """The frequencies as ints in their order, duplicates dropped; each must lie in 1..n//2 (the
    non-constant frequencies of Z_n), else InterpError (frequencies come from the user)."""
    out: list[int] = []
    for k in freqs:
        k = int(k)
        if not 1 <= k <= n // 2:
            raise InterpError(f"frequency {k} out of range 1..{n // 2}" + (f" for {where}" if where else ""))
        if k not in out:
            out.append(k)
    return out


def parse_frequencies(text: str) -> list[int]:
    """Frequencies written by a user, "14,35,41" or "14 35 41", sorted (InterpError on anything else)."""
    try:
        out = sorted({int(x) for x in str(text).replace(",", " ").split()})
    except ValueError:
        raise InterpError(f"frequencies must be integers separated by commas, like 14,35,41; got {text!r}") from None
    if not out:
        raise InterpError("the list of frequencies is empty")
    return out


def frequency_rows(n: int, k: int) -> list[int]:
    """Basis rows of frequency k (0 -> [0]; Nyquist of even n -> one row)."""
    if k == 0:
        return [0]
    if n % 2 == 0 and k == n // 2:
        return [n - 1]
    return [2 * k - 1, 2 * k]


def frequency_of_row(n: int) -> Int[Tensor, "n"]:
    """Frequency index k of every basis row."""
    r = torch.arange(n)
    return (r + 1) // 2


def fft1d(x: Float[Tensor, "n ..."], dim: int = 0) -> Float[Tensor, "n ..."]:
    """Coefficients of x along ``dim`` in the Fourier basis (x @ F.T on that axis)."""
    n = x.shape[dim]
    F = fourier_basis(n, x.dtype).to(x.device)
    return torch.movedim(torch.tensordot(F, torch.movedim(x, dim, 0), dims=([1], [0])), 0, dim)


def fft2d(x: Float[Tensor, "n n ..."]) -> Float[Tensor, "n n ..."]:
    """2D coefficients over the first two axes: einsum("ab...,fa,gb->fg...")."""
    n = x.shape[0]
    F = fourier_basis(n, x.dtype).to(x.device)
    return torch.einsum("ab...,fa,gb->fg...", x, F, F)


def frequency_norms(coefs: Float[Tensor, "n ..."], dim: int = 0) -> Float[Tensor, "k ..."]:
    """Norm of the coefficients per frequency (cos and sin rows joined), k = 0..n//2, along ``dim``."""
    n = coefs.shape[dim]
    c = torch.movedim(coefs, dim, 0)
    sq = c.pow(2).reshape(n, -1)
    out = torch.zeros(n // 2 + 1, sq.shape[1], dtype=c.dtype, device=c.device)
    out.index_add_(0, frequency_of_row(n).to(c.device), sq)
    return torch.movedim(out.sqrt().reshape(n // 2 + 1, *c.shape[1:]), 0, dim)


def smallest_generator(p: int) -> int:
    """Smallest primitive root of the prime p."""
    if not is_prime(p):
        raise InterpError(f"discrete log needs a prime p, got {p}")
    if p == 2:
        return 1
    phi = p - 1
    factors, m, f = set(), phi, 2
    while f * f <= m:
        while m % f == 0:
            factors.add(f)
            m //= f
        f += 1
    if m > 1:
        factors.add(m)
    for g in range(2, p):
        if all(pow(g, phi // q, p) != 1 for q in factors):
            return g
    raise AssertionError("unreachable: every prime has a primitive root")


@dataclass(frozen=True)
class Frame:
    """Group coordinates in which a task is addition mod n (see the module docstring).

    ``a_tokens[i]``, ``b_tokens[j]`` are the input tokens at group index i, j and
    ``c_tokens[(i + j) % n]`` is the answer token, for every i, j in [0, n).
    """

    task: str
    p: int
    n: int
    a_tokens: Int[Tensor, "n"]
    b_tokens: Int[Tensor, "n"]
    c_tokens: Int[Tensor, "n"]
    generator: int | None = None

    @property
    def pair_index(self) -> Int[Tensor, "n_sq"]:
        """Row-major pair indices (a * p + b) of the n^2 group-ordered pairs, i-major."""
        return (self.a_tokens[:, None] * self.p + self.b_tokens[None, :]).reshape(-1)

    def to_group(self, x: Tensor, pair_dim: int = 0) -> Tensor:
        """Reorder a tensor indexed by all p^2 row-major pairs into [n, n, ...] group order."""
        x = torch.movedim(x, pair_dim, 0).index_select(0, self.pair_index.to(x.device))
        return x.reshape(self.n, self.n, *x.shape[1:])

    def logits_to_group(self, logits: Float[Tensor, "pairs p"]) -> Float[Tensor, "n_sq n"]:
        """Logits on all p^2 pairs -> [n^2, n] in group order (pairs and answers)."""
        idx = self.pair_index.to(logits.device)
        return logits.index_select(0, idx).index_select(1, self.c_tokens.to(logits.device))


def frame(task: str, p: int) -> Frame:
    """The Frame of ``task`` mod ``p``; raises for tasks or moduli without Fourier structure."""
    if task not in TASKS:
        raise InterpError(f"task {task!r} has no Fourier structure here; supported: {', '.join(TASKS)}")
    nat = torch.arange(p)
    if task == "add":
        return Frame(task, p, p, nat, nat, nat)
    if task == "sub":
        return Frame(task, p, p, nat, (-nat) % p, nat)
    if not is_prime(p) or p < 3:
        raise InterpError(f"task {task!r} needs an odd prime p for its discrete-log frame, got p={p}")
    g = smallest_generator(p)
    pows = torch.tensor([pow(g, i, p) for i in range(p - 1)])
    if task == "mul":
        return Frame(task, p, p - 1, pows, pows, pows, g)
    inv = torch.tensor([pow(g, (-i) % (p - 1), p) for i in range(p - 1)])
    return Frame(task, p, p - 1, pows, inv, pows, g)


def trig_directions(
    n: int, freqs: list[int] | Tensor, dtype: torch.dtype = torch.float64
) -> Float[Tensor, "dirs n_sq"]:
    """Unit vectors cos_k(a+b), sin_k(a+b) over the n^2 group-ordered pairs, for each k (REFERENCE §2).

    Rows come in pairs (cos k, sin k) per frequency in the order given; they are orthonormal.
    For the Nyquist frequency of even n only cos_k(a+b) exists (sin vanishes).
    """
    F = fourier_basis(n, dtype)
    rows = []
    for k in check_frequencies(n, [int(k) for k in freqs]):
        if n % 2 == 0 and k == n // 2:
            c = F[n - 1]
            rows.append(torch.outer(c, c).reshape(-1))
            continue
        c, s = F[2 * k - 1], F[2 * k]
        rows.append(((torch.outer(c, c) - torch.outer(s, s)) / math.sqrt(2)).reshape(-1))
        rows.append(((torch.outer(s, c) + torch.outer(c, s)) / math.sqrt(2)).reshape(-1))
    return torch.stack(rows) if rows else torch.zeros(0, n * n, dtype=dtype)
