"""Progress measures on models whose answer is known (REFERENCE §2-3).

Each fast implementation is checked against the literal definition (dense trig directions, full
2D Fourier transform, float64 log-softmax), then against synthetic models built from chosen
frequencies, random models, and the legacy fixture.
"""

import math
from pathlib import Path

import pytest
import torch
from helpers import fourier_logits, fourier_neurons, fourier_transformer

from interp.analysis import measures as ms
from interp.analysis.fourier import fft2d, frame, frequency_rows, trig_directions
from interp.analysis.losses import cross_entropy, loss_and_accuracy
from interp.config import ModelConfig
from interp.errors import InterpError
from interp.model import Transformer, all_logits
from interp.tasks import all_pairs, labels, make_split

torch.set_num_threads(1)


def random_model(p=13, seed=0, biases=True, d_model=32, d_mlp=48, task="add"):
    cfg = ModelConfig(task=task, p=p, d_model=d_model, n_heads=2, d_head=8, d_mlp=d_mlp, train_biases=biases)
    m = Transformer(cfg).init_weights(0.8 / math.sqrt(d_model), seed)
    if biases:
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for name, prm in m.named_parameters():
                if name.rsplit(".", 1)[-1].startswith("b_"):
                    prm.copy_(0.1 * torch.randn(prm.shape, generator=g))
    return m.eval()


