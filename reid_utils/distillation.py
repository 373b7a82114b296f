"""Distillation (Hinton et al. 2015): a student pulled towards its teachers' soft targets.

* :func:`teacher_probabilities`: a teacher's soft targets, identities at a temperature,
  attributes as probabilities;
* :func:`distillation_kl`: ``T^2 * KL(teacher || softmax(student / T))``;
  :func:`attribute_distillation`: the same per attribute group (or per binary column);
* :func:`distillation_loss`: both for a batch, the term ``MultiTaskLoss`` adds with
  ``distill_weight``.

Where the targets come from (the teachers' passes over the training images):
:mod:`reid_utils.engine.distill`. Every input is cast to float32 first; nothing here is on an
autocast's lower-precision list, so it runs in fp32 under any autocast.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .schema import GROUP_SLICES, NUM_GROUPS, check_form


def teacher_probabilities(
    id_logits: torch.Tensor | None, attribute_logits: torch.Tensor, attribute_form: str, temperature: float
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """A teacher's soft targets: ``softmax(id_logits / T)`` ``(B, num_ids)`` (None without
    identity logits) and its attribute probabilities ``(B, A)`` at ``T = 1``: a softmax per
    group (groups form) or a sigmoid per column (binary form)."""
    check_form(attribute_form)
    ids = None if id_logits is None else F.softmax(id_logits.float() / temperature, dim=1)
    attribute_logits = attribute_logits.float()
    if attribute_form == "binary":
        return ids, attribute_logits.sigmoid()
    return ids, torch.cat([F.softmax(attribute_logits[:, sl], dim=1) for sl in GROUP_SLICES], dim=1)


def distillation_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``T^2 * mean_i KL(p_i || softmax(s_i / T))``: the soft-target loss of Hinton et al.

    The ``T^2`` keeps its gradients on the scale of a hard cross-entropy's whatever ``T``.

    Args:
        student_logits: ``(B, C)``.
        teacher_probs: ``(B, C)`` rows summing to 1 (the teacher's softmax at the same ``T``).
    """
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    p = teacher_probs.float()
    kl = (torch.special.xlogy(p, p) - p * log_q).sum(dim=1)  # (B,); 0 log 0 = 0
    return temperature**2 * kl.mean()


def attribute_distillation(student_logits: torch.Tensor, teacher_probs: torch.Tensor, attribute_form: str) -> torch.Tensor:
    """The attribute soft-target loss at ``T = 1``: groups form, the mean over the 12 groups of
    :func:`distillation_kl`; binary form, the mean Bernoulli KL over the rows and 30 columns."""
    check_form(attribute_form)
    if attribute_form == "groups":
        return sum(distillation_kl(student_logits[:, sl], teacher_probs[:, sl]) for sl in GROUP_SLICES) / NUM_GROUPS
    p = teacher_probs.float()
    cross = F.binary_cross_entropy_with_logits(student_logits.float(), p, reduction="none")  # -p log q - (1-p) log(1-q)
    entropy = -(torch.special.xlogy(p, p) + torch.special.xlogy(1 - p, 1 - p))
    return (cross - entropy).mean()


def distillation_loss(
    id_logits, attribute_logits, id_targets: torch.Tensor | None, attribute_targets: torch.Tensor, index: torch.Tensor,
    alpha: float, temperature: float, attribute_form: str, zero: torch.Tensor,
) -> torch.Tensor:
    """``(1 - alpha) * distillation_kl(ids, T) + alpha * attribute_distillation`` for one batch.

    Args:
        id_logits, attribute_logits: the student's, each a tensor, a list of them (part
            classifiers, deep supervision: the mean over the list) or None (term 0).
        id_targets: ``(N, num_ids)`` identity probabilities at ``temperature`` for the whole
            training set (or None); ``attribute_targets``: ``(N, A)``.
        index: ``(B,)`` the batch's rows in those targets.
        zero: a zero attached to the graph, for the terms that are off.
    """
    l_id = l_attr = zero
    if id_logits is not None and id_targets is not None:
        target = id_targets.index_select(0, index)
        parts = id_logits if isinstance(id_logits, (list, tuple)) else [id_logits]
        l_id = sum(distillation_kl(p, target, temperature) for p in parts) / len(parts)
    if attribute_logits is not None:
        target = attribute_targets.index_select(0, index)
        branches = attribute_logits if isinstance(attribute_logits, (list, tuple)) else [attribute_logits]
        l_attr = sum(attribute_distillation(b, target, attribute_form) for b in branches) / len(branches)
    return (1.0 - alpha) * l_id + alpha * l_attr
