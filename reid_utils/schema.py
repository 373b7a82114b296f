"""The attribute schema of Market-1501_Attribute, in its three forms.

This module is the single owner of attribute names, orders and encodings.

1. **course** form, shape ``(N, 27)``: the columns of ``annotations_train.csv`` (and of the
   official ``market_attribute.mat``), 1/2 encoded (1 = no / first value, 2 = yes / second
   value), ``age`` in 1-4.
2. **groups** form, shape ``(N, 12)``: one class index per attribute group of the APR-Net
   report: ``age`` (4 classes), nine binary groups (2 classes), ``upcolour`` (8 colours +
   multicolour = 9 classes) and ``downcolour`` (9 colours + multicolour = 10 classes).
   Models that predict this form output ``(N, 41)`` logits: the groups' logits side by side,
   see :data:`GROUP_SLICES`.
3. **binary** form, shape ``(N, 30)``: age one-hot (4) followed by the other 26 course columns
   as 0/1. Models that predict this form (BCE heads) output ``(N, 30)`` logits.

Conversions are lossless except one case, documented here and in :func:`course_to_groups`:
when two or more colours of one body part are marked, the groups form cannot hold them and
records ``multicolour`` (the wearer does wear several colours). The course release never
does this (checked in the tests); the binary form keeps such rows exactly.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DataError

AGE_CLASSES = ("young", "teenager", "adult", "old")
UP_COLOURS = ("black", "white", "red", "purple", "yellow", "gray", "blue", "green")
DOWN_COLOURS = ("black", "white", "pink", "purple", "yellow", "gray", "blue", "green", "brown")

#: The nine binary course columns and their (value 1, value 2) meanings.
BINARY_ATTRIBUTES = {
    "backpack": ("no", "yes"),
    "bag": ("no", "yes"),
    "handbag": ("no", "yes"),
    "clothes": ("dress", "pants"),
    "down": ("long", "short"),
    "up": ("long", "short"),
    "hair": ("short", "long"),
    "hat": ("no", "yes"),
    "gender": ("male", "female"),
}

#: The 27 course columns in ``annotations_train.csv`` order (``id`` excluded).
COURSE_COLUMNS: tuple[str, ...] = (
    ("age",)
    + tuple(BINARY_ATTRIBUTES)
    + tuple("up" + c for c in UP_COLOURS)
    + tuple("down" + c for c in DOWN_COLOURS)
)

#: The 30 binary columns: age one-hot, then the other 26 course columns.
BINARY_COLUMNS: tuple[str, ...] = tuple("age_" + a for a in AGE_CLASSES) + COURSE_COLUMNS[1:]


@dataclass(frozen=True)
class AttributeGroup:
    """One of the 12 APR-Net attribute groups."""

    name: str
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


#: The 12 groups in APR-Net order (which is also the course column order).
GROUPS: tuple[AttributeGroup, ...] = (
    (AttributeGroup("age", AGE_CLASSES),)
    + tuple(AttributeGroup(name, values) for name, values in BINARY_ATTRIBUTES.items())
    + (
        AttributeGroup("upcolour", UP_COLOURS + ("multicolour",)),
        AttributeGroup("downcolour", DOWN_COLOURS + ("multicolour",)),
    )
)
GROUP_NAMES: tuple[str, ...] = tuple(g.name for g in GROUPS)
NUM_GROUPS = len(GROUPS)  # 12
NUM_GROUP_LOGITS = sum(g.num_classes for g in GROUPS)  # 41
NUM_BINARY = len(BINARY_COLUMNS)  # 30

#: Column slice of each group inside a ``(N, 41)`` groups-form logit tensor.
GROUP_SLICES: tuple[slice, ...] = tuple(
    slice(start, start + g.num_classes)
    for start, g in zip(np.cumsum([0] + [g.num_classes for g in GROUPS[:-1]]).tolist(), GROUPS)
)

#: Binary column j says "group BINARY_COLUMN_GROUP[j] has class BINARY_COLUMN_CLASS[j]": the age
#: one-hot (group 0, classes 0-3), nine yes/no groups (class 1 = yes), eight upper colours
#: (group 10) and nine lower colours (group 11); multicolour is "no colour column set".
BINARY_COLUMN_GROUP: tuple[int, ...] = (0,) * 4 + tuple(range(1, 10)) + (10,) * 8 + (11,) * 9
BINARY_COLUMN_CLASS: tuple[int, ...] = tuple(range(4)) + (1,) * 9 + tuple(range(8)) + tuple(range(9))

_UP = slice(10, 18)  # upper colours inside the course / binary-without-age columns
_DOWN = slice(18, 27)
FORMS = ("groups", "binary")


def num_attribute_logits(form: str) -> int:
    """Width of a model's attribute output for ``form`` (``"groups"``: 41, ``"binary"``: 30)."""
    check_form(form)
    return NUM_GROUP_LOGITS if form == "groups" else NUM_BINARY


