"""Dataset layouts (course and official Market), bad input, images, the Dataset, locating and inspecting data.

Tiny datasets are written into ``tmp_path`` with PIL; the Market loader runs on synthetic files
with real names and the real ``market_attribute.mat``; the real course data is checked when
``../shared/data`` exists.
"""
import io
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import given, settings, strategies as st
from PIL import Image

from reid_utils.data import (
    ReidDataset,
    build_transforms,
    detect_layout,
    format_summary,
    load_dataset,
    read_course_annotations,
    read_image,
    read_market_attributes,
    summarize,
    validate_images,
)
from reid_utils.data.parsing import format_course_train_name, format_market_name
from reid_utils.errors import DataError
from reid_utils.schema import COURSE_COLUMNS, course_to_groups, groups_to_course

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COURSE_REAL = SHARED / "market1501_course"
MAT_REAL = SHARED / "market1501_attribute" / "market_attribute.mat"
needs_course = pytest.mark.skipif(not COURSE_REAL.is_dir(), reason="../shared/data/market1501_course is not available")
needs_mat = pytest.mark.skipif(not MAT_REAL.is_file(), reason="../shared/data/market1501_attribute is not available")


def jpeg_bytes(color=(200, 40, 40), size=(16, 32), mode="RGB", fmt="JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt)
    return buffer.getvalue()


JPEG = jpeg_bytes()


def course_rows(pids) -> dict[int, np.ndarray]:
    """A valid, distinct course row per pid."""
    rng = np.random.default_rng(0)
    sizes = [4] + [2] * 9 + [9, 10]
    groups = np.stack([rng.integers(0, sizes) for _ in pids])
    return dict(zip(pids, groups_to_course(groups)))


def write_csv(path: Path, rows: dict[int, np.ndarray], header=("id",) + COURSE_COLUMNS) -> None:
    lines = [",".join(header)] + [",".join(map(str, [pid, *row])) for pid, row in rows.items()]
    path.write_text("\n".join(lines) + "\n")


def make_course(root: Path, pids=(6, 9, 11), cams=(0, 1), per_cam=2, num_test=4, num_query=2) -> dict:
    """Write a tiny course-layout dataset; returns {pid: course row}."""
    for name in ("train", "test", "queries"):
        (root / name).mkdir(parents=True)
    for pid in pids:
        for cam in cams:
            for i in range(per_cam):
                (root / "train" / format_course_train_name(pid, cam, 1000 * pid + i)).write_bytes(JPEG)
    for i in range(num_test):
        (root / "test" / f"{i:06d}.jpg").write_bytes(JPEG)
    for i in range(num_query):
        (root / "queries" / f"{i:06d}.jpg").write_bytes(JPEG)
    rows = course_rows(pids)
    write_csv(root / "annotations_train.csv", rows)
    return rows


@pytest.fixture
def course(tmp_path) -> Path:
    make_course(tmp_path / "course")
    return tmp_path / "course"


# ---------------------------------------------------------------------------------------------
# Course layout


def test_course_layout(tmp_path):
    rows = make_course(tmp_path)
    index = load_dataset(tmp_path)
    assert index.layout == "course" and index.root == tmp_path
    assert (len(index.train), len(index.test), len(index.query)) == (12, 4, 2)
    assert index.train_pids == [6, 9, 11] and index.skipped == []
    assert index.annotation_file == tmp_path / "annotations_train.csv"
    first = index.train[0]
    assert first.path.name == "0006_c1_000006000.jpg" and (first.pid, first.camid) == (6, 0)
    for record in index.train:
        np.testing.assert_array_equal(record.attributes, course_to_groups(rows[record.pid][None])[0])
        assert record.attributes.dtype == np.int64 and record.has_attributes
    for record in index.test + index.query:
        assert (record.pid, record.camid) == (-2, -1) and (record.attributes == -1).all()
    assert [r.path.name for r in index.test] == sorted(r.path.name for r in index.test)
    assert "train=12" in repr(index)


def test_columns_are_read_by_name(tmp_path):
    rows = make_course(tmp_path)
    header = ("id",) + COURSE_COLUMNS[::-1]
    write_csv(tmp_path / "annotations_train.csv", {pid: row[::-1] for pid, row in rows.items()}, header)
    index = load_dataset(tmp_path)
    np.testing.assert_array_equal(index.train[0].attributes, course_to_groups(rows[6][None])[0])


def test_non_image_files_are_skipped_and_reported(course):
    (course / "train" / "desktop.ini").write_text("[.ShellClassInfo]")
    (course / "test" / "Thumbs.db").write_bytes(b"\0")
    (course / "queries" / "__MACOSX").mkdir()
    index = load_dataset(course)
    assert sorted(p.name for p in index.skipped) == ["Thumbs.db", "__MACOSX", "desktop.ini"]
    assert len(index.train) == 12 and len(index.test) == 4
    summary = summarize(course, check_images=False)
    assert summary["skipped_files"] == 3 and "train/desktop.ini" in summary["skipped"]
    assert "skipped 3 non-image file(s)" in format_summary(summary)


def test_layout_in_a_single_subfolder(tmp_path):
    make_course(tmp_path / "dataset")
    (tmp_path / "__MACOSX").mkdir()
    assert detect_layout(tmp_path) == ("course", tmp_path / "dataset")
    assert load_dataset(tmp_path).root == tmp_path / "dataset"


# ---------------------------------------------------------------------------------------------
# Bad input: every case names the file (and row)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}: dataset folder does not exist"):
        load_dataset(tmp_path / "nope")


def test_root_is_a_file(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(DataError, match="expected a dataset folder, got a file"):
        load_dataset(tmp_path / "x.txt")


def test_unrecognised_folder(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="no dataset layout found, expected train/"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("folder", ["train", "test", "queries"])
def test_missing_split_folder(course, folder):
    for path in (course / folder).iterdir():
        path.unlink()
    (course / folder).rmdir()
    with pytest.raises(DataError, match=f"{course / folder}: folder is missing"):
        load_dataset(course)


@pytest.mark.parametrize("folder", ["train", "test", "queries"])
def test_empty_folder(course, folder):
    for path in (course / folder).iterdir():
        path.unlink()
    (course / folder / "desktop.ini").write_text("")
    with pytest.raises(DataError, match=rf"{course / folder}: folder contains no images .*1 non-image entries skipped, e.g. desktop.ini"):
        load_dataset(course)


def test_train_name_that_does_not_parse(course):
    (course / "train" / "person6.jpg").write_bytes(JPEG)
    with pytest.raises(DataError, match=rf"{course / 'train' / 'person6.jpg'}: file name does not parse, expected PPPP_cC"):
        load_dataset(course)


def test_test_name_that_does_not_parse(course):
    (course / "queries" / "0006_c1_000000001.jpg").write_bytes(JPEG)
    with pytest.raises(DataError, match=r"queries/0006_c1_000000001.jpg: file name does not parse, expected NNNNNN.jpg"):
        load_dataset(course)


def test_train_identity_without_annotation_row(course):
    (course / "train" / format_course_train_name(42, 0, 1)).write_bytes(JPEG)
    (course / "train" / format_course_train_name(43, 0, 1)).write_bytes(JPEG)
    with pytest.raises(DataError, match=r"train/0042_c1_000000001.jpg: person id 42 has no row in .*annotations_train.csv \(1 more"):
        load_dataset(course)


def test_annotation_row_without_images(course):
    rows = course_rows((6, 9, 11, 77))
    write_csv(course / "annotations_train.csv", rows)
    with pytest.raises(DataError, match=r"annotations_train.csv line 5: id 77 has no images in .*train"):
        load_dataset(course)


def test_missing_csv(course):
    (course / "annotations_train.csv").unlink()
    with pytest.raises(DataError, match=r"annotations_train.csv: annotation file is missing"):
        load_dataset(course)


def test_missing_column(course):
    rows = {pid: row[:-1] for pid, row in course_rows((6, 9, 11)).items()}
    write_csv(course / "annotations_train.csv", rows, ("id",) + COURSE_COLUMNS[:-1])
    with pytest.raises(DataError, match=r"annotations_train.csv: missing column\(s\) downbrown"):
        load_dataset(course)


def test_unknown_column(course):
    rows = {pid: [*row, 1] for pid, row in course_rows((6, 9, 11)).items()}
    write_csv(course / "annotations_train.csv", rows, ("id",) + COURSE_COLUMNS + ("downorange",))
    with pytest.raises(DataError, match=r"annotations_train.csv: unknown column\(s\) downorange"):
        load_dataset(course)


@pytest.mark.parametrize(
    "column, value, expected",
    [("age", 5, "expected 1-4"), ("hat", 0, "expected 1 \\(no\\) or 2 \\(yes\\)"), ("upred", 3, "expected 1")],
)
def test_out_of_range_value(course, column, value, expected):
    rows = course_rows((6, 9, 11))
    rows[9][COURSE_COLUMNS.index(column)] = value
    write_csv(course / "annotations_train.csv", rows)
    with pytest.raises(DataError, match=rf"annotations_train.csv line 3 \(id 9\): column '{column}' has value {value}, {expected}"):
        load_dataset(course)


def test_non_integer_value_and_bad_rows(course):
    csv = course / "annotations_train.csv"
    text = csv.read_text().splitlines()
    csv.write_text("\n".join(text[:2] + [text[2].replace(",2,", ",yes,", 1).replace(",1,", ",yes,", 1)] + text[3:]))
    with pytest.raises(DataError, match=r"line 3: column '\w+' has value 'yes', expected an integer"):
        load_dataset(course)
    csv.write_text("\n".join(text[:3] + [text[3] + ",1"]))
    with pytest.raises(DataError, match=r"line 4: 29 values, expected 28"):
        load_dataset(course)
    csv.write_text("\n".join(text + [text[2]]))
    with pytest.raises(DataError, match=r"line 5: id 9 already annotated on line 3"):
        load_dataset(course)
    csv.write_text("")
    with pytest.raises(DataError, match=r"annotations_train.csv: file is empty"):
        load_dataset(course)
    csv.write_text("\n".join(line.replace(",", ";") for line in text))
    with pytest.raises(DataError, match=r"annotations_train.csv: values are separated by ';', expected commas"):
        load_dataset(course)
    csv.write_text("\n".join(text[:2] + [text[2].replace(",1,", ",,", 1)] + text[3:]))
    with pytest.raises(DataError, match=r"line 3: column '\w+' has value '', expected an integer"):
        load_dataset(course)
    csv.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"annotations_train.csv: not a readable UTF-8 CSV file"):
        load_dataset(course)
    csv.write_text("\n".join(text[:1] + [line.replace(",", ".0,") + ".0" for line in text[1:]]))  # floats from pandas
    assert len(load_dataset(course).train) == 12


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(1, 4), st.lists(st.integers(1, 2), min_size=26, max_size=26)), min_size=1, max_size=8
    ),
    bad=st.one_of(st.none(), st.tuples(st.integers(0, 7), st.integers(0, 26), st.sampled_from(["0", "3", "5", "-1", "x", "1.5"]))),
)
def test_csv_property(rows, bad):
    """Random valid rows read back exactly; one bad cell is reported with its line and column."""
    course = {pid: np.array([age, *rest]) for pid, (age, rest) in enumerate(rows, start=1)}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "annotations_train.csv"
        write_csv(path, course)
        if bad is not None:
            row, col, value = bad[0] % len(rows), bad[1], bad[2]
            if col != 0 or value not in ("3",):  # age 3 is valid
                lines = path.read_text().splitlines()
                cells = lines[row + 1].split(",")
                cells[col + 1] = value
                lines[row + 1] = ",".join(cells)
                path.write_text("\n".join(lines))
                with pytest.raises(DataError, match=rf"line {row + 2}.*column '{COURSE_COLUMNS[col]}' has value '?{re.escape(value)}'?"):
                    read_course_annotations(path)
                return
        annotations = read_course_annotations(path)
        assert list(annotations) == list(course)
        for pid, (line, values) in annotations.items():
            assert line == pid + 1 and values.tolist() == course[pid].tolist()


