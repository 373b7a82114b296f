"""ALM: attribute-specific localization on a feature pyramid (Tang et al., ICCV 2019).

"Improving Pedestrian Attribute Recognition With Weakly-Supervised Multi-Scale
Attribute-Specific Localization", with a ResNet trunk instead of the paper's BN-Inception and
an identity head added for re-ID.

Architecture (``B`` images, ``K`` attribute logits: 30 in the paper's binary form)::

    ResNet trunk ── layer2 (C2, H/8)  ─ 1x1 ─ d ─┐
                 ├─ layer3 (C3, H/16) ─ 1x1 ─ d ─┼─ top-down pyramid, concatenation:
                 └─ layer4 (C4, H/32) ─ 1x1 ─ d ─┘    coarse d, middle 2d, fine 3d channels
                 └─ global average pool ─ BNNeck ─ global attribute logits (K), id logits

Reading of the paper's Fig. 2 used here: the top-down pathway starts at the coarsest level with
its own ``d = 256``-channel lateral map; each finer level concatenates its lateral map with the
nearest-upsampled map of the level above, so the channel counts are ``d`` (layer4), ``2d``
(layer3) and ``3d`` (layer2): the finest level carries the most channels.

On every pyramid level, one Attribute Localization Module (ALM) per attribute:

1. SE channel attention with a residual connection: ``x_k = x * (1 + a_k)``, with
   ``a_k = sigmoid(W2_k relu(W1_k avgpool(x)))`` (reduction 16);
2. a box-only spatial transformer: ``(s_x, s_y, t_x, t_y) = FC_k(maxpool(x_k))``, scales through
   a sigmoid into (0, 1), translations through a tanh into (-1, 1),
   ``theta = [[s_x, 0, t_x], [0, s_y, t_y]]``, bilinear sampling of ``x_k`` on
   ``F.affine_grid(theta)`` (same output size as the input map, zero padding,
   ``align_corners=False``);
3. global average pooling of the sampled map and a per-attribute linear classifier (one logit).

Deep supervision: in training the four branches (three levels + global) each give ``(B, K)``
logits and the loss is summed over them; in eval the branches are max-voted (element-wise
maximum of the logits).

Speed. All ``K`` attributes of a level are computed together (batched einsums, no Python loop
over attributes). Since the box is axis-aligned, bilinear sampling followed by average pooling
is separable: it equals a weighted sum of the input map with weights ``p_y(h) * p_x(w)``, where
``p_y(h)`` is the mean over output rows of the bilinear (tent) weight ``max(0, 1 - |y - h|)``.
The default ``localization="separable"`` uses this identity (exact; it never materialises the
``K`` sampled maps, ~100x less memory); ``localization="grid_sample"`` runs the literal
``F.affine_grid`` + ``F.grid_sample`` path, kept as the reference (the tests check both agree).

Forward contract (``model(x)``, ``x`` of shape ``(B, 3, H, W)``):

* train: ``{"features": (B, C4) pooled trunk feature (metric losses),
  "id_logits": (B, num_ids) or None when num_ids == 0,
  "attribute_logits": [fine (B, K), middle (B, K), coarse (B, K), global (B, K)],
  "boxes": (B, 3, K, 4)}``;
* eval: ``{"embedding": (B, C4) BN-neck feature, "attribute_logits": (B, K) max over the four
  branches, "branch_attribute_logits": (4, B, K), "boxes": (B, 3, K, 4)}``.

``boxes[:, level, k] = (s_x, s_y, t_x, t_y)`` with level 0 = fine (layer2), 1 = middle (layer3),
2 = coarse (layer4); :func:`boxes_to_pixels` turns them into pixel corners for drawing.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..schema import check_form, num_attribute_logits
from .backbones import build_resnet
from .heads import AttributeHead, BNNeck, build_classifier

#: Levels of the pyramid, finest first (the order of ``boxes[:, level]``).
LEVELS = ("layer2", "layer3", "layer4")
LOCALIZATIONS = ("separable", "grid_sample")


# ---------------------------------------------------------------------------------------------
# Boxes


def boxes_to_pixels(
    boxes: torch.Tensor, height: int, width: int, clip: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(..., 4)`` boxes ``(s_x, s_y, t_x, t_y)`` -> pixel corners ``(x0, y0, x1, y1)``, each ``(...)``.

    The transformer samples input coordinates ``t +- s`` in the normalised frame where -1 and 1
    are the image borders (``align_corners=False``), so ``x0 = (t_x - s_x + 1) / 2 * width``.
    Boxes may reach past the image (``|t| + s`` up to 2, sampled as zeros); ``clip`` clamps the
    corners to the image.

    >>> boxes_to_pixels(torch.tensor([0.5, 0.25, 0.0, -0.5]), height=256, width=128)
    (tensor(32.), tensor(32.), tensor(96.), tensor(96.))
    """
    s_x, s_y, t_x, t_y = boxes.unbind(-1)
    x0, x1 = (t_x - s_x + 1) / 2 * width, (t_x + s_x + 1) / 2 * width
    y0, y1 = (t_y - s_y + 1) / 2 * height, (t_y + s_y + 1) / 2 * height
    if clip:
        x0, x1 = x0.clamp(0, width), x1.clamp(0, width)
        y0, y1 = y0.clamp(0, height), y1.clamp(0, height)
    return x0, y0, x1, y1


