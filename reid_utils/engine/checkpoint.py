"""Checkpoints: one self-describing file per model, written atomically.

A checkpoint is a dict (loadable with ``torch.load(..., weights_only=True)``: only tensors,
numbers, strings, lists and dicts, so loading never runs code from the file)::

    format          "reid_utils.checkpoint/1"
    model           the model's state dict (plain module: no DDP / torch.compile prefixes)
    config          TrainConfig.to_dict()
    model_name, num_ids, attribute_form, embedding_dim, height, width
    attribute_schema  {"form", "groups": {name: [classes]}, "binary_columns": [...]}
    pid_to_label    {original person id: training label}
    epoch           epochs completed
    history         the per-epoch metrics so far
    # training state (last.pt; best.pt leaves out the optimizer, which doubles the size)
    optimizer, optimizer_kind, scheduler, grad_scaler, rng, sampler, early_stopping, loss, stopped
    digest          {"algorithm": "sha256", "value": hex} of everything above (:func:`content_digest`)

``load_model_from_checkpoint(path)`` rebuilds the model from the file alone. A checkpoint made
on a GPU loads on the CPU (``map_location="cpu"`` is the default).

Damage is refused, not loaded: :func:`load_checkpoint` recomputes the digest (every tensor's
bytes, dtype and shape, and every other value) and raises :class:`CheckpointError` when it
differs, so one flipped byte in a weight is an error instead of a silently worse model. Then it
checks the fields a model is rebuilt from (types and ranges). Checkpoints written before the
digest existed have none and still load (their fields are checked).
"""
from __future__ import annotations

import hashlib
import os
import random
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..errors import CheckpointError, ConfigError
from ..io import atomic_torch_save
from ..models import DEFAULT_ATTRIBUTE_FORM, build_model_from_config, model_kwargs, rebuild_config
from ..schema import BINARY_COLUMNS, FORMS, GROUPS
from .budget import DEFAULT_NUM_EPOCHS
from .runtime import unwrap_model

CHECKPOINT_FORMAT = "reid_utils.checkpoint/1"
DIGEST_KEY = "digest"
DIGEST_ALGORITHM = "sha256"


# ---------------------------------------------------------------------------------------------
# RNG states as plain data (weights_only-safe)


