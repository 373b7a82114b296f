"""Dataset statistics for ``python -m reid_utils inspect ROOT`` and the data notebook.

``summarize(root)`` loads and validates a dataset folder (any error is a
:class:`~reid_utils.errors.DataError` naming the file) and returns a JSON-ready dict;
``format_summary`` renders it as text.
"""
from __future__ import annotations

import os
from collections import Counter

import numpy as np

from ..schema import BINARY_COLUMNS, groups_to_binary
from .dataset import validate_images
from .layouts import load_dataset
from .locate import resolve_data_root
from .parsing import is_distractor, is_junk, is_labelled


def summarize(
    root: str | os.PathLike, check_images: bool = True, attribute_file: str | os.PathLike | None = None
) -> dict:
    """Validate the dataset in ``root`` and describe it.

    Keys: ``layout``, ``root``, ``annotation_file``, ``train_ids``, ``train_images``,
    ``test_images``, ``query_images``, ``test_ids`` / ``query_ids`` (``None`` when the images
    are anonymous, as in the course layout), ``junk_images``, ``distractor_images``,
    ``cameras`` (1-based camera numbers of the training images), ``images_per_camera``
    (training images, ``{"c1": n, ...}``), ``images_per_identity`` (``min``, ``median``,
    ``mean``, ``max`` over training identities), ``attribute_positive_rates`` (share of
    training identities with each of the 30 binary-form columns set: age one-hot, then the
    26 yes/no and colour columns), ``skipped_files`` and ``skipped`` (non-image files, paths
    relative to the root). With ``check_images`` every image is decoded and
    ``images_checked``, ``image_modes``, ``image_sizes`` and ``queries_in_test`` (query images
    with a pixel-identical copy among the test images) are added.

    ``root`` may be a ``.zip``: it is extracted next to itself first, as for training
    (:func:`~reid_utils.data.locate.resolve_data_root`).
    """
    index = load_dataset(resolve_data_root(root), attribute_file)
    labelled = [r for r in index.train if is_labelled(r.pid)]
    per_identity = Counter(r.pid for r in labelled)
    counts = np.array(list(per_identity.values()))
    attributes = {r.pid: r.attributes for r in labelled}  # labels are per identity
    rates = groups_to_binary(np.stack(list(attributes.values()))).mean(axis=0)
    everything = index.train + index.test + index.query

    def ids(records: list) -> int | None:
        known = {r.pid for r in records if is_labelled(r.pid)}
        return len(known) if known else None

    summary = {
        "layout": index.layout,
        "root": str(index.root),
        "annotation_file": str(index.annotation_file) if index.annotation_file else None,
        "train_ids": len(per_identity),
        "train_images": len(index.train),
        "test_images": len(index.test),
        "query_images": len(index.query),
        "test_ids": ids(index.test),
        "query_ids": ids(index.query),
        "junk_images": sum(is_junk(r.pid) for r in everything),
        "distractor_images": sum(is_distractor(r.pid) for r in everything),
        "cameras": sorted({r.camid + 1 for r in index.train if r.camid >= 0}),
        "images_per_camera": {f"c{c + 1}": n for c, n in sorted(Counter(r.camid for r in index.train).items())},
        "images_per_identity": {
            "min": int(counts.min()),
            "median": float(np.median(counts)),
            "mean": round(float(counts.mean()), 2),
            "max": int(counts.max()),
        },
        "attribute_positive_rates": {name: round(float(rate), 4) for name, rate in zip(BINARY_COLUMNS, rates)},
        "skipped_files": len(index.skipped),
        "skipped": [_relative(p, index.root) for p in index.skipped],
    }
    if check_images:
        summary.update(validate_images(index))
    return summary


def _relative(path, root) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def format_summary(summary: dict) -> str:
    """Human-readable multi-line text of a :func:`summarize` dict."""
    s = summary
    per = s["images_per_identity"]
    lines = [
        f"layout: {s['layout']}  ({s['root']})",
        f"annotations: {s['annotation_file']}",
        f"train: {s['train_ids']:,} identities, {s['train_images']:,} images "
        f"(per identity min {per['min']}, median {per['median']:g}, mean {per['mean']:g}, max {per['max']})",
        f"test: {s['test_images']:,} images" + (f", {s['test_ids']:,} identities" if s.get("test_ids") else ""),
        f"query: {s['query_images']:,} images" + (f", {s['query_ids']:,} identities" if s.get("query_ids") else ""),
    ]
    if s.get("junk_images") or s.get("distractor_images"):
        lines.append(f"junk (pid -1): {s['junk_images']:,} images, distractors (pid 0): {s['distractor_images']:,} images")
    lines.append("train images per camera: " + ", ".join(f"{c} {n:,}" for c, n in s["images_per_camera"].items()))
    if s["skipped_files"]:
        shown = ", ".join(s["skipped"][:5]) + (" ..." if s["skipped_files"] > 5 else "")
        lines.append(f"skipped {s['skipped_files']} non-image file(s): {shown}")
    else:
        lines.append("skipped: no non-image files")
    if "images_checked" in s:
        modes = ", ".join(f"{m} {n:,}" for m, n in sorted(s["image_modes"].items()))
        sizes = ", ".join(f"{k} {n:,}" for k, n in sorted(s["image_sizes"].items(), key=lambda kv: -kv[1])[:3])
        lines.append(f"images: {s['images_checked']:,} decoded OK (modes: {modes}; sizes WxH: {sizes})")
        converted = sum(n for m, n in s["image_modes"].items() if m != "RGB")
        if converted:
            lines.append(f"  {converted:,} non-RGB image(s) will be converted to RGB when read")
        deep = sum(n for m, n in s["image_modes"].items() if m.startswith("I"))
        if deep:
            lines.append(f"  {deep:,} of them have 16-bit samples, scaled to 8 bits (v * 255 / 65535)")
        if s.get("queries_in_test"):
            lines.append(f"queries: {s['queries_in_test']:,} of {s['query_images']:,} are pixel-identical copies of test "
                         "images, so every ranking of those starts with the query's own copy (the course evaluator "
                         "counts it as a match)")
    lines.append(f"attribute positive rates over the {s['train_ids']:,} training identities:")
    items = list(s["attribute_positive_rates"].items())
    for start in range(0, len(items), 5):
        lines.append("  " + "  ".join(f"{name} {rate:.3f}" for name, rate in items[start:start + 5]))
    return "\n".join(lines)
