"""The one fast path at the '=' position, for R >= 1 models at once.

Training, evaluation and every analysis compute the model's output at the last position through
this module; ``Transformer.forward`` (``interp.model.transformer``) is the readable reference it is
tested against (logits on all p^2 inputs, parameter gradients).

Parameters come stacked along a leading run axis, ``{TransformerLens name: [R, ...]}``
(``run_params`` gives the R = 1 view of one model; ``stack_params`` stacks several), so one call
serves a single model and an ensemble alike. Inputs ``a``, ``b`` are ``[R, batch]``: each member
may see its own pairs.

How it is fast: position 2 always holds '=', so the query is the same for every input, and the
keys and values at positions 0 and 1 depend on one token each. Attention scores and values
therefore come from per-token tables of 2p + 1 source rows (rows 0..p-1: token a at position 0,
p..2p-1: token b at position 1, 2p: '='). The attention output reaches the rest of the network
only through ``W_O W_in`` (MLP input) and ``W_O W_U`` (direct path to the logits), so each head's
value table is pushed through both once per call, and each input gathers the pattern-weighted
sum of its three rows per head (``_MixedTableRows``). The MLP reaches the logits through
``W_L = W_out W_U`` (REFERENCE §2). The only products over the batch are ``post @ W_L`` and,
in the backward, ``g @ (W_O W_in)^T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from interp.config import ModelConfig
from interp.numerics import warm_up_vector_math

Params = dict[str, Tensor]  # TransformerLens parameter name -> [R, ...]


# the logits' axis is carried this many columns at a time through the batch-sized products (``_eq_forward``)
VOCAB_BLOCK = 16


def _whole_blocks(n: int) -> int:
    """``n`` rounded up to a multiple of ``VOCAB_BLOCK``."""
    return n + (-n % VOCAB_BLOCK)


def _widen(x: Tensor, n: int) -> Tensor:
    """``x`` with zero columns appended to ``n`` on its last axis (``x`` itself when already that wide)."""
    return F.pad(x, (0, n - x.shape[-1])) if n > x.shape[-1] else x


def run_params(model) -> Params:
    """The parameters of one model as an R = 1 stack (views: gradients reach the model)."""
    return {name: prm.unsqueeze(0) for name, prm in model.named_parameters()}


def stack_params(models: Sequence) -> Params:
    """Stack the parameters of models of one shape along a new leading run axis (a copy)."""
    named = [dict(m.named_parameters()) for m in models]
    return {name: torch.stack([n[name] for n in named]) for name in named[0]}


def activation(name: str):
    """The MLP non-linearity named in ``ModelConfig.act_fn``."""
    return F.relu if name == "relu" else F.gelu


def row_product(x: Float[Tensor, "*run k"], W: Float[Tensor, "*run k n"]) -> Float[Tensor, "*run n"]:
    """``x @ W`` for one row per run (and head), as an elementwise product and a sum over k.

    Every member of an ensemble must round exactly as it does alone. Large batched products do
    (BLAS packs each matrix before multiplying), but a batched product with a single row or column
    does not on every CPU: on an AMD EPYC with AVX-512 (MKL 2024.2) its result depends on the
    number of matrices in the batch and on where each member's output starts in memory, so an
    ensemble member's logits differed from its single run in the last bit. A product and a sum
    round the same wherever a member sits (``tests/test_model.py::test_members_round_exactly_as_they_do_alone``).
    """
    return (x.unsqueeze(-1) * W).sum(-2)


def _bmm_wide(x: Float[Tensor, "batch m k"], W: Float[Tensor, "batch k n"]) -> Float[Tensor, "batch m n"]:
    """``bmm(x, W)`` with W's columns padded to 16 when it has fewer (small p: the logits' tables).

    With 5-11 columns and a few dozen rows, MKL rounded the product by where each matrix starts
    in memory (AMD EPYC, AVX-512; ``row_product``), so an ensemble member's p = 7 or 11 tables
    differed from its single run's in the last bit. Whole 16-column blocks round alike everywhere.
    """
    n = W.shape[-1]
    if n >= 16:
        return torch.bmm(x, W)
    return torch.bmm(x, F.pad(W, (0, 16 - n)))[..., :n]


class _MixedTableRows(torch.autograd.Function):
    """``out_k[r, i] = sum_{h,s} w[r,i,h,s] * (V[r, h, t(r,i,h,s)] @ N_k[r, h]) + C_k[r]`` for k = 1, 2, hand-differentiated.

    V: [R, H, T, E] per-run, per-head tables; N_1: [R, H, E, n1] and N_2: [R, H, E, n2] per-head
    maps; w: [R, B, H, S] mixing weights; rows: [R, B, H*S] flat indices into the R*H*T table rows
    (run and head offsets included), S = 3 with each head's last row ('=') third. Forward: one small [T, n] table product per run and head,
    then a weighted gather-and-sum over the batch (``embedding_bag``). The backward avoids both of
    autograd's slow paths for ``embedding_bag``: the table gradient is a second ``embedding_bag``
    grouped by table row (grouped in the backward only, so forward-only evaluation skips it), and
    the weight gradient is taken in the small d_head space,
    ``dL/dw[r,i,h,s] = (sum_k g_k[r,i] N_k[r,h]^T) . V[r, h, t]``, so the only batch-sized products
    are ``g_k @ N_k^T`` (B x n_k x H E per run). Two outputs rather than one concatenated one:
    slicing a joint output would make autograd zero-fill and copy a [B, n1 + n2] gradient. Outputs
    are flat, [R * B, n_k], not views of that: the logits' part is then accumulated into in place.

    The optional per-run constants C_k: [R, n_k] (the input-independent parts of the MLP input and
    of the logits) are folded into the tables as C_k / H on every row: each head's weights over
    its three rows sum to 1 (a softmax), so this adds C_k to every output without a pass over the
    [R, B, n_k] outputs, forward or backward. The grouping of rows that the backward needs is
    cached with the rows (``_TableRowsCache``): the trainer's train pairs are the same every epoch.

    ``wide2`` (optional, >= n2): the second output's width, its columns past n2 zero (the logits'
    axis in whole blocks, ``_eq_forward``); its gradient g2 then has that width too, and everything
    whose value for a column depends on the width (the column sums of gC2) runs at n2.
    """

    @staticmethod
    def forward(ctx, V, N1, N2, w, rows, C1=None, C2=None, wide2=None):
        R, H, T, E = V.shape
        B = w.shape[1]
        flat_rows, flat_w = rows.reshape(R * B, -1), w.reshape(R * B, -1)
        Vb = V.reshape(R * H, T, E)
        outs = []
        for N, C in ((N1, C1), (N2, C2)):
            table = _bmm_wide(Vb, N.reshape(R * H, E, -1))
            if C is not None:
                # each head's three weights sum to 1, so C / H on every row of every head adds C
                table = table.view(R, H, T, -1).add_(C[:, None, None] / H).view(R * H, T, -1)
            if N is N2 and wide2 is not None:
                table = _widen(table, wide2)  # zero columns: see ``_eq_forward``
            # [R * B, n]: a view to [R, B, n] here would forbid the in-place use of the logits' part
            outs.append(F.embedding_bag(flat_rows, table.reshape(R * H * T, -1), per_sample_weights=flat_w, mode="sum"))
        ctx.save_for_backward(V, N1, N2, w, rows, C1, C2)
        ctx.constants = (C1 is not None, C2 is not None)
        ctx.wide2 = outs[1].shape[-1]
        return outs[0], outs[1]

    @staticmethod
    def backward(ctx, g1, g2):
        V, N1, N2, w, rows, C1, C2 = ctx.saved_tensors
        R, H, T, E = V.shape
        _, B, _, S = w.shape
        g1, g2 = g1.contiguous().view(R, B, -1), g2.contiguous().view(R, B, -1)
        gV = gN1 = gN2 = gw = gC1 = gC2 = None
        n2, wide2 = N2.shape[-1], ctx.wide2  # g2 and the second tables carry wide2 - n2 zero columns
        if ctx.needs_input_grad[3]:
            # dL/dw[r,i,h,s] = sum_k g_k[r,i] . (table_k[r, h, t] + C_k[r] / H). One product gives, per input,
            # the gradient in each head's d_head space (for the a and b rows, gathered next), the '=' row's
            # full term (the same row for every input, s = 2) and the constants' share of every row.
            eq = V[:, :, T - 1]  # [R, H, E]: the '=' source row of each head
            cols, n_cols = [], H * E + H + 1
            for N, C in ((N1, C1), (N2, C2)):
                n = N.shape[-1]
                eq_row = row_product(eq, N)  # [R, H, n]: table_k's '=' rows without the constant
                const = C[:, None] / H if C is not None else N.new_zeros(R, 1, n)
                col = torch.cat([N.reshape(R, H * E, n), eq_row + const, const], 1)
                # zero rows and columns to whole blocks of 16: as for the logits (``_eq_forward``), a
                # product's real entries come out the same and MKL runs whole blocks faster
                col = F.pad(col, (0, (wide2 if N is N2 else n) - n, 0, _whole_blocks(n_cols) - n_cols))
                cols.append(col.transpose(1, 2))
            gzx = torch.baddbmm(torch.bmm(g1, cols[0]), g2, cols[1])  # [R, B, H E + H + 1 (+ zeros)]
            gz = gzx[..., : H * E].view(R, B, H, E)
            flat_V, by_source = V.reshape(R * H * T, E), rows.view(R, B, H, S)
            gw = torch.empty_like(w)
            for s in range(2):  # a, b: one product each (a broadcast over both is 2-3x slower)
                Vs = flat_V.index_select(0, by_source[..., s].reshape(-1)).view(R, B, H, E)
                torch.sum(Vs.mul_(gz), -1, out=gw[..., s])
            gw[..., :2] += gzx[..., n_cols - 1 : n_cols, None]
            gw[..., 2] = gzx[..., H * E : H * E + H]
        if any(ctx.needs_input_grad[:3]) or any(ctx.needs_input_grad[5:]):
            perm, bag_offsets, batch_index = _ROWS.grouping(rows, R * H * T, H * S)
            w_by_table = w.reshape(-1).index_select(0, perm)
            g_tables = [
                F.embedding_bag(
                    batch_index, g.reshape(R * B, -1), offsets=bag_offsets, per_sample_weights=w_by_table, mode="sum"
                ).view(R * H, T, -1)
                for g in (g1, g2)
            ]
            N1b, N2b = N1.reshape(R * H, E, -1), _widen(N2.reshape(R * H, E, -1), wide2)
            if ctx.needs_input_grad[0]:
                # d_head columns padded to a multiple of 16: with 8, MKL rounded this product by each
                # member's offset in memory (AMD EPYC, AVX-512); whole 16-float rows round alike everywhere
                pad = -E % 16
                N1p, N2p = (F.pad(N, (0, 0, 0, pad)) if pad else N for N in (N1b, N2b))
                gV = torch.baddbmm(torch.bmm(g_tables[0], N1p.transpose(1, 2)), g_tables[1], N2p.transpose(1, 2))
                gV = gV[..., :E].reshape(R, H, T, E)
            Vt = V.reshape(R * H, T, E).transpose(1, 2)
            gN1 = torch.bmm(Vt, g_tables[0]).view(N1.shape) if ctx.needs_input_grad[1] else None
            gN2 = torch.bmm(Vt, g_tables[1])[..., :n2].reshape(N2.shape) if ctx.needs_input_grad[2] else None
            if ctx.constants[0] and ctx.needs_input_grad[5]:
                gC1 = g_tables[0].view(R, H * T, -1).sum(1) / H
            if ctx.constants[1] and ctx.needs_input_grad[6]:
                gC2 = g_tables[1].view(R, H * T, -1)[..., :n2].contiguous().sum(1) / H
        return gV, gN1, gN2, gw, None, gC1, gC2, None


class _SoftmaxOfThree(torch.autograd.Function):
    """``softmax(-1)`` over a last axis of three (a, b, '='), as a few elementwise passes.

    PyTorch's softmax kernels loop over rows, and with three entries per row that loop is the
    cost: on an ensemble's [R, B, H, 3] scores they take 4x the time of these passes (forward)
    and 3x forward and backward together. The values agree to float32 rounding.
    """

    @staticmethod
    def forward(ctx, x):
        e = (x - x.amax(-1, keepdim=True)).exp_()
        p = e.div_(e.sum(-1, keepdim=True))
        ctx.save_for_backward(p)
        return p

    @staticmethod
    def backward(ctx, g):
        (p,) = ctx.saved_tensors
        return (g - (g * p).sum(-1, keepdim=True)).mul_(p)  # p (g - <g, p>): no cancellation of two products


class _PrefixBatchedLinear(torch.autograd.Function):
    """``C + x @ W`` per run (``baddbmm``, accumulated into ``C`` in place: C is a fresh
    intermediate, and this saves a copy of the [R, B, n] output), whose weight gradient sums over
    each run's own rows only.

    Members of an ensemble may have training sets of different sizes, padded to the longest with
    rows whose gradient is zero. The weight gradient ``x^T g`` contracts over the batch, and a
    matrix product over a longer, zero-padded batch rounds differently, so each group of runs with
    one length ``n`` takes its gradient from its first ``n`` rows: a padded run then trains exactly
    as it would alone. ``lengths``: rows per run (None: all rows count).

    ``C`` may be wider than ``W`` (the logits' axis in whole blocks, ``_eq_forward``): ``W`` is then
    padded with zero columns, and its gradient is returned at its own width.
    """

    @staticmethod
    def forward(ctx, C, x, W, lengths):
        n = W.shape[-1]
        C3 = C.view(x.shape[0], x.shape[1], -1)
        W = _widen(W, C3.shape[-1])  # C may be wider than W: zero columns (``_eq_forward``)
        ctx.save_for_backward(x, W)
        ctx.lengths, ctx.n = lengths, n
        ctx.mark_dirty(C)
        C3.baddbmm_(x, W)
        return C

    @staticmethod
    def backward(ctx, g_flat):
        x, W = ctx.saved_tensors
        g = g_flat.reshape(x.shape[0], x.shape[1], -1)
        gx = torch.bmm(g, W.transpose(1, 2)) if ctx.needs_input_grad[1] else None
        gW = None
        if ctx.needs_input_grad[2]:
            lengths = ctx.lengths or [x.shape[1]] * x.shape[0]
            groups: dict[int, list[int]] = {}
            for r, n in enumerate(lengths):
                groups.setdefault(n, []).append(r)
            if len(groups) == 1 and lengths[0] == x.shape[1]:
                gW = torch.bmm(x.transpose(1, 2), g)
            else:
                gW = torch.empty_like(W)
                for n, runs in groups.items():  # one product per distinct length, not per run
                    idx = torch.tensor(runs, device=x.device)
                    gW[idx] = torch.bmm(x[idx, :n].transpose(1, 2), g[idx, :n])
            if gW.shape[-1] > ctx.n:
                gW = gW[..., : ctx.n].contiguous()
        return g_flat, gx, gW, None


class _TableRowsCache:
    """Rows into the [R * H * T] tables for recent ``(a, b)`` index tensors, and their grouping by row.

    The trainer calls the fast path every epoch with the same train and test index tensors; their
    table rows, and the stable sort that groups the rows for ``_MixedTableRows.backward``, are
    computed once. Entries are keyed on the index tensors' identity and hold them (so an id is
    never reused while cached), and a tensor changed in place (its version counter) is a miss.
    64 entries: a CPU ensemble of 32 canonical members goes through the fast path one member at
    a time, train and test (~75 MB at that size).
    """

    def __init__(self, size: int = 64):
        self.size = size
        self.entries: list[dict] = []

    def rows(self, a: Tensor, b: Tensor, p: int, H: int) -> Int[Tensor, "run batch heads_x3"]:
        key = (p, H)
        for e in self.entries:
            if e["a"] is a and e["b"] is b and e["key"] == key and e["version"] == (a._version, b._version):
                return e["rows"]
        rows = _table_rows(a, b, p, H)
        entry = dict(a=a, b=b, key=key, version=(a._version, b._version), rows=rows, grouping=None)
        self.entries = [entry] + self.entries[: self.size - 1]  # the newest first; the oldest drops out
        return rows

    def grouping(self, rows: Tensor, n_rows: int, per_input: int) -> tuple[Tensor, Tensor, Tensor]:
        """(perm, bag offsets, batch index): the entries of ``rows`` sorted by table row (stable, so each
        row sums its inputs in batch order), where each table row's bag starts, each entry's input."""
        entry = next((e for e in self.entries if e["rows"] is rows), None)
        if entry is not None and entry["grouping"] is not None:
            return entry["grouping"]
        flat_rows = rows.reshape(-1)
        perm = torch.argsort(flat_rows, stable=True)
        counts = torch.bincount(flat_rows, minlength=n_rows)
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])
        grouping = (perm, offsets, perm // per_input)
        if entry is not None:
            entry["grouping"] = grouping
        return grouping


_ROWS = _TableRowsCache()


def _table_rows(a: Tensor, b: Tensor, p: int, H: int) -> Int[Tensor, "run batch heads_x3"]:
    """Flat rows into the [R * H * T] tables of each input's three sources per head (run, head offsets included)."""
    R, B = a.shape
    T = 2 * p + 1
    head = (torch.arange(H, device=a.device) * T)[None, None, :]
    base = (torch.arange(R, device=a.device) * (H * T))[:, None, None] + head  # [R, 1, H]
    rows = torch.stack([base + a[..., None], base + p + b[..., None], (base + 2 * p).expand(R, B, H)], -1)
    return rows.reshape(R, B, H * 3)