def labelled_rows(groups: np.ndarray | torch.Tensor):
    """``(N,)`` bool: the rows of ``(N, 12)`` groups-form attributes that are labelled.

    Labels are per identity, so a row is all known or all ``-1`` (junk, distractors, test
    images); the one rule used everywhere is "every group known".
    """
    return (groups >= 0).all(axis=1) if isinstance(groups, np.ndarray) else (groups >= 0).all(dim=1)


def check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"attribute form must be one of {FORMS}, got {form!r}")


def validate_course(course: np.ndarray, source: str = "attributes") -> np.ndarray:
    """Check a course-form array (shape, 1/2 encoding, age 1-4) and return it as int64.

    ``source`` names the file in the error message. Errors name the first bad row and column.
    """
    course = np.asarray(course)
    if course.ndim != 2 or course.shape[1] != len(COURSE_COLUMNS):
        raise DataError(f"{source}: expected {len(COURSE_COLUMNS)} attribute columns, got shape {course.shape}")
    course = course.astype(np.int64)
    check_course_ranges(course, lambda row: f"{source}: row {row}")
    return course


def check_course_ranges(course: np.ndarray, where: Callable[[int], str], error: type[Exception] = DataError) -> None:
    """Raise ``error`` at the first course-form value outside 1-4 (age) or 1-2 (the others).

    ``where(row)`` opens the message (``"my.csv: row 3"``): the annotation files, attribute
    arrays and the submission CSV share this one rule and one message.
    """
    hi = np.full(len(COURSE_COLUMNS), 2)
    hi[0] = 4
    bad = (course < 1) | (course > hi)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        expected = "1-4" if col == 0 else "1 (no) or 2 (yes)"
        raise error(f"{where(row)} column {COURSE_COLUMNS[col]!r} has value {course[row, col]}, expected {expected}")


def _colour_index(bits: np.ndarray) -> np.ndarray:
    """(N, C) 0/1 colour bits -> class index; none or several marked -> C (multicolour)."""
    marked = bits.sum(axis=1)
    return np.where(marked == 1, bits.argmax(axis=1), bits.shape[1])


def course_to_groups(course: np.ndarray) -> np.ndarray:
    """``(N, 27)`` course form -> ``(N, 12)`` class indices.

    Lossy only when several colours of one body part are marked: that row gets multicolour.

    >>> course_to_groups(np.array([[3, 1, 2, 1, 2, 2, 1, 1, 1, 2] + [1]*8 + [1, 2] + [1]*7]))
    array([[2, 0, 1, 0, 1, 1, 0, 0, 0, 1, 8, 1]])
    """
    course = validate_course(course)
    bits = course - 1
    return np.concatenate(
        [bits[:, :10], _colour_index(bits[:, _UP])[:, None], _colour_index(bits[:, _DOWN])[:, None]],
        axis=1,
    )


def groups_to_course(groups: np.ndarray) -> np.ndarray:
    """``(N, 12)`` class indices -> ``(N, 27)`` course form (lossless)."""
    groups = validate_groups(groups)
    n = len(groups)
    up = np.zeros((n, len(UP_COLOURS) + 1), dtype=np.int64)
    up[np.arange(n), groups[:, 10]] = 1
    down = np.zeros((n, len(DOWN_COLOURS) + 1), dtype=np.int64)
    down[np.arange(n), groups[:, 11]] = 1
    bits = np.concatenate([groups[:, :10], up[:, :-1], down[:, :-1]], axis=1)
    return bits + 1


def validate_groups(groups: np.ndarray, source: str = "attribute groups") -> np.ndarray:
    groups = np.asarray(groups)
    if groups.ndim != 2 or groups.shape[1] != NUM_GROUPS:
        raise DataError(f"{source}: expected {NUM_GROUPS} group columns, got shape {groups.shape}")
    groups = groups.astype(np.int64)
    sizes = np.array([g.num_classes for g in GROUPS])
    bad = (groups < 0) | (groups >= sizes)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(
            f"{source}: row {row} group {GROUP_NAMES[col]!r} has class {groups[row, col]}, "
            f"expected 0-{sizes[col] - 1}"
        )
    return groups