# ---------------------------------------------------------------------------------------------
# Images: corrupt, truncated, grayscale, RGBA


def test_corrupt_and_truncated_images_name_the_file(course):
    truncated = course / "test" / "000001.jpg"
    truncated.write_bytes(JPEG[: len(JPEG) // 2])
    (course / "queries" / "000000.jpg").write_bytes(b"not a jpeg at all")
    index = load_dataset(course)  # lazy: names and labels only
    dataset = ReidDataset(index.test)
    dataset[0]
    with pytest.raises(DataError, match=rf"{truncated}: cannot decode image .*truncated"):
        dataset[1]
    with pytest.raises(DataError, match=r"test/000001.jpg: cannot decode image .* \(1 more corrupt images\)"):
        validate_images(index)
    with pytest.raises(DataError, match="000001.jpg"):
        summarize(course)


@pytest.mark.parametrize("mode, color", [("L", 128), ("RGBA", (10, 20, 30, 128)), ("P", 3), ("LA", (90, 200))])
def test_non_rgb_images_are_converted(course, mode, color):
    path = course / "test" / "000002.jpg"
    path.write_bytes(jpeg_bytes(color, mode=mode, fmt="PNG"))  # a PNG named .jpg still decodes
    assert read_image(path).mode == "RGB"
    index = load_dataset(course)
    item = ReidDataset(index.test)[2]
    assert item["image"].shape == (3, 32, 16)
    report = validate_images(index)
    assert report["image_modes"] == {"RGB": 17, mode: 1} and report["image_sizes"] == {"16x32": 18}


def test_queries_copied_into_test_are_counted(course):
    """The course release copies every query into test/: inspect counts such pixel-identical
    pairs (a re-encoded or resized copy is another image), and says what it means."""
    for i, color in enumerate([(10, 10, 10), (60, 60, 60), (120, 30, 30), (30, 120, 30)]):
        (course / "test" / f"{i:06d}.jpg").write_bytes(jpeg_bytes(color, fmt="PNG"))
    (course / "queries" / "000000.jpg").write_bytes(jpeg_bytes((120, 30, 30), fmt="PNG"))  # = test 000002
    (course / "queries" / "000001.jpg").write_bytes(jpeg_bytes((120, 30, 31), fmt="PNG"))  # one value off
    report = validate_images(load_dataset(course))
    assert report["queries_in_test"] == 1
    (course / "queries" / "000001.jpg").write_bytes(jpeg_bytes((30, 120, 30), size=(32, 64), fmt="PNG"))
    assert validate_images(load_dataset(course))["queries_in_test"] == 1  # same colour, other size
    (course / "queries" / "000001.jpg").write_bytes(jpeg_bytes((30, 120, 30), mode="RGBA", fmt="PNG"))
    summary = summarize(course)  # compared as the RGB the Dataset reads: = test 000003
    assert summary["queries_in_test"] == 2
    assert "queries: 2 of 2 are pixel-identical copies of test images" in format_summary(summary)


# ---------------------------------------------------------------------------------------------
# Dataset


def test_dataset_items_and_collate(course):
    index = load_dataset(course)
    pid_to_label = {6: 0, 9: 1, 11: 2}
    dataset = ReidDataset(index.train, build_transforms(64, 32, train=False), pid_to_label)
    item = dataset[4]
    assert set(item) == {"image", "pid", "camid", "attributes", "path", "index"} and item["index"] == 4
    assert item["image"].shape == (3, 64, 32) and item["image"].dtype == torch.float32
    assert (item["pid"], item["camid"]) == (1, 0) and item["path"].endswith("0009_c1_000009000.jpg")
    assert item["attributes"].dtype == torch.int64 and item["attributes"].shape == (12,)
    assert dataset.labels == [0] * 4 + [1] * 4 + [2] * 4
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=5)))
    assert batch["image"].shape == (5, 3, 64, 32) and batch["pid"].dtype == torch.int64
    assert batch["attributes"].shape == (5, 12) and len(batch["path"]) == 5
    assert batch["index"].tolist() == [0, 1, 2, 3, 4]
    assert ReidDataset(index.train)[4]["pid"] == 9  # without a mapping: the original pid
    with pytest.raises(KeyError, match=r"person id\(s\) \[11\] are not in pid_to_label"):
        ReidDataset(index.train, pid_to_label={6: 0, 9: 1})


