"""The synthetic sample dataset: deterministic JPEG files in the course or the official layout.

:func:`write_sample` is the single entry point (the command line's ``python -m reid_utils sample``
calls it). The same seed gives byte-identical files. Pedestrians are drawn by
:mod:`.pedestrian` (every attribute is visible, every identity has personal details: logo,
shoes, skin, build) and seen through the six cameras of :mod:`.cameras` (background, light,
scale, position and mirroring differ).

Course layout (like ``market1501_course``)::

    annotations_train.csv     id + the 27 schema.COURSE_COLUMNS, one row per train identity
    train/PPPP_cC_NNNNNNNNN.jpg
    test/NNNNNN.jpg           anonymous: test identities, distractors (pid 0) and junk (pid -1)
    queries/NNNNNN.jpg        anonymous: identities that also appear in test/
    ground_truth.csv          hidden answers for test/ and queries/ (not read by the loaders):
                              file, split ("test"/"queries"), pid, camid (0-based), 27 columns
                              (-1 for distractors and junk)

Official layout (like Market-1501 with ``market_attribute.mat``)::

    bounding_box_train/0002_c1s1_000451_03.jpg
    bounding_box_test/        test identities, distractors 0000_... and junk -1_...
    query/
    market_attribute.mat      struct train/test with 27 uint8 1xN fields and image_index
                              (1xN cell of 4-digit ids), field order as in the real file

Test identities are disjoint from train identities; every query has a gallery image of its
identity from another camera.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from .. import schema
from ..errors import ConfigError
from ..io import repo_root
from .cameras import CAMERAS, NUM_CAMERAS, View, render_person, sample_view
from .pedestrian import Appearance, sample_appearance

#: Defaults of :func:`write_sample`, which are the committed sample's settings.
DEFAULT_NUM_IDS = 60
DEFAULT_IMAGES_PER_ID = 8
GROUND_TRUTH_FILE = "ground_truth.csv"
LAYOUTS = ("course", "market")

#: Field order of the real ``market_attribute.mat`` (train differs from test; test = course order).
MAT_TRAIN_FIELDS = (
    "age", "backpack", "bag", "handbag",
    "downblack", "downblue", "downbrown", "downgray", "downgreen", "downpink", "downpurple", "downwhite", "downyellow",
    "upblack", "upblue", "upgreen", "upgray", "uppurple", "upred", "upwhite", "upyellow",
    "clothes", "down", "up", "hair", "hat", "gender",
)
MAT_TEST_FIELDS = schema.COURSE_COLUMNS


@dataclass(frozen=True)
class Shot:
    """One image to write: which split, whose (pid -1 junk, 0 distractor) and how it looks."""

    split: str  # "train", "test" or "query"
    pid: int
    camid: int  # 0-based
    appearance: Appearance | None
    view: View


def write_sample(
    out: str | os.PathLike,
    num_ids: int | None = DEFAULT_NUM_IDS,
    seed: int = 0,
    layout: str = "course",
    images_per_id: int = DEFAULT_IMAGES_PER_ID,
    height: int = 128,
    width: int = 64,
    *,
    num_test_ids: int | None = None,
    queries_per_id: int = 2,
    num_distractors: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic dataset to ``out`` and return ``out`` as a Path.

    Args:
        num_ids: training identities (each with ``images_per_id`` images); None: the default.
        seed: the same seed gives byte-identical files.
        layout: ``"course"`` (train/, test/, queries/, annotations_train.csv, ground_truth.csv)
            or ``"market"`` (bounding_box_train/, bounding_box_test/, query/, market_attribute.mat).
        images_per_id: images per training identity, and gallery images per test identity.
        height, width: image size in pixels (the course images are 128 x 64).
        num_test_ids: test identities (default ``2 * num_ids // 3``, at least 2).
        queries_per_id: query images per test identity.
        num_distractors: distractor images (pid 0) in the test gallery (default
            ``num_test_ids``); half as many junk images (pid -1) are added too.
        overwrite: replace ``out`` if it exists (otherwise an existing non-empty ``out`` is an error).

    The folder is built next to ``out`` and moved into place at the end, so an interrupted run
    never leaves a half-written dataset at ``out``.
    """
    out = Path(out)
    num_ids = DEFAULT_NUM_IDS if num_ids is None else num_ids
    if layout not in LAYOUTS:
        raise ConfigError(f"sample layout must be one of {LAYOUTS}, got {layout!r}")
    num_test_ids = max(2, 2 * num_ids // 3) if num_test_ids is None else num_test_ids
    num_distractors = num_test_ids if num_distractors is None else num_distractors
    for name, value, low in (("num_ids", num_ids, 2), ("images_per_id", images_per_id, 2),
                             ("num_test_ids", num_test_ids, 2), ("queries_per_id", queries_per_id, 1),
                             ("num_distractors", num_distractors, 0), ("height", height, 16), ("width", width, 8)):
        if int(value) != value or value < low:
            raise ConfigError(f"sample {name} must be an integer >= {low}, got {value!r}")
    if num_ids + num_test_ids > 1501:
        raise ConfigError(
            f"sample num_ids + num_test_ids must be <= 1501 (Market-1501 ids), got {num_ids + num_test_ids}"
        )
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} already exists and is not empty; remove it or choose another folder")

    rng = np.random.default_rng(seed)
    shots, appearances = _plan(rng, num_ids, num_test_ids, images_per_id, queries_per_id, num_distractors)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        writer = _write_course if layout == "course" else _write_market
        writer(tmp, rng, shots, appearances, height, width)
        tmp.chmod(0o755)  # mkdtemp makes it private
        if out.exists() and overwrite:
            shutil.rmtree(out)
        os.replace(tmp, out)  # onto a missing or empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def sample_root() -> Path:
    """Where the bundled sample lives (it may not exist yet): ``<repo>/dataset/sample`` in a
    source checkout (committed), ``~/.cache/reid_utils/sample`` for an installed copy."""
    root = repo_root()
    return root / "dataset" / "sample" if root is not None else Path.home() / ".cache" / "reid_utils" / "sample"


