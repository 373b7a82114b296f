"""Evaluation metrics: person re-identification (CMC, mAP, mINP) and pedestrian attributes.

Pure functions: arrays in, numbers out. No I/O, no models. Inputs may be NumPy arrays or
torch tensors (tensors are copied to the CPU).

* :func:`evaluate_reid`: CMC, mAP and mINP of a query-gallery distance matrix under the
  ``"market"`` or the ``"course"`` protocol. Exact (it reproduces the per-query loop of
  torchreid's Python evaluator, ties included) and fast: about 0.1-0.2 s for Market-1501's
  3,368 x 15,913 problem on one CPU core, against about 9-16 s for the loop (see "How it is
  fast" below).
* :func:`random_ranking_map`: the mAP of a random ranking (the chance level of a gallery).
* :func:`attribute_metrics`: per-group accuracy, label-based mA, instance-based accuracy /
  precision / recall / F1 and confusion matrices, from ``(N, 12)`` class indices.
* :func:`majority_baseline`: the mean accuracy of always predicting the training majority class.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix

from ..errors import DataError
from ..schema import BINARY_COLUMNS, GROUP_NAMES, GROUPS, NUM_GROUPS, groups_to_binary, validate_groups

__all__ = ["PROTOCOLS", "evaluate_reid", "attribute_metrics", "majority_baseline", "random_ranking_map", "CONFUSION_GROUPS"]

PROTOCOLS = ("market", "course")
#: Attribute groups whose confusion matrices :func:`attribute_metrics` returns.
CONFUSION_GROUPS = ("age", "upcolour", "downcolour")


def _to_numpy(x, name: str) -> np.ndarray:
    """NumPy view of an array or (any-device) tensor; 1-byte/2-byte floats become float32."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if x.dtype.is_floating_point and x.element_size() < 4:
            x = x.float()
        x = x.numpy()
    x = np.asarray(x)
    if x.dtype.kind == "f" and x.dtype.itemsize < 4:
        x = x.astype(np.float32)
    if x.dtype.kind in "biu":
        x = x.astype(np.float64) if name == "distmat" else x.astype(np.int64)
    return x


# ---------------------------------------------------------------------------------------------
# Re-identification


