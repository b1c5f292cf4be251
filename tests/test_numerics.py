"""Process-wide numerical set-up (interp.numerics)."""

import platform
import subprocess
import sys

import pytest
from conftest import REPO

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


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="FTZ/DAZ are x86 settings")
def test_subnormals_are_flushed_on_every_thread_of_a_pool_that_already_runs():
    """A Python session that ran parallel torch work before training (a notebook): the pool's
    threads already exist, and setting FTZ on the calling thread alone left the worker's half of a
    parallel product computing subnormals. ``flush_subnormals`` must reach every thread of the
    pool; an ensemble member then rounds exactly as its single run in that process too."""
    code = """
import sys
import torch
sys.path.insert(0, "tests")
torch.set_num_threads(2)
def flushed():
    return float(((torch.full((1 << 20,), 1e-30) * 1e-10) == 0).double().mean())
assert flushed() == 0.0  # the pool runs, nothing is flushed yet
from interp.numerics import flush_subnormals
torch.set_flush_denormal(True)
assert flushed() == 0.5, flushed()  # the calling thread alone: the worker's half stays subnormal
flush_subnormals()
assert flushed() == 1.0, flushed()
from test_model import _check_members_round_alike
_check_members_round_alike()
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
