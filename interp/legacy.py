"""Import legacy checkpoints and export to TransformerLens 4.x (REFERENCE §8).

* Paper format (Nanda et al. code): ``torch.save({"model": state_dict, ...})`` with the paper's
  own layout (``embed.W_E [d_model, d_vocab]``, ``attn.W_O [d_model, H*d_head]``, output vocab
  p + 1 whose last logit is dropped).
* TransformerLens legacy ``HookedTransformer`` state dicts (our own layout and names).
* Export: ``to_bridge(model)`` builds ``TransformerBridge.boot_native(cfg)`` and loads the weights
  through ``convert_tl_checkpoint``.

Files are read with ``torch.load(weights_only=True)``: nothing is unpickled beyond tensors and
plain containers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch

from interp.config import ModelConfig, TrainConfig
from interp.errors import InterpError
from interp.model import Transformer
from interp.store import METRICS_FILE, BASE_METRICS, CKPT_DIR, MetricsWriter, Run, save_checkpoint, write_config, write_split
from interp.tasks import Split


@dataclass
class Imported:
    model: Transformer
    format: str  # "paper" or "transformer_lens"
    epoch: Optional[int]
    train_losses: Optional[list[float]] = None
    test_losses: Optional[list[float]] = None


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InterpError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means we cannot trust the file
        raise InterpError(f"{path}: not a loadable weights-only torch file ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise InterpError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return obj


def _state_of(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def _need(state: dict[str, torch.Tensor], key: str, path: Path) -> torch.Tensor:
    if key not in state:
        raise InterpError(f"{path}: missing weight {key!r}")
    return state[key].float()


def _has_layernorm(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith("ln") or ".ln" in k for k in state)


def load_legacy(path: str | Path) -> Imported:
    """Load a paper-format or TransformerLens-legacy file into a ``Transformer``."""
    path = Path(path)
    obj = _read(path)
    state = _state_of(obj)
    if _has_layernorm(state):
        raise InterpError(f"{path}: LayerNorm weights found; only the no-LayerNorm model of REFERENCE §1 is supported")
    if any(k.startswith("blocks.1.") for k in state):
        raise InterpError(f"{path}: more than one layer; only one-layer models are supported")
    W_O = _need(state, "blocks.0.attn.W_O", path)
    fmt = "paper" if W_O.ndim == 2 else "transformer_lens"
    g = lambda k: _need(state, k, path)  # noqa: E731
    if fmt == "paper":
        W_E = g("embed.W_E").T  # [d_vocab, d_model]
        W_U = g("unembed.W_U")[:, :-1]  # drop the unused '=' output
        H, E, D = g("blocks.0.attn.W_Q").shape
        tl = {
            "embed.W_E": W_E,
            "pos_embed.W_pos": g("pos_embed.W_pos"),
            "blocks.0.attn.W_Q": g("blocks.0.attn.W_Q").transpose(1, 2),
            "blocks.0.attn.W_K": g("blocks.0.attn.W_K").transpose(1, 2),
            "blocks.0.attn.W_V": g("blocks.0.attn.W_V").transpose(1, 2),
            "blocks.0.attn.W_O": W_O.reshape(D, H, E).permute(1, 2, 0),
            "blocks.0.mlp.W_in": g("blocks.0.mlp.W_in").T,
            "blocks.0.mlp.W_out": g("blocks.0.mlp.W_out").T,
            "unembed.W_U": W_U,
        }
        for k in ("blocks.0.mlp.b_in", "blocks.0.mlp.b_out"):
            if k in state:
                tl[k] = g(k)
    else:
        tl = {k: v.float() for k, v in state.items() if not k.endswith((".mask", ".IGNORE"))}
    W_E, W_U = tl["embed.W_E"], tl["unembed.W_U"]
    p = W_U.shape[1]
    if W_E.shape[0] != p + 1:
        raise InterpError(f"{path}: input vocab {W_E.shape[0]} != output vocab {p} + 1; not an [a, b, =] modular-arithmetic model")
    H, D, E = tl["blocks.0.attn.W_Q"].shape
    d_mlp = tl["blocks.0.mlp.W_in"].shape[1]
    nonzero_bias = any(k.split(".")[-1].startswith("b_") and v.abs().max() > 0 for k, v in tl.items())
    cfg = ModelConfig(p=p, d_model=D, n_heads=H, d_head=E, d_mlp=d_mlp, train_biases=bool(nonzero_bias))
    if tl["pos_embed.W_pos"].shape[0] != 3:
        raise InterpError(f"{path}: n_ctx {tl['pos_embed.W_pos'].shape[0]} != 3")
    model = Transformer(cfg)
    own = dict(model.named_parameters())
    unknown = sorted(set(tl) - set(own))
    if unknown:
        raise InterpError(f"{path}: unexpected weights {unknown[:4]}")
    with torch.no_grad():
        for k, prm in own.items():
            if k in tl:
                if tuple(tl[k].shape) != tuple(prm.shape):
                    raise InterpError(f"{path}: {k} has shape {tuple(tl[k].shape)}, expected {tuple(prm.shape)}")
                prm.copy_(tl[k])
            else:
                prm.zero_()
    tr = obj.get("train_losses") if isinstance(obj.get("train_losses"), list) else None
    te = obj.get("test_losses") if isinstance(obj.get("test_losses"), list) else None
    epoch = obj.get("epoch") if isinstance(obj.get("epoch"), int) else (len(tr) - 1 if tr else None)
    return Imported(model=model.eval(), format=fmt, epoch=epoch, train_losses=tr, test_losses=te)


def load_paper_checkpoint(path: str | Path) -> Transformer:
    """The model in a paper-format file (the fixture in ../shared/fixtures)."""
    return load_legacy(path).model


def paper_split(p: int, frac_train: float = 0.3, seed: int = 0) -> Split:
    """The paper code's split: all (a, b) pairs shuffled by Python's ``random`` with ``seed``,
    the first ``int(frac_train * p^2)`` for training (Nanda et al. code defaults: 0.3, seed 0)."""
    pairs = [i * p + j for i in range(p) for j in range(p)]
    random.seed(seed)
    random.shuffle(pairs)
    div = int(frac_train * len(pairs))
    t = torch.tensor(pairs)
    return Split(train=t[:div].sort().values, test=t[div:].sort().values)


def match_paper_split(imp: Imported, max_seed: int = 100, rel_tol: float = 0.1) -> tuple[Split, Optional[int]]:
    """Find the paper-code split seed whose train loss matches the file's last recorded train loss.

    Paper files record ``train_losses`` but not the seed; the seed that reproduces the recorded
    loss (within ``rel_tol``) identifies the split. Falls back to seed 0 when nothing matches.
    """
    if not imp.train_losses:
        return paper_split(imp.model.cfg.p), None
    from interp.model import all_logits
    from interp.tasks import labels

    p = imp.model.cfg.p
    y = labels("add", p)
    per_pair = -all_logits(imp.model).double().log_softmax(-1).gather(-1, y[:, None])[:, 0]
    target = float(imp.train_losses[-1])
    for seed in range(max_seed):
        sp = paper_split(p, 0.3, seed)
        if abs(per_pair[sp.train].mean().item() - target) <= rel_tol * target:
            return sp, seed
    return paper_split(p), None


def import_run(path: str | Path, out: str | Path, run_name: Optional[str] = None) -> Run:
    """Turn a legacy file into a run directory with one checkpoint (its epoch, else 0)."""
    path, out = Path(path), Path(out)
    imp = load_legacy(path)
    if out.exists() and any(out.iterdir()):
        raise InterpError(f"{out} already exists and is not empty; choose another --out")
    mc = imp.model.cfg
    epoch = imp.epoch or 0
    cfg = TrainConfig(
        run_name=run_name or path.stem, task="add", p=mc.p, d_model=mc.d_model, n_heads=mc.n_heads,
        d_head=mc.d_head, d_mlp=mc.d_mlp, train_biases=mc.train_biases, epochs=max(epoch, 1),
        notes=f"imported from {path.name} ({imp.format} format)",
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / CKPT_DIR).mkdir(exist_ok=True)
    # The paper's own split is reproducible from its seed; other files carry none, so a fresh seeded one.
    split, source = None, "seeded (data_seed); the file carries no split"
    if imp.format == "paper":
        split, seed = match_paper_split(imp)
        source = (f"paper code split, seed {seed} (its train loss matches the file's last recorded train loss)"
                  if seed is not None else "paper code split, seed 0 (default; no recorded loss to check against)")
    from interp.tasks import make_split

    write_split(out, split or make_split(mc.p, cfg.frac_train, cfg.data_seed))
    write_config(out, cfg, extra={"imported_from": str(path), "import_format": imp.format, "split_source": source})
    save_checkpoint(out, epoch, imp.model, cfg)
    if imp.train_losses:
        names = [n for n, _ in imp.model.named_parameters()]
        w = MetricsWriter(out / METRICS_FILE, BASE_METRICS + [f"sq_{n}" for n in names])
        nan = float("nan")
        te = imp.test_losses or []
        for e, tr in enumerate(imp.train_losses):
            w.add([e, float(tr), float(te[e]) if e < len(te) else nan] + [nan] * (len(BASE_METRICS) - 3 + len(names)))
        w.flush()
    return Run.open(out)


def bridge_config(cfg: ModelConfig):
    from transformer_lens.config import TransformerBridgeConfig

    return TransformerBridgeConfig(
        d_model=cfg.d_model, d_head=cfg.d_head, n_heads=cfg.n_heads, n_layers=1, n_ctx=cfg.n_ctx,
        d_vocab=cfg.d_vocab, d_vocab_out=cfg.d_vocab_out, d_mlp=cfg.d_mlp, act_fn=cfg.act_fn,
        normalization_type=None, positional_embedding_type="standard",
    )


def to_bridge(model: Transformer):
    """Export to a TransformerLens 4.x ``TransformerBridge`` (boot_native + convert_tl_checkpoint)."""
    import transformer_lens.model_bridge.sources  # noqa: F401 - registers boot_native
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    tcfg = bridge_config(model.cfg)
    bridge = TransformerBridge.boot_native(tcfg)
    state = {k: v.detach().clone() for k, v in model.named_parameters()}
    converted = convert_tl_checkpoint(state, tcfg)
    res = bridge.load_state_dict(converted, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    return bridge.to(model.W_E.device)