def evaluate_reid(
    distmat,
    q_pids,
    g_pids,
    q_camids=None,
    g_camids=None,
    max_rank: int = 50,
    protocol: str = "market",
    chunk_size: int = 128,
) -> dict:
    """CMC, mAP and mINP of a query-gallery distance matrix.

    Args:
        distmat: ``(Q, G)`` distances, smaller = more similar (float array or tensor). Ties
            are broken by gallery index, as a stable argsort would.
        q_pids: ``(Q,)`` query person ids.   g_pids: ``(G,)`` gallery person ids.
        q_camids: ``(Q,)`` query camera ids.   g_camids: ``(G,)`` gallery camera ids.
            Required by the market protocol, ignored by the course protocol (may be None).
        max_rank: length of the CMC curve.
        protocol:
            * ``"market"`` (Market-1501 / torchreid / reid-strong-baseline): for each query,
              gallery entries with the query's id AND camera are removed, entries with id -1
              (junk) are removed, id 0 (distractors) stays as negatives. Queries left with no
              match are skipped and counted.
            * ``"course"`` (the course evaluator): nothing is removed; every gallery entry with
              the query's id is a match (junk has no label there).
        chunk_size: queries processed at once (extra memory at most about ``6 * chunk_size * G``
            bytes for float32 distances).

    Returns:
        dict with
            * ``mAP``: mean over valid queries of the non-interpolated average precision (the mean,
              over the query's matches, of the precision at the rank of each match);
            * ``cmc``: ``(max_rank,)`` float64, ``cmc[k - 1]`` = rank-k accuracy (fraction of valid
              queries with a match in the top k). Past the number of valid gallery entries the
              curve stays at 1;
            * ``mINP``: mean over valid queries of ``num_matches / (rank of the hardest match)``
              (Ye et al., 2021);
            * ``rank1``, ``rank5``, ``rank10``: ``cmc[0]``, ``cmc[4]``, ``cmc[9]`` (when
              ``max_rank`` is long enough);
            * ``num_valid_queries``, ``num_skipped_queries`` (no valid match);
            * ``query_ap``: ``(Q,)`` float64 per-query AP, NaN for skipped queries.

    Raises:
        DataError: when no query has a valid match.

    Example: one query of id 1 (camera 0); the gallery, sorted by distance, is
    [id 1 cam 0 (same camera, removed), id 2, id 1 cam 1, id -1 (junk, removed), id 1 cam 2].
    The valid ranking is [id 2, id 1, id 1]: matches at ranks 2 and 3, so
    AP = (1/2 + 2/3) / 2 = 7/12, rank-1 = 0, rank-2 = 1, INP = 2/3.

    >>> r = evaluate_reid([[0.1, 0.2, 0.3, 0.4, 0.5]], [1], [1, 2, 1, -1, 1], [0], [0, 1, 1, 1, 2], max_rank=3)
    >>> round(r["mAP"], 4), r["cmc"].tolist(), round(r["mINP"], 4)
    (0.5833, [0.0, 1.0, 1.0], 0.6667)

    How it is fast: AP, CMC and INP only need the rank of each true match among the query's
    valid gallery entries, and only entries no farther than the query's hardest match can come
    before a match. Per chunk of queries: the same-identity gallery entries come from a
    pid -> gallery-index table (no ``(Q, G)`` id mask); one comparison pass picks the non-junk
    entries up to the hardest match (typically a few hundred per row); those are sorted by value
    only (NumPy's SIMD sort, no argsort); the rank of a match is a binary search of its distance
    in its row, minus the removed same-camera entries before it, plus an exact count of equal
    distances at lower gallery indices (done only on the rare rows with ties). NaN distances
    rank last, as with ``np.argsort``; a NaN distance to a true match raises ``ValueError``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise ValueError(f"max_rank must be a positive integer, got {max_rank!r}")
    distmat = _to_numpy(distmat, "distmat")
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (Q, G), got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    q_pids, g_pids = _to_numpy(q_pids, "q_pids"), _to_numpy(g_pids, "g_pids")
    _check_length(q_pids, num_q, "q_pids", "distmat rows")
    _check_length(g_pids, num_g, "g_pids", "distmat columns")
    if protocol == "market":
        if q_camids is None or g_camids is None:
            raise ValueError("the market protocol needs q_camids and g_camids")
        q_camids, g_camids = _to_numpy(q_camids, "q_camids"), _to_numpy(g_camids, "g_camids")
        _check_length(q_camids, num_q, "q_camids", "distmat rows")
        _check_length(g_camids, num_g, "g_camids", "distmat columns")

    query_index, ranks = _true_match_ranks(distmat, q_pids, g_pids, q_camids, g_camids, protocol, chunk_size)
    if len(query_index) == 0:
        raise DataError(
            f"evaluate_reid: none of the {num_q} queries has a valid match among the {num_g} gallery "
            f"entries (protocol {protocol!r}); check that query and gallery ids come from the same identities"
        )

    # (query_index, ranks) are sorted by query, then by rank: one segment per valid query.
    valid_q, starts, num_matches = np.unique(query_index, return_index=True, return_counts=True)
    ends = starts + num_matches - 1
    hit_number = np.arange(len(ranks)) - np.repeat(starts, num_matches) + 1  # 1, 2, ... per query
    precision = hit_number / (ranks + 1.0)
    ap = np.bincount(np.repeat(np.arange(len(valid_q)), num_matches), weights=precision) / num_matches
    inp = num_matches / (ranks[ends] + 1.0)
    first = np.minimum(ranks[starts], max_rank)
    cmc = np.cumsum(np.bincount(first, minlength=max_rank + 1)[:max_rank]) / len(valid_q)

    query_ap = np.full(num_q, np.nan)
    query_ap[valid_q] = ap
    result = {
        "mAP": float(ap.mean()),
        "cmc": cmc.astype(np.float64),
        "mINP": float(inp.mean()),
        "num_valid_queries": int(len(valid_q)),
        "num_skipped_queries": int(num_q - len(valid_q)),
        "query_ap": query_ap,
    }
    for k in (1, 5, 10):
        if k <= max_rank:
            result[f"rank{k}"] = float(cmc[k - 1])
    return result


def _check_length(x: np.ndarray, expected: int, name: str, what: str) -> None:
    if x.ndim != 1 or len(x) != expected:
        raise ValueError(f"{name} must have shape ({expected},) to match the {what}, got {x.shape}")


def _true_match_ranks(distmat, q_pids, g_pids, q_camids, g_camids, protocol, chunk_size):
    """Rank of every true match among its query's valid gallery entries.

    Returns ``(query_index, rank)``, two int64 arrays sorted by query then rank; ``rank`` is
    0-based and breaks distance ties by gallery index (stable-argsort semantics).
    """
    distmat = np.ascontiguousarray(distmat)  # rows of a chunk are then one flat block
    num_q, num_g = distmat.shape
    market = protocol == "market"
    is_junk = (g_pids == -1) if market else np.zeros(num_g, bool)  # junk never counts
    kept = np.flatnonzero(~is_junk)
    # pid -> contiguous block of kept gallery indices (ascending inside each block).
    by_pid = kept[np.argsort(g_pids[kept], kind="stable")]
    block_pids, block_starts, block_sizes = np.unique(g_pids[by_pid], return_index=True, return_counts=True)
    q_sizes, q_starts = np.zeros(num_q, np.int64), np.zeros(num_q, np.int64)
    if len(block_pids):
        slot = np.minimum(np.searchsorted(block_pids, q_pids), len(block_pids) - 1)
        q_sizes = np.where(block_pids[slot] == q_pids, block_sizes[slot], 0)
        q_starts = block_starts[slot]

    out_query, out_rank = [], []
    for s in range(0, num_q, chunk_size):
        e = min(s + chunk_size, num_q)
        sizes = q_sizes[s:e]
        if sizes.sum() == 0:
            continue
        # Same-id gallery entries of each query in the chunk: (row, gallery index, distance).
        row = np.repeat(np.arange(e - s), sizes)
        offset = np.arange(len(row)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        gidx = by_pid[np.repeat(q_starts[s:e], sizes) + offset]
        dist = distmat[s + row, gidx]
        removed = (g_camids[gidx] == q_camids[s + row]) if market else np.zeros(len(row), bool)
        order = np.lexsort((gidx, dist, row))  # stable ranking order inside each row
        row, gidx, dist, removed = row[order], gidx[order], dist[order], removed[order]
        # Removed (same camera) entries ranked before each entry of its row.
        removed_per_row = np.bincount(row, weights=removed, minlength=e - s).astype(np.int64)
        removed_before = np.cumsum(removed) - removed - np.repeat(np.cumsum(removed_per_row) - removed_per_row, sizes)

        true = ~removed
        row, gidx, dist, removed_before = row[true], gidx[true], dist[true], removed_before[true]
        if len(row) == 0:
            continue
        if np.isnan(dist).any():
            raise ValueError(f"distmat has a NaN distance between query {s + row[np.isnan(dist)][0]} and a match")
        # Only kept entries no farther than the row's hardest match can come before a match:
        # gather them into a small +inf-padded matrix and sort its rows (values only).
        hardest = np.full(e - s, np.nan)  # NaN selects nothing (rows without a true match)
        hardest[row] = dist  # rows are sorted by distance, so the last write is the maximum
        chunk = distmat[s:e]
        flat = np.flatnonzero(chunk <= hardest[:, None].astype(distmat.dtype))  # faster than 2-D nonzero
        flat = flat[~is_junk[flat % num_g]]
        near_row = flat // num_g
        counts = np.bincount(near_row, minlength=e - s)
        near_rows = np.full((e - s, counts.max()), np.inf, dtype=distmat.dtype)
        near_rows[near_row, np.arange(len(near_row)) - np.repeat(np.cumsum(counts) - counts, counts)] = (
            chunk.reshape(-1)[flat]
        )
        near_rows.sort(axis=1)
        before = _count_less(near_rows, row, dist)  # kept entries strictly closer
        # Equal distances: the entry itself sits at position `before`; an equal value after it is
        # a tie (or +inf padding), broken by gallery index and counted exactly on those rows only.
        width = near_rows.shape[1]
        tied = np.flatnonzero((before + 1 < width) & (near_rows[row, np.minimum(before + 1, width - 1)] == dist))
        for t in np.array_split(tied, max(1, len(tied) // 256)) if len(tied) else ():
            same = distmat[s + row[t]][:, kept] == dist[t, None]
            before[t] += (same & (kept[None, :] < gidx[t, None])).sum(axis=1)
        out_query.append(s + row)
        out_rank.append(before - removed_before)
    if not out_query:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # Chunks come in query order, and inside a row the stable order is the rank order.
    return np.concatenate(out_query), np.concatenate(out_rank)


def _count_less(sorted_rows: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each ``i``: number of entries of ``sorted_rows[rows[i]]`` strictly below ``values[i]``.

    A binary search vectorised over ``i`` (``sorted_rows`` is sorted along axis 1).
    """
    width = sorted_rows.shape[1]
    flat = sorted_rows.ravel()
    base = rows.astype(np.int64) * width
    lo = np.zeros(len(rows), np.int64)
    hi = np.full(len(rows), width, np.int64)
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) // 2
        below = active & (flat[base + np.minimum(mid, width - 1)] < values)
        lo = np.where(below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)


