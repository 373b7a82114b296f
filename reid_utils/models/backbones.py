"""ResNet trunks and the pretrained-weights logic shared by every model.

* :func:`build_resnet` gives a torchvision ResNet 18/34/50 without its pooling and ``fc``
  (``conv1 .. layer4``), optionally with the last stride set to 1 (reid-strong-baseline), and
  a custom residual block (CBAM uses this).
* :func:`load_pretrained` fills any module from torchvision's weights API (``pretrained=True``)
  or from a local state-dict file (``weights_path=...``). Without internet the download fails
  with a :class:`~reid_utils.errors.ReidError` that says what to do instead.

Defaults: ``pretrained=False`` everywhere (training from scratch works offline on CPU); on
Colab pass ``pretrained=True`` to start from ImageNet.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from ..errors import CheckpointError, ReidError

#: depth -> (default residual block, blocks per stage, torchvision weights name)
RESNET_SPECS = {
    18: (BasicBlock, (2, 2, 2, 2), "ResNet18_Weights.IMAGENET1K_V1"),
    34: (BasicBlock, (3, 4, 6, 3), "ResNet34_Weights.IMAGENET1K_V1"),
    50: (Bottleneck, (3, 4, 6, 3), "ResNet50_Weights.IMAGENET1K_V2"),
}

#: State-dict keys of a trunk that a file may lack (older torchvision files have no counters).
_ALWAYS_OPTIONAL = ("num_batches_tracked",)
#: Nested keys under which training checkpoints usually keep the weights.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model_state", "model")


class ResNetTrunk(nn.Module):
    """``conv1 .. layer4`` of a torchvision ResNet (state-dict keys identical to torchvision's).

    ``forward(x)``: ``(B, 3, H, W) -> (B, out_channels, H/16, W/16)`` with last stride 1, or
    ``H/32, W/32`` with last stride 2; e.g. ``(2, 3, 256, 128) -> (2, 2048, 16, 8)`` (ResNet-50,
    last stride 1).
    """

    def __init__(self, resnet: ResNet, depth: int, last_stride: int):
        super().__init__()
        self.depth = depth
        self.last_stride = last_stride
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        expansion = 4 if depth >= 50 else 1
        #: Output channels of each stage, e.g. ``{"layer1": 256, ..., "layer4": 2048}`` for depth 50.
        self.channels = {f"layer{i + 1}": 64 * 2**i * expansion for i in range(4)}
        self.out_channels = self.channels["layer4"]

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W) -> (B, 64, H/4, W/4)``."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def feature_maps(
        self, x: torch.Tensor, layers: Iterable[str] = ("layer2", "layer3", "layer4")
    ) -> list[torch.Tensor]:
        """Feature maps of the requested stages, in the order given.

        With depth 50, last stride 1 and a 256x128 input: layer2 ``(B, 512, 32, 16)``,
        layer3 ``(B, 1024, 16, 8)``, layer4 ``(B, 2048, 16, 8)``.
        """
        wanted = list(layers)
        unknown = [name for name in wanted if name not in self.channels]
        if unknown:
            raise ValueError(f"unknown ResNet stage(s) {unknown}; valid: {list(self.channels)}")
        maps = {}
        x = self.stem(x)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            maps[name] = x
            if all(n in maps for n in wanted):
                break
        return [maps[name] for name in wanted]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, 64, H/4, W/4)
        x = self.layer1(x)
        x = self.layer2(x)  # (B, C2, H/8, W/8)
        x = self.layer3(x)  # (B, C3, H/16, W/16)
        return self.layer4(x)  # (B, C4, H/16 or H/32, ...)


def build_resnet(
    depth: int = 50,
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    last_stride: int = 1,
    block: type[nn.Module] | None = None,
    allow_missing: Iterable[str] = (),
) -> ResNetTrunk:
    """A ResNet-18/34/50 trunk.

    Args:
        depth: 18, 34 or 50.
        pretrained: load torchvision's ImageNet weights (needs internet or a warm torch hub cache).
        weights_path: a local ``.pth`` state dict of the same torchvision ResNet (``fc.*`` keys
            are ignored); takes precedence over ``pretrained``.
        last_stride: 1 keeps layer4 at the resolution of layer3 (a 16x8 map at 256x128), 2 is
            the ImageNet ResNet.
        block: a residual block class with torchvision's ``BasicBlock``/``Bottleneck``
            constructor (e.g. a CBAM block); defaults to torchvision's for ``depth``.
        allow_missing: substrings of parameter names that pretrained files lack (new modules
            of a custom ``block``, e.g. ``"cbam."``).
    """
    if depth not in RESNET_SPECS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth!r}")
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
    default_block, layers, weights_name = RESNET_SPECS[depth]
    resnet = ResNet(block or default_block, list(layers))
    if last_stride == 1:
        for module in resnet.layer4[0].modules():  # the strided 3x3 conv (or 1x1 for 18/34) and the downsample
            if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                module.stride = (1, 1)
    trunk = ResNetTrunk(resnet, depth, last_stride)
    if pretrained or weights_path is not None:
        load_pretrained(
            trunk, weights_name, weights_path, ignore_unexpected=("fc.",), allow_missing=tuple(allow_missing)
        )
    return trunk


# ---------------------------------------------------------------------------------------------
# Pretrained weights


def _download_state_dict(weights: torchvision.models.WeightsEnum) -> dict[str, torch.Tensor]:
    """Download (or read from the torch hub cache) a torchvision weights entry."""
    return weights.get_state_dict(progress=True)


def resolve_weights(weights: str | torchvision.models.WeightsEnum) -> torchvision.models.WeightsEnum:
    """``"ResNet50_Weights.IMAGENET1K_V2"`` or an enum member -> the enum member."""
    if isinstance(weights, str):
        try:
            return torchvision.models.get_weight(weights)
        except (ValueError, KeyError, AttributeError) as error:
            raise ReidError(f"unknown torchvision weights {weights!r}: {error}") from None
    return weights


def read_state_dict(weights_path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.pth`` file (plain, or nested under ``state_dict``/``model``...).

    A ``module.`` prefix (DataParallel) is stripped.
    """
    path = Path(weights_path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist (weights_path must be a .pth state dict)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling, zip and format errors all mean "not a state dict"
        raise CheckpointError(f"could not read weights file {path} as a PyTorch state dict: {error}") from None
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        nested = next((obj[k] for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
        obj = nested if nested is not None else obj
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"weights file {path} does not hold a state dict (a mapping of names to tensors)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_pretrained(
    module: nn.Module,
    weights: str | torchvision.models.WeightsEnum | None,
    weights_path: str | Path | None = None,
    *,
    ignore_unexpected: Iterable[str] = (),
    allow_missing: Iterable[str] = (),
) -> nn.Module:
    """Load pretrained weights into ``module`` and return it.

    Args:
        module: the module to fill (its state-dict keys must match the weights').
        weights: a torchvision weights enum member or its name (``"ResNet50_Weights.IMAGENET1K_V2"``),
            downloaded through torchvision's weights API when ``weights_path`` is None.
        weights_path: a local state-dict file; used instead of downloading.
        ignore_unexpected: key prefixes of the file to drop (e.g. ``"fc."`` of a classifier).
        allow_missing: substrings of module keys the file may lack (new layers keep their init).

    Raises:
        ReidError: the download failed (offline): the message suggests ``pretrained=False`` or
            ``weights_path=...``.
        CheckpointError: the file is missing, unreadable, or its keys/shapes do not match
            (the message names the file and the first offending key).
    """
    if weights_path is not None:
        state_dict = read_state_dict(weights_path)
        source = f"weights file {Path(weights_path)}"
    else:
        if weights is None:
            raise ReidError("no pretrained weights available for this model; pass weights_path=... or pretrained=False")
        entry = resolve_weights(weights)
        try:
            state_dict = _download_state_dict(entry)
        except Exception as error:  # URLError, OSError, HTTP errors, hash mismatch...
            raise ReidError(
                f"could not download the ImageNet weights {entry} ({type(error).__name__}: {error}); "
                "are you offline? Pass pretrained=False to train from scratch, "
                "or weights_path=<a local .pth state dict> to load a file"
            ) from None
        source = f"torchvision weights {entry}"
    ignore = tuple(ignore_unexpected)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(ignore)} if ignore else state_dict
    _check_compatible(module, state_dict, source, _ALWAYS_OPTIONAL + tuple(allow_missing))
    module.load_state_dict(state_dict, strict=False)
    return module


def _check_compatible(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, allow_missing: tuple[str, ...]
) -> None:
    """Raise one CheckpointError line if keys are missing/unexpected or shapes differ."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict and not any(s in k for s in allow_missing)]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [k for k in state_dict if k in own and state_dict[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) (e.g. {missing[0]!r})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[0]!r})")
    if mismatched:
        k = mismatched[0]
        problems.append(
            f"{len(mismatched)} shape mismatch(es) (e.g. {k!r}: file {tuple(state_dict[k].shape)} "
            f"vs model {tuple(own[k].shape)})"
        )
    if problems:
        raise CheckpointError(
            f"{source} does not match {type(module).__name__}: {'; '.join(problems)} "
            "(expected a state dict of the same architecture and depth)"
        )
