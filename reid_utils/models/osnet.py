"""OSNet: omni-scale residual blocks, a network designed for re-ID and trained from scratch.

Zhou et al., "Omni-Scale Feature Learning for Person Re-Identification" (ICCV 2019). Its
point for this project: 2.2 M parameters and 0.98 G multiply-adds at 256x128 (in this
project's count of 2 FLOPs per multiply-add, about 0.5 GFLOPs at 128x64 against 1.0 for
ResNet-18 with last stride 1), and the paper trains it from scratch on Market-1501 to 93.6
rank-1 / 81.0 mAP, the setting of a CPU without ImageNet weights.

The blocks, as the paper describes them:

* **Lite 3x3**: a linear ``1x1`` convolution, then a depthwise ``3x3`` one, BatchNorm and
  ReLU; a ``3x3`` receptive field at a fraction of a dense ``3x3``'s cost;
* **omni-scale bottleneck** (:class:`OSBlock`): a ``1x1`` reduction to ``C/4`` channels,
  ``T = 4`` streams of 1, 2, 3 and 4 stacked Lite 3x3 layers (receptive fields 3, 5, 7, 9),
  each weighted channel by channel by one shared **aggregation gate** (global pooling, a
  ``C/4 -> C/64 -> C/4`` MLP, sigmoid: the gate depends on the input, so each image mixes its
  own scales), the weighted streams summed, a linear ``1x1`` expansion to ``C`` and a
  residual connection (a linear ``1x1`` projection where the widths differ);
* **the trunk** (:class:`OSNetTrunk`, OSNet x1.0): ``conv1`` 7x7 stride 2 (64) and a 3x3 max
  pool; ``conv2`` (256), ``conv3`` (384), ``conv4`` (512), two OS blocks each, the first two
  followed by a ``1x1`` convolution and a 2x2 average pool; ``conv5`` a ``1x1`` convolution.
  Shapes: ``(B, 3, H, W) -> (B, 512, H/16, W/16)``, e.g. ``(2, 3, 128, 64) -> (2, 512, 8, 4)``,
  the map of ResNet-18 with last stride 1.

The registered model ``osnet`` puts the APR-Net head (bottleneck, 12 attribute classifiers,
ARM, identity classifier; :mod:`reid_utils.models.apr`) on this trunk, so that it trains,
evaluates and exports exactly like ``apr`` and the two compare trunk against trunk. The
paper's own head (a 512-d fully connected layer and a softmax) is the APR bottleneck.
torchvision has no OSNet ImageNet weights: ``pretrained=True`` needs ``weights_path`` (a
state dict with this module's keys); offline and from scratch is the intended use. In 60
minutes on 2 CPU cores without bf16 it tied the ResNet-18 recipe on re-ID and lost half a
point of attribute accuracy (README, "Ablations"): half the FLOPs, but depthwise convolutions
use a CPU poorly, so its steps are only 8 % faster.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .apr import APRNet
from .backbones import load_pretrained

#: OSNet x1.0: output channels of conv1 .. conv4 (conv5 keeps conv4's).
CHANNELS = (64, 256, 384, 512)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1) -> nn.Sequential:
    """``Conv2d (no bias) -> BatchNorm2d -> ReLU``, "same" padding for odd kernels."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def conv1x1_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    """A linear ``1x1`` convolution with BatchNorm and no activation."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


def lite_conv3x3(in_channels: int, out_channels: int) -> nn.Sequential:
    """Lite 3x3: linear ``1x1``, depthwise ``3x3``, BatchNorm, ReLU: ``(B, in, h, w) -> (B, out, h, w)``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class AggregationGate(nn.Module):
    """Channel weights in ``(0, 1)`` from the stream itself: ``x (B, C, h, w) -> x * gate (B, C, 1, 1)``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))).sigmoid()  # (B, C, 1, 1)
        return x * gate


class OSBlock(nn.Module):
    """Omni-scale residual bottleneck: ``(B, in, h, w) -> (B, out, h, w)``; see the module docstring."""

    def __init__(self, in_channels: int, out_channels: int, streams: int = 4, reduction: int = 4):
        super().__init__()
        mid = out_channels // reduction
        self.reduce = conv_bn_relu(in_channels, mid)
        # stream t stacks t Lite 3x3 layers: receptive field 2t + 1
        self.streams = nn.ModuleList(
            nn.Sequential(*(lite_conv3x3(mid, mid) for _ in range(t))) for t in range(1, streams + 1)
        )
        self.gate = AggregationGate(mid)  # one gate shared by every stream
        self.expand = conv1x1_bn(mid, out_channels)
        self.shortcut = conv1x1_bn(in_channels, out_channels) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)  # (B, mid, h, w)
        mixed = sum(self.gate(stream(reduced)) for stream in self.streams)  # (B, mid, h, w)
        return F.relu(self.expand(mixed) + self.shortcut(x))


class OSNetTrunk(nn.Module):
    """OSNet x1.0 without its pooling and classifier: ``(B, 3, H, W) -> (B, 512, H/16, W/16)``."""

    def __init__(self):
        super().__init__()
        c1, c2, c3, c4 = CHANNELS
        self.conv1 = conv_bn_relu(3, c1, kernel_size=7, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Sequential(OSBlock(c1, c2), OSBlock(c2, c2), conv_bn_relu(c2, c2), nn.AvgPool2d(2))
        self.conv3 = nn.Sequential(OSBlock(c2, c3), OSBlock(c3, c3), conv_bn_relu(c3, c3), nn.AvgPool2d(2))
        self.conv4 = nn.Sequential(OSBlock(c3, c4), OSBlock(c4, c4))
        self.conv5 = conv_bn_relu(c4, c4)
        self.out_channels = c4
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def last_stage(self) -> nn.Module:
        """The module whose output is the trunk's last map (the activation maps' default)."""
        return self.conv5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))  # (B, 64, H/4, W/4)
        x = self.conv3(self.conv2(x))  # (B, 384, H/16, W/16)
        return self.conv5(self.conv4(x))  # (B, 512, H/16, W/16)


def build(
    num_ids: int,
    attribute_form: str = "groups",
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    classifier: str = "linear",
    dropout: float = 0.5,
    bottleneck_dim: int = 512,
    activation: str = "leaky_relu",
    attribute_pooling: str = "global",
) -> APRNet:
    """The APR-Net head on an OSNet x1.0 trunk; ``weights_path`` fills the trunk from a state dict."""
    if pretrained and weights_path is None:
        raise ConfigError("osnet has no torchvision ImageNet weights: pass weights_path=<trunk state dict> "
                          "or pretrained=False (OSNet is designed to train from scratch)")
    trunk = OSNetTrunk()
    if weights_path is not None:
        load_pretrained(trunk, None, weights_path)
    return APRNet(trunk, num_ids, attribute_form, bottleneck_dim, dropout, activation, classifier,
                  attribute_pooling)