@dataclass
class EqTables:
    """Per-token tables of the '=' position, one set per run (see the module docstring).

    ``scores``: attention score from '=' to each of the 2p + 1 source rows, already scaled by
    1/sqrt(d_head); ``values``: each source row's value vector (d_head space); ``resid_const``:
    the input-independent part of the residual stream at '=' before the MLP (its embedding plus
    ``b_O``).
    """

    scores: Float[Tensor, "run source head"]
    values: Float[Tensor, "run head source d_head"]
    resid_const: Float[Tensor, "run d_model"]


def eq_tables(P: Params, cfg: ModelConfig) -> EqTables:
    """Attention scores and values of the 2p + 1 source rows seen from '=' (REFERENCE §1 model)."""
    p, D = cfg.p, cfg.d_model
    W_E, W_pos = P["embed.W_E"], P["pos_embed.W_pos"]
    R = W_E.shape[0]
    x2 = W_E[:, p] + W_pos[:, 2]  # '=' at position 2
    sources = torch.cat([(W_E[:, None, :p] + W_pos[:, :2, None]).reshape(R, 2 * p, D), x2[:, None]], 1)
    attn = "blocks.0.attn."
    q = row_product(x2[:, None], P[attn + "W_Q"]) + P[attn + "b_Q"]
    k = torch.einsum("rtd,rhde->rhte", sources, P[attn + "W_K"]) + P[attn + "b_K"][:, :, None]
    v = torch.einsum("rtd,rhde->rhte", sources, P[attn + "W_V"]) + P[attn + "b_V"][:, :, None]
    # a product and a sum over d_head, not a matrix-vector product (see ``row_product``)
    scores = (k * q[:, :, None]).sum(-1).transpose(1, 2) * (1.0 / math.sqrt(cfg.d_head))
    return EqTables(scores, v, P[attn + "b_O"] + x2)


