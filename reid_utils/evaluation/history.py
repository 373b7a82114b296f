"""Tables from training histories (``history.json``): the best epoch of each model, in %."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from ..engine.loop import best_epoch
from ..errors import CheckpointError
from ..schema import GROUP_NAMES


def load_history(checkpoint_or_run: str | os.PathLike) -> dict:
    """The per-epoch history of a run: ``history.json`` next to a checkpoint, or in a run folder."""
    path = Path(checkpoint_or_run)
    folder = path if path.is_dir() else path.parent
    history_file = folder / "history.json"
    if not history_file.is_file():
        raise FileNotFoundError(f"{history_file}: no training history (train the model in notebook 02 or 03)")
    return json.loads(history_file.read_text(encoding="utf-8"))


def _best_rows(histories: Mapping[str, dict], metric: str) -> dict[str, dict]:
    return {name: best_epoch(history, metric) for name, history in histories.items()}


def attribute_accuracy_table(histories: Mapping[str, dict], metric: str = "attribute_accuracy"):
    """Validation accuracy per attribute group at each model's best epoch (by ``metric``), in %.

    Laid out like the multi-task README's table: one row per model, the 12 attribute groups,
    their ``mean``, then label-based ``mA`` and the ``epoch`` picked.
    """
    rows = {}
    for name, best in _best_rows(histories, metric).items():
        row = {group: 100 * best[f"attribute_accuracy_{group}"] for group in GROUP_NAMES}
        row.update(mean=100 * best["attribute_accuracy"], mA=100 * best["mA"], epoch=int(best["epoch"]))
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def reid_table(histories: Mapping[str, dict], metric: str = "score"):
    """Validation re-ID at each model's best epoch (by ``metric``), in %: Market-protocol mAP,
    rank-1, rank-5, mINP, course-protocol mAP / rank-1, mean attribute accuracy, and the epoch."""
    keys = ("mAP", "rank1", "rank5", "mINP", "course_mAP", "course_rank1", "attribute_accuracy")
    rows = {}
    for name, best in _best_rows(histories, metric).items():
        row = {key: 100 * best[key] for key in keys if key in best}
        row["epoch"] = int(best["epoch"])
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def best_checkpoint(checkpoints: Mapping[str, str | os.PathLike], metric: str) -> str:
    """The name in ``checkpoints`` (name -> ``best.pt``) whose run reached the best validation
    ``metric`` (its ``history.json``; ``val_loss``: lowest). Runs without that metric (trained
    without validation) only win when no run has it; ties go to the first name.

    >>> import tempfile; folder = Path(tempfile.mkdtemp())
    >>> for name, acc in (("alm", 0.7), ("apr", 0.8)):
    ...     (folder / name).mkdir(); _ = (folder / name / "history.json").write_text(json.dumps({"epoch": [1], "mA": [acc]}))
    >>> best_checkpoint({"alm": folder / "alm" / "best.pt", "apr": folder / "apr" / "best.pt"}, "mA")
    'apr'
    """
    if not checkpoints:
        raise CheckpointError(f"no checkpoint to choose from by {metric}: train one first (notebooks 02 and 03)")
    scores = {}
    for name, path in checkpoints.items():
        history = load_history(path)
        if not np.isnan(np.asarray(history.get(metric) or [np.nan], dtype=float)).all():
            scores[name] = best_epoch(history, metric)[metric]
    if not scores:
        return next(iter(checkpoints))
    sign = 1 if metric == "val_loss" else -1  # the lowest loss, else the highest value
    order = list(checkpoints)
    return min(scores, key=lambda name: (sign * scores[name], order.index(name)))