def test_dataset_cache_matches_uncached(course):
    for i, path in enumerate(sorted((course / "test").iterdir())):
        path.write_bytes(jpeg_bytes((40 * i, 255 - 40 * i, 90)))
    index = load_dataset(course)
    transform = build_transforms(32, 16, train=False)
    plain = ReidDataset(index.test, transform)
    cached = ReidDataset(index.test, transform, cache=True)
    assert cached.cache_tensor.shape == (4, 3, 32, 16) and cached.cache_tensor.dtype == torch.uint8
    for i in range(len(plain)):
        torch.testing.assert_close(cached[i]["image"], plain[i]["image"])
    small = ReidDataset(index.test, cache=True, image_size=(8, 4))
    small.preload()
    assert small.cache_tensor.shape == (4, 3, 8, 4) and small[0]["image"].shape == (3, 8, 4)


# ---------------------------------------------------------------------------------------------
# Market layout: synthetic files with real names + the real market_attribute.mat


def make_market(root: Path, mat: Path, labels: dict) -> None:
    """One train image per train identity, one gallery + one query image per test identity, plus junk and distractors."""
    for name in ("bounding_box_train", "bounding_box_test", "query"):
        (root / name).mkdir(parents=True)
    (root / "market_attribute.mat").write_bytes(mat.read_bytes())
    for pid in labels["train"]:
        (root / "bounding_box_train" / format_market_name(pid, pid % 6, 1, pid, 1)).write_bytes(JPEG)
    for pid in labels["test"]:
        (root / "bounding_box_test" / format_market_name(pid, (pid + 1) % 6, 1, pid, 1)).write_bytes(JPEG)
        (root / "query" / format_market_name(pid, pid % 6, 1, pid, 1)).write_bytes(JPEG)
    (root / "bounding_box_test" / "-1_c1s1_000401_03.jpg").write_bytes(JPEG)
    (root / "bounding_box_test" / "0000_c2s1_000151_01.jpg").write_bytes(JPEG)
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0")