def _offsets(R: int, n: int, device) -> Int[Tensor, "run 1"]:
    return (torch.arange(R, device=device) * n)[:, None]


def eq_pattern(
    t: EqTables, cfg: ModelConfig, a: Int[Tensor, "run batch"], b: Int[Tensor, "run batch"]
) -> tuple[Float[Tensor, "run batch head 3"], Int[Tensor, "run batch heads_x3"]]:
    """Attention pattern of '=' over positions (a, b, =) per input, and the table rows it mixes."""
    p, H = cfg.p, cfg.n_heads
    R, B = a.shape
    T = 2 * p + 1
    s = t.scores
    flat = s.reshape(R * T, H)
    off = _offsets(R, T, a.device)
    scores = torch.stack(
        [
            flat.index_select(0, (a + off).reshape(-1)).view(R, B, H),
            flat.index_select(0, (b + off + p).reshape(-1)).view(R, B, H),
            s[:, 2 * p, None, :].expand(R, B, H),
        ],
        -1,
    )
    return _SoftmaxOfThree.apply(scores), _ROWS.rows(a, b, p, H)


def eq_logits(
    P: Params,
    cfg: ModelConfig,
    a: Int[Tensor, "run batch"],
    b: Int[Tensor, "run batch"],
    lengths: Optional[Sequence[int]] = None,
) -> Float[Tensor, "run batch d_vocab_out"]:
    """Logits at '=' for inputs ``[a, b, =]`` of each run: ``model(tokens)[:, -1]`` per run, differentiable.

    ``lengths``: when runs' batches are padded, how many leading rows of each are real (the rest
    must get zero gradient, e.g. by a loss mask); gradients then equal those of the unpadded batches.
    The result is a view of the first p columns of a wider buffer (``VOCAB_BLOCK``), not contiguous.
    """
    return _eq_forward(P, cfg, a, b, lengths=lengths)[1]


