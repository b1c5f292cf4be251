"""Linear CKA (issue #4): invariances, the feature form against the Gram form, run matrices."""

import math

import pytest
import torch
from helpers import gram_linear_cka

from interp.analysis import cka as C
from interp.config import TrainConfig
from interp.errors import InterpError
from interp.model import Transformer
from interp.store import Run, save_checkpoint, write_config, write_split
from interp.tasks import make_split


def fake_run(path, p=13, d_model=16, d_mlp=32, epochs=(0, 10, 20, 30), seed=0):
    """A run directory with random checkpoints (no training: the tests only need the format)."""
    cfg = TrainConfig(
        run_name=path.name,
        p=p,
        frac_train=0.5,
        d_model=d_model,
        n_heads=2,
        d_head=8,
        d_mlp=d_mlp,
        epochs=max(max(epochs), 1),
    )
    path.mkdir(parents=True)
    write_config(path, cfg)
    write_split(path, make_split(p, cfg.frac_train, cfg.data_seed))
    for i, e in enumerate(epochs):
        m = Transformer(cfg.model_config()).init_weights(0.8 / math.sqrt(d_model), seed=seed * 100 + i)
        save_checkpoint(path, e, m, cfg)
    return Run.open(path)


def low_rank(N, d, r, g):
    return torch.randn(N, r, generator=g) @ torch.randn(r, d, generator=g) + 0.05 * torch.randn(N, d, generator=g)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariances(debiased):
    g = torch.Generator().manual_seed(0)
    X = low_rank(500, 32, 8, g)
    Q, _ = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))
    assert C.linear_cka(X, X, debiased) == pytest.approx(1.0, abs=1e-6)
    # orthogonal rotation, isotropic scaling and a shift of every feature change nothing
    assert C.linear_cka(X, (X.double() @ Q).float() * 7.0 + 3.0, debiased) == pytest.approx(1.0, abs=1e-6)
    # a non-isotropic scaling does change it
    assert C.linear_cka(X, X * torch.logspace(-2, 2, 32), debiased) < 0.99


def test_independent_random_near_zero():
    g = torch.Generator().manual_seed(1)
    N, d = 961, 32  # p = 31 inputs
    X, Y = torch.randn(N, d, generator=g), torch.randn(N, d, generator=g)
    std = C.linear_cka(X, Y)
    assert std < 0.06  # the plug-in estimator's bias, about sqrt(d1 d2) / N = 0.033
    assert abs(C.linear_cka(X, Y, debiased=True)) < 0.01


@pytest.mark.parametrize("debiased", [False, True])
def test_feature_form_equals_gram_form(debiased):
    g = torch.Generator().manual_seed(2)
    X = low_rank(80, 12, 4, g)
    Y = torch.cat([X[:, :5], torch.randn(80, 9, generator=g)], 1)
    assert C.linear_cka(X, Y, debiased) == pytest.approx(gram_linear_cka(X, Y, debiased), abs=1e-6)


@pytest.mark.parametrize("debiased", [False, True])
def test_blocked_matrix_equals_pairs(debiased):
    g = torch.Generator().manual_seed(3)
    reps = [low_rank(90, 10, 3 + i % 4, g) for i in range(7)]
    ref = torch.tensor([[gram_linear_cka(a, b, debiased) for b in reps] for a in reps], dtype=torch.float64)
    # a memory budget of two representations forces 1-checkpoint blocks and recomputation
    M, ranks, _ = C.cka_cross(lambda i: reps[i], 7, debiased=debiased, memory_bytes=2 * 90 * 10 * 4)
    assert torch.allclose(M, ref, atol=1e-5) and ranks == [10] * 7
    M2, _, _ = C.cka_cross(lambda i: reps[i], 3, lambda j: reps[j + 3], 4, debiased=debiased)
    assert torch.allclose(M2, ref[:3, 3:], atol=1e-5)
    # compression to the effective rank keeps the values
    M3, r3, _ = C.cka_cross(lambda i: reps[i], 7, debiased=debiased, energy_tol=1e-4)
    assert torch.allclose(M3, ref, atol=1e-3) and max(r3) < 10


def test_run_matrix_and_between_runs(tmp_path):
    run = fake_run(tmp_path / "a")
    other = fake_run(tmp_path / "b", d_model=32, d_mlp=64, epochs=(0, 5), seed=1)
    for layer in C.LAYERS:
        res = C.checkpoint_cka_matrix(run, layer)
        M = res.matrix
        assert res.epochs_a == [0, 10, 20, 30] and M.shape == (4, 4)
        assert torch.allclose(M.diagonal(), torch.ones(4, dtype=torch.float64), atol=1e-5)
        assert torch.allclose(M, M.T)
        m1, m2 = run.load_model(10), run.load_model(30)
        assert M[1, 3] == pytest.approx(C.model_cka(m1, m2, layer), abs=1e-5)
        x = C.run_cka(run, other, layer, epochs_a=[10, 30])
        assert x.matrix.shape == (2, 2) and x.epochs_b == [0, 5]
        assert x.matrix[1, 0] == pytest.approx(C.model_cka(m2, other.load_model(0), layer), abs=1e-5)
    thin = C.checkpoint_cka_matrix(run, "resid", max_checkpoints=2)
    assert thin.epochs_a == [0, 30]


def test_bad_input(tmp_path):
    run = fake_run(tmp_path / "a")
    with pytest.raises(InterpError, match=r"no checkpoint at epoch 15; nearest available: .*10, 20"):
        C.checkpoint_cka_matrix(run, "resid", epochs=[0, 15])
    with pytest.raises(InterpError, match="unknown CKA layer"):
        C.checkpoint_cka_matrix(run, "attn")
    other = fake_run(tmp_path / "b", p=11, epochs=(0,))
    with pytest.raises(InterpError, match="same inputs"):
        C.run_cka(run, other)
    with pytest.raises(InterpError, match="same inputs"):
        C.model_cka(run.load_model(0), other.load_model(0))
    with pytest.raises(ValueError, match="constant"):  # degenerate data, not a user mistake
        C.linear_cka(torch.ones(10, 3), torch.randn(10, 3))
