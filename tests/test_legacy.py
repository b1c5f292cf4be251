import torch

from interp.errors import InterpError
from interp.legacy import import_run, load_legacy
from interp.model import Transformer, all_logits
from interp.config import ModelConfig
from interp.tasks import labels

import pytest

from conftest import run_cli


def test_paper_fixture_imports_with_high_accuracy(fixture_path, tmp_path):
    imp = load_legacy(fixture_path)
    assert imp.format == "paper"
    assert imp.model.cfg.p == 113 and imp.model.cfg.train_biases
    acc = (all_logits(imp.model).argmax(-1) == labels("add", 113)).double().mean().item()
    assert acc > 0.999
    r = run_cli("import", str(fixture_path), "--out", str(tmp_path / "paper"))
    assert r.returncode == 0, r.stderr
    from interp.store import Run

    run = Run.open(tmp_path / "paper")
    assert run.checkpoint_epochs() == [imp.epoch]
    m = run.load_model()
    assert torch.equal(m.W_E, imp.model.W_E)
    # the reconstructed paper split reproduces the file's recorded final train loss
    y = labels("add", 113)
    lp = -all_logits(m).double().log_softmax(-1).gather(-1, y[:, None])[:, 0]
    assert abs(lp[run.split.train].mean().item() - imp.train_losses[-1]) < 0.1 * imp.train_losses[-1]


def test_transformer_lens_state_dict_roundtrip(tmp_path):
    m = Transformer(ModelConfig(p=11, d_model=16, n_heads=2, d_head=8, d_mlp=24)).init_weights(0.2, 3)
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}
    sd["blocks.0.attn.mask"] = torch.tril(torch.ones(3, 3))
    sd["blocks.0.attn.IGNORE"] = torch.tensor(-1e5)
    torch.save(sd, tmp_path / "tl.pt")
    imp = load_legacy(tmp_path / "tl.pt")
    assert imp.format == "transformer_lens"
    assert torch.equal(all_logits(imp.model), all_logits(m))


def test_pickled_objects_are_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(InterpError, match="not a loadable weights-only"):
        load_legacy(tmp_path / "evil.pt")


def test_bad_import_cli(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    r = run_cli("import", str(tmp_path / "junk.pth"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "junk.pth" in r.stderr and len(r.stderr.strip().splitlines()) == 1
