"""Import legacy checkpoints and export to TransformerLens 4.x (REFERENCE §8).

* Paper format (Nanda et al. code): ``torch.save({"model": state_dict, ...})`` with the paper's
  own layout (``embed.W_E [d_model, d_vocab]``, ``attn.W_O [d_model, H*d_head]``, output vocab
  p + 1 whose last logit is dropped).
* TransformerLens legacy ``HookedTransformer`` state dicts (our own layout and names).
* Export: ``to_bridge(model)`` builds ``TransformerBridge.boot_native(cfg)`` and loads the weights
  through ``convert_tl_checkpoint``.

``import_run`` turns a file into a run directory and keeps its history: paper files record the
train loss every epoch and the test loss every k epochs (k inferred from the counts, stated in
config.json's ``history``); each loss is placed at the epoch it was recorded at. The file's own
``config`` dict supplies lr, weight decay, p, task, frac_train and seed where present; config.json's
``import`` block lists what came from the file (``from_file``), from the weights
(``from_weights``) and what was assumed (``assumed``: the paper code's defaults, REFERENCE §1).
Accuracies are not recorded by paper files, so ``history.accuracy`` is false and T_mem / T_grok
are ``store.NO_ACCURACY_HISTORY``.

Files are read with ``torch.load(weights_only=True)``: nothing is unpickled beyond tensors and
plain containers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from interp.config import ModelConfig, TrainConfig
from interp.errors import InterpError
from interp.model import Transformer
from interp.store import (
    BASE_METRICS,
    CKPT_DIR,
    METRICS_FILE,
    MetricsWriter,
    Run,
    check_name,
    new_run_dir,
    sanitize_name,
    save_checkpoint,
    write_config,
    write_split,
)
from interp.tasks import Split


@dataclass
class Imported:
    model: Transformer
    format: str  # "paper" or "transformer_lens"
    epoch: Optional[int]
    train_losses: Optional[list[float]] = None
    test_losses: Optional[list[float]] = None
    config: dict[str, Any] = field(default_factory=dict)  # the file's own config dict (plain values only)
    epoch_source: str = ""  # how ``epoch`` was determined


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


def _losses(obj: dict[str, Any], key: str, path: Path) -> Optional[list[float]]:
    v = obj.get(key)
    if v is None:
        return None
    if torch.is_tensor(v):
        v = v.reshape(-1).tolist()
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise InterpError(f"{path}: {key!r} is not a list of numbers")
    return [float(x) for x in v] or None


def _plain_config(obj: dict[str, Any]) -> dict[str, Any]:
    c = obj.get("config")
    if not isinstance(c, dict):
        return {}
    return {str(k): v for k, v in c.items() if isinstance(v, (int, float, str, bool)) or v is None}


def load_legacy(path: str | Path) -> Imported:
    """Load a paper-format or TransformerLens-legacy file into a ``Transformer``.

    A file that is not a one-layer [a, b, =] model (missing or extra weights, odd shapes,
    non-tensor values) is refused with a one-line InterpError naming it.
    """
    path = Path(path)
    obj = _read(path)
    try:
        return _load_legacy(path, obj)
    except InterpError:
        raise
    except (KeyError, ValueError, IndexError, TypeError, AttributeError, RuntimeError) as e:
        # odd or partial state dicts fail somewhere in the conversion; the file is the problem
        detail = (
            f"missing weight {e}"
            if isinstance(e, KeyError)
            else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        )
        raise InterpError(f"{path}: not a supported one-layer [a, b, =] state dict ({detail})") from None


def _load_legacy(path: Path, obj: dict[str, Any]) -> Imported:
    state = _state_of(obj)
    bad = sorted(k for k, v in state.items() if not torch.is_tensor(v))
    if bad:
        raise InterpError(f"{path}: state dict entries that are not tensors: {bad[:3]}")
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
        raise InterpError(
            f"{path}: input vocab {W_E.shape[0]} != output vocab {p} + 1; not an [a, b, =] modular-arithmetic model"
        )
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
    tr = _losses(obj, "train_losses", path)
    te = _losses(obj, "test_losses", path)
    if isinstance(obj.get("epoch"), int) and not isinstance(obj.get("epoch"), bool) and obj["epoch"] >= 0:
        epoch, how = obj["epoch"], "the file's 'epoch'"
    elif tr:
        # the paper code records the train loss of the current weights, then steps: after N
        # recorded losses (epochs 0 .. N-1) the saved weights have taken N steps
        epoch, how = len(tr), f"{len(tr)} recorded train losses (epochs 0..{len(tr) - 1}), then the final step"
    else:
        epoch, how = None, ""
    return Imported(
        model=model.eval(),
        format=fmt,
        epoch=epoch,
        train_losses=tr,
        test_losses=te,
        config=_plain_config(obj),
        epoch_source=how,
    )


def test_loss_interval(n_train: int, n_test: int) -> Optional[int]:
    """Epochs between recorded test losses, from the counts: the k with ceil(n_train / k) == n_test
    (the paper code evaluates when epoch % k == 0), the smallest such k when several fit; None
    when no k fits (the test losses are then not placed)."""
    if n_test <= 0 or n_train <= 0 or n_test > n_train:
        return None
    k = n_train // n_test
    for cand in (k, k + 1, k - 1):
        if cand >= 1 and math.ceil(n_train / cand) == n_test:
            return cand
    return None


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


# The paper code's config keys (Nanda et al.) and ours; values it does not record are assumed
# from REFERENCE §1 (the paper code's choices).
_PAPER_KEYS = {
    "lr": "lr",
    "weight_decay": "weight_decay",
    "p": "p",
    "frac_train": "frac_train",
    "fn_name": "task",
    "task": "task",
    "seed": "seed",
    "num_epochs": "epochs",
    "d_model": "d_model",
    "num_heads": "n_heads",
    "d_mlp": "d_mlp",
    "d_head": "d_head",
    "act_type": "act_fn",
    "warmup_steps": "warmup_steps",
}
_PAPER_TASKS = {"add": "add", "subtract": "sub", "sub": "sub", "multiply": "mul", "mul": "mul", "div": "div"}
_PAPER_ASSUMED = {
    "lr": 1e-3,
    "weight_decay": 1.0,
    "beta1": 0.9,
    "beta2": 0.98,
    "frac_train": 0.3,
    "task": "add",
    "warmup_steps": 10,
    "init_std": "1/sqrt(d_model)",
}


def _file_config(imp: Imported, path: Path) -> dict[str, Any]:
    """Our TrainConfig fields from the file's config dict (checked against the weights)."""
    out: dict[str, Any] = {}
    for k, v in imp.config.items():
        ours = _PAPER_KEYS.get(k)
        if ours is None:
            continue
        if ours == "task":
            if v not in _PAPER_TASKS:
                raise InterpError(f"{path}: config task {v!r} is not one of {', '.join(sorted(_PAPER_TASKS))}")
            v = _PAPER_TASKS[v]
        if ours == "act_fn":
            v = str(v).lower()
        out[ours] = v
    mc = imp.model.cfg
    for k in ("p", "d_model", "n_heads", "d_head", "d_mlp"):
        if k in out and out[k] != getattr(mc, k):
            raise InterpError(f"{path}: its config says {k}={out[k]} but its weights have {k}={getattr(mc, k)}")
    return out


