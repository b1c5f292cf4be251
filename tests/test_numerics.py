"""Process-wide numerical set-up (interp.numerics)."""

import subprocess
import sys

import pytest

CALLS = {
    "loss": "cross_entropy(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))",
    "fast path": "all_logits(Transformer(ModelConfig(p=7, d_model=8, n_heads=2, d_head=4, d_mlp=16)))",
}


@pytest.mark.parametrize("what", list(CALLS))
def test_vector_math_is_warmed_up_before_the_first_loss_or_fast_path_call(what):
    """An analysis that never starts the trainer still initialises MKL's vector math (the first
    parallel exp of a process can round differently) before its first exp: on the first call of
    the loss or of the '=' fast path, and only then."""
    code = f"""
import torch
from interp.analysis.losses import cross_entropy
from interp.config import ModelConfig
from interp.model import Transformer
from interp.model.fast import all_logits
from interp.numerics import warm_up_vector_math as warm_up
assert warm_up.cache_info().misses == 0
{CALLS[what]}
assert warm_up.cache_info().misses == 1, warm_up.cache_info()
"""
    subprocess.run([sys.executable, "-c", code], check=True)
