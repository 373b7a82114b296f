"""LA-Transformer: a Locally Aware Transformer for re-ID (Sharma et al., 2021), with row and column parts.

"Person Re-Identification with a Locally Aware Transformer", plus the course report's
improvement (column parts next to the row parts) and an attribute head.

Backbone: a ViT on a *rectangular* patch grid, built from torchvision's ``VisionTransformer``
parts (a ``conv_proj`` patch embedding, a CLS token and torchvision's ``Encoder``; parameter
names match torchvision's ``vit_b_16``). The default patch size gives a 16x8 grid: patch 16 at
256x128, patch 8 at 128x64. Other input sizes work too (the positional embedding is resized
bicubically to the input's grid).

* ``pretrained=False`` (default, offline, CPU): a "tiny" ViT trained from scratch
  (``embed_dim=192, depth=6, num_heads=3``, MLP 4x).
* ``pretrained=True``: torchvision's ``vit_b_16`` ImageNet weights (768/12/12); the 14x14
  positional embedding is resized to the grid, and for a patch size other than 16 the patch
  kernel is area-resampled (sum-preserving) to the new size. ``weights_path``: a local
  ``vit_b_16`` state dict instead of downloading.

Head, on the encoder's output tokens (CLS ``G`` and local tokens ``f_i`` on the ``gh x gw`` grid):

1. globally enhanced local tokens ``l_i = f_i + lambda * G`` (``lambda_global``, 0.8 as in the
   paper);
2. row parts: ``l`` averaged over all columns and over bands of rows, ``row_parts`` parts
   (default: one per grid row, 16); column parts (the report's improvement, ``use_columns``):
   averaged over all rows and over bands of columns, ``column_parts`` parts (default: one per
   grid column, 8);
3. every part has its own classifier block (``Linear(D, 256)``, BatchNorm, dropout, then a
   linear or cosine identity classifier);
4. an attribute head on the CLS token ``G``.

"Average the two" (rows and columns), exactly: ``id_logits`` is the list of all part
logits, row parts first, then column parts; the loss averages the identity loss over that list,
i.e. over all ``P = row_parts + column_parts`` part classifiers (each branch weighs in
proportion to its number of parts: 16 and 8 by default). The retrieval embedding concatenates
all ``P`` L2-normalised part features and divides by ``sqrt(P)`` (unit norm overall), so the
cosine similarity of two embeddings is the mean over the ``P`` parts of the per-part cosine
similarities: the average of the row and column similarities weighted 16:8.
``part_embedding="mean"`` instead averages the normalised part features (``D``-dim embedding;
cheaper to store for large galleries).

Forward contract (``x`` ``(B, 3, H, W)``, ``D = embed_dim``, ``P`` parts):

* train: ``{"features": (B, P*D) concatenated part features (metric losses),
  "id_logits": list of P (B, num_ids) tensors, or None when num_ids == 0,
  "attribute_logits": (B, A)}``;
* eval: ``{"embedding": (B, P*D) (or (B, D) with part_embedding="mean"),
  "attribute_logits": (B, A)}``.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.vision_transformer import Encoder

from ..errors import ConfigError
from ..schema import check_form
from .backbones import load_pretrained
from .heads import AttributeHead, build_classifier

#: Sizes of the from-scratch default ("tiny") and of torchvision's vit_b_16 (pretrained).
TINY = {"embed_dim": 192, "depth": 6, "num_heads": 3}
VIT_B_16 = {"embed_dim": 768, "depth": 12, "num_heads": 12}
VIT_B_16_WEIGHTS = "ViT_B_16_Weights.IMAGENET1K_V1"
PART_EMBEDDINGS = ("concat", "mean")


def resize_pos_embedding(
    pos_embedding: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int]
) -> torch.Tensor:
    """``(1, 1 + gh*gw, D)`` CLS + grid positional embedding -> the same on ``new_grid`` (bicubic)."""
    if tuple(old_grid) == tuple(new_grid):
        return pos_embedding
    cls, grid = pos_embedding[:, :1], pos_embedding[:, 1:]
    d = grid.shape[-1]
    grid = grid.reshape(1, *old_grid, d).permute(0, 3, 1, 2)  # (1, D, gh, gw)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)


def enhance_local_tokens(tokens: torch.Tensor, lambda_global: float) -> torch.Tensor:
    """Globally enhanced local tokens: ``(B, 1 + N, D)`` with CLS first -> ``(B, N, D)`` ``f_i + lambda * G``."""
    return tokens[:, 1:] + lambda_global * tokens[:, :1]


def pool_parts(
    local: torch.Tensor, grid: tuple[int, int], row_parts: int, column_parts: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local tokens ``(B, gh*gw, D)`` -> row parts ``(B, row_parts, D)``, column parts ``(B, column_parts, D)``.

    Row part ``r`` is the mean over all columns of the ``r``-th band of rows (adaptive pooling:
    with ``row_parts == gh`` one part per grid row); column parts likewise along the width.
    ``column_parts == 0`` gives an empty ``(B, 0, D)`` tensor.
    """
    b, _, d = local.shape
    fmap = local.transpose(1, 2).reshape(b, d, *grid)  # (B, D, gh, gw)
    rows = F.adaptive_avg_pool2d(fmap, (row_parts, 1)).flatten(2).transpose(1, 2)  # (B, R, D)
    if column_parts == 0:
        return rows, local.new_zeros(b, 0, d)
    columns = F.adaptive_avg_pool2d(fmap, (1, column_parts)).flatten(2).transpose(1, 2)  # (B, Cn, D)
    return rows, columns


