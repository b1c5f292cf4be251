import torch

from interp.config import ModelConfig, TrainConfig
from interp.legacy import to_bridge
from interp.model import Transformer, all_logits, last_position_logits
from interp.tasks import all_pairs

STANDARD_HOOKS = {"hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_q",
                  "blocks.0.attn.hook_k", "blocks.0.attn.hook_v", "blocks.0.attn.hook_attn_scores",
                  "blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.0.hook_attn_out",
                  "blocks.0.hook_resid_mid", "blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post",
                  "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"}


def canonical_model(seed=0, biases=False):
    cfg = TrainConfig(train_biases=biases)
    m = Transformer(cfg.model_config()).init_weights(cfg.resolved_init_std, seed)
    if biases:  # non-zero biases so the fast path's bias handling is exercised
        with torch.no_grad():
            for n, p in m.named_parameters():
                if ".b_" in n:
                    p.normal_(0, 0.1)
    return m


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


def test_hooks_and_weight_layout():
    cfg = ModelConfig(p=7, d_model=12, n_heads=3, d_head=4, d_mlp=20)
    m = Transformer(cfg).init_weights(0.3, 0)
    _, cache = m.run_with_cache(all_pairs(7))
    assert STANDARD_HOOKS <= set(cache.keys())
    assert cache["blocks.0.attn.hook_pattern"].shape == (49, 3, 3, 3)
    assert cache["blocks.0.mlp.hook_post"].shape == (49, 3, 20)
    assert torch.allclose(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(49, 3, 3))
    assert cache["blocks.0.attn.hook_pattern"][:, :, 0, 1:].abs().max() == 0  # causal
    shapes = {"W_E": (8, 12), "W_pos": (3, 12), "W_Q": (3, 12, 4), "W_O": (3, 4, 12), "W_in": (12, 20),
              "W_out": (20, 12), "W_U": (12, 7), "W_L": (20, 7)}
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
