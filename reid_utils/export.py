"""The course deliverables: ``classification_test.csv`` and ``reid_test.txt``.

* ``classification_test.csv``: header ``id`` + the 27 course columns (``annotations_train.csv``
  order); one row per test image sorted by file name, ``id`` = the file name; 1/2 encoding,
  ``age`` 1-4, per body part at most one colour set to 2 (none = multicolour).
* ``reid_test.txt``: one line per query, sorted by query name, ``QUERY.jpg: G1.jpg, G2.jpg, ...``
  with the top-k distinct test images, best first, separated by ``", "``.

Both files are validated before they are written (counts, names that exist, encodings, no
duplicates, sorted order; every failure is an :class:`~reid_utils.errors.ExportError` with a
one-line message naming the row or query), and written atomically, so an existing submission is
never replaced by a partial or invalid one.

:func:`export_submission` turns a checkpoint and a dataset into both files;
:func:`score_submission` scores them when a ground truth is available (the synthetic sample).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .data.schema import COURSE_COLUMNS, first_out_of_range, groups_to_course
from .errors import ExportError
from .io import atomic_open

CLASSIFICATION_FILE = "classification_test.csv"
REID_FILE = "reid_test.txt"
GROUND_TRUTH_FILE = "ground_truth.csv"
#: Header of ``classification_test.csv``.
CLASSIFICATION_HEADER: tuple[str, ...] = ("id",) + COURSE_COLUMNS


# ---------------------------------------------------------------------------------------------
# classification_test.csv


def attributes_to_rows(pred_groups: np.ndarray, names: Sequence[str]) -> pd.DataFrame:
    """Predicted groups ``(N, 12)`` + image file names -> the classification table.

    Returns a DataFrame with columns ``id`` + the 27 course columns (int64, 1/2 encoded, age
    1-4, at most one colour per body part), sorted by ``id``.

    >>> attributes_to_rows(np.array([[2, 0, 1, 0, 1, 1, 0, 0, 0, 1, 8, 1]]), ["000000.jpg"]).iloc[0, :4].to_dict()
    {'id': '000000.jpg', 'age': 3, 'backpack': 1, 'bag': 2}
    """
    pred_groups = np.asarray(pred_groups)
    names = [str(n) for n in names]
    if pred_groups.ndim != 2 or len(pred_groups) != len(names):
        raise ExportError(
            f"attributes_to_rows: got {len(names)} names but predictions of shape {pred_groups.shape}, "
            "expected (N, 12) with N = number of names"
        )
    course = groups_to_course(pred_groups)  # (N, 27)
    df = pd.DataFrame(course, columns=list(COURSE_COLUMNS))
    df.insert(0, "id", names)
    return df.sort_values("id", kind="stable").reset_index(drop=True)


def validate_classification(df: pd.DataFrame, expected_names: Iterable[str],
                            source: str = CLASSIFICATION_FILE) -> None:
    """Check a classification table against the test image names; raise ExportError if malformed.

    Checks, in order: header, row count, duplicate ids, unknown ids, sorted order, missing or
    non-integer values, encodings (age 1-4, others 1/2), at most one colour per body part.
    """
    expected = sorted(str(n) for n in expected_names)
    header = [str(c) for c in df.columns]
    if header != list(CLASSIFICATION_HEADER):
        diff = next((i for i, (a, b) in enumerate(zip(header, CLASSIFICATION_HEADER)) if a != b),
                    min(len(header), len(CLASSIFICATION_HEADER)))
        got = header[diff] if diff < len(header) else "<end of header>"
        want = CLASSIFICATION_HEADER[diff] if diff < len(CLASSIFICATION_HEADER) else "<end of header>"
        raise ExportError(
            f"{source}: header column {diff + 1} is {got!r}, expected {want!r} "
            f"(header must be id + the {len(COURSE_COLUMNS)} course columns)"
        )
    if len(df) != len(expected):
        raise ExportError(f"{source}: {len(df)} rows, expected {len(expected)} (one per test image)")
    ids = [str(v) for v in df["id"].tolist()]
    _check_sorted_names(ids, expected, source,
                        unit="row", repeats="repeats id", has="has id", kind="a test image", order="id")
    values = df[list(COURSE_COLUMNS)]
    numeric = values.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(numeric) | (numeric != np.round(numeric))
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise ExportError(
            f"{source}: row {row + 1} ({ids[row]}) column {COURSE_COLUMNS[col]!r} has value "
            f"{values.iat[row, col]!r}, expected an integer"
        )
    course = numeric.astype(np.int64)
    bad = first_out_of_range(course)
    if bad is not None:
        row, col = bad
        allowed = "1-4" if col == 0 else "1 or 2"
        raise ExportError(
            f"{source}: row {row + 1} ({ids[row]}) column {COURSE_COLUMNS[col]!r} has value "
            f"{course[row, col]}, expected {allowed}"
        )
    for part, cols in (("upper", slice(10, 18)), ("lower", slice(18, 27))):
        marked = (course[:, cols] == 2).sum(axis=1)
        if (marked > 1).any():
            row = int(np.flatnonzero(marked > 1)[0])
            which = [c for c, v in zip(COURSE_COLUMNS[cols], course[row, cols]) if v == 2]
            raise ExportError(
                f"{source}: row {row + 1} ({ids[row]}) sets {len(which)} {part}-body colours "
                f"({', '.join(which)}), expected at most one (none = multicolour)"
            )


def write_classification_csv(path: str | os.PathLike, df: pd.DataFrame,
                             expected_names: Iterable[str] | None = None) -> Path:
    """Validate ``df`` (against ``expected_names``, default: its own ids) and write it atomically."""
    path = Path(path)
    names = df["id"].astype(str).tolist() if expected_names is None and "id" in df.columns else expected_names
    validate_classification(df, names if names is not None else [], source=path.name)
    with atomic_open(path, "w") as f:
        df.to_csv(f, index=False, lineterminator="\n")
    return path


def read_classification_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``classification_test.csv`` (ids as strings); validate with :func:`validate_classification`."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    try:
        return pd.read_csv(path, dtype={"id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ExportError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None


# ---------------------------------------------------------------------------------------------
# reid_test.txt


def validate_reid_lines(rankings: Mapping[str, Sequence[str]], expected_queries: Iterable[str],
                        gallery_names: Iterable[str], top_k: int = 100,
                        source: str = REID_FILE) -> None:
    """Check per-query rankings; raise ExportError naming the first bad query.

    ``rankings`` maps a query file name to its ranked gallery file names (best first), in file
    order (queries sorted by name). Each list must hold exactly ``min(top_k, len(gallery))``
    distinct names of gallery images. Checks, in order: query count, duplicate / unknown /
    missing queries, sorted order, then per query: count, unknown names, duplicates.
    """
    queries = sorted(str(q) for q in expected_queries)
    gallery = set(str(g) for g in gallery_names)
    want_len = min(int(top_k), len(gallery))
    if want_len <= 0:
        raise ExportError(f"{source}: top_k={top_k} and {len(gallery)} gallery images, expected both > 0")
    keys = [str(q) for q in rankings.keys()] if isinstance(rankings, Mapping) else [str(q) for q, _ in rankings]
    items = list(rankings.items()) if isinstance(rankings, Mapping) else list(rankings)
    if len(keys) != len(queries):
        raise ExportError(f"{source}: {len(keys)} query lines, expected {len(queries)} (one per query image)")
    _check_sorted_names(keys, queries, source,
                        unit="line", repeats="repeats query", has="is for", kind="a query image", order="query")
    for line, (q, ranked) in enumerate(items):
        ranked = [str(g) for g in ranked]
        if len(ranked) != want_len:
            raise ExportError(f"{source}: line {line + 1} ({q}) lists {len(ranked)} images, expected {want_len}")
        for g in ranked:
            if g not in gallery:
                raise ExportError(f"{source}: line {line + 1} ({q}) lists {g!r}, which is not a test image")
        dup = _first_duplicate(ranked)
        if dup is not None:
            raise ExportError(f"{source}: line {line + 1} ({q}) lists {dup[0]!r} twice (position {dup[1] + 1})")


def format_reid_line(query: str, ranked: Sequence[str]) -> str:
    """One line of ``reid_test.txt``: ``"000123.jpg: 004567.jpg, 000890.jpg\\n"``."""
    return f"{query}: {', '.join(ranked)}\n"


def write_reid_txt(path: str | os.PathLike, rankings: Mapping[str, Sequence[str]],
                   expected_queries: Iterable[str] | None = None,
                   gallery_names: Iterable[str] | None = None, top_k: int | None = None) -> Path:
    """Validate ``rankings`` and write ``reid_test.txt`` atomically (queries sorted by name).

    Defaults: ``expected_queries`` = the keys, ``gallery_names`` = every name listed,
    ``top_k`` = the length of the first list (so a call without them checks structure only).
    """
    path = Path(path)
    ordered = {str(q): [str(g) for g in rankings[q]] for q in sorted(rankings, key=str)}
    if expected_queries is None:
        expected_queries = list(ordered)
    if gallery_names is None:
        gallery_names = {g for ranked in ordered.values() for g in ranked}
    if top_k is None:
        top_k = len(next(iter(ordered.values()), []))
    validate_reid_lines(ordered, expected_queries, gallery_names, top_k, source=path.name)
    with atomic_open(path, "w") as f:
        for query, ranked in ordered.items():
            f.write(format_reid_line(query, ranked))
    return path


def read_reid_txt(path: str | os.PathLike) -> list[tuple[str, list[str]]]:
    """Parse ``reid_test.txt`` into ``[(query, [gallery names...]), ...]`` in file order.

    A list (not a dict) so that a repeated query line is kept and reported by the validator.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    lines = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        query, sep, rest = line.partition(": ")
        if not sep or not query:
            raise ExportError(f"{path}: line {number} is not 'QUERY.jpg: G1.jpg, G2.jpg, ...'")
        lines.append((query.strip(), [g.strip() for g in rest.split(",") if g.strip()]))
    return lines


