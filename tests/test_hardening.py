"""Issue 13: hostile inputs and faults end in one line and exit 2, leave nothing behind, and
outputs honour the umask.

* damaged checkpoints are refused (a digest of every tensor and value), hand-edited fields too;
* zip bombs, symbolic links, encryption and unknown compression are refused before anything
  is written;
* every reproduction of the issue ends with ``error: <one line>`` and exit code 2;
* values are never changed silently (``.mat`` fractions, 16-bit PNGs);
* files and folders get the permissions a plain ``open`` / ``mkdir`` would give them.
"""
from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from reid_utils.cli import main
from reid_utils.config import TrainConfig
from reid_utils.data import extract_zip, load_dataset, make_split, read_image, read_market_attributes, summarize
from reid_utils.data.locate import check_zip
from reid_utils.engine.checkpoint import load_checkpoint, load_model_from_checkpoint, save_checkpoint
from reid_utils.errors import CheckpointError, DataError, ReidError, one_line
from reid_utils.io import atomic_write_text
from reid_utils.models import build_model_from_config

pytestmark = pytest.mark.usefixtures("one_thread")


def run_cli(argv, capsys) -> str:
    """Run the CLI in-process; it must exit 2 with one ``error:`` line and no traceback."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.lstrip().startswith(("warnings.warn", "save_split"))]
    lines = [line for line in lines if "Warning" not in line]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    cfg = TrainConfig.from_overrides(model="resnet50", depth=18, height=64, width=32)
    torch.manual_seed(0)
    model = build_model_from_config(cfg, num_ids=8)
    return save_checkpoint(tmp_path_factory.mktemp("hard_ckpt") / "best.pt", model, cfg, {p: p for p in range(8)})


@pytest.fixture
def sample_copy(tiny_course_root, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_course_root, tmp_path / "data"))


# ---------------------------------------------------------------------------------------------
# One line


def test_one_line_keeps_the_worker_message_not_its_traceback():
    worker = ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
              '  File "x.py", line 3, in f\n    raise DataError(msg)\n'
              "reid_utils.errors.DataError: /d/train/0001_c1_000000001.jpg: cannot decode image (truncated)\n")
    assert str(DataError(worker)) == "/d/train/0001_c1_000000001.jpg: cannot decode image (truncated)"
    assert one_line("a.csv: bad\n  more") == "a.csv: bad | more"
    assert isinstance(DataError("x"), ReidError) and isinstance(DataError("x"), ValueError)


# ---------------------------------------------------------------------------------------------
# Damaged and hand-edited checkpoints


def _largest_tensor_offset(path: Path) -> int:
    """Byte offset of the middle of the largest tensor record in a torch zip checkpoint."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2


def test_one_changed_byte_in_the_weights_is_refused(checkpoint, tiny_course_root, tmp_path, capsys):
    damaged = tmp_path / "best.pt"
    data = bytearray(checkpoint.read_bytes())
    data[_largest_tensor_offset(checkpoint)] ^= 0x01
    damaged.write_bytes(bytes(data))
    with zipfile.ZipFile(damaged) as archive:  # really only tensor bytes differ: the zip itself is fine
        assert archive.namelist() == zipfile.ZipFile(checkpoint).namelist()
    for command in (["export", "--out", tmp_path / "sub"], ["evaluate", "--no-rerank", "--no-flip"]):
        line = run_cli([command[0], "--data", tiny_course_root, "--checkpoint", damaged, *command[1:]], capsys)
        assert "best.pt: the checkpoint is damaged" in line
    assert tree(tmp_path) == ["best.pt"]


def test_older_checkpoints_without_a_digest_still_load(checkpoint, tmp_path):
    ckpt = torch.load(checkpoint, weights_only=True)
    assert len(ckpt.pop("digest")["value"]) == 64
    torch.save(ckpt, tmp_path / "old.pt")
    model, loaded = load_model_from_checkpoint(tmp_path / "old.pt")
    assert "digest" not in loaded and model.num_ids == 8


@pytest.mark.parametrize("field, value, words", [
    ("num_ids", "5", "field 'num_ids' is '5', expected a positive number"),
    ("height", 0, "field 'height' is 0, expected an input size"),
    ("attribute_form", "colours", "field 'attribute_form' is 'colours', expected one of groups, binary"),
    ("pid_to_label", {"a": 1}, "field 'pid_to_label'"),
])
def test_hand_edited_fields_are_one_line_errors(checkpoint, tiny_course_root, tmp_path, capsys, field, value, words):
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt[field] = value
    torch.save(ckpt, tmp_path / "edited.pt")  # the stored digest no longer matches
    with pytest.raises(CheckpointError, match="edited.pt: the checkpoint is damaged"):
        load_checkpoint(tmp_path / "edited.pt")
    del ckpt["digest"]  # an edit of a checkpoint from before digests: the fields are checked
    torch.save(ckpt, tmp_path / "edited.pt")
    line = run_cli(["export", "--data", tiny_course_root, "--checkpoint", tmp_path / "edited.pt", "--out",
                    tmp_path / "sub"], capsys)
    assert words in line and not (tmp_path / "sub").exists()


