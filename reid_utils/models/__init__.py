"""Model zoo and registry: ``build_model("apr", num_ids=751)``.

Every model follows one contract (see each module's docstring for details):

* attributes ``.attribute_form`` (``"groups"``: 41 logits, or ``"binary"``: 30 logits),
  ``.embedding_dim`` and ``.num_ids``;
* ``model.train(); model(x)`` with ``x`` of shape ``(B, 3, H, W)`` returns a dict with
  ``"features"`` ``(B, D)``, ``"id_logits"`` ``(B, num_ids)`` (a list for
  part-based models; ``None`` when ``num_ids == 0``) and ``"attribute_logits"`` ``(B, A)``
  (a list for deep supervision);
* ``model.eval(); model(x)`` returns ``"embedding"`` ``(B, D)`` and ``"attribute_logits"``
  ``(B, A)``. Models may add keys (APR: ``"arm_weights"``; ALM: ``"boxes"``).

``"features"`` means the same for every model: the pooled feature *before* any BatchNorm neck
or bottleneck, which the metric losses (triplet, center) act on, as in BNNeck. For a ResNet
model it is the pooled trunk (or head) output; for la_transformer, whose identity is a set of
parts, it is the concatenated part features ``(B, P * D)``.

The registry is in :mod:`.registry`; :mod:`.build` maps a TrainConfig to a model.
"""
from .build import build_model_from_config, model_kwargs, rebuild_config
from .registry import DEFAULT_ATTRIBUTE_FORM, MODEL_NAMES, build_model, get_builder
from .summary import model_summary

__all__ = [
    "DEFAULT_ATTRIBUTE_FORM",
    "MODEL_NAMES",
    "build_model",
    "build_model_from_config",
    "get_builder",
    "model_kwargs",
    "model_summary",
    "rebuild_config",
]