def _eq_forward(P: Params, cfg: ModelConfig, a, b, resid: bool = False, lengths=None):
    warm_up_vector_math()  # once per process, before the first parallel exp (interp.numerics)
    mlp, W_U = "blocks.0.mlp.", P["unembed.W_U"]
    W_O, W_in = P["blocks.0.attn.W_O"], P[mlp + "W_in"]
    t = eq_tables(P, cfg)
    pattern, rows = eq_pattern(t, cfg, a, b)
    to_mlp = torch.einsum("rhed,rdm->rhem", W_O, W_in)
    to_logits = torch.einsum("rhed,rdv->rhev", W_O, W_U)
    c = t.resid_const[:, None]  # [R, 1, D]
    const_in = P[mlp + "b_in"] + row_product(t.resid_const, W_in)
    logit_const = P["unembed.b_U"] + row_product(t.resid_const + P[mlp + "b_out"], W_U)
    # the logits' axis is carried padded with zero columns to a multiple of 16 through the
    # batch-sized products and sliced for the loss. MKL multiplied [1392, 256] x [256, 64] in half the
    # time of x [256, 59] here (AVX-512: 16 floats a register; the whole ensemble step: 4-7% faster),
    # and for p >= 16 the real columns come out bit-identical (tests/test_model.py), so runs trained
    # before the padding are reproduced exactly. Whatever rounds by the width it is vectorised over
    # (column sums) runs at width p. Below p = 16 the products are now 16 wide and round differently.
    n_out = W_U.shape[-1]
    mixed_in, mixed_logits = _MixedTableRows.apply(
        t.values, to_mlp, to_logits, pattern, rows, const_in, logit_const, _whole_blocks(n_out)
    )
    R, B = a.shape
    # ReLU in place on the mixed MLP input, which nothing reads again (its backward keeps the output):
    # one [R B, d_mlp] tensor fewer per pass (small R = 16: 1.5-7% per epoch). On the Function's
    # output itself, not a view of it, or autograd would copy the whole gradient back through the view.
    act = F.relu_ if cfg.act_fn == "relu" else activation(cfg.act_fn)
    post = act(mixed_in).view(R, B, -1)
    W_L = torch.bmm(P[mlp + "W_out"], W_U)
    logits = _PrefixBatchedLinear.apply(mixed_logits, post, W_L, lengths).view(R, B, -1)[..., :n_out]
    if not resid:
        return post, logits, None
    # the residual stream after the MLP: constant + mixed values through W_O + MLP output
    with torch.no_grad():
        table = torch.einsum("rhte,rhed->rhtd", t.values, W_O).reshape(-1, cfg.d_model)
        mixed = F.embedding_bag(
            rows.reshape(R * B, -1), table, per_sample_weights=pattern.reshape(R * B, -1), mode="sum"
        ).view(R, B, -1)
        res = torch.baddbmm(c + mixed + P[mlp + "b_out"][:, None], post, P[mlp + "W_out"])
    return post, logits, res


