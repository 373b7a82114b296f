"""The course deliverables: ``classification_test.csv`` and ``reid_test.txt``.

* ``classification_test.csv``: header ``id`` + the 27 course columns (``annotations_train.csv``
  order); one row per test image sorted by file name, ``id`` = the file name; 1/2 encoding,
  ``age`` 1-4, per body part at most one colour set to 2 (none = multicolour).
* ``reid_test.txt``: one line per query, sorted by query name, ``QUERY.jpg: G1.jpg, G2.jpg, ...``
  with the top-k distinct test images, best first, separated by ``", "`` (with a distance
  threshold, between 1 and k images per line: :mod:`.threshold`).

Both files are validated before anything is written (counts, names that exist, encodings, no
duplicates, sorted order; every failure is an :class:`~reid_utils.errors.ExportError` with a
one-line message naming the row or query).

:func:`export_submission` turns a checkpoint (or two: attributes from one model, rankings from
another) and a dataset into both files plus ``submission.json`` (:mod:`.manifest`: the
checkpoints, their digests and the settings), and replaces the submission folder as a whole
(:mod:`.swap`): after any interruption it holds the old pair or the new pair, never a mix.
:func:`write_classification_csv` / :func:`write_reid_txt` write one file atomically;
:func:`reid_utils.evaluation.score_submission` scores a submission when a ground truth exists.
"""
from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .. import __version__
from ..data import load_dataset, resolve_data_root
from ..engine.checkpoint import input_size, load_model_from_checkpoint
from ..engine.inference import extract, split_features
from ..engine.runtime import fast_path as make_fast_path, select_device
from ..errors import ExportError
from ..io import atomic_open
from ..metrics.rerank import rerank_distance
from ..metrics.retrieval import compute_distance, rank_gallery
from ..schema import COURSE_COLUMNS, check_course_ranges, groups_to_course, predict_groups
from .manifest import MANIFEST_FILE, build_manifest, checkpoint_entry, manifest_bytes
from .rerank_choice import choose_rerank, parse_rerank
from .swap import check_replaceable, replace_folder
from .threshold import cut_at_threshold, parse_threshold, pick_threshold, validation_distances

CLASSIFICATION_FILE = "classification_test.csv"
REID_FILE = "reid_test.txt"
#: Everything a submission folder holds (it is replaced as a whole).
SUBMISSION_FILES = (CLASSIFICATION_FILE, REID_FILE, MANIFEST_FILE)
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
    check_course_ranges(course, lambda row: f"{source}: row {row + 1} ({ids[row]})", ExportError)
    for part, cols in (("upper", slice(10, 18)), ("lower", slice(18, 27))):
        marked = (course[:, cols] == 2).sum(axis=1)
        if (marked > 1).any():
            row = int(np.flatnonzero(marked > 1)[0])
            which = [c for c, v in zip(COURSE_COLUMNS[cols], course[row, cols]) if v == 2]
            raise ExportError(
                f"{source}: row {row + 1} ({ids[row]}) sets {len(which)} {part}-body colours "
                f"({', '.join(which)}), expected at most one (none = multicolour)"
            )


def classification_csv_text(df: pd.DataFrame) -> str:
    """The file content of a (validated) classification table."""
    buffer = io.StringIO()
    df.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


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
                        source: str = REID_FILE, min_results: int | None = None) -> None:
    """Check per-query rankings; raise ExportError naming the first bad query.

    ``rankings`` maps a query file name to its ranked gallery file names (best first), in file
    order (queries sorted by name). Each list must hold exactly ``min(top_k, len(gallery))``
    distinct names of gallery images, or, with ``min_results`` (lists cut at a distance
    threshold), between ``min_results`` and that many. Checks, in order: query count, duplicate
    / unknown / missing queries, sorted order, then per query: count, unknown names, duplicates.
    """
    queries = sorted(str(q) for q in expected_queries)
    gallery = set(str(g) for g in gallery_names)
    want_len = min(int(top_k), len(gallery))
    if want_len <= 0:
        raise ExportError(f"{source}: top_k={top_k} and {len(gallery)} gallery images, expected both > 0")
    low = want_len if min_results is None else max(1, min(int(min_results), want_len))
    expected_count = f"{want_len}" if low == want_len else f"{low} to {want_len}"
    keys = [str(q) for q in rankings.keys()] if isinstance(rankings, Mapping) else [str(q) for q, _ in rankings]
    items = list(rankings.items()) if isinstance(rankings, Mapping) else list(rankings)
    if len(keys) != len(queries):
        raise ExportError(f"{source}: {len(keys)} query lines, expected {len(queries)} (one per query image)")
    _check_sorted_names(keys, queries, source,
                        unit="line", repeats="repeats query", has="is for", kind="a query image", order="query")
    for line, (q, ranked) in enumerate(items):
        ranked = [str(g) for g in ranked]
        if not low <= len(ranked) <= want_len:
            raise ExportError(f"{source}: line {line + 1} ({q}) lists {len(ranked)} images, expected {expected_count}")
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