def import_run(path: str | Path, out: str | Path, run_name: Optional[str] = None) -> Run:
    """Turn a legacy file into a run directory with one checkpoint (its epoch, else 0) and the
    file's recorded history in metrics.csv (each loss at the epoch it was recorded at)."""
    path, out = Path(path), Path(out)
    if run_name is not None:
        check_name(run_name, "--name")
    imp = load_legacy(path)
    mc = imp.model.cfg
    epoch = imp.epoch or 0
    fc = _file_config(imp, path) if imp.format == "paper" else {}
    assumed = {k: v for k, v in _PAPER_ASSUMED.items() if k not in fc} if imp.format == "paper" else {}
    fields = {k: fc[k] for k in ("task", "lr", "weight_decay", "frac_train", "warmup_steps") if k in fc}
    for k in ("lr", "weight_decay", "frac_train", "warmup_steps", "beta1", "beta2"):
        if k in assumed:
            fields[k] = assumed[k]
    if imp.format == "paper":
        fields["init_std"] = 1 / math.sqrt(mc.d_model) if "init_std" in assumed else fields.get("init_std")
    task = fields.pop("task", "add")
    cfg = TrainConfig(
        run_name=run_name or sanitize_name(path.stem),
        task=task,
        p=mc.p,
        d_model=mc.d_model,
        n_heads=mc.n_heads,
        d_head=mc.d_head,
        d_mlp=mc.d_mlp,
        train_biases=mc.train_biases,
        epochs=max(epoch, 1),
        notes=f"imported from {path.name} ({imp.format} format)",
        **fields,
    )
    model = imp.model
    if task != mc.task:
        from interp.model import Transformer as _T

        model = _T(cfg.model_config())
        model.load_state_dict(imp.model.state_dict())
        model.eval()

    # The paper's own split is reproducible from its seed; other files carry none, so a fresh seeded one.
    from interp.tasks import make_split

    split, source = None, "seeded (data_seed); the file carries no split"
    if imp.format == "paper":
        if "seed" in fc:
            split = paper_split(mc.p, cfg.frac_train, int(fc["seed"]))
            source = f"paper code split (Python random.shuffle), seed {fc['seed']} from the file's config"
        else:
            split, seed = match_paper_split(imp)
            source = (
                f"paper code split (Python random.shuffle), seed {seed}: its train loss matches the file's "
                "recorded train loss"
                if seed is not None
                else "paper code split, seed 0 (default; no recorded loss to check against)"
            )

    history, rows = _history(imp, epoch, model, split, task)
    provenance = {
        "file": str(path),
        "format": imp.format,
        "from_file": {
            **fc,
            **({"epoch": epoch} if imp.epoch_source == "the file's 'epoch'" else {}),
            **({"train_losses": f"{len(imp.train_losses)} values"} if imp.train_losses else {}),
            **({"test_losses": f"{len(imp.test_losses)} values"} if imp.test_losses else {}),
        },
        "from_weights": ["p", "d_model", "n_heads", "d_head", "d_mlp", "train_biases"],
        "assumed": assumed,
        "epoch": imp.epoch_source or "none recorded: 0",
        "split": source,
    }
    with new_run_dir(out):
        (out / CKPT_DIR).mkdir(exist_ok=True)
        write_split(out, split or make_split(mc.p, cfg.frac_train, cfg.data_seed))
        save_checkpoint(out, epoch, model, cfg)
        if rows:
            names = [n for n, _ in model.named_parameters()]
            w = MetricsWriter(out / METRICS_FILE, BASE_METRICS + [f"sq_{n}" for n in names])
            for r in rows:
                w.add(r)
            w.flush()
            w.close()
        # config.json last: the directory is a run only once everything else is in place
        write_config(
            out,
            cfg,
            extra={
                "imported_from": str(path),
                "import_format": imp.format,
                "split_source": source,
                "import": provenance,
                "history": history,
            },
        )
    return Run.open(out)


