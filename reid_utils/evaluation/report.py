"""Evaluate a checkpoint: the results table of notebook 04 and ``python -m reid_utils evaluate``.

::

    result = evaluate_checkpoint("runs/apr/best.pt")          # the run's validation split
    result["reid"]               # rank-1/5/10, mAP, mINP x (flip, re-ranking, protocol)
    result["attribute_table"]    # 12 group accuracies, mean, mA, F1 (with / without flip)
    results_table({"apr": result, "alm": other})               # one row per model

Where it evaluates:

* **course layout**: the validation split saved with the checkpoint's run (``split.json`` next
  to the checkpoint, else the config's ``split_file``, else the same seeded split rebuilt);
  validation identities are never training identities (checked against the checkpoint).
* **Market layout** (``bounding_box_test/`` + ``query/``): the official query / gallery, so the
  ``market`` protocol numbers are the standard Market-1501 numbers.

Both protocols are reported (:func:`reid_utils.metrics.evaluate_reid`): ``market`` (same-camera
matches and junk ignored) and ``course`` (every same-id gallery image is a match). Also: a
distance threshold chosen on the evaluation set (:func:`reid_utils.metrics.retrieval.choose_threshold`,
with a two-fold estimate of how well it carries over to unseen queries) and junk flagging
(gallery images with all-low-confidence attributes ranked last), measured with and without.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..data import load_dataset, resolve_data_root
from ..data.split import validation_split
from ..engine.checkpoint import input_size, load_model_from_checkpoint
from ..engine.inference import CachedImages, extract, split_features
from ..engine.runtime import fast_path as make_fast_path, select_device
from ..errors import DataError, OutputError
from ..export.submission import rerank_distance
from ..io import atomic_open, atomic_write_text, check_output_path
from ..metrics.retrieval import (
    choose_threshold,
    compute_distance,
    demote_junk,
    flag_junk,
    junk_scores,
    threshold_scores,
)
from ..metrics.scores import attribute_metrics, evaluate_reid
from ..models import model_summary
from ..schema import GROUP_NAMES, group_probabilities, labelled_rows, predict_groups

REID_COLUMNS = ("rank1", "rank5", "rank10", "mAP", "mINP")
#: Decoded images are kept in RAM for the flip / no-flip passes below this size.
_CACHE_LIMIT_BYTES = 1 << 30


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    data_root: str | os.PathLike | None = None,
    split_file: str | os.PathLike | None = None,
    flip: Sequence[bool] = (False, True),
    rerank: Sequence[bool] = (False, True),
    protocols: Sequence[str] = ("market", "course"),
    metric: str = "cosine",
    source: str = "auto",
    batch_size: int = 256,
    fast_path=None,
    junk_quantile: float = 0.05,
    num_workers: int | None = None,
    progress: bool = False,
) -> dict:
    """Every number of the notebook-04 results table for one checkpoint.

    Args:
        checkpoint: a ``.pt`` file written by training.
        data_root: dataset folder (None: ``$REID_DATA_ROOT`` or the bundled sample).
        split_file: the validation split to use (default: see the module docstring).
        flip: flip-averaging settings to evaluate, e.g. ``(False, True)``.
        rerank: re-ranking settings (k-reciprocal, k1=20, k2=6, lambda=0.3).
        protocols: ``"market"`` and/or ``"course"``.
        metric: ``"cosine"`` or ``"euclidean"`` distance.
        source: ``"val"`` (validation split), ``"test"`` (official query / gallery, Market
            layout only) or ``"auto"`` (``"test"`` for the Market layout, else ``"val"``).
        junk_quantile: fraction of gallery images flagged as junk (lowest attribute confidence).

    Returns:
        dict with ``model`` (name, params, gflops, input size, attribute form), ``source``,
        ``num_query``, ``num_gallery``, ``reid`` (DataFrame: one row per flip x rerank x
        protocol; columns rank1, rank5, rank10, mAP, mINP), ``cmc`` (``{label: (50,) array}``),
        ``attributes`` (``{flip: attribute_metrics dict}``), ``attribute_table`` (DataFrame:
        one row per flip; the 12 accuracies, mean, mA, F1), ``threshold``, ``junk``,
        ``timings`` and ``features`` (the last flip setting's query / gallery features and
        distmat, for plots).
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    model, ckpt = load_model_from_checkpoint(checkpoint)
    index = load_dataset(resolve_data_root(data_root))
    query_records, gallery_records, described = evaluation_records(checkpoint, ckpt, index, split_file, source)
    height, width = input_size(ckpt)
    fp = fast_path if fast_path is not None else make_fast_path(select_device("auto"))
    summary = model_summary(model, height, width)
    timings["load"] = time.perf_counter() - clock

    records = list(query_records) + list(gallery_records)
    sizes = [len(query_records), len(gallery_records)]
    images = records
    if len(flip) > 1 and len(records) * 3 * height * width < _CACHE_LIMIT_BYTES:
        clock = time.perf_counter()
        images = CachedImages.from_records(records, height, width)  # decoded once for every flip setting
        timings["decode"] = time.perf_counter() - clock

    rows, cmc, attributes = [], {}, {}
    features = None
    for use_flip in flip:
        clock = time.perf_counter()
        feats = extract(model, images, fp, batch_size=batch_size, flip=use_flip, height=height, width=width,
                        num_workers=num_workers, progress=progress)
        timings[f"extract_flip={use_flip}"] = time.perf_counter() - clock
        query, gallery = split_features(feats, sizes)
        base = compute_distance(query["embeddings"], gallery["embeddings"], metric=metric)  # (Q, G)
        attributes[use_flip] = _attribute_scores(feats, records, model.attribute_form, attribute_metrics)
        for use_rerank in rerank:
            clock = time.perf_counter()
            distmat = _rerank(query["embeddings"], gallery["embeddings"], metric) if use_rerank else base
            if use_rerank:
                timings[f"rerank_flip={use_flip}"] = time.perf_counter() - clock
            for protocol in protocols:
                scores = evaluate_reid(distmat, query["pids"], gallery["pids"], query["camids"], gallery["camids"],
                                       protocol=protocol)
                rows.append({"flip": use_flip, "rerank": use_rerank, "protocol": protocol,
                             **{k: scores[k] for k in REID_COLUMNS},
                             "num_valid_queries": scores["num_valid_queries"]})
                cmc[_label(use_flip, use_rerank, protocol)] = scores["cmc"]
        features = {"query": query, "gallery": gallery, "distmat": base}

    clock = time.perf_counter()
    threshold = threshold_report(features["distmat"], features["query"], features["gallery"])
    junk = junk_report(features["distmat"], features["query"], features["gallery"], model.attribute_form,
                       junk_quantile, protocols)
    timings["threshold_and_junk"] = time.perf_counter() - clock
    return {
        "checkpoint": str(checkpoint),
        "model": {
            "name": ckpt.get("model_name", (ckpt.get("config") or {}).get("model")),
            "params": summary["params"],
            "gflops": summary["gflops"],
            "height": height,
            "width": width,
            "attribute_form": model.attribute_form,
        },
        "source": described,
        "num_query": sizes[0],
        "num_gallery": sizes[1],
        "reid": pd.DataFrame(rows),
        "cmc": cmc,
        "attributes": attributes,
        "attribute_table": attribute_table(attributes),
        "threshold": threshold,
        "junk": junk,
        "timings": timings,
        "fast_path": fp.describe(),
        "features": features,
    }


