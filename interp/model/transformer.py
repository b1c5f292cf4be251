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

from interp.config import ModelConfig


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
