"""The one-layer transformer of REFERENCE §1, hookable the TransformerLens way.

Every intermediate sits behind a ``HookPoint`` with the standard TransformerLens name
(``hook_embed``, ``blocks.0.attn.hook_pattern``, ``blocks.0.mlp.hook_post``, ...), weights use
TransformerLens layout and names (``W_E [d_vocab, d_model]``, ``W_Q [n_heads, d_model, d_head]``,
``W_U [d_model, d_vocab_out]``), and ``run_with_cache`` returns an ``ActivationCache``.

``last_position_logits`` is the training fast path: it computes only what the final ``=``
position needs, exploiting that position 2 always holds ``=`` and positions 0 and 1 depend on a
single token each, so every projection up to the MLP input is done on [2p + 1]-row tables and
gathered per input; the only matrix product over the batch in the forward pass is the MLP's
path to the logits. Tests check its logits against the hooked forward on all p^2 inputs and its
gradients against the hooked model's.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from .config import ModelConfig


def _act(name: str):
    return F.relu if name == "relu" else F.gelu


class Embed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return self.W_E[tokens]


class PosEmbed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_model"]:
        return self.W_pos[: tokens.shape[1]].unsqueeze(0).expand(tokens.shape[0], -1, -1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        H, D, E = cfg.n_heads, cfg.d_model, cfg.d_head
        self.cfg = cfg
        self.W_Q = nn.Parameter(torch.empty(H, D, E))
        self.W_K = nn.Parameter(torch.empty(H, D, E))
        self.W_V = nn.Parameter(torch.empty(H, D, E))
        self.W_O = nn.Parameter(torch.empty(H, E, D))
        self.b_Q = nn.Parameter(torch.zeros(H, E), requires_grad=cfg.train_biases)
        self.b_K = nn.Parameter(torch.zeros(H, E), requires_grad=cfg.train_biases)
        self.b_V = nn.Parameter(torch.zeros(H, E), requires_grad=cfg.train_biases)
        self.b_O = nn.Parameter(torch.zeros(D), requires_grad=cfg.train_biases)
        self.register_buffer("mask", torch.tril(torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool)), persistent=False)
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        q = self.hook_q(torch.einsum("bpd,hde->bphe", x, self.W_Q) + self.b_Q)
        k = self.hook_k(torch.einsum("bpd,hde->bphe", x, self.W_K) + self.b_K)
        v = self.hook_v(torch.einsum("bpd,hde->bphe", x, self.W_V) + self.b_V)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(self.cfg.d_head)
        n = x.shape[1]
        scores = scores.masked_fill(~self.mask[:n, :n], float("-inf"))
        scores = self.hook_attn_scores(scores)
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        return torch.einsum("bqhe,hed->bqd", z, self.W_O) + self.b_O


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp), requires_grad=cfg.train_biases)
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model), requires_grad=cfg.train_biases)
        self.act = _act(cfg.act_fn)
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        pre = self.hook_pre(x @ self.W_in + self.b_in)
        post = self.hook_post(self.act(pre))
        return post @ self.W_out + self.b_out


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        x = self.hook_resid_pre(x)
        x = self.hook_resid_mid(x + self.hook_attn_out(self.attn(x)))
        return self.hook_resid_post(x + self.hook_mlp_out(self.mlp(x)))


class Unembed(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out), requires_grad=cfg.train_biases)

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_vocab_out"]:
        return x @ self.W_U + self.b_U


class Transformer(HookedRootModule):
    """One-layer, no-LayerNorm transformer on ``[a, b, =]`` (REFERENCE §1).

    ``forward(tokens)`` returns logits at every position ``[batch, pos, p]``; the answer is read
    at position 2. Parameter names match TransformerLens (``embed.W_E``, ``blocks.0.attn.W_Q``, ...).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = Embed(cfg)
        self.pos_embed = PosEmbed(cfg)
        self.blocks = nn.ModuleList([Block(cfg)])
        self.unembed = Unembed(cfg)
        self.hook_embed = HookPoint()
        self.hook_pos_embed = HookPoint()
        self.setup()

    # Weight shortcuts in TransformerLens style.
    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.embed.W_E

    @property
    def W_pos(self) -> Float[Tensor, "n_ctx d_model"]:
        return self.pos_embed.W_pos

    @property
    def W_Q(self) -> Float[Tensor, "n_heads d_model d_head"]:
        return self.blocks[0].attn.W_Q

    @property
    def W_K(self) -> Float[Tensor, "n_heads d_model d_head"]:
        return self.blocks[0].attn.W_K

    @property
    def W_V(self) -> Float[Tensor, "n_heads d_model d_head"]:
        return self.blocks[0].attn.W_V

    @property
    def W_O(self) -> Float[Tensor, "n_heads d_head d_model"]:
        return self.blocks[0].attn.W_O

    @property
    def W_in(self) -> Float[Tensor, "d_model d_mlp"]:
        return self.blocks[0].mlp.W_in

    @property
    def W_out(self) -> Float[Tensor, "d_mlp d_model"]:
        return self.blocks[0].mlp.W_out

    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab_out"]:
        return self.unembed.W_U

    @property
    def W_L(self) -> Float[Tensor, "d_mlp d_vocab_out"]:
        """Neuron-logit map W_out @ W_U (REFERENCE §2)."""
        return self.W_out @ self.W_U

    def init_weights(self, std: float, seed: Optional[int] = None) -> "Transformer":
        """Every weight matrix ~ N(0, std^2), biases zero (see TrainConfig for the choice of std)."""
        g = torch.Generator(device="cpu")
        if seed is not None:
            g.manual_seed(seed)
        with torch.no_grad():
            for name, prm in self.named_parameters():
                if name.rsplit(".", 1)[-1].startswith("W_"):
                    prm.copy_(torch.randn(prm.shape, generator=g, dtype=torch.float32) * std)
                else:
                    prm.zero_()
        return self

    def run_with_cache(self, *args, **kwargs):
        """Like ``HookedRootModule.run_with_cache`` but the cache is a TransformerLens ``ActivationCache``."""
        out, cache = super().run_with_cache(*args, **kwargs)
        if isinstance(cache, dict):
            cache = ActivationCache(cache, self)
        return out, cache

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab_out"]:
        x = self.hook_embed(self.embed(tokens)) + self.hook_pos_embed(self.pos_embed(tokens))
        x = self.blocks[0](x)
        return self.unembed(x)


