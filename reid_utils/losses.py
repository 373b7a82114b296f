"""Losses for identity, metric and attribute learning, and the multi-task combination.

Identity
    * :func:`identity_cross_entropy`: cross-entropy with label smoothing (Szegedy et al. 2016),
      target distribution ``(1 - eps) * onehot + eps / C``.
    * :class:`AMSoftmaxLoss`: additive-margin softmax (Wang et al. 2018) on cosine logits,
      ``CE(s * (cos - m * onehot), y)``.

Metric
    * :func:`batch_hard_triplet_loss` / :class:`TripletLoss`: batch-hard triplet (Hermans et al.
      2017) on Euclidean distances, with a margin or soft margin (softplus).
    * :class:`CenterLoss`: learnable class centres (Wen et al. 2016).

Attributes (targets are always the ``(B, 12)`` groups form, ``-1`` = unknown and ignored)
    * :func:`grouped_cross_entropy`: a softmax cross-entropy per group over ``(B, 41)`` logits
      (APR-Net), optionally class-weighted.
    * :func:`weighted_bce`: BCE over the ``(B, 30)`` binary form with per-column positive and
      negative weights; :func:`exp_weights` (DeepMAR / ALM) and :func:`frequency_weights`
      (in :mod:`reid_utils.attribute_weights`, imported here).
    * :func:`positive_ratios`: the ``(30,)`` positive ratio of every binary column.

Multi-task
    * :class:`MultiTaskLoss`: ``alpha * L_attr + (1 - alpha) * L_id + triplet_weight * L_tri
      + center_weight * L_center + distill_weight * L_distill`` (:mod:`reid_utils.distillation`),
      reporting each component.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .attribute_weights import exp_weights, frequency_weights, group_class_weights
from .distillation import distillation_loss
from .errors import ConfigError
from .schema import (
    BINARY_COLUMN_CLASS,
    BINARY_COLUMN_GROUP,
    GROUP_SLICES,
    NUM_BINARY,
    NUM_GROUP_LOGITS,
    NUM_GROUPS,
    check_form,
)

ID_LOSSES = ("ce", "amsoftmax")
PART_NAMES = ("id", "attribute", "triplet", "center", "distill", "total")  # MultiTaskLoss.terms order
LOSS_PARTS = PART_NAMES[:-1]  # the loss components, without "total" (their weighted sum)
ATTRIBUTE_WEIGHTINGS = ("none", "exp", "frequency")



def _zero(like: torch.Tensor) -> torch.Tensor:
    """A zero loss still attached to ``like``'s graph (so ``backward`` works)."""
    return like.sum() * 0.0


# ---------------------------------------------------------------------------------------------
# Identity losses