def literal_fve(post_group):
    """REFERENCE §2 word for word: centre, fft2d, block {0, 2k-1, 2k}^2 minus const-const."""
    X = post_group.double()
    n = X.shape[0]
    X = X - X.mean((0, 1))
    C = fft2d(X)
    tot = C.pow(2).sum((0, 1))
    out = torch.zeros(n // 2 + 1, X.shape[-1], dtype=torch.float64)
    for k in range(1, n // 2 + 1):
        idx = [0] + frequency_rows(n, k)
        out[k] = C[idx][:, idx].pow(2).sum((0, 1)) - C[0, 0].pow(2)
    return torch.where(tot > 1e-12, out / tot.clamp_min(1e-300), torch.zeros_like(out))


def dense_losses(L_group, freqs, train_mask):
    """Restricted (all inputs) and excluded (train) loss with dense trig directions (REFERENCE §3)."""
    n = L_group.shape[0]
    L = L_group.reshape(n * n, n).double()
    y = ((torch.arange(n)[:, None] + torch.arange(n)[None, :]) % n).reshape(-1)
    D = trig_directions(n, freqs)  # [dirs, n^2]
    proj = D.T @ (D @ L)
    restricted = proj + L.mean(0, keepdim=True)
    ce = lambda x: -x.log_softmax(-1).gather(-1, y[:, None])[:, 0]  # noqa: E731
    excl = ce(L - proj)[train_mask.reshape(-1)].mean()
    return float(ce(restricted).mean()), float(excl)


@pytest.mark.parametrize("task,p", [("add", 13), ("sub", 13), ("mul", 13), ("div", 11)])
def test_fast_forward_matches_hooked_model(task, p):
    m = random_model(p, task=task)
    ap = ms.all_pair_activations(m)
    assert (ap.logits - all_logits(m)).abs().max() < 1e-5
    _, cache = m.run_with_cache(all_pairs(p))
    post = frame(task, p).to_group(cache["blocks.0.mlp.hook_post"][:, -1])
    assert (ap.post - post).abs().max() < 1e-5


@pytest.mark.parametrize("task,p", [("add", 13), ("mul", 13)])  # mul: n = 12, has a Nyquist row
def test_neuron_fve_matches_literal_definition(task, p):
    m = random_model(p, task=task)
    ap = ms.all_pair_activations(m)
    lit = literal_fve(ap.post)
    assert torch.allclose(ms.neuron_fve(ap.post), lit, atol=1e-6)
    fused = ms.model_neuron_clusters(m).fve_by_freq  # the chunked path used on checkpoints
    assert torch.allclose(fused, lit, atol=2e-6)


@pytest.mark.parametrize("task,p,freqs", [("add", 13, [2, 5]), ("mul", 13, [1, 6]), ("sub", 11, [3])])
def test_restricted_and_excluded_loss_match_dense_definition(task, p, freqs):
    m = random_model(p, seed=3)
    L = ms.group_logits(all_logits(m), task, p) * 5  # sharper logits: losses far from chance
    n = L.shape[0]
    mask = torch.rand(n, n, generator=torch.Generator().manual_seed(0)) < 0.4
    r_dense, e_dense = dense_losses(L, freqs, mask)
    assert ms.restricted_loss(L, freqs) == pytest.approx(r_dense, rel=1e-6)
    assert ms.excluded_loss(L, freqs, mask) == pytest.approx(e_dense, rel=1e-5)


def test_cross_entropy_keeps_tiny_losses():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 50, (400,), generator=g)
    L = torch.randn(400, 50, generator=g) * 2
    L[torch.arange(400), y] += torch.linspace(2, 26, 400)  # losses from ~1 down to ~1e-9
    L[0, (y[0] + 1) % 50] += 200  # a wrong answer leading by far
    ce = cross_entropy(L, y)
    assert ce.dtype == torch.float64 and float(ce[-1]) > 0  # float32 would round ~1e-9 to 0
    # the closed form log(1 + sum_{j != y} exp(l_j - l_y)); float64 log-softmax is ~1e-16 absolute
    d = (L.double() - L.double().gather(-1, y[:, None])).scatter(-1, y[:, None], -math.inf)
    assert torch.allclose(ce, torch.log1p(d.exp().sum(-1)), rtol=1e-5, atol=0)
    loss, acc = loss_and_accuracy(L, y)
    assert float(loss) == pytest.approx(float(ce.mean()), rel=1e-12)
    assert float(acc) == float((L.argmax(-1) == y).double().mean())


def test_cross_entropy_gradient_keeps_tiny_losses():
    """The hand-written gradient is softmax - onehot without cancellation: gradcheck, and against a
    float64 log-softmax where the target's gradient is ~1e-9 (float32's 1/(1 + s) - 1 would give 0)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, dtype=torch.double, generator=g, requires_grad=True)
    t = torch.randint(0, 5, (6,), generator=g)
    assert torch.autograd.gradcheck(lambda x: cross_entropy(x, t), (x,))
    y = torch.randint(0, 40, (300,), generator=g)
    L = torch.randn(300, 40, generator=g)
    L[torch.arange(300), y] += torch.linspace(-2, 24, 300)
    ours, ref = L.clone().requires_grad_(True), L.clone().double().requires_grad_(True)
    weight = torch.rand(300, dtype=torch.float64, generator=g)
    (cross_entropy(ours, y) * weight).sum().backward()
    (-ref.log_softmax(-1).gather(-1, y[:, None]).squeeze(-1) * weight).sum().backward()
    tiny = ours.grad[torch.arange(300), y][-1]
    assert -1e-8 < float(tiny) < 0
    assert torch.allclose(ours.grad.double(), ref.grad, rtol=1e-5, atol=1e-12)


def test_activations_route_known_answer():
    """Activations and logits given directly: FVE exactly 1, restricted = full, excluded = chance."""
    n, freqs = 17, [3, 7]
    post = fourier_neurons(n, freqs, per_freq=5)
    cl = ms.neuron_clusters(ms.neuron_fve(post))
    assert torch.allclose(cl.fve, torch.ones_like(cl.fve), atol=1e-12)
    assert cl.frequency.tolist() == [3] * 5 + [7] * 5
    assert ms.key_frequencies(cl) == freqs
    L = fourier_logits(n, freqs, amplitude=[8.0, 5.0])
    y = ((torch.arange(n)[:, None] + torch.arange(n)[None, :]) % n).reshape(-1)
    full = float(cross_entropy(L.reshape(n * n, n), y).mean())
    assert ms.restricted_loss(L, freqs) == pytest.approx(full, rel=1e-9)
    assert ms.excluded_loss(L, freqs) == pytest.approx(math.log(n), rel=1e-9)
    a = ms.cos_coefficients(L)
    assert a[3] == pytest.approx(8.0) and a[7] == pytest.approx(5.0)
    assert a[[k for k in range(1, n // 2 + 1) if k not in freqs]].abs().max() < 1e-9
    assert ms.cos_fve(L, freqs) == pytest.approx(1.0)


def test_synthetic_transformer_yields_exactly_its_frequencies():
    p, freqs = 23, [2, 5, 9]
    m = fourier_transformer(p, freqs, amplitude=10.0)
    target = fourier_logits(p, freqs, 10.0)
    assert (all_logits(m).double().reshape(p, p, p) - target).abs().max() < 1e-4
    pm = ms.progress_measures(m)  # no split: every measure on all inputs
    assert pm.key_freqs == freqs
    assert pm.embedding_freqs == freqs and pm.embedding_agrees
    assert pm.restricted_loss == pytest.approx(pm.train_loss, rel=1e-4)
    assert pm.excluded_loss == pytest.approx(math.log(p), abs=1e-4)
    assert pm.frac_neurons_clear == 1.0  # every neuron: FVE ~0.96 at its frequency
    assert set(pm.clusters.frequency.tolist()) == set(freqs)
    assert pm.cos_fve == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(pm.cos_coefs[freqs], torch.full((3,), 10.0, dtype=torch.float64), rtol=1e-5)
    # its logits are the ideal ones: every input's margin is what the frequencies allow
    assert pm.interference_margin == pytest.approx(ms.interference_margin(p, freqs).gap, rel=1e-5)
    assert pm.train_margin_ratio == pytest.approx(pm.interference_margin, rel=1e-4)
    # removing one frequency hurts, but less than removing all
    assert all(pm.train_loss < v < pm.excluded_loss for v in pm.excluded_loss_per_freq.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_model_has_no_key_frequency(seed):
    m = random_model(p=31, seed=seed, biases=False, d_mlp=64)
    cl = ms.model_neuron_clusters(m)
    assert float(cl.fve.max()) < ms.KEY_FVE_THRESHOLD
    assert ms.key_frequencies(cl) == []
    pm = ms.progress_measures(m, make_split(31, 0.3, seed))
    assert pm.key_freqs == [] and pm.embedding_freqs == [] and pm.frac_neurons_clear == 0.0


def test_train_test_loss_match_float64_reference():
    p = 13
    m = random_model(p, seed=5, task="sub")
    split = make_split(p, 0.3, 1)
    pm = ms.progress_measures(m, split)
    L = all_logits(m).double()
    y = labels("sub", p)
    lp = -L.log_softmax(-1).gather(-1, y[:, None])[:, 0]
    assert pm.train_loss == pytest.approx(float(lp[split.train].mean()), rel=1e-6)
    assert pm.test_loss == pytest.approx(float(lp[split.test].mean()), rel=1e-6)
    assert pm.test_acc == pytest.approx(float((L.argmax(-1) == y)[split.test].double().mean()))


def test_gini_and_weight_norms():
    assert ms.gini(torch.ones(10)) == pytest.approx(0.0, abs=1e-12)
    assert ms.gini(torch.tensor([0.0, 0, 0, 5])) == pytest.approx(0.75)  # (N - 1) / N
    # Hurley & Rickard by hand: c = (1, 2, 3), sum 6: 1 - 2 * (1/6 * 2.5 + 2/6 * 1.5 + 3/6 * 0.5) / 3
    assert ms.gini(torch.tensor([3.0, 1, 2])) == pytest.approx(1 - 2 * (2.5 / 6 + 3 / 6 + 1.5 / 6) / 3)
    # along the last axis of a stack (the training probe's form): each vector's gini, 0 for all-zero ones
    x = torch.rand(3, 4, 10)
    x[1, 2] = 0
    batched = ms.ginis(x)
    assert batched.shape == (3, 4) and batched[1, 2] == 0
    assert batched.flatten().tolist() == [ms.gini(v) for v in x.reshape(12, 10)]
    m = random_model(11)
    sq = ms.sum_squared_weights(m)
    assert sq["embed.W_E"] == pytest.approx(float(m.W_E.detach().double().pow(2).sum()))
    assert sq["total"] == pytest.approx(sum(float(p.detach().double().pow(2).sum()) for p in m.parameters()))


def test_bad_input_is_a_one_line_error():
    m = random_model(13)
    with pytest.raises(InterpError, match="out of range"):
        ms.progress_measures(m, key_freqs=[7])
    with pytest.raises(ValueError, match="n, n, d_mlp"):  # a caller's bug
        ms.neuron_fve(torch.zeros(13, 12, 4))
    with pytest.raises(InterpError, match="Fourier structure"):
        ms.make_layout("pow", 13)
    with pytest.raises(ValueError, match="layout is for add mod 11"):  # a caller's bug, not the user's
        ms.progress_measures(m, layout=ms.make_layout("add", 11))


def test_legacy_fixture_key_frequencies_and_losses(fixture_path):
    from interp.legacy import load_legacy, match_paper_split

    imp = load_legacy(fixture_path)
    split, seed = match_paper_split(imp)
    pm = ms.progress_measures(imp.model, split)
    # This fixture is a low-precision run (epoch 50k), not the paper's epoch-40k model of REFERENCE §3.
    assert pm.key_freqs == [3, 6, 23, 39]
    assert pm.embedding_freqs == [3, 6, 23, 35, 39]
    assert pm.train_loss == pytest.approx(3.05e-4, rel=0.05)
    assert pm.test_acc > 0.999
    assert pm.restricted_loss == pytest.approx(3.6e-3, rel=0.1)
    expected = {3: 0.354, 6: 1.059, 23: 8.15, 39: 0.939}
    for k, v in expected.items():
        assert pm.excluded_loss_per_freq[k] == pytest.approx(v, rel=0.05)
    assert pm.excluded_loss > 10


def test_interference_margin_closed_forms():
    # one frequency k: the nearest rival sits where k d = +-1 (mod n), 1 - cos(2 pi / n) below the peak,
    # and the RMS of a cosine over a whole period is sqrt(1/2)
    n, k = 113, 41
    m = ms.interference_margin(n, [k])
    d = min(x for x in range(1, n) if (k * x) % n in (1, n - 1))
    assert m.rival == d == 11
    assert m.gap == pytest.approx((1 - math.cos(2 * math.pi / n)) / math.sqrt(0.5), rel=1e-12)
    # {41, 54}: 41 * 44 = -4 and 54 * 44 = 3 (mod 113), so d = 44 nearly ties with d = 0; two unit
    # cosines have RMS 1
    two = ms.interference_margin(n, [41, 54])
    assert (41 * 44) % n == n - 4 and (54 * 44) % n == 3
    assert two.rival == 44
    assert two.gap == pytest.approx(2 - math.cos(2 * math.pi * 4 / n) - math.cos(2 * math.pi * 3 / n), rel=1e-12)
    assert ms.interference_margin(n, [8, 19, 41, 54]).gap > 20 * two.gap
    # a zero amplitude is the same as leaving that frequency out
    alpha = torch.zeros(n // 2 + 1, dtype=torch.float64)
    alpha[41], alpha[54] = 3.0, 0.0
    scaled = ms.interference_margin(n, [41, 54], alpha)
    assert scaled.rival == m.rival and scaled.gap == pytest.approx(m.gap, rel=1e-12)


def test_interference_margin_is_the_margin_of_ideal_logits():
    # logits sum_k alpha_k cos(w_k (a + b - c)): every input's margin is gap x the logits' RMS over outputs
    n, freqs, amps = 31, [3, 7], [5.0, 2.0]
    L = fourier_logits(n, freqs, amps)
    y = (torch.arange(n)[:, None] + torch.arange(n)[None, :]) % n
    margins = ms.logit_margins(L.reshape(n * n, n), y.reshape(-1))
    rms = L.reshape(n * n, n).square().mean(-1).sqrt()
    m = ms.interference_margin(n, freqs, ms.cos_coefficients(L))
    torch.testing.assert_close(margins / rms, torch.full_like(margins, m.gap), rtol=1e-9, atol=0)
    # the rival output is c = a + b - d
    rival = (L.reshape(n * n, n).scatter(-1, y.reshape(-1, 1), float("-inf"))).argmax(-1)
    assert set(((y.reshape(-1) - rival) % n).tolist()) <= {m.rival, n - m.rival}


def test_logit_margins_and_bad_frequencies():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 0.0]])
    assert ms.logit_margins(logits, torch.tensor([1, 0])).tolist() == [1.0, 0.0]
    with pytest.raises(InterpError, match="out of range"):
        ms.interference_margin(31, [16])
    with pytest.raises(InterpError, match="at least one"):
        ms.interference_margin(31, [])


def test_omnigrok_study_margins_match_the_interference_margin(quick_run):
    # the study's --margins on a grokked run: the model's margins, in units of its logits' RMS, are what its
    # key frequencies and their amplitudes allow, and its nearest rival outputs are the predicted ones
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "analyses" / "omnigrok_constant_norm.py"
    spec = importlib.util.spec_from_file_location("omnigrok_constant_norm", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    with torch.no_grad():
        m = study.margins(str(quick_run.path))
    assert m["keys"] and m["ratio_p1"] > 0  # grokked: every train pair right
    assert m["ratio_median"] == pytest.approx(m["fitted"].gap, rel=0.25)
    top = max(m["rivals"], key=m["rivals"].get)
    assert top in (m["fitted"].rival, quick_run.config.p - m["fitted"].rival)
    assert "key frequencies" in study.margins_line(m)