class _MixedTableRows(torch.autograd.Function):
    """``out_k[i] = sum_{h,s} w[i,h,s] * (V[h, rows[i,h,s]] @ N_k[h])`` for k = 1, 2, hand-differentiated.

    V: [H, R, E] per-head tables, N_1: [H, E, n1] and N_2: [H, E, n2] per-head maps, w: [B, H, S]
    mixing weights, rows: [B, H*S] flat row indices into the [H*R] tables (head offsets included).
    Forward: one small [H, R, n] table product per map, then a weighted gather-and-sum over the
    batch (``embedding_bag``). Backward avoids both of autograd's slow paths for ``embedding_bag``:
    the table gradient is a second ``embedding_bag`` over the batch grouped by table row (grouped
    in the backward only, so forward-only evaluation skips it), and the weight gradient is taken in the small E space,
    ``dL/dw[i,h,s] = (sum_k g_k[i] N_k[h]^T) . V[h, rows[i,h,s]]``, so the only batch-sized matrix
    products are ``g_k @ N_k^T`` (B x n_k x H E). Two outputs rather than one concatenated one:
    slicing a joint output would make autograd zero-fill and copy a [B, n1 + n2] gradient.
    """

    @staticmethod
    def forward(ctx, V, N1, N2, w, rows):
        H, R, _ = V.shape
        B = w.shape[0]
        flat_w = w.reshape(B, -1)
        outs = [F.embedding_bag(rows, torch.bmm(V, N).reshape(H * R, -1), per_sample_weights=flat_w, mode="sum")
                for N in (N1, N2)]
        ctx.save_for_backward(V, N1, N2, w, rows)
        return outs[0], outs[1]

    @staticmethod
    def backward(ctx, g1, g2):
        V, N1, N2, w, rows = ctx.saved_tensors
        H, R, E = V.shape
        B, _, S = w.shape
        g1, g2 = g1.contiguous(), g2.contiguous()
        gV = gN1 = gN2 = gw = None
        if ctx.needs_input_grad[3]:
            gz = torch.addmm(g1 @ N1.reshape(H * E, -1).t(), g2, N2.reshape(H * E, -1).t()).view(B, H, 1, E)
            Vg = V.reshape(H * R, E).index_select(0, rows.reshape(-1)).view(B, H, S, E)
            gw = (Vg * gz).sum(-1)
        if any(ctx.needs_input_grad[:3]):
            # Group the B*H*S entries by table row (stable: each row sums its inputs in batch order).
            flat_rows = rows.reshape(-1)
            perm = torch.argsort(flat_rows, stable=True)
            counts = torch.bincount(flat_rows, minlength=H * R)
            bag_offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])
            batch_index = perm // (H * S)
            w_by_table = w.reshape(-1).index_select(0, perm)
            g_tables = [F.embedding_bag(batch_index, g, offsets=bag_offsets, per_sample_weights=w_by_table,
                                        mode="sum").view(H, R, -1) for g in (g1, g2)]
            if ctx.needs_input_grad[0]:
                gV = torch.baddbmm(torch.bmm(g_tables[0], N1.transpose(1, 2)), g_tables[1], N2.transpose(1, 2))
            Vt = V.transpose(1, 2)
            gN1 = torch.bmm(Vt, g_tables[0]) if ctx.needs_input_grad[1] else None
            gN2 = torch.bmm(Vt, g_tables[1]) if ctx.needs_input_grad[2] else None
        return gV, gN1, gN2, gw, None


