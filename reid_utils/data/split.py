"""Identity-disjoint train / validation split of the training images, saved to JSON.

``make_split(index, val_fraction=0.2, seed=0)`` draws ``round(val_fraction * num_ids)``
validation identities at random (seeded; at least one, and at least one left for training).
Validation images are divided the Market-1501 way:

* one query per (identity, camera), drawn at random, the rest of the images in the gallery;
* every query must have a gallery image of its identity from *another* camera (the Market
  protocol ignores same-camera matches), so a query without one goes back to the gallery.
  In particular an identity seen by a single camera gives no query: all its images are
  gallery distractors for the other queries.

Junk (pid -1) and distractor (pid 0) images of a Market training folder are never training
identities; they join the validation gallery. ``pid_to_label`` maps the training identities
(sorted) to contiguous labels ``0..num_train_ids-1``.

``save_split`` writes JSON atomically (paths relative to the dataset root, so the file works
on Colab and locally); ``load_split(path, index)`` rebuilds the same :class:`Split` and checks
that it matches the dataset.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, ConfigError, DataError
from ..io import atomic_write_text
from .layouts import DatasetIndex, Record
from .parsing import is_labelled

SPLIT_FORMAT = "reid_utils.split/1"


@dataclass(eq=False)
class Split:
    """Training images plus a validation query / gallery, identity-disjoint."""

    train: list[Record]
    val_query: list[Record]
    val_gallery: list[Record]
    pid_to_label: dict[int, int]
    seed: int = 0
    val_fraction: float = 0.2
    val_pids: list[int] = field(default_factory=list)
    root: Path | None = None  # dataset root, for saving paths relative to it

    @property
    def num_train_ids(self) -> int:
        return len(self.pid_to_label)

    def __repr__(self) -> str:
        return (
            f"Split(train={len(self.train)} images / {self.num_train_ids} ids, val_query={len(self.val_query)}, "
            f"val_gallery={len(self.val_gallery)}, val_ids={len(self.val_pids)}, seed={self.seed})"
        )


def _order(record: Record) -> tuple:
    return record.pid, record.camid, str(record.path)


def query_gallery(records: list[Record], seed: int = 0) -> tuple[list[Record], list[Record]]:
    """Market-style query / gallery of labelled ``records`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    by_pid_cam: dict[int, dict[int, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for record in sorted(records, key=_order):
        by_pid_cam[record.pid][record.camid].append(record)
    query, gallery = [], []
    for pid in sorted(by_pid_cam):
        cams = by_pid_cam[pid]
        picked = {cam: int(rng.integers(len(images))) for cam, images in sorted(cams.items())}

        def gallery_cams() -> set[int]:
            return {cam for cam, images in cams.items() if len(images) > (1 if cam in picked else 0)}

        while True:  # drop queries without a cross-camera gallery match until none is left
            invalid = [cam for cam in sorted(picked) if not gallery_cams() - {cam}]
            if not invalid:
                break
            del picked[invalid[0]]
        for cam, images in sorted(cams.items()):
            for j, record in enumerate(images):
                (query if picked.get(cam) == j else gallery).append(record)
    return query, gallery


def make_split(index: DatasetIndex, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Split ``index.train`` by identity; ``val_fraction=0`` keeps every identity for training.

    A split that holds out more than half of the identities warns (``UserWarning``): with
    ``val_fraction=0.99`` training would see one identity.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction={val_fraction}, expected 0 <= val_fraction < 1")
    if not 0 <= seed < 2**63:
        raise ConfigError(f"split seed {seed} is out of range, expected 0 <= seed < 2**63")
    pids = np.array(index.train_pids)
    if len(pids) == 0:
        raise DataError(f"{index.root}: no labelled training identities to split")
    num_val = 0
    if val_fraction > 0:
        if len(pids) < 2:
            raise DataError(f"{index.root}: {len(pids)} training identity, need at least 2 for a validation split")
        num_val = min(max(1, round(val_fraction * len(pids))), len(pids) - 1)
        if num_val > len(pids) / 2:
            warnings.warn(f"val_fraction={val_fraction} leaves only {len(pids) - num_val} of the {len(pids)} identities "
                          f"in {index.root} for training", UserWarning, stacklevel=2)
    rng = np.random.default_rng(seed)
    val_pids = set(rng.permutation(pids)[:num_val].tolist())
    train = [r for r in index.train if is_labelled(r.pid) and r.pid not in val_pids]
    val_query, val_gallery = query_gallery([r for r in index.train if r.pid in val_pids], seed)
    return Split(
        train=train,
        val_query=val_query,
        val_gallery=val_gallery + [r for r in index.train if not is_labelled(r.pid)],
        pid_to_label={pid: label for label, pid in enumerate(sorted({r.pid for r in train}))},
        seed=seed,
        val_fraction=val_fraction,
        val_pids=sorted(val_pids),
        root=index.root,
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def save_split(split: Split, path: str | os.PathLike) -> None:
    """Write ``split`` as JSON (atomically). Paths are stored relative to ``split.root``."""
    root = split.root if split.root is not None else Path("/")
    data = {
        "format": SPLIT_FORMAT,
        "seed": split.seed,
        "val_fraction": split.val_fraction,
        "num_train_images": len(split.train),
        "num_val_images": len(split.val_query) + len(split.val_gallery),
        "train_pids": sorted(split.pid_to_label),
        "val_pids": sorted(split.val_pids),
        "val_query": [_relative(r.path, root) for r in split.val_query],
        "pid_to_label": {str(pid): label for pid, label in split.pid_to_label.items()},
    }
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def load_split(path: str | os.PathLike, index: DatasetIndex) -> Split:
    """Read a split written by :func:`save_split` and rebuild it on ``index``.

    Raises :class:`DataError` naming the file when it is not a split file or does not match
    the dataset (identities or images added / removed since it was saved).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file is missing (create one with make_split + save_split)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise DataError(f"{path}: not a valid JSON split file ({error})") from None
    if not isinstance(data, dict) or data.get("format") != SPLIT_FORMAT:
        raise DataError(f"{path}: not a split file (expected \"format\": \"{SPLIT_FORMAT}\")")
    try:
        train_pids, val_pids = set(data["train_pids"]), set(data["val_pids"])
        pid_to_label = {int(pid): int(label) for pid, label in data["pid_to_label"].items()}
        query_paths = list(data["val_query"])
        seed, val_fraction = int(data["seed"]), float(data["val_fraction"])
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        raise DataError(f"{path}: split file is incomplete or malformed ({error!r})") from None
    if not all(type(pid) is int for pid in train_pids | val_pids) or not all(isinstance(p, str) for p in query_paths):
        raise DataError(f"{path}: split file is malformed (expected integer person ids and relative image paths)")
    dataset_pids = set(index.train_pids)
    if train_pids | val_pids != dataset_pids or train_pids & val_pids:
        extra = sorted((train_pids | val_pids) - dataset_pids)
        new = sorted(dataset_pids - train_pids - val_pids)
        raise DataError(
            f"{path}: split does not match the dataset in {index.root}: "
            f"{len(extra)} identities only in the split (e.g. {extra[:3]}), {len(new)} only in the dataset "
            f"(e.g. {new[:3]}); make a new split"
        )
    if set(pid_to_label) != train_pids or sorted(pid_to_label.values()) != list(range(len(train_pids))):
        raise DataError(f"{path}: pid_to_label must map the {len(train_pids)} train_pids to labels 0..{len(train_pids) - 1}")
    val = [r for r in index.train if r.pid in val_pids]
    by_path = {_relative(r.path, index.root): r for r in val}
    missing = [p for p in query_paths if p not in by_path]
    if missing:
        raise DataError(f"{path}: validation query {missing[0]} is not a validation image of {index.root}; make a new split")
    query_set = set(query_paths)
    split = Split(
        train=[r for r in index.train if r.pid in train_pids],
        val_query=[by_path[p] for p in query_paths],
        val_gallery=sorted((r for key, r in by_path.items() if key not in query_set), key=_order)
        + [r for r in index.train if not is_labelled(r.pid)],
        pid_to_label=pid_to_label,
        seed=seed,
        val_fraction=val_fraction,
        val_pids=sorted(val_pids),
        root=index.root,
    )
    if len(split.train) != data.get("num_train_images", len(split.train)) or len(split.val_query) + len(
        split.val_gallery
    ) != data.get("num_val_images", len(split.val_query) + len(split.val_gallery)):
        raise DataError(
            f"{path}: the dataset in {index.root} has a different number of images than when the split was "
            f"saved ({len(split.train)} train now, {data.get('num_train_images')} then); make a new split"
        )
    return split


def validation_split(checkpoint: str | os.PathLike, ckpt: dict, index: DatasetIndex,
                     split_file: str | os.PathLike | None = None) -> tuple[Split, str]:
    """The validation split a checkpoint's run held out, rebuilt on ``index``: ``(split, description)``.

    Looks for, in order: ``split_file``; ``split.json`` next to the checkpoint; the config's
    ``split_file``; else the seeded split of the config's ``val_fraction`` / ``split_seed`` is
    made again. Raises DataError when it has no queries (``val_fraction=0``) and
    CheckpointError when a validation identity was one of the checkpoint's training identities.
    """
    config = ckpt.get("config") or {}
    candidates = [Path(split_file)] if split_file else [Path(checkpoint).parent / "split.json"]
    if not split_file and config.get("split_file"):
        candidates.append(Path(config["split_file"]))
    found = next((c for c in candidates if split_file or c.is_file()), None)
    if found is not None:
        split = load_split(found, index)
        described = f"validation split {found}"
    else:
        fraction, seed = float(config.get("val_fraction", 0.2)), int(config.get("split_seed", 0))
        split = make_split(index, fraction, seed)
        described = f"validation split rebuilt (val_fraction={fraction}, split_seed={seed})"
    if not split.val_query:
        raise DataError(f"{index.root}: the validation split has no queries (val_fraction=0?); nothing to evaluate")
    trained = {int(pid) for pid in (ckpt.get("pid_to_label") or {})}
    overlap = sorted(trained & set(split.val_pids))
    if overlap:
        raise CheckpointError(
            f"{checkpoint}: {len(overlap)} validation identities (e.g. {overlap[0]}) were training identities of "
            f"this checkpoint; pass the run's split file ({described})"
        )
    return split, described