def boxes_to_theta(boxes: torch.Tensor) -> torch.Tensor:
    """``(..., 4)`` boxes -> ``(..., 2, 3)`` affine matrices ``[[s_x, 0, t_x], [0, s_y, t_y]]``."""
    s_x, s_y, t_x, t_y = boxes.unbind(-1)
    zero = torch.zeros_like(s_x)
    return torch.stack([torch.stack([s_x, zero, t_x], -1), torch.stack([zero, s_y, t_y], -1)], -2)


def _mean_bilinear_weights(scale: torch.Tensor, shift: torch.Tensor, size: int) -> torch.Tensor:
    """Average bilinear weight of each input position along one axis.

    The transformer's output position ``i`` (of ``size``) samples input coordinate
    ``u_i = ((scale * g_i + shift) + 1) * size / 2 - 1/2`` (pixels), ``g_i = (2i + 1) / size - 1``;
    bilinear interpolation gives input position ``h`` the weight ``max(0, 1 - |u_i - h|)`` (zero
    padding outside). Returns the mean over ``i``: ``(..., size)`` from ``scale``/``shift`` ``(...)``.
    """
    grid = (2 * torch.arange(size, device=scale.device, dtype=scale.dtype) + 1) / size - 1  # (S,)
    u = ((scale[..., None] * grid + shift[..., None]) + 1) * size / 2 - 0.5  # (..., S_out)
    positions = torch.arange(size, device=scale.device, dtype=scale.dtype)  # (S_in,)
    tent = (1 - (u[..., :, None] - positions).abs()).clamp_min(0)  # (..., S_out, S_in)
    return tent.mean(dim=-2)


# ---------------------------------------------------------------------------------------------
# Modules


