"""Attribute schema: sizes, lossless round trips, the documented lossy case, errors, and the real CSV."""
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from reid_utils.data.annotations import read_course_annotations
from reid_utils.errors import DataError
from reid_utils.schema import (
    BINARY_COLUMNS,
    COURSE_COLUMNS,
    GROUP_NAMES,
    GROUP_SLICES,
    GROUPS,
    NUM_BINARY,
    NUM_GROUP_LOGITS,
    binary_to_course,
    binary_to_groups,
    course_to_binary,
    course_to_groups,
    group_index,
    group_probabilities,
    groups_to_binary,
    groups_to_course,
    num_attribute_logits,
    predict_groups,
    targets_for_form,
    validate_course,
    validate_groups,
)

COURSE_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "market1501_course" / "annotations_train.csv"
SIZES = [g.num_classes for g in GROUPS]


def test_sizes():
    assert len(COURSE_COLUMNS) == 27 and COURSE_COLUMNS[0] == "age" and COURSE_COLUMNS[-1] == "downbrown"
    assert len(GROUPS) == 12 and GROUP_NAMES[-2:] == ("upcolour", "downcolour")
    assert SIZES == [4] + [2] * 9 + [9, 10]
    assert NUM_GROUP_LOGITS == 41 == num_attribute_logits("groups")
    assert NUM_BINARY == 30 == len(BINARY_COLUMNS) == num_attribute_logits("binary")
    covered = [i for s in GROUP_SLICES for i in range(s.start, s.stop)]
    assert covered == list(range(41))
    with pytest.raises(ValueError, match="groups"):
        num_attribute_logits("multilabel")


def groups_arrays(max_rows=20):
    """Valid (N, 12) class indices: any integers, folded into each group's range."""
    shape = st.tuples(st.integers(1, max_rows), st.just(12))
    return arrays(np.int64, shape, elements=st.integers(0, 2**15)).map(lambda a: a % np.array(SIZES))


@st.composite
def course_arrays(draw, max_rows=20):
    """Any valid course rows, including several colours marked per body part."""
    n = draw(st.integers(1, max_rows))
    age = draw(arrays(np.int64, (n, 1), elements=st.integers(1, 4)))
    rest = draw(arrays(np.int64, (n, 26), elements=st.integers(1, 2)))
    return np.concatenate([age, rest], axis=1)


@given(groups_arrays())
def test_groups_course_groups_is_lossless(groups):
    course = groups_to_course(groups)
    assert course.shape == (len(groups), 27)
    assert ((course[:, 10:18] == 2).sum(axis=1) <= 1).all()  # at most one colour per body part
    np.testing.assert_array_equal(course_to_groups(course), groups)


@given(groups_arrays())
def test_groups_binary_groups_is_lossless(groups):
    binary = groups_to_binary(groups)
    assert binary.shape == (len(groups), 30) and set(np.unique(binary)) <= {0, 1}
    assert (binary[:, :4].sum(axis=1) == 1).all()  # age one-hot
    np.testing.assert_array_equal(binary_to_groups(binary), groups)


@given(course_arrays())
def test_course_binary_course_is_lossless(course):
    np.testing.assert_array_equal(binary_to_course(course_to_binary(course)), course)


@given(course_arrays())
def test_course_groups_keeps_everything_but_extra_colours(course):
    groups = course_to_groups(course)
    back = groups_to_course(groups)
    np.testing.assert_array_equal(back[:, :10], course[:, :10])
    for part, multi in ((slice(10, 18), 8), (slice(18, 27), 9)):
        single = (course[:, part] == 2).sum(axis=1) == 1
        np.testing.assert_array_equal(back[single][:, part], course[single][:, part])
        # none or several colours marked -> multicolour, which has no course column
        assert (groups[~single, 10 if multi == 8 else 11] == multi).all()
        assert (back[~single][:, part] == 1).all()


