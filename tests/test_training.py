"""The trainer for R >= 1 runs: optimiser against torch.optim, ensembles against single runs, resume."""

import dataclasses
import math

import pandas as pd
import pytest
import torch
from conftest import p31_config

from interp.errors import InterpError
from interp.store import Run, load_tensors
from interp.training import loop
from interp.training.loop import BATCH_BLOCK, batch_rows, train, train_ensemble
from interp.training.optim import (
    EnsembleOptimizer,
    MemberFilter,
    MemberOptim,
    StackedAdamW,
    project_norm,
    squared_norms,
)


def _weights(run: Run, epoch: int) -> dict[str, torch.Tensor]:
    return load_tensors(run.checkpoint_path(epoch))[0]


@pytest.mark.parametrize("kind", ["adamw", "adam", "sgd"])
def test_ensemble_optimizer_matches_torch_optim_step_for_step(kind, monkeypatch):
    """Members with their own lr, betas and weight decay each follow torch.optim exactly, whether
    members sharing settings stand side by side (one slice per tensor) or apart (one view per member)."""
    g = torch.Generator().manual_seed(0)
    shapes = {"w": (5, 7), "v": (3,), "u": (37, 19)}
    a, b, c = (1e-3, 0.9, 0.98, 1.0), (3e-3, 0.8, 0.99, 0.1), (1e-2, 0.9, 0.999, 0.0)
    d, e = (1e-3, 0.9, 0.98, 0.3), (1e-3, 0.9, 0.98, 0.0)  # a's lr and betas, another weight decay
    settings = [a, a, b, c, b, d, e]
    R = len(settings)
    init = {n: torch.randn(R, *s, generator=g) for n, s in shapes.items()}
    P = {n: t.clone().requires_grad_(True) for n, t in init.items()}
    ours = EnsembleOptimizer(P, [MemberOptim(kind, b1, b2, wd) for _, b1, b2, wd in settings])
    refs = []
    for r, (lr, b1, b2, wd) in enumerate(settings):
        params = [init[n][r].clone().requires_grad_(True) for n in shapes]
        if kind == "sgd":
            opt = torch.optim.SGD(params, lr=lr, weight_decay=wd)
        else:
            cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
            opt = cls(params, lr=lr, betas=(b1, b2), weight_decay=wd, fused=True)
        refs.append((params, opt))
    calls = []
    update = EnsembleOptimizer._update
    monkeypatch.setattr(EnsembleOptimizer, "_update", staticmethod(lambda *a: calls.append(a[0]) or update(*a)))
    for _ in range(15):
        grads = {n: torch.randn(R, *s, generator=g) for n, s in shapes.items()}
        for n in shapes:
            P[n].grad = grads[n].clone()
        ours.step([lr for lr, *_ in settings])
        for r, (params, opt) in enumerate(refs):
            for prm, n in zip(params, shapes):
                prm.grad = grads[n][r].clone()
            opt.step()
    for r, (params, _) in enumerate(refs):
        for prm, n in zip(params, shapes):
            assert torch.equal(P[n][r], prm), (kind, r, n)
    # AdamW's decoupled decay is applied apart, so a, d and e (weight decay aside the same) step as one
    assert len(calls) == 15 * (3 if kind == "adamw" else 5)