# ---------------------------------------------------------------------------------------------
# Attributes


def attribute_metrics(pred_groups, true_groups) -> dict:
    """Attribute recognition metrics from ``(N, 12)`` class indices (schema groups form).

    Args:
        pred_groups: ``(N, 12)`` predicted class per group (e.g. ``schema.predict_groups``).
        true_groups: ``(N, 12)`` target class per group; -1 marks an unknown target.

    Returns:
        dict with
            * ``accuracy``: ``{group name: accuracy}`` over the rows whose target for that group
              is known (NaN when none is);
            * ``mean_accuracy``: mean of the 12 group accuracies;
            * ``mA``: label-based mean accuracy over the 30 binary columns
              (``schema.BINARY_COLUMNS``): per column ``(positive recall + negative recall) / 2``,
              averaged over columns. A column whose targets are all negative (or all positive)
              has only one defined recall and scores that recall, as
              ``sklearn.metrics.balanced_accuracy_score`` does;
            * ``column_mA``: ``{binary column: its balanced accuracy}``;
            * ``instance_accuracy``, ``instance_precision``, ``instance_recall``, ``instance_f1``:
              example-based metrics of Li et al. 2016 / the ALM paper on the binary columns:
              with ``Y`` the true and ``P`` the predicted positive sets of a row, the means over
              rows of ``|Y & P| / |Y | P|``, ``|Y & P| / |P|`` and ``|Y & P| / |Y|``, and
              ``F1 = 2 * precision * recall / (precision + recall)`` of those means (both sets
              always hold one age class, so no row divides by zero);
            * ``confusion``: ``{"age", "upcolour", "downcolour": (C, C) int64}``, rows = true
              class, columns = predicted class, classes in ``schema.GROUPS`` order;
            * ``num_rows``: rows with all 12 targets known (those used for mA and the
              instance metrics).

    Example: two people, only ``age`` differs in row 1 (adult predicted as young) ->
    accuracy["age"] = 0.5, every other group 1.0, mean_accuracy = 11.5 / 12.

    >>> true = np.array([[2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 1, 1, 0, 1, 0, 1, 8, 9]])
    >>> pred = true.copy(); pred[0, 0] = 0
    >>> m = attribute_metrics(pred, true)
    >>> m["accuracy"]["age"], round(m["mean_accuracy"], 4)
    (0.5, 0.9583)
    """
    pred = _to_numpy(pred_groups, "pred_groups")
    true = _to_numpy(true_groups, "true_groups")
    if pred.shape != true.shape or pred.ndim != 2 or pred.shape[1] != NUM_GROUPS:
        raise ValueError(
            f"pred_groups and true_groups must both have shape (N, {NUM_GROUPS}), got {pred.shape} and {true.shape}"
        )
    pred = validate_groups(pred, "pred_groups")  # every prediction must be a valid class
    known = true >= 0  # (N, 12)
    accuracy = {}
    for g, name in enumerate(GROUP_NAMES):
        rows = known[:, g]
        accuracy[name] = float((pred[rows, g] == true[rows, g]).mean()) if rows.any() else float("nan")
    accs = np.array(list(accuracy.values()))
    result = {
        "accuracy": accuracy,
        "mean_accuracy": float(np.nanmean(accs)) if not np.isnan(accs).all() else float("nan"),
    }

    confusion = {}
    for name in CONFUSION_GROUPS:
        g = GROUP_NAMES.index(name)
        rows = known[:, g]
        confusion[name] = confusion_matrix(
            true[rows, g], pred[rows, g], labels=np.arange(GROUPS[g].num_classes)
        ).astype(np.int64)
    result["confusion"] = confusion

    complete = known.all(axis=1)
    result["num_rows"] = int(complete.sum())
    if not complete.any():
        nan = float("nan")
        result.update(mA=nan, column_mA={c: nan for c in BINARY_COLUMNS}, instance_accuracy=nan,
                      instance_precision=nan, instance_recall=nan, instance_f1=nan)
        return result
    y_true = groups_to_binary(validate_groups(true[complete], "true_groups")).astype(bool)  # (n, 30)
    y_pred = groups_to_binary(pred[complete]).astype(bool)

    result.update(_label_based(y_true, y_pred))
    result.update(_instance_based(y_true, y_pred))
    return result


