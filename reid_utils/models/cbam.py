"""ResNet with CBAM (Woo et al., ECCV 2018): channel then spatial attention in every residual block.

Where: as in the CBAM paper, a :class:`CBAM` module refines the output of the residual
branch of **every** residual block of layer1..layer4, before the identity shortcut is added
(16 blocks for ResNet-50). Reduction ratio 16 and a 7x7 spatial kernel (the paper's values).
Pretrained ImageNet ResNet weights load into everything except the new ``cbam.*`` layers.

The model is otherwise the multi-task baseline (:class:`~reid_utils.models.resnet.ResNetMultiTask`):
GAP, BN-neck, identity classifier and attribute head, by default in the ``"binary"`` form
(30 logits, trained with weighted BCE by the losses module). Forward contract:

* train: ``{"features": (B, D) before BN, "id_logits": (B, num_ids) or None, "attribute_logits": (B, 30)}``;
* eval: ``{"embedding": (B, D) after BN, "attribute_logits": (B, 30)}``;

``D = 2048`` for depth 50, 512 for 18/34.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from .backbones import build_resnet
from .resnet import ResNetMultiTask

REDUCTION = 16
SPATIAL_KERNEL = 7


class ChannelAttention(nn.Module):
    """``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))``: ``(B, C, h, w) -> (B, C, 1, 1)`` weights."""

    def __init__(self, channels: int, reduction: int = REDUCTION):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return (avg + peak).sigmoid()


class SpatialAttention(nn.Module):
    """``sigmoid(conv7x7([mean_c(x), max_c(x)]))``: ``(B, C, h, w) -> (B, 1, h, w)`` weights."""

    def __init__(self, kernel_size: int = SPATIAL_KERNEL):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, h, w)
        return self.conv(pooled).sigmoid()


class CBAM(nn.Module):
    """Channel attention, then spatial attention: ``(B, C, h, w) -> (B, C, h, w)``."""

    def __init__(self, channels: int, reduction: int = REDUCTION, kernel_size: int = SPATIAL_KERNEL):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)


class CBAMBasicBlock(BasicBlock):
    """torchvision ``BasicBlock`` (ResNet-18/34) with CBAM on the residual branch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cbam = CBAM(self.bn2.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.cbam(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class CBAMBottleneck(Bottleneck):
    """torchvision ``Bottleneck`` (ResNet-50) with CBAM on the residual branch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cbam = CBAM(self.bn3.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.cbam(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


def build(
    num_ids: int,
    attribute_form: str = "binary",
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    depth: int = 50,
    last_stride: int = 1,
    classifier: str = "linear",
    dropout: float = 0.0,
) -> ResNetMultiTask:
    """ResNet-``depth`` with CBAM in every residual block, plus the multi-task heads."""
    block = CBAMBottleneck if depth >= 50 else CBAMBasicBlock
    trunk = build_resnet(
        depth,
        pretrained=pretrained,
        weights_path=weights_path,
        last_stride=last_stride,
        block=block,
        allow_missing=("cbam.",),
    )
    return ResNetMultiTask(trunk, num_ids, attribute_form, None, classifier, dropout)