# ---------------------------------------------------------------------------------------------
# Zips


def _zip_sample(root: Path, path: Path, **options) -> Path:
    with zipfile.ZipFile(path, "w", **options) as archive:
        for file in sorted(root.rglob("*")):
            archive.write(file, "sample/" + file.relative_to(root).as_posix())
    return path


def _patch_headers(path: Path, offset_in_local: int, offset_in_central: int, value: int, size: str = "<H",
                   mode: str = "set") -> None:
    """Set (or OR) a field in every local and central header of a zip."""
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", offset_in_local), (b"PK\x01\x02", offset_in_central)):
        i = data.find(signature)
        while i >= 0:
            old = struct.unpack_from(size, data, i + offset)[0]
            struct.pack_into(size, data, i + offset, old | value if mode == "or" else value)
            i = data.find(signature, i + 4)
    path.write_bytes(bytes(data))


def test_zip_bomb_is_refused_before_writing(tmp_path, capsys):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("sample/train/0001_c1_000000001.jpg", "w") as member:
            for _ in range(300):
                member.write(bytes(1 << 20))  # 300 MiB of zeros in a 300 KB zip
    assert bomb.stat().st_size < 400_000
    line = run_cli(["inspect", bomb], capsys)
    assert "bomb.zip: member 'sample/train/0001_c1_000000001.jpg' expands" in line and "zip bomb" in line
    assert tree(tmp_path) == ["bomb.zip"]  # nothing extracted at all


def test_zip_refusals(tiny_course_root, tmp_path, monkeypatch):
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as archive:
        info = zipfile.ZipInfo("sample/annotations_train.csv")
        info.create_system, info.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="annotations_train.csv' is a symbolic link"):
        extract_zip(link, tmp_path / "out")

    encrypted = _zip_sample(tiny_course_root, tmp_path / "encrypted.zip")
    _patch_headers(encrypted, 6, 8, 0x1, mode="or")
    with pytest.raises(DataError, match="is encrypted"):
        extract_zip(encrypted, tmp_path / "out")

    deflate64 = _zip_sample(tiny_course_root, tmp_path / "deflate64.zip", compression=zipfile.ZIP_DEFLATED)
    _patch_headers(deflate64, 8, 10, 9)  # method 9: Windows Explorer's Deflate64
    with pytest.raises(DataError, match="compression method 9, which Python cannot read"):
        extract_zip(deflate64, tmp_path / "out")

    overlapping = tmp_path / "overlap.zip"  # many entries pointing at one big member
    with zipfile.ZipFile(overlapping, "w") as archive:
        archive.writestr("sample/big.bin", np.random.default_rng(0).bytes(1 << 20))
        for i in range(8):
            archive.writestr(f"sample/copy{i}.bin", b"")
    data = bytearray(overlapping.read_bytes())
    i = data.find(b"PK\x01\x02")
    first = None
    while i >= 0:
        csize, usize, *_, offset = struct.unpack_from("<IIHHHHHII", data, i + 20)
        first = first or (csize, usize, offset)
        struct.pack_into("<II", data, i + 20, first[0], first[1])
        struct.pack_into("<I", data, i + 42, first[2])
        i = data.find(b"PK\x01\x02", i + 4)
    overlapping.write_bytes(bytes(data))
    with pytest.raises(DataError, match="overlapping members"):
        extract_zip(overlapping, tmp_path / "out")

    good = _zip_sample(tiny_course_root, tmp_path / "good.zip")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DataError, match=r"good.zip: needs .* MiB to extract but .* has 0.0 MiB free"):
        extract_zip(good, tmp_path / "out")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["link.zip", "encrypted.zip", "deflate64.zip", "overlap.zip", "good.zip"])  # nothing written
    assert load_dataset(extract_zip(good, tmp_path / "out")).layout == "course"  # a normal zip still works


