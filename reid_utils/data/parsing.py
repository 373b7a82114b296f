"""Image file-name parsers for the two Market-1501 layouts.

Three name formats occur:

* course training images ``PPPP_cC_NNNNNNNNN.jpg``: person id ``PPPP``, camera ``C`` (1-6),
  e.g. ``0006_c1_004629837.jpg``;
* anonymous course test / query images ``NNNNNN.jpg``, e.g. ``000123.jpg``;
* official Market-1501 images ``PPPP_cCsS_FFFFFF_BB.jpg``, e.g. ``0002_c1s1_000451_03.jpg``
  (camera C, sequence S, frame F, box B). Person id ``-1`` marks junk images
  (``-1_c1s1_000401_03.jpg``) and ``0000`` distractors; both parse, and are flagged by
  :func:`is_junk` / :func:`is_distractor`, never given a training label.

Camera ids are returned 0-based (``c1`` -> 0), as everywhere in the package. Every parser
raises :class:`~reid_utils.errors.DataError` naming the file and the expected pattern.
"""
from __future__ import annotations

import os
import re
from typing import NamedTuple

from ..errors import DataError

#: Person id of Market-1501 junk images (bad detections, ignored by the evaluation).
JUNK_PID = -1
#: Person id of Market-1501 distractors (``0000``: background / partial bodies).
DISTRACTOR_PID = 0
#: Person id of images whose identity is not known (anonymous course test / query images).
UNKNOWN_PID = -2
#: Camera id when unknown.
UNKNOWN_CAMID = -1

#: File extensions treated as images (lower case). Anything else is skipped and reported.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
NUM_CAMERAS = 6  # Market-1501 has cameras c1-c6

_COURSE_TRAIN = re.compile(r"^(?P<pid>\d{1,5})_c(?P<cam>\d)_(?P<frame>\d+)\.(?:jpe?g|png|bmp)$", re.IGNORECASE)
_ANONYMOUS = re.compile(r"^(?P<number>\d+)\.(?:jpe?g|png|bmp)$", re.IGNORECASE)
_MARKET = re.compile(
    r"^(?P<pid>-1|\d{4})_c(?P<cam>\d)s(?P<seq>\d)_(?P<frame>\d{6})_(?P<box>\d{2})\.(?:jpe?g|png|bmp)$",
    re.IGNORECASE,
)

COURSE_TRAIN_PATTERN = "PPPP_cC_NNNNNNNNN.jpg (e.g. 0006_c1_004629837.jpg)"
ANONYMOUS_PATTERN = "NNNNNN.jpg (e.g. 000123.jpg)"
MARKET_PATTERN = "PPPP_cCsS_FFFFFF_BB.jpg (e.g. 0002_c1s1_000451_03.jpg, -1_c1s1_000401_03.jpg)"


class MarketName(NamedTuple):
    """Fields of an official Market-1501 file name."""

    pid: int  # -1 junk, 0 distractor, else the person id
    camid: int  # 0-based
    sequence: int
    frame: int
    box: int


def _name(path: str | os.PathLike) -> str:
    return os.path.basename(os.fspath(path))


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a visible file with an image extension (``desktop.ini``, ``.DS_Store`` -> False)."""
    name = _name(path)
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_junk(pid: int) -> bool:
    return pid == JUNK_PID


def is_distractor(pid: int) -> bool:
    return pid == DISTRACTOR_PID


def is_labelled(pid: int) -> bool:
    """True for a real person id (not junk, distractor or unknown)."""
    return pid > 0


def _camera(path: str | os.PathLike, value: str, pattern: str) -> int:
    cam = int(value)
    if not 1 <= cam <= NUM_CAMERAS:
        raise DataError(f"{path}: camera c{cam} is out of range, expected c1-c{NUM_CAMERAS} in {pattern}")
    return cam - 1


def parse_course_train_name(path: str | os.PathLike) -> tuple[int, int]:
    """``"0006_c1_004629837.jpg"`` -> ``(pid, camid)`` = ``(6, 0)``.

    >>> parse_course_train_name("train/0006_c3_004629837.jpg")
    (6, 2)
    """
    match = _COURSE_TRAIN.match(_name(path))
    if match is None:
        raise DataError(f"{path}: file name does not parse, expected {COURSE_TRAIN_PATTERN}")
    return int(match["pid"]), _camera(path, match["cam"], COURSE_TRAIN_PATTERN)


def parse_anonymous_name(path: str | os.PathLike) -> int:
    """``"000123.jpg"`` -> ``123`` (the image number of a course test / query image)."""
    match = _ANONYMOUS.match(_name(path))
    if match is None:
        raise DataError(f"{path}: file name does not parse, expected {ANONYMOUS_PATTERN}")
    return int(match["number"])


def parse_market_name(path: str | os.PathLike) -> MarketName:
    """``"0002_c1s1_000451_03.jpg"`` -> ``MarketName(pid=2, camid=0, sequence=1, frame=451, box=3)``.

    Junk (``-1_...``) gives ``pid=-1``, distractors (``0000_...``) ``pid=0``.

    >>> parse_market_name("-1_c6s2_000001_01.jpg").pid
    -1
    """
    match = _MARKET.match(_name(path))
    if match is None:
        raise DataError(f"{path}: file name does not parse, expected {MARKET_PATTERN}")
    return MarketName(
        pid=int(match["pid"]),
        camid=_camera(path, match["cam"], MARKET_PATTERN),
        sequence=int(match["seq"]),
        frame=int(match["frame"]),
        box=int(match["box"]),
    )


def format_course_train_name(pid: int, camid: int, number: int) -> str:
    """Inverse of :func:`parse_course_train_name`: ``(6, 0, 4629837)`` -> ``"0006_c1_004629837.jpg"``."""
    return f"{pid:04d}_c{camid + 1}_{number:09d}.jpg"


def format_market_name(pid: int, camid: int, sequence: int = 1, frame: int = 0, box: int = 1) -> str:
    """Inverse of :func:`parse_market_name`: ``(2, 0, 1, 451, 3)`` -> ``"0002_c1s1_000451_03.jpg"``."""
    head = "-1" if pid == JUNK_PID else f"{pid:04d}"
    return f"{head}_c{camid + 1}s{sequence}_{frame:06d}_{box:02d}.jpg"
