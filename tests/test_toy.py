"""The effective-theory toy model (REFERENCE §6): stacked training, RQI, effective loss, phases."""

import itertools

import numpy as np
import pytest
import torch

from interp.analysis.phases import first_epoch_reaching
from interp.analysis.rqi import rqi_linear
from interp.errors import InterpError
from interp.theory.phase_diagram import PHASES, PhaseRule, classify_phase
from interp.theory.toy import (
    METRICS,
    ToyConfig,
    ToyHistory,
    effective_loss,
    implied_accuracy,
    parallelograms,
    predicted_accuracy,
    train_mask,
    train_toy,
    train_toys,
    unordered_pairs,
)

SMALL = dict(hidden=32, steps=60, log_every=10)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_pairs_and_parallelograms_of_p10():
    i, j = unordered_pairs(10)
    assert i.numel() == 55 and bool((i <= j).all())
    a, b = parallelograms(10)
    assert a.numel() == 70 and bool(((i[a] + j[a]) == (i[b] + j[b])).all()) and bool((a < b).all())
    assert rqi_linear(torch.rand(10, 1)).n_ideal == 70  # the same parallelograms as the RQI's


def test_train_mask_is_seeded_and_sized():
    m = train_mask(10, 22, seed=3)
    assert int(m.sum()) == 22 and torch.equal(m, train_mask(10, 22, seed=3))
    assert not torch.equal(m, train_mask(10, 22, seed=4))


@pytest.mark.parametrize(
    "kw",
    [{"n_train": 0}, {"n_train": 56}, {"p": 1}, {"steps": 0}, {"lr_decoder": -1.0}, {"wd_decoder": float("nan")}],
)
def test_bad_config_is_a_user_error(kw):
    with pytest.raises(InterpError):
        ToyConfig(**kw)


def test_bad_stack_is_a_user_error():
    with pytest.raises(InterpError, match="share p"):
        train_toys([ToyConfig(p=10, **SMALL), ToyConfig(p=8, n_train=20, **SMALL)])
    with pytest.raises(InterpError, match="objective"):
        train_toys([ToyConfig(**SMALL)], objective="mse")
    with pytest.raises(InterpError, match="no runs"):
        train_toys([])
    with pytest.raises(InterpError, match="stop_at"):
        train_toys([ToyConfig(**SMALL)], stop_at={"loss": 0.1})
    with pytest.raises(InterpError):
        train_mask(10, 0, seed=0)


def _same_history(a: ToyHistory, b: ToyHistory, tol: float) -> None:
    assert np.array_equal(a.steps, b.steps)
    for m in METRICS:
        np.testing.assert_allclose(a.metrics[m], b.metrics[m], rtol=tol, atol=tol, err_msg=m)
    np.testing.assert_allclose(a.E_final, b.E_final, rtol=tol, atol=tol)
    assert (a.acc_implied, a.linear_unique, a.stopped_at) == (b.acc_implied, b.linear_unique, b.stopped_at)


def test_stack_of_runs_equals_the_runs_alone():
    """Per-run seeds, training sets, learning rates and weight decays: the stack is R separate runs."""
    cfgs = [
        ToyConfig(seed=0, n_train=45, **SMALL),
        ToyConfig(seed=1, n_train=20, lr_decoder=1e-3, wd_decoder=5.0, **SMALL),
        ToyConfig(seed=2, split_seed=7, n_train=33, lr_embed=3e-3, wd_embed=0.1, **SMALL),
    ]
    stacked = train_toys(cfgs, dtype=torch.float64)
    for c, h in zip(cfgs, stacked):
        _same_history(h, train_toy(c, dtype=torch.float64), 1e-9)
    # the runs really differ
    assert not np.allclose(stacked[0].E_final, stacked[1].E_final)
    # and in the default float32 the stack agrees to rounding
    for a, b in zip(train_toys(cfgs), stacked):
        np.testing.assert_allclose(a.E_final, b.E_final, atol=1e-4)


def test_stopped_runs_leave_the_stack_without_disturbing_the_others():
    cfgs = [ToyConfig(seed=s, **SMALL) for s in range(3)]
    full = train_toys(cfgs, dtype=torch.float64)
    # stop each run once its training accuracy has reached the level the first run has at step 30
    level = float(full[0].metrics["train_acc"][3])
    stopped = train_toys(cfgs, stop_at={"train_acc": level}, dtype=torch.float64)
    assert stopped[0].stopped_at <= 30
    for f, s in zip(full, stopped):
        n = len(s.steps)
        assert s.steps[-1] == s.stopped_at
        for m in METRICS:
            np.testing.assert_allclose(s.metrics[m], f.metrics[m][:n], rtol=1e-9, atol=1e-9)
        if s.stopped_at == f.stopped_at:
            np.testing.assert_allclose(s.E_final, f.E_final, atol=1e-9)


def test_linear_representation_has_rqi_one_and_zero_effective_loss():
    p = 10
    E = (0.3 * torch.arange(p, dtype=torch.float64) - 1.0)[:, None]
    assert rqi_linear(E).rqi == 1.0
    masks = torch.stack([train_mask(p, n, seed=n) for n in (10, 30, 55)])
    E3 = E.expand(3, p, 1)
    assert torch.allclose(effective_loss(E3, masks), torch.zeros(3, dtype=torch.float64), atol=1e-24)
    # a linear E predicts every test pair whose sum some training pair has
    i, j = unordered_pairs(p)
    m = masks[0]
    want = np.mean([bool((m & ((i + j) == int(i[t] + j[t]))).any()) for t in torch.nonzero(~m).flatten()])
    assert predicted_accuracy(E3[:1], masks[:1]).item() == pytest.approx(want)
    assert torch.isnan(predicted_accuracy(E3[2:], masks[2:])).all()  # 55 of 55: no test pairs