def evaluation_records(checkpoint, ckpt: dict, index, split_file=None, source: str = "auto"):
    """``(query records, gallery records, description)`` to evaluate ``ckpt`` on (module docstring)."""
    if source not in ("auto", "val", "test"):
        raise ValueError(f"source must be 'auto', 'val' or 'test', got {source!r}")
    if source == "auto":
        source = "test" if index.layout == "market" else "val"
    if source == "test":
        if index.layout != "market":
            raise DataError(
                f"{index.root}: the course test/ and queries/ images are unlabelled; evaluate on the validation "
                "split (source='val') or on a Market-1501 folder (bounding_box_test/ + query/)"
            )
        return list(index.query), list(index.test), f"official query/bounding_box_test of {index.root}"
    split, described = validation_split(checkpoint, ckpt, index, split_file)  # the run's held-out identities
    return list(split.val_query), list(split.val_gallery), described


def _rerank(q_feats, g_feats, metric: str):
    return rerank_distance(q_feats, g_feats, metric=metric)


def _label(use_flip: bool, use_rerank: bool, protocol: str) -> str:
    return f"{protocol}{' +flip' if use_flip else ''}{' +rerank' if use_rerank else ''}"


def _attribute_scores(feats: dict, records, form: str, attribute_metrics) -> dict | None:
    """attribute_metrics on the images whose attributes are known (not junk / distractors)."""
    if feats["attribute_logits"] is None:
        return None
    true = np.stack([np.asarray(r.attributes) for r in records])  # (N, 12)
    known = labelled_rows(true)
    if not known.any():
        return None
    pred = predict_groups(feats["attribute_logits"][torch.from_numpy(known)], form).numpy()
    return attribute_metrics(pred, true[known])


