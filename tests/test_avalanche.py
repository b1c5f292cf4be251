"""The gradient-avalanche dimension (REFERENCE §7): the Gaussian null, toppling by hand, errors, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import tiny_config

from interp.analysis import avalanche as av
from interp.errors import InterpError


def graph_of(edges, n):
    i, j = np.array(edges).T
    a = sp.coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)).tocsr()
    return (a + a.T).tocsr()


def test_gaussian_gradients_give_dimension_near_one():
    # REFERENCE §7's null, the requirement the free parameters were calibrated on; small graphs
    for seed in (0, 1):
        d = av.gaussian_null((500, 1000, 2000, 4000), seed=seed)
        assert 0.9 <= d.D <= 1.1, d
        assert d.r2 > 0.99
        assert all(0 < s < n for s, n in zip(d.s_max, d.sizes))


def test_iid_gradients_of_several_sizes_and_subsamples_give_one():
    # any i.i.d. law (here heavy-tailed) gives D ~ 1 across sizes, and so does subsampling one model
    rng = np.random.default_rng(5)
    grads = [rng.standard_t(3, size=n) for n in (600, 1200, 2400, 4800)]
    assert 0.9 <= av.dimension(grads).D <= 1.1
    assert 0.9 <= av.subsample_dimension(rng.laplace(size=6000), (500, 1000, 2000, 4000)).D <= 1.1


def test_one_round_by_hand():
    # path 0 - 1 - 2; node 0 passes its excess 1 to node 1, which receives (1 - 0.5) * 1 / 1
    t = av.topple(np.array([2.0, 0.0, 0.5]), graph_of([(0, 1), (1, 2)], 3), threshold=1.0, dissipation=0.5)
    np.testing.assert_allclose(t.stress, [1.0, 0.5, 0.5])
    assert t.rounds == 1 and t.released == pytest.approx(1.0) and t.dissipated == pytest.approx(0.5)
    assert t.topplings.tolist() == [1, 0, 0]


def test_ping_pong_by_hand_conserves_stress_up_to_dissipation():
    # two full sites pass a halving excess back and forth: 2 + 1 + 1/2 + ... = 4 released, 2 lost
    t = av.topple(np.array([3.0, 1.0]), graph_of([(0, 1)], 2), threshold=1.0, dissipation=0.5)
    np.testing.assert_allclose(t.stress, [1.0, 1.0], atol=1e-8)
    assert t.released == pytest.approx(4.0, abs=1e-8)
    assert t.dissipated == pytest.approx(2.0, abs=1e-8)
    # a star: the hub shares its excess evenly, each of 4 leaves gets (1 - 0.2) * 2 / 4
    t = av.topple(np.array([3.0, 0, 0, 0, 0]), graph_of([(0, k) for k in range(1, 5)], 5), 1.0, 0.2)
    np.testing.assert_allclose(t.stress, [1.0, 0.4, 0.4, 0.4, 0.4])


def test_conservation_on_a_ba_graph():
    g = av.ba_graph(3000, 3, seed=4)
    z = av.stress(np.random.default_rng(0).standard_normal(3000))
    assert z.mean() == pytest.approx(1.0)
    t = av.topple(z, g.adjacency, threshold=1.5, dissipation=0.1)
    assert t.stress.sum() == pytest.approx(z.sum() - t.dissipated, rel=1e-12)
    assert t.stress.max() <= 1.5 * (1 + 1e-9)
    a = av.avalanches(z, g)  # the same stress placed on the nodes by the graph's permutation
    placed = av.topple(z[g.placement], g.adjacency, threshold=1.5, dissipation=0.1)
    assert a.sizes.sum() == placed.toppled.sum() and a.topplings == placed.topplings.sum()
    assert list(a.sizes) == sorted(a.sizes, reverse=True) and a.s_max == a.sizes[0]


def test_ba_graph_shape_and_determinism():
    g = av.ba_graph(5000, 3, seed=2)
    a = g.adjacency
    assert (a != a.T).nnz == 0 and a.diagonal().sum() == 0
    assert 5.5 < g.degree.mean() < 6.1  # 2m, less the merged parallel edges
    assert g.degree.max() > 20 * g.degree.mean()  # hubs: preferential attachment
    assert sorted(g.placement) == list(range(5000))
    h = av.ba_graph(5000, 3, seed=2)
    assert (a != h.adjacency).nnz == 0 and np.array_equal(g.placement, h.placement)
    assert (a != av.ba_graph(5000, 3, seed=3).adjacency).nnz > 0


def test_deterministic_with_a_seed():
    assert (
        av.gaussian_null((300, 600, 1200), seed=7).s_max_per_seed
        == av.gaussian_null((300, 600, 1200), seed=7).s_max_per_seed
    )
    grad = np.random.default_rng(1).standard_normal(2000)
    cache: dict = {}
    assert av.s_max(grad, seed=3) == av.s_max(grad, seed=3, graphs=cache) == av.s_max(grad, seed=3, graphs=cache)
    assert len(cache) == av.AvalancheConfig().seeds


def test_bad_input_raises_clear_errors():
    with pytest.raises(InterpError, match="empty"):
        av.stress([])
    with pytest.raises(InterpError, match="at least 2 entries"):
        av.stress([1.0])
    with pytest.raises(InterpError, match="all zeros"):
        av.stress(np.zeros(10))
    with pytest.raises(InterpError, match="non-finite"):
        av.stress([1.0, np.nan])
    with pytest.raises(InterpError, match="at least 2 model sizes"):
        av.dimension([np.ones(100)])
    with pytest.raises(InterpError, match="at least 2 distinct"):
        av.dimension([np.ones(100), np.ones(100)])
    with pytest.raises(InterpError, match="at least 2 distinct"):
        av.gaussian_null((1000,))
    with pytest.raises(InterpError, match="at least 2 nodes"):
        av.ba_graph(1)
    with pytest.raises(InterpError, match="dissipation"):
        av.AvalancheConfig(dissipation=0.0)
    with pytest.raises(InterpError, match="gradient has 10 entries, the graph 20 nodes"):
        av.avalanches(np.ones(10), av.ba_graph(20))


def test_gradient_snapshot_is_the_full_batch_train_gradient(tmp_path):
    from interp.analysis.losses import cross_entropy
    from interp.tasks import all_pairs, labels
    from interp.training.loop import train

    torch.set_num_threads(1)
    run = train(tiny_config(epochs=20), tmp_path / "tiny", progress=False)
    s = av.gradient_snapshot(run, 20)
    model = run.load_model(20)
    train_idx = run.split.train
    toks = all_pairs(13)[train_idx]
    loss = cross_entropy(model(toks)[:, -1], labels("add", 13)[train_idx]).mean()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, [p for _, p in named])]).double().numpy()
    assert s.names == [n for n, _ in named] and not any(".b_" in n for n in s.names)  # frozen biases left out
    assert s.loss == pytest.approx(loss.item(), rel=1e-5)
    np.testing.assert_allclose(s.grad, ref, rtol=1e-4, atol=1e-7)
