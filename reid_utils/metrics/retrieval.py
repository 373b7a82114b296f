"""Retrieval utilities on extracted features and attribute probabilities (pure torch, batched).

Conventions: ``Q`` queries, ``G`` gallery items, ``D`` feature size. A ``distmat`` is a
``(Q, G)`` float tensor, smaller = more similar. Attribute probabilities are the list of 12
``(N, C_g)`` tensors returned by :func:`reid_utils.schema.group_probabilities`.
Inputs may be numpy arrays or tensors; outputs are tensors (``.numpy()`` for the metrics).

* Distances: :func:`normalize`, :func:`compute_distance` (Euclidean or cosine, chunked).
* :func:`attribute_weighted_distance`: add attribute disagreement (attention report ablation).
* :func:`rank_gallery`: top-k gallery indices per query.
* :func:`threshold_results`, :func:`choose_threshold`, :func:`threshold_scores`: variable-length
  result lists from a distance threshold chosen on validation.
* :func:`junk_scores`, :func:`flag_junk`, :func:`demote_junk`: low-confidence gallery images last
  (APR report idea).
* :func:`attribute_search`: rank the gallery by a described person, e.g.
  ``{"upcolour": "red", "backpack": "yes", "gender": "female"}``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..schema import GROUP_NAMES, GROUPS, NUM_GROUPS, group_index

METRICS = ("euclidean", "cosine")


def _tensor(x, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(dtype)


def normalize(features: torch.Tensor) -> torch.Tensor:
    """L2-normalise each row: ``(N, D) -> (N, D)`` with unit norms (zero rows stay zero)."""
    return F.normalize(_tensor(features), p=2, dim=1)


def compute_distance(
    q_feats: torch.Tensor,
    g_feats: torch.Tensor,
    metric: str = "euclidean",
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Query-gallery distance matrix, computed ``chunk_size`` queries at a time.

    * ``"euclidean"``: the true (not squared) Euclidean distance ``||q - g||``, via
      ``sqrt(max(|q|^2 + |g|^2 - 2 q.g, 0))``; the ranking equals that of the squared distance.
    * ``"cosine"``: ``1 - cos(q, g)`` in ``[0, 2]`` (features are normalised here).

    Peak extra memory is ``chunk_size x G`` floats.

    Args:
        q_feats: ``(Q, D)``; g_feats: ``(G, D)``.
    Returns:
        ``(Q, G)`` float32 distmat.

    >>> compute_distance(torch.tensor([[0., 0.]]), torch.tensor([[3., 4.], [0., 1.]]))
    tensor([[5., 1.]])
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    q_feats, g_feats = _tensor(q_feats), _tensor(g_feats)
    if q_feats.ndim != 2 or g_feats.ndim != 2 or q_feats.shape[1] != g_feats.shape[1]:
        raise ValueError(f"expected (Q, D) and (G, D) features, got {tuple(q_feats.shape)} and {tuple(g_feats.shape)}")
    if metric == "cosine":
        q_feats, g_feats = normalize(q_feats), normalize(g_feats)
    g_sq = g_feats.pow(2).sum(dim=1)  # (G,)
    distmat = q_feats.new_empty((len(q_feats), len(g_feats)))
    for start in range(0, len(q_feats), chunk_size):
        q = q_feats[start : start + chunk_size]  # (c, D)
        sim = q @ g_feats.t()  # (c, G)
        if metric == "cosine":
            distmat[start : start + len(q)] = (1.0 - sim).clamp_(0.0, 2.0)
        else:
            d2 = q.pow(2).sum(dim=1, keepdim=True) + g_sq[None, :] - 2.0 * sim
            distmat[start : start + len(q)] = d2.clamp_(min=0.0).sqrt_()
    return distmat


def attribute_disagreement(
    q_attribute_probs: Sequence[torch.Tensor], g_attribute_probs: Sequence[torch.Tensor]
) -> torch.Tensor:
    """``1 - (1/12) sum_g <p_q^g, p_g^g>``: ``(Q, G)`` in ``[0, 1]``.

    ``<p_q, p_g>`` is the probability that two independent draws from the two predicted
    distributions of a group agree; 0 disagreement = both certain and equal on every group.
    """
    _check_probs(q_attribute_probs, "q_attribute_probs")
    _check_probs(g_attribute_probs, "g_attribute_probs")
    # sum over groups of block inner products == one product of the concatenated (N, 41) vectors
    q_all = torch.cat([_tensor(p) for p in q_attribute_probs], dim=1)  # (Q, 41)
    g_all = torch.cat([_tensor(p) for p in g_attribute_probs], dim=1)  # (G, 41)
    return 1.0 - (q_all @ g_all.t()) / NUM_GROUPS


def attribute_weighted_distance(
    distmat: torch.Tensor,
    q_attribute_probs: Sequence[torch.Tensor],
    g_attribute_probs: Sequence[torch.Tensor],
    weight: float,
) -> torch.Tensor:
    """``distmat + weight * attribute_disagreement(q, g)`` (the attention report's ablation).

    Args:
        distmat: ``(Q, G)``; q_attribute_probs: 12 ``(Q, C_g)``; g_attribute_probs: 12 ``(G, C_g)``.
        weight: scale of the attribute term, in distance units (tune it on validation).
    """
    return _tensor(distmat) + weight * attribute_disagreement(q_attribute_probs, g_attribute_probs)


def rank_gallery(distmat: torch.Tensor, top_k: int) -> torch.Tensor:
    """Indices of the ``top_k`` nearest gallery items per query, best first: ``(Q, min(top_k, G))``.

    Uses ``torch.topk`` (``O(G)`` per query), not a full argsort.
    """
    distmat = _tensor(distmat)
    k = min(int(top_k), distmat.shape[1])
    return torch.topk(distmat, k, dim=1, largest=False, sorted=True).indices


# ---------------------------------------------------------------------------------------------
# Distance threshold: variable-length result lists


def threshold_results(distmat: torch.Tensor, threshold: float, max_results: int | None = None) -> list[np.ndarray]:
    """For each query, the gallery indices with ``distance <= threshold``, nearest first.

    Returns a list of ``Q`` int64 arrays of varying length (possibly empty), each cut to
    ``max_results`` when given.
    """
    distmat = _tensor(distmat)
    results = []
    for row in distmat:
        idx = torch.nonzero(row <= threshold).squeeze(1)
        idx = idx[torch.argsort(row[idx], stable=True)]
        results.append((idx[:max_results] if max_results is not None else idx).cpu().numpy())
    return results


def _pair_masks(q_pids, g_pids, q_camids=None, g_camids=None, rows: slice = slice(None)):
    """(rows, G) masks ``match`` and ``valid``: junk (pid -1) gallery items and, when cameras
    are given, same-pid same-camera pairs are not valid (Market protocol)."""
    match = q_pids[rows, None] == g_pids[None, :]
    valid = (g_pids != -1)[None, :].expand_as(match).clone()
    if q_camids is not None and g_camids is not None:
        valid &= ~(match & (q_camids[rows, None] == g_camids[None, :]))
    return match & valid, valid


def choose_threshold(
    distmat: torch.Tensor,
    q_pids,
    g_pids,
    q_camids=None,
    g_camids=None,
    max_candidates: int = 2000,
    chunk_size: int = 512,
) -> float:
    """The distance threshold that maximises the F1 of returned matches on validation.

    Criterion (micro-averaged over all valid query-gallery pairs): a pair is *returned* when
    ``distance <= t`` and *relevant* when the pids agree;
    ``precision = relevant returned / returned``, ``recall = relevant returned / relevant``,
    ``F1 = 2PR / (P + R)``. Gallery items with pid -1 are ignored; with cameras given,
    same-pid same-camera pairs are ignored too (Market protocol). F1 can only peak right at a
    relevant pair's distance, so the candidates are those distances (quantiles of them if there
    are more than ``max_candidates``); the search is exact in that case.

    Args:
        distmat: ``(Q, G)``; q_pids ``(Q,)``, g_pids ``(G,)``; optional q_camids, g_camids.
    Returns:
        the threshold (float); use it with :func:`threshold_results`.
    """
    distmat = _tensor(distmat)
    q_pids, g_pids = _tensor(q_pids, torch.long), _tensor(g_pids, torch.long)
    if q_camids is not None:
        q_camids, g_camids = _tensor(q_camids, torch.long), _tensor(g_camids, torch.long)
    positives = []
    for start in range(0, len(distmat), chunk_size):
        rows = slice(start, start + chunk_size)
        match, _ = _pair_masks(q_pids, g_pids, q_camids, g_camids, rows)
        positives.append(distmat[rows][match])
    positives = torch.cat(positives).sort().values  # (P,)
    if len(positives) == 0:
        raise ValueError("choose_threshold: no query has a relevant gallery item; cannot choose a threshold")
    candidates = positives.unique()
    if len(candidates) > max_candidates:
        candidates = torch.quantile(positives.double(), torch.linspace(0, 1, max_candidates, dtype=torch.float64))
        candidates = candidates.float().unique()
    # returned(t) for every candidate: bucket every valid pair by the first candidate >= distance
    returned = torch.zeros(len(candidates) + 1, dtype=torch.float64)
    for start in range(0, len(distmat), chunk_size):
        rows = slice(start, start + chunk_size)
        _, valid = _pair_masks(q_pids, g_pids, q_camids, g_camids, rows)
        buckets = torch.bucketize(distmat[rows][valid], candidates, right=False)
        returned += torch.bincount(buckets, minlength=len(candidates) + 1).double()
    returned = returned.cumsum(0)[:-1]  # (T,) pairs with distance <= candidate
    true_pos = torch.searchsorted(positives, candidates, right=True).double()  # (T,)
    precision = true_pos / returned.clamp_min(1)
    recall = true_pos / len(positives)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    return float(candidates[int(f1.argmax())])


def threshold_scores(distmat: torch.Tensor, q_pids, g_pids, threshold: float, q_camids=None, g_camids=None) -> dict:
    """Micro precision, recall and F1 of thresholded results (the :func:`choose_threshold`
    criterion), plus the mean number of results per query."""
    distmat = _tensor(distmat)
    q_pids, g_pids = _tensor(q_pids, torch.long), _tensor(g_pids, torch.long)
    if q_camids is not None:
        q_camids, g_camids = _tensor(q_camids, torch.long), _tensor(g_camids, torch.long)
    match, valid = _pair_masks(q_pids, g_pids, q_camids, g_camids)
    returned = (distmat <= threshold) & valid
    tp = int((returned & match).sum())
    n_ret, n_rel = int(returned.sum()), int(match.sum())
    precision = tp / n_ret if n_ret else 0.0
    recall = tp / n_rel if n_rel else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "mean_results": n_ret / max(len(distmat), 1)}


# ---------------------------------------------------------------------------------------------
# Junk flagging


def junk_scores(attribute_probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Confidence of each image's attribute predictions: mean over the 12 groups of the max
    class probability, ``(N,)``. Low = every prediction unsure (likely junk / not a person)."""
    _check_probs(attribute_probs, "attribute_probs")
    return torch.stack([_tensor(p).max(dim=1).values for p in attribute_probs], dim=1).mean(dim=1)


