"""Every reader of user files either parses its input or raises the project's own one-line error.

Hypothesis feeds each reader random bytes and random small edits of a valid file (bytes
flipped, truncated, a chunk removed or repeated; for text files also a cell or value replaced):
annotation CSV, ``.mat`` attributes, images, checkpoints, dataset zips, split JSON, and the
submission files with their manifest. A traceback of any other kind fails the test.
"""
from __future__ import annotations

import io
import json
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image
from torch import nn

from reid_utils.config import TrainConfig
from reid_utils.data import (
    extract_zip,
    load_dataset,
    load_split,
    make_split,
    read_course_annotations,
    read_image,
    read_market_attributes,
    save_split,
)
from reid_utils.engine.checkpoint import load_checkpoint, save_checkpoint
from reid_utils.errors import ReidError
from reid_utils.export import read_manifest
from reid_utils.export.manifest import build_manifest, manifest_bytes
from reid_utils.export.submission import (
    attributes_to_rows,
    classification_csv_text,
    read_classification_csv,
    read_reid_txt,
    validate_classification,
    validate_reid_lines,
)
from reid_utils.schema import GROUPS

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large])


def edits_of(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, or a valid file with a few bytes changed, truncated, or a chunk cut / doubled."""
    n = len(valid)

    def flip(changes):
        data = bytearray(valid)
        for position, value in changes:
            data[position % n] = value
        return bytes(data)

    def splice(args):
        start, length, repeat = args
        start, stop = start % n, min(n, start % n + length)
        return valid[:start] + (valid[start:stop] * 2 if repeat else b"") + valid[stop:]

    return st.one_of(
        st.binary(max_size=1024),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=1, max_size=6).map(flip),
        st.integers(0, n).map(lambda k: valid[:k]),
        st.tuples(st.integers(0, n - 1), st.integers(1, 64), st.booleans()).map(splice),
    )


def text_edits_of(valid: str, separators=",\n") -> st.SearchStrategy[bytes]:
    """A valid text file with one field (between separators) replaced by hostile text."""
    fields = [m.span() for m in re.finditer(rf"[^{re.escape(separators)}]+", valid)]
    hostile = st.one_of(st.text(max_size=12), st.sampled_from(["99999999999999999999", "1.5", "nan", "inf", "-1",
                                                               "1e400", "", '"', "0x10", "\x00", "2.0", "١"]))

    def replace(args):
        index, text = args
        start, stop = fields[index % len(fields)]
        return (valid[:start] + text + valid[stop:]).encode("utf-8", "surrogatepass")

    return st.tuples(st.integers(0, len(fields) - 1), hostile).map(replace)


def parses_or_refuses(read, *args):
    """``read(*args)`` returns, or raises a ReidError with a one-line message; anything else fails."""
    try:
        return read(*args)
    except ReidError as error:
        assert "\n" not in str(error)
        return None


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# Annotation CSV and .mat


@pytest.fixture(scope="module")
def valid_csv(tiny_course_root) -> str:
    return (tiny_course_root / "annotations_train.csv").read_text()


def test_fuzz_annotation_csv(valid_csv, work):
    @FUZZ
    @given(data=st.one_of(edits_of(valid_csv.encode()), text_edits_of(valid_csv)))
    def check(data):
        parses_or_refuses(read_course_annotations, _write(work, "annotations_train.csv", data))

    check()


def test_mat_that_crashes_scipys_reader_is_refused(tmp_path):
    """One byte in a data tag (an unknown type) makes scipy's compiled reader crash the
    interpreter (scipy 1.17): the reader runs in a child process, so it is a DataError here."""
    import scipy.io

    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"market_attribute": {"train": {"age": np.arange(10, dtype=np.uint8)}}})
    valid = buffer.getvalue()
    tag = (2).to_bytes(4, "little") + (10).to_bytes(4, "little")  # miUINT8, 10 bytes
    at = valid.index(tag)
    path = _write(tmp_path, "market_attribute.mat", valid[:at] + b"\x02\xfd" + valid[at + 2:])  # type 0xfd02
    with pytest.raises(ReidError, match=r"market_attribute.mat: cannot read as a MATLAB .mat file \(.*\); is it damaged"):
        read_market_attributes(path)


def test_fuzz_market_mat(tiny_market_root, work):
    valid = (tiny_market_root / "market_attribute.mat").read_bytes()

    @FUZZ
    @given(data=edits_of(valid))
    def check(data):
        parses_or_refuses(read_market_attributes, _write(work, "market_attribute.mat", data))

    check()


# ---------------------------------------------------------------------------------------------
# Images


def test_fuzz_images(tiny_course_root, work):
    jpeg = sorted((tiny_course_root / "train").glob("*.jpg"))[0].read_bytes()
    buffer = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).convert("L").save(buffer, format="PNG")
    png = buffer.getvalue()

    @FUZZ
    @given(data=st.one_of(edits_of(jpeg), edits_of(png)))
    def check(data):
        image = parses_or_refuses(read_image, _write(work, "0001_c1_000000001.jpg", data))
        assert image is None or image.mode == "RGB"

    check()


# ---------------------------------------------------------------------------------------------
# Checkpoints


class _Tiny(nn.Module):
    """A model small enough to fuzz its checkpoint quickly (the fields a checkpoint stores)."""

    num_ids, attribute_form, embedding_dim = 3, "groups", 4

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(4)


def test_fuzz_checkpoints(work):
    torch.manual_seed(0)
    path = save_checkpoint(work / "valid.pt", _Tiny(), TrainConfig(), {5: 0, 9: 1, 12: 2}, epoch=2,
                           history={"epoch": [1, 2], "mAP": [0.1, float("nan")]})
    valid = path.read_bytes()
    assert load_checkpoint(path)["epoch"] == 2

    @FUZZ
    @given(data=edits_of(valid))
    def check(data):
        ckpt = parses_or_refuses(load_checkpoint, _write(work, "fuzzed.pt", data))
        if ckpt is not None:  # it loaded: then it is the very same content
            assert ckpt["pid_to_label"] == {5: 0, 9: 1, 12: 2}
            assert torch.equal(ckpt["model"]["fc.weight"], torch.load(path, weights_only=True)["model"]["fc.weight"])

    check()


# ---------------------------------------------------------------------------------------------
# Dataset zips


def _tiny_dataset_zip(source: Path, path: Path) -> bytes:
    """A course dataset of 3 identities as a zip (small, so each example extracts quickly)."""
    csv = (source / "annotations_train.csv").read_text().splitlines()
    pids = [int(line.split(",")[0]) for line in csv[1:4]]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("data/annotations_train.csv", "\n".join(csv[:4]) + "\n")
        for image in sorted((source / "train").glob("*.jpg")):
            if int(image.name.split("_")[0]) in pids:
                archive.write(image, f"data/train/{image.name}")
        for folder in ("test", "queries"):
            for image in sorted((source / folder).glob("*.jpg"))[:2]:
                archive.write(image, f"data/{folder}/{image.name}")
    return path.read_bytes()


def test_fuzz_dataset_zips(tiny_course_root, work):
    valid = _tiny_dataset_zip(tiny_course_root, work / "valid.zip")
    assert load_dataset(extract_zip(work / "valid.zip", work / "valid_out")).layout == "course"

    @FUZZ
    @given(data=edits_of(valid))
    def check(data):
        with tempfile.TemporaryDirectory(dir=work) as folder:
            zip_path = _write(Path(folder), "d.zip", data)
            parses_or_refuses(extract_zip, zip_path, Path(folder) / "d")
            left = sorted(p.name for p in Path(folder).iterdir())
            assert left in (["d.zip"], ["d", "d.zip"])  # extracted, or nothing partial left behind

    check()


# ---------------------------------------------------------------------------------------------
# Split JSON


def test_fuzz_split_json(tiny_course_root, work):
    index = load_dataset(tiny_course_root)
    save_split(make_split(index, 0.25, seed=0), work / "split.json")
    valid = (work / "split.json").read_text()

    @FUZZ
    @given(data=st.one_of(edits_of(valid.encode()), text_edits_of(valid, separators=',\n:[]{} "')))
    def check(data):
        parses_or_refuses(load_split, _write(work, "fuzzed_split.json", data), index)

    check()


# ---------------------------------------------------------------------------------------------
# Submissions


def test_fuzz_submission_files(work):
    rng = np.random.default_rng(0)
    g_names = [f"{i:06d}.jpg" for i in range(12)]
    q_names = [f"{i:06d}.jpg" for i in range(100, 104)]
    groups = np.stack([rng.integers(0, g.num_classes, size=len(g_names)) for g in GROUPS], axis=1)
    csv = classification_csv_text(attributes_to_rows(groups, g_names))
    txt = "".join(f"{q}: {', '.join(rng.permutation(g_names)[:5])}\n" for q in q_names)
    manifest = manifest_bytes(build_manifest({"classification_test.csv": csv.encode(), "reid_test.txt": txt.encode()},
                                             {}, {"top_k": 5})).decode()

    def read_csv(path):
        table = read_classification_csv(path)
        validate_classification(table, g_names)

    def read_txt(path):
        validate_reid_lines(read_reid_txt(path), q_names, g_names, top_k=5, min_results=1)

    def read_json(path):
        read_manifest(path.parent)

    @FUZZ
    @given(kind=st.sampled_from(["csv", "txt", "json"]), choice=st.data())
    def check(kind, choice):
        valid, reader, name, separators = {
            "csv": (csv, read_csv, "classification_test.csv", ",\n"),
            "txt": (txt, read_txt, "reid_test.txt", ",:\n "),
            "json": (manifest, read_json, "submission.json", ',\n:[]{} "'),
        }[kind]
        data = choice.draw(st.one_of(edits_of(valid.encode()), text_edits_of(valid, separators)))
        parses_or_refuses(reader, _write(work, name, data))

    check()
    assert pd.read_csv(io.StringIO(csv)).shape == (12, 28) and json.loads(manifest)["settings"] == {"top_k": 5}