#: The bundled sample dataset.
SAMPLE_ROOT = sample_root()
#: The seed of the bundled sample.
SAMPLE_SEED = 0


def ensure_sample(out: str | os.PathLike | None = None) -> Path:
    """Return the sample folder (default :func:`sample_root`), generating it deterministically
    (seed 0) if it is missing. Built next to ``out`` and moved into place: a half-written
    sample never stays behind."""
    out = Path(out) if out is not None else sample_root()
    if out.is_dir() and any(out.iterdir()):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        write_sample(tmp, seed=SAMPLE_SEED, layout="course")
        if out.is_dir():
            out.rmdir()  # an empty leftover folder
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ---------------------------------------------------------------------------------------------
# What to draw


def _plan(rng, num_ids, num_test_ids, images_per_id, queries_per_id, num_distractors):
    """Choose identities, their appearances and every image's camera and view."""
    pool = rng.permutation(np.arange(1, 1502))
    train_pids = sorted(int(p) for p in pool[:num_ids])
    test_pids = sorted(int(p) for p in pool[num_ids:num_ids + num_test_ids])
    appearances = {pid: sample_appearance(rng) for pid in train_pids + test_pids}
    shots: list[Shot] = []
    for split, pids in (("train", train_pids), ("test", test_pids)):
        for pid in pids:
            num_cams = int(rng.integers(2, min(NUM_CAMERAS, images_per_id) + 1))
            cams = rng.choice(NUM_CAMERAS, size=num_cams, replace=False)
            gallery_cams = rng.permutation([int(cams[i % num_cams]) for i in range(images_per_id)])
            query_cams = []
            if split == "test":
                query_cams = rng.choice(cams, size=queries_per_id, replace=queries_per_id > num_cams)
            for camid in gallery_cams:
                shots.append(Shot(split, pid, int(camid), appearances[pid], sample_view(rng, int(camid))))
            for camid in query_cams:
                shots.append(Shot("query", pid, int(camid), appearances[pid], sample_view(rng, int(camid))))
    for k in range(num_distractors + num_distractors // 2):
        shots.append(_clutter(rng, junk=k >= num_distractors))
    return shots, appearances


def _clutter(rng, junk: bool) -> Shot:
    """A distractor (background or a piece of someone) or a junk image (a badly framed person)."""
    camid = int(rng.integers(NUM_CAMERAS))
    view = sample_view(rng, camid)
    person = sample_appearance(rng)
    if junk:  # half out of the frame
        view = dataclasses.replace(view, dx=float(rng.choice((-1, 1)) * rng.uniform(18, 26)))
        return Shot("test", -1, camid, person, view)
    if rng.random() < 0.4:
        return Shot("test", 0, camid, None, view)
    zoom = float(rng.uniform(1.6, 2.4))  # a large piece: head and chest, or legs
    dy = float(rng.choice((rng.uniform(60, 110), rng.uniform(-10, 10))))
    return Shot("test", 0, camid, person, dataclasses.replace(view, scale=zoom, dy=dy))


def _jpeg(shot: Shot, height: int, width: int) -> bytes:
    image = render_person(shot.appearance, shot.view, height=height, width=width)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=CAMERAS[shot.camid].quality)
    return buffer.getvalue()