class AttributeLocalization(nn.Module):
    """The ``K`` Attribute Localization Modules of one pyramid level, computed together.

    ``forward(x)``: ``(B, C, H, W) -> (logits (B, K), boxes (B, K, 4))``.

    Every attribute ``k`` has its own SE attention (``C -> C/r -> C``), box regressor
    (``C -> 4``) and classifier (``C -> 1``), stored as stacked ``(K, ...)`` parameters.
    """

    def __init__(
        self,
        channels: int,
        num_attributes: int,
        reduction: int = 16,
        initial_scale: float = 0.8,
        localization: str = "separable",
    ):
        super().__init__()
        if localization not in LOCALIZATIONS:
            raise ConfigError(f"localization must be one of {LOCALIZATIONS}, got {localization!r}")
        if not 0 < initial_scale < 1:
            raise ConfigError(f"initial_scale must be in (0, 1), got {initial_scale!r}")
        k, c, r = num_attributes, channels, max(channels // reduction, 4)
        self.num_attributes, self.channels, self.localization = k, c, localization
        # SE attention, one per attribute.
        self.se_w1 = nn.Parameter(_uniform((k, r, c), fan_in=c))
        self.se_b1 = nn.Parameter(_uniform((k, r), fan_in=c))
        self.se_w2 = nn.Parameter(_uniform((k, c, r), fan_in=r))
        self.se_b2 = nn.Parameter(_uniform((k, c), fan_in=r))
        # Box regressor: zero weights, bias = a centred box of side ``initial_scale``.
        self.box_w = nn.Parameter(torch.zeros(k, 4, c))
        start = torch.tensor([math.log(initial_scale / (1 - initial_scale))] * 2 + [0.0, 0.0])
        self.box_b = nn.Parameter(start.repeat(k, 1))
        # One-logit classifier per attribute.
        self.cls_w = nn.Parameter(_uniform((k, c), fan_in=c))
        self.cls_b = nn.Parameter(torch.zeros(k))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = x.shape  # (B, C, H, W)
        # 1. channel attention with residual: x_k = x * (1 + a_k)
        squeeze = x.mean(dim=(2, 3))  # (B, C)
        hidden = F.relu(torch.einsum("bc,krc->bkr", squeeze, self.se_w1) + self.se_b1)  # (B, K, r)
        gain = 1 + torch.sigmoid(torch.einsum("bkr,kcr->bkc", hidden, self.se_w2) + self.se_b2)  # (B, K, C)
        # 2. box from the max-pooled attended map; max(x * g) = g * max(x) since g > 0
        peak = gain * x.amax(dim=(2, 3))[:, None]  # (B, K, C)
        raw = torch.einsum("bkc,kfc->bkf", peak, self.box_w) + self.box_b  # (B, K, 4)
        boxes = torch.cat([torch.sigmoid(raw[..., :2]), torch.tanh(raw[..., 2:])], dim=-1)  # (B, K, 4)
        # 3. bilinear sampling in the box, then average pooling -> (B, K, C)
        if self.localization == "separable":
            pooled = gain * self._sample_and_pool_separable(x, boxes)
        else:
            pooled = self._sample_and_pool_grid(x, gain, boxes)
        logits = (pooled * self.cls_w).sum(dim=-1) + self.cls_b  # (B, K)
        return logits, boxes

    @staticmethod
    def _sample_and_pool_separable(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Mean of ``grid_sample(x, affine_grid(box_k))`` per channel: ``(B, C, H, W) -> (B, K, C)``."""
        h, w = x.shape[-2:]
        s_x, s_y, t_x, t_y = boxes.float().unbind(-1)  # each (B, K); float32 even under autocast
        p_y = _mean_bilinear_weights(s_y, t_y, h).to(x.dtype)  # (B, K, H)
        p_x = _mean_bilinear_weights(s_x, t_x, w).to(x.dtype)  # (B, K, W)
        rows = torch.einsum("bkh,bchw->bkcw", p_y, x)  # (B, K, C, W)
        return torch.einsum("bkcw,bkw->bkc", rows, p_x)

    @staticmethod
    def _sample_and_pool_grid(x: torch.Tensor, gain: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Reference path: the literal spatial transformer on the ``K`` attended maps."""
        b, c, h, w = x.shape
        k = boxes.shape[1]
        attended = (x[:, None] * gain[..., None, None]).reshape(b * k, c, h, w)  # (B*K, C, H, W)
        theta = boxes_to_theta(boxes).reshape(b * k, 2, 3)
        grid = F.affine_grid(theta, [b * k, c, h, w], align_corners=False)  # (B*K, H, W, 2)
        sampled = F.grid_sample(attended, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return sampled.mean(dim=(2, 3)).reshape(b, k, c)


def _uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
    """``nn.Linear``'s default init range, for stacked per-attribute weights."""
    bound = 1 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound)


class FeaturePyramid(nn.Module):
    """Top-down pyramid by concatenation.

    ``forward([f2, f3, f4])`` with trunk maps finest first -> ``[p2 (B, 3d), p3 (B, 2d), p4 (B, d)]``
    at the resolutions of ``f2, f3, f4``: ``p4 = L4(f4)``, ``p3 = [L3(f3), up(p4)]``,
    ``p2 = [L2(f2), up(p3)]`` with 1x1 conv + BN laterals ``L`` and nearest upsampling ``up``.
    """

    def __init__(self, in_channels: tuple[int, int, int], dim: int = 256):
        super().__init__()
        self.laterals = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, kernel_size=1, bias=False), nn.BatchNorm2d(dim)) for c in in_channels
        )
        n = len(in_channels)
        #: Output channels, finest first: (3d, 2d, d).
        self.out_channels = tuple(dim * (n - i) for i in range(n))

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        out = [self.laterals[-1](maps[-1])]  # coarsest: (B, d, h4, w4)
        for lateral, fmap in zip(reversed(self.laterals[:-1]), reversed(maps[:-1])):
            above = F.interpolate(out[0], size=fmap.shape[-2:], mode="nearest")
            out.insert(0, torch.cat([lateral(fmap), above], dim=1))
        return out


