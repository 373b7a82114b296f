"""The course evaluator (``score_submission``) on hand-made submissions for the tiny synthetic sample.

The export tests score an untrained model's files, whose numbers are arbitrary; here the
submissions are built from ``ground_truth.csv`` so that the scores are known: a perfect one
scores exactly 1, and a ranking with hits at known ranks scores the AP worked out by hand.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reid_utils.evaluation import score_submission, submission_average_precision
from reid_utils.evaluation.scoring import read_ground_truth
from reid_utils.export.submission import CLASSIFICATION_FILE, REID_FILE, format_reid_line, write_classification_csv
from reid_utils.schema import COURSE_COLUMNS


@pytest.fixture(scope="module")
def truth(tiny_course_root):
    """``(test rows, query rows)`` of the tiny sample's ground truth, indexed by file name."""
    rows = read_ground_truth(tiny_course_root).set_index("file")
    return rows[rows["split"] == "test"], rows[rows["split"] != "test"]


def _split_gallery(test: pd.DataFrame, pid: int) -> tuple[list[str], list[str]]:
    """(the test images of ``pid``, the other test images), in file order."""
    same = (test["pid"] == pid).to_numpy()
    return test.index[same].tolist(), test.index[~same].tolist()


def _write_submission(out, rankings: dict[str, list[str]], test: pd.DataFrame) -> None:
    """``reid_test.txt`` from ``rankings`` (written as is: lists may differ in length) and a
    ``classification_test.csv`` holding the true attributes of every labelled test image."""
    (out / REID_FILE).write_text("".join(format_reid_line(q, rankings[q]) for q in sorted(rankings)))
    course = test[list(COURSE_COLUMNS)].to_numpy(copy=True)
    course[test["pid"].to_numpy() <= 0] = 1  # distractors and junk have no labels (-1): any valid row
    table = pd.DataFrame(course, columns=list(COURSE_COLUMNS))
    table.insert(0, "id", test.index.tolist())
    write_classification_csv(out / CLASSIFICATION_FILE, table.sort_values("id", ignore_index=True))


def test_submission_average_precision_by_hand():
    ranked_match = np.array([[False, True, True], [True, False, False], [False, False, False]])
    ap = submission_average_precision(ranked_match, np.array([4, 1, 0]))
    # row 0: hits at ranks 2 and 3 of a 3-long list, 4 relevant images (2 never listed):
    #        AP = (1/2 + 2/3) / 4 = 7/24 (a missing relevant image counts as never retrieved)
    # row 1: the only relevant image first: AP = 1; row 2: no relevant image: NaN (not a valid query)
    np.testing.assert_allclose(ap, [7 / 24, 1.0, np.nan])


def test_a_perfect_submission_scores_one(tiny_course_root, truth, tmp_path):
    test, queries = truth
    rankings = {}
    for q, pid in queries["pid"].items():
        own, others = _split_gallery(test, pid)
        rankings[q] = own + others  # every relevant image first, then the whole rest of the gallery
    _write_submission(tmp_path, rankings, test)
    score = score_submission(tiny_course_root, tmp_path)
    assert score["num_queries"] == len(queries)
    assert score["mAP"] == 1.0 and score["rank1"] == 1.0
    assert score["attribute_accuracy"] == 1.0 and set(score["accuracy"].values()) == {1.0}
    assert score["mA"] == pytest.approx(1.0)
    assert score["num_attribute_rows"] == (test["pid"] > 0).sum()


def test_hits_at_known_ranks_score_the_ap_worked_by_hand(tiny_course_root, truth, tiny_sizes, tmp_path):
    test, queries = truth
    rankings = {}
    for q, pid in queries["pid"].items():
        own, others = _split_gallery(test, pid)
        assert len(own) == tiny_sizes["images_per_id"] == 6  # R = 6 relevant test images per query
        rankings[q] = [others[0], own[0], own[1]]  # hits at ranks 2 and 3; 4 relevant images never listed
    last = max(rankings)
    rankings[last] = rankings[last][1:2]  # one query: a 1-long list, its only entry a hit
    _write_submission(tmp_path, rankings, test)
    score = score_submission(tiny_course_root, tmp_path)
    # AP = (1/R) * sum over the hits of (hits so far) / rank:
    #   3-long lists: (1/2 + 2/3) / 6 = 7/36;   the 1-long list: (1/1) / 6 = 1/6
    num_queries = len(queries)
    assert score["num_queries"] == num_queries
    assert score["mAP"] == pytest.approx(((num_queries - 1) * 7 / 36 + 1 / 6) / num_queries)
    assert score["rank1"] == pytest.approx(1 / num_queries)  # only the 1-long list has a hit at rank 1
    assert score["rank5"] == score["rank10"] == 1.0