def test_two_colours_become_multicolour():
    row = np.array([[3, 1, 2, 1, 2, 2, 1, 1, 1, 2] + [2, 2] + [1] * 6 + [1, 2] + [1] * 7])
    groups = course_to_groups(row)
    assert groups[0, 10] == 8  # upcolour: black and white marked -> multicolour
    assert groups[0, 11] == 1  # downcolour: white
    np.testing.assert_array_equal(binary_to_course(course_to_binary(row)), row)  # binary keeps both


def test_validate_course_errors_name_row_and_column():
    good = groups_to_course(np.zeros((3, 12), dtype=np.int64))
    assert validate_course(good).dtype == np.int64
    bad = good.copy()
    bad[2, 0] = 5
    with pytest.raises(DataError, match=r"my.csv: row 2 column 'age' has value 5, expected 1-4"):
        validate_course(bad, source="my.csv")
    bad = good.copy()
    bad[1, 9] = 0
    with pytest.raises(DataError, match=r"row 1 column 'gender' has value 0, expected 1 \(no\) or 2 \(yes\)"):
        validate_course(bad)
    with pytest.raises(DataError, match="27 attribute columns"):
        validate_course(good[:, :26])


def test_group_and_binary_errors():
    with pytest.raises(DataError, match="'upcolour' has class 9, expected 0-8"):
        validate_groups(np.array([[0] * 10 + [9, 0]]))
    with pytest.raises(DataError, match="12 group columns"):
        groups_to_course(np.zeros((2, 11), dtype=np.int64))
    with pytest.raises(DataError, match="only 0/1"):
        binary_to_course(np.full((1, 30), 2))
    two_ages = np.zeros((1, 30), dtype=np.int64)
    two_ages[0, :2] = 1
    with pytest.raises(DataError, match="row 0 has 2 age classes set"):
        binary_to_course(two_ages)
    with pytest.raises(KeyError, match="valid: age"):
        group_index("colour")
    assert group_index("gender") == 9


@pytest.mark.parametrize("form", ["groups", "binary"])
def test_group_probabilities_sum_to_one(form):
    torch.manual_seed(0)
    logits = torch.randn(5, num_attribute_logits(form))
    probs = group_probabilities(logits, form)
    assert [p.shape for p in probs] == [(5, size) for size in SIZES]
    for p in probs:
        torch.testing.assert_close(p.sum(dim=1), torch.ones(5))
    assert predict_groups(logits, form).shape == (5, 12)
    with pytest.raises(ValueError, match="columns"):
        group_probabilities(torch.randn(5, 7), form)


@settings(max_examples=40, deadline=None)
@given(groups_arrays(max_rows=8), st.sampled_from(["groups", "binary"]))
def test_confident_logits_predict_their_targets(groups, form):
    """Logits built from the targets (+-10 per class) predict exactly those targets."""
    targets = targets_for_form(torch.from_numpy(groups), form)
    if form == "groups":
        assert targets.dtype == torch.int64 and targets.shape == (len(groups), 12)
        one_hot = torch.cat([torch.eye(size)[targets[:, g]] for g, size in enumerate(SIZES)], dim=1)
        logits = one_hot * 20 - 10
    else:
        assert targets.dtype == torch.float32 and targets.shape == (len(groups), 30)
        logits = targets * 20 - 10
    np.testing.assert_array_equal(predict_groups(logits, form).numpy(), groups)


@pytest.mark.real_data
@pytest.mark.skipif(not COURSE_CSV.is_file(), reason="../shared/data is not available")
def test_real_csv_never_marks_two_colours():
    annotations = read_course_annotations(COURSE_CSV)
    course = np.stack([row for _, row in annotations.values()])
    assert course.shape == (600, 27)
    assert ((course[:, 10:18] == 2).sum(axis=1) <= 1).all()
    assert ((course[:, 18:27] == 2).sum(axis=1) <= 1).all()
    # hence course -> groups -> course is exact on the real labels
    np.testing.assert_array_equal(groups_to_course(course_to_groups(course))[:, :10], course[:, :10])
    single = ((course[:, 10:18] == 2).sum(axis=1) == 1) & ((course[:, 18:27] == 2).sum(axis=1) == 1)
    np.testing.assert_array_equal(groups_to_course(course_to_groups(course[single])), course[single])