def write_mat(path: Path, labels: dict, drop: str | None = None, extra: str | None = None) -> None:
    """A market_attribute.mat of the real structure; the test split's fields in reversed order."""
    mat = {}
    for split, rows in labels.items():
        names = list(COURSE_COLUMNS) if split == "train" else list(COURSE_COLUMNS)[::-1]
        fields = {name: np.array([rows[pid][COURSE_COLUMNS.index(name)] for pid in rows], dtype=np.uint8)[None] for name in names if name != drop}
        if extra:
            fields[extra] = np.ones((1, len(rows)), dtype=np.uint8)
        fields["image_index"] = np.array([f"{pid:04d}" for pid in rows], dtype=object)[None]
        mat[split] = fields
    scipy.io.savemat(path, {"market_attribute": mat})


@needs_mat
def test_real_mat_file():
    labels = read_market_attributes(MAT_REAL)
    assert len(labels["train"]) == 751 and len(labels["test"]) == 750
    assert min(labels["train"]) == 2 and set(labels["train"]).isdisjoint(labels["test"])
    raw = scipy.io.loadmat(MAT_REAL)["market_attribute"][0, 0]
    train_fields = raw["train"].dtype.names
    test_fields = raw["test"].dtype.names
    assert len(train_fields) == len(test_fields) == 28  # 27 attributes + image_index
    assert set(train_fields) - {"image_index"} == set(COURSE_COLUMNS)
    assert train_fields != test_fields  # the order differs: fields must be read by name
    for split in ("train", "test"):
        part = raw[split][0, 0]
        pid = int(part["image_index"][0, 7][0])
        expected = [int(part[name][0, 7]) for name in COURSE_COLUMNS]
        assert labels[split][pid].tolist() == expected


