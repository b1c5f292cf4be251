"""interp.analysis.spectra: HTSR alpha and correlation traps on matrices whose spectra are known."""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_config

from interp.analysis import spectra as sp
from interp.model import Transformer

torch.set_num_threads(1)


def planted_power_law(alpha: float, n: int = 400, m: int = 200, seed: int = 0) -> np.ndarray:
    """An n x m matrix whose eigenvalues of W^T W are the m quantiles of a Pareto law with density
    ~ lambda^-alpha on [1, inf): lambda_i = (1 - q_i)^(-1 / (alpha - 1)), random singular vectors."""
    rng = np.random.default_rng(seed)
    q = (np.arange(m) + 0.5) / m
    lam = (1 - q) ** (-1 / (alpha - 1))
    U, _ = np.linalg.qr(rng.standard_normal((n, m)))
    V, _ = np.linalg.qr(rng.standard_normal((m, m)))
    return U @ np.diag(np.sqrt(lam)) @ V.T


@pytest.mark.parametrize("alpha", [2.0, 3.5, 5.0])
def test_planted_power_law_exponent_is_recovered(alpha):
    # 3.5 and 5 guard against powerlaw 2.0's default bound alpha <= 3
    s = sp.matrix_spectrum(planted_power_law(alpha), "W")
    assert s.alpha == pytest.approx(alpha, abs=0.2)
    assert s.n_evals == 200 and s.n_tail >= sp.MIN_TAIL
    np.testing.assert_allclose(s.evals[-1], (0.5 / 200) ** (-1 / (alpha - 1)), rtol=1e-8)


def test_iid_gaussian_matrices_have_no_traps_and_no_spikes():
    g = torch.Generator().manual_seed(1)
    for shape in [(128, 128), (512, 128), (128, 512), (114, 128)]:
        for seed in range(5):
            W = torch.randn(*shape, generator=g, dtype=torch.float64) * 0.05
            s = sp.matrix_spectrum(W, "W", seed=seed, fit=False)
            assert s.n_traps == 0 and s.n_spikes == 0, (shape, seed)
            assert s.sigma2 == pytest.approx(0.05**2, rel=0.05)  # the MP fit finds the entries' variance
            assert s.rand_lambda_max < s.threshold < 1.2 * s.rand_lambda_max  # the edge is tight, not loose


def test_planted_concentrated_rank_one_spike_is_a_trap():
    """A large rank-1 spike on a few rows and columns (a block of big weights): shuffling scatters
    its big elements but cannot shrink them, so the shuffled matrix keeps eigenvalues above the bulk."""
    g = torch.Generator().manual_seed(2)
    W = torch.randn(128, 128, generator=g, dtype=torch.float64)
    u = torch.zeros(128, dtype=torch.float64)
    u[:3] = 1.0
    s = sp.matrix_spectrum(W + 20 * torch.outer(u, u), "W", fit=False)
    assert s.n_traps >= 1 and s.n_spikes >= 1
    # one very large element is the smallest trap
    W1 = W.clone()
    W1[7, 9] = 60.0
    assert sp.matrix_spectrum(W1, "W", fit=False).n_traps >= 1


def test_dense_rank_one_spike_is_a_spike_of_w_but_not_a_trap():
    """A dense low-rank signal is learnt correlation: an eigenvalue of W above the bulk, which the
    shuffle spreads into the bulk (no trap)."""
    g = torch.Generator().manual_seed(3)
    W = torch.randn(256, 128, generator=g, dtype=torch.float64)
    u = torch.randn(256, generator=g, dtype=torch.float64)
    v = torch.randn(128, generator=g, dtype=torch.float64)
    s = sp.matrix_spectrum(W + 0.5 * torch.outer(u, v), "W", fit=False)
    assert s.n_spikes == 1 and s.n_traps == 0


def test_shuffle_is_seeded():
    W = torch.randn(64, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a, b = sp.matrix_spectrum(W, "W", seed=0, fit=False), sp.matrix_spectrum(W, "W", seed=0, fit=False)
    c = sp.matrix_spectrum(W, "W", seed=1, fit=False)
    np.testing.assert_array_equal(a.rand_evals, b.rand_evals)
    assert not np.array_equal(a.rand_evals, c.rand_evals)
    np.testing.assert_array_equal(a.evals, c.evals)


def test_weight_matrices_of_a_transformer():
    cfg = tiny_config(d_model=32, n_heads=2, d_head=4, d_mlp=64)
    model = Transformer(cfg.model_config())
    model.init_weights(1 / math.sqrt(32), seed=0)
    mats = sp.weight_matrices(model)
    assert list(mats) == ["W_E", "W_U", "W_Q", "W_K", "W_V", "W_O", "W_in", "W_out"]
    assert mats["W_E"].shape == (cfg.p + 1, 32) and mats["W_U"].shape == (32, cfg.p)
    assert mats["W_Q"].shape == (32, 8) and mats["W_O"].shape == (8, 32)
    assert mats["W_in"].shape == (32, 64) and mats["W_out"].shape == (64, 32)
    # heads side by side (Q, K, V) and stacked (O), head h in its own block
    Wq, Wo = model.state_dict()["blocks.0.attn.W_Q"], model.state_dict()["blocks.0.attn.W_O"]
    torch.testing.assert_close(mats["W_Q"][:, 4:8], Wq[1].double())
    torch.testing.assert_close(mats["W_O"][4:8], Wo[1].double())
    # the same from the state dict; the spectra, one per matrix, fit where there are enough eigenvalues
    assert list(sp.weight_matrices(model.state_dict())) == list(mats)
    specs = sp.model_spectra(model)
    df = sp.spectra_frame(specs, epoch=5)
    assert df["name"].tolist() == list(mats) and (df["epoch"] == 5).all()
    assert df.set_index("name").loc["W_in", "n_evals"] == 32 and math.isfinite(
        df.set_index("name").loc["W_in", "alpha"]
    )
    assert math.isnan(df.set_index("name").loc["W_Q", "alpha"])  # 8 eigenvalues: too few for a tail fit
    row = sp.table_row(specs)
    assert set(row) == {f"alpha_{k}" for k in mats} | {f"traps_{k}" for k in mats}


def test_reading_follows_reference():
    assert sp.reading(1.5).startswith("over-correlated")
    assert sp.reading(2.1).startswith("well trained")
    assert sp.reading(7.0).startswith("under-trained")
    assert sp.reading(float("nan")) == "no fit"
