"""The synthetic sample: determinism, layouts, annotations, the .mat structure, visible attributes."""
from __future__ import annotations

import csv
import dataclasses
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from reid_utils import schema
from reid_utils.errors import ConfigError
from reid_utils.synthetic import cameras, pedestrian
from reid_utils.synthetic.generator import (
    DEFAULT_NUM_IDS,
    GROUND_TRUTH_FILE,
    MAT_TEST_FIELDS,
    MAT_TRAIN_FIELDS,
    SAMPLE_ROOT,
    write_sample,
)

COURSE_TRAIN_NAME = re.compile(r"^(\d{4})_c([1-6])_(\d{9})\.jpg$")
ANONYMOUS_NAME = re.compile(r"^\d{6}\.jpg$")
MARKET_NAME = re.compile(r"^(-1|\d{4})_c([1-6])s(\d)_(\d{6})_(\d{2})\.jpg$")
SMALL = dict(num_ids=4, images_per_id=2, num_test_ids=2, queries_per_id=1, num_distractors=2)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# Determinism and arguments


@pytest.mark.parametrize("layout", ["course", "market"])
def test_same_seed_gives_identical_bytes(tmp_path, layout):
    a = files_of(write_sample(tmp_path / "a", seed=3, layout=layout, **SMALL))
    b = files_of(write_sample(tmp_path / "b", seed=3, layout=layout, **SMALL))
    assert a.keys() == b.keys() and len(a) > 10
    assert all(a[name] == b[name] for name in a)


def test_different_seed_differs(tmp_path):
    a = files_of(write_sample(tmp_path / "a", seed=3, **SMALL))
    b = files_of(write_sample(tmp_path / "b", seed=4, **SMALL))
    assert a["annotations_train.csv"] != b["annotations_train.csv"]
    assert a.keys() != b.keys()  # other train identities and frame numbers


def test_refuses_to_overwrite_unless_asked(tmp_path):
    out = write_sample(tmp_path / "s", **SMALL)
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        write_sample(out, **SMALL)
    write_sample(out, seed=1, overwrite=True, **SMALL)
    assert not list(tmp_path.glob(".*partial"))  # no temporary folder left behind


