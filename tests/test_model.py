import subprocess
import sys

import torch
from conftest import REPO

from interp.config import ModelConfig, TrainConfig
from interp.legacy import to_bridge
from interp.model import Transformer, all_logits, last_position_logits
from interp.model.fast import _ROWS, EqTables, _MixedTableRows, _SoftmaxOfThree, eq_logits, eq_pattern, stack_params
from interp.tasks import all_pairs

STANDARD_HOOKS = {
    "hook_embed",
    "hook_pos_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_mid",
    "blocks.0.mlp.hook_pre",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
}


def random_biases(models):
    """Give the models non-zero biases (N(0, 0.1^2)), so the fast path's bias handling is exercised."""
    with torch.no_grad():
        for m in models:
            for n, prm in m.named_parameters():
                if ".b_" in n:
                    prm.normal_(0, 0.1)
    return models


def canonical_model(seed=0, biases=False):
    cfg = TrainConfig(train_biases=biases)
    m = Transformer(cfg.model_config()).init_weights(cfg.resolved_init_std, seed)
    return random_biases([m])[0] if biases else m


def test_fast_path_equals_hooked_model_on_all_pairs():
    for biases in (False, True):
        m = canonical_model(1, biases)
        toks = all_pairs(113)
        with torch.no_grad():
            full = m(toks)[:, -1]
            fast = last_position_logits(m, toks[:, 0], toks[:, 1])
        assert full.shape == fast.shape == (113 * 113, 113)
        assert (full - fast).abs().max().item() < 1e-5


def test_fast_path_equals_hooked_model_when_trained_scale(fixture_path):
    from interp.legacy import load_legacy

    m = load_legacy(fixture_path).model  # trained weights: large logits, non-zero MLP biases
    toks = all_pairs(113)
    with torch.no_grad():
        full = m(toks)[:, -1]
    fast = all_logits(m)
    # float32 with a different summation order: compare relative to the logit scale
    assert (full - fast).abs().max().item() <= 1e-5 * full.abs().max().item()


def test_fast_path_gradients_equal_hooked_model_gradients():
    # The fast path has a hand-written backward: its parameter gradients must be the hooked
    # model's. float64 and a subset of pairs with repeated tokens, trainable biases, GELU too.
    for act in ("relu", "gelu"):
        cfg = ModelConfig(p=11, d_model=16, n_heads=2, d_head=8, d_mlp=24, act_fn=act, train_biases=True)
        m = Transformer(cfg).init_weights(0.5, 3).double()
        with torch.no_grad():
            for n, p in m.named_parameters():
                if ".b_" in n:
                    p.normal_(0, 0.2)
        toks = all_pairs(11)[torch.randperm(121, generator=torch.Generator().manual_seed(0))[:70]]
        y = (toks[:, 0] + toks[:, 1]) % 11
        grads = []
        for fwd in (lambda: m(toks)[:, -1], lambda: last_position_logits(m, toks[:, 0], toks[:, 1])):
            m.zero_grad()
            torch.nn.functional.cross_entropy(fwd(), y).backward()
            grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
        for n in grads[0]:
            assert torch.allclose(grads[0][n], grads[1][n], rtol=1e-9, atol=1e-12), n


