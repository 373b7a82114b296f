"""The final fit: a validated recipe trained again on every training identity.

Validation holds a quarter of the identities out to choose the recipe and its length. Once it
has, the model that writes the submission should see every identity (a third more people), for
the epochs the validated run found best. :func:`refit` does that, next to the validated run:
``runs/apr`` -> ``runs/apr_all_ids``. That checkpoint has no validation split of its own (its
``history.json`` has no validation metrics), so it is never evaluated, only exported.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError
from .checkpoint import load_checkpoint
from .loop import best_epoch
from .trainer import main

#: ``<run>`` -> ``<run>_all_ids``: where the refit of a run lands.
REFIT_SUFFIX = "_all_ids"


def refit_dir(run_dir: str | os.PathLike) -> Path:
    """The folder of ``run_dir``'s refit: a sibling named ``<name>_all_ids``."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + REFIT_SUFFIX)


def is_refit(run_dir: str | os.PathLike) -> bool:
    return Path(run_dir).name.endswith(REFIT_SUFFIX)


def refit(run_dir: str | os.PathLike, **overrides) -> dict:
    """Train ``run_dir``'s recipe again on every training identity; return the refit's history.

    ``overrides`` are the ``main`` hyperparameters the validated run was given (model, image
    size, ``max_minutes``, ...); the refit replaces its split (``val_fraction=0``, no split
    file), its folder (:func:`refit_dir`) and its length: the best epoch of ``run_dir/best.pt``,
    an upper bound when ``max_minutes`` is set (a third more images make every epoch longer).
    """
    run_dir = Path(run_dir)
    history = load_checkpoint(run_dir / "best.pt").get("history") or {}
    try:
        epochs = int(best_epoch(history)["epoch"])
    except KeyError:  # trained without validation: nothing chose a length
        raise CheckpointError(f"{run_dir / 'best.pt'}: no validation history to choose the refit's length from") from None
    changes = {"out_dir": str(refit_dir(run_dir)), "split_file": None, "val_fraction": 0.0, "num_epochs": epochs}
    return main(**{**overrides, **changes})