def course_to_binary(course: np.ndarray) -> np.ndarray:
    """``(N, 27)`` course form -> ``(N, 30)`` 0/1 (lossless)."""
    course = validate_course(course)
    age = np.eye(len(AGE_CLASSES), dtype=np.int64)[course[:, 0] - 1]
    return np.concatenate([age, course[:, 1:] - 1], axis=1)


def binary_to_course(binary: np.ndarray) -> np.ndarray:
    """``(N, 30)`` 0/1 -> ``(N, 27)`` course form (lossless; age must be one-hot)."""
    binary = np.asarray(binary)
    if binary.ndim != 2 or binary.shape[1] != NUM_BINARY:
        raise DataError(f"binary attributes: expected {NUM_BINARY} columns, got shape {binary.shape}")
    if not np.isin(binary, (0, 1)).all():
        raise DataError("binary attributes: expected only 0/1 values")
    binary = binary.astype(np.int64)
    age_hot = binary[:, :4].sum(axis=1)
    if (age_hot != 1).any():
        row = int(np.flatnonzero(age_hot != 1)[0])
        raise DataError(f"binary attributes: row {row} has {age_hot[row]} age classes set, expected exactly 1")
    return np.concatenate([binary[:, :4].argmax(axis=1)[:, None] + 1, binary[:, 4:] + 1], axis=1)


def groups_to_binary(groups: np.ndarray) -> np.ndarray:
    """``(N, 12)`` -> ``(N, 30)`` (lossless)."""
    return course_to_binary(groups_to_course(groups))


def binary_to_groups(binary: np.ndarray) -> np.ndarray:
    """``(N, 30)`` -> ``(N, 12)``; several colours of one body part become multicolour."""
    return course_to_groups(binary_to_course(binary))


# ---------------------------------------------------------------------------------------------
# Model outputs -> per-group probabilities and predictions (torch, batched)


def group_probabilities(logits: torch.Tensor, form: str) -> list[torch.Tensor]:
    """Attribute logits of either form -> a list of 12 ``(N, C_g)`` probability tensors.

    * ``groups`` form ``(N, 41)``: a softmax per group.
    * ``binary`` form ``(N, 30)``: sigmoids. Binary groups give ``[1 - p, p]``; age gives the
      four sigmoids renormalised; a colour group gives its colours' sigmoids plus
      ``multicolour = prod(1 - p_c)`` (no single colour present), renormalised.
    """
    check_form(form)
    logits = logits.float()
    if form == "groups":
        if logits.shape[-1] != NUM_GROUP_LOGITS:
            raise ValueError(f"groups-form logits must have {NUM_GROUP_LOGITS} columns, got {tuple(logits.shape)}")
        return [logits[:, s].softmax(dim=1) for s in GROUP_SLICES]
    if logits.shape[-1] != NUM_BINARY:
        raise ValueError(f"binary-form logits must have {NUM_BINARY} columns, got {tuple(logits.shape)}")
    p = logits.sigmoid()
    age = p[:, :4] / p[:, :4].sum(dim=1, keepdim=True).clamp_min(1e-12)
    binaries = [torch.stack([1 - p[:, i], p[:, i]], dim=1) for i in range(4, 13)]

    def colours(q: torch.Tensor) -> torch.Tensor:
        multi = (1 - q).prod(dim=1, keepdim=True)
        full = torch.cat([q, multi], dim=1)
        return full / full.sum(dim=1, keepdim=True).clamp_min(1e-12)

    return [age, *binaries, colours(p[:, 13:21]), colours(p[:, 21:30])]


def predict_groups(logits: torch.Tensor, form: str) -> torch.Tensor:
    """Attribute logits -> ``(N, 12)`` predicted class indices (argmax per group)."""
    return torch.stack([p.argmax(dim=1) for p in group_probabilities(logits, form)], dim=1)


def targets_for_form(groups: torch.Tensor, form: str) -> torch.Tensor:
    """``(N, 12)`` class-index targets -> what a loss of ``form`` expects.

    ``groups``: returned unchanged (int64). ``binary``: ``(N, 30)`` float 0/1.
    """
    check_form(form)
    if form == "groups":
        return groups.long()
    return torch.from_numpy(groups_to_binary(groups.cpu().numpy())).to(groups.device, torch.float32)


def group_index(name: str) -> int:
    """Position of a group by name, with a helpful error."""
    try:
        return GROUP_NAMES.index(name)
    except ValueError:
        raise KeyError(f"unknown attribute group {name!r}; valid: {', '.join(GROUP_NAMES)}") from None
