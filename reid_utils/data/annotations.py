"""Attribute annotation files: the course ``annotations_train.csv`` and the official ``market_attribute.mat``.

Both are read into the course form (27 columns, 1/2 encoded, age 1-4; see
:mod:`reid_utils.schema`) keyed by person id, and validated on the way: missing, unknown
or duplicated columns / fields, values that are not integers or are out of range, and
duplicated ids raise :class:`~reid_utils.errors.DataError` naming the file, line (or split and
person) and column.
"""
from __future__ import annotations

import csv
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from ..schema import COURSE_COLUMNS, check_course_ranges

COURSE_CSV = "annotations_train.csv"
MARKET_MAT = "market_attribute.mat"


#: Reads a .mat file in a child process and pickles what scipy made of it to stdout.
_LOADMAT = "import pickle, sys, scipy.io; pickle.dump(scipy.io.loadmat(sys.argv[1], simplify_cells=True), sys.stdout.buffer)"


def _loadmat_isolated(mat_path: Path) -> dict:
    """``scipy.io.loadmat(mat_path, simplify_cells=True)`` in a child process.

    scipy's compiled MATLAB reader can crash the interpreter (a segmentation fault, no
    exception) on a damaged file; the CI's fuzz test found one. The child takes the crash,
    and the caller gets a :class:`DataError`. The file is read once per dataset, so the
    second of process start-up is cheap.
    """
    child = subprocess.run([sys.executable, "-c", _LOADMAT, str(mat_path)], capture_output=True, check=False)
    if child.returncode == 0:
        return pickle.loads(child.stdout)  # written by the child above, not read from the file
    if child.returncode < 0:
        try:
            why = f"the MATLAB reader crashed on it ({signal.Signals(-child.returncode).name})"
        except ValueError:
            why = f"the MATLAB reader was killed by signal {-child.returncode}"
    else:
        lines = child.stderr.decode("utf-8", "replace").strip().splitlines()
        why = lines[-1] if lines else f"the MATLAB reader exited with status {child.returncode}"
    raise DataError(f"{mat_path}: cannot read as a MATLAB .mat file ({why}); is it damaged? download it again")


#: Values beyond this cannot be an id or a label (and would not fit an int64 array).
_MAX_VALUE = 10**9


def _integer(text: str) -> int:
    """``"2"`` or ``"2.0"`` -> 2; anything else (``"1.5"``, ``"nan"``, ``"1e400"``) raises ValueError."""
    try:
        return int(text)
    except ValueError:
        number = float(text)  # raises ValueError for non-numbers
        if not number.is_integer():  # also nan and inf
            raise
        return int(number)


def _integer_column(values, describe: Callable[[int], str]) -> np.ndarray:
    """A numeric column read from a ``.mat`` file -> int64; strings, fractions (``1.5``), NaN
    and huge values raise DataError naming the first bad entry (``describe(i)``)."""
    array = np.asarray(values, dtype=object).reshape(-1)
    result = np.empty(len(array), dtype=np.int64)
    for i, value in enumerate(array.tolist()):
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        ok = ok and np.isfinite(value) and float(value).is_integer() and abs(value) <= _MAX_VALUE
        if not ok:
            raise DataError(f"{describe(i)} has value {value!r:.40}, expected an integer")
        result[i] = int(value)
    return result


