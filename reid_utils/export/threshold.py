"""Variable-length result lists for ``reid_test.txt``: each query's top-K list cut at a distance threshold.

``export_submission(..., threshold=None)`` (the default) writes exactly ``min(top_k, G)`` test
images per query. With ``threshold=VALUE`` each list keeps the images of the top-K list whose
distance is ``<= VALUE`` (nearest first), and at least one, so no line is empty; with
``threshold="auto"`` the value is chosen on the checkpoint's validation split:

1. the split is the one the checkpoint's run held out (:func:`reid_utils.data.split.validation_split`:
   ``split.json`` next to the checkpoint, else the config's ``split_file``, else the seeded split
   made again);
2. its query and gallery images go through the same model, flip setting, distance and
   re-ranking as the export (a threshold on plain cosine distances means nothing on re-ranked ones);
3. :func:`reid_utils.metrics.retrieval.choose_threshold` picks the distance that maximises the F1
   of returned same-identity pairs, every same-identity image counting as a match (the course
   protocol, no camera filtering).

What it does to the course mAP (:func:`threshold_effect`): the course evaluator divides each
query's AP by all its relevant test images, and a cut list only loses terms of the AP sum, so
cutting **never raises** the course mAP; it trades recall for shorter, more precise lists.
:func:`threshold_effect` measures the loss honestly (threshold chosen on one half of the
validation queries, measured on the other, both ways); :func:`measure_threshold_effect` does
it for a checkpoint.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch

from ..data import load_dataset, resolve_data_root
from ..data.split import validation_split
from ..engine.checkpoint import input_size, load_model_from_checkpoint
from ..engine.inference import extract, split_features
from ..engine.runtime import fast_path as make_fast_path, select_device
from ..errors import ExportError, ReidError
from ..metrics.rerank import rerank_distance
from ..metrics.retrieval import choose_threshold, compute_distance, rank_gallery


def parse_threshold(value) -> None | str | float:
    """``None`` / ``"off"`` -> None, ``"auto"`` -> ``"auto"``, a finite number >= 0 -> float;
    anything else raises ExportError."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "off", "none")):
        return None
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0.0 <= number < float("inf"):
        raise ExportError(f"threshold={value!r}, expected 'auto', a distance >= 0, or None (fixed top-k lists)")
    return number


def cut_at_threshold(distmat: torch.Tensor, ranked: np.ndarray, threshold: float, min_results: int = 1) -> list[np.ndarray]:
    """Each row of ``ranked`` (``(Q, k)`` gallery indices, nearest first) cut after its last
    distance ``<= threshold``, keeping at least ``min_results``: a list of ``Q`` arrays, each a
    prefix of its row."""
    ranked = np.asarray(ranked)
    if ranked.size == 0:
        return [row for row in ranked]
    distances = torch.gather(torch.as_tensor(distmat, dtype=torch.float32), 1, torch.as_tensor(ranked)).numpy()
    keep = np.maximum((distances <= threshold).sum(axis=1), min(min_results, ranked.shape[1]))  # sorted rows: a prefix
    return [row[:n] for row, n in zip(ranked, keep)]


def list_average_precision(ranked_match: Sequence[np.ndarray], num_relevant) -> np.ndarray:
    """Course AP of result lists of any length: ``(1 / R) * sum over matches at rank r of
    (matches in the top r) / r``, with ``R`` all relevant images (those not listed count as
    never retrieved). NaN where ``R = 0``.

    >>> list_average_precision([np.array([False, True, True]), np.array([True])], [4, 1]).round(4).tolist()
    [0.2917, 1.0]
    """
    num_relevant = np.asarray(num_relevant, dtype=np.float64)
    ap = np.full(len(num_relevant), np.nan)
    for i, match in enumerate(ranked_match):
        match = np.asarray(match, dtype=bool)
        if num_relevant[i] > 0:
            hits = np.cumsum(match)
            ap[i] = (hits[match] / (np.flatnonzero(match) + 1)).sum() / num_relevant[i]
    return ap


def course_map(lists: Sequence[np.ndarray], q_pids, g_pids) -> float:
    """Course mAP of per-query gallery index lists (every same-identity gallery image is relevant)."""
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    relevant = np.array([(g_pids == pid).sum() for pid in q_pids])
    ap = list_average_precision([g_pids[np.asarray(row, dtype=np.int64)] == pid for row, pid in zip(lists, q_pids)],
                                relevant)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def validation_features(model, checkpoint: str | os.PathLike, ckpt: dict, index, fast_path, *, flip: bool = True,
                        batch_size: int = 256, num_workers: int | None = None, split_file=None,
                        purpose: str = "threshold='auto'") -> dict:
    """``{"query", "gallery", "described"}``: the features (:func:`~reid_utils.engine.inference.split_features`)
    of the checkpoint's validation split, extracted as the export extracts the test images.

    Raises ExportError, saying that ``purpose`` needs the split, when the checkpoint has none
    that fits ``index`` (no validation queries, a split of another dataset, ...).
    """
    try:
        split, described = validation_split(checkpoint, ckpt, index, split_file)
    except ReidError as error:
        raise ExportError(f"{purpose} needs the checkpoint's validation split: {error}") from None
    height, width = input_size(ckpt)
    records = list(split.val_query) + list(split.val_gallery)
    feats = extract(model, records, fast_path, batch_size=batch_size, flip=flip, height=height, width=width,
                    num_workers=num_workers)
    query, gallery = split_features(feats, [len(split.val_query), len(split.val_gallery)])
    return {"query": query, "gallery": gallery, "described": described}


