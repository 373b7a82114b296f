"""Scoring a submission against a ground truth, as the course's evaluator does.

The synthetic sample ships its hidden answers (``ground_truth.csv``); the real course data does
not, so :func:`score_submission` returns None there.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import load_dataset
from ..errors import ExportError
from ..export.submission import (
    CLASSIFICATION_FILE,
    REID_FILE,
    read_classification_csv,
    read_reid_txt,
    validate_classification,
    validate_reid_lines,
)
from ..metrics.scores import attribute_metrics
from ..schema import COURSE_COLUMNS, course_to_groups
from ..synthetic import GROUND_TRUTH_FILE


def submission_average_precision(ranked_match: np.ndarray, num_relevant: np.ndarray) -> np.ndarray:
    """Per-query AP of submitted (truncated) rankings, the course evaluator's definition.

    ``AP = (1 / num_relevant) * sum over ranks r with a match of (matches in the top r) / r``:
    relevant images missing from the submitted list count as never retrieved.

    Args:
        ranked_match: ``(Q, k)`` bool, True where the submitted image has the query's identity.
        num_relevant: ``(Q,)`` test images of the query's identity (all of them, not only the top k).

    >>> submission_average_precision(np.array([[False, True, True]]), np.array([4])).round(4).tolist()  # (1/2 + 2/3) / 4
    [0.2917]
    """
    ranked_match = np.asarray(ranked_match, dtype=bool)
    num_relevant = np.asarray(num_relevant, dtype=np.float64)
    hits = np.cumsum(ranked_match, axis=1)
    ranks = np.arange(1, ranked_match.shape[1] + 1)
    precision_sum = (np.where(ranked_match, hits / ranks, 0.0)).sum(axis=1)
    return np.where(num_relevant > 0, precision_sum / np.maximum(num_relevant, 1), np.nan)


def read_ground_truth(data_root: str | os.PathLike) -> pd.DataFrame | None:
    """The synthetic sample's hidden ``ground_truth.csv`` (file, split, pid, camid, 27 columns), or None."""
    path = Path(data_root) / GROUND_TRUTH_FILE
    if not path.is_file():
        return None
    return pd.read_csv(path, dtype={"file": str, "split": str})


def score_submission(sample_root: str | os.PathLike, out_dir: str | os.PathLike) -> dict | None:
    """Score the submission in ``out_dir`` against ``sample_root/ground_truth.csv``.

    Returns None when the dataset has no ground truth (the real course data). Both files are
    first validated against the dataset's image names. Re-ID follows the course evaluator:
    mAP over the submitted rankings, every test image of the query's identity a match (no
    camera filtering), relevant images missing from the list count as never retrieved.
    Attributes: accuracy on the test images of labelled identities (distractors and junk have
    no labels), per group and mean, plus label-based mA.

    Returns:
        ``{"mAP", "rank1", "rank5", "rank10", "num_queries", "attribute_accuracy", "mA",
        "accuracy": {group: accuracy}, "num_attribute_rows"}``.
    """
    truth = read_ground_truth(sample_root)
    if truth is None:
        return None
    out_dir = Path(out_dir)
    index = load_dataset(sample_root)
    q_names = [r.path.name for r in index.query]
    g_names = [r.path.name for r in index.test]
    lines = read_reid_txt(out_dir / REID_FILE)
    lengths = {len(ranked) for _, ranked in lines}  # several lengths: lists cut at a distance threshold
    validate_reid_lines(lines, q_names, g_names, top_k=max(lengths, default=1),
                        min_results=1 if len(lengths) > 1 else None)
    table = read_classification_csv(out_dir / CLASSIFICATION_FILE)
    validate_classification(table, g_names)

    split = truth["split"].map({"test": "test", "queries": "query", "query": "query"})
    test_truth = truth[split == "test"].set_index("file")
    query_pid = truth[split == "query"].set_index("file")["pid"]
    gallery_pid = test_truth["pid"]
    missing = sorted(set(g_names) - set(gallery_pid.index)) + sorted(set(q_names) - set(query_pid.index))
    if missing:
        raise ExportError(f"{Path(sample_root) / GROUND_TRUTH_FILE}: no ground truth for {missing[0]!r}")
    relevant = gallery_pid[gallery_pid > 0].value_counts().to_dict()
    g_pid, q_pid = gallery_pid.to_dict(), query_pid.to_dict()
    width = max(lengths, default=0)  # shorter lists padded with non-matches: they add nothing to AP
    ranked_match = np.array([[g_pid[g] == q_pid[q] for g in ranked] + [False] * (width - len(ranked))
                             for q, ranked in lines], dtype=bool).reshape(len(lines), width)  # (Q, k)
    num_relevant = np.array([relevant.get(q_pid[q], 0) for q, _ in lines])
    ap = submission_average_precision(ranked_match, num_relevant)
    valid = num_relevant > 0
    result = {
        "mAP": float(np.nanmean(ap[valid])),
        "num_queries": int(valid.sum()),
    }
    for k in (1, 5, 10):
        result[f"rank{k}"] = float(ranked_match[valid, :k].any(axis=1).mean())

    labelled = test_truth[test_truth["pid"] > 0]
    pred_table = table.set_index("id").loc[labelled.index, list(COURSE_COLUMNS)]
    true_groups = course_to_groups(labelled[list(COURSE_COLUMNS)].to_numpy())
    pred_groups = course_to_groups(pred_table.to_numpy())
    attributes = attribute_metrics(pred_groups, true_groups)
    result.update(
        attribute_accuracy=attributes["mean_accuracy"],
        mA=attributes["mA"],
        accuracy=attributes["accuracy"],
        num_attribute_rows=int(len(labelled)),
    )
    return result
