"""Metrics: evaluate_reid against hand-computed cases and the slow per-query reference;
attribute metrics and the majority baseline on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_utils.errors import DataError
from reid_utils.metrics import attribute_metrics, evaluate_reid, majority_baseline, random_ranking_map
from reid_utils.metrics.reference import evaluate_reid_reference

# ---------------------------------------------------------------------------------------------
# Re-ID: hand-computed toy cases

# Gallery of 6: index:     0    1    2    3    4    5
G_PIDS = np.array([1, 0, 1, -1, 2, 1])  # 0 = distractor, -1 = junk
G_CAMS = np.array([0, 1, 1, 0, 0, 0])
Q_PIDS = np.array([1, 2, 3])
Q_CAMS = np.array([0, 0, 1])
DISTMAT = np.array(
    [
        [0.5, 0.1, 0.3, 0.05, 0.2, 0.4],  # query A (id 1, cam 0)
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # query B (id 2, cam 0)
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # query C (id 3: not in the gallery)
    ]
)


def test_market_protocol_by_hand():
    # Query A, sorted: 3 (junk, removed), 1 (distractor), 4 (id 2), 2 (id 1 cam 1: match),
    # 5 and 0 (id 1 cam 0: same camera, removed). Valid ranking [1, 4, 2]: one match at rank 3
    # -> AP = 1/3, INP = 1/3, CMC = [0, 0, 1, ...].
    # Query B: its only gallery image (4) shares its camera -> no valid match, skipped.
    # Query C: id 3 is not in the gallery -> skipped.
    r = evaluate_reid(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5, protocol="market")
    assert r["mAP"] == pytest.approx(1 / 3)
    assert r["mINP"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(r["cmc"], [0, 0, 1, 1, 1])
    assert r["num_valid_queries"] == 1 and r["num_skipped_queries"] == 2
    assert r["rank1"] == 0.0 and r["rank5"] == 1.0 and "rank10" not in r
    np.testing.assert_allclose(r["query_ap"], [1 / 3, np.nan, np.nan])


def test_course_protocol_by_hand():
    # Nothing removed. Query A: ranking [3, 1, 4, 2, 5, 0], matches (id 1) at ranks 4, 5, 6
    # -> AP = (1/4 + 2/5 + 3/6) / 3 = 0.38333, INP = 3/6, first hit at rank 4.
    # Query B: its only match (4) is at rank 5 -> AP = INP = 1/5. Query C skipped.
    r = evaluate_reid(DISTMAT, Q_PIDS, G_PIDS, max_rank=6, protocol="course")
    assert r["mAP"] == pytest.approx(((1 / 4 + 2 / 5 + 3 / 6) / 3 + 1 / 5) / 2)
    assert r["mINP"] == pytest.approx((3 / 6 + 1 / 5) / 2)
    np.testing.assert_allclose(r["cmc"], [0, 0, 0, 0.5, 1, 1])
    assert r["num_valid_queries"] == 2 and r["num_skipped_queries"] == 1


def test_ties_are_broken_by_gallery_index():
    # All distances equal: the ranking is the gallery order [2, 1, 2, 1] for a query of id 1
    # from another camera -> matches at ranks 2 and 4: AP = (1/2 + 2/4) / 2, INP = 2/4.
    r = evaluate_reid([[1.0, 1.0, 1.0, 1.0]], [1], [2, 1, 2, 1], [9], [0, 0, 0, 0], max_rank=4)
    assert r["mAP"] == pytest.approx(0.5)
    assert r["mINP"] == pytest.approx(0.5)
    np.testing.assert_allclose(r["cmc"], [0, 1, 1, 1])


def test_perfect_ranking_scores_one():
    distmat = np.array([[0.1, 0.2, 0.9, 0.8], [0.9, 0.8, 0.1, 0.2]])
    r = evaluate_reid(distmat, [1, 2], [1, 1, 2, 2], [0, 0], [1, 2, 1, 2])
    assert r["mAP"] == 1.0 and r["mINP"] == 1.0 and r["rank1"] == 1.0
    assert len(r["cmc"]) == 50 and (r["cmc"] == 1).all()  # past the gallery size the curve stays at 1


def test_no_valid_query_raises_data_error():
    with pytest.raises(DataError, match="none of the 1 queries"):
        evaluate_reid([[0.1, 0.2]], [1], [1, 2], [0], [0, 1])  # the only match shares the camera


def test_input_checks():
    with pytest.raises(ValueError, match="protocol"):
        evaluate_reid(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, protocol="cuhk")
    with pytest.raises(ValueError, match="q_camids and g_camids"):
        evaluate_reid(DISTMAT, Q_PIDS, G_PIDS)
    with pytest.raises(ValueError, match="g_pids must have shape"):
        evaluate_reid(DISTMAT, Q_PIDS, G_PIDS[:5], Q_CAMS, G_CAMS)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_reid([[np.nan, 0.2]], [1], [1, 2], [0], [1, 1])


def test_nan_distances_to_non_matches_rank_last_like_argsort():
    rng = np.random.default_rng(3)
    distmat, q_pids, g_pids, q_cams, g_cams = market_like_problem(rng, 20, 60, 5, "continuous")
    distmat = distmat.astype(np.float64)
    nan_ok = g_pids[None, :] != q_pids[:, None]  # NaN only where it is not a match
    distmat[(rng.random(distmat.shape) < 0.2) & nan_ok] = np.nan
    expected = evaluate_reid_reference(distmat, q_pids, g_pids, q_cams, g_cams)
    got = evaluate_reid(distmat, q_pids, g_pids, q_cams, g_cams)
    assert abs(got["mAP"] - expected["mAP"]) <= 1e-6
    assert np.abs(got["cmc"] - expected["cmc"]).max() <= 1e-6


def test_tensor_inputs_match_numpy():
    expected = evaluate_reid(DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    got = evaluate_reid(*(torch.as_tensor(x) for x in (DISTMAT, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)))
    assert got["mAP"] == expected["mAP"]
    np.testing.assert_array_equal(got["cmc"], expected["cmc"])
    half = evaluate_reid(torch.as_tensor(DISTMAT, dtype=torch.float16), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    assert half["mAP"] == expected["mAP"]


# ---------------------------------------------------------------------------------------------
# Re-ID: agreement with the slow per-query reference


def market_like_problem(rng, num_q, num_g, num_ids, distances):
    """Random ids/cameras with junk (-1), distractors (0), same-camera matches, queries without
    matches, and distances that are continuous, coarse (many ties) or integer."""
    q_pids = rng.integers(1, num_ids + 2, num_q)  # id num_ids + 1 never appears in the gallery
    g_pids = rng.choice(np.arange(-1, num_ids + 1), num_g, p=None)
    q_cams, g_cams = rng.integers(0, 3, num_q), rng.integers(0, 3, num_g)
    if distances == "continuous":
        distmat = rng.random((num_q, num_g)).astype(np.float32)
    elif distances == "ties":
        distmat = rng.integers(0, 4, (num_q, num_g)).astype(np.float32) / 4
    else:
        distmat = rng.integers(0, 3, (num_q, num_g))
    return distmat, q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("protocol", ["market", "course"])
@pytest.mark.parametrize("distances", ["continuous", "ties", "integer"])
def test_matches_reference_on_random_problems(protocol, distances):
    rng = np.random.default_rng(len(protocol) * 10 + len(distances))
    for trial in range(40):
        num_q, num_g = int(rng.integers(1, 40)), int(rng.integers(1, 120))
        problem = market_like_problem(rng, num_q, num_g, int(rng.integers(1, 12)), distances)
        max_rank = int(rng.integers(1, 30))
        try:
            expected = evaluate_reid_reference(*problem, max_rank=max_rank, protocol=protocol)
        except ValueError:  # no valid query at all
            with pytest.raises(DataError):
                evaluate_reid(*problem, max_rank=max_rank, protocol=protocol)
            continue
        got = evaluate_reid(*problem, max_rank=max_rank, protocol=protocol, chunk_size=int(rng.integers(1, 9)))
        assert abs(got["mAP"] - expected["mAP"]) <= 1e-6
        assert abs(got["mINP"] - expected["mINP"]) <= 1e-6
        assert np.abs(got["cmc"] - expected["cmc"]).max() <= 1e-6
        assert got["num_valid_queries"] == expected["num_valid_queries"]
        assert got["num_skipped_queries"] == expected["num_skipped_queries"]


def test_matches_reference_on_a_larger_market_like_problem():
    # Identity-structured features: realistic rankings, many same-camera matches.
    rng = np.random.default_rng(7)
    num_ids, dim = 60, 16
    centers = rng.standard_normal((num_ids + 1, dim))
    q_pids = rng.integers(1, num_ids + 1, 200)
    g_pids = np.concatenate([rng.integers(1, num_ids + 1, 900), np.zeros(150, int), -np.ones(100, int)])
    q_cams, g_cams = rng.integers(0, 6, 200), rng.integers(0, 6, len(g_pids))
    qf = centers[q_pids] + rng.standard_normal((200, dim))
    gf = centers[np.maximum(g_pids, 0)] * (g_pids > 0)[:, None] + rng.standard_normal((len(g_pids), dim))
    distmat = ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)
    for protocol in ("market", "course"):
        expected = evaluate_reid_reference(distmat, q_pids, g_pids, q_cams, g_cams, protocol=protocol)
        got = evaluate_reid(distmat, q_pids, g_pids, q_cams, g_cams, protocol=protocol, chunk_size=64)
        assert abs(got["mAP"] - expected["mAP"]) <= 1e-6
        assert abs(got["mINP"] - expected["mINP"]) <= 1e-6
        assert np.abs(got["cmc"] - expected["cmc"]).max() <= 1e-6
        assert 0.05 < got["mAP"] < 0.95  # a non-trivial ranking


# ---------------------------------------------------------------------------------------------
# Attributes

# Groups: age, backpack, bag, handbag, clothes, down, up, hair, hat, gender, upcolour, downcolour
TRUE = np.array(
    [
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # teenager, black top, black bottom
        [2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 9],  # adult, female, white top, multicolour bottom
        [-1] * 12,  # unknown: ignored everywhere
        [0] + [-1] * 11,  # only the age is known: counts for the age accuracy only
    ]
)
PRED = np.array(
    [
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0],  # wrong: backpack, upcolour (multicolour)
        [2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 9],  # right
        [3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 5, 5],
        [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # wrong age
    ]
)


def test_attribute_metrics_by_hand():
    m = attribute_metrics(PRED, TRUE)
    # Group accuracy: age 2 of 3 known rows; backpack and upcolour 1 of 2; the other 9 groups 2 of 2.
    assert m["accuracy"]["age"] == pytest.approx(2 / 3)
    assert m["accuracy"]["backpack"] == 0.5 and m["accuracy"]["upcolour"] == 0.5
    assert m["accuracy"]["gender"] == 1.0
    assert m["mean_accuracy"] == pytest.approx((2 / 3 + 0.5 + 0.5 + 9) / 12)
    assert m["num_rows"] == 2
    # Binary columns on rows 0-1. Row 0: Y = {teenager, upblack, downblack},
    # P = {teenager, backpack, downblack}: |Y&P| = 2, |Y|P| = 4. Row 1: P = Y = {adult, gender, upwhite}.
    assert m["instance_accuracy"] == pytest.approx((2 / 4 + 1) / 2)
    assert m["instance_precision"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["instance_recall"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["instance_f1"] == pytest.approx(5 / 6)
    # mA: backpack has no positives -> its negative recall 1/2; upblack: positive recall 0,
    # negative recall 1 -> 1/2; the other 28 columns are perfect.
    assert m["column_mA"]["backpack"] == 0.5 and m["column_mA"]["upblack"] == 0.5
    assert m["column_mA"]["age_young"] == 1.0
    assert m["mA"] == pytest.approx(29 / 30)
    # Confusion matrices: rows = true class, columns = predicted class.
    age = np.zeros((4, 4), int)
    age[1, 1] = age[2, 2] = age[0, 3] = 1
    np.testing.assert_array_equal(m["confusion"]["age"], age)
    up = m["confusion"]["upcolour"]
    assert up.shape == (9, 9) and up[0, 8] == 1 and up[1, 1] == 1 and up.sum() == 2
    assert m["confusion"]["downcolour"].shape == (10, 10)


def test_attribute_metrics_perfect_and_checks():
    m = attribute_metrics(TRUE[:2], TRUE[:2])
    assert m["mean_accuracy"] == 1.0 and m["mA"] == 1.0 and m["instance_f1"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        attribute_metrics(PRED[:, :11], TRUE[:, :11])
    with pytest.raises(DataError, match="upcolour"):
        attribute_metrics(np.where(np.arange(12) == 10, 42, PRED), TRUE)  # class 42 does not exist


def test_majority_baseline_by_hand():
    train = np.zeros((5, 12), int)
    train[:3, 0] = 2  # age: class 2 is the majority (3 of 5)
    train[4, 1] = -1  # unknown targets are ignored
    val = np.zeros((4, 12), int)
    val[:, 0] = [2, 2, 1, 0]  # age: 2 of 4 right; every other group: all right
    assert majority_baseline(train, val) == pytest.approx((0.5 + 11) / 12)


def test_random_ranking_map_is_the_chance_level():
    # one match among two: first half the time (AP 1), second otherwise (AP 1/2) -> 0.75
    assert random_ranking_map([1], [1, 2], draws=4000) == pytest.approx(0.75, abs=0.02)
    # one match among three: AP 1, 1/2 or 1/3 with equal chance -> 11/18
    assert random_ranking_map([1], [2, 1, 3], draws=4000) == pytest.approx(11 / 18, abs=0.02)
    # the same seed gives the same value
    assert random_ranking_map([1, 2], [1, 2, 2, 3]) == random_ranking_map([1, 2], [1, 2, 2, 3])
