"""Find the dataset: an explicit path, ``$REID_DATA_ROOT``, or the bundled synthetic sample.

``resolve_data_root(path=None)`` looks, in order, at

1. ``path`` (a parameters cell, ``--data`` on the command line);
2. the environment variable ``REID_DATA_ROOT``;
3. the bundled sample ``<repo>/dataset/sample``, generated on first use (atomically: a
   half-written sample never stays behind). Outside a source checkout the sample goes to
   ``~/.cache/reid_utils/sample``.

A path or ``REID_DATA_ROOT`` may point at a ``.zip`` (e.g. ``dataset.zip`` on Google Drive): it
is extracted next to itself once, by :func:`extract_zip`, with checks (a real zip, no member
escaping the destination, a recognisable layout inside).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import DataError
from .layouts import detect_layout

ENV_VAR = "REID_DATA_ROOT"
SAMPLE_SEED = 0


def repo_root() -> Path | None:
    """The source checkout holding this package, or None for an installed copy."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "reid_utils").is_dir() else None


def sample_root() -> Path:
    """Where the bundled sample lives (it may not exist yet)."""
    root = repo_root()
    return root / "dataset" / "sample" if root is not None else Path.home() / ".cache" / "reid_utils" / "sample"


def ensure_sample(out: str | os.PathLike | None = None) -> Path:
    """Return the sample folder, generating it (deterministically, seed 0) if it is missing."""
    out = Path(out) if out is not None else sample_root()
    if out.is_dir() and any(out.iterdir()):
        return out
    from .synthetic import write_sample  # deferred: only needed on first use

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


def resolve_data_root(path: str | os.PathLike | None = None) -> Path:
    """The dataset folder to use (see the module docstring). Does not validate the layout."""
    if path is not None and str(path) != "":
        return _existing(Path(path).expanduser(), "given path")
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _existing(Path(env).expanduser(), f"environment variable {ENV_VAR}")
    return ensure_sample()


def _existing(path: Path, source: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: dataset path from the {source} does not exist")
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise DataError(f"{path}: dataset path from the {source} is a file, expected a folder or a .zip")
        return extract_zip(path, path.with_suffix(""))
    return path


def _check_member(zip_path: Path, name: str) -> None:
    member = PurePosixPath(name.replace("\\", "/"))
    if member.is_absolute() or ".." in member.parts or (member.parts and ":" in member.parts[0]):
        raise DataError(f"{zip_path}: member {name!r} would be written outside the destination folder; refusing to extract")


def extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract ``zip_path`` into ``dest`` and return the dataset root inside it.

    If ``dest`` already holds a recognisable dataset, nothing is extracted. Otherwise the zip
    is checked (it is a zip file; no member path is absolute or contains ``..``), extracted
    into a temporary folder next to ``dest``, checked for a course or Market layout (at the
    top or in one sub-folder), and only then moved to ``dest``. On any error ``dest`` is left
    untouched.
    """
    zip_path, dest = Path(zip_path).expanduser(), Path(dest).expanduser()
    if dest.is_dir() and any(dest.iterdir()):
        try:
            return detect_layout(dest)[1]
        except DataError:
            raise DataError(f"{dest}: folder exists and holds no dataset; remove it or choose another destination") from None
    if not zip_path.is_file():
        raise DataError(f"{zip_path}: zip file does not exist")
    if not zipfile.is_zipfile(zip_path):
        raise DataError(f"{zip_path}: not a zip file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for name in archive.namelist():
                _check_member(zip_path, name)
            archive.extractall(tmp)  # a member failing its CRC check raises BadZipFile
        try:
            _, found = detect_layout(tmp)
        except DataError:
            top = sorted(p.name for p in tmp.iterdir())[:8]
            raise DataError(
                f"{zip_path}: no dataset layout inside (top-level entries: {top}); expected train/, test/, queries/ "
                f"and annotations_train.csv, or bounding_box_train/, bounding_box_test/ and query/"
            ) from None
        if dest.is_dir():
            dest.rmdir()  # empty
        os.replace(tmp, dest)
    except zipfile.BadZipFile as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{zip_path}: cannot read zip ({error})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest / found.relative_to(tmp)
