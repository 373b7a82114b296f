"""Replace a folder as a whole: after any interruption it holds the old content or the new, never a mix.

The course deliverables are two files that belong together (made by the same model). Writing
each atomically is not enough: a kill between the two writes would leave a new
``classification_test.csv`` beside an old ``reid_test.txt``. So :func:`replace_folder` writes
the new content into a sibling folder and swaps folders. For ``OUT = parent/NAME`` the siblings
are (``TOKEN`` = time in ns + a random suffix, so names sort by age)::

    parent/.NAME.tmp-TOKEN/    being written (incomplete until renamed to .v-TOKEN)
    parent/.NAME.v-TOKEN/      a complete version
    parent/.NAME.link-TOKEN    a symbolic link to a complete version, about to become OUT
    parent/.NAME.old-TOKEN/    the previous OUT (a real folder), moved aside

**Where the file system has symbolic links** (Linux and macOS disks), ``OUT`` is a link to a
version folder and the swap is one ``os.replace`` of a new link over it: at every instant
``OUT`` names a complete version. **Without them** (a Google Drive mount on Colab, Windows), and
once when ``OUT`` is still a real folder, the swap is two renames (``OUT`` aside to
``.NAME.old-TOKEN``, the new version to ``OUT``); between them ``OUT`` is briefly absent and
both complete versions exist.

**Recovery rule** (:func:`recover`, run by every :func:`replace_folder` before it writes):

1. If ``OUT`` is missing (a kill between the two renames, or a dangling link), the newest of
   these becomes ``OUT``: a ``.link-`` to an existing version (the new content), else a
   ``.v-`` version (the new content), else an ``.old-`` folder (the previous content).
2. Every other sibling of the list above is deleted.

Every step leaves ``OUT`` (after the rule) equal to the previous or the new content: the
staging folder is only renamed to ``.v-`` once complete, and ``OUT`` only ever becomes a
complete version or the previous ``OUT``. ``tests/test_export_pair.py`` kills the process
before each of these file-system calls in turn and checks this.

``OUT`` must hold nothing but the files a run writes (``allowed``): it is replaced as a whole,
so a folder with other files in it is refused rather than emptied.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from ..errors import ExportError, OutputError
from ..io import check_output_path, ensure_dir, fsync_dir, output_error

#: Files an operating system drops into folders; a replaced folder may hold them.
OS_CLUTTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
KINDS = ("tmp", "v", "link", "old")


def _token() -> str:
    return f"{time.time_ns():020d}{secrets.token_hex(3)}"


def siblings(out: Path) -> dict[str, list[Path]]:
    """The swap's sibling entries of ``out`` by kind (see the module docstring), oldest first."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.({'|'.join(KINDS)})-(\d{{20}}[0-9a-f]{{6}})$")
    found: dict[str, list[tuple[str, Path]]] = {kind: [] for kind in KINDS}
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(out.parent):
            match = pattern.match(entry.name)
            if match:
                found[match[1]].append((match[2], out.parent / entry.name))
    return {kind: [path for _, path in sorted(items)] for kind, items in found.items()}


def _link_target(out: Path) -> Path | None:
    """The version folder ``out`` links to, when ``out`` is one of our links."""
    if not out.is_symlink():
        return None
    target = Path(os.readlink(out))
    return out.parent / target.name if target.parent in (Path("."), Path("")) else None


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


def recover(out: str | os.PathLike) -> Path | None:
    """Apply the recovery rule to ``out`` (module docstring); returns what ``out`` now holds
    (the folder, resolved through the link) or None when there is nothing."""
    out = _absolute(out)
    found = siblings(out)
    if out.is_symlink() and not out.exists():  # dangling
        out.unlink()
    if not os.path.lexists(out):
        links = [link for link in found["link"] if link.exists()]
        if links:
            os.replace(links[-1], out)
        elif found["v"]:
            os.rename(found["v"][-1], out)
        elif found["old"]:
            os.rename(found["old"][-1], out)
        fsync_dir(out.parent)
    _remove_stale_lock(out)
    keep = _link_target(out)
    for paths in found.values():
        for path in paths:
            if path != keep and os.path.lexists(path):
                _remove(path)
    return out.resolve() if out.exists() else None


def _lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def _remove_stale_lock(out: Path) -> None:
    """Delete ``.NAME.lock`` when no export holds it (a killed export cannot delete its own)."""
    path = _lock_path(out)
    if fcntl is None or not path.exists():
        return
    with contextlib.suppress(OSError), open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises (suppressed) while it is held
        path.unlink()


