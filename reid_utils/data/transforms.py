"""Image transforms: per-image torchvision pipelines and a batched on-tensor augmentation.

Input size. Course images are 64x128 (W x H). Re-ID networks are usually fed 256x128
(H x W, images upsampled 2x); 128x64 keeps the native resolution and costs about 4x less
compute and memory, which is what makes training on 2 CPU cores practical. Accuracy is
usually a little higher at 256x128 on GPU (more spatial cells in the last feature map).

Augmentations (those of the source reports), in order, for ``train=True``:

1. horizontal flip (p = 0.5) ``flip``;
2. small random rotation in ``[-rotation, rotation]`` degrees;
3. pad-and-crop: zero-pad ``pad`` pixels on each side, crop back at a random position;
4. 3x3 low-pass (Gaussian) blur with probability ``blur``;
5. sharpness adjustment (factor ``sharpness_factor``) with probability ``sharpness``;
6. ImageNet normalisation;
7. random erasing with probability ``erasing`` (erased pixels = the mean colour, 0 after
   normalisation).

Evaluation (``train=False``): resize and normalise only.

:func:`batch_augment` applies the same augmentations to a whole ``uint8`` batch at once
(one ``grid_sample`` for flip, rotation and pad-and-crop), far faster on CPU than the
per-image pipeline in DataLoader workers. Its random choices come from a
``torch.Generator``, so they are reproducible.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_options(rotation: float, blur: float, sharpness: float, pad: int, erasing: float) -> None:
    for name, p in (("blur", blur), ("sharpness", sharpness), ("erasing", erasing)):
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"augmentation {name}={p} is a probability, expected 0-1")
    if not 0 <= rotation <= 180:
        raise ConfigError(f"augmentation rotation={rotation} degrees, expected 0-180")
    if pad < 0:
        raise ConfigError(f"augmentation pad={pad} pixels, expected >= 0")


def build_transforms(
    height: int,
    width: int,
    train: bool,
    *,
    flip: bool = True,
    rotation: float = 5.0,
    blur: float = 0.1,
    sharpness: float = 0.1,
    sharpness_factor: float = 2.0,
    pad: int = 10,
    erasing: float = 0.5,
) -> v2.Compose:
    """PIL image or ``uint8`` tensor ``(3, h, w)`` -> normalised ``float32`` tensor ``(3, height, width)``.

    ``train=False`` ignores the augmentation options. Set an option to 0 / False to disable it.
    """
    steps: list = [v2.ToImage(), v2.Resize((height, width), antialias=True)]
    if train:
        _check_options(rotation, blur, sharpness, pad, erasing)
        if flip:
            steps.append(v2.RandomHorizontalFlip(0.5))
        if rotation > 0:
            steps.append(v2.RandomRotation(rotation, interpolation=v2.InterpolationMode.BILINEAR))
        if pad > 0:
            steps.append(v2.RandomCrop((height, width), padding=pad))
        if blur > 0:
            steps.append(v2.RandomApply([v2.GaussianBlur(3, sigma=(0.5, 1.0))], p=blur))
        if sharpness > 0:
            steps.append(v2.RandomAdjustSharpness(sharpness_factor, p=sharpness))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train and erasing > 0:
        steps.append(v2.RandomErasing(p=erasing, value=0.0))
    return v2.Compose(steps)


def normalize_batch(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` ``(B, 3, H, W)`` (or floats in [0, 1]) -> ImageNet-normalised ``float32``."""
    x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _separable3(x: torch.Tensor, weights: tuple[float, float, float]) -> torch.Tensor:
    """3x3 separable filter (the same 1-D ``weights`` along H and W), replicated borders. x: (B, 3, H, W).

    Written as shifted sums: much faster on CPU than a depthwise ``conv2d``.
    """
    a, b, c = weights
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")  # (B, 3, H + 2, W + 2)
    rows = a * p[..., :-2, :] + b * p[..., 1:-1, :] + c * p[..., 2:, :]  # (B, 3, H, W + 2)
    return a * rows[..., :-2] + b * rows[..., 1:-1] + c * rows[..., 2:]