def rng_state() -> dict:
    """Python, numpy, torch (and CUDA) RNG states as tensors / lists / numbers."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state` (CUDA states only when the same GPUs are present)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


# ---------------------------------------------------------------------------------------------
# Save / load


def attribute_schema(form: str) -> dict:
    return {
        "form": form,
        "groups": {g.name: list(g.classes) for g in GROUPS},
        "binary_columns": list(BINARY_COLUMNS),
    }


def _plain(value):
    """numpy scalars / Paths / tuples -> plain Python, recursively (weights_only-safe)."""
    if isinstance(value, dict):
        return {(k if isinstance(k, (str, int)) else str(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return str(value)
    return value


def build_checkpoint(
    model: nn.Module,
    cfg: TrainConfig,
    pid_to_label: dict[int, int],
    epoch: int = 0,
    history: dict | None = None,
    **training_state,
) -> dict:
    """The checkpoint dict (see the module docstring). ``training_state``: optimizer,
    scheduler, grad_scaler, rng, sampler, early_stopping (state dicts or plain data)."""
    module = unwrap_model(model)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "config": _plain(cfg.to_dict()),
        "model_name": cfg.model,
        "num_ids": int(module.num_ids),
        "attribute_form": module.attribute_form,
        "embedding_dim": int(module.embedding_dim),
        "height": cfg.height,
        "width": cfg.width,
        "attribute_schema": attribute_schema(module.attribute_form),
        "pid_to_label": {int(k): int(v) for k, v in pid_to_label.items()},
        "epoch": int(epoch),
        "history": _plain(history or {}),
        "torch_version": str(torch.__version__),
    }
    for key, value in training_state.items():
        ckpt[key] = value if key in ("optimizer", "grad_scaler", "rng") else _plain(value)
    return ckpt


def save_checkpoint(path: str | os.PathLike, model: nn.Module, cfg: TrainConfig, pid_to_label: dict[int, int],
                    epoch: int = 0, history: dict | None = None, **training_state) -> Path:
    """Write a checkpoint with its digest, atomically (temporary file, fsync, ``os.replace``).
    Returns the path."""
    path = Path(path)
    ckpt = build_checkpoint(model, cfg, pid_to_label, epoch, history, **training_state)
    ckpt[DIGEST_KEY] = {"algorithm": DIGEST_ALGORITHM, "value": content_digest(ckpt)}
    atomic_torch_save(ckpt, path)
    return path


# ---------------------------------------------------------------------------------------------
# Digest


def content_digest(ckpt: dict) -> str:
    """SHA-256 (hex) of everything in ``ckpt`` but its ``digest`` entry.

    Tensors contribute their dtype, shape and bytes (on the CPU, so the device they were
    loaded to does not matter); dicts their entries in sorted key order; lists and tuples their
    items; numbers, strings, booleans and None a typed encoding of their value.
    """
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in ckpt.items() if k != DIGEST_KEY})
    return digest.hexdigest()


def _feed(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"T{tensor.dtype}{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(value, dict):
        digest.update(b"D%d|" % len(value))
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(b"L%d|" % len(value))
        for item in value:
            _feed(digest, item)
    elif value is None or isinstance(value, bool):
        digest.update(f"B{value}|".encode())
    elif isinstance(value, int):
        digest.update(f"I{value}|".encode())
    elif isinstance(value, float):
        digest.update(b"F" + struct.pack("<d", value))
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        digest.update(b"S%d|" % len(data) + data)
    else:  # torch.dtype, torch.Size ... (weights_only files hold nothing else)
        digest.update(f"O{type(value).__qualname__}:{value!r}|".encode())


def _check_digest(ckpt: dict, path: Path) -> None:
    stored = ckpt.get(DIGEST_KEY)
    if stored is None:
        return  # written before digests existed
    if not (isinstance(stored, dict) and stored.get("algorithm") == DIGEST_ALGORITHM
            and isinstance(stored.get("value"), str)):
        raise CheckpointError(f"{path}: the checkpoint's digest entry is damaged ({str(stored)[:80]!r}); "
                              "the file is corrupt")
    if content_digest(ckpt) != stored["value"]:
        raise CheckpointError(
            f"{path}: the checkpoint is damaged: its content does not match the digest stored when it was saved "
            "(a changed byte in the weights or settings); restore it from a copy or retrain"
        )


def _check_fields(ckpt: dict, path: Path) -> None:
    """The fields a model is rebuilt from must have sane types and ranges (hand-edited files)."""

    def need(ok: bool, key: str, expected: str) -> None:
        if not ok:
            raise CheckpointError(f"{path}: field {key!r} is {ckpt.get(key)!r:.80}, expected {expected}")

    def integer(key: str, low: int, high: int | None = None) -> bool:
        value = ckpt.get(key)
        return isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)

    need(isinstance(ckpt["model"], dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in ckpt["model"].items()),
         "model", "a state dict of named tensors")
    need(isinstance(ckpt["config"], dict), "config", "a dict of TrainConfig fields")
    need(integer("num_ids", 1), "num_ids", "a positive number of training identities")
    need(ckpt["attribute_form"] in FORMS, "attribute_form", f"one of {', '.join(FORMS)}")
    for key in ("height", "width"):
        if key in ckpt:
            need(integer(key, 16, 8192), key, "an input size in pixels, 16-8192")
    if "embedding_dim" in ckpt:
        need(integer("embedding_dim", 1), "embedding_dim", "a positive integer")
    if "epoch" in ckpt:
        need(integer("epoch", 0), "epoch", "a number of completed epochs >= 0")
    if "model_name" in ckpt:
        need(isinstance(ckpt["model_name"], str), "model_name", "a model name")
    for key in ("history", "pid_to_label"):
        if key in ckpt:
            need(isinstance(ckpt[key], dict), key, "a dict")
    pids = ckpt.get("pid_to_label") or {}
    need(all(isinstance(k, int) and isinstance(v, int) for k, v in pids.items()), "pid_to_label",
         "integer person ids mapped to integer labels")


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` naming the file when it is missing, corrupt or truncated,
    not a reid_utils checkpoint, damaged (its digest differs) or hand-edited out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file is missing")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to parse the file means a bad file
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        first_line = next((line for line in lines if "Unsupported global" in line), lines[0])
        raise CheckpointError(
            f"{path}: cannot read the checkpoint ({first_line[:200]}); the file is corrupt, truncated, "
            "or not a checkpoint saved by reid_utils"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: not a reid_utils checkpoint (expected \"format\": \"{CHECKPOINT_FORMAT}\", found {found!r})"
        )
    missing = [k for k in ("model", "config", "num_ids", "attribute_form") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is incomplete, missing {', '.join(missing)}")
    _check_digest(ckpt, path)
    _check_fields(ckpt, path)
    return ckpt


def config_from_checkpoint(ckpt: dict, path: str | os.PathLike = "checkpoint") -> TrainConfig:
    """The TrainConfig stored in ``ckpt`` (fields unknown to this version are ignored)."""
    try:
        return TrainConfig.from_dict(ckpt["config"], strict=False)
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{path}: the stored config is invalid ({error})") from None


def input_size(ckpt: dict) -> tuple[int, int]:
    """``(height, width)`` the checkpoint's model was trained at (the one place that reads it)."""
    config = ckpt.get("config") or {}
    return int(ckpt.get("height", config.get("height", 128))), int(ckpt.get("width", config.get("width", 64)))


