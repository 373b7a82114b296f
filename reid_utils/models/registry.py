"""The model registry: ``build_model("apr", num_ids=751)``; an unknown name lists the valid ones.

Builders are imported lazily, so importing the package stays cheap and a broken optional model
cannot break the others.
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path

from torch import nn

from ..schema import check_form

#: name -> (module, builder function); each builder is
#: ``build(num_ids, attribute_form, pretrained, weights_path, **kwargs)``.
_BUILDERS: dict[str, tuple[str, str]] = {
    "resnet50": ("reid_utils.models.resnet", "build_resnet50"),
    "apr": ("reid_utils.models.apr", "build"),
    "convhead": ("reid_utils.models.resnet", "build_convhead"),
    "self_attention": ("reid_utils.models.resnet", "build_self_attention"),
    "cbam": ("reid_utils.models.cbam", "build"),
    "alm": ("reid_utils.models.alm", "build"),
    "la_transformer": ("reid_utils.models.la_transformer", "build"),
    "osnet": ("reid_utils.models.osnet", "build"),
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)

#: The attribute form each model is trained with by default (the source reports' choice).
DEFAULT_ATTRIBUTE_FORM: dict[str, str] = {
    "resnet50": "groups",
    "apr": "groups",
    "convhead": "groups",
    "self_attention": "groups",
    "la_transformer": "groups",
    "osnet": "groups",
    "cbam": "binary",
    "alm": "binary",
}


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder function registered under ``name`` (unknown name -> ValueError listing valid ones)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    module_name, function_name = _BUILDERS[name]
    return getattr(importlib.import_module(module_name), function_name)


def models_with_option(option: str) -> tuple[str, ...]:
    """The registered models whose builder takes ``option`` (this imports their modules)."""
    return tuple(name for name in MODEL_NAMES if option in inspect.signature(get_builder(name)).parameters)


def build_model(
    name: str,
    num_ids: int,
    attribute_form: str | None = None,
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: one of :data:`MODEL_NAMES`.
        num_ids: number of training identities; 0 builds no identity classifier
            (attribute-only training; ``"id_logits"`` is then ``None``).
        attribute_form: ``"groups"`` or ``"binary"``; None uses :data:`DEFAULT_ATTRIBUTE_FORM`.
        pretrained: start the backbone from torchvision's ImageNet weights (needs internet).
        weights_path: a local backbone state-dict file instead of downloading.
        **kwargs: model options (``depth``, ``last_stride``, ``classifier``, ``dropout``, ...);
            an unknown one raises TypeError naming it.
    """
    builder = get_builder(name)
    if isinstance(num_ids, bool) or not isinstance(num_ids, int) or num_ids < 0:
        raise ValueError(f"num_ids must be an integer >= 0, got {num_ids!r}")
    form = DEFAULT_ATTRIBUTE_FORM[name] if attribute_form is None else attribute_form
    check_form(form)
    _check_options(name, builder, kwargs)
    return builder(num_ids, form, pretrained, weights_path, **kwargs)


def _check_options(name: str, builder: Callable[..., nn.Module], kwargs: dict) -> None:
    """TypeError naming an unknown model option and listing the valid ones."""
    parameters = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    fixed = ("num_ids", "attribute_form", "pretrained", "weights_path")
    valid = [p for p in parameters if p not in fixed]
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        raise TypeError(f"model {name!r} got unknown option(s) {unknown}; valid options: {', '.join(valid)}")

