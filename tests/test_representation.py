"""Structure of one checkpoint (issue #4): synthetic embeddings whose answer is known."""

import itertools
import math

import pytest
import torch
from helpers import fourier_transformer

from interp.analysis import representation as R
from interp.analysis import rqi
from interp.config import ModelConfig
from interp.errors import InterpError
from interp.model import Transformer
from interp.tasks import all_pairs

P = 31


def random_model(p=P, d_model=32, d_mlp=64, seed=0, biases=False):
    cfg = ModelConfig(p=p, d_model=d_model, n_heads=2, d_head=8, d_mlp=d_mlp, train_biases=biases)
    return Transformer(cfg).init_weights(0.8 / math.sqrt(d_model), seed=seed)


def circle_embedding(model, freqs, noise=0.0, seed=0):
    """Put cos / sin of each frequency into random orthonormal directions (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    p, d = model.cfg.p, model.cfg.d_model
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    x = torch.arange(p, dtype=torch.float32)
    W = torch.zeros(p + 1, d)
    for i, k in enumerate(freqs):
        W[:p] += (
            torch.cos(2 * math.pi * k * x / p)[:, None] * Q[2 * i]
            + torch.sin(2 * math.pi * k * x / p)[:, None] * Q[2 * i + 1]
        )
    W += noise * torch.randn(p + 1, d, generator=g)
    with torch.no_grad():
        model.embed.W_E.copy_(W)
    return model


@pytest.fixture(scope="module")
def synth():
    """Logits = sum of cos(w(a+b-c)) at frequencies 3 and 7, computed by frequency-3/7 neurons."""
    return fourier_transformer(P, [3, 7])


def test_chosen_frequencies_show_circles_and_rqi_one():
    m = circle_embedding(random_model(), [3, 7, 12])
    spec = R.embedding_spectrum(m)
    assert sorted(spec.top_frequencies(3)) == [3, 7, 12]
    assert float(spec.energy_share()[[3, 7, 12]].sum()) == pytest.approx(1.0, abs=1e-6)
    circles = R.embedding_circles(m, [3, 7, 12])
    for c in circles:
        assert c.circularity > 0.999 and c.energy_share == pytest.approx(1 / 3, abs=1e-4)
        r = c.coords.norm(dim=1)
        assert float(r.std() / r.mean()) < 1e-4  # on a circle
    res = R.embedding_rqi(m, [3, 7, 12])
    assert res.rqi == 1.0 and res.n_ideal == P * math.comb((P + 1) // 2, 2)
    assert res.per_plane == {3: 1.0, 7: 1.0, 12: 1.0}
    # still near 1 with a little noise; the ideal parallelograms are the same
    noisy = circle_embedding(random_model(), [3, 7, 12], noise=0.005)
    assert R.embedding_rqi(noisy, [3, 7, 12]).rqi > 0.95
    # an ellipse is a linear image of a circle and is read as well: stretch one plane's cos axis 4x
    # (circularity of an a:b ellipse: ((a + b) / 2)^2 / ((a^2 + b^2) / 2))
    cos3 = R.embedding_circles(m, [3])[0].basis[:, 0]
    with torch.no_grad():
        m.embed.W_E.copy_(m.W_E + 3.0 * (m.W_E @ cos3.float())[:, None] * cos3.float())
    ell = R.embedding_circles(m, [3, 7, 12])
    assert ell[0].circularity == pytest.approx(6.25 / 8.5) and ell[1].circularity > 0.999
    assert R.embedding_rqi(m, [3, 7, 12]).rqi == 1.0


def test_random_embedding_rqi_near_zero():
    for seed in range(2):
        m = random_model(seed=seed)
        res = R.embedding_rqi(m, [3, 7])
        assert res.rqi < 0.02 and max(res.per_plane.values()) < 0.1
        assert R.embedding_rqi(m, [5]).rqi < 0.1  # one plane: chance that angles close within 0.1 rad
        assert R.embedding_rqi(m, chart="linear").rqi < 0.02


def test_synthetic_model_defaults(synth):
    assert R.default_frequencies(synth) == [3, 7]
    circles = R.embedding_circles(synth)
    assert [c.k for c in circles] == [3, 7] and all(c.circularity > 0.999 for c in circles)
    assert R.embedding_rqi(synth).rqi == pytest.approx(1.0)
    cl = R.neuron_clusters(synth)
    assert cl.key_freqs == [3, 7] and int(cl.sizes[3]) > 0 and int(cl.sizes[7]) > 0
    assert cl.frac_clear > 0.5
    assert set(cl.members(3).tolist()) <= set(torch.nonzero(cl.frequency == 3).flatten().tolist())
    svd = R.embedding_svd(synth)
    assert sorted(svd.dominant_freq[:4].tolist()) == [3, 3, 7, 7]
    assert float(svd.explained[:4].sum()) == pytest.approx(1.0, abs=1e-6)
    wl = R.neuron_logit_spectrum(synth)
    other = wl.freq_norms.clone()
    other[[3, 7]] = 0
    assert float(other.norm()) < 1e-4 * float(wl.freq_norms.norm())


def test_neuron_maps_and_spectra(synth):
    nm = R.neuron_activation_maps(synth)
    assert nm.frequency.tolist() == [3, 7]
    assert nm.maps.shape == (2, P, P) and nm.spectra.shape == (2, P, P)
    for i, k in enumerate(nm.frequency.tolist()):
        fn = nm.freq_norms[i]
        inside = fn[[0, k]][:, [0, k]].pow(2).sum()
        assert float(inside / fn.pow(2).sum()) == pytest.approx(float(nm.fve[i]), abs=1e-4)
    # the maps are the hooked model's activations
    _, cache = synth.run_with_cache(all_pairs(P)[:62])
    post = cache["blocks.0.mlp.hook_post"][:, -1, nm.neurons]
    assert torch.allclose(nm.maps[:, :2, :].permute(1, 2, 0).reshape(62, -1).float(), post, atol=1e-4)
    with pytest.raises(InterpError):
        R.neuron_activation_maps(synth, [10**6])


def test_final_activations_and_attention_match_hooks():
    m = random_model(p=13, d_model=16, d_mlp=32, seed=3, biases=True)
    with torch.no_grad():
        for name, prm in m.named_parameters():
            if ".b_" in name:
                prm.normal_(0, 0.1)
    _, cache = m.run_with_cache(all_pairs(13))
    acts = R.final_position_activations(m, chunk_rows=4)
    assert torch.allclose(acts.resid, cache["blocks.0.hook_resid_post"][:, -1], atol=1e-5)
    assert torch.allclose(acts.mlp, cache["blocks.0.mlp.hook_post"][:, -1], atol=1e-5)
    att = R.attention_from_eq(m)
    pat = cache["blocks.0.attn.hook_pattern"][:, :, 2, :]  # [pairs, H, key]
    for j, t in enumerate([att.to_a, att.to_b, att.to_eq]):
        assert torch.allclose(t.reshape(2, -1).T, pat[:, :, j], atol=1e-6)
    assert torch.allclose(att.mean().sum(1), torch.ones(2))


def brute_force_parallelograms(n, modulus):
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    key = (lambda s: s % modulus) if modulus else (lambda s: s)
    return {frozenset([a, b]) for a, b in itertools.combinations(pairs, 2) if key(sum(a)) == key(sum(b))}


@pytest.mark.parametrize("n,modulus", [(7, None), (7, 7), (8, 8), (6, None)])
def test_parallelogram_enumeration(n, modulus):
    I, J, valid = rqi.parallelogram_classes(n, modulus)
    got = set()
    for c in range(I.shape[0]):
        slots = [(int(I[c, s]), int(J[c, s])) for s in range(I.shape[1]) if valid[c, s]]
        got |= {frozenset([a, b]) for a, b in itertools.combinations(slots, 2)}
    assert got == brute_force_parallelograms(n, modulus)


def test_rqi_linear_is_reference_definition():
    # a line E_i = i v (the representation Liu et al. find for addition) closes every parallelogram
    v = torch.randn(8)
    E = torch.arange(10.0)[:, None] * v + 1e-4 * torch.randn(10, 8)
    res = rqi.rqi_linear(E)
    assert res.rqi == 1.0 and res.chart == "linear"
    assert res.n_ideal == len(brute_force_parallelograms(10, None))
    # per-dimension normalisation: scaling one dimension changes nothing
    assert rqi.rqi_linear(E * torch.logspace(-3, 3, 8)).rqi == 1.0
    assert rqi.rqi_linear(torch.randn(10, 8)).rqi < 0.05
    with pytest.raises(ValueError, match="constant"):  # degenerate data, not a user mistake
        rqi.rqi_linear(torch.ones(5, 3))


def test_bad_frequencies():
    m = random_model()
    with pytest.raises(InterpError):
        R.embedding_circles(m, [0])
    with pytest.raises(InterpError):
        R.embedding_circles(m, [P])
    with pytest.raises(InterpError):
        R.embedding_rqi(m, [3], chart="bogus")