def _history(
    imp: Imported, epoch: int, model, split: Optional[Split], task: str
) -> tuple[dict[str, Any], list[list[float]]]:
    """The metrics rows of an imported file and the ``history`` entry of its config.json.

    Train loss i sits at epoch i; test loss j at epoch j * k (k = ``test_loss_interval``); the
    accuracies and weight norms were not recorded (NaN), except at the checkpoint's own epoch,
    whose row is recomputed from the weights when the file's history ends before it.
    """
    tr = imp.train_losses or []
    te = imp.test_losses or []
    notes: list[str] = []
    k = test_loss_interval(len(tr), len(te)) if te else None
    if tr:
        notes.append(f"train loss recorded every epoch, epochs 0..{len(tr) - 1} ({len(tr)} values)")
    if te and k is not None:
        notes.append(
            f"test loss recorded every {k} epochs (inferred: {len(te)} test losses for {len(tr)} train "
            f"losses), placed at epochs 0, {k}, ..., {k * (len(te) - 1)}"
        )
    elif te:
        notes.append(
            f"{len(te)} test losses for {len(tr)} train losses: no whole interval fits, test losses not placed"
        )
    history: dict[str, Any] = {
        "accuracy": False,
        "train_loss_interval": 1 if tr else None,
        "test_loss_interval": k,
        "notes": notes,
    }
    if not tr:
        history["notes"].append("the file records no loss history")
        return history, []
    ncols = len(BASE_METRICS) - 1 + sum(1 for _ in model.parameters())
    nan = math.nan
    rows = [[e, tr[e]] + [nan] * (ncols - 1) for e in range(len(tr))]
    if k is not None:
        for j, loss in enumerate(te):
            rows[j * k][2] = loss
    if epoch >= len(tr) and split is not None:
        rows.append([epoch] + _row_of(model, split, task))
        history["notes"].append(
            f"epoch {epoch} (the checkpoint) recomputed from the weights: losses, accuracies, "
            "weight norms; earlier accuracies were not recorded"
        )
    history["notes"].append("accuracies not recorded: T_mem / T_grok unknown")
    return history, rows


def _row_of(model, split: Split, task: str) -> list[float]:
    """train_loss, test_loss, train_acc, test_acc, sq_total, sq_<param>... of ``model`` (float64 loss)."""
    from interp.model import all_logits
    from interp.tasks import labels

    with torch.no_grad():
        logits = all_logits(model).double()
        y = labels(task, model.cfg.p)
        lp = -logits.log_softmax(-1).gather(-1, y[:, None])[:, 0]
        right = (logits.argmax(-1) == y).double()
        sq = [float(p.detach().double().pow(2).sum()) for _, p in model.named_parameters()]
    tr, te = split.train, split.test
    return [float(lp[tr].mean()), float(lp[te].mean()), float(right[tr].mean()), float(right[te].mean()), sum(sq)] + sq


def bridge_config(cfg: ModelConfig):
    from transformer_lens.config import TransformerBridgeConfig

    return TransformerBridgeConfig(
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        n_heads=cfg.n_heads,
        n_layers=1,
        n_ctx=cfg.n_ctx,
        d_vocab=cfg.d_vocab,
        d_vocab_out=cfg.d_vocab_out,
        d_mlp=cfg.d_mlp,
        act_fn=cfg.act_fn,
        normalization_type=None,
        positional_embedding_type="standard",
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