def low_pass3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 Gaussian low-pass ``[1, 2, 1] x [1, 2, 1] / 16``."""
    return _separable3(x, (0.25, 0.5, 0.25))


def smooth3x3(x: torch.Tensor) -> torch.Tensor:
    """The smoothing kernel of PIL / torchvision sharpness, ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13``."""
    return (_separable3(x, (1.0, 1.0, 1.0)) + 4 * x) / 13


def _apply_to(x: torch.Tensor, chosen: torch.Tensor, fn) -> torch.Tensor:
    """``fn`` on the samples where ``chosen`` (B,) is True, the others unchanged."""
    index = chosen.nonzero().squeeze(1)
    if len(index) == 0:
        return x
    x = x.clone()
    x[index] = fn(x[index])
    return x


def batch_augment(
    images: torch.Tensor,
    *,
    size: tuple[int, int] | None = None,
    flip: bool = True,
    rotation: float = 5.0,
    blur: float = 0.1,
    sharpness: float = 0.1,
    sharpness_factor: float = 2.0,
    pad: int = 10,
    erasing: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Augment and normalise a batch on-tensor: ``uint8 (B, 3, H, W)`` -> ``float32 (B, 3, H', W')``.

    Same augmentations and options as :func:`build_transforms` (``train=True``); ``size=(H', W')``
    resizes (default: keep the size; upsampling is folded into the one ``grid_sample``,
    downsampling is antialiased first). Works on any device; ``generator`` must live on the
    images' device.
    """
    _check_options(rotation, blur, sharpness, pad, erasing)
    x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    b = x.shape[0]
    h, w = tuple(size) if size is not None else tuple(x.shape[-2:])
    if h < x.shape[-2] or w < x.shape[-1]:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    device = x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, device=device)

    # Flip, rotation and pad-and-crop as one inverse affine map in normalised coordinates
    # (output pixel centres -> input positions). Pixel-space rotation R becomes S R S^-1 with
    # S = diag(2/W, 2/H), which keeps angles right on non-square images.
    angle = (rand(b) * 2 - 1) * math.radians(rotation)
    cos, sin = angle.cos(), angle.sin()
    sign = torch.where(rand(b) < 0.5, -1.0, 1.0) if flip else torch.ones(b, device=device)
    shift = torch.randint(-pad, pad + 1, (b, 2), generator=generator, device=device).float()
    xs = ((torch.arange(w, device=device) * 2 + 1) / w - 1).view(1, 1, w)
    ys = ((torch.arange(h, device=device) * 2 + 1) / h - 1).view(1, h, 1)

    def column(v: torch.Tensor) -> torch.Tensor:
        return v.view(b, 1, 1)

    grid_x = column(cos * sign) * xs + column(-sin * h / w) * ys + column(shift[:, 0] * 2 / w)  # (B, H', W')
    grid_y = column(sin * w / h * sign) * xs + column(cos) * ys + column(shift[:, 1] * 2 / h)
    grid = torch.stack([grid_x, grid_y], dim=-1)  # (B, H', W', 2)
    # "border" reproduces bilinear resizing at the image edges; what lies outside the image
    # (padding, rotated-in corners) is then set to 0, as the zero padding of pad-and-crop.
    inside = (grid_x.abs() <= 1) & (grid_y.abs() <= 1)  # (B, H', W')
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (B, 3, H', W')
    x = x * inside.unsqueeze(1)

    if blur > 0:
        x = _apply_to(x, rand(b) < blur, low_pass3x3)
    if sharpness > 0:
        f = sharpness_factor
        x = _apply_to(x, rand(b) < sharpness, lambda y: (f * y + (1 - f) * smooth3x3(y)).clamp(0, 1))
    x = normalize_batch(x)

    if erasing > 0:  # random erasing, torchvision defaults: area 2-33 %, aspect ratio 0.3-3.3
        area = (0.02 + rand(b) * 0.31) * h * w
        ratio = torch.exp(math.log(0.3) + rand(b) * (math.log(3.3) - math.log(0.3)))
        eh = (area * ratio).sqrt().round().clamp(1, h)
        ew = (area / ratio).sqrt().round().clamp(1, w)
        top = (rand(b) * (h - eh + 1)).floor()
        left = (rand(b) * (w - ew + 1)).floor()
        rows = torch.arange(h, device=device).view(1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, w)
        box = (
            (rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))
            & (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1))
        )  # (B, H, W)
        chosen = (rand(b) < erasing).view(b, 1, 1)
        x = x.masked_fill((box & chosen).unsqueeze(1), 0.0)
    return x
