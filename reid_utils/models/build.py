"""Config -> model: the one place that maps a :class:`~reid_utils.config.TrainConfig` to a model.

* :func:`model_kwargs`: the config fields each builder accepts, renamed where the builder
  spells them differently (la_transformer's ``vit_*`` options);
* :func:`build_model_from_config`: ``build_model(cfg.model, ...)`` with those options, for
  training;
* :func:`rebuild_config`: the config to rebuild a trained model from its checkpoint (no
  download: the checkpoint holds every weight).

Training, evaluation, export and resume all build their models here. This module takes the
config by duck typing so that ``models`` never imports ``config``.
"""
from __future__ import annotations

import inspect

from torch import nn

from .registry import build_model, get_builder

#: la_transformer's builder spells the ViT options without the ``vit_`` prefix.
_RENAMES = {
    "la_transformer": {
        "vit_patch_size": "patch_size",
        "vit_embed_dim": "embed_dim",
        "vit_depth": "depth",
        "vit_heads": "num_heads",
        "vit_dropout": "vit_dropout",
        "lambda_global": "lambda_global",
        "use_columns": "use_columns",
        "dropout": "dropout",
        "bottleneck_dim": "bottleneck_dim",
    },
}
#: config field -> builder argument, for the ResNet-based models.
_CNN_OPTIONS = {
    "depth": "depth",
    "last_stride": "last_stride",
    "dropout": "dropout",
    "bottleneck_dim": "bottleneck_dim",
    "head_channels": "head_channels",
    "attention_heads": "num_heads",
    "pyramid_dim": "pyramid_dim",
    "attribute_pooling": "attribute_pooling",
}


def model_kwargs(cfg) -> dict:
    """Keyword arguments for ``build_model(cfg.model, ...)`` beyond num_ids / form / weights.

    Only options the model's builder accepts are passed, and ``None`` values are left out so
    the model's own defaults apply. ``classifier`` follows ``id_loss`` (AM-Softmax needs
    cosine logits); la_transformer gets ``image_size=(height, width)``.
    """
    accepted = inspect.signature(get_builder(cfg.model)).parameters
    mapping = _RENAMES.get(cfg.model, _CNN_OPTIONS)
    kwargs = {}
    for field_name, argument in mapping.items():
        value = getattr(cfg, field_name)
        if value is not None and argument in accepted:
            kwargs[argument] = value
    if "classifier" in accepted:
        kwargs["classifier"] = "cosine" if cfg.id_loss == "amsoftmax" else "linear"
    if "image_size" in accepted:
        kwargs["image_size"] = (cfg.height, cfg.width)
    return kwargs


def build_model_from_config(cfg, num_ids: int, attribute_form: str | None = None) -> nn.Module:
    """``build_model`` with the config's model options; ``attribute_form`` overrides the config's."""
    return build_model(
        cfg.model,
        num_ids=num_ids,
        attribute_form=attribute_form if attribute_form is not None else cfg.attribute_form,
        pretrained=cfg.pretrained,
        weights_path=cfg.weights_path,
        **model_kwargs(cfg),
    )


def rebuild_config(cfg):
    """The config that rebuilds a trained model without downloading anything.

    The backbone weights come from the checkpoint, so ``pretrained`` and ``weights_path`` are
    dropped. A pretrained la_transformer implied ViT-B/16 sizes; they are stated explicitly.
    """
    if cfg.model == "la_transformer" and (cfg.pretrained or cfg.weights_path):
        cfg = cfg.replace(vit_embed_dim=cfg.vit_embed_dim or 768, vit_depth=cfg.vit_depth or 12,
                          vit_heads=cfg.vit_heads or 12)
    return cfg.replace(pretrained=False, weights_path=None)
