"""TrainConfig is validated when built (issue 15 items 6-7): the Python API and the command line
refuse the same values with the same message, before anything touches the disk."""

import math

import pytest
from conftest import cli_in_process

from interp.config import ModelConfig, TrainConfig, preset
from interp.errors import InterpError


@pytest.mark.parametrize(
    "kw,needle",
    [
        (dict(epochs=2.5), "epochs must be an integer, got 2.5"),
        (dict(p="31"), "p must be an integer, got '31'"),
        (dict(train_biases="yes"), "train_biases must be true or false, got 'yes'"),
        (dict(lr=math.inf), "lr must be a finite number, got inf"),
        (dict(lr=math.nan), "lr must be a finite number, got nan"),
        (dict(lr=1e6), "lr must be > 0 and at most 10"),
        (dict(weight_decay=math.inf), "weight_decay must be a finite number, got inf"),
        (dict(weight_decay=2000.0), "lr * weight_decay must be < 1"),
        (dict(init_std=math.inf), "init_std must be a finite number, got inf"),
        (dict(init_std=1e9), "init_std must be > 0 and at most 10"),
        (dict(data_seed=99999999999999999999999), "data_seed must lie in [0, 2**63 - 1]"),
        (dict(p=13, frac_train=0.001), "leaves an empty train or test set"),
        (dict(run_name=".."), "is not a plain file name"),
        (dict(run_name="a/b"), "is not a plain file name"),
        (dict(run_name="x" * 300), "at most 100 are allowed"),
        (dict(epochs=10**12), "epochs must lie in [1, 10,000,000]"),
    ],
)
def test_bad_values_fail_at_construction(kw, needle):
    with pytest.raises(InterpError) as e:
        TrainConfig(**kw)
    assert needle in str(e.value)


def test_cli_and_python_api_say_the_same(tmp_path):
    with pytest.raises(InterpError) as e:
        TrainConfig(epochs=2.5)
    r = cli_in_process("train", "--out", str(tmp_path / "x"), "--epochs", "2.5", "--no-progress")
    assert r.returncode == 2
    assert r.stderr.strip() == f"interp: error: {e.value}"
    assert not (tmp_path / "x").exists()


def test_replace_and_presets_are_validated_too():
    import dataclasses

    cfg = preset("quick")
    with pytest.raises(InterpError, match="lr must be"):
        dataclasses.replace(cfg, lr=-1.0)
    with pytest.raises(InterpError, match="p must be an integer"):
        ModelConfig(p=7.0)


def test_device_is_resolved_in_one_place():
    import torch

    from interp.config import resolve_device

    assert resolve_device("cpu") == "cpu"
    with pytest.raises(InterpError, match="device must be 'cpu' or 'cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InterpError, match="CUDA is not available"):
            resolve_device("cuda")