def flag_junk(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(N,)`` bool mask: ``scores < threshold``."""
    return _tensor(scores) < threshold


def demote_junk(distmat: torch.Tensor, junk_mask: torch.Tensor) -> torch.Tensor:
    """Copy of ``distmat`` where flagged gallery columns rank after every unflagged one.

    Adds ``max - min + 1`` to the flagged columns, so the order among flagged items (and among
    unflagged ones) is kept. ``distmat (Q, G)``, ``junk_mask (G,)`` bool.
    """
    distmat = _tensor(distmat).clone()
    junk_mask = torch.as_tensor(junk_mask, dtype=torch.bool)
    if junk_mask.shape != (distmat.shape[1],):
        raise ValueError(f"junk_mask must have shape ({distmat.shape[1]},), got {tuple(junk_mask.shape)}")
    if distmat.numel() and bool(junk_mask.any()):
        distmat[:, junk_mask] += distmat.max() - distmat.min() + 1.0
    return distmat


# ---------------------------------------------------------------------------------------------
# Attribute-based person search


def parse_attribute_query(query: Mapping[str, str]) -> list[tuple[int, int]]:
    """``{"upcolour": "red", ...}`` -> ``[(group index, class index), ...]``.

    Names are case-insensitive. Unknown group -> ``KeyError`` listing the groups; unknown class
    -> ``ValueError`` listing that group's classes; an empty query -> ``ValueError``.
    """
    if not query:
        raise ValueError(f"empty attribute query; give e.g. {{'upcolour': 'red'}} with groups from: {', '.join(GROUP_NAMES)}")
    parsed = []
    for name, value in query.items():
        g = group_index(str(name).strip().lower())
        classes = GROUPS[g].classes
        key = str(value).strip().lower()
        if key not in classes:
            raise ValueError(f"unknown class {value!r} for attribute group {name!r}; valid: {', '.join(classes)}")
        parsed.append((g, classes.index(key)))
    return parsed


def matches_attribute_query(query: Mapping[str, str], records: Sequence) -> np.ndarray:
    """``(N,)`` bool: which ``records`` truly have every attribute of ``query`` (e.g.
    ``{"upcolour": "red", "gender": "female"}``); unknown attributes count as no match."""
    wanted = parse_attribute_query(query)  # [(group index, class index), ...]; unknown names raise
    if not len(records):
        return np.zeros(0, dtype=bool)
    groups = np.stack([np.asarray(r.attributes) for r in records])  # (N, 12), -1 unknown
    return np.logical_and.reduce([groups[:, g] == c for g, c in wanted])


def attribute_search(
    query: Mapping[str, str], g_attribute_probs: Sequence[torch.Tensor], top_k: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank gallery images by how well their predicted attributes match a described person.

    ``score_i = sum_{(group, class) in query} log p_i^group[class]`` (the log-probability that
    image ``i`` has every requested attribute, treating groups as independent).

    Args:
        query: e.g. ``{"upcolour": "red", "backpack": "yes", "gender": "female"}``; group and
            class names from :data:`reid_utils.schema.GROUPS`.
        g_attribute_probs: 12 ``(G, C_g)`` probability tensors.
        top_k: number of results (at most ``G``).
    Returns:
        ``(indices (k,) int64, scores (k,) float)``, best first.
    """
    _check_probs(g_attribute_probs, "g_attribute_probs")
    scores = sum(_tensor(g_attribute_probs[g])[:, c].clamp_min(1e-12).log() for g, c in parse_attribute_query(query))
    k = min(int(top_k), len(scores))
    top = torch.topk(scores, k, largest=True, sorted=True)
    return top.indices, top.values


def _check_probs(probs: Sequence[torch.Tensor], name: str) -> None:
    if len(probs) != NUM_GROUPS:
        raise ValueError(f"{name} must be a list of {NUM_GROUPS} (N, C) tensors (group_probabilities), got {len(probs)}")
    for p, group in zip(probs, GROUPS):
        if p.shape[-1] != group.num_classes:
            raise ValueError(f"{name}: group {group.name!r} needs {group.num_classes} columns, got {tuple(p.shape)}")
