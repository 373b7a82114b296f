"""Multi-task ResNet models: ``resnet50`` (baseline), ``convhead`` and ``self_attention``.

All three are a ResNet trunk, an optional block on the last feature map *before* pooling,
global average pooling and the :class:`~reid_utils.models.heads.MultiTaskHead` (BN-neck,
identity classifier, attribute head):

* ``resnet50``: nothing before pooling (reid-strong-baseline with attribute heads);
* ``convhead``: :class:`ConvHead`, two conv-BN-ReLU blocks (1x1 reduction, then 3x3);
* ``self_attention``: :class:`SpatialSelfAttention`, multi-head self-attention over the
  ``h*w`` spatial tokens with a learned positional embedding, layer norm and a residual.

Forward contract (shapes for depth 50, last stride 1, 256x128 input):

* train: ``{"features": (B, D) pooled feature before BN (triplet / center loss),
  "id_logits": (B, num_ids) or None when num_ids == 0, "attribute_logits": (B, A)}``;
* eval: ``{"embedding": (B, D) after the BN-neck, "attribute_logits": (B, A)}``;

with ``D = 2048`` (512 for depth 18/34; ``head_channels`` for ``convhead``) and ``A`` 41
(groups form) or 30 (binary form).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import ResNetTrunk, build_resnet
from .heads import MultiTaskHead


class ConvHead(nn.Module):
    """Two conv-BN-ReLU blocks: 1x1 ``C -> head_channels``, then 3x3 ``head_channels -> head_channels``.

    ``(B, C, h, w) -> (B, head_channels, h, w)``.
    """

    def __init__(self, in_channels: int, head_channels: int = 512):
        super().__init__()
        self.out_channels = head_channels
        self.block1 = nn.Sequential(
            nn.Conv2d(in_channels, head_channels, 1, bias=False), nn.BatchNorm2d(head_channels), nn.ReLU(inplace=True)
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(head_channels, head_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(head_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x))


class SpatialSelfAttention(nn.Module):
    """Pre-norm multi-head self-attention over the spatial tokens of a feature map.

    ``(B, C, h, w) -> (B, C, h, w)``: tokens ``t = x + pos`` (B, h*w, C), then
    ``t + MHSA(LayerNorm(t))``. The learned positional embedding lives on a ``pos_grid``
    (16x8: the layer4 map of a 256x128 image with last stride 1) and is bilinearly resized to
    other map sizes. The attention output projection starts at zero, so the block starts as
    the identity and cannot spoil a pretrained trunk.
    """

    def __init__(self, channels: int, num_heads: int = 8, dropout: float = 0.0, pos_grid: tuple[int, int] = (16, 8)):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the channels ({channels})")
        self.out_channels = channels
        self.pos_embedding = nn.Parameter(torch.zeros(1, channels, *pos_grid))
        nn.init.trunc_normal_(self.pos_embedding, std=0.02)
        self.norm = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, num_heads, dropout=dropout, batch_first=True)
        nn.init.zeros_(self.attention.out_proj.weight)
        nn.init.zeros_(self.attention.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        pos = self.pos_embedding
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        tokens = (x + pos).flatten(2).transpose(1, 2)  # (B, h*w, C)
        normed = self.norm(tokens)
        attended, _ = self.attention(normed, normed, normed, need_weights=False)
        tokens = tokens + attended  # residual
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class ResNetMultiTask(nn.Module):
    """ResNet trunk -> optional pre-pooling block -> GAP -> BN-neck, identity and attribute heads.

    See the module docstring for the returned dicts.
    """

    def __init__(
        self,
        trunk: ResNetTrunk,
        num_ids: int,
        attribute_form: str,
        pre_pool: nn.Module | None = None,
        classifier: str = "linear",
        dropout: float = 0.0,
    ):
        super().__init__()
        self.trunk = trunk
        self.pre_pool = pre_pool if pre_pool is not None else nn.Identity()
        dim = pre_pool.out_channels if pre_pool is not None else trunk.out_channels
        self.head = MultiTaskHead(dim, num_ids, attribute_form, classifier, dropout)
        self.num_ids = num_ids
        self.attribute_form = attribute_form
        self.embedding_dim = dim

    def forward(self, x: torch.Tensor) -> dict:
        fmap = self.trunk(x)  # (B, C, h, w), e.g. (B, 2048, 16, 8)
        fmap = self.pre_pool(fmap)  # (B, D, h, w)
        feat = fmap.mean(dim=(2, 3))  # (B, D) global average pooling
        return self.head(feat)


def _trunk(depth: int, pretrained: bool, weights_path: str | Path | None, last_stride: int) -> ResNetTrunk:
    return build_resnet(depth, pretrained=pretrained, weights_path=weights_path, last_stride=last_stride)


def build_resnet50(
    num_ids: int,
    attribute_form: str = "groups",
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    depth: int = 50,
    last_stride: int = 1,
    classifier: str = "linear",
    dropout: float = 0.0,
) -> ResNetMultiTask:
    """The multi-task baseline (name kept from the reports; ``depth`` picks ResNet-18/34/50)."""
    trunk = _trunk(depth, pretrained, weights_path, last_stride)
    return ResNetMultiTask(trunk, num_ids, attribute_form, None, classifier, dropout)


def build_convhead(
    num_ids: int,
    attribute_form: str = "groups",
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    depth: int = 50,
    last_stride: int = 1,
    classifier: str = "linear",
    dropout: float = 0.0,
    head_channels: int = 512,
) -> ResNetMultiTask:
    """Baseline with a :class:`ConvHead` before pooling; embedding dim ``head_channels``."""
    trunk = _trunk(depth, pretrained, weights_path, last_stride)
    return ResNetMultiTask(trunk, num_ids, attribute_form, ConvHead(trunk.out_channels, head_channels), classifier, dropout)


def build_self_attention(
    num_ids: int,
    attribute_form: str = "groups",
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    depth: int = 50,
    last_stride: int = 1,
    classifier: str = "linear",
    dropout: float = 0.0,
    num_heads: int = 8,
    attention_dropout: float = 0.0,
) -> ResNetMultiTask:
    """Baseline with a :class:`SpatialSelfAttention` block before pooling."""
    trunk = _trunk(depth, pretrained, weights_path, last_stride)
    block = SpatialSelfAttention(trunk.out_channels, num_heads, attention_dropout)
    return ResNetMultiTask(trunk, num_ids, attribute_form, block, classifier, dropout)