def test_stacked_adamw_is_torch_adamw_per_run():
    """Two runs with different learning rates and weight decays, stacked, step for step equal to
    torch.optim.AdamW on each run alone (two parameter groups, as E and the decoder)."""

    def f64(v):
        return torch.tensor(v, dtype=torch.float64)

    torch.manual_seed(0)
    x0, y0 = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 7, dtype=torch.float64)
    lrs, wds = [(1e-2, 3e-3), (5e-3, 1e-1)], [(0.0, 1.0), (0.5, 10.0)]
    x, y = x0.clone().requires_grad_(True), y0.clone().requires_grad_(True)
    opt = StackedAdamW(
        {"x": x, "y": y},
        {"x": f64([lr[0] for lr in lrs]), "y": f64([lr[1] for lr in lrs])},
        {"x": f64([w[0] for w in wds]), "y": f64([w[1] for w in wds])},
        f64([0.9, 0.8]),
        f64([0.999, 0.98]),
    )
    refs = []
    for r in range(2):
        xr, yr = x0[r].clone().requires_grad_(True), y0[r].clone().requires_grad_(True)
        o = torch.optim.AdamW(
            [
                {"params": [xr], "lr": lrs[r][0], "weight_decay": wds[r][0]},
                {"params": [yr], "lr": lrs[r][1], "weight_decay": wds[r][1]},
            ],
            betas=[(0.9, 0.999), (0.8, 0.98)][r],
        )
        refs.append((xr, yr, o))
    for _ in range(20):
        (x.sin().sum() + (y**2).sum()).backward()
        opt.step()
        for xr, yr, o in refs:
            (xr.sin().sum() + (yr**2).sum()).backward()
            o.step()
            o.zero_grad()
    for r, (xr, yr, _) in enumerate(refs):
        torch.testing.assert_close(x[r].detach(), xr.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(y[r].detach(), yr.detach(), rtol=1e-12, atol=1e-12)


def test_optimizer_state_round_trips_per_member():
    P = {"w": torch.randn(2, 4, requires_grad=True)}
    opt = EnsembleOptimizer(P, [MemberOptim("adamw", 0.9, 0.98, 1.0)] * 2)
    P["w"].grad = torch.ones(2, 4)
    opt.step([1e-3, 1e-3])
    state = opt.member_state(1)
    assert set(state) == {"step.w", "exp_avg.w", "exp_avg_sq.w"} and state["step.w"].item() == 1
    other = EnsembleOptimizer({"w": torch.zeros(1, 4, requires_grad=True)}, [MemberOptim("adamw", 0.9, 0.98, 1.0)])
    other.load_member_state(0, state, "x")
    assert other.steps == [1] and torch.equal(other.exp_avg["w"][0], opt.exp_avg["w"][1])


def test_squared_norms_of_a_member_do_not_depend_on_its_ensemble():
    # W_in of the canonical size: a single run's one-value sum would be split across threads
    P = {"w": torch.randn(3, 128, 512), "b": torch.randn(3, 513)}
    full = squared_norms(P)
    for r in range(3):
        assert torch.equal(full[r], squared_norms({n: t[r : r + 1] for n, t in P.items()})[0])
    assert torch.allclose(full[:, 0], P["w"].double().pow(2).sum((1, 2)), rtol=1e-12)


def test_project_norm_rescales_active_members_only():
    P = {"a": torch.randn(3, 4, 5), "b": torch.randn(3, 6)}
    before = squared_norms(P).sum(1).sqrt()
    project_norm(P, torch.tensor([2.0, 0.0, 5.0], dtype=torch.float64), torch.tensor([True, False, True]))
    after = squared_norms(P).sum(1).sqrt()
    assert math.isclose(after[0].item(), 2.0, rel_tol=1e-6) and math.isclose(after[2].item(), 5.0, rel_tol=1e-6)
    assert after[1] == before[1]


def test_ensemble_members_equal_their_single_runs(tmp_path, monkeypatch):
    """Issue 11 acceptance: 4 members differing in lr, weight decay, seed and frac_train, 300 epochs."""
    cfgs = [
        p31_config(run_name=f"m{i}", **kw)
        for i, kw in enumerate(
            [{}, {"lr": 1e-3}, {"weight_decay": 0.3, "seed": 5}, {"frac_train": 0.7, "data_seed": 3}]
        )
    ]
    # a fifth member with m0's optimiser settings, listed last: the trainer stacks it next to m0 so that
    # the two are updated as one slice of each tensor (one tensor per parameter in a kernel call)
    cfgs.append(p31_config(run_name="m4", seed=9))
    calls = []
    update = EnsembleOptimizer._update
    monkeypatch.setattr(EnsembleOptimizer, "_update", staticmethod(lambda *a: calls.append(len(a[3])) or update(*a)))
    runs = train_ensemble(cfgs, [tmp_path / "ens" / c.run_name for c in cfgs])
    n_params = sum(t.requires_grad for t in loop.build_model(cfgs[0]).parameters())
    assert calls and set(calls) == {n_params}  # 4 groups a step, each one slice per parameter
    for cfg, run in zip(cfgs, runs):
        single = train(cfg, tmp_path / "single" / cfg.run_name, progress=False)
        a, b = run.metrics(), single.metrics()
        # bit-identical: the same kernels run, and padded members take gradients over their own rows
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert run.checkpoint_epochs() == single.checkpoint_epochs()
        a, b = _weights(run, 300), _weights(single, 300)
        assert all(torch.equal(a[k], b[k]) for k in a)
    t_mem = [r.metrics().query("train_acc >= 0.99")["epoch"].min() for r in runs]
    assert sum(not math.isnan(t) for t in t_mem) >= 2  # the test is about runs that do learn


def test_members_in_chunks_equal_one_stack(tmp_path, monkeypatch):
    """On CPU large members go through forward and backward a chunk at a time; chunks of 2 (with a
    padded member and one that stops early) give the same files as one stack of all members."""
    cfgs = [
        p31_config(run_name="a", epochs=60, checkpoint_every=20),
        p31_config(run_name="b", epochs=40, checkpoint_every=20, seed=3, weight_decay=0.3),
        p31_config(run_name="c", epochs=60, checkpoint_every=20, frac_train=0.7, data_seed=2),
        p31_config(run_name="d", epochs=60, checkpoint_every=20, lr=1e-3),
        p31_config(run_name="e", epochs=60, checkpoint_every=20, seed=7),
    ]
    one = train_ensemble(cfgs, [tmp_path / "one" / c.run_name for c in cfgs])
    assert loop.members_per_chunk(cfgs[0].model_config(), "cpu") >= len(cfgs)  # tiny: one stack
    per_member = 31**2 * (64 + 31) * 4
    monkeypatch.setattr(loop, "CHUNK_BYTES", 2 * per_member)
    assert loop.members_per_chunk(cfgs[0].model_config(), "cpu") == 2
    chunked = train_ensemble(cfgs, [tmp_path / "chunked" / c.run_name for c in cfgs])
    for f, r in zip(one, chunked):
        assert (f.path / "metrics.csv").read_bytes() == (r.path / "metrics.csv").read_bytes()
        for e in f.checkpoint_epochs():
            a, b = _weights(f, e), _weights(r, e)
            assert all(torch.equal(a[k], b[k]) for k in a), (f.name, e)


@pytest.mark.parametrize(
    ("members", "most", "sizes"), [(32, 10, [8, 8, 8, 8]), (16, 10, [8, 8]), (5, 2, [2, 2, 1]), (3, 8, [3])]
)
def test_members_are_split_into_chunks_of_equal_size(members, most, sizes):
    """At most ``most`` members a chunk, in as few chunks as that allows, of (nearly) equal size:
    a small last chunk would cost nearly as much per member as single runs."""
    idx = [torch.arange(4 + r % 3) for r in range(members)]  # some members padded
    pairs = loop._Pairs.stack(idx, [torch.arange(9)] * members, 3, "cpu", most)
    assert [hi - lo for lo, hi, _ in pairs.chunks] == sizes
    assert [c.a.shape[0] for *_, c in pairs.chunks] == sizes and pairs.chunks[-1][1] == members


def test_trainer_initialises_vector_math_before_its_first_forward(tmp_path, monkeypatch):
    """The first parallel exp of a process can round differently (a first-call race in MKL's vector
    math, ``interp.numerics.warm_up_vector_math``), so the trainer calls each function once before any
    forward pass."""
    events = []
    warm_up, eq_logits = loop.warm_up_vector_math, loop.eq_logits
    monkeypatch.setattr(loop, "warm_up_vector_math", lambda: (events.append("warm-up"), warm_up())[1])
    monkeypatch.setattr(loop, "eq_logits", lambda *a, **k: (events.append("forward"), eq_logits(*a, **k))[1])
    train_ensemble([p31_config(run_name="a", epochs=2)], [tmp_path / "a"])
    assert events[0] == "warm-up" and events.count("warm-up") == 1 and "forward" in events


def test_members_stop_when_finished_and_a_member_ahead_waits(tmp_path):
    """Members with other budgets finish on their own; after a crash that left one member ahead,
    the others catch up and every file equals an uninterrupted ensemble's."""
    cfgs = [
        p31_config(run_name="a", epochs=120, checkpoint_every=20),
        p31_config(run_name="b", epochs=80, checkpoint_every=20, seed=3),
        p31_config(run_name="c", epochs=120, checkpoint_every=20, frac_train=0.6),
    ]
    full = train_ensemble(cfgs, [tmp_path / "full" / c.run_name for c in cfgs])
    assert [int(r.metrics()["epoch"].iloc[-1]) for r in full] == [120, 80, 120]
    dirs = [tmp_path / "part" / c.run_name for c in cfgs]
    train_ensemble(cfgs, dirs, max_epochs_this_call=50)  # all stop at 50, resumable from 40
    train_ensemble([cfgs[0]], [dirs[0]], resume=True, max_epochs_this_call=30)  # "a" runs ahead to 70 (ckpt 60)
    resumed = train_ensemble(cfgs, dirs, resume=True)
    for f, r in zip(full, resumed):
        assert f.checkpoint_epochs() == r.checkpoint_epochs()
        for e in f.checkpoint_epochs():
            a, b = _weights(f, e), _weights(r, e)
            assert all(torch.equal(a[k], b[k]) for k in a), (f.name, e)
        assert (f.path / "metrics.csv").read_bytes() == (r.path / "metrics.csv").read_bytes()


def test_eval_every_leaves_test_metrics_empty_between_evaluations(tmp_path):
    run = train(p31_config(epochs=200, eval_every=10, checkpoint_every=50), tmp_path / "r", progress=False)
    df = run.metrics()
    evaluated = df.loc[df["test_acc"].notna(), "epoch"].tolist()
    assert set(evaluated) == set(range(0, 201, 10)) | {1, 2, 4}  # every 10th, plus the log-spaced checkpoints
    assert df["train_acc"].notna().all()
    t_grok = df.loc[df["test_acc"] >= 0.99, "epoch"].min()
    assert math.isnan(t_grok) or t_grok in evaluated


def test_ensemble_refuses_mixed_shapes(tmp_path):
    with pytest.raises(InterpError, match="d_mlp"):
        train_ensemble([p31_config(), p31_config(d_mlp=32)], [tmp_path / "a", tmp_path / "b"])


def test_init_scale_and_constant_norm(tmp_path):
    base = p31_config(epochs=20, checkpoint_every=10)
    plain = train(base, tmp_path / "plain", progress=False)
    scaled = train(dataclasses.replace(base, init_scale=0.5), tmp_path / "scaled", progress=False)
    assert math.isclose(scaled.metrics()["sq_total"][0], 0.25 * plain.metrics()["sq_total"][0], rel_tol=1e-6)
    const = train(
        dataclasses.replace(base, init_scale=0.8, weight_decay=0.0, constant_norm=True), tmp_path / "c", progress=False
    )
    sq = const.metrics()["sq_total"].to_numpy()
    assert abs(sq / sq[0] - 1).max() < 1e-5  # ||theta|| held at its initial value every epoch


def test_resume_removes_temp_files_a_killed_writer_left(tmp_path):
    """A SIGKILL during an atomic write leaves `.<name>.tmp<pid>`; the next trainer (holding the
    lock, so no writer is alive) removes it, and the run directory then equals an uninterrupted one."""
    cfg = p31_config(epochs=40, checkpoint_every=20)
    run = train(cfg, tmp_path / "r", progress=False, max_epochs_this_call=25)
    (run.path / "checkpoints" / ".epoch_000040.safetensors.tmp99999").write_bytes(b"torn")
    (run.path / ".metrics.csv.tmp99998").write_bytes(b"torn")
    train(None, run.path, resume=True, progress=False)
    names = {p.name for p in run.path.rglob("*")}
    assert not any(".tmp" in n for n in names)


def _grokfast_reference(kind, alpha, lamb, window, grads_seq):
    """Grokfast by its definition (REFERENCE §7), one member, one gradient list per step."""
    out, mu, history = [], None, []
    for g in grads_seq:
        if kind == "ema":
            mu = g.clone() if mu is None else alpha * mu + (1 - alpha) * g
            out.append(g + lamb * mu)
        elif kind == "ma":
            history = (history + [g])[-window:]
            out.append(g + lamb * torch.stack(history).mean(0) if len(history) == window else g)
        else:
            out.append(g)
    return out


def test_grokfast_filters_follow_their_definition_per_member():
    """Members with EMA, MA (two windows) and no filter in one ensemble: each gets AdamW on its own
    filtered gradient."""
    g = torch.Generator().manual_seed(1)
    members = [
        MemberFilter("ema", 0.9, 2.0, 4),
        MemberFilter("ma", 0.98, 5.0, 4),
        MemberFilter("ma", 0.98, 3.0, 3),  # its own, shorter window
        MemberFilter(None, 0.98, 0.0, 4),
    ]
    R, steps = len(members), 12
    init = torch.randn(R, 6, generator=g)
    P = {"w": init.clone().requires_grad_(True)}
    ours = EnsembleOptimizer(P, [MemberOptim("adamw", 0.9, 0.98, 0.5)] * R, members)
    grads = [torch.randn(R, 6, generator=g) for _ in range(steps)]
    for gr in grads:
        P["w"].grad = gr.clone()
        ours.step([1e-2] * R)
    for r, m in enumerate(members):
        filtered = _grokfast_reference(m.kind, m.alpha, m.lamb, m.window, [gr[r] for gr in grads])
        prm = init[r].clone().requires_grad_(True)
        opt = torch.optim.AdamW([prm], lr=1e-2, betas=(0.9, 0.98), weight_decay=0.5, fused=True)
        for f in filtered:
            prm.grad = f
            opt.step()
        assert torch.allclose(P["w"][r], prm, rtol=1e-5, atol=1e-6), m.kind


def test_grokfast_and_minibatch_runs_resume_bit_identically_and_equal_single_runs(tmp_path):
    """Filter state and batch draws live in the run directory's files: an interrupted ensemble resumes
    to the uninterrupted one, and each member equals its run trained alone."""
    for name, variants in {
        "grokfast": [dict(grokfast="ema"), dict(grokfast="ma", grokfast_window=8, seed=4)],
        "minibatch": [dict(batch_size=64, eval_every=5), dict(batch_size=64, eval_every=5, seed=4, lr=1e-3)],
    }.items():
        cfgs = [p31_config(run_name=f"m{i}", epochs=60, checkpoint_every=20, **kw) for i, kw in enumerate(variants)]
        full = train_ensemble(cfgs, [tmp_path / name / "full" / c.run_name for c in cfgs])
        dirs = [tmp_path / name / "part" / c.run_name for c in cfgs]
        train_ensemble(cfgs, dirs, max_epochs_this_call=30)  # resumable from 20
        resumed = train_ensemble(cfgs, dirs, resume=True)
        for cfg, f, r in zip(cfgs, full, resumed):
            single = train(cfg, tmp_path / name / "single" / cfg.run_name, progress=False)
            for other in (r, single):
                a, b = _weights(f, 60), _weights(other, 60)
                assert all(torch.equal(a[k], b[k]) for k in a), (name, cfg.run_name)
                pd.testing.assert_frame_equal(f.metrics(), other.metrics(), check_exact=True)


def test_minibatch_draws_with_replacement_and_measures_the_whole_train_set(tmp_path):
    cfg = p31_config(batch_size=100, epochs=300, eval_every=10, checkpoint_every=50)
    rows = batch_rows(cfg, 480, 0)
    assert rows.shape == (BATCH_BLOCK, 100) and 0 <= rows.min() and rows.max() < 480
    assert torch.equal(rows, batch_rows(cfg, 480, 0)) and not torch.equal(rows, batch_rows(cfg, 480, 1))
    assert any(len(set(r.tolist())) < 100 for r in rows)  # with replacement: repeats occur
    df = train(cfg, tmp_path / "r", progress=False).metrics()
    measured = df["train_acc"].notna()
    assert measured.equals(df["test_acc"].notna())  # train metrics on the full set exactly where test ones are
    assert df.loc[measured, "train_loss"].iloc[-1] < 0.8 * df.loc[measured, "train_loss"].iloc[0]  # it learns


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("batch_size", 0, "batch_size must lie in"),
        ("grokfast", "sma", "grokfast must be one of ema, ma"),
        ("grokfast_alpha", 1.0, "grokfast_alpha must lie in"),
        ("grokfast_window", 0, "grokfast_window must lie in"),
    ],
)
def test_minibatch_and_grokfast_options_are_validated(field, value, message):
    with pytest.raises(InterpError, match=message):
        p31_config(**{field: value})