class ALM(nn.Module):
    """ResNet trunk + feature pyramid + per-attribute localization on 3 levels + global branch.

    See the module docstring for the forward contract.
    """

    def __init__(
        self,
        num_ids: int,
        attribute_form: str = "binary",
        depth: int = 50,
        last_stride: int = 2,
        pyramid_dim: int = 256,
        reduction: int = 16,
        initial_scale: float = 0.8,
        localization: str = "separable",
        classifier: str = "linear",
        dropout: float = 0.0,
        pretrained: bool = False,
        weights_path: str | Path | None = None,
    ):
        super().__init__()
        check_form(attribute_form)
        self.num_ids, self.attribute_form = num_ids, attribute_form
        self.num_attributes = num_attribute_logits(attribute_form)
        self.trunk = build_resnet(depth, pretrained=pretrained, weights_path=weights_path, last_stride=last_stride)
        in_channels = tuple(self.trunk.channels[name] for name in LEVELS)
        self.pyramid = FeaturePyramid(in_channels, pyramid_dim)
        self.localizers = nn.ModuleList(
            AttributeLocalization(c, self.num_attributes, reduction, initial_scale, localization)
            for c in self.pyramid.out_channels
        )
        self.embedding_dim = self.trunk.out_channels
        self.neck = BNNeck(self.embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.global_attribute_head = AttributeHead(self.embedding_dim, attribute_form, dropout)
        self.id_classifier = build_classifier(classifier, self.embedding_dim, num_ids)  # None if num_ids == 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor] | None]:
        maps = self.trunk.feature_maps(x, LEVELS)  # [(B, C2, H/8, W/8), (B, C3, H/16, ..), (B, C4, H/32, ..)]
        pyramid = self.pyramid(maps)  # [(B, 3d, H/8, W/8), (B, 2d, ..), (B, d, ..)]
        level_logits, level_boxes = zip(*(alm(p) for alm, p in zip(self.localizers, pyramid)))
        boxes = torch.stack(level_boxes, dim=1)  # (B, 3, K, 4)
        features = maps[-1].mean(dim=(2, 3))  # (B, C4)
        neck = self.neck(features)  # (B, C4)
        global_logits = self.global_attribute_head(neck)  # (B, K)
        branches = [*level_logits, global_logits]  # 4 x (B, K)
        if self.training:
            id_logits = self.id_classifier(self.dropout(neck)) if self.id_classifier is not None else None
            return {"features": features, "id_logits": id_logits, "attribute_logits": branches, "boxes": boxes}
        stacked = torch.stack(branches)  # (4, B, K)
        return {
            "embedding": neck,
            "attribute_logits": stacked.amax(dim=0),
            "branch_attribute_logits": stacked,
            "boxes": boxes,
        }


def build(
    num_ids: int,
    attribute_form: str | None = "binary",
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    *,
    depth: int = 50,
    last_stride: int = 2,
    pyramid_dim: int = 256,
    reduction: int = 16,
    initial_scale: float = 0.8,
    localization: str = "separable",
    classifier: str = "linear",
    dropout: float = 0.0,
) -> ALM:
    """Build :class:`ALM`.

    Args:
        num_ids: training identities (0: no identity classifier, ``id_logits`` is None).
        attribute_form: ``"binary"`` (30 logits, the paper; default) or ``"groups"`` (41 logits,
            one ALM per logit).
        pretrained / weights_path: ImageNet weights for the ResNet trunk (see
            :func:`~reid_utils.models.backbones.build_resnet`).
        depth: ResNet depth 18, 34 or 50.
        last_stride: 2 (default) keeps the pyramid's three resolutions distinct; 1 gives layer4
            the resolution of layer3.
        pyramid_dim: ``d``, channels of each lateral map (levels get 3d, 2d, d).
        reduction: SE reduction ratio.
        initial_scale: side of every attribute's initial (centred) box, in (0, 1).
        localization: ``"separable"`` (fast, exact) or ``"grid_sample"`` (literal reference).
        classifier: identity classifier, ``"linear"`` or ``"cosine"`` (AM-Softmax).
        dropout: before the global attribute and identity classifiers.
    """
    return ALM(
        num_ids,
        attribute_form or "binary",
        depth=depth,
        last_stride=last_stride,
        pyramid_dim=pyramid_dim,
        reduction=reduction,
        initial_scale=initial_scale,
        localization=localization,
        classifier=classifier,
        dropout=dropout,
        pretrained=pretrained,
        weights_path=weights_path,
    )