def validation_distances(model, checkpoint: str | os.PathLike, ckpt: dict, index, fast_path, *, flip: bool = True,
                         metric: str = "cosine", rerank: bool = False, batch_size: int = 256,
                         num_workers: int | None = None, split_file=None, features: dict | None = None) -> dict:
    """``{"distmat" (Q, G), "q_pids", "g_pids", "described"}`` of the checkpoint's validation
    split, computed as the export computes test distances (``features``: those of
    :func:`validation_features`, when already extracted)."""
    if features is None:
        try:
            features = validation_features(model, checkpoint, ckpt, index, fast_path, flip=flip, batch_size=batch_size,
                                           num_workers=num_workers, split_file=split_file)
        except ExportError as error:
            raise ExportError(f"{error}; pass a number") from None
    return feature_distances(features, metric=metric, rerank=rerank)


def feature_distances(features: dict, *, metric: str = "cosine", rerank: bool = False) -> dict:
    """:func:`validation_distances` of already extracted :func:`validation_features`."""
    query, gallery = features["query"], features["gallery"]
    distances = rerank_distance if rerank else compute_distance
    distmat = distances(query["embeddings"], gallery["embeddings"], metric=metric)
    return {"distmat": torch.as_tensor(distmat, dtype=torch.float32), "q_pids": query["pids"],
            "g_pids": gallery["pids"], "described": features["described"]}


def pick_threshold(distmat, q_pids, g_pids) -> float:
    """The F1-optimal distance threshold on these pairs, course protocol (no camera filtering)."""
    try:
        return choose_threshold(distmat, q_pids, g_pids)
    except ValueError as error:
        raise ExportError(f"threshold='auto': {error}") from None


def threshold_effect(distmat, q_pids, g_pids, top_k: int = 100, min_results: int = 1) -> dict:
    """Course mAP of fixed top-K lists vs lists cut at a threshold, on labelled (validation) data.

    The threshold is chosen on half of the queries (even rows) and measured on the other half,
    then the other way round; results are averaged over both halves. Returns ``top_k_mAP``,
    ``threshold_mAP``, ``mean_results`` (threshold lists), ``thresholds`` (the two chosen values)
    and ``num_queries``.
    """
    distmat = torch.as_tensor(distmat, dtype=torch.float32)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    folds = [np.arange(len(q_pids))[i::2] for i in range(2)]
    fixed, cut, lengths, thresholds = [], [], [], []
    for choose, measure in ((folds[0], folds[1]), (folds[1], folds[0])):
        if len(choose) == 0 or len(measure) == 0:
            continue
        threshold = pick_threshold(distmat[choose], q_pids[choose], g_pids)
        ranked = rank_gallery(distmat[measure], top_k).numpy()
        lists = cut_at_threshold(distmat[measure], ranked, threshold, min_results)
        fixed.append(course_map(list(ranked), q_pids[measure], g_pids) * len(measure))
        cut.append(course_map(lists, q_pids[measure], g_pids) * len(measure))
        lengths.extend(len(row) for row in lists)
        thresholds.append(threshold)
    n = sum(len(f) for f in folds) if thresholds else 1
    return {
        "top_k": int(top_k),
        "top_k_mAP": float(sum(fixed) / n) if fixed else float("nan"),
        "threshold_mAP": float(sum(cut) / n) if cut else float("nan"),
        "mean_results": float(np.mean(lengths)) if lengths else float("nan"),
        "thresholds": thresholds,
        "num_queries": int(len(q_pids)),
    }


def measure_threshold_effect(checkpoint: str | os.PathLike, data_root: str | os.PathLike | None = None,
                             top_k: int = 100, rerank: bool = False, flip: bool = True, fast_path=None,
                             num_workers: int | None = None) -> dict:
    """:func:`threshold_effect` on the checkpoint's validation split, with the export's settings:
    what ``--threshold auto`` would do to the course mAP. Adds ``described`` (which split)."""
    model, ckpt = load_model_from_checkpoint(checkpoint)
    index = load_dataset(resolve_data_root(data_root))
    fp = fast_path if fast_path is not None else make_fast_path(select_device("auto"))
    val = validation_distances(model, checkpoint, ckpt, index, fp, flip=flip, rerank=rerank, num_workers=num_workers)
    return {**threshold_effect(val["distmat"], val["q_pids"], val["g_pids"], top_k=top_k), "described": val["described"]}
