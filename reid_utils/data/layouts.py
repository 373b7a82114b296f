"""Dataset folders -> a :class:`DatasetIndex` of :class:`Record` s, for both Market-1501 layouts.

``load_dataset(root)`` detects the layout:

* **course** (``../shared/data/market1501_course``)::

      root/train/0006_c1_004629837.jpg ...   labelled training images
      root/test/000000.jpg ...               anonymous gallery images
      root/queries/000000.jpg ...            anonymous query images
      root/annotations_train.csv             ``id`` + the 27 course columns, one row per identity

* **market** (official Market-1501 + ``market_attribute.mat``)::

      root/bounding_box_train/0002_c1s1_000451_03.jpg ...
      root/bounding_box_test/...             includes junk (-1_...) and distractors (0000_...)
      root/query/...
      root/market_attribute.mat              (or root/attribute/market_attribute.mat, or pass attribute_file)

If ``root`` holds neither but exactly one sub-folder does (a zip that unpacks into
``Market-1501-v15.09.15/``), that sub-folder is used.

Everything is validated when the index is built: missing folders, empty folders, file names
that do not parse, missing / unknown / out-of-range annotation values, identities without
annotations and annotations without images raise :class:`~reid_utils.errors.DataError` naming
the file (and row). Non-image files (``desktop.ini``, ``Thumbs.db``, ``.DS_Store``, folders) are
skipped and listed in :attr:`DatasetIndex.skipped`. Images are not decoded here (30k JPEGs
take a while): :func:`validate_images` decodes them all, and the Dataset raises on a corrupt
image when it reads it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import DataError
from ..schema import NUM_GROUPS, course_to_groups
from .annotations import COURSE_CSV, MARKET_MAT, read_course_annotations, read_market_attributes
from .parsing import (
    UNKNOWN_CAMID,
    UNKNOWN_PID,
    is_distractor,
    is_image_file,
    is_junk,
    is_labelled,
    parse_anonymous_name,
    parse_course_train_name,
    parse_market_name,
)

LAYOUTS = ("course", "market")
COURSE_FOLDERS = {"train": "train", "test": "test", "query": "queries"}
MARKET_FOLDERS = {"train": "bounding_box_train", "test": "bounding_box_test", "query": "query"}
_IGNORED_DIRS = {"__MACOSX"}


def unknown_attributes() -> np.ndarray:
    """The ``(12,)`` groups-form attributes of an image without labels: all ``-1``."""
    return np.full(NUM_GROUPS, -1, dtype=np.int64)


@dataclass(eq=False)
class Record:
    """One image.

    ``pid``: the original person id (``-1`` junk, ``0`` distractor, ``-2`` unknown);
    ``camid``: 0-based camera (``-1`` unknown); ``attributes``: ``(12,)`` int64 groups form,
    all ``-1`` when unknown.
    """

    path: Path
    pid: int
    camid: int
    attributes: np.ndarray = field(default_factory=unknown_attributes)

    @property
    def is_junk(self) -> bool:
        return is_junk(self.pid)

    @property
    def is_distractor(self) -> bool:
        return is_distractor(self.pid)

    @property
    def has_attributes(self) -> bool:
        return bool((self.attributes >= 0).all())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (
            self.path == other.path
            and self.pid == other.pid
            and self.camid == other.camid
            and np.array_equal(self.attributes, other.attributes)
        )

    __hash__ = None  # mutable, compared by value


@dataclass(eq=False)
class DatasetIndex:
    """All images of a dataset folder, split as on disk.

    ``train``: labelled training images; ``test``: the gallery (course ``test/`` or Market
    ``bounding_box_test/``); ``query``: query images; ``skipped``: non-image paths that were
    ignored (reported, never silent); ``annotation_file``: the CSV or ``.mat`` file read.
    """

    layout: str
    root: Path
    train: list[Record]
    test: list[Record]
    query: list[Record]
    skipped: list[Path] = field(default_factory=list)
    annotation_file: Path | None = None

    def splits(self) -> dict[str, list[Record]]:
        return {"train": self.train, "test": self.test, "query": self.query}

    @property
    def train_pids(self) -> list[int]:
        """Sorted labelled person ids of the training images."""
        return sorted({r.pid for r in self.train if is_labelled(r.pid)})

    def __repr__(self) -> str:
        return (
            f"DatasetIndex(layout={self.layout!r}, root='{self.root}', train={len(self.train)}, "
            f"test={len(self.test)}, query={len(self.query)}, skipped={len(self.skipped)})"
        )


# ---------------------------------------------------------------------------------------------
# Layout detection


def _layout_of(folder: Path) -> str | None:
    if any((folder / name).is_dir() for name in MARKET_FOLDERS.values()):
        return "market"
    if (folder / COURSE_CSV).is_file() or any((folder / name).is_dir() for name in COURSE_FOLDERS.values()):
        return "course"
    return None


def detect_layout(root: str | os.PathLike) -> tuple[str, Path]:
    """Return ``(layout, dataset_root)``; ``dataset_root`` may be a single sub-folder of ``root``."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: dataset folder does not exist")
    if not root.is_dir():
        is_zip = root.suffix.lower() == ".zip"
        hint = " (extract it first: reid_utils.data.extract_zip or resolve_data_root)" if is_zip else ""
        raise DataError(f"{root}: expected a dataset folder, got a file{hint}")
    layout = _layout_of(root)
    if layout is not None:
        return layout, root
    children = [
        child for child in sorted(root.iterdir())
        if child.is_dir() and not child.name.startswith(".") and child.name not in _IGNORED_DIRS
    ]
    found = [(layout, child) for child in children if (layout := _layout_of(child)) is not None]
    if len(found) == 1:
        return found[0]
    where = f"; several sub-folders look like datasets: {', '.join(c.name for _, c in found)}" if found else ""
    raise DataError(
        f"{root}: no dataset layout found, expected train/, test/, queries/ and {COURSE_CSV} (course) "
        f"or bounding_box_train/, bounding_box_test/ and query/ (Market-1501){where}"
    )


