"""Find the dataset: an explicit path, ``$REID_DATA_ROOT``, or the bundled synthetic sample.

``resolve_data_root(path=None)`` looks, in order, at

1. ``path`` (a parameters cell, ``--data`` on the command line);
2. the environment variable ``REID_DATA_ROOT``;
3. the bundled sample ``<repo>/dataset/sample``, generated on first use (atomically: a
   half-written sample never stays behind). Outside a source checkout the sample goes to
   ``~/.cache/reid_utils/sample``.

A path or ``REID_DATA_ROOT`` may point at a ``.zip`` (e.g. ``dataset.zip`` on Google Drive): it
is extracted next to itself once, by :func:`extract_zip`, with checks made before anything is
written (:func:`check_zip`: a real zip, no member escaping the destination, no symbolic links,
no encryption, sane sizes and compression ratios, room on the disk) and a recognisable layout
inside.
"""
from __future__ import annotations

import errno
import lzma
import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ..errors import DataError
from ..io import ensure_dir, make_temp_dir, output_error
from ..synthetic import ensure_sample
from .layouts import detect_layout

ENV_VAR = "REID_DATA_ROOT"
_WRITE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}


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


#: Limits for a dataset zip, checked before anything is written. Images barely compress
#: (JPEG/PNG: about 1.0-1.1x), so a high ratio means a zip bomb, not a dataset.
MAX_ZIP_BYTES = 64 << 30  # uncompressed total (Market-1501: 0.2 GB; MSMT17: about 3 GB)
MAX_ZIP_MEMBERS = 2_000_000
MAX_ZIP_RATIO = 20  # uncompressed / compressed, for the whole archive ...
MAX_MEMBER_RATIO = 200  # ... and for any one member
RATIO_FLOOR = 16 << 20  # sizes below this are never a bomb (a small CSV may compress 50x)
FREE_SPACE_MARGIN = 64 << 20  # left free on the disk after extraction
_COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
                 zipfile.ZIP_LZMA: "lzma"}
_CHUNK = 1 << 20


def _member_path(zip_path: Path, name: str) -> PurePosixPath:
    """The member's relative path (``\\`` read as ``/``); DataError if it would leave the destination."""
    member = PurePosixPath(name.replace("\\", "/"))
    if (member.is_absolute() or ".." in member.parts or (member.parts and ":" in member.parts[0])
            or "\x00" in name):
        raise DataError(f"{zip_path}: member {name!r} would be written outside the destination folder; refusing to extract")
    return member


def _mib(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


def check_zip(zip_path: Path, archive: zipfile.ZipFile, dest_parent: Path) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Every check made before anything is written; returns the members to extract.

    Refused, with a one-line DataError: members whose path leaves the destination, symbolic
    links, encrypted members, compression methods Python cannot read (e.g. Deflate64 from
    Windows Explorer), members whose sizes overlap (a "better zip bomb"), more than
    :data:`MAX_ZIP_MEMBERS` members, an uncompressed total over :data:`MAX_ZIP_BYTES`, a
    compression ratio over :data:`MAX_ZIP_RATIO` (whole archive) or :data:`MAX_MEMBER_RATIO`
    (one member) above :data:`RATIO_FLOOR`, and a disk without room for the result.
    ``__MACOSX/`` resource forks are skipped.
    """
    infos = archive.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise DataError(f"{zip_path}: {len(infos):,} members, more than the {MAX_ZIP_MEMBERS:,} a dataset zip may hold")
    members, total, packed = [], 0, 0
    for info in infos:
        path = _member_path(zip_path, info.filename)
        if path.parts and path.parts[0] == "__MACOSX":
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{zip_path}: member {info.filename!r} is a symbolic link; refusing to extract "
                            "(zip the folder without -y / --symlinks)")
        if info.flag_bits & 0x1:
            raise DataError(f"{zip_path}: member {info.filename!r} is encrypted; extract it yourself with the "
                            "password, or zip the dataset without one")
        if info.compress_type not in _COMPRESSIONS:
            raise DataError(f"{zip_path}: member {info.filename!r} uses compression method {info.compress_type}, which "
                            f"Python cannot read (expected {', '.join(_COMPRESSIONS.values())}); re-create the zip "
                            "with standard deflate")
        if info.is_dir():
            members.append((info, path))
            continue
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_FLOOR and ratio > MAX_MEMBER_RATIO:
            raise DataError(f"{zip_path}: member {info.filename!r} expands {ratio:,.0f}x to {_mib(info.file_size)}, "
                            f"more than {MAX_MEMBER_RATIO}x; refusing a likely zip bomb")
        total += info.file_size
        packed += info.compress_size
        members.append((info, path))
    if packed > zip_path.stat().st_size:
        raise DataError(f"{zip_path}: its members claim {_mib(packed)} of compressed data in a "
                        f"{_mib(zip_path.stat().st_size)} file (overlapping members); refusing a likely zip bomb")
    if total > MAX_ZIP_BYTES:
        raise DataError(f"{zip_path}: expands to {_mib(total)}, more than the {_mib(MAX_ZIP_BYTES)} a dataset zip may hold")
    if total > RATIO_FLOOR and total / max(packed, 1) > MAX_ZIP_RATIO:
        raise DataError(f"{zip_path}: expands {total / max(packed, 1):,.0f}x to {_mib(total)}; image datasets barely "
                        f"compress (more than {MAX_ZIP_RATIO}x is refused as a likely zip bomb)")
    free = shutil.disk_usage(dest_parent).free
    if total + FREE_SPACE_MARGIN > free:
        raise DataError(f"{zip_path}: needs {_mib(total)} to extract but {dest_parent} has {_mib(free)} free")
    return members


def _extract_members(archive: zipfile.ZipFile, members, folder: Path) -> None:
    """Write regular files and folders only, each file no longer than its declared size."""
    for info, path in members:
        target = folder.joinpath(*path.parts)
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with archive.open(info) as source, open(target, "wb") as sink:  # plain open: the umask applies
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                if written > info.file_size:
                    raise zipfile.BadZipFile(f"member {info.filename!r} is longer than its declared size")
                sink.write(chunk)


def extract_zip(zip_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract ``zip_path`` into ``dest`` and return the dataset root inside it.

    If ``dest`` already holds a recognisable dataset, nothing is extracted. Otherwise the zip
    is checked (:func:`check_zip`: a real zip, no member escaping the destination, no links,
    no encryption, sane sizes and ratios, room on the disk), extracted into a temporary folder
    next to ``dest``, checked for a course or Market layout (at the top or in one sub-folder),
    and only then moved to ``dest``. On any error ``dest`` is left untouched and the temporary
    folder is removed. Folders and files get the permissions of a plain ``mkdir`` / ``open``.
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
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as error:
        raise DataError(f"{zip_path}: cannot read zip ({error})") from None
    with archive:
        members = check_zip(zip_path, archive, ensure_dir(dest.parent))
        tmp = make_temp_dir(dest.parent, prefix=f".{dest.name}.", suffix=".partial")
        try:
            _extract_members(archive, members, tmp)
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
        except DataError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, NotImplementedError, RuntimeError,
                ValueError) as error:
            shutil.rmtree(tmp, ignore_errors=True)
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise DataError(f"{zip_path}: cannot read zip ({reason})") from None
        except OSError as error:  # a full or read-only disk, or a member path that cannot be made
            shutil.rmtree(tmp, ignore_errors=True)
            if error.errno in _WRITE_ERRNOS:
                raise output_error(dest, error, "cannot extract the zip") from None
            raise DataError(f"{zip_path}: cannot read zip ({error})") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest / found.relative_to(tmp)