def fp32(like: torch.Tensor):
    """Autocast off for the enclosed computation: the losses that overflow in fp16 (AM-Softmax's
    scaled cosines, the triplet and center distances) run in fp32 whatever the fast path.
    (Only CUDA and the CPU autocast here; older torch refuses an autocast context on MPS.)"""
    if like.device.type not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=like.device.type, enabled=False)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is True, 0 when it is nowhere True. No host-device
    synchronisation (no ``if`` on a tensor), so the training loop never waits for the GPU."""
    kept = torch.where(mask, values, torch.zeros_like(values))
    return kept.sum() / mask.sum().clamp_min(1)


def identity_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    """Cross-entropy with label smoothing, averaged over rows with ``label >= 0``.

    Args:
        logits: ``(B, C)`` identity logits.
        labels: ``(B,)`` int64 labels in ``0..C-1``; negative labels (unknown identity) are ignored.
        label_smoothing: ``eps``; the target distribution is ``(1 - eps) * onehot + eps / C``.
    Returns:
        scalar tensor (0 when no row has a label).
    """
    valid = labels >= 0
    with fp32(logits):
        per_row = F.cross_entropy(logits.float(), labels.clamp_min(0), label_smoothing=label_smoothing, reduction="none")
        return _masked_mean(per_row, valid)


class AMSoftmaxLoss(nn.Module):
    """Additive-margin softmax: ``CE(s * (cos - m * onehot(y)), y)``.

    ``forward(cos_logits (B, C) in [-1, 1], labels (B,)) -> scalar``. The logits must be cosine
    similarities (a model built with ``classifier="cosine"``). Negative labels are ignored.
    """

    def __init__(self, scale: float = 30.0, margin: float = 0.35, label_smoothing: float = 0.0):
        super().__init__()
        self.scale = scale
        self.margin = margin
        self.label_smoothing = label_smoothing

    def forward(self, cos_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        valid = labels >= 0
        with fp32(cos_logits):  # s * cos with s = 30 overflows fp16's exp
            cos_logits, labels = cos_logits.float(), labels.clamp_min(0)
            onehot = F.one_hot(labels, cos_logits.shape[1]).to(cos_logits.dtype)  # (B, C)
            logits = self.scale * (cos_logits - self.margin * onehot)
            per_row = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing, reduction="none")
            return _masked_mean(per_row, valid)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, margin={self.margin}"


# ---------------------------------------------------------------------------------------------
# Metric losses


def pairwise_euclidean(features: torch.Tensor) -> torch.Tensor:
    """``(B, D)`` -> ``(B, B)`` Euclidean distances, gradient-safe at zero distance."""
    sq = features.pow(2).sum(dim=1)  # (B,)
    d2 = sq[:, None] + sq[None, :] - 2.0 * features @ features.t()
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet_loss(features: torch.Tensor, pids: torch.Tensor, margin: float | None = 0.3) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017), vectorised.

    For each anchor ``a``: ``d_ap = max`` Euclidean distance to another sample of the same pid,
    ``d_an = min`` distance to a sample of another pid; the loss is
    ``mean_a relu(d_ap - d_an + margin)`` or, with ``margin=None``, the soft margin
    ``mean_a softplus(d_ap - d_an)``. Anchors without another positive or without any negative
    are left out of the mean (a PK batch with K >= 2 has none of those).

    Args:
        features: ``(B, D)`` embeddings (not normalised here).
        pids: ``(B,)`` identity labels.
    Returns:
        scalar tensor (0 when no anchor is valid).
    """
    with fp32(features):  # squared distances overflow fp16
        dist = pairwise_euclidean(features.float())  # (B, B)
        same = pids[:, None] == pids[None, :]
        eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
        pos_mask, neg_mask = same & ~eye, ~same
        valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)  # (B,)
        inf = torch.tensor(float("inf"), device=dist.device)
        dist_ap = torch.where(pos_mask, dist, -inf).max(dim=1).values  # (B,), -inf without a positive
        dist_an = torch.where(neg_mask, dist, inf).min(dim=1).values  # (B,), inf without a negative
        gap = torch.where(valid, dist_ap - dist_an, torch.zeros_like(dist_ap))
        per_anchor = F.softplus(gap) if margin is None else F.relu(gap + margin)
        return _masked_mean(per_anchor, valid)


