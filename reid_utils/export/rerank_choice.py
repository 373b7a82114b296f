"""Re-ranking in the export, on where validation says it helps: ``export_submission(rerank="auto")``.

k-reciprocal re-ranking (:mod:`reid_utils.metrics.rerank`) raised the validation course mAP by
about 8 points on every real-data run of the README, and costs seconds at the course's size. It
can also lower it: a model whose neighbour sets are noise gains nothing from mixing them in (the
README's threshold table has a sample model where it did). So the export decides per checkpoint,
as a user would by hand:

1. the re-ID checkpoint's validation split (:func:`reid_utils.data.split.validation_split`)
   goes through the model with the export's settings (flip, metric, top-k); for a refit on every
   identity (:mod:`reid_utils.engine.refit`), which has no split of its own, the validated run
   it repeats and that run's split stand in;
2. the course mAP of the top-k lists is computed with and without re-ranking;
3. re-ranking is on when it scores higher.

Without any validation split that fits the data (data of other people, a refit whose validated
run is gone) re-ranking is on: it helped on every validated real-data run. The manifest
(``settings.rerank_choice``) says which rule applied and, where measured, both scores.
``rerank=True`` / ``False`` skip the decision.
"""
from __future__ import annotations

import os

from ..engine.checkpoint import load_model_from_checkpoint
from ..engine.refit import validated_run
from ..errors import ExportError, ReidError
from ..metrics.retrieval import rank_gallery
from .threshold import course_map, feature_distances, validation_features

#: What ``rerank="auto"`` does without a validation split: re-rank (see the module's text).
WITHOUT_VALIDATION = True


def parse_rerank(value) -> bool | str:
    """``True`` / ``False`` / ``"auto"`` (also ``"on"``, ``"off"``, ``None`` = auto); anything else raises."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return "auto"
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("on", "off"):
        return value.strip().lower() == "on"
    raise ExportError(f"rerank={value!r}, expected True, False or 'auto' (decided on the validation split)")


def rerank_gain(features: dict, *, metric: str = "cosine", top_k: int = 100) -> dict:
    """Course mAP of the top-k lists of validation ``features`` without and with re-ranking:
    ``{"plain_mAP", "reranked_mAP", "num_queries"}``."""
    scores = {}
    for name, rerank in (("plain_mAP", False), ("reranked_mAP", True)):
        val = feature_distances(features, metric=metric, rerank=rerank)
        lists = list(rank_gallery(val["distmat"], top_k).numpy())
        scores[name] = course_map(lists, val["q_pids"], val["g_pids"])
    return {**scores, "num_queries": len(features["query"]["pids"])}


def choose_rerank(model, checkpoint: str | os.PathLike, ckpt: dict, index, fast_path, *, flip: bool = True,
                  metric: str = "cosine", top_k: int = 100, batch_size: int = 256,
                  num_workers: int | None = None) -> tuple[bool, dict, dict | None]:
    """``(rerank, record, features)``: the decision, what the manifest keeps of it, and the
    validation features of ``checkpoint`` itself (None otherwise) for ``threshold="auto"``."""
    options = dict(flip=flip, batch_size=batch_size, num_workers=num_workers, purpose="rerank='auto'")
    own = None
    try:
        features = own = validation_features(model, checkpoint, ckpt, index, fast_path, **options)
    except ReidError as error:  # no split, a split of other data, an unreadable validation image ...
        problem, features, validated = error, None, validated_run(checkpoint)
        if validated is not None:
            try:
                features = _repeated_run_features(validated, index, fast_path, options)
            except ReidError as later:
                problem = later
        if features is None:
            reason = f"no validation split to decide on ({problem}); re-ranking by default"
            return WITHOUT_VALIDATION, {"mode": "auto", "reason": reason}, None
    gain = rerank_gain(features, metric=metric, top_k=top_k)
    rerank = gain["reranked_mAP"] > gain["plain_mAP"]
    reason = (f"course mAP of the top-{top_k} lists on the {features['described']}: "
              f"{gain['plain_mAP']:.4f} plain, {gain['reranked_mAP']:.4f} re-ranked")
    record = {"mode": "auto", "reason": reason, "chosen_on": features["described"], **gain}
    return rerank, record, own


def _repeated_run_features(validated, index, fast_path, options: dict) -> dict:
    """Validation features of the run a refit repeats, through that run's own model."""
    model, ckpt = load_model_from_checkpoint(validated)
    features = validation_features(model, validated, ckpt, index, fast_path, **options)
    return {**features, "described": f"{features['described']}, of {validated} (the run this refit repeats)"}
