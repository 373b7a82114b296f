"""User-facing errors.

Every problem with something a user gave us (a folder, a file, a CSV row, a config value,
a checkpoint, an output path) raises a subclass of :class:`ReidError`. Its message is one line
that names the thing and says what was expected. The command line prints that line and exits
with code 2, without a traceback; notebooks show it as an ordinary exception.

The one-line promise is kept here, not by every caller: a message with line breaks (a
third-party error quoted inside ours, or the text a DataLoader worker sends back, which holds
the worker's whole traceback) is reduced to one line when the error is made.
"""
from __future__ import annotations

import re

#: ``reid_utils.errors.DataError: message`` at the end of a quoted traceback.
_QUOTED_ERROR = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Za-z_]\w*(?:Error|Exception): (?P<message>.+)$")


def one_line(message: str) -> str:
    """``message`` on one line.

    A quoted traceback (``Caught DataError in DataLoader worker process 0. Original
    Traceback ... reid_utils.errors.DataError: img.jpg: cannot decode image``) becomes its
    last line without the class name (``img.jpg: cannot decode image``); other line breaks
    become ``" | "``.

    >>> one_line("a.csv: bad value\\n  (line 3)")
    'a.csv: bad value | (line 3)'
    """
    text = str(message)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else text.strip()
    if any(line.startswith("Traceback (most recent call last)") or "Original Traceback" in line for line in lines):
        match = _QUOTED_ERROR.match(lines[-1])
        return match["message"] if match else lines[-1]
    return " | ".join(lines)


class ReidError(ValueError):
    """A problem with user input, explained in one line."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(one_line(str(message)), *args)


class DataError(ReidError):
    """A dataset folder, image, file name, annotation CSV, ``.mat`` file or zip is not as expected."""


class ConfigError(ReidError):
    """An unknown or out-of-range hyperparameter."""


class CheckpointError(ReidError):
    """A checkpoint file is missing, damaged, or does not match the requested model/config."""


class ExportError(ReidError):
    """A submission file would be malformed, or a submission folder cannot be replaced."""


class OutputError(ReidError):
    """An output path cannot be written: a file where a folder should be, a read-only or full disk."""


class TrainingError(RuntimeError):
    """Training cannot continue (for example the loss became NaN or Inf)."""
