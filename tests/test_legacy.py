import pytest
import torch
from conftest import cli_in_process, run_cli

from interp.config import ModelConfig
from interp.errors import InterpError
from interp.legacy import import_run, load_legacy
from interp.model import Transformer, all_logits
from interp.tasks import labels


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
    r = cli_in_process("import", str(tmp_path / "junk.pth"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "junk.pth" in r.stderr and len(r.stderr.strip().splitlines()) == 1


# --- issue 15: history and config of paper files ---------------------------------------------


def _paper_file(path, p=13, n_train=100, n_test=34, config=None, d_model=16, H=2, E=8, d_mlp=24):
    """A small paper-format file (the paper code's layout, REFERENCE §8)."""
    m = Transformer(
        ModelConfig(p=p, d_model=d_model, n_heads=H, d_head=E, d_mlp=d_mlp, train_biases=True)
    ).init_weights(0.3, 1)
    W = {k: v.detach().clone() for k, v in m.named_parameters()}
    state = {
        "embed.W_E": W["embed.W_E"].T.contiguous(),
        "pos_embed.W_pos": W["pos_embed.W_pos"],
        "blocks.0.attn.W_Q": W["blocks.0.attn.W_Q"].transpose(1, 2).contiguous(),
        "blocks.0.attn.W_K": W["blocks.0.attn.W_K"].transpose(1, 2).contiguous(),
        "blocks.0.attn.W_V": W["blocks.0.attn.W_V"].transpose(1, 2).contiguous(),
        "blocks.0.attn.W_O": W["blocks.0.attn.W_O"].permute(2, 0, 1).reshape(d_model, H * E).contiguous(),
        "blocks.0.attn.mask": torch.tril(torch.ones(3, 3)),
        "blocks.0.mlp.W_in": W["blocks.0.mlp.W_in"].T.contiguous(),
        "blocks.0.mlp.b_in": torch.randn(d_mlp),
        "blocks.0.mlp.W_out": W["blocks.0.mlp.W_out"].T.contiguous(),
        "blocks.0.mlp.b_out": torch.randn(d_model),
        "unembed.W_U": torch.cat([W["unembed.W_U"], torch.zeros(d_model, 1)], 1),
    }
    obj = {
        "model": state,
        "train_losses": [5.0 - 0.01 * i for i in range(n_train)],
        "test_losses": [9.0 - 0.01 * j for j in range(n_test)],
    }
    if config is not None:
        obj["config"] = config
    torch.save(obj, path)
    return m


def test_paper_history_sits_at_its_epochs_and_the_file_config_is_used(tmp_path):
    import json

    from interp.legacy import paper_split

    cfg = {
        "lr": 3e-3,
        "weight_decay": 0.5,
        "p": 13,
        "frac_train": 0.5,
        "seed": 7,
        "fn_name": "add",
        "num_epochs": 100,
        "d_model": 16,
        "device": "cuda",
        "use_ln": False,
    }
    _paper_file(tmp_path / "paper.pth", config=cfg)  # 100 train losses, 34 test losses: every 3 epochs
    run = import_run(tmp_path / "paper.pth", tmp_path / "run")
    c = run.config
    assert (c.lr, c.weight_decay, c.frac_train, c.p, c.task) == (3e-3, 0.5, 0.5, 13, "add")
    raw = json.loads((run.path / "config.json").read_text())
    imp = raw["import"]
    assert imp["from_file"]["lr"] == 3e-3 and imp["from_file"]["seed"] == 7
    assert "lr" not in imp["assumed"] and imp["assumed"]["beta2"] == 0.98 and imp["assumed"]["warmup_steps"] == 10
    assert "seed 7 from the file's config" in imp["split"]
    sp = paper_split(13, 0.5, 7)
    assert torch.equal(run.split.train, sp.train)
    assert raw["history"]["test_loss_interval"] == 3 and raw["history"]["accuracy"] is False
    df = run.metrics()
    assert run.checkpoint_epochs() == [100] and list(df["epoch"]) == list(range(101))
    placed = df.loc[df["test_loss"].notna() & (df["epoch"] < 100)]
    assert list(placed["epoch"]) == list(range(0, 100, 3))
    assert placed["test_loss"].tolist() == pytest.approx([9.0 - 0.01 * j for j in range(34)])
    assert df["train_loss"].iloc[:100].tolist() == pytest.approx([5.0 - 0.01 * i for i in range(100)])
    assert df["train_acc"].iloc[:100].isna().all()


def test_paper_fixture_history_and_unknown_phases(fixture_path, tmp_path):
    import json

    r = run_cli("import", str(fixture_path), "--out", str(tmp_path / "paper"))
    assert r.returncode == 0, r.stderr
    from interp.store import NO_ACCURACY_HISTORY, Run

    run = Run.open(tmp_path / "paper")
    raw = json.loads((run.path / "config.json").read_text())
    assert raw["history"]["test_loss_interval"] == 10
    df = run.metrics()
    imp = load_legacy(fixture_path)
    te = df.loc[df["test_loss"].notna() & (df["epoch"] < 50000)]
    assert list(te["epoch"]) == list(range(0, 50000, 10))
    assert te["test_loss"].tolist() == imp.test_losses
    assert run.checkpoint_epochs() == [50000]
    assert not run.accuracy_history
    info = cli_in_process("info", str(run.path))
    assert info.returncode == 0, info.stderr
    assert (
        f"T_mem         {NO_ACCURACY_HISTORY}" in info.stdout and f"T_grok        {NO_ACCURACY_HISTORY}" in info.stdout
    )
    assert "not reached" not in info.stdout
    assert "test loss recorded every 10 epochs" in info.stdout
    assert "assumed     lr=0.001" in info.stdout


def test_info_and_analyze_agree_on_an_imported_run(tmp_path):
    import json

    from interp.store import NO_ACCURACY_HISTORY

    _paper_file(tmp_path / "paper.pth")
    assert run_cli("import", str(tmp_path / "paper.pth"), "--out", str(tmp_path / "run")).returncode == 0
    info = json.loads(cli_in_process("info", str(tmp_path / "run"), "--json").stdout)
    r = cli_in_process("analyze", str(tmp_path / "run"), "--json")
    assert r.returncode == 0, r.stderr
    ph = json.loads(r.stdout)["phases"]
    assert (ph["t_mem"], ph["t_grok"]) == (info["T_mem"], info["T_grok"]) == (NO_ACCURACY_HISTORY,) * 2
    text = cli_in_process("analyze", str(tmp_path / "run")).stdout
    assert f"T_mem            {NO_ACCURACY_HISTORY}" in text and "not reached" not in text
    at = cli_in_process("compare", f"{tmp_path / 'run'}@T_mem", str(tmp_path / "run"))
    assert at.returncode == 2 and NO_ACCURACY_HISTORY in at.stderr
