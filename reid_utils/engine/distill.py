"""Distillation targets: what trained teachers say about every training image.

A run with ``teachers="a/best.pt,b/best.pt"`` loads each teacher once, before its first step,
runs it in eval mode over the decoded training images (no augmentation, no flip) and keeps,
per image, the teachers' mean identity probabilities at ``distill_temperature`` and their mean
attribute probabilities. The loss then pulls the student towards them on every augmented
view of that image (:class:`~reid_utils.losses.MultiTaskLoss`, ``distill_weight``). The
teachers' forward passes happen inside the run, so a time budget pays for them.

A teacher must be an APR-Net-style model (``apr``, ``osnet``: identity and attribute logits
in eval mode) trained with the identity cross-entropy, on exactly this run's training identities (the same label of every
identity, so the same split), at this run's input size and attribute form. Anything else is
a :class:`~reid_utils.errors.ConfigError` naming the teacher's file.
"""
from __future__ import annotations

import torch

from ..config import TrainConfig
from ..data import normalize_batch
from ..distillation import teacher_probabilities
from ..errors import ConfigError
from .checkpoint import load_model_from_checkpoint
from .runtime import FastPath, autocast


def _check_teacher(path: str, model, ckpt: dict, cfg: TrainConfig, form: str, pid_to_label: dict[int, int]) -> None:
    if not callable(getattr(model, "logits", None)):
        raise ConfigError(f"teacher {path}: model {ckpt['config'].get('model')!r} cannot teach "
                          "(a teacher gives identity and attribute logits in eval mode: apr or osnet)")
    if getattr(model, "classifier", None) is None:
        raise ConfigError(f"teacher {path}: has no identity classifier, so no identity targets")
    if ckpt["config"].get("id_loss", "ce") != "ce":
        raise ConfigError(f"teacher {path}: trained with id_loss={ckpt['config']['id_loss']!r}; its cosine logits are "
                          "no distribution to distil (a teacher needs id_loss='ce')")
    if ckpt["attribute_form"] != form:
        raise ConfigError(f"teacher {path}: attribute form {ckpt['attribute_form']!r}, the student's is {form!r}")
    size = (ckpt["config"].get("height"), ckpt["config"].get("width"))
    if size != (cfg.height, cfg.width):
        raise ConfigError(f"teacher {path}: trained at {size[0]}x{size[1]}, the student runs at {cfg.height}x{cfg.width}")
    if {int(k): int(v) for k, v in ckpt["pid_to_label"].items()} != pid_to_label:
        raise ConfigError(f"teacher {path}: trained on other identities (or another split) than this run's "
                          f"{len(pid_to_label)}; a teacher must share the student's split.json")


@torch.no_grad()
def _soft_targets(model, images: torch.Tensor, cfg: TrainConfig, form: str, fp: FastPath) -> tuple[torch.Tensor, torch.Tensor]:
    """One teacher's ``(N, num_ids)`` and ``(N, A)`` soft targets, in batches of ``cfg.eval_batch_size``."""
    ids, attributes = [], []
    for start in range(0, len(images), cfg.eval_batch_size):
        batch = normalize_batch(images[start : start + cfg.eval_batch_size].to(fp.device))
        with autocast(fp):
            id_logits, attribute_logits = model.logits(batch.contiguous(memory_format=fp.memory_format))
        p_ids, p_attributes = teacher_probabilities(id_logits, attribute_logits, form, cfg.distill_temperature)
        ids.append(p_ids)
        attributes.append(p_attributes)
    return torch.cat(ids), torch.cat(attributes)


def teacher_targets(
    cfg: TrainConfig, images: torch.Tensor, pid_to_label: dict[int, int], form: str, fp: FastPath
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teachers' mean soft targets for ``images``.

    Args:
        images: ``uint8 (N, 3, H, W)``, the training images in dataset order.
        pid_to_label: the run's identity -> label mapping (the teachers' must be the same).
        form: the student's attribute form.

    Returns:
        ``(N, num_ids)`` identity probabilities at ``cfg.distill_temperature`` and ``(N, A)``
        attribute probabilities, both on ``fp.device``.
    """
    per_teacher = []
    for path in cfg.teacher_paths:
        model, ckpt = load_model_from_checkpoint(path, map_location=fp.device)
        _check_teacher(path, model, ckpt, cfg, form, pid_to_label)
        per_teacher.append(_soft_targets(fp.prepare(model), images, cfg, form, fp))
    ids, attributes = zip(*per_teacher)
    return torch.stack(ids).mean(dim=0), torch.stack(attributes).mean(dim=0)