def reid_txt_text(ordered: Mapping[str, Sequence[str]]) -> str:
    """The file content of (validated, sorted) rankings."""
    return "".join(format_reid_line(query, ranked) for query, ranked in ordered.items())


def read_reid_txt(path: str | os.PathLike) -> list[tuple[str, list[str]]]:
    """Parse ``reid_test.txt`` into ``[(query, [gallery names...]), ...]`` in file order.

    A list (not a dict) so that a repeated query line is kept and reported by the validator.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ExportError(f"{path}: not a UTF-8 text file ({error.reason} at byte {error.start})") from None
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
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
    rerank: bool | str = "auto",
    flip: bool = True,
    batch_size: int = 256,
    fast_path=None,
    metric: str = "cosine",
    num_workers: int | None = None,
    progress: bool = False,
    attribute_checkpoint: str | os.PathLike | None = None,
    threshold: None | str | float = None,
) -> dict:
    """Write ``classification_test.csv``, ``reid_test.txt`` and ``submission.json`` into ``out_dir``.

    Works on the course layout (``test/`` + ``queries/``) and the official Market layout
    (``bounding_box_test/`` + ``query/``). Steps: rebuild the model(s); extract flip-averaged
    embeddings of every query and test image with the re-ID model ``checkpoint`` and attribute
    logits of the test images with ``attribute_checkpoint`` (batched,
    :func:`reid_utils.engine.inference.extract`); ``metric`` distances, k-reciprocal re-ranked
    (k1=20, k2=6, lambda=0.3) where it helps; the ``top_k`` nearest test images per query, cut at
    ``threshold`` if given; attribute predictions; validate both files, then replace
    ``out_dir`` as a whole (:mod:`reid_utils.export.swap`).

    Args:
        data_root: dataset folder or ``.zip`` (None: ``$REID_DATA_ROOT`` or the bundled sample).
        checkpoint: the re-ID model's ``.pt`` file (rankings; also attributes by default).
        out_dir: the submission folder; missing, or holding only a previous submission.
        fast_path: a :class:`reid_utils.engine.runtime.FastPath` (None: the automatic one for the best device).
        attribute_checkpoint: the attribute model's ``.pt`` file (None: ``checkpoint``).
        rerank: True, False, or ``"auto"``: on where it raises the course mAP of the top-k lists
            on the re-ID checkpoint's validation split (a refit: that of the run it repeats;
            none that fits the data: on); see :mod:`reid_utils.export.rerank_choice`.
        threshold: None (fixed top-k lists), a distance, or ``"auto"`` (chosen on the re-ID
            checkpoint's validation split; see :mod:`reid_utils.export.threshold`).

    Returns:
        ``{"paths": {"classification": Path, "reid": Path}, "manifest_path": Path, "manifest":
        dict, "timings": {step: seconds}, "num_test": int, "num_queries": int,
        "images_per_second": float, "threshold": None or float, "mean_results": float}``.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or int(top_k) < 1:
        raise ExportError(f"top_k={top_k!r}, expected a positive number of results per query")
    threshold = parse_threshold(threshold)
    rerank = parse_rerank(rerank)
    check_replaceable(out_dir, SUBMISSION_FILES)  # fail before the slow part, not after it
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    model, ckpt = load_model_from_checkpoint(checkpoint)
    separate = attribute_checkpoint is not None and not _same_file(checkpoint, attribute_checkpoint)
    attribute_model, attribute_ckpt = load_model_from_checkpoint(attribute_checkpoint) if separate else (model, ckpt)
    index = load_dataset(resolve_data_root(data_root))
    if not index.query or not index.test:
        raise ExportError(f"{index.root}: no query or test images to export")
    fp = fast_path if fast_path is not None else make_fast_path(select_device("auto"))
    timings["load"] = time.perf_counter() - clock

    clock = time.perf_counter()
    records = list(index.query) + list(index.test)
    options = dict(batch_size=batch_size, flip=flip, num_workers=num_workers, progress=progress)
    height, width = input_size(ckpt)
    feats = extract(model, records, fp, height=height, width=width, **options)
    query, gallery = split_features(feats, [len(index.query), len(index.test)])
    attribute_logits = gallery["attribute_logits"]
    if separate:
        height, width = input_size(attribute_ckpt)
        attribute_logits = extract(attribute_model, list(index.test), fp, height=height, width=width,
                                   **options)["attribute_logits"]
    timings["extract"] = time.perf_counter() - clock
    if attribute_logits is None:
        source = attribute_checkpoint if separate else checkpoint
        raise ExportError(f"{source}: the model predicts no attributes; classification_test.csv needs them")

    val_features, rerank_record = None, None
    if rerank == "auto":
        clock = time.perf_counter()
        rerank, rerank_record, val_features = choose_rerank(model, checkpoint, ckpt, index, fp, flip=flip, metric=metric,
                                                            top_k=top_k, batch_size=batch_size, num_workers=num_workers)
        timings["rerank_choice"] = time.perf_counter() - clock

    clock = time.perf_counter()
    if rerank:
        distmat = rerank_distance(query["embeddings"], gallery["embeddings"], metric=metric)
        timings["rerank"] = time.perf_counter() - clock
    else:
        distmat = compute_distance(query["embeddings"], gallery["embeddings"], metric=metric)  # (Q, G)
        timings["distance"] = time.perf_counter() - clock

    chosen_on = None
    if threshold == "auto":
        clock = time.perf_counter()
        val = validation_distances(model, checkpoint, ckpt, index, fp, flip=flip, metric=metric, rerank=rerank,
                                   batch_size=batch_size, num_workers=num_workers, features=val_features)
        threshold, chosen_on = pick_threshold(val["distmat"], val["q_pids"], val["g_pids"]), val["described"]
        timings["threshold"] = time.perf_counter() - clock

    clock = time.perf_counter()
    ranked = rank_gallery(distmat, top_k).numpy()  # (Q, k)
    lists = list(ranked) if threshold is None else cut_at_threshold(distmat, ranked, threshold, min_results=1)
    q_names = [Path(p).name for p in query["paths"]]
    g_names = [Path(p).name for p in gallery["paths"]]
    rankings = {q: [g_names[j] for j in row] for q, row in zip(q_names, lists)}
    pred = predict_groups(attribute_logits, attribute_model.attribute_form).numpy()  # (G, 12)
    table = attributes_to_rows(pred, g_names)
    timings["rank_and_predict"] = time.perf_counter() - clock

    clock = time.perf_counter()
    # both files are checked before anything is written
    validate_classification(table, g_names)
    ordered = {q: rankings[q] for q in sorted(rankings)}
    validate_reid_lines(ordered, q_names, g_names, top_k, min_results=None if threshold is None else 1)
    files = {CLASSIFICATION_FILE: classification_csv_text(table).encode("utf-8"),
             REID_FILE: reid_txt_text(ordered).encode("utf-8")}
    mean_results = float(np.mean([len(row) for row in lists]))
    cut = None if threshold is None else {"value": float(threshold), "chosen_on": chosen_on, "min_results": 1,
                                          "mean_results": mean_results}
    settings = {"top_k": int(top_k), "rerank": bool(rerank), "rerank_choice": rerank_record, "flip": bool(flip),
                "metric": metric, "threshold": cut}
    manifest = build_manifest(
        files, {"reid": checkpoint_entry(checkpoint, ckpt),
                "attribute": checkpoint_entry(attribute_checkpoint if separate else checkpoint, attribute_ckpt)},
        settings, dataset=str(index.root), num_test=len(g_names), num_queries=len(q_names),
        reid_utils_version=__version__)
    files[MANIFEST_FILE] = manifest_bytes(manifest)

    def write(folder: Path) -> None:
        for name, data in files.items():
            with open(folder / name, "wb") as f:  # a plain open in the new folder: the umask applies
                f.write(data)

    replace_folder(out_dir, write, SUBMISSION_FILES)
    out_dir = Path(out_dir)
    timings["write"] = time.perf_counter() - clock
    timings["total"] = sum(timings.values())
    return {
        "paths": {"classification": out_dir / CLASSIFICATION_FILE, "reid": out_dir / REID_FILE},
        "manifest_path": out_dir / MANIFEST_FILE,
        "timings": timings,
        "num_test": len(g_names),
        "num_queries": len(q_names),
        "images_per_second": len(records) / max(timings["extract"], 1e-9),
        "fast_path": fp.describe(),
        "rerank": bool(rerank),
        "rerank_choice": rerank_record,
        "threshold": None if threshold is None else float(threshold),
        "mean_results": mean_results,
        "manifest": manifest,
    }


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a) == Path(b)
