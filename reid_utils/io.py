"""Atomic file writes that honour the umask, output folders, and where the source checkout is.

A write goes to a temporary file in the destination folder, is flushed and fsync'ed, and then
``os.replace`` moves it over the destination. An interruption at any point (Ctrl-C, a Colab
disconnect, SIGKILL) leaves either the old file or the new one, never a half-written one.

Permissions are those of a plain ``open()``: a new file gets ``0o666 & ~umask`` (``tempfile``
would make it ``0o600``, unreadable to a grader on a shared machine), a replaced file keeps
its mode, and a folder made here gets ``0o777 & ~umask``.

An output path that cannot be written (a file where a folder should be, a read-only folder, a
full disk) raises :class:`~reid_utils.errors.OutputError` naming the path, not an ``OSError``.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

import torch

from .errors import OutputError

#: errno values of a full or read-only disk.
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG, errno.EROFS}
#: errno values that mean "this output path cannot be written" (not a bug in the program).
OUTPUT_ERRNOS = _FULL_ERRNOS | {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                                errno.ENAMETOOLONG}


def _proc_umask() -> int | None:
    """The umask from ``/proc/self/status`` (Linux): read without changing it, thread-safe."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    return None


def _import_umask() -> int:
    value = _proc_umask()
    if value is None:  # elsewhere: set and restore it, once
        value = os.umask(0o022)
        os.umask(value)
    return value


_IMPORT_UMASK = _import_umask()


def current_umask() -> int:
    """The umask now (``/proc/self/status`` on Linux; elsewhere the value at import)."""
    value = _proc_umask()
    return _IMPORT_UMASK if value is None else value


def new_file_mode() -> int:
    """Mode of a file made by a plain ``open()``: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def new_folder_mode() -> int:
    """Mode of a folder made by a plain ``mkdir``: ``0o777 & ~umask``."""
    return 0o777 & ~current_umask()


def output_error(path: str | os.PathLike, error: OSError, doing: str = "cannot write") -> OutputError:
    """One-line OutputError for an OSError about ``path``."""
    reason = error.strerror or type(error).__name__
    if isinstance(error, (FileExistsError, NotADirectoryError)):
        reason += " (a file is in the way: a folder was expected there)"
    return OutputError(f"{path}: {doing} ({reason})")


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` (and its parents) like ``mkdir -p``; OutputError when a file is in
    the way or the parent is read-only."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise output_error(path, error, "cannot create the folder") from None
    if not path.is_dir():
        raise OutputError(f"{path}: cannot create the folder (a file is in the way: a folder was expected there)")
    return path


def make_temp_dir(parent: str | os.PathLike, prefix: str, suffix: str = "") -> Path:
    """``tempfile.mkdtemp`` in ``parent`` with the permissions of a plain ``mkdir`` (not 0700)."""
    parent = ensure_dir(parent)
    try:
        folder = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    except OSError as error:
        raise output_error(parent, error, "cannot create a folder in") from None
    os.chmod(folder, new_folder_mode())
    return folder


def check_output_path(path: str | os.PathLike) -> Path:
    """Check, without creating anything, that ``path`` could be created: its nearest existing
    ancestor must be a writable folder. OutputError naming the obstacle otherwise (so a long
    job fails at its start, not when it saves its result)."""
    path = Path(os.path.abspath(path))
    ancestor = path.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{ancestor}: is a file, but {path} needs a folder there")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{ancestor}: folder is not writable, so {path} cannot be created there")
    return path


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` if needed and check that files can be made in it (by making and
    removing an empty folder there); OutputError naming it otherwise."""
    probe = make_temp_dir(folder, prefix=".write-check-")
    probe.rmdir()
    return Path(folder)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make renames in ``folder`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on a clean exit, move it over ``path``.

    If the block raises, the temporary file is removed and ``path`` is left untouched. The
    file gets the mode a plain ``open()`` would give it (see the module docstring). A path that
    cannot be written raises :class:`~reid_utils.errors.OutputError`; so does a full disk while
    the block writes.
    """
    path = Path(path)
    ensure_dir(path.parent)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, expected a file path to write")
    binary = "b" in mode
    try:
        mode_bits = stat.S_IMODE(path.stat().st_mode) if path.exists() else new_file_mode()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise output_error(path, error) from None
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as f:
            os.chmod(tmp, mode_bits)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
            raise output_error(path, error) from None
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def repo_root() -> Path | None:
    """The source checkout holding this package, or None for an installed copy."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() and (root / "reid_utils").is_dir() else None
