"""Models and activations whose Fourier structure is known exactly, for testing the measures.

``fourier_transformer(p, freqs)`` builds real ``Transformer`` weights (task add) whose logits are
exactly sum_k alpha_k cos(w_k (a + b - c)), w_k = 2 pi k / p, computed by frequency-k neurons:

* embeddings hold cos(w a), sin(w a) for each chosen k; positions get one marker dimension each;
* head 0 attends from '=' to position 0 only, head 1 to position 1 only (a score gap of ~40, so
  the other weights are ~1e-18), copying the embedding of a and of b into separate dimensions;
* for each k there are p^2 neurons ReLU(cos w(a + j1) + cos w(b + j2)), one per shift (j1, j2).
  One such neuron h has frequency k with FVE ~0.96 (REFERENCE §2); summed over all shifts with
  weights e^{-i w (j1 + j2)} the harmonics of the ReLU cancel exactly (a full character sum over
  Z_p^2) and only the e^{i w (a + b)} term survives, scaled by h's Fourier coefficient at (k, k).
  W_out and W_U turn that into cos(w(a + b - c)).

So the key frequencies are exactly ``freqs``, the restricted loss equals the full loss and the
excluded loss (all key frequencies removed) is exactly chance, log p.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from interp.config import ModelConfig
from interp.errors import InterpError
from interp.model import Transformer


def fourier_logits(n: int, freqs: Sequence[int], amplitude: float | Sequence[float] = 10.0) -> Float[Tensor, "n n n"]:
    """L[a, b, c] = sum_k alpha_k cos(2 pi k (a + b - c) / n), float64."""
    amps = [float(amplitude)] * len(freqs) if isinstance(amplitude, (int, float)) else [float(x) for x in amplitude]
    x = torch.arange(n, dtype=torch.float64)
    m = x[:, None, None] + x[None, :, None] - x[None, None, :]
    return sum(a * torch.cos(2 * math.pi * k * m / n) for k, a in zip(freqs, amps))


def fourier_neurons(n: int, freqs: Sequence[int], per_freq: int = 4, seed: int = 0) -> Float[Tensor, "n n d_mlp"]:
    """Activations 1 + cos(w_k (a + b) + phi) (random phases), ``per_freq`` neurons per frequency.

    Each lies entirely in the block {0, cos k, sin k}^2 of its frequency: FVE exactly 1.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(n, dtype=torch.float64)
    cols = []
    for k in freqs:
        for _ in range(per_freq):
            phi = float(torch.rand((), generator=g, dtype=torch.float64)) * 2 * math.pi
            cols.append(1 + torch.cos(2 * math.pi * k * (x[:, None] + x[None, :]) / n + phi))
    return torch.stack(cols, dim=-1)