def load_dataset(root: str | os.PathLike, attribute_file: str | os.PathLike | None = None) -> DatasetIndex:
    """Index and validate the dataset in ``root`` (layout auto-detected, see the module docstring).

    ``attribute_file``: Market layout only, the ``market_attribute.mat`` to use when it is not
    inside ``root``.
    """
    layout, root = detect_layout(root)
    if layout == "course":
        if attribute_file is not None:
            raise DataError(f"{root}: attribute_file is only used for the Market layout, this is the course layout")
        return _load_course(root)
    return _load_market(root, attribute_file)


# ---------------------------------------------------------------------------------------------
# Folders


def list_images(folder: Path, skipped: list[Path]) -> list[Path]:
    """Sorted image files of ``folder``; other entries are appended to ``skipped``.

    Raises if the folder is missing or holds no image.
    """
    if not folder.is_dir():
        raise DataError(f"{folder}: folder is missing (expected image folder '{folder.name}/' in {folder.parent})")
    images, others = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            (images if entry.is_file() and is_image_file(entry.name) else others).append(entry.name)
    skipped.extend(folder / name for name in sorted(others))
    if not images:
        extra = f" ({len(others)} non-image entries skipped, e.g. {sorted(others)[0]})" if others else ""
        raise DataError(f"{folder}: folder contains no images (.jpg/.jpeg/.png/.bmp){extra}")
    return [folder / name for name in sorted(images)]


# ---------------------------------------------------------------------------------------------
# Course layout


def _anonymous_records(images: Iterable[Path]) -> list[Record]:
    records = []
    for path in images:
        parse_anonymous_name(path)  # validates the name
        records.append(Record(path, UNKNOWN_PID, UNKNOWN_CAMID))
    return records