def test_random_representation_has_low_rqi():
    g = torch.Generator().manual_seed(0)
    rqis = [rqi_linear(torch.rand(10, 1, generator=g) - 0.5).rqi for _ in range(20)]
    assert max(rqis) < 0.3 and np.mean(rqis) < 0.1


def test_effective_loss_and_predicted_accuracy_are_the_literal_definitions():
    p = 6
    g = torch.Generator().manual_seed(1)
    E = torch.rand(2, p, 2, generator=g, dtype=torch.float64)
    E[1, :, 1] = 0.2 * torch.arange(p) + 1e-4 * torch.rand(p, generator=g, dtype=torch.float64)
    masks = torch.stack([train_mask(p, 12, seed=0), train_mask(p, 15, seed=1)])
    pairs = [(i, j) for i in range(p) for j in range(i, p)]
    for r in range(2):
        m = masks[r].tolist()
        num, closed_test = 0.0, set()
        Z = (E[r] - E[r].mean(0)) / E[r].std(0, unbiased=False)
        for (a, (i, j)), (b, (k, n)) in itertools.combinations(enumerate(pairs), 2):
            if i + j != k + n:
                continue
            if m[a] and m[b]:
                num += float((E[r, i] + E[r, j] - E[r, k] - E[r, n]).pow(2).sum())
            close = float((Z[i] + Z[j] - Z[k] - Z[n]).pow(2).mean()) < 0.01
            if close and m[a] != m[b]:
                closed_test.add(b if m[a] else a)
        want_l = num / float(E[r].pow(2).sum())
        assert effective_loss(E[r : r + 1], masks[r : r + 1]).item() == pytest.approx(want_l, rel=1e-12)
        n_test = len(pairs) - sum(m)
        want_acc = len(closed_test) / n_test
        assert predicted_accuracy(E[r : r + 1], masks[r : r + 1]).item() == pytest.approx(want_acc)


def test_implied_accuracy_and_uniqueness():
    p = 10
    # all pairs but one: the line is pinned down and the missing pair is implied
    m = torch.ones(55, dtype=torch.bool)
    m[17] = False
    assert implied_accuracy(p, m) == (1.0, True)
    # the "small" pairs only: sums 0..4 are all in training, nothing pins E_5..E_9
    i, j = unordered_pairs(p)
    m = (i + j) <= 4
    acc, unique = implied_accuracy(p, m)
    assert not unique and acc == 0.0
    # a chain: E0 + E2 = 2 E1 and E1 + E3 = 2 E2 (training) imply E0 + E3 = E1 + E2, so the test pair
    # {0, 3} is implied by the training pair {1, 2}; no other test pair is
    train = {(0, 2), (1, 1), (1, 3), (2, 2), (1, 2)}
    m = torch.tensor([(int(a), int(b)) in train for a, b in zip(i, j)])
    assert implied_accuracy(p, m) == (pytest.approx(1 / 50), False)


def test_training_on_the_effective_loss_makes_the_representation_linear():
    cfg = ToyConfig(n_train=45, hidden=8, steps=1500, log_every=50, lr_embed=1e-2)
    h = train_toy(cfg, objective="effective")
    rqi, l_eff = h.metrics["rqi"], h.metrics["l_eff"]
    assert rqi[0] < 0.5 and rqi[-1] > 0.95
    assert l_eff[-1] < 1e-2 * l_eff[0]
    assert h.linear_unique and h.final("acc_pred") == pytest.approx(h.acc_implied)


def test_task_training_learns_the_training_set():
    cfg = ToyConfig(n_train=45, hidden=64, steps=1500, log_every=50, lr_decoder=1e-3)
    h = train_toy(cfg, stop_at={"train_acc": 0.95})
    assert h.final("train_acc") >= 0.95 and h.stopped_at < 1500 and h.steps[-1] == h.stopped_at
    assert h.metrics["rqi"][-1] > h.metrics["rqi"][0]


def test_phases_use_the_shared_rule():
    rule = PhaseRule(budget=1000, tau=100)
    steps = np.arange(0, 1001, 10)

    def hist(t_tr, t_te):
        def ramp(t):
            return np.where(steps >= t, 1.0, 0.1) if t is not None else np.full(steps.shape, 0.1)

        mets = {m: np.zeros(steps.shape) for m in METRICS}
        mets["train_acc"], mets["test_acc"] = ramp(t_tr), ramp(t_te)
        return ToyHistory(ToyConfig(), "task", steps, mets, 1.0, True, np.zeros((10, 1)), 1000)

    cases = {(50, 100): "comprehension", (50, 500): "grokking", (50, None): "memorisation", (None, None): "confusion"}
    for (t_tr, t_te), want in cases.items():
        h = hist(t_tr, t_te)
        got = h.phase(rule)
        assert got == want
        assert got == classify_phase(
            first_epoch_reaching(steps, h.metrics["train_acc"], 0.9),
            first_epoch_reaching(steps, h.metrics["test_acc"], 0.9),
            rule,
        )
    assert set(cases.values()) == set(PHASES)