class TripletLoss(nn.Module):
    """Module wrapper of :func:`batch_hard_triplet_loss` (``margin=None`` -> soft margin)."""

    def __init__(self, margin: float | None = 0.3):
        super().__init__()
        self.margin = margin

    def forward(self, features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        return batch_hard_triplet_loss(features, pids, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class CenterLoss(nn.Module):
    """Center loss (Wen et al. 2016) with learnable centres ``(num_ids, feat_dim)``.

    ``forward(features (B, D), pids (B,)) -> mean_i ||x_i - c_{y_i}||^2`` over rows with
    ``pid >= 0`` (no 1/2 factor, as in reid-strong-baseline, so its weight ~5e-4 carries over).
    The centres are parameters: give this module's parameters to the optimizer.
    """

    def __init__(self, num_ids: int, feat_dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_ids, feat_dim))

    def forward(self, features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        valid = pids >= 0
        with fp32(features):
            diff = features.float() - self.centers[pids.clamp_min(0)]  # (B, D)
            return _masked_mean(diff.pow(2).sum(dim=1), valid)


# ---------------------------------------------------------------------------------------------
# Attribute losses


def binary_targets(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 12)`` groups-form targets (``-1`` unknown) -> ``(B, 30)`` float 0/1 targets and mask.

    Same columns as :func:`reid_utils.schema.groups_to_binary`; a column is masked out
    (``mask=False``) when its group's target is ``-1``.
    """
    cols = torch.tensor(BINARY_COLUMN_GROUP, device=groups.device)
    classes = torch.tensor(BINARY_COLUMN_CLASS, device=groups.device)
    per_column = groups.long()[:, cols]  # (B, 30)
    return (per_column == classes).float(), per_column >= 0


def positive_ratios(groups_targets: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Positive ratio ``a_j`` of each of the 30 binary columns over the rows that know it.

    Args:
        groups_targets: ``(N, 12)`` groups-form targets (training set), ``-1`` = unknown.
    Returns:
        ``(30,)`` float32 tensor; a column with no known row gets 0.
    """
    groups = torch.as_tensor(np.asarray(groups_targets), dtype=torch.long)
    targets, mask = binary_targets(groups)
    counts = mask.sum(dim=0).clamp_min(1)
    return ((targets * mask).sum(dim=0) / counts).float()


def grouped_cross_entropy(
    logits: torch.Tensor, groups_targets: torch.Tensor, class_weights: Sequence[torch.Tensor] | None = None
) -> torch.Tensor:
    """Softmax cross-entropy per attribute group, averaged over the known (row, group) entries.

    ``L = sum_{i,g known} w_g[y_ig] * CE(logits_i[GROUP_SLICES[g]], y_ig) / #known``. With every
    target known and no weights this is ``(1/12) sum_g mean_i CE_g`` (APR-Net's ``1/M sum``).

    Args:
        logits: ``(B, 41)`` groups-form logits.
        groups_targets: ``(B, 12)`` int64 class indices, ``-1`` = unknown (ignored).
        class_weights: optional 12 ``(C_g,)`` weights (:func:`group_class_weights`).
    """
    if logits.shape[-1] != NUM_GROUP_LOGITS:
        raise ValueError(f"groups-form attribute logits must have {NUM_GROUP_LOGITS} columns, got {tuple(logits.shape)}")
    logits, groups_targets = logits.float(), groups_targets.long()
    total, count = _zero(logits), 0
    for g, sl in enumerate(GROUP_SLICES):
        known = groups_targets[:, g] >= 0  # (B,)
        y = groups_targets[:, g].clamp_min(0)
        ce = F.cross_entropy(logits[:, sl], y, reduction="none")  # (B,)
        if class_weights is not None:
            ce = ce * class_weights[g].to(ce.device)[y]
        total = total + torch.where(known, ce, torch.zeros_like(ce)).sum()
        count = count + known.sum()
    return total / count.clamp_min(1)


def weighted_bce(
    logits: torch.Tensor,
    groups_targets: torch.Tensor,
    pos_weights: torch.Tensor | None = None,
    neg_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted sigmoid cross-entropy over the 30 binary columns, mean over known entries.

    ``L = -sum_{i,j known} [w+_j y_ij log s(x_ij) + w-_j (1 - y_ij) log(1 - s(x_ij))] / #known``
    (weights 1 when not given). Entries whose group target is ``-1`` are ignored.

    Args:
        logits: ``(B, 30)`` binary-form logits.
        groups_targets: ``(B, 12)`` groups-form targets, converted with :func:`binary_targets`.
        pos_weights, neg_weights: ``(30,)`` (:func:`exp_weights` or :func:`frequency_weights`).
    """
    if logits.shape[-1] != NUM_BINARY:
        raise ValueError(f"binary-form attribute logits must have {NUM_BINARY} columns, got {tuple(logits.shape)}")
    logits = logits.float()
    targets, mask = binary_targets(groups_targets)
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # (B, 30)
    if pos_weights is not None:
        w = targets * pos_weights.to(logits.device) + (1 - targets) * neg_weights.to(logits.device)
        loss = loss * w
    return (loss * mask).sum() / mask.sum().clamp_min(1)


# ---------------------------------------------------------------------------------------------
# Multi-task loss


class MultiTaskLoss(nn.Module):
    """``total = alpha*L_attr + (1-alpha)*L_id + triplet_weight*L_tri + center_weight*L_center
    + distill_weight*L_distill``.

    Args:
        alpha: attribute weight in [0, 1].
        attribute_form: ``"groups"`` (grouped CE over 41 logits) or ``"binary"`` (BCE over 30).
        id_loss: ``"ce"`` (label-smoothed CE) or ``"amsoftmax"`` (needs cosine logits).
        label_smoothing: eps of the CE identity loss.
        am_scale, am_margin: AM-Softmax ``s`` and ``m``.
        triplet_weight, triplet_margin: batch-hard triplet on ``outputs["features"]``
            (``triplet_margin=None`` -> soft margin); off when the weight is 0.
        center_weight, num_ids, feat_dim: center loss (learnable centres, so give this module's
            parameters to the optimizer); off when the weight is 0.
        attribute_weighting: ``"none"``, ``"exp"`` (DeepMAR / ALM, :func:`exp_weights`) or
            ``"frequency"`` (:func:`frequency_weights`); the groups form uses the matching
            :func:`group_class_weights`. Needs ``positive_ratios``.
        positive_ratios: ``(30,)`` training-set ratios from :func:`positive_ratios`.
        distill_weight, distill_temperature: the soft-target term ``L_distill = (1-alpha) *
            distillation_kl(id_logits, teacher ids, T) + alpha * attribute_distillation(...)``
            against the targets given to :meth:`set_teacher_targets`; off when the weight is 0.

    ``forward(outputs, pids, attributes, index=None) -> (total, parts)``:
        * ``outputs["id_logits"]``: ``(B, num_ids)``, a list of them (part classifiers: the mean
          of the part losses), or absent/None (attribute-only: ``L_id = 0``).
        * ``outputs["attribute_logits"]``: ``(B, A)`` or a list of them (ALM deep supervision:
          the SUM of the branch losses, as in the paper), or absent/None (``L_attr = 0``).
        * ``outputs["features"]``: ``(B, D)``, needed by triplet and center terms.
        * ``pids``: ``(B,)`` int64 training labels (negative = unknown, ignored by the id and
          center losses); ``attributes``: ``(B, 12)`` groups form, ``-1`` ignored.
        * ``index``: ``(B,)`` rows of the teacher targets (the batch's training-set indices),
          needed by the distillation term.
        * ``parts``: floats ``"id"``, ``"attribute"``, ``"triplet"``, ``"center"``, ``"distill"``, ``"total"``
          (unweighted components; disabled ones are 0). A component whose weight is 0 is
          reported but not added, so it sends no gradient.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        attribute_form: str = "groups",
        id_loss: str = "ce",
        label_smoothing: float = 0.1,
        am_scale: float = 30.0,
        am_margin: float = 0.35,
        triplet_weight: float = 0.0,
        triplet_margin: float | None = 0.3,
        center_weight: float = 0.0,
        num_ids: int | None = None,
        feat_dim: int | None = None,
        attribute_weighting: str = "none",
        positive_ratios: torch.Tensor | Sequence[float] | None = None,
        distill_weight: float = 0.0,
        distill_temperature: float = 4.0,
    ):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {alpha}")
        check_form(attribute_form)
        if id_loss not in ID_LOSSES:
            raise ConfigError(f"id_loss must be one of {ID_LOSSES}, got {id_loss!r}")
        if attribute_weighting not in ATTRIBUTE_WEIGHTINGS:
            raise ConfigError(f"attribute_weighting must be one of {ATTRIBUTE_WEIGHTINGS}, got {attribute_weighting!r}")
        if triplet_weight < 0 or center_weight < 0 or distill_weight < 0:
            raise ConfigError(f"loss weights must be >= 0, got triplet_weight={triplet_weight}, "
                              f"center_weight={center_weight}, distill_weight={distill_weight}")
        if distill_temperature <= 0:
            raise ConfigError(f"distill_temperature must be > 0, got {distill_temperature}")
        self.alpha = alpha
        self.attribute_form = attribute_form
        self.id_loss = id_loss
        self.label_smoothing = label_smoothing
        self.am_softmax = AMSoftmaxLoss(am_scale, am_margin)
        self.triplet_weight = triplet_weight
        self.triplet_margin = triplet_margin
        self.center_weight = center_weight
        self.center_loss = None
        if center_weight > 0:
            if not num_ids or not feat_dim:
                raise ConfigError(f"center_weight={center_weight} needs num_ids and feat_dim, got {num_ids} and {feat_dim}")
            self.center_loss = CenterLoss(num_ids, feat_dim)
        self.attribute_weighting = attribute_weighting
        if attribute_weighting != "none":
            if positive_ratios is None:
                raise ConfigError(f"attribute_weighting={attribute_weighting!r} needs positive_ratios (30 training-set ratios)")
            ratios = torch.as_tensor(positive_ratios, dtype=torch.float32)
            if ratios.shape != (NUM_BINARY,):
                raise ConfigError(f"positive_ratios must have shape ({NUM_BINARY},), got {tuple(ratios.shape)}")
            pos, neg = (exp_weights if attribute_weighting == "exp" else frequency_weights)(ratios)
            self.register_buffer("pos_weights", pos)
            self.register_buffer("neg_weights", neg)
            for g, w in enumerate(group_class_weights(ratios, attribute_weighting)):
                self.register_buffer(f"class_weights_{g}", w)
        else:
            self.register_buffer("pos_weights", None)
            self.register_buffer("neg_weights", None)
        self.distill_weight, self.distill_temperature = distill_weight, distill_temperature
        # recomputed from the teachers by every run: not part of the checkpoint
        self.register_buffer("teacher_id_probs", None, persistent=False)
        self.register_buffer("teacher_attribute_probs", None, persistent=False)

    def set_teacher_targets(self, id_probs: torch.Tensor | None, attribute_probs: torch.Tensor) -> None:
        """The distillation targets of every training image, rows in dataset order:
        ``(N, num_ids)`` identity probabilities at ``distill_temperature`` (or None) and
        ``(N, A)`` attribute probabilities (:func:`teacher_probabilities`), on the loss's device."""
        self.teacher_id_probs = None if id_probs is None else id_probs.float()
        self.teacher_attribute_probs = attribute_probs.float()

    # -- components -------------------------------------------------------------------------
    def _id_term(self, logits: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        if self.id_loss == "amsoftmax":
            return self.am_softmax(logits, pids)
        return identity_cross_entropy(logits, pids, self.label_smoothing)

    def _attribute_term(self, logits: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
        if self.attribute_form == "binary":
            return weighted_bce(logits, attributes, self.pos_weights, self.neg_weights)
        weights = None
        if self.attribute_weighting != "none":
            weights = [getattr(self, f"class_weights_{g}") for g in range(NUM_GROUPS)]
        return grouped_cross_entropy(logits, attributes, weights)

    def terms(
        self, outputs: dict, pids: torch.Tensor, attributes: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(total, (6,) detached tensor of the parts in PART_NAMES order)``, on the device:
        the training loop sums them there and reads them once per log step."""
        id_logits = outputs.get("id_logits")
        attribute_logits = outputs.get("attribute_logits")
        features = outputs.get("features")
        anchor = next(t for t in (features, id_logits, attribute_logits) if t is not None)
        anchor = anchor[0] if isinstance(anchor, (list, tuple)) else anchor
        zero = anchor.new_zeros((), dtype=torch.float32)

        l_id = zero
        if id_logits is not None:
            parts = id_logits if isinstance(id_logits, (list, tuple)) else [id_logits]
            l_id = sum(self._id_term(p, pids) for p in parts) / len(parts)
        l_attr = zero
        if attribute_logits is not None:
            branches = attribute_logits if isinstance(attribute_logits, (list, tuple)) else [attribute_logits]
            l_attr = sum(self._attribute_term(b, attributes) for b in branches)
        l_tri = zero
        if self.triplet_weight > 0:
            if features is None:
                raise ValueError("triplet_weight > 0 needs outputs['features'] (B, D)")
            l_tri = batch_hard_triplet_loss(features, pids, self.triplet_margin)
        l_center = zero
        if self.center_loss is not None:
            if features is None:
                raise ValueError("center_weight > 0 needs outputs['features'] (B, D)")
            l_center = self.center_loss(features, pids)
        l_distill = zero
        if self.distill_weight > 0:
            if index is None or self.teacher_attribute_probs is None:
                raise ValueError("distill_weight > 0 needs set_teacher_targets() and the batch's training-set indices")
            l_distill = distillation_loss(
                id_logits, attribute_logits, self.teacher_id_probs, self.teacher_attribute_probs, index, self.alpha,
                self.distill_temperature, self.attribute_form, zero)

        total = zero
        for weight, term in (
            (self.alpha, l_attr),
            (1.0 - self.alpha, l_id),
            (self.triplet_weight, l_tri),
            (self.center_weight, l_center),
            (self.distill_weight, l_distill),
        ):
            if weight > 0:
                total = total + weight * term
        return total, torch.stack([l_id, l_attr, l_tri, l_center, l_distill, total]).detach().float()

    def forward(
        self, outputs: dict, pids: torch.Tensor, attributes: torch.Tensor, index: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        total, terms = self.terms(outputs, pids, attributes, index)
        return total, dict(zip(PART_NAMES, terms.cpu().tolist()))

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, attribute_form={self.attribute_form!r}, id_loss={self.id_loss!r}, "
            f"triplet_weight={self.triplet_weight}, center_weight={self.center_weight}, "
            f"attribute_weighting={self.attribute_weighting!r}, distill_weight={self.distill_weight}"
        )