class RectangularViT(nn.Module):
    """A ViT over a ``gh x gw`` patch grid (torchvision parameter names).

    ``forward(x)``: ``(B, 3, H, W) -> (tokens (B, 1 + gh*gw, D) after the final LayerNorm, (gh, gw))``
    with the CLS token first; ``gh = H / patch_size``, ``gw = W / patch_size``.
    """

    def __init__(
        self,
        image_size: tuple[int, int],
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        height, width = image_size
        if height % patch_size or width % patch_size:
            raise ConfigError(f"image size {height}x{width} is not divisible by patch_size {patch_size}")
        if embed_dim % num_heads:
            raise ConfigError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.patch_size, self.embed_dim = patch_size, embed_dim
        self.grid = (height // patch_size, width // patch_size)
        self.conv_proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        fan_in = 3 * patch_size * patch_size
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        self.class_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        seq_length = 1 + self.grid[0] * self.grid[1]
        self.encoder = Encoder(seq_length, depth, num_heads, embed_dim, mlp_dim, dropout, attention_dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        b, _, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise ValueError(f"input size {h}x{w} is not divisible by the patch size {p}")
        patches = self.conv_proj(x)  # (B, D, gh, gw)
        grid = tuple(patches.shape[-2:])
        tokens = torch.cat([self.class_token.expand(b, -1, -1), patches.flatten(2).transpose(1, 2)], dim=1)
        tokens = tokens + resize_pos_embedding(self.encoder.pos_embedding, self.grid, grid)  # (B, 1+N, D)
        tokens = self.encoder.ln(self.encoder.layers(self.encoder.dropout(tokens)))
        return tokens, grid


class PartClassifier(nn.Module):
    """One part's classifier block: ``Linear(D, bottleneck)``, BatchNorm, dropout, identity classifier.

    ``(B, D) -> (B, num_ids)``.
    """

    def __init__(self, in_dim: int, num_ids: int, bottleneck_dim: int, classifier: str, dropout: float):
        super().__init__()
        self.bottleneck = nn.Sequential(
            nn.Linear(in_dim, bottleneck_dim), nn.BatchNorm1d(bottleneck_dim), nn.Dropout(dropout)
        )
        self.classifier = build_classifier(classifier, bottleneck_dim, num_ids)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.bottleneck(x))


class LATransformer(nn.Module):
    """Rectangular ViT + globally enhanced local tokens + row/column part classifiers + attribute head.

    See the module docstring for the forward contract.
    """

    def __init__(
        self,
        backbone: RectangularViT,
        num_ids: int,
        attribute_form: str = "groups",
        lambda_global: float = 0.8,
        row_parts: int | None = None,
        column_parts: int | None = None,
        use_columns: bool = True,
        classifier: str = "linear",
        bottleneck_dim: int = 256,
        dropout: float = 0.0,
        part_embedding: str = "concat",
    ):
        super().__init__()
        check_form(attribute_form)
        if part_embedding not in PART_EMBEDDINGS:
            raise ConfigError(f"part_embedding must be one of {PART_EMBEDDINGS}, got {part_embedding!r}")
        self.backbone = backbone
        self.num_ids, self.attribute_form = num_ids, attribute_form
        self.lambda_global, self.part_embedding = lambda_global, part_embedding
        self.num_row_parts = backbone.grid[0] if row_parts is None else row_parts
        if not use_columns:
            self.num_column_parts = 0
        else:
            self.num_column_parts = backbone.grid[1] if column_parts is None else column_parts
        if self.num_row_parts < 1 or (use_columns and self.num_column_parts < 1):
            raise ConfigError(
                f"row_parts and column_parts must be >= 1, got {self.num_row_parts} and {self.num_column_parts}"
            )
        self.num_parts = self.num_row_parts + self.num_column_parts
        d = backbone.embed_dim
        self.embedding_dim = d if part_embedding == "mean" else self.num_parts * d
        build_classifier(classifier, d, 0)  # validates the name even when num_ids == 0
        self.part_classifiers = nn.ModuleList(
            PartClassifier(d, num_ids, bottleneck_dim, classifier, dropout)
            for _ in range(self.num_parts if num_ids else 0)
        )
        self.attribute_head = AttributeHead(d, attribute_form, dropout)

    def parts(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Encoder tokens ``(B, 1 + N, D)`` -> part features ``(B, P, D)``, row parts first."""
        local = enhance_local_tokens(tokens, self.lambda_global)  # (B, N, D)
        rows, columns = pool_parts(local, grid, self.num_row_parts, self.num_column_parts)
        return torch.cat([rows, columns], dim=1)  # (B, P, D)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor] | None]:
        tokens, grid = self.backbone(x)  # (B, 1+N, D)
        parts = self.parts(tokens, grid)  # (B, P, D)
        attribute_logits = self.attribute_head(tokens[:, 0])  # (B, A) from the CLS token
        if self.training:
            id_logits = [head(parts[:, i]) for i, head in enumerate(self.part_classifiers)] or None
            return {"features": parts.flatten(1), "id_logits": id_logits, "attribute_logits": attribute_logits}
        normalised = F.normalize(parts, dim=-1)  # (B, P, D)
        if self.part_embedding == "mean":
            embedding = normalised.mean(dim=1)  # (B, D)
        else:
            embedding = normalised.flatten(1) / math.sqrt(self.num_parts)  # (B, P*D), unit norm
        return {"embedding": embedding, "attribute_logits": attribute_logits}


def _uninitialised(factory, *args, **kwargs) -> nn.Module:
    """Build a module without running its (slow) init: for modules that pretrained weights will fill."""
    with torch.device("meta"):
        module = factory(*args, **kwargs)
    return module.to_empty(device="cpu")


def _vit_b_16_state_dict(
    weights_path: str | Path | None, grid: tuple[int, int], patch_size: int
) -> dict[str, torch.Tensor]:
    """torchvision's ``vit_b_16`` weights (download or file) adapted to a ``grid`` of ``patch_size`` patches."""
    reference = _uninitialised(torchvision.models.vit_b_16)  # the 224x224 model the weights belong to
    load_pretrained(
        reference, VIT_B_16_WEIGHTS, weights_path, ignore_unexpected=("heads.",), allow_missing=("heads.",)
    )
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("heads.")}
    state["encoder.pos_embedding"] = resize_pos_embedding(state["encoder.pos_embedding"], (14, 14), grid)
    if patch_size != 16:  # area-resample the patch kernel, keeping its response to flat patches
        kernel = state["conv_proj.weight"]  # (768, 3, 16, 16)
        resized = F.interpolate(kernel, size=(patch_size, patch_size), mode="area") if patch_size < 16 else (
            F.interpolate(kernel, size=(patch_size, patch_size), mode="bilinear", align_corners=False)
        )
        state["conv_proj.weight"] = resized * (16 / patch_size) ** 2
    return state


def build(
    num_ids: int,
    attribute_form: str | None = "groups",
    pretrained: bool = False,
    weights_path: str | Path | None = None,
    *,
    image_size: tuple[int, int] = (256, 128),
    patch_size: int | None = None,
    embed_dim: int | None = None,
    depth: int | None = None,
    num_heads: int | None = None,
    mlp_ratio: float = 4.0,
    vit_dropout: float = 0.0,
    lambda_global: float = 0.8,
    row_parts: int | None = None,
    column_parts: int | None = None,
    use_columns: bool = True,
    classifier: str = "linear",
    bottleneck_dim: int = 256,
    dropout: float = 0.0,
    part_embedding: str = "concat",
) -> LATransformer:
    """Build :class:`LATransformer`.

    Args:
        num_ids: training identities (0: no part classifiers, ``id_logits`` is None).
        attribute_form: ``"groups"`` (41 logits, default) or ``"binary"`` (30).
        pretrained: ``vit_b_16`` ImageNet weights (needs internet or the torch hub cache);
            fixes embed_dim/depth/num_heads to 768/12/12 and mlp_ratio to 4.
        weights_path: a local ``vit_b_16`` state dict (implies the ViT-B/16 sizes).
        image_size: ``(height, width)`` of the training images; sets the positional embedding's
            grid and the default part counts (other sizes still run, see the module docstring).
        patch_size: default ``height // 16`` (16 at 256x128, 8 at 128x64: a 16x8 grid).
        embed_dim, depth, num_heads: ViT sizes; default the tiny 192/6/3 from scratch, or
            ViT-B/16's with pretrained weights.
        mlp_ratio: MLP width / embed_dim.
        vit_dropout: dropout inside the encoder (attention and MLP).
        lambda_global: ``lambda`` of ``f_i + lambda * G``.
        row_parts: default the grid height (16).
        column_parts: default the grid width (8); ignored when ``use_columns=False``.
        use_columns: add the column parts (the report's improvement).
        classifier: ``"linear"`` or ``"cosine"`` (AM-Softmax) part classifiers.
        bottleneck_dim: width of each part classifier's bottleneck.
        dropout: in the part classifier blocks and the attribute head (the paper used 0.5).
        part_embedding: ``"concat"`` (P*D, default) or ``"mean"`` (D).
    """
    height, width = (int(v) for v in image_size)
    patch_size = patch_size or max(height // 16, 1)
    sizes = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}
    from_vit_b = pretrained or weights_path is not None
    if from_vit_b:
        wrong = {k: v for k, v in sizes.items() if v is not None and v != VIT_B_16[k]}
        if wrong or mlp_ratio != 4.0:
            raise ConfigError(
                f"pretrained vit_b_16 weights need embed_dim=768, depth=12, num_heads=12, mlp_ratio=4; "
                f"got {wrong or {'mlp_ratio': mlp_ratio}} (leave them unset, or pass pretrained=False)"
            )
    sizes = {k: (VIT_B_16 if from_vit_b else TINY)[k] if v is None else v for k, v in sizes.items()}
    state = None
    if from_vit_b:  # before building our model, so an offline failure is quick
        if height % patch_size or width % patch_size:
            raise ConfigError(f"image size {height}x{width} is not divisible by patch_size {patch_size}")
        state = _vit_b_16_state_dict(weights_path, (height // patch_size, width // patch_size), patch_size)
    vit_args = ((height, width), patch_size, sizes["embed_dim"], sizes["depth"], sizes["num_heads"])
    vit_kwargs = dict(
        mlp_dim=int(sizes["embed_dim"] * mlp_ratio), dropout=vit_dropout, attention_dropout=vit_dropout
    )
    if state is None:
        backbone = RectangularViT(*vit_args, **vit_kwargs)
    else:  # every parameter comes from the weights: skip the random init
        backbone = _uninitialised(RectangularViT, *vit_args, **vit_kwargs)
        backbone.load_state_dict(state)
    return LATransformer(
        backbone,
        num_ids,
        attribute_form or "groups",
        lambda_global=lambda_global,
        row_parts=row_parts,
        column_parts=column_parts,
        use_columns=use_columns,
        classifier=classifier,
        bottleneck_dim=bottleneck_dim,
        dropout=dropout,
        part_embedding=part_embedding,
    )