def _load_course(root: Path) -> DatasetIndex:
    skipped: list[Path] = []
    folders = {split: root / name for split, name in COURSE_FOLDERS.items()}
    for folder in folders.values():  # report every missing folder before parsing anything
        if not folder.is_dir():
            raise DataError(f"{folder}: folder is missing (the course layout needs train/, test/ and queries/)")
    csv_path = root / COURSE_CSV
    annotations = read_course_annotations(csv_path)
    groups = dict(zip(annotations, course_to_groups(np.stack([row for _, row in annotations.values()]))))

    train = []
    unannotated: dict[int, Path] = {}
    for path in list_images(folders["train"], skipped):
        pid, camid = parse_course_train_name(path)
        if pid not in groups:
            unannotated.setdefault(pid, path)
            continue
        train.append(Record(path, pid, camid, groups[pid].copy()))
    if unannotated:
        pid, path = next(iter(unannotated.items()))
        more = f" ({len(unannotated) - 1} more identities likewise)" if len(unannotated) > 1 else ""
        raise DataError(f"{path}: person id {pid} has no row in {csv_path}{more}")
    seen = {r.pid for r in train}
    orphans = [(line, pid) for pid, (line, _) in annotations.items() if pid not in seen]
    if orphans:
        line, pid = min(orphans)
        more = f" ({len(orphans) - 1} more rows likewise)" if len(orphans) > 1 else ""
        raise DataError(f"{csv_path} line {line}: id {pid} has no images in {folders['train']}{more}")
    return DatasetIndex(
        layout="course",
        root=root,
        train=train,
        test=_anonymous_records(list_images(folders["test"], skipped)),
        query=_anonymous_records(list_images(folders["query"], skipped)),
        skipped=skipped,
        annotation_file=csv_path,
    )


# ---------------------------------------------------------------------------------------------
# Market layout


def find_market_attribute_file(root: Path) -> Path:
    for candidate in (root / MARKET_MAT, root / "attribute" / MARKET_MAT):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{root}: {MARKET_MAT} not found (looked in {root} and {root / 'attribute'}); "
        f"copy it there or pass attribute_file="
    )


def _market_records(images: Iterable[Path], labels: dict[int, np.ndarray], mat_path: Path, split: str) -> list[Record]:
    records = []
    for path in images:
        name = parse_market_name(path)
        if not is_labelled(name.pid):  # junk / distractor: kept, flagged by pid, never labelled
            records.append(Record(path, name.pid, name.camid))
            continue
        if name.pid not in labels:
            raise DataError(f"{path}: person id {name.pid:04d} has no entry in {mat_path} (market_attribute.{split})")
        records.append(Record(path, name.pid, name.camid, labels[name.pid].copy()))
    return records


def _load_market(root: Path, attribute_file: str | os.PathLike | None) -> DatasetIndex:
    skipped: list[Path] = []
    folders = {split: root / name for split, name in MARKET_FOLDERS.items()}
    for folder in folders.values():
        if not folder.is_dir():
            raise DataError(
                f"{folder}: folder is missing (the Market layout needs bounding_box_train/, bounding_box_test/ and query/)"
            )
    mat_path = Path(attribute_file) if attribute_file is not None else find_market_attribute_file(root)
    course = read_market_attributes(mat_path)
    labels = {split: dict(zip(rows, course_to_groups(np.stack(list(rows.values()))))) for split, rows in course.items()}
    train = _market_records(list_images(folders["train"], skipped), labels["train"], mat_path, "train")
    test = _market_records(list_images(folders["test"], skipped), labels["test"], mat_path, "test")
    query = _market_records(list_images(folders["query"], skipped), labels["test"], mat_path, "test")
    for split, records, where in (
        ("train", train, folders["train"].name),
        ("test", test + query, f"{folders['test'].name}/ or {folders['query'].name}"),
    ):
        missing = sorted(set(labels[split]) - {r.pid for r in records})
        if missing:
            more = f" ({len(missing) - 1} more identities likewise)" if len(missing) > 1 else ""
            raise DataError(f"{mat_path}: market_attribute.{split} person {missing[0]:04d} has no images in {where}/{more}")
    return DatasetIndex("market", root, train, test, query, skipped, mat_path)