@pytest.mark.parametrize(
    "kwargs, match",
    [({"layout": "official"}, "layout"), ({"num_ids": 1}, "num_ids"), ({"images_per_id": 1}, "images_per_id")],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        write_sample(tmp_path / "s", **{**SMALL, **kwargs})
    assert not (tmp_path / "s").exists()


def test_image_size_option(tmp_path):
    root = write_sample(tmp_path / "s", height=64, width=32, **SMALL)
    with Image.open(next((root / "train").iterdir())) as image:
        assert image.size == (32, 64) and image.mode == "RGB" and image.format == "JPEG"


# ---------------------------------------------------------------------------------------------
# Course layout


def test_course_layout_counts_and_names(tiny_course_root, tiny_sizes):
    n = tiny_sizes
    root = tiny_course_root
    assert {p.name for p in root.iterdir()} == {GROUND_TRUTH_FILE, "annotations_train.csv", "queries", "test", "train"}
    train = sorted(p.name for p in (root / "train").iterdir())
    assert len(train) == n["num_ids"] * n["images_per_id"]
    assert all(COURSE_TRAIN_NAME.match(name) for name in train)
    per_id = Counter(name[:4] for name in train)
    assert len(per_id) == n["num_ids"] and set(per_id.values()) == {n["images_per_id"]}
    cams = defaultdict(set)
    for name in train:
        cams[name[:4]].add(name[6])
    assert all(len(c) >= 2 for c in cams.values())  # every identity seen by two cameras or more

    test = sorted(p.name for p in (root / "test").iterdir())
    queries = sorted(p.name for p in (root / "queries").iterdir())
    assert len(test) == n["num_test_ids"] * n["images_per_id"] + n["num_distractors"] + n["num_junk"]
    assert len(queries) == n["num_queries"]
    assert test == [f"{i:06d}.jpg" for i in range(len(test))]
    assert queries == [f"{i:06d}.jpg" for i in range(len(queries))]
    with Image.open(root / "test" / test[0]) as image:
        assert image.size == (64, 128) and image.mode == "RGB" and image.format == "JPEG"


def test_course_annotations(tiny_course_root):
    root = tiny_course_root
    with open(root / "annotations_train.csv") as f:
        header = f.readline().strip().split(",")
    assert header == ["id", *schema.COURSE_COLUMNS]
    rows = read_csv(root / "annotations_train.csv")
    pids = [int(r["id"]) for r in rows]
    assert sorted(pids) == sorted({int(p.name[:4]) for p in (root / "train").iterdir()})
    assert all(r["id"] == str(int(r["id"])) for r in rows)  # unpadded, like the real file
    course = schema.validate_course(np.array([[int(r[c]) for c in schema.COURSE_COLUMNS] for r in rows]))
    assert ((course[:, 10:18] == 2).sum(axis=1) <= 1).all()  # at most one upper colour marked
    assert ((course[:, 18:27] == 2).sum(axis=1) <= 1).all()


def test_course_ground_truth(tiny_course_root, tiny_sizes):
    root = tiny_course_root
    truth = read_csv(root / GROUND_TRUTH_FILE)
    assert list(truth[0]) == ["file", "split", "pid", "camid", *schema.COURSE_COLUMNS]
    listed = {(r["split"], r["file"]) for r in truth}
    on_disk = {(folder, p.name) for folder in ("test", "queries") for p in (root / folder).iterdir()}
    assert listed == on_disk

    train_pids = {int(p.name[:4]) for p in (root / "train").iterdir()}
    gallery = [r for r in truth if r["split"] == "test"]
    queries = [r for r in truth if r["split"] == "queries"]
    test_pids = {int(r["pid"]) for r in gallery if int(r["pid"]) > 0}
    assert len(test_pids) == tiny_sizes["num_test_ids"] and not test_pids & train_pids
    assert Counter(int(r["pid"]) for r in gallery)[0] == tiny_sizes["num_distractors"]
    assert Counter(int(r["pid"]) for r in gallery)[-1] == tiny_sizes["num_junk"]
    assert {int(r["pid"]) for r in gallery} >= {0, -1}  # distractors and junk are mixed in
    for q in queries:  # the query's identity is in the gallery, seen by another camera
        assert any(r["pid"] == q["pid"] and r["camid"] != q["camid"] for r in gallery)
    labelled = [r for r in truth if int(r["pid"]) > 0]
    schema.validate_course(np.array([[int(r[c]) for c in schema.COURSE_COLUMNS] for r in labelled]))
    assert all(int(r[c]) == -1 for r in truth if int(r["pid"]) <= 0 for c in schema.COURSE_COLUMNS)
    assert all(0 <= int(r["camid"]) < 6 for r in truth)


def test_loader_reads_the_course_sample_and_ignores_ground_truth(tiny_course_root, tiny_sizes):
    from reid_utils.data import load_dataset

    index = load_dataset(tiny_course_root)
    assert index.layout == "course"
    assert len(index.train) == tiny_sizes["num_ids"] * tiny_sizes["images_per_id"]
    assert len(index.test) == len(list((tiny_course_root / "test").iterdir()))
    assert len(index.query) == tiny_sizes["num_queries"]
    assert all(r.pid < 0 for r in index.test + index.query)  # anonymous to the loader
    assert not index.skipped


# ---------------------------------------------------------------------------------------------
# Market layout


def test_market_layout_names(tiny_market_root, tiny_sizes):
    root = tiny_market_root
    folders = ("bounding_box_train", "bounding_box_test", "query")
    assert {p.name for p in root.iterdir()} == {*folders, "market_attribute.mat"}
    names = {folder: sorted(p.name for p in (root / folder).iterdir()) for folder in folders}
    for folder, files in names.items():
        assert files and all(MARKET_NAME.match(n) for n in files), folder
    pid = {folder: Counter(MARKET_NAME.match(n).group(1) for n in files) for folder, files in names.items()}
    assert len(pid["bounding_box_train"]) == tiny_sizes["num_ids"]
    assert sum(pid["query"].values()) == tiny_sizes["num_queries"]
    assert pid["bounding_box_test"]["-1"] > 0 and pid["bounding_box_test"]["0000"] > 0
    assert set(pid["query"]) <= set(pid["bounding_box_test"]) - {"-1", "0000"}
    assert not set(pid["bounding_box_train"]) & set(pid["bounding_box_test"])


def test_market_attribute_mat_structure(tiny_market_root):
    mat = scipy.io.loadmat(tiny_market_root / "market_attribute.mat")
    assert [name for name, *_ in scipy.io.whosmat(tiny_market_root / "market_attribute.mat")] == ["market_attribute"]
    top = mat["market_attribute"]
    assert top.shape == (1, 1) and top.dtype.names == ("test", "train")
    files = {split: sorted((tiny_market_root / folder).iterdir()) for split, folder in
             (("train", "bounding_box_train"), ("test", "bounding_box_test"))}
    for split, fields in (("train", MAT_TRAIN_FIELDS), ("test", MAT_TEST_FIELDS)):
        struct = top[0, 0][split]
        assert struct.shape == (1, 1) and struct.dtype.names == (*fields, "image_index")
        index = struct[0, 0]["image_index"]
        assert index.shape[0] == 1 and index.dtype == object
        ids = [cell[0] for cell in index[0]]
        expected = sorted({p.name[:4] for p in files[split]} - {"-1_c", "0000"})
        assert ids == expected and all(len(i) == 4 for i in ids)
        for name in fields:
            value = struct[0, 0][name]
            assert value.shape == (1, len(ids)) and value.dtype == np.uint8
        columns = [struct[0, 0][name][0] for name in schema.COURSE_COLUMNS]
        schema.validate_course(np.stack(columns, axis=1), source=split)


def test_market_mat_matches_the_real_file_structure(tiny_market_root, market_attribute_mat):
    real = scipy.io.loadmat(market_attribute_mat)["market_attribute"]
    ours = scipy.io.loadmat(tiny_market_root / "market_attribute.mat")["market_attribute"]
    assert ours.dtype.names == real.dtype.names
    for split in ("train", "test"):
        r, o = real[0, 0][split], ours[0, 0][split]
        assert o.dtype.names == r.dtype.names  # same (different per split) field order
        for name in r.dtype.names:
            assert o[0, 0][name].dtype == r[0, 0][name].dtype and o[0, 0][name].ndim == r[0, 0][name].ndim
        assert o[0, 0]["image_index"][0, 0].dtype == r[0, 0]["image_index"][0, 0].dtype


def test_both_layouts_agree(tiny_course_root, tiny_market_root):
    """Same seed and sizes: the same identities and attributes, whichever layout."""
    annotations = read_csv(tiny_course_root / "annotations_train.csv")
    rows = {int(r["id"]): [int(r[c]) for c in schema.COURSE_COLUMNS] for r in annotations}
    train = scipy.io.loadmat(tiny_market_root / "market_attribute.mat")["market_attribute"][0, 0]["train"][0, 0]
    pids = [int(cell[0]) for cell in train["image_index"][0]]
    assert sorted(rows) == pids
    for k, pid in enumerate(pids):
        assert [int(train[c][0, k]) for c in schema.COURSE_COLUMNS] == rows[pid]


# ---------------------------------------------------------------------------------------------
# Rendering: every attribute is visible


BASE_GROUPS = (1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 0)  # teenager, trousers, short sleeves, short hair, male, white/black

# (group, new class, (row0, row1, col0, col1) box that must hold >= 90% of the changed pixels)
FLIPS = [
    ("age", 0, (0, 128, 0, 64)),
    ("age", 3, (0, 128, 0, 64)),
    ("backpack", 1, (25, 72, 12, 52)),
    ("bag", 1, (25, 82, 10, 54)),
    ("handbag", 1, (65, 100, 0, 64)),
    ("clothes", 0, (60, 128, 0, 64)),
    ("down", 1, (60, 128, 0, 64)),
    ("up", 0, (28, 82, 0, 64)),
    ("hair", 1, (0, 50, 0, 64)),
    ("hat", 1, (0, 28, 0, 64)),
    ("gender", 1, (10, 128, 0, 64)),
    *[("upcolour", c, (25, 75, 0, 64)) for c in (0, 2, 3, 4, 5, 6, 7, 8)],
    *[("downcolour", c, (60, 128, 0, 64)) for c in range(1, 10)],
]


@pytest.fixture(scope="module")
def base_person():
    appearance = pedestrian.sample_appearance(np.random.default_rng(0))
    return dataclasses.replace(appearance, groups=BASE_GROUPS)


def render(appearance, back: bool) -> np.ndarray:
    return np.asarray(cameras.render_person(appearance, cameras.View(None, back=back)), dtype=np.int32)


@pytest.mark.parametrize("back", [False, True], ids=["front", "back"])
@pytest.mark.parametrize("group, value, box", FLIPS, ids=[f"{g}={v}" for g, v, _ in FLIPS])
def test_every_attribute_changes_its_region(base_person, group, value, box, back):
    before = render(base_person, back)
    after = render(base_person.with_attribute(group, value), back)
    changed = np.abs(after - before).sum(axis=2) > 30  # (128, 64)
    assert changed.sum() >= 40, f"{group}={value} changes only {changed.sum()} pixels"
    r0, r1, c0, c1 = box
    inside = changed[r0:r1, c0:c1].sum() / changed.sum()
    assert inside >= 0.9, f"{group}={value}: only {inside:.0%} of the change inside rows {r0}-{r1}, cols {c0}-{c1}"


def test_specific_cues(base_person):
    def changed(a, b, back=False):
        return np.abs(render(a, back) - render(b, back)).sum(axis=2) > 30

    sleeves = changed(base_person, base_person.with_attribute("up", 0))
    assert sleeves[:, :22].sum() + sleeves[:, 42:].sum() > 0.5 * sleeves.sum()  # the arms, not the chest
    old = changed(base_person.with_attribute("age", 2), base_person.with_attribute("age", 3))
    assert old[:30].sum() > 30  # grey hair
    shoulders = changed(base_person, base_person.with_attribute("gender", 1))
    assert shoulders[30:40].sum() > 10


def test_identity_details_are_visible(base_person):
    """Two people with the same attributes still look different (logo, shoes, skin, build)."""
    other = dataclasses.replace(pedestrian.sample_appearance(np.random.default_rng(1)), groups=BASE_GROUPS)
    assert (np.abs(render(base_person, False) - render(other, False)).sum(axis=2) > 30).sum() > 200


def test_cameras_differ(base_person):
    views = [cameras.View(camid, noise_seed=0) for camid in range(cameras.NUM_CAMERAS)]
    images = [np.asarray(cameras.render_person(base_person, v), dtype=np.float32) for v in views]
    for i in range(len(images)):
        for j in range(i):
            assert np.abs(images[i] - images[j]).mean() > 8


# ---------------------------------------------------------------------------------------------
# Attribute priors


def test_attribute_priors_look_like_the_real_data():
    rng = np.random.default_rng(0)
    groups = np.array([pedestrian.sample_appearance(rng).groups for _ in range(2000)])
    col = {name: groups[:, i] for i, name in enumerate(schema.GROUP_NAMES)}
    for g, name in zip(schema.GROUPS, schema.GROUP_NAMES):  # every class occurs
        assert set(np.unique(col[name])) == set(range(g.num_classes)), name
    assert abs(col["gender"].mean() - 0.46) < 0.04
    assert (col["age"] == 1).mean() > 0.5  # mostly "teenager", like the course labels
    assert 0.7 < col["up"].mean() < 0.9 and 0.5 < col["down"].mean() < 0.75  # short sleeves / lower body
    assert col["hat"].mean() < 0.12 and 0.15 < col["backpack"].mean() < 0.35
    assert not ((col["clothes"] == 0) & (col["gender"] == 0)).any()  # men wear no dresses
    assert (col["hair"][col["gender"] == 1]).mean() > 0.6 > (col["hair"][col["gender"] == 0]).mean()


# ---------------------------------------------------------------------------------------------
# The committed sample


def test_committed_sample_matches_the_generator(tmp_path):
    """``dataset/sample`` is what ``write_sample`` with the defaults writes (see dataset/README.md)."""
    if not (SAMPLE_ROOT / "annotations_train.csv").is_file():
        pytest.skip(f"{SAMPLE_ROOT} not present")
    fresh = write_sample(tmp_path / "sample")
    committed, new = files_of(SAMPLE_ROOT), files_of(fresh)
    assert committed.keys() == new.keys()
    assert len({n[6:10] for n in committed if n.startswith("train/")}) == DEFAULT_NUM_IDS
    for name in ("annotations_train.csv", GROUND_TRUTH_FILE):
        assert committed[name] == new[name]
    # JPEG bytes may differ between libjpeg versions; pixels may not.
    for name in list(committed)[::25]:
        if name.endswith(".jpg"):
            a = np.asarray(Image.open(SAMPLE_ROOT / name), dtype=np.float32)
            b = np.asarray(Image.open(fresh / name), dtype=np.float32)
            assert np.abs(a - b).mean() < 2.0, name
