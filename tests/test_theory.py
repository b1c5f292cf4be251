"""Weight-norm theory and the delay law on data whose answer is known by construction."""

import math

import numpy as np
import pandas as pd
import pytest

from interp.errors import InterpError
from interp.theory.delay_law import delay_law, format_law, linear_fit
from interp.theory.weight_norm import contraction_fit, escape_epoch, lu_curves, lu_shape, theory_rate


def test_contraction_fit_recovers_the_rate():
    t = np.arange(0, 3000, 10)
    V = np.where(t < 500, 3000.0, 2000 * 0.998 ** (t - 500) + 900)
    fit = contraction_fit(t, V, t_mem=500, lr=1e-3, weight_decay=1.0)
    assert fit.rate == pytest.approx(0.998, abs=1e-6) and fit.C == pytest.approx(900, rel=1e-4)
    assert fit.r2 > 0.9999 and fit.theory_rate == pytest.approx(theory_rate(1e-3, 1.0)) == 0.998
    with pytest.raises(ValueError):
        contraction_fit(t[:3], V[:3], t_mem=0)


def test_escape_epoch_is_the_first_step_near_the_final_norm():
    t = np.arange(0, 100)
    V = np.concatenate([np.full(10, 50.0), np.linspace(50, 10, 90)])
    e = escape_epoch(t, V, t_mem=5)
    assert V[e] <= 15 and V[e - 1] > 15 and e >= 5


def test_lu_curves_shape():
    alpha = 10 ** np.linspace(-1, 1, 11)
    runs = pd.DataFrame(
        {
            "alpha": np.repeat(alpha, 2),
            "best_train_loss": np.repeat(np.where(alpha < 0.5, 3.0, 1e-4), 2),
            "best_test_loss": np.repeat((np.log10(alpha) - 0.1) ** 2 + 0.01, 2),
        }
    )
    curve = lu_curves(runs)
    assert len(curve) == 11
    shape = lu_shape(curve)
    assert shape["test_minimum_interior"] and shape["train_falls"] and shape["train_flat_after_minimum"]
    assert shape["alpha_best_test"] == pytest.approx(alpha[5])


def _sweep_index(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for lam in (0.1, 0.3, 0.5, 1.0):
        for s in range(4):
            t_mem = 800 + rng.integers(-50, 50)
            rows.append(
                dict(
                    run=f"wd{lam}_s{s}",
                    lr=1e-3,
                    weight_decay=lam,
                    T_mem=t_mem,
                    T_grok=1182 / lam + 884 + rng.normal(0, 30),
                    V_mem=3000.0,
                    V_final=3000 * math.exp(-lam),
                )
            )
    rows.append(dict(run="wd0.01", lr=1e-3, weight_decay=0.01, T_mem=800, T_grok=None, V_mem=3000.0, V_final=2990.0))
    rows.append(dict(run="wd5", lr=1e-3, weight_decay=5.0, T_mem=None, T_grok=None, V_mem=None, V_final=10.0))
    return pd.DataFrame(rows)


def test_delay_law_fits_and_counts_runs_that_do_not_grok():
    law = delay_law(_sweep_index())
    assert law.inv_lambda.slope == pytest.approx(1182, rel=0.05) and law.inv_lambda.r2 > 0.99
    assert law.inv_lambda.slope_ci[0] < 1182 < law.inv_lambda.slope_ci[1]
    assert law.inv_eta is None and "not varied" in law.absent["inv_eta"]
    assert law.not_grokked == ["wd0.01"] and law.not_memorised == ["wd5"] and law.n_grokked == 16
    assert law.delay_vs_theory is not None and law.delay_vs_theory.n == 16
    text = format_law(law)
    assert "not grokked: wd0.01" in text and "paper" in text


def test_delay_law_refuses_empty_data():
    idx = _sweep_index()
    with pytest.raises(InterpError, match="no run grokked"):
        delay_law(idx.assign(T_grok=None))
    with pytest.raises(InterpError, match="no V_mem"):
        delay_law(idx.assign(V_mem=None))
    with pytest.raises(InterpError, match="lacks column"):
        delay_law(idx.drop(columns=["V_final"]))


def test_linear_fit_exact_line():
    f = linear_fit([1, 2, 3, 4], [3, 5, 7, 9])
    assert (f.slope, f.intercept) == pytest.approx((2, 1)) and f.r2 == pytest.approx(1.0)