def test_mixed_table_rows_gradcheck():
    """The hand-written backward, with a run axis: gradcheck, and the forward against its literal definition."""
    R, p, H, E, B = 2, 5, 2, 3, 17
    T = 2 * p + 1
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, p, (R, B), generator=g), torch.randint(1, p, (R, B), generator=g)  # b >= 1: unused rows
    V = torch.randn(R, H, T, E, dtype=torch.double, generator=g, requires_grad=True)
    N1 = torch.randn(R, H, E, 4, dtype=torch.double, generator=g, requires_grad=True)
    N2 = torch.randn(R, H, E, 3, dtype=torch.double, generator=g, requires_grad=True)
    w = torch.rand(R, B, H, 3, dtype=torch.double, generator=g, requires_grad=True)
    cfg = ModelConfig(p=p, d_model=4, n_heads=H, d_head=E, d_mlp=4)
    tables = EqTables(torch.zeros(R, T, H, dtype=torch.double), V, torch.zeros(R, 4, dtype=torch.double))
    _, rows = eq_pattern(tables, cfg, a, b)
    assert torch.autograd.gradcheck(lambda V, N1, N2, w: _MixedTableRows.apply(V, N1, N2, w, rows), (V, N1, N2, w))
    # with the per-run constants folded into the tables (exact when each head's weights sum to 1)
    w1 = torch.softmax(torch.randn(R, B, H, 3, dtype=torch.double, generator=g), -1).requires_grad_(True)
    C1 = torch.randn(R, 4, dtype=torch.double, generator=g, requires_grad=True)
    C2 = torch.randn(R, 3, dtype=torch.double, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda V, N1, N2, w, C1, C2: _MixedTableRows.apply(V, N1, N2, w, rows, C1, C2), (V, N1, N2, w1, C1, C2)
    )
    for weights, const in ((w, None), (w1, C1)):
        out1, _ = _MixedTableRows.apply(V, N1, N2, weights, rows, const, None)
        out1 = out1.view(R, B, -1)  # the Function's outputs are flat [R * B, n]
        for r in range(R):
            Tr = torch.bmm(V[r], N1[r])
            literal = sum(
                weights[r, :, h, 0, None] * Tr[h, a[r]]
                + weights[r, :, h, 1, None] * Tr[h, p + b[r]]
                + weights[r, :, h, 2, None] * Tr[h, 2 * p]
                for h in range(H)
            )
            if const is not None:
                literal = literal + const[r]
            assert (out1[r] - literal).abs().max() < 1e-12


