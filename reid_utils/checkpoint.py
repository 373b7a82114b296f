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

``load_model_from_checkpoint(path)`` rebuilds the model from the file alone. A checkpoint made
on a GPU loads on the CPU (``map_location="cpu"`` is the default).
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import TrainConfig, model_kwargs
from .data.schema import BINARY_COLUMNS, GROUPS
from .errors import CheckpointError, ConfigError
from .io import atomic_torch_save
from .runtime import unwrap_model

CHECKPOINT_FORMAT = "reid_utils.checkpoint/1"


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
    """Write a checkpoint atomically (temporary file, fsync, ``os.replace``). Returns the path."""
    path = Path(path)
    atomic_torch_save(build_checkpoint(model, cfg, pid_to_label, epoch, history, **training_state), path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` naming the file when it is missing, corrupt or truncated,
    or not a reid_utils checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file is missing")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError,
            KeyError, AttributeError, ImportError, TypeError) as error:
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
    return ckpt


def config_from_checkpoint(ckpt: dict, path: str | os.PathLike = "checkpoint") -> TrainConfig:
    """The TrainConfig stored in ``ckpt`` (fields unknown to this version are ignored)."""
    try:
        return TrainConfig.from_dict(ckpt["config"], strict=False)
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{path}: the stored config is invalid ({error})") from None


def build_model_for(cfg: TrainConfig, num_ids: int, attribute_form: str | None = None) -> nn.Module:
    """``build_model`` with the config's model options (the one place that maps config -> model)."""
    from .models import build_model

    return build_model(
        cfg.model,
        num_ids=num_ids,
        attribute_form=attribute_form if attribute_form is not None else cfg.attribute_form,
        pretrained=cfg.pretrained,
        weights_path=cfg.weights_path,
        **model_kwargs(cfg),
    )


def load_model_from_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from the checkpoint alone and load its weights (eval mode).

    Returns ``(model, ckpt)``; ``ckpt["pid_to_label"]``, ``ckpt["config"]``,
    ``ckpt["attribute_form"]`` etc. describe it. No weights are downloaded: the backbone is
    built without ``pretrained`` and the file's weights are loaded.
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    cfg = config_from_checkpoint(ckpt, path)
    if cfg.model == "la_transformer" and (cfg.pretrained or cfg.weights_path):
        # ViT-B/16 sizes were implied by the pretrained weights; state them for the rebuild
        cfg = cfg.replace(vit_embed_dim=cfg.vit_embed_dim or 768, vit_depth=cfg.vit_depth or 12,
                          vit_heads=cfg.vit_heads or 12)
    cfg = cfg.replace(pretrained=False, weights_path=None)
    model = build_model_for(cfg, int(ckpt["num_ids"]), ckpt["attribute_form"])
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

    Training hyperparameters (lr, epochs, loss weights ...) may differ: they are allowed to
    change on resume.
    """
    from .models import DEFAULT_ATTRIBUTE_FORM

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
    size = (ckpt.get("height", stored.height), ckpt.get("width", stored.width))
    if size != (cfg.height, cfg.width):
        differences.append(f"input size {size[0]}x{size[1]} vs {cfg.height}x{cfg.width}")
    if differences:
        raise CheckpointError(f"{path} does not match the config: " + "; ".join(differences) + " (checkpoint vs config)")