def attribute_table(attributes: Mapping[bool, dict | None]) -> pd.DataFrame:
    """One row per flip setting: the 12 group accuracies, ``mean``, ``mA`` and ``F1`` (fractions)."""
    rows = []
    for use_flip, m in attributes.items():
        if m is None:
            continue
        rows.append({"flip": use_flip, **m["accuracy"], "mean": m["mean_accuracy"], "mA": m["mA"],
                     "F1": m["instance_f1"]})
    return pd.DataFrame(rows, columns=["flip", *GROUP_NAMES, "mean", "mA", "F1"])


# ---------------------------------------------------------------------------------------------
# Threshold and junk flagging


def threshold_report(distmat, query: dict, gallery: dict) -> dict:
    """The distance threshold that maximises match F1 on the evaluation set, and how it transfers.

    ``threshold`` and ``precision`` / ``recall`` / ``f1`` / ``mean_results`` are chosen and
    measured on all queries (optimistic); ``two_fold_f1`` chooses on half the queries and
    measures on the other half (both ways, averaged): the number to expect on unseen queries.
    """
    args = (query["pids"], gallery["pids"], query["camids"], gallery["camids"])
    try:
        threshold = choose_threshold(distmat, *args)
    except ValueError as error:
        return {"error": str(error)}
    result = {"threshold": threshold, **threshold_scores(distmat, query["pids"], gallery["pids"], threshold,
                                                         query["camids"], gallery["camids"])}
    folds = [np.arange(len(distmat))[i::2] for i in range(2)]
    f1s = []
    for choose, measure in (folds, folds[::-1]):
        try:
            t = choose_threshold(distmat[choose], query["pids"][choose], gallery["pids"], query["camids"][choose],
                                 gallery["camids"])
        except ValueError:
            continue
        f1s.append(threshold_scores(distmat[measure], query["pids"][measure], gallery["pids"], t,
                                    query["camids"][measure], gallery["camids"])["f1"])
    result["two_fold_f1"] = float(np.mean(f1s)) if f1s else float("nan")
    return result


def junk_report(distmat, query: dict, gallery: dict, attribute_form: str, quantile: float = 0.05,
                protocols: Sequence[str] = ("market", "course")) -> dict:
    """Flag the ``quantile`` least attribute-confident gallery images; re-ID with and without demoting them.

    Returns ``flagged`` (count), ``flagged_junk`` (of those, how many are junk or distractors,
    pid <= 0), ``gallery_junk`` (junk / distractors in the gallery), ``score_threshold`` and,
    per protocol, ``{protocol: {"mAP": before, "mAP_demoted": after, "rank1": ..., "rank1_demoted": ...}}``.
    """
    logits = gallery.get("attribute_logits")
    if logits is None:
        return {"error": "the model predicts no attributes"}
    scores = junk_scores(group_probabilities(logits, attribute_form))  # (G,)
    threshold = float(torch.quantile(scores, quantile))
    mask = flag_junk(scores, threshold)
    g_pids = np.asarray(gallery["pids"])
    result = {
        "quantile": quantile,
        "score_threshold": threshold,
        "flagged": int(mask.sum()),
        "flagged_junk": int((mask.numpy() & (g_pids <= 0)).sum()),
        "gallery_junk": int((g_pids <= 0).sum()),
    }
    demoted = demote_junk(distmat, mask)
    for protocol in protocols:
        args = (query["pids"], gallery["pids"], query["camids"], gallery["camids"])
        before = evaluate_reid(distmat, *args, protocol=protocol)
        after = evaluate_reid(demoted, *args, protocol=protocol)
        result[protocol] = {"mAP": before["mAP"], "mAP_demoted": after["mAP"],
                            "rank1": before["rank1"], "rank1_demoted": after["rank1"]}
    return result


# ---------------------------------------------------------------------------------------------
# Tables