@dataclass
class EqActivations:
    """Activations at '=' for a batch of inputs per run (float32, no gradient).

    ``post``: ``blocks.0.mlp.hook_post``; ``logits``: the output; ``resid``:
    ``blocks.0.hook_resid_post`` when asked for, else None.
    """

    post: Float[Tensor, "run batch d_mlp"]
    logits: Float[Tensor, "run batch d_vocab_out"]
    resid: Optional[Float[Tensor, "run batch d_model"]]


@torch.no_grad()
def eq_activations(
    P: Params, cfg: ModelConfig, a: Int[Tensor, "run batch"], b: Int[Tensor, "run batch"], resid: bool = False
) -> EqActivations:
    """MLP activations, logits and optionally the final residual stream at '=' (evaluation)."""
    post, logits, res = _eq_forward(P, cfg, a, b, resid)
    return EqActivations(post, logits.contiguous(), res)


def all_operands(p: int, device="cpu") -> tuple[Int[Tensor, "pairs"], Int[Tensor, "pairs"]]:
    """(a, b) of all p^2 inputs in row-major pair order (pair i = a * p + b); ``interp.tasks.all_pairs`` gives the token sequences."""
    a = torch.arange(p, device=device).repeat_interleave(p)
    return a, torch.arange(p, device=device).repeat(p)


def last_position_logits(model, a: Int[Tensor, "batch"], b: Int[Tensor, "batch"]) -> Float[Tensor, "batch d_vocab_out"]:
    """Logits at '=' for inputs ``[a, b, =]`` of one model (``model(tokens)[:, -1]``), differentiable."""
    return eq_logits(run_params(model), model.cfg, a[None], b[None])[0].contiguous()


@torch.no_grad()
def all_logits(model, chunk: int = 4096) -> Float[Tensor, "pairs d_vocab_out"]:
    """Last-position logits of one model on all p^2 inputs in row-major pair order (pair i = a*p + b)."""
    P = run_params(model)
    a, b = all_operands(model.cfg.p, model.W_E.device)
    return torch.cat(
        [
            eq_logits(P, model.cfg, a[None, i : i + chunk], b[None, i : i + chunk])[0]
            for i in range(0, a.shape[0], chunk)
        ]
    )
