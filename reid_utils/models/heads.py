"""Heads shared by the models: BN-neck, identity classifiers (linear / cosine), attribute head.

:class:`MultiTaskHead` combines them into the reid-strong-baseline head used by ``resnet50``,
``convhead``, ``self_attention`` and ``cbam``: a pooled feature goes through a BN-neck; the
feature *before* BN feeds the metric losses, the feature *after* BN feeds the identity
classifier, the attribute head and retrieval.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..schema import num_attribute_logits

CLASSIFIERS = ("linear", "cosine")


class BNNeck(nn.Module):
    """BatchNorm1d with a frozen zero bias (Luo et al., "Bag of Tricks", 2019).

    ``(B, D) -> (B, D)``. The bias is frozen so the BN output stays centred for the
    classifier while the pre-BN feature carries the triplet loss.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


class LinearClassifier(nn.Module):
    """Bias-free linear identity classifier: ``(B, D) -> (B, num_ids)`` logits."""

    def __init__(self, in_dim: int, num_ids: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, num_ids, bias=False)
        nn.init.normal_(self.fc.weight, std=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class CosineClassifier(nn.Module):
    """Cosine-similarity classifier for AM-Softmax: ``(B, D) -> (B, num_ids)`` in ``[-1, 1]``.

    ``logits[b, j] = cos(x_b, w_j)``; the loss applies the scale ``s`` and margin ``m``.
    """

    def __init__(self, in_dim: int, num_ids: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_ids, in_dim))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


def build_classifier(kind: str, in_dim: int, num_ids: int) -> nn.Module | None:
    """``"linear"`` or ``"cosine"`` identity classifier; None when ``num_ids == 0``."""
    if kind not in CLASSIFIERS:
        raise ConfigError(f"classifier must be one of {CLASSIFIERS}, got {kind!r}")
    if num_ids == 0:
        return None
    return LinearClassifier(in_dim, num_ids) if kind == "linear" else CosineClassifier(in_dim, num_ids)


class AttributeHead(nn.Module):
    """Dropout + linear layer giving ``num_attribute_logits(form)`` logits: ``(B, D) -> (B, A)``.

    For the groups form one ``Linear(D, 41)`` is the 12 per-group classifiers side by side
    (group ``g`` owns columns ``GROUP_SLICES[g]``).
    """

    def __init__(self, in_dim: int, attribute_form: str, dropout: float = 0.0):
        super().__init__()
        self.attribute_form = attribute_form
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, num_attribute_logits(attribute_form))
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(x))


class MultiTaskHead(nn.Module):
    """BN-neck, identity classifier and attribute head on a pooled feature.

    ``forward(feat)`` with ``feat`` ``(B, D)``:
    * train mode: ``{"features": feat (B, D) before BN, "id_logits": (B, num_ids) or None,
      "attribute_logits": (B, A)}``;
    * eval mode: ``{"embedding": (B, D) after BN, "attribute_logits": (B, A)}``.
    """

    def __init__(self, in_dim: int, num_ids: int, attribute_form: str, classifier: str = "linear", dropout: float = 0.0):
        super().__init__()
        self.neck = BNNeck(in_dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = build_classifier(classifier, in_dim, num_ids)
        self.attribute_head = AttributeHead(in_dim, attribute_form, dropout)

    def forward(self, feat: torch.Tensor) -> dict:
        bn_feat = self.neck(feat)  # (B, D)
        attribute_logits = self.attribute_head(bn_feat)  # (B, A)
        if not self.training:
            return {"embedding": bn_feat, "attribute_logits": attribute_logits}
        id_logits = self.classifier(self.dropout(bn_feat)) if self.classifier is not None else None
        return {"features": feat, "id_logits": id_logits, "attribute_logits": attribute_logits}