def read_course_annotations(csv_path: str | os.PathLike) -> dict[int, tuple[int, np.ndarray]]:
    """Read ``annotations_train.csv`` -> ``{pid: (line number, (27,) course row)}``.

    Columns are matched by name (any order); ``id`` plus exactly the 27 course columns are
    required. Errors name the file, the line and the column.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: annotation file is missing (expected {COURSE_CSV} with id + 27 columns)")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{csv_path}: not a readable UTF-8 CSV file ({error})") from None
    if not rows:
        raise DataError(f"{csv_path}: file is empty, expected a header 'id,{','.join(COURSE_COLUMNS[:3])},...'")
    header = [name.strip() for name in rows[0][1]]
    if len(header) == 1 and ";" in header[0]:
        raise DataError(f"{csv_path}: values are separated by ';', expected commas (id,age,backpack,...)")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DataError(f"{csv_path}: column(s) {', '.join(duplicated)} appear more than once in the header")
    expected = ("id",) + COURSE_COLUMNS
    missing = [name for name in expected if name not in header]
    unknown = [name for name in header if name not in expected]
    if missing or unknown:
        parts = ([f"missing column(s) {', '.join(missing)}"] if missing else []) + (
            [f"unknown column(s) {', '.join(unknown)}"] if unknown else []
        )
        raise DataError(f"{csv_path}: {'; '.join(parts)} (expected id + the 27 course columns)")
    order = [header.index(name) for name in expected]
    lines, values = [], []
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise DataError(f"{csv_path} line {line}: {len(row)} values, expected {len(header)} (one per column)")
        parsed = []
        for col in order:
            cell = row[col].strip()
            try:
                value = _integer(cell)
            except ValueError:
                raise DataError(
                    f"{csv_path} line {line}: column {header[col]!r} has value {cell!r:.40}, expected an integer"
                ) from None
            if abs(value) > _MAX_VALUE:  # would not even fit the int64 table
                expected = {"id": "a person id", "age": "1-4"}.get(header[col], "1 (no) or 2 (yes)")
                raise DataError(
                    f"{csv_path} line {line}: column {header[col]!r} has value {cell!r:.40}, expected {expected}"
                )
            parsed.append(value)
        lines.append(line)
        values.append(parsed)
    if not values:
        raise DataError(f"{csv_path}: no annotation rows after the header")
    table = np.asarray(values, dtype=np.int64)
    pids, course = table[:, 0], table[:, 1:]
    if (pids < 1).any():
        i = int(np.flatnonzero(pids < 1)[0])
        raise DataError(f"{csv_path} line {lines[i]}: id {pids[i]} is not a person id, expected a positive integer")
    check_course_ranges(course, lambda i: f"{csv_path} line {lines[i]} (id {pids[i]}):")
    annotations: dict[int, tuple[int, np.ndarray]] = {}
    for line, pid, row in zip(lines, pids.tolist(), course):
        if pid in annotations:
            raise DataError(f"{csv_path} line {line}: id {pid} already annotated on line {annotations[pid][0]}")
        annotations[pid] = (line, row)
    return annotations


def read_market_attributes(mat_path: str | os.PathLike) -> dict[str, dict[int, np.ndarray]]:
    """Read ``market_attribute.mat`` -> ``{"train": {pid: (27,) course row}, "test": {...}}``.

    Fields are read by name: their order differs between ``train`` and ``test`` in the real
    file. Each split needs the 27 course fields (1xN) and ``image_index`` (1xN cell of
    4-digit person id strings); errors name the file, split, field and person id.
    """
    mat_path = Path(mat_path)
    if not mat_path.is_file():
        raise DataError(f"{mat_path}: attribute file is missing (expected {MARKET_MAT})")
    mat = _loadmat_isolated(mat_path)
    top = mat.get("market_attribute")
    if not isinstance(top, dict):
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"{mat_path}: expected a struct variable 'market_attribute', found {found}")
    expected = set(COURSE_COLUMNS) | {"image_index"}
    result = {}
    for split in ("train", "test"):
        part = top.get(split)
        if not isinstance(part, dict):
            raise DataError(f"{mat_path}: market_attribute has no struct field {split!r}")
        missing = [name for name in COURSE_COLUMNS + ("image_index",) if name not in part]
        unknown = sorted(set(part) - expected)
        if missing or unknown:
            what = ([f"missing field(s) {', '.join(missing)}"] if missing else []) + (
                [f"unknown field(s) {', '.join(unknown)}"] if unknown else []
            )
            raise DataError(f"{mat_path}: market_attribute.{split}: {'; '.join(what)}")
        ids = [str(x).strip() for x in np.atleast_1d(np.asarray(part["image_index"], dtype=object))]
        pids = []
        for i, text in enumerate(ids):
            if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= _MAX_VALUE:
                raise DataError(
                    f"{mat_path}: market_attribute.{split}.image_index[{i}] is {text!r}, expected a 4-digit person id"
                )
            pids.append(int(text))
        columns = []
        for name in COURSE_COLUMNS:
            try:
                column = np.atleast_1d(np.asarray(part[name], dtype=object)).reshape(-1)
            except ValueError:  # ragged nested cells
                column = np.array([part[name]], dtype=object)
            if len(column) != len(pids):
                raise DataError(
                    f"{mat_path}: market_attribute.{split}.{name} has {len(column)} values, "
                    f"expected {len(pids)} (one per image_index entry)"
                )
            columns.append(_integer_column(
                column, lambda i, name=name: f"{mat_path}: market_attribute.{split}.{name}[{i}] (person {ids[i]})"))
        course = np.stack(columns, axis=1)
        check_course_ranges(course, lambda i: f"{mat_path}: market_attribute.{split} person {ids[i]}:")
        duplicated = sorted({p for p in pids if pids.count(p) > 1}) if len(set(pids)) != len(pids) else []
        if duplicated:
            raise DataError(f"{mat_path}: market_attribute.{split}: person id {duplicated[0]:04d} appears more than once")
        result[split] = dict(zip(pids, course))
    return result