@needs_mat
def test_market_layout_with_real_mat(tmp_path):
    labels = read_market_attributes(MAT_REAL)
    make_market(tmp_path, MAT_REAL, labels)
    index = load_dataset(tmp_path)
    assert index.layout == "market" and index.annotation_file == tmp_path / "market_attribute.mat"
    assert (len(index.train), len(index.test), len(index.query)) == (751, 752, 750)
    assert len(index.train_pids) == 751 and [p.name for p in index.skipped] == ["Thumbs.db"]
    by_pid = {r.pid: r for r in index.train}
    np.testing.assert_array_equal(by_pid[2].attributes, course_to_groups(labels["train"][2][None])[0])
    query = {r.pid: r for r in index.query}
    np.testing.assert_array_equal(query[1].attributes, course_to_groups(labels["test"][1][None])[0])
    assert query[1].camid == 1
    junk, distractor = index.test[0], index.test[1]
    assert junk.is_junk and junk.pid == -1 and (junk.attributes == -1).all() and not junk.has_attributes
    assert distractor.is_distractor and distractor.pid == 0 and (distractor.attributes == -1).all()
    summary = summarize(tmp_path, check_images=False)
    assert (summary["train_ids"], summary["test_ids"], summary["query_ids"]) == (751, 750, 750)
    assert (summary["junk_images"], summary["distractor_images"]) == (1, 1)


