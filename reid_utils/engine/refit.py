"""The final fit: a validated recipe trained again on every training identity.

Validation holds some identities out (a fifth by default, a quarter in the README's recipe) to
choose the recipe and its length. Once it has, the model that writes the submission should see
every identity (a quarter or a third more people), for
the epochs the validated run found best. :func:`refit` does that, next to the validated run:
``runs/apr`` -> ``runs/apr_all_ids``. That checkpoint has no validation split of its own (its
``history.json`` has no validation metrics), so it is never evaluated, only exported.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..config import TrainConfig
from ..errors import CheckpointError
from .checkpoint import changed_settings, load_checkpoint
from .trainer import main

#: ``<run>`` -> ``<run>_all_ids``: where the refit of a run lands.
REFIT_SUFFIX = "_all_ids"


def refit_dir(run_dir: str | os.PathLike) -> Path:
    """The folder of ``run_dir``'s refit: a sibling named ``<name>_all_ids``."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + REFIT_SUFFIX)


def is_refit(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` is a refit's folder (``<name>_all_ids``)."""
    name = Path(run_dir).name
    return name.endswith(REFIT_SUFFIX) and len(name) > len(REFIT_SUFFIX)


def validated_run(checkpoint: str | os.PathLike) -> Path | None:
    """The checkpoint of the validated run a refit repeats (``runs/apr_all_ids/best.pt`` ->
    ``runs/apr/best.pt``), or None when ``checkpoint`` is not in a refit folder or that run is gone."""
    folder = Path(checkpoint).parent
    if not is_refit(folder):
        return None
    path = folder.with_name(folder.name[: -len(REFIT_SUFFIX)]) / Path(checkpoint).name
    return path if path.is_file() else None


def refit(run_dir: str | os.PathLike, **overrides) -> dict:
    """Train ``run_dir``'s recipe again on every training identity; return the refit's history.

    ``overrides`` are the ``main`` hyperparameters the validated run was given (model, image
    size, ``max_minutes``, ``resume``, ...); the refit replaces its split (``val_fraction=0``, no
    split file), its folder (:func:`refit_dir`) and its length: the epoch of ``run_dir/best.pt``
    (the best by the run's ``early_stopping_metric``), an upper bound when ``max_minutes`` is set
    (more images make every epoch longer). ``resume=True`` continues an interrupted
    refit, but never one older than ``run_dir/best.pt`` (the refit of an earlier recipe) or one
    with other settings: those start again.
    """
    run_dir = Path(run_dir)
    best = run_dir / "best.pt"
    ckpt = load_checkpoint(best)
    if float((ckpt.get("config") or {}).get("val_fraction", 0.0)) <= 0:  # best.pt is then just the last epoch
        raise CheckpointError(f"{best}: trained without validation, so nothing chose the refit's length")
    changes = {"out_dir": str(refit_dir(run_dir)), "split_file": None, "val_fraction": 0.0,
               "num_epochs": int(ckpt["epoch"])}
    last = refit_dir(run_dir) / "last.pt"
    if overrides.get("resume") and last.is_file() and (
        last.stat().st_mtime < best.stat().st_mtime  # a refit of an earlier recipe
        or changed_settings(load_checkpoint(last), TrainConfig.from_overrides(**{**overrides, **changes}), last)
    ):
        changes["resume"] = False  # start again
    return main(**{**overrides, **changes})
