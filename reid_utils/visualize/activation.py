"""Activation maps: where a model looks, for its retrieval embedding or one attribute group (Grad-CAM).

::

    maps = activation_maps(model, paths, "embedding", reference=query_embedding, image_size=(64, 32))
    maps = activation_maps(model, paths, "upcolour", image_size=(64, 32))   # (B, H, W) in [0, 1]
    plot_activation_maps(paths, {"embedding": maps_e, "upcolour": maps_u}, titles=[...])

Grad-CAM (Selvaraju et al., 2017) on the last spatial feature map ``A`` ``(B, C, h, w)``: the
weights ``alpha_c`` are the gradients of a scalar target per image, averaged over the map;
the heat map is ``relu(sum_c alpha_c A_c)``, upsampled to the input and scaled to ``[0, 1]``.

Targets:

* ``"embedding"``: the projection of the image's embedding on a direction, ``<e, r / |r|>``.
  With ``reference`` (e.g. a query's embedding) it shows what makes a hit look like the
  query; without, ``r`` is the image's own embedding (what its embedding is made of).
* an attribute group (``"upcolour"``, ``"gender"``, ...): ``log p(group = class)``, for the
  predicted class, or ``attribute_class`` (e.g. ``"red"``).

Which map: the trunk's last map (``layer4``, after the ``convhead`` / ``self_attention`` block
where there is one); for la_transformer the patch tokens entering the last encoder block, laid
out on their grid. ``layer="trunk.layer3"`` picks another module by name. For ALM, whose
attribute branches also read layer2 and layer3, a layer4 map shows the coarse level only. A
map that is zero everywhere means the layer holds no positive evidence for the target (the
``relu`` of Grad-CAM); it happens with untrained models.

Written here rather than with grad-cam or captum: both need a wrapper that turns the models'
dict outputs into a tensor and a custom target for an embedding direction, which is most of
the code below; grad-cam also pulls in opencv.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import nn

from ..data import build_transforms, read_image
from ..errors import ConfigError
from ..schema import GROUP_NAMES, GROUPS, group_probabilities
from .figures import _load_image, _show, save_figure

TARGETS: tuple[str, ...] = ("embedding",) + GROUP_NAMES


def activation_layer(model: nn.Module, layer: str | None = None) -> tuple[nn.Module, Callable | None]:
    """The module whose output is mapped, and a function that turns that output into
    ``(B, C, h, w)`` given the input batch (None when it already is one)."""
    if layer is not None:
        modules = dict(model.named_modules())
        if layer not in modules:
            raise ConfigError(f"layer {layer!r} is not a module of {type(model).__name__}; "
                              "pass a name from model.named_modules(), e.g. 'trunk.layer3'")
        return modules[layer], None
    backbone = getattr(model, "backbone", None)
    if backbone is not None and hasattr(getattr(backbone, "encoder", None), "ln") and hasattr(backbone, "patch_size"):
        patch = backbone.patch_size

        def tokens_to_map(tokens: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            b, _, d = tokens.shape  # (B, 1 + N, D), CLS token first
            return tokens[:, 1:].transpose(1, 2).reshape(b, d, x.shape[2] // patch, x.shape[3] // patch)

        # the last block's first LayerNorm: after it the CLS token (which the attribute head
        # reads) still attends to the patch tokens; after the encoder it no longer depends on them
        return backbone.encoder.layers[-1].ln_1, tokens_to_map
    if isinstance(getattr(model, "pre_pool", None), nn.Module):
        return model.pre_pool, None
    trunk = getattr(model, "trunk", None)
    if trunk is not None and hasattr(trunk, "layer4"):
        return trunk.layer4, None
    if trunk is not None and hasattr(trunk, "last_stage"):
        return trunk.last_stage(), None
    raise ConfigError(f"no default activation layer for {type(model).__name__}; pass layer='<module name>'")


def _target(name: str, outputs: dict, form: str, reference, attribute_class: str | None) -> torch.Tensor:
    """``(B,)`` scalar per image whose gradient drives the map."""
    if name == "embedding":
        embedding = outputs["embedding"].float()  # (B, D)
        direction = embedding.detach() if reference is None else torch.as_tensor(reference).float().to(embedding)
        direction = F.normalize(direction.expand_as(embedding), dim=1)
        return (embedding * direction).sum(dim=1)
    g = GROUP_NAMES.index(name)
    probs = group_probabilities(outputs["attribute_logits"].float(), form)[g]  # (B, C_g)
    if attribute_class is None:
        classes = probs.argmax(dim=1)
    else:
        if attribute_class not in GROUPS[g].classes:
            raise ConfigError(f"attribute_class {attribute_class!r} is not a value of {name!r}; "
                              f"valid values: {', '.join(GROUPS[g].classes)}")
        classes = torch.full((len(probs),), GROUPS[g].classes.index(attribute_class), device=probs.device)
    return probs.gather(1, classes[:, None]).squeeze(1).clamp_min(1e-12).log()


def load_images(paths: Sequence, image_size: tuple[int, int]) -> torch.Tensor:
    """Image paths -> the eval transform's ``(B, 3, H, W)`` batch at ``image_size = (H, W)``."""
    transform = build_transforms(*image_size, train=False)
    return torch.stack([transform(read_image(p)) for p in paths])