def _check_sorted_names(names: Sequence[str], expected: Sequence[str], source: str, *, unit: str,
                        repeats: str, has: str, kind: str, order: str) -> None:
    """``names`` must be ``expected`` (sorted, same length): the first duplicate, unknown name or
    out-of-order name raises ExportError naming the ``unit`` (row / line) it is on."""
    dup = _first_duplicate(names)
    if dup is not None:
        raise ExportError(f"{source}: {unit} {dup[1] + 1} {repeats} {dup[0]!r}")
    expected_set = set(expected)
    for i, name in enumerate(names):
        if name not in expected_set:
            raise ExportError(f"{source}: {unit} {i + 1} {has} {name!r}, which is not {kind}")
    for i, (got, want) in enumerate(zip(names, expected)):
        if got != want:
            raise ExportError(f"{source}: {unit} {i + 1} {has} {got!r}, expected {want!r} "
                              f"({unit}s must be sorted by {order})")


def _first_duplicate(items: Sequence[str]) -> tuple[str, int] | None:
    """The first repeated item and the position of its second occurrence, or None."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item in seen:
            return item, i
        seen.add(item)
    return None


# ---------------------------------------------------------------------------------------------
# Checkpoint -> submission


def export_submission(
    data_root: str | os.PathLike | None,
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    top_k: int = 100,
    rerank: bool = False,
    flip: bool = True,
    batch_size: int = 256,
    fast_path=None,
    metric: str = "cosine",
    num_workers: int | None = None,
    progress: bool = False,
) -> dict:
    """Write ``classification_test.csv`` and ``reid_test.txt`` for the test/query images.

    Works on the course layout (``test/`` + ``queries/``) and the official Market layout
    (``bounding_box_test/`` + ``query/``). Steps: rebuild the model from ``checkpoint``; extract
    flip-averaged embeddings and attribute logits of every query and test image (batched,
    :func:`reid_utils.inference.extract`); ``metric`` distances (optionally k-reciprocal
    re-ranking, k1=20, k2=6, lambda=0.3); the ``top_k`` nearest test images per query;
    attribute predictions of the test images; validate both files, then write them atomically.

    Args:
        data_root: dataset folder (None: ``$REID_DATA_ROOT`` or the bundled sample).
        checkpoint: a ``.pt`` file written by training.
        out_dir: folder for the two files (created).
        fast_path: a :class:`reid_utils.runtime.FastPath` (None: the automatic one for the best device).

    Returns:
        ``{"paths": {"classification": Path, "reid": Path}, "timings": {step: seconds},
        "num_test": int, "num_queries": int, "images_per_second": float}``.
    """
    from .checkpoint import load_model_from_checkpoint
    from .data import load_dataset, resolve_data_root
    from .data.schema import predict_groups
    from .inference import extract, split_features
    from .retrieval import compute_distance, rank_gallery
    from .runtime import fast_path as make_fast_path, select_device

    if int(top_k) < 1:
        raise ExportError(f"top_k={top_k}, expected a positive number of results per query")
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    model, ckpt = load_model_from_checkpoint(checkpoint)
    index = load_dataset(resolve_data_root(data_root))
    if not index.query or not index.test:
        raise ExportError(f"{index.root}: no query or test images to export")
    height, width = _input_size(ckpt)
    fp = fast_path if fast_path is not None else make_fast_path(select_device("auto"))
    timings["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    records = list(index.query) + list(index.test)
    feats = extract(model, records, fp, batch_size=batch_size, flip=flip, height=height, width=width,
                    num_workers=num_workers, progress=progress)
    query, gallery = split_features(feats, [len(index.query), len(index.test)])
    timings["extract"] = time.perf_counter() - clock
    if gallery["attribute_logits"] is None:
        raise ExportError(f"{checkpoint}: the model predicts no attributes; classification_test.csv needs them")

    clock = time.perf_counter()
    distmat = compute_distance(query["embeddings"], gallery["embeddings"], metric=metric)  # (Q, G)
    timings["distance"] = time.perf_counter() - clock
    if rerank:
        clock = time.perf_counter()
        distmat = rerank_distance(query["embeddings"], gallery["embeddings"], metric=metric)
        timings["rerank"] = time.perf_counter() - clock

    clock = time.perf_counter()
    ranked = rank_gallery(distmat, top_k).numpy()  # (Q, k)
    q_names = [Path(p).name for p in query["paths"]]
    g_names = [Path(p).name for p in gallery["paths"]]
    rankings = {q: [g_names[j] for j in row] for q, row in zip(q_names, ranked.tolist())}
    pred = predict_groups(gallery["attribute_logits"], model.attribute_form).numpy()  # (G, 12)
    table = attributes_to_rows(pred, g_names)
    timings["rank_and_predict"] = time.perf_counter() - clock

    clock = time.perf_counter()
    out_dir = Path(out_dir)
    # both files are checked before either is written
    validate_classification(table, g_names)
    ordered = {q: rankings[q] for q in sorted(rankings)}
    validate_reid_lines(ordered, q_names, g_names, top_k)
    paths = {
        "classification": write_classification_csv(out_dir / CLASSIFICATION_FILE, table, g_names),
        "reid": write_reid_txt(out_dir / REID_FILE, ordered, q_names, g_names, top_k),
    }
    timings["write"] = time.perf_counter() - clock
    timings["total"] = sum(timings.values())
    return {
        "paths": paths,
        "timings": timings,
        "num_test": len(g_names),
        "num_queries": len(q_names),
        "images_per_second": len(records) / max(timings["extract"], 1e-9),
        "fast_path": fp.describe(),
    }


def rerank_distance(q_feats, g_feats, metric: str = "cosine", k1: int = 20, k2: int = 6,
                    lambda_value: float = 0.3):
    """k-reciprocal re-ranked ``(Q, G)`` distances (Zhong et al. 2017) of query / gallery features.

    ``metric="cosine"`` L2-normalises the features first (re-ranking uses squared Euclidean
    distances, which rank unit vectors as the cosine distance does).
    """
    from .rerank import re_ranking
    from .retrieval import normalize

    if metric == "cosine":
        q_feats, g_feats = normalize(q_feats), normalize(g_feats)
    return re_ranking(q_feats, g_feats, k1=k1, k2=k2, lambda_value=lambda_value)


def _input_size(ckpt: dict) -> tuple[int, int]:
    """``(height, width)`` the checkpoint's model was trained at."""
    config = ckpt.get("config") or {}
    height = ckpt.get("height", config.get("height", 128))
    width = ckpt.get("width", config.get("width", 64))
    return int(height), int(width)


# ---------------------------------------------------------------------------------------------
# Scoring against a ground truth (the synthetic sample)


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
    from .data import load_dataset
    from .data.schema import course_to_groups
    from .metrics import attribute_metrics

    truth = read_ground_truth(sample_root)
    if truth is None:
        return None
    out_dir = Path(out_dir)
    index = load_dataset(sample_root)
    q_names = [r.path.name for r in index.query]
    g_names = [r.path.name for r in index.test]
    lines = read_reid_txt(out_dir / REID_FILE)
    validate_reid_lines(lines, q_names, g_names, top_k=len(lines[0][1]) if lines else 1)
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
    ranked_match = np.array([[g_pid[g] == q_pid[q] for g in ranked] for q, ranked in lines])  # (Q, k)
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
