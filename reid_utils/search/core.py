"""``search()``: find a person in any folder of images, by photo, by description, or both."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch

from ..engine.checkpoint import input_size, load_model_from_checkpoint
from ..engine.runtime import FastPath, fast_path as make_fast_path, select_device
from ..errors import ConfigError, DataError
from ..schema import GROUPS, predict_groups
from .gallery import extract_images, gallery_features, list_images
from .ranking import describe, description_probability, parse_where, predicted_match, query_embedding, rank
from .report import COLUMNS, results_html, write_results

CACHE_FOLDER = "search_cache"


def query_images(query: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    """Query image paths: files as given, folders expanded to their images (one person)."""
    if query is None:
        return []
    items = [query] if isinstance(query, (str, os.PathLike)) else list(query)
    paths: list[Path] = []
    for item in items:
        item = Path(item).expanduser()
        if item.is_dir():
            paths.extend(list_images(item))
        elif item.is_file():
            paths.append(item.resolve())
        else:
            raise DataError(f"{item}: query image does not exist")
    return paths


def search(
    checkpoint: str | os.PathLike,
    gallery: str | os.PathLike,
    query: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    where: str | Mapping[str, str] | None = None,
    top_k: int = 10,
    out_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
    flip: bool = True,
    batch_size: int = 64,
    fast_path: FastPath | None = None,
    num_workers: int | None = None,
    progress: bool = False,
) -> dict:
    """Rank the images of ``gallery`` (a folder, searched recursively) for one person.

    Args:
        checkpoint: a ``.pt`` file written by training.
        gallery: folder of images, any names.
        query: image file(s) or a folder of one person; several images are averaged. Query
            files inside the gallery are never returned as hits.
        where: a description, ``"upcolour=red,backpack=yes"`` or ``{"upcolour": "red"}``
            (groups and values of :data:`reid_utils.schema.GROUPS`).
        top_k: hits to return.
        out_dir: write ``results.csv`` and ``results.html`` there (None: write nothing).
        cache_dir: where gallery features are cached; default ``<out_dir>/../search_cache``
            (beside ``out_dir``, so other searches reuse it). ``cache=False``: no cache.
        flip: flip-average the features (as evaluation and export do).
        fast_path: device and precision (None: the automatic one for the best device).
        progress: tqdm bar while extracting gallery features.

    Returns:
        ``{"table": DataFrame (the rows of results.csv), "html": str (the page, for
        IPython.display.HTML), "paths": {"csv", "html"} or {}, "query_paths": [str],
        "query_embedding": (D,) tensor or None, "where": dict or None, "gallery": {"paths",
        "embeddings", "attribute_logits", "skipped", "cache", "cached"}}``.
    """
    if isinstance(top_k, bool) or int(top_k) < 1:
        raise ConfigError(f"top_k={top_k}, expected a positive number of results")
    wanted = parse_where(where) if where is not None and where != "" else None
    queries = query_images(query)
    if not queries and wanted is None:
        raise ConfigError("nothing to search for: give query images (--query), a description (--where), or both")
    model, ckpt = load_model_from_checkpoint(checkpoint)
    height, width = input_size(ckpt)
    fp = fast_path if fast_path is not None else make_fast_path(select_device("auto"))
    if cache and cache_dir is None and out_dir is not None:
        out = Path(out_dir).expanduser().resolve()
        # beside OUT (so that several OUT folders share it), but never above the working folder
        cache_dir = out.parent / CACHE_FOLDER if out != Path.cwd().resolve() else out / CACHE_FOLDER
    g_paths = list_images(gallery)
    features = gallery_features(model, checkpoint, g_paths, height, width, fp, cache_dir if cache else None,
                                flip, batch_size, num_workers, progress)
    if wanted is not None and features["attribute_logits"] is None:
        raise ConfigError(f"{checkpoint}: the model predicts no attributes, so --where cannot be used")

    q_embedding = None
    if queries:
        q = extract_images(model, queries, height, width, fp, flip, batch_size, num_workers=0, desc="query")
        if q["skipped"]:
            raise DataError(q["skipped"][0][1])
        q_embedding = query_embedding(q["embeddings"])
    probability = matches = None
    if wanted is not None:
        probability = description_probability(features["attribute_logits"], model.attribute_form, wanted)
        matches = predicted_match(features["attribute_logits"], model.attribute_form, wanted)
    query_set = {str(p) for p in queries}
    exclude = torch.tensor([p in query_set for p in features["paths"]], dtype=torch.bool)
    ranked = rank(top_k, q_embedding, features["embeddings"], probability, matches, exclude)

    label = "+".join(p.name for p in queries)
    if wanted is not None:
        label = f"{label} [{describe(wanted)}]" if label else describe(wanted)
    table = results_table(label, ranked, features, model.attribute_form)
    how = {"image": "cosine distance to the query", "attributes": "probability of the description",
           "both": "images matching the description first, each part by cosine distance to the query"}
    details = (f"{len(features['paths'])} gallery images in {gallery}; checkpoint {checkpoint}; ranked by "
               + how["both" if queries and wanted else "image" if queries else "attributes"])
    page = results_html(table, [str(p) for p in queries], describe(wanted) if wanted else None,
                        f"search: {label}", details)
    paths = write_results(out_dir, table, page) if out_dir is not None else {}
    return {
        "table": table,
        "html": page,
        "paths": paths,
        "query_paths": [str(p) for p in queries],
        "query_embedding": q_embedding,
        "where": wanted,
        "gallery": features,
    }


def results_table(label: str, ranked: dict, features: dict, form: str) -> pd.DataFrame:
    """The rows of ``results.csv`` (:data:`~reid_utils.search.report.COLUMNS`) for one query."""
    indices = ranked["indices"]
    rows = {
        "query": [label] * len(indices),
        "rank": list(range(1, len(indices) + 1)),
        "path": [features["paths"][i] for i in indices.tolist()],
        "score": ranked["score"].tolist(),
        "distance": ranked["distance"].tolist() if ranked["distance"] is not None else [None] * len(indices),
        "probability": ranked["probability"].tolist() if ranked["probability"] is not None else [None] * len(indices),
        "matches": ranked["matches"].tolist() if ranked["matches"] is not None else [None] * len(indices),
    }
    logits = features["attribute_logits"]
    predicted = predict_groups(logits[indices], form).numpy() if logits is not None else None  # (k, 12)
    for g, group in enumerate(GROUPS):
        rows[group.name] = [group.classes[c] for c in predicted[:, g]] if predicted is not None else [""] * len(indices)
    return pd.DataFrame(rows, columns=list(COLUMNS))