def activation_maps(
    model: nn.Module,
    images: torch.Tensor | Sequence,
    target: str = "embedding",
    reference: torch.Tensor | None = None,
    attribute_class: str | None = None,
    layer: str | None = None,
    image_size: tuple[int, int] = (128, 64),
) -> torch.Tensor:
    """Grad-CAM heat maps ``(B, H, W)`` in ``[0, 1]`` (see the module docstring).

    Args:
        model: a registry model (run in eval mode; its mode is restored).
        images: a normalised batch ``(B, 3, H, W)``, or image paths (loaded at ``image_size``,
            the model's input size ``(H, W)``, e.g. ``input_size(ckpt)``).
        target: ``"embedding"`` or an attribute group name.
        reference: ``(D,)`` or ``(B, D)`` direction for the embedding target.
        attribute_class: the class of the group to explain (default: the predicted one).
        layer: a module name of ``model`` (default: :func:`activation_layer`).
    """
    if target not in TARGETS:
        raise ConfigError(f"activation target {target!r} is unknown; valid: {', '.join(TARGETS)}")
    x = images if isinstance(images, torch.Tensor) else load_images(images, image_size)
    device = next(model.parameters()).device
    x = x.float().to(device)
    module, to_map = activation_layer(model, layer)
    captured = []
    handle = module.register_forward_hook(lambda _m, _inputs, output: captured.append(output))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = x.clone().requires_grad_(True)  # the graph is recorded even for frozen weights
            outputs = model(x)
            score = _target(target, outputs, model.attribute_form, reference, attribute_class)  # (B,)
            activations = captured[-1]
            gradients = torch.autograd.grad(score.sum(), activations)[0]
    finally:
        handle.remove()
        model.train(was_training)
    if to_map is not None:
        activations, gradients = to_map(activations, x), to_map(gradients, x)  # (B, C, h, w)
    weights = gradients.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True)).detach()  # (B, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]  # (B, H, W)
    return (cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).cpu()


def plot_activation_maps(images: Sequence, maps: Mapping[str, torch.Tensor], titles: Sequence[str] | None = None,
                         image_size: tuple[int, int] = (64, 128), alpha: float = 0.5, path=None) -> Figure:
    """Images (first row) and each kind of heat map over them (one row per entry of ``maps``).

    Args:
        images: ``B`` image paths (or PIL images / arrays), drawn at ``image_size = (W, H)``.
        maps: ``{row label: (B, h, w) maps in [0, 1]}``, e.g. ``{"embedding": ..., "upcolour": ...}``.
        titles: ``B`` column titles (e.g. ``["query", "1", "2", ...]``).
    """
    n = len(images)
    fig = Figure(figsize=(0.85 * n + 0.6, 1.75 * (1 + len(maps))), layout="constrained")
    axes = fig.subplots(1 + len(maps), n, squeeze=False)
    jet = colormaps["jet"]
    for j in range(n):
        image = _load_image(images[j], image_size)
        _show(axes[0, j], image, titles[j] if titles else "", "black", 0.5)
        for row, (label, values) in enumerate(maps.items(), start=1):
            heat = np.asarray(torch.as_tensor(values[j]).float()[None, None])
            heat = F.interpolate(torch.from_numpy(heat), size=image.shape[:2], mode="bilinear",
                                 align_corners=False)[0, 0].clamp(0, 1).numpy()
            blended = (1 - alpha) * image / 255.0 + alpha * jet(heat)[..., :3]
            _show(axes[row, j], (blended * 255).astype(np.uint8), "", "black", 0.5)
            if j == 0:
                axes[row, j].set_ylabel(label, fontsize=8)
    return save_figure(fig, path)