def load_model_from_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from the checkpoint alone and load its weights (eval mode).

    Returns ``(model, ckpt)``; ``ckpt["pid_to_label"]``, ``ckpt["config"]``,
    ``ckpt["attribute_form"]`` etc. describe it. No weights are downloaded: the backbone is
    built without ``pretrained`` and the file's weights are loaded.
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    cfg = rebuild_config(config_from_checkpoint(ckpt, path))
    model = build_model_from_config(cfg, int(ckpt["num_ids"]), ckpt["attribute_form"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as error:
        summary = str(error).strip().splitlines()
        raise CheckpointError(
            f"{path}: the weights do not fit model {cfg.model!r} rebuilt from the stored config ({summary[0][:200]} ...)"
        ) from None
    model.to(map_location if map_location is not None else "cpu")
    model.eval()
    return model, ckpt


# ---------------------------------------------------------------------------------------------
# Compatibility


def check_compatible(ckpt: dict, cfg: TrainConfig, num_ids: int | None = None, path: str | os.PathLike = "checkpoint") -> None:
    """Raise :class:`CheckpointError` saying what differs when ``ckpt`` cannot continue under
    ``cfg``: model name, model options (depth, last stride, ViT sizes ...), attribute form,
    number of identities (``num_ids``, from the current split) or input size.

    The training settings (lr, epochs, loss weights ...) are :func:`check_resumable`'s.
    """
    stored = config_from_checkpoint(ckpt, path)
    differences = []
    if stored.model != cfg.model:
        differences.append(f"model {stored.model!r} vs {cfg.model!r}")
    else:
        ours, theirs = model_kwargs(stored), model_kwargs(cfg)
        for key in sorted(set(ours) | set(theirs)):
            if ours.get(key) != theirs.get(key):
                differences.append(f"{key} {ours.get(key)!r} vs {theirs.get(key)!r}")
    form = cfg.attribute_form or DEFAULT_ATTRIBUTE_FORM.get(cfg.model)
    if ckpt["attribute_form"] != form:
        differences.append(f"attribute form {ckpt['attribute_form']!r} vs {form!r}")
    if num_ids is not None and int(ckpt["num_ids"]) != int(num_ids):
        differences.append(f"num_ids {ckpt['num_ids']} vs {num_ids} (a different dataset or split)")
    size = input_size(ckpt)
    if size != (cfg.height, cfg.width):
        differences.append(f"input size {size[0]}x{size[1]} vs {cfg.height}x{cfg.width}")
    if differences:
        raise CheckpointError(f"{path} does not match the config: " + "; ".join(differences) + " (checkpoint vs config)")


#: Where and how a run executes, not what it learns: these may change on resume.
RUNTIME_FIELDS = frozenset({
    "data_root", "out_dir", "split_file", "cache_images", "num_workers", "eval_batch_size", "device", "precision",
    "compile", "num_threads", "sync_bn", "resume", "progress",
})


def changed_settings(ckpt: dict, cfg: TrainConfig, path: str | os.PathLike = "checkpoint") -> list[str]:
    """What ``cfg`` changes against the run stored in ``ckpt``, one ``"lr 0.001 -> 0.0005"`` per
    training setting (:data:`RUNTIME_FIELDS` left out; without a time budget ``num_epochs=None``
    is the default number of epochs it stands for)."""
    def settings(config: TrainConfig) -> dict:
        values = config.to_dict()
        if not config.max_minutes and values["num_epochs"] is None:
            values["num_epochs"] = DEFAULT_NUM_EPOCHS
        return values

    stored, ours = settings(config_from_checkpoint(ckpt, path)), settings(cfg)
    return [f"{name} {stored[name]!r} -> {ours[name]!r}" for name in TrainConfig.field_names()
            if name not in RUNTIME_FIELDS and stored[name] != ours[name]]


def check_resumable(ckpt: dict, cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` when ``cfg`` changes a training setting of the run stored in
    ``ckpt`` (:func:`changed_settings`). Resuming continues that run as it was configured: a
    finished one would hand back its old results as the new settings', and in an unfinished one
    some settings could not take effect (the seed and batches live in the sampler's state, a
    budgeted run keeps its plan), so a changed setting is never half applied."""
    changed = changed_settings(ckpt, cfg, path)
    if changed:
        raise CheckpointError(
            f"{path}: resuming continues the run stored there as it was configured, and these settings differ: "
            f"{'; '.join(changed)}. Set resume=False (RESUME = False in the notebooks) to train anew with them in "
            f"{Path(path).parent}, or choose another output folder"
        )