def _source_rows(a: Int[Tensor, "batch"], b: Int[Tensor, "batch"], p: int, n_heads: int) -> Int[Tensor, "batch heads_x3"]:
    """Row indices of each input's three attention sources in the per-head [2p + 1] tables, head
    offsets included (rows 0..p-1: token at position 0, p..2p-1: token at position 1, 2p: '=')."""
    B, R = a.shape[0], 2 * p + 1
    off = torch.arange(n_heads, device=a.device) * R
    return torch.stack([off + a[:, None], off + p + b[:, None], (off + 2 * p).expand(B, n_heads)], -1).reshape(B, -1)


def last_position_logits(
    model: Transformer, a: Int[Tensor, "batch"], b: Int[Tensor, "batch"]
) -> Float[Tensor, "batch d_vocab_out"]:
    """Logits at the ``=`` position for inputs ``[a, b, =]``, computing only what that position needs.

    Mathematically identical to ``model(tokens)[:, -1]`` (tests compare the two on all p^2
    inputs), regrouped so that almost no matrix product runs over the batch:

    - the query is the same for every input (position 2 always holds ``=``) and keys/values at
      positions 0 and 1 depend on one token each, so attention scores come from [2p + 1]-row tables;
    - the attention output enters the rest of the network only through ``W_O W_in`` (MLP input)
      and ``W_O W_U`` (direct path to the logits), so each head's value table is pushed through
      ``W_O W_in`` and ``W_O W_U`` once per call, and per input the pattern-weighted sum of three rows per
      head is gathered (``_MixedTableRows``) instead of multiplying [batch, d_model] matrices;
    - the MLP reaches the logits through ``W_L = W_out W_U`` (REFERENCE §2), one product;
    - constant terms (the '=' embedding, ``b_O``, ``b_in``, ``b_out``, ``b_U``) are folded into
      one bias row each for the MLP input and the logits.
    """
    cfg = model.cfg
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    p, H, E, D, M = cfg.p, cfg.n_heads, cfg.d_head, cfg.d_model, cfg.d_mlp
    W_E, W_pos, W_U = model.W_E, model.W_pos, model.W_U
    x2 = W_E[p] + W_pos[2]  # [D]: '=' at position 2
    sources = torch.cat([(W_E[:p].unsqueeze(0) + W_pos[:2].unsqueeze(1)).reshape(2 * p, D), x2[None]])  # [2p+1, D]
    q = torch.einsum("d,hde->he", x2, attn.W_Q) + attn.b_Q  # [H, E]
    k = torch.einsum("rd,hde->hre", sources, attn.W_K) + attn.b_K[:, None]  # [H, 2p+1, E]
    v = torch.einsum("rd,hde->hre", sources, attn.W_V) + attn.b_V[:, None]  # [H, 2p+1, E]
    s = torch.einsum("hre,he->rh", k, q) * (1.0 / math.sqrt(E))  # [2p+1, H]
    B = a.shape[0]
    scores = torch.stack([s[:p].index_select(0, a), s[p:2 * p].index_select(0, b), s[2 * p].expand(B, H)], -1)
    pattern = scores.softmax(dim=-1)  # [B, H, 3]
    to_mlp = torch.einsum("hed,dm->hem", attn.W_O, mlp.W_in)  # [H, E, M]
    to_logits = torch.einsum("hed,dv->hev", attn.W_O, W_U)  # [H, E, V]
    mixed_in, mixed_logits = _MixedTableRows.apply(v, to_mlp, to_logits, pattern, _source_rows(a, b, p, H))
    resid_const = attn.b_O + x2
    post = mlp.act(mixed_in + (resid_const @ mlp.W_in + mlp.b_in))
    logit_const = (resid_const + mlp.b_out) @ W_U + model.unembed.b_U
    return torch.addmm(mixed_logits + logit_const, post, model.W_L)


@torch.no_grad()
def all_logits(model: Transformer, chunk: int = 4096) -> Float[Tensor, "pairs d_vocab_out"]:
    """Last-position logits for all p^2 inputs in row-major pair order (pair i = a*p + b)."""
    p = model.cfg.p
    dev = model.W_E.device
    a = torch.arange(p, device=dev).repeat_interleave(p)
    b = torch.arange(p, device=dev).repeat(p)
    return torch.cat([last_position_logits(model, a[i:i + chunk], b[i:i + chunk]) for i in range(0, p * p, chunk)])
