"""What a search asks and how the gallery is ranked (pure: tensors in, tensors out).

Three kinds of search, one ranking key each (``score``):

* **by image**: ``score = distance``, the cosine distance ``1 - cos(q, g)`` in ``[0, 2]``
  between the query and each gallery image, smallest first. Several query images of one
  person are one query: their L2-normalised embeddings are averaged (:func:`query_embedding`).
* **by attributes**: ``score = probability``, the predicted probability that the image shows
  every attribute of the description (product over the named groups, treating them as
  independent), largest first.
* **both**: the re-ID ranking filtered by the description, then filled: the images whose
  predicted attributes match the description (the predicted class of every named group is the
  requested one) come first, nearest first, then the others, nearest first; ``score =
  distance``. A filter alone would return fewer than ``top_k`` hits (often none on a small
  gallery); a weighted sum of distance and probability would need a weight tuned per model
  and gallery, since the two live on unrelated scales.

Every search returns ``min(top_k, gallery size)`` hits, with ``matches`` (does the prediction
match the description; None without one) and ``probability`` for each.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import ConfigError
from ..metrics.retrieval import compute_distance, normalize, parse_attribute_query
from ..schema import GROUP_NAMES, GROUPS, group_probabilities, predict_groups


def parse_where(where: str | Mapping[str, str]) -> dict[str, str]:
    """``"upcolour=red,backpack=yes"`` (or a dict) -> ``{"upcolour": "red", "backpack": "yes"}``.

    Group and value names as :data:`reid_utils.schema.GROUPS` spells them, case-insensitive.
    A misspelt group or value raises a one-line ConfigError listing the valid ones.

    >>> parse_where("upcolour=Red, backpack=yes")
    {'upcolour': 'red', 'backpack': 'yes'}
    """
    if isinstance(where, Mapping):
        items = [(str(k), str(v)) for k, v in where.items()]
    else:
        items = []
        for part in (p.strip() for p in str(where).split(",")):
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise ConfigError(f"--where {where!r}: {part!r} is not group=value (e.g. \"upcolour=red,backpack=yes\")")
            items.append((name, value))
    if not items:
        raise ConfigError(f"--where {where!r} names no attribute; give group=value pairs with groups from: "
                          f"{', '.join(GROUP_NAMES)}")
    parsed: dict[str, str] = {}
    for name, value in items:
        name, value = name.strip().lower(), value.strip().lower()
        if name not in GROUP_NAMES:
            raise ConfigError(f"--where: unknown attribute group {name!r}; valid groups: {', '.join(GROUP_NAMES)}")
        classes = GROUPS[GROUP_NAMES.index(name)].classes
        if value not in classes:
            raise ConfigError(f"--where: {value!r} is not a value of {name!r}; valid values: {', '.join(classes)}")
        if name in parsed and parsed[name] != value:
            raise ConfigError(f"--where: group {name!r} is given twice ({parsed[name]!r} and {value!r})")
        parsed[name] = value
    return parsed


def describe(where: Mapping[str, str]) -> str:
    """``{"upcolour": "red"}`` -> ``"upcolour=red"`` (the form :func:`parse_where` reads)."""
    return ",".join(f"{k}={v}" for k, v in where.items())


def query_embedding(embeddings: torch.Tensor) -> torch.Tensor:
    """``(n, D)`` embeddings of one person's query images -> ``(D,)``: the mean of their L2-normalised rows.

    >>> query_embedding(torch.tensor([[2., 0.], [0., 3.]]))
    tensor([0.5000, 0.5000])
    """
    return normalize(embeddings).mean(dim=0)


def description_probability(attribute_logits: torch.Tensor, form: str, where: Mapping[str, str]) -> torch.Tensor:
    """``(G,)`` predicted probability that each image has every attribute of ``where``.

    Args:
        attribute_logits: ``(G, A)`` model outputs; form: ``"groups"`` or ``"binary"``.
        where: ``{group: value}`` as :func:`parse_where` returns it.
    """
    probs = group_probabilities(attribute_logits.float(), form)  # 12 x (G, C_g)
    result = torch.ones(attribute_logits.shape[0])
    for g, c in parse_attribute_query(where):
        result = result * probs[g][:, c]
    return result


def predicted_match(attribute_logits: torch.Tensor, form: str, where: Mapping[str, str]) -> torch.Tensor:
    """``(G,)`` bool: the predicted class (argmax) of every group named in ``where`` is the requested one."""
    predicted = predict_groups(attribute_logits.float(), form)  # (G, 12)
    result = torch.ones(attribute_logits.shape[0], dtype=torch.bool)
    for g, c in parse_attribute_query(where):
        result &= predicted[:, g] == c
    return result


def rank(
    top_k: int,
    q_embedding: torch.Tensor | None = None,
    g_embeddings: torch.Tensor | None = None,
    probability: torch.Tensor | None = None,
    matches: torch.Tensor | None = None,
    exclude: torch.Tensor | None = None,
) -> dict[str, torch.Tensor | None]:
    """The ``top_k`` gallery images of a search, best first (see the module docstring).

    Args:
        q_embedding: ``(D,)`` query (None: search by attributes only).
        g_embeddings: ``(G, D)`` gallery embeddings (needed with ``q_embedding``).
        probability: ``(G,)`` :func:`description_probability` (None: search by image only).
        matches: ``(G,)`` bool :func:`predicted_match` (needed with ``probability``).
        exclude: ``(G,)`` bool, images never returned (the query images themselves).
    Returns:
        ``{"indices": (k,) int64, "score": (k,), "distance": (k,) or None, "probability": (k,)
        or None, "matches": (k,) bool or None}`` with ``k = min(top_k, images not excluded)``.

    >>> rank(2, torch.tensor([1., 0.]), torch.tensor([[0., 1.], [1., 0.], [1., 1.]]),
    ...      torch.tensor([.9, .2, .6]), torch.tensor([True, False, True]))["indices"]
    tensor([2, 0])
    """
    if q_embedding is None and probability is None:
        raise ConfigError("a search needs query images, an attribute description, or both")
    if probability is not None and matches is None:
        raise ValueError("rank: matches must be given with probability")
    distance = None
    if q_embedding is not None:
        distance = compute_distance(q_embedding[None], g_embeddings, metric="cosine")[0]  # (G,) in [0, 2]
    if distance is None:
        key = -probability  # most probable first
    elif probability is None:
        key = distance
    else:
        key = distance + 3.0 * (~matches).float()  # matches first: every distance is below 3
    if exclude is not None:
        key = key.masked_fill(exclude, float("inf"))
    available = len(key) if exclude is None else int((~exclude).sum())
    indices = torch.topk(key, min(int(top_k), available), largest=False, sorted=True).indices

    def pick(values):
        return None if values is None else values[indices]

    return {
        "indices": indices,
        "score": probability[indices] if distance is None else distance[indices],
        "distance": pick(distance),
        "probability": pick(probability),
        "matches": pick(matches),
    }