def fourier_transformer(
    p: int, freqs: Sequence[int], amplitude: float = 10.0, d_model: int = 32, d_head: int = 8
) -> Transformer:
    """A ``Transformer`` (task add mod p) whose logits are sum_k amplitude * cos(w_k(a + b - c)).

    d_mlp = len(freqs) * p^2. Needs d_model >= 3 + 8 * len(freqs) and d_head >= 2 * len(freqs).
    """
    K = len(freqs)
    if d_model < 3 + 8 * K or d_head < 2 * K:
        raise InterpError(f"fourier_transformer needs d_model >= {3 + 8 * K} and d_head >= {2 * K}")
    cfg = ModelConfig(p=p, d_model=d_model, n_heads=2, d_head=d_head, d_mlp=K * p * p, train_biases=True)
    model = Transformer(cfg)
    n = p
    th = 2 * math.pi / n
    x = torch.arange(n, dtype=torch.float64)
    P = [0, 1, 2]  # position markers
    E = list(range(3, 3 + 2 * K))  # embedding features (cos k a, sin k a) per k
    A = list(range(3 + 2 * K, 3 + 4 * K))  # copy of a's features at '='
    B = list(range(3 + 4 * K, 3 + 6 * K))  # copy of b's features
    Lf = list(range(3 + 6 * K, 3 + 8 * K))  # (cos, sin) logit directions per k
    sd = {
        k: torch.zeros_like(v, dtype=torch.float64) for k, v in model.state_dict().items() if v.dtype.is_floating_point
    }

    for r, k in enumerate(freqs):
        sd["embed.W_E"][:p, E[2 * r]] = torch.cos(th * k * x)
        sd["embed.W_E"][:p, E[2 * r + 1]] = torch.sin(th * k * x)
    for pos in range(3):
        sd["pos_embed.W_pos"][pos, P[pos]] = 1.0
    beta = math.sqrt(40.0 * math.sqrt(d_head))  # score gap 40 after the 1/sqrt(d_head) scale
    for h, (src, dst) in enumerate([(P[0], A), (P[1], B)]):
        sd["blocks.0.attn.W_Q"][h, P[2], 0] = beta
        sd["blocks.0.attn.W_K"][h, src, 0] = beta
        for i, e in enumerate(E):
            sd["blocks.0.attn.W_V"][h, e, i] = 1.0
            sd["blocks.0.attn.W_O"][h, i, dst[i]] = 1.0

    j = torch.arange(n, dtype=torch.float64)
    j1, j2 = j.repeat_interleave(n), j.repeat(n)  # shifts, one neuron each
    W_in, W_out, W_U = sd["blocks.0.mlp.W_in"], sd["blocks.0.mlp.W_out"], sd["unembed.W_U"]
    for r, k in enumerate(freqs):
        cols = slice(r * n * n, (r + 1) * n * n)
        # pre = cos(w(a + j1)) + cos(w(b + j2)), linear in the copied features
        W_in[A[2 * r], cols] = torch.cos(th * k * j1)
        W_in[A[2 * r + 1], cols] = -torch.sin(th * k * j1)
        W_in[B[2 * r], cols] = torch.cos(th * k * j2)
        W_in[B[2 * r + 1], cols] = -torch.sin(th * k * j2)
        # Fourier coefficient of h(a, b) = ReLU(cos wa + cos wb) at (k, k)
        h = torch.relu(torch.cos(th * k * x)[:, None] + torch.cos(th * k * x)[None, :])
        phase = torch.exp(-1j * th * k * (x[:, None] + x[None, :]))
        h_kk = (h * phase).sum() / (n * n)
        z = torch.exp(-1j * th * k * (j1 + j2)) / (n * n * h_kk)
        W_out[cols, Lf[2 * r]] = amplitude * z.real
        W_out[cols, Lf[2 * r + 1]] = amplitude * z.imag
        W_U[Lf[2 * r]] = torch.cos(th * k * x)
        W_U[Lf[2 * r + 1]] = torch.sin(th * k * x)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            prm.copy_(sd[name].to(prm.dtype))
    return model.eval()


def gram_linear_cka(X: Float[Tensor, "N d1"], Y: Float[Tensor, "N d2"], debiased: bool = False) -> float:
    """Reference implementation with explicit N x N Gram matrices (O(N^2) memory: tests, small N).

    Standard: HSIC = tr(K H L H) with H the centring matrix. Debiased: the unbiased estimator of
    Song et al. 2012 on the uncentred Gram matrices.
    """
    X, Y = X.double(), Y.double()
    N = X.shape[0]
    K, L = X @ X.T, Y @ Y.T
    if not debiased:
        H = torch.eye(N, dtype=torch.float64) - 1.0 / N
        Kc, Lc = H @ K @ H, H @ L @ H

        def h(A, B):
            return (A * B).sum()

        return float(h(Kc, Lc) / (h(Kc, Kc) * h(Lc, Lc)).sqrt())

    def hu(A, B):
        A = A - torch.diag(torch.diag(A))
        B = B - torch.diag(torch.diag(B))
        one = torch.ones(N, dtype=torch.float64)
        return (
            (A * B).sum()
            + (one @ A @ one) * (one @ B @ one) / ((N - 1) * (N - 2))
            - 2.0 / (N - 2) * (one @ A) @ (B @ one)
        ) / (N * (N - 3))

    return float(hu(K, L) / (hu(K, K) * hu(L, L)).sqrt())