def small_market_labels():
    return {"train": course_rows((2, 7, 10)), "test": course_rows((1, 3))}


def test_market_fields_read_by_name_and_errors(tmp_path):
    labels = small_market_labels()
    write_mat(tmp_path / "m.mat", labels)
    make_market(tmp_path / "ds", tmp_path / "m.mat", labels)
    index = load_dataset(tmp_path / "ds")
    for record in index.train + index.query:
        split = "train" if record in index.train else "test"
        np.testing.assert_array_equal(record.attributes, course_to_groups(labels[split][record.pid][None])[0])

    mat = tmp_path / "ds" / "market_attribute.mat"
    write_mat(mat, labels, drop="hat")
    with pytest.raises(DataError, match=r"market_attribute.mat: market_attribute.train: missing field\(s\) hat"):
        load_dataset(tmp_path / "ds")
    write_mat(mat, labels, extra="scarf")
    with pytest.raises(DataError, match=r"unknown field\(s\) scarf"):
        load_dataset(tmp_path / "ds")
    bad = {"train": dict(labels["train"]), "test": labels["test"]}
    bad["train"][7] = bad["train"][7].copy()
    bad["train"][7][0] = 9
    write_mat(mat, bad)
    with pytest.raises(DataError, match=r"market_attribute.train person 0007: column 'age' has value 9, expected 1-4"):
        load_dataset(tmp_path / "ds")
    write_mat(mat, {"train": course_rows((2, 7, 10, 12)), "test": labels["test"]})
    with pytest.raises(DataError, match=r"market_attribute.train person 0012 has no images in bounding_box_train"):
        load_dataset(tmp_path / "ds")
    write_mat(mat, {"train": course_rows((2, 7)), "test": labels["test"]})
    with pytest.raises(DataError, match=r"bounding_box_train/0010_c5s1_000010_01.jpg: person id 0010 has no entry in"):
        load_dataset(tmp_path / "ds")
    mat.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"market_attribute.mat: cannot read as a MATLAB .mat file"):
        load_dataset(tmp_path / "ds")
    mat.unlink()
    with pytest.raises(DataError, match=r"market_attribute.mat not found .* pass attribute_file="):
        load_dataset(tmp_path / "ds")
    assert len(load_dataset(tmp_path / "ds", attribute_file=tmp_path / "m.mat").train) == 3


def test_market_bad_names_and_missing_folder(tmp_path):
    labels = small_market_labels()
    write_mat(tmp_path / "m.mat", labels)
    make_market(tmp_path, tmp_path / "m.mat", labels)
    (tmp_path / "query" / "0001_c1_000000001.jpg").write_bytes(JPEG)
    with pytest.raises(DataError, match=r"query/0001_c1_000000001.jpg: file name does not parse, expected PPPP_cCsS"):
        load_dataset(tmp_path)
    for path in (tmp_path / "query").iterdir():
        path.unlink()
    (tmp_path / "query").rmdir()
    with pytest.raises(DataError, match=r"query: folder is missing \(the Market layout"):
        load_dataset(tmp_path)
