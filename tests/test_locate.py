"""Locating and inspecting data: an argument, ``REID_DATA_ROOT``, the bundled sample (generated
once, atomically), zip files extracted with checks, ``inspect``'s summary, the real course data."""
import zipfile
from pathlib import Path

import pytest
from test_layouts import COURSE_REAL, JPEG, course, make_course, needs_course  # noqa: F401,F811  (course: a fixture)

from reid_utils.data import extract_zip, format_summary, load_dataset, resolve_data_root, summarize, validate_images
from reid_utils.errors import DataError
from reid_utils.synthetic import generator

# ---------------------------------------------------------------------------------------------
# Real course data


@pytest.mark.real_data
@needs_course
def test_real_course_data():
    index = load_dataset(COURSE_REAL)
    assert index.layout == "course"
    assert (len(index.train_pids), len(index.train), len(index.test), len(index.query)) == (600, 10_443, 19_679, 2_248)
    assert all(r.has_attributes for r in index.train)
    summary = summarize(COURSE_REAL, check_images=False)
    assert {k: summary[k] for k in ("layout", "train_ids", "train_images", "test_images", "query_images")} == {
        "layout": "course", "train_ids": 600, "train_images": 10_443, "test_images": 19_679, "query_images": 2_248,
    }
    assert summary["cameras"] == [1, 2, 3, 4, 5, 6] and len(summary["attribute_positive_rates"]) == 30


@pytest.mark.real_data
@needs_course
def test_real_course_queries_are_copies_of_test_images():
    # every query image of the course release is also in test/, pixel for pixel (so every model's
    # ranking starts with the query's own copy, which the course evaluator counts as a match)
    report = validate_images(load_dataset(COURSE_REAL))
    assert report["images_checked"] == 10_443 + 19_679 + 2_248
    assert report["queries_in_test"] == 2_248


# ---------------------------------------------------------------------------------------------
# Inspect


def test_summarize_and_format(course):
    summary = summarize(course)
    assert summary["layout"] == "course"
    assert (summary["train_ids"], summary["train_images"], summary["test_images"], summary["query_images"]) == (3, 12, 4, 2)
    assert summary["test_ids"] is None and summary["cameras"] == [1, 2]
    assert summary["images_per_camera"] == {"c1": 6, "c2": 6}
    assert summary["images_per_identity"] == {"min": 4, "median": 4.0, "mean": 4.0, "max": 4}
    assert summary["images_checked"] == 18 and summary["image_sizes"] == {"16x32": 18}
    assert all(0 <= rate <= 1 for rate in summary["attribute_positive_rates"].values())
    ages = [summary["attribute_positive_rates"][f"age_{a}"] for a in ("young", "teenager", "adult", "old")]
    assert sum(ages) == pytest.approx(1.0, abs=1e-3)
    text = format_summary(summary)
    assert "layout: course" in text and "train: 3 identities, 12 images" in text and "18 decoded OK" in text


# ---------------------------------------------------------------------------------------------
# Locating data: argument, REID_DATA_ROOT, bundled sample, zip files


def test_resolve_data_root(course, monkeypatch):
    monkeypatch.delenv("REID_DATA_ROOT", raising=False)
    assert resolve_data_root(course) == course
    monkeypatch.setenv("REID_DATA_ROOT", str(course))
    assert resolve_data_root() == course
    monkeypatch.setenv("REID_DATA_ROOT", str(course / "missing"))
    with pytest.raises(DataError, match=r"missing: dataset path from the environment variable REID_DATA_ROOT does not exist"):
        resolve_data_root()
    with pytest.raises(DataError, match=r"nowhere: dataset path from the given path does not exist"):
        resolve_data_root(course / "nowhere")


def test_bundled_sample_is_generated_once(tmp_path, monkeypatch):
    calls = []

    class FakeSynthetic:
        @staticmethod
        def write_sample(out, seed, layout):
            calls.append((seed, layout))
            make_course(Path(out))

    monkeypatch.delenv("REID_DATA_ROOT", raising=False)
    monkeypatch.setattr(generator, "sample_root", lambda: tmp_path / "dataset" / "sample")
    monkeypatch.setattr(generator, "write_sample", FakeSynthetic.write_sample)
    root = resolve_data_root()
    assert root == tmp_path / "dataset" / "sample" and load_dataset(root).layout == "course"
    assert resolve_data_root() == root and calls == [(0, "course")]
    assert [p.name for p in (tmp_path / "dataset").iterdir()] == ["sample"]  # no temporary folder left


def test_failed_sample_generation_leaves_nothing(tmp_path, monkeypatch):
    class Broken:
        @staticmethod
        def write_sample(out, seed, layout):
            (Path(out) / "train").mkdir()
            raise KeyboardInterrupt

    monkeypatch.setattr(generator, "write_sample", Broken.write_sample)
    with pytest.raises(KeyboardInterrupt):
        generator.ensure_sample(tmp_path / "sample")
    assert list(tmp_path.iterdir()) == []


def zip_folder(folder: Path, zip_path: Path, prefix: str = "") -> None:
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, prefix + path.relative_to(folder).as_posix())


def test_extract_zip(course, tmp_path):
    zip_path = tmp_path / "dataset.zip"
    zip_folder(course, zip_path, prefix="market1501_course/")
    root = extract_zip(zip_path, tmp_path / "out")
    assert root == tmp_path / "out" / "market1501_course" and len(load_dataset(root).train) == 12
    assert extract_zip(zip_path, tmp_path / "out") == root  # already there: no second extraction
    assert sorted(p.name for p in tmp_path.iterdir()) == ["course", "dataset.zip", "out"]
    assert resolve_data_root(zip_path) == tmp_path / "dataset" / "market1501_course"  # extracted next to the zip


def test_extract_zip_checks(tmp_path):
    not_zip = tmp_path / "dataset.zip"
    not_zip.write_text("hello")
    with pytest.raises(DataError, match=r"dataset.zip: not a zip file"):
        extract_zip(not_zip, tmp_path / "out")
    with pytest.raises(DataError, match=r"missing.zip: zip file does not exist"):
        extract_zip(tmp_path / "missing.zip", tmp_path / "out")

    no_layout = tmp_path / "photos.zip"
    with zipfile.ZipFile(no_layout, "w") as archive:
        archive.writestr("holiday/img1.jpg", JPEG)
    with pytest.raises(DataError, match=r"photos.zip: no dataset layout inside \(top-level entries: \['holiday'\]\)"):
        extract_zip(no_layout, tmp_path / "out")

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("train/0006_c1_000000001.jpg", JPEG)
        archive.writestr("../../escaped.jpg", JPEG)
    with pytest.raises(DataError, match=r"evil.zip: member '../../escaped.jpg' would be written outside"):
        extract_zip(evil, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset.zip", "evil.zip", "photos.zip"]  # nothing written

    text_file = tmp_path / "notes.txt"
    text_file.write_text("x")
    with pytest.raises(DataError, match=r"notes.txt: dataset path from the given path is a file, expected a folder or a .zip"):
        resolve_data_root(text_file)