def _absolute(out: str | os.PathLike) -> Path:
    if Path(out).name in ("", ".", ".."):
        raise OutputError(f"{out}: name a folder of its own for the submission (it is replaced as a whole)")
    path = Path(os.path.abspath(out))
    try:
        cwd = Path.cwd()
    except OSError:
        cwd = None
    if cwd is not None and (cwd == path or path in cwd.parents):
        raise OutputError(f"{out}: is the working folder or holds it; name a folder of its own for the submission")
    return path


def check_replaceable(out: str | os.PathLike, allowed: Iterable[str]) -> None:
    """Raise unless ``out`` is missing or a folder holding only ``allowed`` names (and OS clutter)."""
    out = _absolute(out)
    check_output_path(out)
    if not os.path.lexists(out):
        return
    if not out.is_dir():
        raise OutputError(f"{out}: is a file, expected a folder for the submission")
    allowed = set(allowed) | OS_CLUTTER
    try:
        unknown = sorted(name for name in os.listdir(out) if name not in allowed)
    except OSError as error:
        raise output_error(out, error, "cannot read the folder") from None
    if unknown:
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise ExportError(
            f"{out}: holds {unknown[0]!r}{more}, which a submission does not; the folder is replaced as a "
            f"whole, so choose a new or empty folder"
        )


def replace_folder(out: str | os.PathLike, write: Callable[[Path], None], allowed: Iterable[str]) -> Path:
    """Fill a new folder with ``write(folder)`` and make it ``out`` in one swap (module docstring).

    ``allowed``: the names ``write`` creates; an existing ``out`` holding anything else is
    refused (:class:`ExportError`) before anything is written. If ``write`` raises, ``out`` is
    untouched and the new folder is removed. Returns ``out``.
    """
    out = _absolute(out)
    parent = ensure_dir(out.parent)
    with _exclusive(out):  # a second export into the same folder would delete our staging folder
        return _replace_folder(out, parent, write, allowed)


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold ``parent/.NAME.lock`` while ``out`` is replaced; a second writer gets a one-line
    error instead of a half-deleted staging folder. (Where ``fcntl`` is missing, Windows, no lock.)"""
    if fcntl is None:
        yield
        return
    path = _lock_path(out)
    try:
        handle = open(path, "a")
    except OSError as error:
        raise output_error(out.parent, error, "cannot create a lock file in") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputError(f"{out}: another export is writing this folder right now; wait for it to finish") from None
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()  # while still held: nothing is left beside the folder
    finally:
        handle.close()  # releases the lock


def _replace_folder(out: Path, parent: Path, write: Callable[[Path], None], allowed: Iterable[str]) -> Path:
    try:
        recover(out)
    except OSError as error:
        raise output_error(out, error, "cannot tidy up after an earlier interrupted run") from None
    check_replaceable(out, allowed)
    token = _token()
    stage = parent / f".{out.name}.tmp-{token}"
    version = parent / f".{out.name}.v-{token}"
    try:
        stage.mkdir()  # a plain mkdir: the umask applies
    except OSError as error:
        raise output_error(parent, error, "cannot create a folder in") from None
    try:
        write(stage)
        for path in stage.iterdir():
            _fsync_file(path)
        fsync_dir(stage)
        os.rename(stage, version)
    except BaseException as error:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, (FileNotFoundError, InterruptedError)):
            raise output_error(out, error) from None
        raise
    try:
        _install(out, version, token)
    except OSError as error:
        raise output_error(out, error, "cannot swap in the new folder") from None
    return out


def _install(out: Path, version: Path, token: str) -> None:
    """Make ``version`` the content of ``out``, then remove what it replaced."""
    parent = out.parent
    link = parent / f".{out.name}.link-{token}"
    try:
        os.symlink(version.name, link, target_is_directory=True)  # relative: survives moving parent
    except (OSError, NotImplementedError):
        link = None
    if os.path.lexists(out) and not out.is_symlink():  # a real folder: move it aside
        os.rename(out, parent / f".{out.name}.old-{token}")
    if link is not None:
        os.replace(link, out)
    else:
        if out.is_symlink():
            out.unlink()
        os.rename(version, out)
    fsync_dir(parent)
    with contextlib.suppress(OSError):
        recover(out)  # removes the previous version and the old folder


def _fsync_file(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())