def _label_based(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Label-based mA on ``(n, 30)`` booleans: mean over columns of the mean defined recall."""
    pos, neg = y_true.sum(axis=0), (~y_true).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pos_recall = (y_true & y_pred).sum(axis=0) / pos
        neg_recall = (~y_true & ~y_pred).sum(axis=0) / neg
    column = np.nanmean(np.stack([pos_recall, neg_recall]), axis=0)  # every column has rows, so one is defined
    return {"mA": float(column.mean()), "column_mA": dict(zip(BINARY_COLUMNS, column.tolist()))}


def _instance_based(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Example-based accuracy, precision, recall and F1 on ``(n, 30)`` booleans."""
    inter = (y_true & y_pred).sum(axis=1)
    union = (y_true | y_pred).sum(axis=1)
    accuracy = float(np.mean(inter / np.maximum(union, 1)))
    precision = float(np.mean(inter / np.maximum(y_pred.sum(axis=1), 1)))
    recall = float(np.mean(inter / np.maximum(y_true.sum(axis=1), 1)))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "instance_accuracy": accuracy,
        "instance_precision": precision,
        "instance_recall": recall,
        "instance_f1": float(f1),
    }


def majority_baseline(train_groups, val_groups) -> float:
    """Mean (over the 12 groups) accuracy of always predicting the training majority class.

    Args:
        train_groups: ``(N_train, 12)`` class indices, -1 = unknown (ignored).
        val_groups: ``(N_val, 12)`` class indices, -1 = unknown (ignored).

    Ties between classes go to the lower class index; a group with no known training target
    predicts class 0; groups with no known validation target are left out of the mean.

    >>> train = np.zeros((3, 12), dtype=int); train[0, 0] = 1  # age: class 0 twice, class 1 once
    >>> val = np.zeros((2, 12), dtype=int); val[1, 0] = 1      # age: 1 of 2 right, the rest all right
    >>> round(majority_baseline(train, val), 4)  # (0.5 + 11 * 1.0) / 12
    0.9583
    """
    train = _to_numpy(train_groups, "train_groups")
    val = _to_numpy(val_groups, "val_groups")
    for name, x in (("train_groups", train), ("val_groups", val)):
        if x.ndim != 2 or x.shape[1] != NUM_GROUPS:
            raise ValueError(f"{name} must have shape (N, {NUM_GROUPS}), got {x.shape}")
    accs = []
    for g in range(NUM_GROUPS):
        t = train[:, g][train[:, g] >= 0]
        v = val[:, g][val[:, g] >= 0]
        if len(v) == 0:
            continue
        majority = int(np.bincount(t, minlength=GROUPS[g].num_classes).argmax()) if len(t) else 0
        accs.append(float((v == majority).mean()))
    return float(np.mean(accs)) if accs else float("nan")


def random_ranking_map(q_pids, g_pids, protocol: str = "course", draws: int = 20, seed: int = 0,
                       q_camids=None, g_camids=None) -> float:
    """The mAP a random ranking of the gallery gets: the chance level of :func:`evaluate_reid`.

    Averaged over ``draws`` seeded random distance matrices. Args as for :func:`evaluate_reid`
    (``q_pids`` ``(Q,)``, ``g_pids`` ``(G,)``; camera ids only for the Market protocol).

    With one query and a gallery of one match and one non-match, a random ranking puts the
    match first half the time (AP 1) and second otherwise (AP 1/2), so the chance is 0.75:

    >>> round(random_ranking_map([1], [1, 2], draws=2000), 2)
    0.75
    """
    q_pids, g_pids = _to_numpy(q_pids, "q_pids"), _to_numpy(g_pids, "g_pids")
    rng = np.random.default_rng(seed)
    values = [
        evaluate_reid(rng.random((len(q_pids), len(g_pids))), q_pids, g_pids, q_camids, g_camids,
                      protocol=protocol)["mAP"]
        for _ in range(draws)
    ]
    return float(np.mean(values))
