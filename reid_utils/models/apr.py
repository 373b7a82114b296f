"""APR-Net: attribute-person recognition with an Attribute Re-weighting Module (ARM).

Lin et al., "Improving Person Re-identification by Attribute and Identity Learning" (2017),
as described in the course report. Shapes below use C = the trunk's channels (2048 for
ResNet-50, the paper's; 512 for ResNet-18/34) and the default bottleneck width D = 512:

1. a ResNet trunk and global average pooling: ``(B, C)``;
2. a bottleneck ``Linear(C, 512) -> BatchNorm1d -> LeakyReLU(0.1) (or ReLU) -> Dropout``:
   the identity feature ``f`` ``(B, 512)``;
3. 12 parallel attribute classifiers ``Linear(512, C_g)``, one per schema group; side by side
   they are the ``(B, 41)`` groups-form attribute logits (group ``g`` in ``GROUP_SLICES[g]``);
4. the ARM. Our exact reading of "a linear layer with softmax that gives a confidence per
   attribute prediction and re-weights the predictions":
   * the *attribute predictions* are the per-group softmax probabilities ``p`` ``(B, 41)``
     (the 12 distributions side by side);
   * ``arm_weights = softmax(Linear(41, 12)(p))`` ``(B, 12)``: one confidence per attribute
     group, summing to 1 over the 12 groups;
   * the re-weighted predictions are ``r[:, GROUP_SLICES[g]] = 12 * arm_weights[:, g] *
     p[:, GROUP_SLICES[g]]``. The constant factor 12 (the number of groups) makes uniform
     weights leave ``p`` unchanged, so the attribute part keeps the scale of probabilities
     next to the 512-d feature; it does not change what the module can express;
   * gradients flow through ``p`` (the identity loss also trains the attribute classifiers,
     as in APR-Net);
5. the identity classifier (linear or cosine, training only) sees ``concat(f, r)``
   ``(B, 512 + 41 = 553)``;
6. the retrieval embedding is ``concat(n, r)`` ``(B, 553)``, where ``n`` is the 512-d
   BatchNorm output *before* the activation. In eval mode ``f = LeakyReLU(n)``; using ``n``
   follows BNNeck (Luo et al. 2019), whose point is that the normalised feature, not the
   clipped one, suits cosine retrieval (the README's ablation compares it with
   ``concat(f, r)``).

Forward contract:

* train: ``{"features": (B, C), "embedding": (B, 553), "id_logits": (B, num_ids) or None,
  "attribute_logits": (B, 41), "arm_weights": (B, 12)}``; ``features`` is the pooled trunk
  feature, before the bottleneck, on which the metric losses (triplet, center) act, as in
  BNNeck (a triplet loss on the dropout-regularised embedding fights the identity
  classifier);
* eval: ``{"embedding": (B, 553), "attribute_logits": (B, 41), "arm_weights": (B, 12)}``;
* ``logits(x)``: ``(id_logits, attribute_logits)`` in either mode (a distillation teacher's
  outputs, :mod:`reid_utils.engine.distill`).

With ``attribute_form="binary"`` the 12 classifiers become one ``Linear(512, 30)`` for the
30 binary attributes, ``p`` are their sigmoids and the ARM weighs the 30 attributes.

``attribute_pooling="parts"`` (groups form only; not in the paper) lets the groups that
describe one body part look at it. The feature map's upper and lower halves are pooled
separately, each through its own ``Bottleneck(C, part_dim)`` (``(B, part_dim)``, 256 by
default), and the classifier of an upper-body group (``PART_GROUPS["upper"]``: upper colour,
sleeve length, hair, hat) reads ``concat(f, upper)``, that of a lower-body group (lower
colour, lower-body length, dress or pants) ``concat(f, lower)``; the other groups read ``f``
as before. At 128x64 the halves are the top and bottom 4 of the 8 feature-map rows (the
head and torso, the legs). Everything else, the ARM and the embedding included, is unchanged.
On the course data it changed nothing beyond the seed spread (README, "Ablations"), so it
is an option, not the default.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..schema import GROUP_SLICES, GROUPS, NUM_BINARY, num_attribute_logits
from .backbones import build_resnet
from .heads import build_classifier

#: ``attribute_pooling="parts"``: the groups whose classifier also reads the pooled upper or
#: lower half of the feature map.
PART_GROUPS: dict[str, tuple[str, ...]] = {
    "upper": ("upcolour", "up", "hair", "hat"),
    "lower": ("downcolour", "down", "clothes"),
}
ATTRIBUTE_POOLINGS = ("global", "parts")

# not in place: the retrieval embedding keeps the BatchNorm output the activation reads
ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.1), "relu": lambda: nn.ReLU()}


class Bottleneck(nn.Module):
    """``Linear(in, out) -> BatchNorm1d -> LeakyReLU/ReLU -> Dropout``: ``(B, in) -> (B, out)``."""

    def __init__(self, in_dim: int, out_dim: int = 512, dropout: float = 0.5, activation: str = "leaky_relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
        self.fc = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        nn.init.kaiming_normal_(self.fc.weight, a=0, mode="fan_out")
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(normalised, f)``: the BatchNorm output before the activation, and ``f`` after
        activation and dropout, both ``(B, out)``."""
        normalised = self.bn(self.fc(x))
        return normalised, self.dropout(self.activation(normalised))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before the layers had names: block.0 = fc, block.1 = bn
        for old, new in (("block.0.", "fc."), ("block.1.", "bn.")):
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class AttributeReweighting(nn.Module):
    """ARM: ``probabilities (B, A) -> (reweighted (B, A), weights (B, K))``, weights summing to 1.

    ``slices`` gives, for each of the ``K`` attributes, its columns in the ``A`` predictions.
    """

    def __init__(self, slices: tuple[slice, ...]):
        super().__init__()
        self.slices = slices
        width = slices[-1].stop
        self.fc = nn.Linear(width, len(slices))
        # (K, A) 0/1 matrix: column a belongs to attribute k; spreads weights over the columns.
        membership = torch.zeros(len(slices), width)
        for k, s in enumerate(slices):
            membership[k, s] = 1.0
        self.register_buffer("membership", membership, persistent=False)

    def forward(self, probabilities: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = self.fc(probabilities).softmax(dim=1)  # (B, K), rows sum to 1
        column_weights = weights @ self.membership  # (B, A)
        return probabilities * column_weights * len(self.slices), weights


class APRNet(nn.Module):
    """APR-Net; see the module docstring for the architecture, the ARM and the returned dicts."""

    def __init__(
        self,
        trunk: nn.Module,  # (B, 3, H, W) -> (B, trunk.out_channels, h, w): ResNetTrunk, OSNetTrunk
        num_ids: int,
        attribute_form: str = "groups",
        bottleneck_dim: int = 512,
        dropout: float = 0.5,
        activation: str = "leaky_relu",
        classifier: str = "linear",
        attribute_pooling: str = "global",
        part_dim: int = 256,
    ):
        super().__init__()
        if attribute_pooling not in ATTRIBUTE_POOLINGS:
            raise ConfigError(f"attribute_pooling must be one of {ATTRIBUTE_POOLINGS}, got {attribute_pooling!r}")
        if attribute_pooling == "parts" and attribute_form != "groups":
            raise ConfigError('attribute_pooling="parts" needs attribute_form="groups" (one classifier per group)')
        self.trunk = trunk
        self.bottleneck = Bottleneck(trunk.out_channels, bottleneck_dim, dropout, activation)
        self.attribute_pooling = attribute_pooling
        # the part (None, "upper" or "lower") each attribute classifier also reads
        self.classifier_parts: tuple[str | None, ...] = (None,)
        self.part_bottlenecks = nn.ModuleDict(
            {part: Bottleneck(trunk.out_channels, part_dim, dropout, activation) for part in PART_GROUPS}
            if attribute_pooling == "parts" else {}
        )
        if attribute_form == "groups":
            self.slices = GROUP_SLICES
            self.classifier_parts = tuple(self._part_of(g.name) for g in GROUPS)
            self.attribute_classifiers = nn.ModuleList(
                nn.Linear(bottleneck_dim + (part_dim if part else 0), g.num_classes)
                for g, part in zip(GROUPS, self.classifier_parts)
            )
        else:
            self.slices = tuple(slice(i, i + 1) for i in range(NUM_BINARY))
            self.attribute_classifiers = nn.ModuleList([nn.Linear(bottleneck_dim, NUM_BINARY)])
        self.arm = AttributeReweighting(self.slices)
        self.num_ids = num_ids
        self.attribute_form = attribute_form
        self.embedding_dim = bottleneck_dim + num_attribute_logits(attribute_form)
        self.classifier = build_classifier(classifier, self.embedding_dim, num_ids)

    def _part_of(self, group: str) -> str | None:
        if self.attribute_pooling == "global":
            return None
        return next((part for part, names in PART_GROUPS.items() if group in names), None)

    def attribute_logits(self, fmap: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """``(B, A)`` logits from the feature map ``(B, C, h, w)`` and the identity feature ``f``."""
        inputs = {None: f}
        if self.attribute_pooling == "parts":
            half = fmap.shape[2] // 2
            for part, rows in (("upper", fmap[:, :, :half]), ("lower", fmap[:, :, half:])):
                inputs[part] = torch.cat([f, self.part_bottlenecks[part](rows.mean(dim=(2, 3)))[1]], dim=1)
        return torch.cat([head(inputs[part]) for head, part in zip(self.attribute_classifiers, self.classifier_parts)],
                         dim=1)

    def attribute_probabilities(self, attribute_logits: torch.Tensor) -> torch.Tensor:
        """``(B, A)`` logits -> per-group softmax (groups form) or sigmoids (binary form)."""
        if self.attribute_form == "binary":
            return attribute_logits.sigmoid()
        return torch.cat([attribute_logits[:, s].softmax(dim=1) for s in self.slices], dim=1)

    def _heads(self, x: torch.Tensor) -> dict:
        # C = trunk.out_channels (512 for ResNet-18/34, 2048 for ResNet-50), D = bottleneck_dim,
        # A = attribute logits (41 groups / 30 binary), K = attributes (12 / 30)
        fmap = self.trunk(x)  # (B, C, h, w)
        pooled = fmap.mean(dim=(2, 3))  # (B, C)
        normalised, f = self.bottleneck(pooled)  # (B, D) each
        attribute_logits = self.attribute_logits(fmap, f)  # (B, A)
        reweighted, arm_weights = self.arm(self.attribute_probabilities(attribute_logits))  # (B, A), (B, K)
        return {"pooled": pooled, "normalised": normalised, "f": f, "attribute_logits": attribute_logits,
                "reweighted": reweighted, "arm_weights": arm_weights}

    def _id_logits(self, heads: dict) -> torch.Tensor | None:
        if self.classifier is None:
            return None
        return self.classifier(torch.cat([heads["f"], heads["reweighted"]], dim=1))  # (B, num_ids)

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(id_logits (B, num_ids), attribute_logits (B, A))`` in either mode: in eval mode
        (dropout off, BatchNorm statistics frozen) they are a distillation teacher's outputs."""
        heads = self._heads(x)
        return self._id_logits(heads), heads["attribute_logits"]

    def forward(self, x: torch.Tensor) -> dict:
        heads = self._heads(x)
        pooled, attribute_logits, arm_weights = heads["pooled"], heads["attribute_logits"], heads["arm_weights"]
        embedding = torch.cat([heads["normalised"], heads["reweighted"]], dim=1)  # (B, D + A), for retrieval
        if not self.training:
            return {"embedding": embedding, "attribute_logits": attribute_logits, "arm_weights": arm_weights}
        id_logits = self._id_logits(heads)
        return {
            # BNNeck-style: the metric losses (triplet, center) see the pooled trunk feature
            "features": pooled,
            "embedding": embedding,
            "id_logits": id_logits,
            "attribute_logits": attribute_logits,
            "arm_weights": arm_weights,
        }


def build(
    num_ids: int,
    attribute_form: str = "groups",
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    depth: int = 50,
    last_stride: int = 1,
    classifier: str = "linear",
    dropout: float = 0.5,
    bottleneck_dim: int = 512,
    activation: str = "leaky_relu",
    attribute_pooling: str = "global",
) -> APRNet:
    """APR-Net on a ResNet-``depth`` trunk (the paper: ResNet-50)."""
    trunk = build_resnet(depth, pretrained=pretrained, weights_path=weights_path, last_stride=last_stride)
    return APRNet(trunk, num_ids, attribute_form, bottleneck_dim, dropout, activation, classifier,
                  attribute_pooling)
