"""The model knows its task: sub, mul and div models are analysed in their own Fourier frame
without anyone naming the task (issue 10, item 3).

Each model is built in its task's frame from ``helpers.fourier_transformer`` (whose logits are
exactly sum_k cos(w_k(i + j - m)) over Z_n): token ``frame.a_tokens[i]`` embeds as group index i,
the answer ``frame.c_tokens[m]`` unembeds as m, and for sub / div the head that copies b flips
the sign of its sine features (b's group index is minus its token's index). So in the task's
frame the key frequencies are exactly ``freqs``; in another frame they are not.
"""

import dataclasses

import pytest
import torch
from helpers import fourier_transformer

from interp.analysis import measures as ms
from interp.analysis import representation as rep
from interp.analysis.fourier import frame
from interp.config import ModelConfig, TrainConfig
from interp.model import Transformer, all_logits
from interp.tasks import labels, make_split

torch.set_num_threads(1)

CASES = [("sub", 13, [2, 5]), ("mul", 13, [1, 5]), ("div", 11, [2, 3])]


def task_model(task: str, p: int, freqs: list[int]) -> Transformer:
    fr = frame(task, p)
    n = fr.n
    base = fourier_transformer(n, freqs, amplitude=10.0, d_model=32, d_head=8)
    cfg = dataclasses.replace(base.cfg, task=task, p=p)
    model = Transformer(cfg)
    sd = {k: v.clone() for k, v in base.state_dict().items() if k in dict(model.named_parameters())}
    W_E = torch.zeros(p + 1, cfg.d_model)
    W_E[fr.a_tokens] = base.W_E.detach()[:n]
    W_E[p] = base.W_E.detach()[n]
    sd["embed.W_E"] = W_E
    W_U = torch.zeros(cfg.d_model, p)
    W_U[:, fr.c_tokens] = base.W_U.detach()
    sd["unembed.W_U"] = W_U
    b_U = torch.zeros(p)
    b_U[fr.c_tokens] = base.unembed.b_U.detach()
    sd["unembed.b_U"] = b_U
    if task in ("sub", "div"):
        W_O = sd["blocks.0.attn.W_O"]
        W_O[1, 1::2] *= -1  # head 1 copies b: its sine features change sign
    model.load_state_dict(sd, strict=False)
    return model.eval()


@pytest.mark.parametrize("task,p,freqs", CASES)
def test_key_frequencies_found_in_the_models_own_frame(task, p, freqs):
    m = task_model(task, p, freqs)
    # the construction computes the task: the answer is the argmax wherever the frame reaches
    fr = frame(task, p)
    pairs = fr.pair_index
    assert torch.equal(all_logits(m)[pairs].argmax(-1), labels(task, p)[pairs])
    # public API, task never named
    pm = ms.progress_measures(m)
    assert pm.key_freqs == freqs and set(pm.embedding_freqs) <= set(freqs)
    assert pm.test_acc >= len(pairs) / p**2 - 1e-12  # right on the whole group grid (at least)
    views = rep.checkpoint_views(m)
    assert views.clusters.key_freqs == freqs and [c.k for c in views.circles] == freqs
    assert all(c.circularity > 0.99 for c in views.circles)
    assert pm.cos_fve == pytest.approx(1.0, abs=1e-4)  # logits are cos(w_k(a o b - c)) in this frame
    # the same weights read in the add frame (what a task="add" default did) miss the structure
    wrong = Transformer(dataclasses.replace(m.cfg, task="add"))
    wrong.load_state_dict(m.state_dict())
    assert ms.progress_measures(wrong).cos_fve < 0.1


@pytest.mark.parametrize("task,p,freqs", CASES[1:])
def test_run_analysis_reads_the_task_from_the_run(task, p, freqs, tmp_path):
    from interp.analysis.run_table import analyze
    from interp.store import Run, save_checkpoint, write_config, write_split

    m = task_model(task, p, freqs)
    c = m.cfg
    cfg = TrainConfig(
        run_name=task,
        task=task,
        p=p,
        d_model=c.d_model,
        n_heads=c.n_heads,
        d_head=c.d_head,
        d_mlp=c.d_mlp,
        train_biases=True,
        epochs=1,
        frac_train=0.5,
    )
    assert cfg.model_config() == ModelConfig(**{**c.to_dict()})
    write_config(tmp_path, cfg)
    write_split(tmp_path, make_split(p, cfg.frac_train, cfg.data_seed))
    save_checkpoint(tmp_path, 1, m, cfg)
    _, summary = analyze(Run.open(tmp_path), progress=False, views=False)
    assert summary.key_freqs == freqs and summary.final_key_freqs == freqs