def test_a_member_longer_than_its_declared_size_is_refused(tmp_path):
    lying = tmp_path / "lying.zip"
    with zipfile.ZipFile(lying, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("sample/annotations_train.csv", "id,age\n" * 5000)
    _patch_headers(lying, 22, 24, 100, size="<I")  # uncompressed size: 100 bytes, really 35 kB
    with zipfile.ZipFile(lying) as archive:
        assert check_zip(lying, archive, tmp_path)[0][0].file_size == 100
    with pytest.raises(DataError, match="lying.zip: cannot read zip"):
        extract_zip(lying, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lying.zip"]


# ---------------------------------------------------------------------------------------------
# The reproductions: exit 2, one line, nothing left behind


@pytest.mark.parametrize("extra, words", [
    (["--batch-p", 100, "--batch-k", 10], "cannot fill one batch of 1000"),
    (["--batch-p", 100, "--batch-k", 10, "--triplet-weight", 1], "cannot fill batches of p=100"),
    (["--seed", -1], "seed=-1 is out of range"),
    (["--seed", 2**70], "seed=1180591620717411303424 is out of range"),
    (["--num-threads", 1000000], "num_threads=1000000 is out of range"),
    (["--lr", "inf"], "lr=inf is not a finite number"),
    (["--weight-decay", "inf"], "weight_decay=inf is not a finite number"),
])
def test_train_reproductions(tiny_course_root, tmp_path, capsys, extra, words):
    line = run_cli(["train", "--smoke", "--data", tiny_course_root, "--out", tmp_path / "run", *extra], capsys)
    assert words in line
    assert tree(tmp_path) == []  # no split.json, no out_dir


def test_outputs_under_a_file(checkpoint, tiny_course_root, tmp_path, capsys):
    (tmp_path / "afile.txt").write_text("x")
    under = tmp_path / "afile.txt" / "sub"
    for argv in (["train", "--smoke", "--data", tiny_course_root, "--out", under],
                 ["export", "--data", tiny_course_root, "--checkpoint", checkpoint, "--out", under],
                 ["sample", under],
                 ["evaluate", "--data", tiny_course_root, "--checkpoint", checkpoint, "--out", tmp_path / "afile.txt" / "r.json"]):
        assert "afile.txt" in run_cli(argv, capsys)
    assert tree(tmp_path) == ["afile.txt"]


def test_bad_annotation_values(sample_copy, tmp_path, capsys):
    csv = sample_copy / "annotations_train.csv"
    lines = csv.read_text().splitlines()
    cells = lines[1].split(",")
    cells[2] = "99999999999999999999"
    csv.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    line = run_cli(["train", "--smoke", "--data", sample_copy, "--out", tmp_path / "run"], capsys)
    assert "annotations_train.csv line 2: column 'backpack' has value '99999999999999999999', expected 1 (no) or 2" in line
    assert "99999999999999999999" in run_cli(["inspect", sample_copy, "--no-image-check"], capsys)
    assert not (tmp_path / "run").exists()


def _rewrite_mat(path: Path, change) -> None:
    top = scipy.io.loadmat(path, simplify_cells=True)["market_attribute"]
    change(top)
    for part in top.values():
        part["image_index"] = np.array(list(part["image_index"]), dtype=object)
    scipy.io.savemat(path, {"market_attribute": top})


@pytest.mark.parametrize("value, words", [
    ("1.5", "market_attribute.train.hat[0] (person 0"),
    ("text", "has value 'yes', expected an integer"),
])
def test_mat_values_that_are_not_integers(tiny_market_root, tmp_path, capsys, value, words):
    root = Path(shutil.copytree(tiny_market_root, tmp_path / "market"))
    mat = root / "market_attribute.mat"
    before = read_market_attributes(mat)
    _rewrite_mat(mat, lambda top: None)  # the rewrite alone changes nothing
    after = read_market_attributes(mat)
    assert all((before["train"][pid] == after["train"][pid]).all() for pid in before["train"])

    def change(top):
        hat = np.asarray(top["train"]["hat"], dtype=float)
        if value == "1.5":
            hat[0] = 1.5
            top["train"]["hat"] = hat
        else:
            top["train"]["hat"] = np.array(["yes"] * len(hat), dtype=object)

    _rewrite_mat(mat, change)
    line = run_cli(["inspect", root, "--no-image-check"], capsys)
    assert words in line and "expected an integer" in line  # never read as 1 (the CSV path refuses 1.5 too)


def test_decode_error_in_a_dataloader_worker_is_one_line(sample_copy, tmp_path, capsys):
    for i, image in enumerate(sorted((sample_copy / "train").glob("*.jpg"))):
        if i % 3 == 0:
            image.write_bytes(image.read_bytes()[:150])
    line = run_cli(["train", "--smoke", "--data", sample_copy, "--out", tmp_path / "run", "--no-cache-images",
                    "--num-workers", 1], capsys)
    assert ".jpg: cannot decode image" in line and "worker" not in line
    assert not (tmp_path / "run").exists()  # the split made for this run is gone again


def test_validation_gaps(checkpoint, tiny_course_root, tmp_path, capsys):
    line = run_cli(["evaluate", "--data", tiny_course_root, "--checkpoint", checkpoint, "--out", tmp_path / "res.txt"],
                   capsys)
    assert "res.txt: expected a .json or .csv file, or a folder" in line and not (tmp_path / "res.txt").exists()
    with pytest.warns(UserWarning, match="val_fraction=0.99 leaves only 1 of the 16 identities"):
        make_split(load_dataset(tiny_course_root), val_fraction=0.99)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_split(load_dataset(tiny_course_root), val_fraction=0.2)  # no warning for a usual split
    archive = _zip_sample(tiny_course_root, tmp_path / "data.zip")
    assert main(["inspect", str(archive), "--json", "--no-image-check"]) == 0  # as train / export accept it
    assert '"layout": "course"' in capsys.readouterr().out


def test_no_validation_prints_a_summary_and_files_honour_the_umask(tiny_course_root, tmp_path, capsys):
    old = os.umask(0o027)
    try:
        assert main(["train", "--smoke", "--data", str(tiny_course_root), "--out", str(tmp_path / "run"),
                     "--val-fraction", "0"]) == 0
        extracted = extract_zip(_zip_sample(tiny_course_root, tmp_path / "d.zip"), tmp_path / "d")
        atomic_write_text(tmp_path / "evaluation.json", "{}")
        (tmp_path / "kept.json").write_text("{}")
        os.chmod(tmp_path / "kept.json", 0o600)
        atomic_write_text(tmp_path / "kept.json", "{}\n")  # a replaced file keeps its mode, as with open()
    finally:
        os.umask(old)
    assert "no validation split (val_fraction=0.0), so best.pt is the last epoch" in capsys.readouterr().out
    for name in ("best.pt", "last.pt", "history.json", "split.json"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o640, name
    assert stat.S_IMODE((tmp_path / "evaluation.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "kept.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750
    assert stat.S_IMODE((extracted / "annotations_train.csv").stat().st_mode) == 0o640
    assert stat.S_IMODE((extracted / "train").stat().st_mode) == 0o750


def test_submission_honours_the_umask(checkpoint, tiny_course_root, tmp_path):
    from reid_utils.engine.runtime import fast_path
    from reid_utils.export import export_submission

    old = os.umask(0o022)
    try:
        result = export_submission(tiny_course_root, checkpoint, tmp_path / "sub", top_k=5, num_workers=0,
                                   fast_path=fast_path("cpu", precision="fp32"))
    finally:
        os.umask(old)
    for path in [*result["paths"].values(), result["manifest_path"]]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE((tmp_path / "sub").resolve().stat().st_mode) == 0o755


@pytest.mark.skipif(sys.platform != "linux", reason="drops root's permission override with setpriv (Linux)")
def test_read_only_folder(checkpoint, tiny_course_root, tmp_path):
    prefix = []
    if os.geteuid() == 0:  # root writes anywhere: drop that capability for the child
        if not shutil.which("setpriv"):
            pytest.skip("setpriv is needed to test a read-only folder as root")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        for argv in (["export", "--data", tiny_course_root, "--checkpoint", checkpoint, "--out", locked / "sub"],
                     ["sample", locked / "sample"]):
            result = subprocess.run([*prefix, sys.executable, "-m", "reid_utils", *map(str, argv)],
                                    capture_output=True, text=True, timeout=300)
            assert result.returncode == 2, result.stderr
            assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert "locked" in result.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


# ---------------------------------------------------------------------------------------------
# Values never change silently


def test_sixteen_bit_png_is_scaled_not_white(sample_copy, capsys):
    image = sorted((sample_copy / "train").glob("*.jpg"))[0]
    gray = np.asarray(Image.open(image).convert("L"), dtype=np.uint16)
    Image.fromarray(gray * 257).save(image.with_suffix(".png"), format="PNG")  # 16-bit samples
    image.unlink()
    opened = Image.open(image.with_suffix(".png"))
    assert opened.mode.startswith("I")  # Pillow's own convert("RGB") would clip this to white
    rgb = np.asarray(read_image(image.with_suffix(".png")))
    assert rgb.shape[2] == 3 and np.abs(rgb[..., 0].astype(int) - gray).max() <= 1
    summary = summarize(sample_copy, check_images=True)
    assert summary["image_modes"].get(opened.mode) == 1
    assert main(["inspect", str(sample_copy)]) == 0
    assert "1 of them have 16-bit samples, scaled to 8 bits" in capsys.readouterr().out