def results_table(results: Mapping[str, dict], protocol: str = "market") -> pd.DataFrame:
    """One row per model (notebook 04): params (M), GFLOPs, the 12 attribute accuracies (with
    flip when evaluated), mean, mA, F1 and re-ID rank-1/5/10, mAP, mINP of ``protocol`` for every
    flip x re-ranking setting (columns like ``mAP +flip +rerank``). Values in %."""
    rows = []
    for name, result in results.items():
        row = {"model": name, "params (M)": result["model"]["params"] / 1e6, "GFLOPs": result["model"]["gflops"]}
        table = result["attribute_table"]
        if len(table):
            best = table.iloc[-1]
            row.update({k: 100 * float(best[k]) for k in (*GROUP_NAMES, "mean", "mA", "F1")})
        reid = result["reid"]
        for _, r in reid[reid["protocol"] == protocol].iterrows():
            suffix = f"{' +flip' if r['flip'] else ''}{' +rerank' if r['rerank'] else ''}"
            row.update({f"{k}{suffix}": 100 * float(r[k]) for k in REID_COLUMNS})
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def format_result(result: dict) -> str:
    """The printed report of :func:`evaluate_command` (percentages)."""
    m = result["model"]
    lines = [
        f"checkpoint {result['checkpoint']}: {m['name']} | {m['params'] / 1e6:.2f} M params | "
        f"{m['gflops']:.2f} GFLOPs at {m['height']}x{m['width']} | attributes: {m['attribute_form']}",
        f"evaluated on {result['source']}: {result['num_query']} queries, {result['num_gallery']} gallery images "
        f"({result['fast_path']})",
        "",
        "re-ID (%):",
    ]
    reid = result["reid"].copy()
    for column in REID_COLUMNS:
        reid[column] = (100 * reid[column]).round(2)
    lines += [reid.to_string(index=False), ""]
    table = result["attribute_table"]
    if len(table):
        shown = table.copy()
        for column in shown.columns[1:]:
            shown[column] = (100 * shown[column]).round(1)
        lines += ["attributes (accuracy %, mA %, instance F1 %):", shown.to_string(index=False), ""]
    t = result["threshold"]
    if "threshold" in t:
        lines.append(
            f"distance threshold {t['threshold']:.4f}: precision {100 * t['precision']:.1f}%, recall "
            f"{100 * t['recall']:.1f}%, F1 {100 * t['f1']:.1f}% ({t['mean_results']:.1f} results per query; "
            f"F1 {100 * t['two_fold_f1']:.1f}% when chosen on the other half of the queries)"
        )
    j = result["junk"]
    if "flagged" in j:
        parts = [f"{p}: mAP {100 * v['mAP']:.2f} -> {100 * v['mAP_demoted']:.2f}, rank-1 {100 * v['rank1']:.2f} -> "
                 f"{100 * v['rank1_demoted']:.2f}" for p, v in j.items() if isinstance(v, dict)]
        lines.append(
            f"junk flagging ({j['flagged']} lowest-confidence gallery images ranked last, {j['flagged_junk']} of "
            f"them junk/distractors of {j['gallery_junk']}): " + "; ".join(parts)
        )
    return "\n".join(lines)


def to_jsonable(result: dict) -> dict:
    """``result`` without the feature tensors, with DataFrames / arrays as lists (for JSON)."""

    def convert(value):
        if isinstance(value, pd.DataFrame):
            return value.to_dict(orient="records")
        if isinstance(value, (np.ndarray, torch.Tensor)):
            return np.asarray(value).tolist()
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        return value

    return convert({k: v for k, v in result.items() if k != "features"})


def evaluate_command(data_root, checkpoint, out=None, rerank: bool = True, flip: bool = True) -> dict:
    """``python -m reid_utils evaluate``: evaluate, print the report, optionally save it.

    ``out``: a ``.json`` file (everything), a ``.csv`` file (the re-ID table), or a folder
    (``evaluation.json``, ``reid.csv``, ``attributes.csv``). Written atomically. Any other
    extension (``res.txt``) is refused before evaluating, not made into a folder.
    """
    if out is not None and Path(out).suffix not in ("", ".json", ".csv") and not Path(out).is_dir():
        raise OutputError(f"{out}: expected a .json or .csv file, or a folder (a name without extension)")
    if out is not None:
        check_output_path(out)  # a file in the way: say so now, not after the evaluation
    result = evaluate_checkpoint(
        checkpoint, data_root, flip=(False, True) if flip else (False,), rerank=(False, True) if rerank else (False,)
    )
    print(format_result(result))
    if out is not None:
        out = Path(out)
        if out.suffix == ".json":
            atomic_write_text(out, json.dumps(to_jsonable(result), indent=1) + "\n")
        elif out.suffix == ".csv":
            with atomic_open(out, "w") as f:
                result["reid"].to_csv(f, index=False)
        else:
            atomic_write_text(out / "evaluation.json", json.dumps(to_jsonable(result), indent=1) + "\n")
            with atomic_open(out / "reid.csv", "w") as f:
                result["reid"].to_csv(f, index=False)
            with atomic_open(out / "attributes.csv", "w") as f:
                result["attribute_table"].to_csv(f, index=False)
        print(f"wrote {out}")
    return result