def _course_rows(pids, appearances) -> np.ndarray:
    """(len(pids), 27) course-form attributes."""
    return schema.groups_to_course(np.array([appearances[pid].groups for pid in pids]))


# ---------------------------------------------------------------------------------------------
# Layouts


def _write_course(root: Path, rng, shots, appearances, height, width) -> None:
    for folder in ("train", "test", "queries"):
        (root / folder).mkdir()
    frames = iter(rng.choice(10**9, size=len(shots), replace=False))
    train_pids = []
    for shot in (s for s in shots if s.split == "train"):
        name = f"{shot.pid:04d}_c{shot.camid + 1}_{int(next(frames)):09d}.jpg"
        (root / "train" / name).write_bytes(_jpeg(shot, height, width))
        if shot.pid not in train_pids:
            train_pids.append(shot.pid)
    order = [train_pids[i] for i in rng.permutation(len(train_pids))]  # the real CSV is not sorted
    with open(root / "annotations_train.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("id",) + schema.COURSE_COLUMNS)
        for pid, row in zip(order, _course_rows(order, appearances)):
            writer.writerow([pid, *row.tolist()])

    truth = []
    for split, folder in (("test", "test"), ("query", "queries")):
        anonymous = [s for s in shots if s.split == split]
        for i, k in enumerate(rng.permutation(len(anonymous))):
            shot = anonymous[k]
            name = f"{i:06d}.jpg"
            (root / folder / name).write_bytes(_jpeg(shot, height, width))
            labels = _course_rows([shot.pid], appearances)[0].tolist() if shot.pid > 0 else [-1] * 27
            truth.append([name, folder, shot.pid, shot.camid, *labels])
    with open(root / GROUND_TRUTH_FILE, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("file", "split", "pid", "camid") + schema.COURSE_COLUMNS)
        writer.writerows(truth)


def _write_market(root: Path, rng, shots, appearances, height, width) -> None:
    folders = {"train": "bounding_box_train", "test": "bounding_box_test", "query": "query"}
    for folder in folders.values():
        (root / folder).mkdir()
    for frame, shot in enumerate(shots):
        seq = int(rng.integers(1, 7))
        pid = "-1" if shot.pid == -1 else f"{shot.pid:04d}"
        name = f"{pid}_c{shot.camid + 1}s{seq}_{frame * 25 + 1000:06d}_{int(rng.integers(1, 5)):02d}.jpg"
        (root / folders[shot.split] / name).write_bytes(_jpeg(shot, height, width))

    def struct(pids, fields):
        rows = _course_rows(pids, appearances)
        record = {name: rows[:, schema.COURSE_COLUMNS.index(name)].astype(np.uint8)[None, :] for name in fields}
        index = np.empty((1, len(pids)), dtype=object)
        index[0, :] = [f"{pid:04d}" for pid in pids]
        record["image_index"] = index
        return record

    train_pids = sorted({s.pid for s in shots if s.split == "train"})
    test_pids = sorted({s.pid for s in shots if s.split in ("test", "query") and s.pid > 0})
    market_attribute = {"test": struct(test_pids, MAT_TEST_FIELDS), "train": struct(train_pids, MAT_TRAIN_FIELDS)}
    _savemat(root / "market_attribute.mat", {"market_attribute": market_attribute})



def _savemat(path: Path, mdict: dict) -> None:
    """``scipy.io.savemat`` with a fixed header text (scipy writes the creation time there)."""
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, mdict)
    data = bytearray(buffer.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, Platform: reid_utils synthetic sample".ljust(116, b" ")
    path.write_bytes(bytes(data))