def test_softmax_of_three_and_cached_rows():
    """The attention pattern's softmax equals torch's (values and gradients); cached table rows
    follow their index tensors' identity and in-place changes."""
    x = torch.randn(4, 9, 2, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_SoftmaxOfThree.apply, (x,))
    assert torch.allclose(_SoftmaxOfThree.apply(x * 50), torch.softmax(x * 50, -1), atol=1e-15)  # large scores
    a, b = torch.randint(0, 7, (2, 5)), torch.randint(0, 7, (2, 5))
    rows = _ROWS.rows(a, b, 7, 2)
    assert _ROWS.rows(a, b, 7, 2) is rows  # the trainer's fixed pairs: computed once
    assert _ROWS.rows(a.clone(), b, 7, 2) is not rows
    perm, offsets, batch = _ROWS.grouping(rows, 2 * 2 * 15, 6)
    assert torch.equal(rows.reshape(-1)[perm], rows.reshape(-1).sort(stable=True).values)
    assert torch.equal(batch, perm // 6)
    a[0, 0] = (a[0, 0] + 1) % 7  # changed in place: the cached rows no longer describe it
    fresh = _ROWS.rows(a, b, 7, 2)
    assert fresh is not rows and int(fresh[0, 0, 0]) == int(a[0, 0])


def test_run_axis_slices_equal_single_models_and_hooked_reference():
    """R = 3 stacked random models: each slice's logits equal its own model's fast path (exactly)
    and the hooked forward (< 1e-5) on all p^2 inputs; parameter gradients equal the single model's."""
    p = 13
    cfg = ModelConfig(p=p, d_model=16, n_heads=2, d_head=8, d_mlp=24, train_biases=True)
    models = random_biases([Transformer(cfg).init_weights(0.3, seed) for seed in range(3)])
    toks = all_pairs(p)
    a, b = toks[:, 0], toks[:, 1]
    P = {n: t.detach().clone().requires_grad_(True) for n, t in stack_params(models).items()}
    stacked = eq_logits(P, cfg, a.expand(3, -1), b.expand(3, -1))
    y = (a + b) % p
    torch.nn.functional.cross_entropy(stacked.reshape(-1, p), y.repeat(3), reduction="sum").backward()
    for r, m in enumerate(models):
        single = last_position_logits(m, a, b)
        assert torch.equal(stacked[r], single)
        assert (stacked[r] - m(toks)[:, -1]).abs().max() < 1e-5
        m.zero_grad()
        torch.nn.functional.cross_entropy(single, y, reduction="sum").backward()
        for n, prm in m.named_parameters():
            # atol: b_K has zero true gradient (softmax ignores a shift), so its entries are rounding noise ~1e-6
            assert torch.allclose(P[n].grad[r], prm.grad, rtol=1e-5, atol=1e-5), n


def test_members_round_exactly_as_they_do_alone():
    """The trainer's guarantee that an ensemble member trains bit for bit as its single run rests on
    this: each member's logits, loss and parameter gradients do not depend on how many members share
    the stack or where the member sits in it. Odd p, one head, d_head 8 (the tests' tiny runs): shapes
    whose small products BLAS rounds by batch size and memory offset on some CPUs (``row_product``,
    the padded value-table gradient). p = 7 and 11: the logits' table product has 7 or 11 columns,
    which MKL rounded by offset on an AMD EPYC with AVX-512 until they were padded (``_bmm_wide``).

    In a fresh process set up as the trainer's (subnormals flushed before torch's thread pool
    starts). Where only the calling thread flushed (a session that ran parallel work first), the
    worker's half of a product kept its subnormals and members differed (p = 31, 3 of 3 runs); that
    case is ``test_numerics.py::test_subnormals_are_flushed_on_every_thread_of_a_pool_that_already_runs``."""
    _in_a_trainer_process("_check_members_round_alike")


def _in_a_trainer_process(check: str) -> None:
    """Run ``test_model.<check>()`` in a fresh process set up as the trainer's (subnormals flushed
    before torch's thread pool starts, freed memory retained); it must exit cleanly."""
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from interp.numerics import flush_subnormals, retain_freed_memory\n"
        "flush_subnormals(); retain_freed_memory()\n"
        f"import test_model; test_model.{check}()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def _check_members_round_alike():
    from interp.analysis.losses import run_loss_and_accuracy

    shapes = (
        (13, 1, 16, 24),
        (13, 2, 8, 32),
        (31, 2, 16, 64),
        (17, 3, 8, 40),
        (59, 4, 32, 96),
        (7, 2, 8, 32),
        (11, 1, 16, 24),
    )
    for p, H, E, d_mlp in shapes:
        cfg = ModelConfig(p=p, d_model=H * E, n_heads=H, d_head=E, d_mlp=d_mlp, train_biases=True)
        models = random_biases([Transformer(cfg).init_weights(0.5, seed) for seed in range(5)])
        gen = torch.Generator().manual_seed(p)
        a, b = torch.randint(0, p, (5, 40), generator=gen), torch.randint(0, p, (5, 40), generator=gen)

        def run(members):
            P = {n: t.detach().clone().requires_grad_(True) for n, t in stack_params(members).items()}
            idx = [models.index(m) for m in members]
            logits = eq_logits(P, cfg, a[idx], b[idx])
            loss, _ = run_loss_and_accuracy(logits, (a[idx] + b[idx]) % p)
            loss.sum().backward()
            return logits.detach(), loss.detach(), {n: t.grad for n, t in P.items()}

        for group in (models, models[1:4]):
            logits, loss, grads = run(group)
            for r, m in enumerate(group):
                one_logits, one_loss, one_grads = run([m])
                assert torch.equal(logits[r], one_logits[0]) and torch.equal(loss[r], one_loss[0]), (p, r)
                assert all(torch.equal(grads[n][r], one_grads[n][0]) for n in grads), (p, r)


def test_padded_logits_axis_changes_no_bit():
    """The fast path carries the logits' axis in whole blocks of 16 columns (``fast.VOCAB_BLOCK``)
    for speed; at the trainer's sizes (p >= 16, hundreds of rows) the logits, losses and every
    parameter gradient must come out bit for bit as without padding, so runs trained before the
    padding are reproduced exactly. Two members with different training-set sizes (padded batch).
    In a fresh process set up as the trainer's (see ``test_members_round_exactly_as_they_do_alone``)."""
    _in_a_trainer_process("_check_padding_changes_no_bit")


def _check_padding_changes_no_bit():
    from interp.analysis.losses import run_loss_and_accuracy
    from interp.model import fast
    from interp.tasks import labels, make_split
    from interp.training.loop import build_model

    for shape in (
        dict(p=31, d_model=32, n_heads=2, d_head=16, d_mlp=64),
        dict(p=59, d_model=64, n_heads=4, d_head=16, d_mlp=256),
    ):
        cfgs = [TrainConfig(seed=s, data_seed=s, frac_train=f, **shape) for s, f in ((0, 0.5), (1, 0.4))]
        cfg = cfgs[0].model_config()
        splits = [make_split(c.p, c.frac_train, c.data_seed).train for c in cfgs]
        lengths = [len(s) for s in splits]
        idx = torch.stack([torch.cat([s, s[: lengths[0] - len(s)]]) for s in splits])  # padded to the longest
        a, b, y = idx // cfg.p, idx % cfg.p, labels(cfg.task, cfg.p)[idx]
        params = stack_params([build_model(c) for c in cfgs])

        def run(block):
            fast.VOCAB_BLOCK = block
            P = {n: t.detach().clone().requires_grad_(True) for n, t in params.items()}
            logits = fast.eq_logits(P, cfg, a, b, lengths)
            loss, _ = run_loss_and_accuracy(logits, y, lengths)
            loss.sum().backward()
            return logits.detach(), loss.detach(), {n: t.grad for n, t in P.items()}

        try:
            (l1, s1, g1), (l16, s16, g16) = run(1), run(16)
        finally:
            fast.VOCAB_BLOCK = 16
        assert l16.shape == l1.shape and torch.equal(l16, l1) and torch.equal(s16, s1), shape
        assert all(torch.equal(g16[n], g1[n]) for n in g1), [n for n in g1 if not torch.equal(g16[n], g1[n])]


def test_hooks_and_weight_layout():
    cfg = ModelConfig(p=7, d_model=12, n_heads=3, d_head=4, d_mlp=20)
    m = Transformer(cfg).init_weights(0.3, 0)
    _, cache = m.run_with_cache(all_pairs(7))
    assert STANDARD_HOOKS <= set(cache.keys())
    assert cache["blocks.0.attn.hook_pattern"].shape == (49, 3, 3, 3)
    assert cache["blocks.0.mlp.hook_post"].shape == (49, 3, 20)
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(49, 3, 3))
    assert cache["blocks.0.attn.hook_pattern"][:, :, 0, 1:].abs().max() == 0  # causal
    shapes = {
        "W_E": (8, 12),
        "W_pos": (3, 12),
        "W_Q": (3, 12, 4),
        "W_O": (3, 4, 12),
        "W_in": (12, 20),
        "W_out": (20, 12),
        "W_U": (12, 7),
        "W_L": (20, 7),
    }
    for k, s in shapes.items():
        assert tuple(getattr(m, k).shape) == s, k


def test_biases_frozen_by_default_and_trainable_by_flag():
    frozen = Transformer(ModelConfig(p=5, d_model=8, n_heads=2, d_head=4, d_mlp=8))
    train = Transformer(ModelConfig(p=5, d_model=8, n_heads=2, d_head=4, d_mlp=8, train_biases=True))
    assert not any(p.requires_grad for n, p in frozen.named_parameters() if ".b_" in n)
    assert all(p.requires_grad for n, p in train.named_parameters() if ".b_" in n)


def test_hooked_model_equals_bridge_export():
    m = canonical_model(2, biases=True)
    bridge = to_bridge(m)
    toks = all_pairs(113)[::7]
    with torch.no_grad():
        ours, theirs = m(toks), bridge(toks)
    assert theirs.shape == ours.shape
    assert (ours - theirs).abs().max().item() < 1e-5
