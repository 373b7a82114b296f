"""The course deliverables: validators, atomic writes, end-to-end export.

Validator tests build a valid submission by hand, corrupt it in one way, and expect an
ExportError naming the problem; hypothesis checks that any valid generated submission passes
and any single corruption fails. The end-to-end tests export from a tiny untrained checkpoint
on the synthetic sample (fast) and on the real course data (slow, skipped when absent).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from reid_utils.errors import ExportError
from reid_utils.evaluation import score_submission
from reid_utils.evaluation.scoring import read_ground_truth
from reid_utils.export import check_submission, submission as export
from reid_utils.export.submission import (
    CLASSIFICATION_FILE,
    REID_FILE,
    attributes_to_rows,
    read_classification_csv,
    read_reid_txt,
    validate_classification,
    validate_reid_lines,
    write_classification_csv,
    write_reid_txt,
)
from reid_utils.export.threshold import course_map
from reid_utils.schema import COURSE_COLUMNS, GROUPS

GROUP_SIZES = [g.num_classes for g in GROUPS]


def _names(n: int, offset: int = 0) -> list[str]:
    return [f"{i:06d}.jpg" for i in range(offset, offset + n)]


def _random_groups(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, c, size=n) for c in GROUP_SIZES], axis=1)


def _valid_table(n: int = 6, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    names = _names(n)
    return attributes_to_rows(_random_groups(n, seed), names[::-1]), names


def _valid_rankings(num_queries: int = 4, num_gallery: int = 8, top_k: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    queries = _names(num_queries, offset=1000)
    gallery = _names(num_gallery)
    rankings = {q: [gallery[i] for i in rng.permutation(num_gallery)[:top_k]] for q in queries}
    return rankings, queries, gallery


# ---------------------------------------------------------------------------------------------
# classification_test.csv


def test_attributes_to_rows_encodes_course_form_sorted():
    groups = np.array([
        [2, 0, 1, 0, 1, 1, 0, 0, 0, 1, 8, 1],  # adult, multicolour top, white bottom
        [0, 1, 0, 1, 0, 0, 1, 1, 1, 0, 2, 9],  # young, red top, multicolour bottom
    ])
    df = attributes_to_rows(groups, ["000009.jpg", "000001.jpg"])
    assert list(df.columns) == ["id", *COURSE_COLUMNS]
    assert df["id"].tolist() == ["000001.jpg", "000009.jpg"]
    young, adult = df.iloc[0], df.iloc[1]
    assert adult["age"] == 3 and young["age"] == 1
    assert adult["bag"] == 2 and adult["backpack"] == 1
    assert (adult[list(COURSE_COLUMNS[10:18])] == 1).all()  # multicolour: no colour set
    assert adult["downwhite"] == 2 and (adult[list(COURSE_COLUMNS[18:27])] == 2).sum() == 1
    assert young["upred"] == 2 and (young[list(COURSE_COLUMNS[18:27])] == 1).all()
    validate_classification(df, ["000001.jpg", "000009.jpg"])


def test_attributes_to_rows_rejects_length_mismatch():
    with pytest.raises(ExportError, match="2 names"):
        attributes_to_rows(_random_groups(3), ["a.jpg", "b.jpg"])


def _corrupt_table(df: pd.DataFrame, names: list[str], kind: str) -> tuple[pd.DataFrame, list[str]]:
    """One corruption of a valid table; returns the corrupted table and the expected names."""
    df = df.copy()
    if kind == "missing_row":
        return df.iloc[:-1].reset_index(drop=True), names
    if kind == "extra_row":
        return pd.concat([df, df.iloc[[0]]], ignore_index=True), names
    if kind == "duplicate":
        df.loc[1, "id"] = df.loc[0, "id"]
        return df, names
    if kind == "unknown_name":
        df.loc[len(df) - 1, "id"] = "999999.jpg"
        return df, names
    if kind == "unsorted":
        order = list(range(len(df)))
        order[0], order[1] = order[1], order[0]
        return df.iloc[order].reset_index(drop=True), names
    if kind == "bad_age":
        df.loc[0, "age"] = 5
        return df, names
    if kind == "bad_binary":
        df.loc[0, "hat"] = 0
        return df, names
    if kind == "not_integer":
        df["gender"] = df["gender"].astype(float)
        df.loc[0, "gender"] = 1.5
        return df, names
    if kind == "missing_value":
        df["bag"] = df["bag"].astype(float)
        df.loc[0, "bag"] = np.nan
        return df, names
    if kind == "two_up_colours":
        df.loc[0, ["upblack", "upwhite"]] = 2
        return df, names
    if kind == "two_down_colours":
        df.loc[0, ["downpink", "downbrown"]] = 2
        return df, names
    if kind == "header_renamed":
        return df.rename(columns={"upgray": "upgrey"}), names
    if kind == "header_order":
        cols = list(df.columns)
        cols[1], cols[2] = cols[2], cols[1]
        return df[cols], names
    if kind == "header_missing_column":
        return df.drop(columns=["hat"]), names
    if kind == "header_no_id":
        return df.rename(columns={"id": "name"}), names
    raise AssertionError(kind)


TABLE_CORRUPTIONS = {
    "missing_row": "rows, expected",
    "extra_row": "rows, expected",
    "duplicate": "repeats id",
    "unknown_name": "not a test image",
    "unsorted": "sorted",
    "bad_age": "expected 1-4",
    "bad_binary": r"expected 1 \(no\) or 2 \(yes\)",
    "not_integer": "expected an integer",
    "missing_value": "expected an integer",
    "two_up_colours": "upper-body colours",
    "two_down_colours": "lower-body colours",
    "header_renamed": "header column",
    "header_order": "header column",
    "header_missing_column": "header column",
    "header_no_id": "header column 1",
}


@pytest.mark.parametrize("kind", sorted(TABLE_CORRUPTIONS))
def test_validate_classification_rejects(kind):
    df, names = _valid_table()
    validate_classification(df, names)
    bad, names = _corrupt_table(df, names, kind)
    with pytest.raises(ExportError, match=TABLE_CORRUPTIONS[kind]) as info:
        validate_classification(bad, names)
    assert "\n" not in str(info.value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 30), seed=st.integers(0, 2**16), kind=st.sampled_from(sorted(TABLE_CORRUPTIONS)))
def test_validate_classification_property(n, seed, kind):
    """Any generated valid table passes; any single corruption of it fails."""
    rng = np.random.default_rng(seed)
    names = sorted({f"{i:06d}.jpg" for i in rng.choice(100_000, size=n, replace=False)})
    df = attributes_to_rows(_random_groups(n, seed), list(rng.permutation(names)))
    validate_classification(df, names)
    bad, names = _corrupt_table(df, names, kind)
    with pytest.raises(ExportError):
        validate_classification(bad, names)


def test_classification_round_trip(tmp_path):
    df, names = _valid_table(12)
    path = write_classification_csv(tmp_path / CLASSIFICATION_FILE, df, names)
    text = path.read_text()
    assert text.splitlines()[0] == ",".join(["id", *COURSE_COLUMNS])
    assert text.splitlines()[1].startswith("000000.jpg,")
    back = read_classification_csv(path)
    validate_classification(back, names)
    pd.testing.assert_frame_equal(back, df, check_dtype=False)


# ---------------------------------------------------------------------------------------------
# reid_test.txt


def _corrupt_rankings(rankings: dict, queries: list[str], gallery: list[str], kind: str):
    """One corruption of valid rankings, as a list of (query, ranked) pairs in file order."""
    items = [(q, list(r)) for q, r in rankings.items()]
    if kind == "missing_query":
        return items[:-1]
    if kind == "extra_query":
        return items + [("999999.jpg", items[0][1])]
    if kind == "duplicate_query":
        return items[:-1] + [(items[0][0], items[-1][1])]
    if kind == "unknown_query":
        return items[:-1] + [("999999.jpg", items[-1][1])]
    if kind == "unsorted_queries":
        return [items[1], items[0], *items[2:]]
    if kind == "too_short":
        items[0] = (items[0][0], items[0][1][:-1])
        return items
    if kind == "too_long":
        extra = next(g for g in gallery if g not in items[0][1])
        items[0] = (items[0][0], items[0][1] + [extra])
        return items
    if kind == "unknown_gallery":
        items[-1][1][-1] = "nope.jpg"
        return items
    if kind == "query_as_gallery":
        items[-1][1][0] = queries[0]
        return items
    if kind == "duplicate_gallery":
        items[1][1][2] = items[1][1][0]
        return items
    raise AssertionError(kind)


RANKING_CORRUPTIONS = {
    "missing_query": "query lines, expected",
    "extra_query": "query lines, expected",
    "duplicate_query": "repeats query",
    "unknown_query": "not a query image",
    "unsorted_queries": "sorted",
    "too_short": "images, expected",
    "too_long": "images, expected",
    "unknown_gallery": "not a test image",
    "query_as_gallery": "not a test image",
    "duplicate_gallery": "twice",
}


@pytest.mark.parametrize("kind", sorted(RANKING_CORRUPTIONS))
def test_validate_reid_lines_rejects(kind):
    rankings, queries, gallery = _valid_rankings()
    validate_reid_lines(rankings, queries, gallery, top_k=5)
    bad = _corrupt_rankings(rankings, queries, gallery, kind)
    with pytest.raises(ExportError, match=RANKING_CORRUPTIONS[kind]) as info:
        validate_reid_lines(bad, queries, gallery, top_k=5)
    assert "\n" not in str(info.value)


def test_validate_reid_lines_top_k_capped_by_gallery():
    rankings, queries, gallery = _valid_rankings(num_gallery=5, top_k=5)
    validate_reid_lines(rankings, queries, gallery, top_k=100)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(num_queries=st.integers(2, 12), num_gallery=st.integers(4, 40), top_k=st.integers(3, 50),
       seed=st.integers(0, 2**16), kind=st.sampled_from(sorted(RANKING_CORRUPTIONS)))
def test_validate_reid_lines_property(num_queries, num_gallery, top_k, seed, kind):
    """Valid generated rankings pass; any single corruption fails."""
    k = min(top_k, num_gallery)
    if kind == "too_long" and k == num_gallery:
        k, top_k = num_gallery - 1, num_gallery - 1  # leave room for one more distinct name
    rankings, queries, gallery = _valid_rankings(num_queries, num_gallery, k, seed)
    validate_reid_lines(rankings, queries, gallery, top_k=top_k)
    bad = _corrupt_rankings(rankings, queries, gallery, kind)
    with pytest.raises(ExportError):
        validate_reid_lines(bad, queries, gallery, top_k=top_k)


def test_reid_round_trip_sorted_lines(tmp_path):
    rankings, queries, gallery = _valid_rankings()
    shuffled = dict(reversed(list(rankings.items())))
    path = write_reid_txt(tmp_path / REID_FILE, shuffled, queries, gallery, top_k=5)
    lines = path.read_text().splitlines()
    assert len(lines) == len(queries)
    q0 = queries[0]
    assert lines[0] == f"{q0}: " + ", ".join(rankings[q0])
    back = read_reid_txt(path)
    assert back == [(q, rankings[q]) for q in queries]
    validate_reid_lines(back, queries, gallery, top_k=5)


def test_read_reid_txt_rejects_malformed_line(tmp_path):
    path = tmp_path / REID_FILE
    path.write_text("000001.jpg 000002.jpg, 000003.jpg\n")
    with pytest.raises(ExportError, match="line 1"):
        read_reid_txt(path)


# ---------------------------------------------------------------------------------------------
# Atomicity: an existing submission is never replaced by an invalid or partial one


def test_invalid_submission_leaves_existing_files(tmp_path):
    df, names = _valid_table()
    rankings, queries, gallery = _valid_rankings()
    csv_path = write_classification_csv(tmp_path / CLASSIFICATION_FILE, df, names)
    txt_path = write_reid_txt(tmp_path / REID_FILE, rankings, queries, gallery, top_k=5)
    before = csv_path.read_bytes(), txt_path.read_bytes()

    bad_df, _ = _corrupt_table(df, names, "two_up_colours")
    with pytest.raises(ExportError):
        write_classification_csv(csv_path, bad_df, names)
    bad = dict(_corrupt_rankings(rankings, queries, gallery, "too_short"))
    with pytest.raises(ExportError):
        write_reid_txt(txt_path, bad, queries, gallery, top_k=5)
    assert (csv_path.read_bytes(), txt_path.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CLASSIFICATION_FILE, REID_FILE])


def test_failure_mid_write_leaves_existing_files(tmp_path, monkeypatch):
    df, names = _valid_table(40)
    rankings, queries, gallery = _valid_rankings()
    csv_path = write_classification_csv(tmp_path / CLASSIFICATION_FILE, df, names)
    txt_path = write_reid_txt(tmp_path / REID_FILE, rankings, queries, gallery, top_k=5)
    before = csv_path.read_bytes(), txt_path.read_bytes()

    new_df, _ = _valid_table(40, seed=1)
    real_to_csv = pd.DataFrame.to_csv

    def to_csv_then_fail(self, f, *args, **kwargs):
        real_to_csv(self.iloc[:10], f, *args, **kwargs)  # part of the file is written...
        raise OSError("disk full")  # ...then the write fails

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_classification_csv(csv_path, new_df, names)

    real_format, calls = export.format_reid_line, []

    def format_then_fail(query, ranked):
        calls.append(query)
        if len(calls) == 3:  # two lines are written, then the write fails
            raise OSError("disk full")
        return real_format(query, ranked)

    monkeypatch.setattr(export, "format_reid_line", format_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_reid_txt(txt_path, rankings, queries, gallery, top_k=5)
    assert (csv_path.read_bytes(), txt_path.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CLASSIFICATION_FILE, REID_FILE])


# ---------------------------------------------------------------------------------------------
# End to end: checkpoint -> submission


def _untrained_checkpoint(path, height: int, width: int, num_ids: int = 8):
    """An untrained resnet18 checkpoint saved through the engine's checkpoint API."""
    import torch

    from reid_utils.config import TrainConfig
    from reid_utils.engine.checkpoint import save_checkpoint
    from reid_utils.models import build_model_from_config

    cfg = TrainConfig.from_overrides(model="resnet50", depth=18, height=height, width=width)
    torch.manual_seed(0)
    model = build_model_from_config(cfg, num_ids=num_ids)
    return save_checkpoint(path, model, cfg, {pid: pid for pid in range(num_ids)})


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return _untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", 64, 32)


@pytest.fixture(scope="module")
def fp32():
    from reid_utils.engine.runtime import fast_path

    return fast_path("cpu", precision="fp32")


def _check_files(out_dir, root, top_k):
    from reid_utils.data import load_dataset

    index = load_dataset(root)
    q_names = [r.path.name for r in index.query]
    g_names = [r.path.name for r in index.test]
    table = read_classification_csv(out_dir / CLASSIFICATION_FILE)
    validate_classification(table, g_names)
    lines = read_reid_txt(out_dir / REID_FILE)
    validate_reid_lines(lines, q_names, g_names, top_k)
    return table, lines, q_names, g_names


@pytest.fixture(scope="module")
def sample_export(tiny_course_root, tiny_checkpoint, tmp_path_factory, fp32):
    """One export of the tiny sample, shared by the tests below (top_k=100 > 75 test images)."""
    out = tmp_path_factory.mktemp("sample_export")
    return out, export.export_submission(tiny_course_root, tiny_checkpoint, out, top_k=100, rerank=False,
                                         fast_path=fp32, num_workers=0)


def test_export_submission_on_sample(tiny_course_root, sample_export):
    out, result = sample_export
    assert set(result["paths"]) == {"classification", "reid"}
    assert result["timings"]["extract"] > 0 and result["images_per_second"] > 0
    table, lines, q_names, g_names = _check_files(out, tiny_course_root, 100)
    assert table["id"].tolist() == sorted(g_names)
    assert [q for q, _ in lines] == sorted(q_names)
    assert all(len(ranked) == len(g_names) for _, ranked in lines)  # top_k capped by the gallery size
    assert sorted(p.name for p in out.iterdir()) == sorted([CLASSIFICATION_FILE, REID_FILE, "submission.json"])
    assert check_submission(out)["files"].keys() == {CLASSIFICATION_FILE, REID_FILE}

    # An untrained model's scores are arbitrary (exact scores of hand-made submissions: tests/test_scoring.py);
    # its mAP must still equal the course AP of threshold.py's per-query loop on the same lists.
    score = score_submission(tiny_course_root, out)
    assert score["num_queries"] == len(q_names)
    truth = read_ground_truth(tiny_course_root)
    test_pid = truth[truth["split"] == "test"].set_index("file")["pid"]
    query_pid = truth[truth["split"] != "test"].set_index("file")["pid"]  # names repeat across the two splits
    column = {g: i for i, g in enumerate(g_names)}
    lists = [[column[g] for g in ranked] for _, ranked in lines]
    expected = course_map(lists, query_pid[[q for q, _ in lines]].to_numpy(), test_pid[g_names].to_numpy())
    assert score["mAP"] == pytest.approx(expected, abs=1e-12)
    assert 0 <= score["attribute_accuracy"] <= 1 and score["rank1"] <= score["rank5"] <= score["rank10"]


def test_export_with_rerank(tiny_course_root, tiny_checkpoint, sample_export, tmp_path, fp32):
    plain_dir, plain = sample_export
    reranked = export.export_submission(tiny_course_root, tiny_checkpoint, tmp_path, top_k=100, rerank=True,
                                        fast_path=fp32, num_workers=0)
    assert "rerank" in reranked["timings"]
    _check_files(tmp_path, tiny_course_root, 100)
    # the attribute file does not depend on re-ranking; the rankings do
    assert (plain_dir / CLASSIFICATION_FILE).read_bytes() == (tmp_path / CLASSIFICATION_FILE).read_bytes()
    assert plain["paths"]["reid"].read_text() != reranked["paths"]["reid"].read_text()


def test_export_market_layout(tiny_market_root, tiny_checkpoint, tmp_path, fp32):
    export.export_submission(tiny_market_root, tiny_checkpoint, tmp_path, top_k=5, fast_path=fp32, num_workers=0)
    _, lines, _, g_names = _check_files(tmp_path, tiny_market_root, 5)
    assert lines[0][0].endswith(".jpg") and "_c" in lines[0][0]  # official names, e.g. 0002_c1s1_000451_03.jpg
    assert score_submission(tiny_market_root, tmp_path) is None  # no ground_truth.csv there


def test_failed_export_keeps_previous_submission(tiny_course_root, tiny_checkpoint, sample_export, tmp_path, fp32,
                                                 monkeypatch):
    for name in (CLASSIFICATION_FILE, REID_FILE):  # a previous, valid submission
        (tmp_path / name).write_bytes((sample_export[0] / name).read_bytes())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    real = export.attributes_to_rows

    def broken_rows(pred, names):  # a bug that sets two upper-body colours in one row
        df = real(pred, names)
        df.loc[0, ["upblack", "upwhite"]] = 2
        return df

    monkeypatch.setattr(export, "attributes_to_rows", broken_rows)
    with pytest.raises(ExportError, match="upper-body colours"):
        export.export_submission(tiny_course_root, tiny_checkpoint, tmp_path, top_k=10, fast_path=fp32, num_workers=0)
    # neither file was touched: both are validated before either is written
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_cli_export_and_bad_input(tiny_course_root, tiny_checkpoint, tmp_path, capsys):
    from reid_utils.cli import main

    code = main(["export", "--data", str(tiny_course_root), "--checkpoint", str(tiny_checkpoint),
                 "--out", str(tmp_path / "sub"), "--top-k", "7"])
    assert code == 0
    assert "reid_test.txt" in capsys.readouterr().out
    _check_files(tmp_path / "sub", tiny_course_root, 7)

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export", "--data", str(tiny_course_root), "--checkpoint", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "bad.pt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["export", "--data", str(tmp_path / "missing"), "--checkpoint", str(tiny_checkpoint),
                 "--out", str(tmp_path / "x")]) == 2
    assert main(["export", "--data", str(tiny_course_root), "--checkpoint", str(tiny_checkpoint),
                 "--out", str(tmp_path / "x"), "--top-k", "0"]) == 2
    assert not (tmp_path / "x").exists()  # nothing partial


@pytest.mark.slow
@pytest.mark.real_data
def test_export_on_real_course_data(course_data, tmp_path):
    """The real course release: 19,679 test rows and 2,248 query lines (an untrained model), re-ranked.

    Timings (see benchmarks/) are printed, not asserted.
    """
    from reid_utils.engine.runtime import fast_path

    # the format at full scale is what is tested, not the model: the cheapest input, no flip
    ckpt = _untrained_checkpoint(tmp_path / "best.pt", 64, 32, num_ids=600)
    start = time.perf_counter()
    result = export.export_submission(course_data, ckpt, tmp_path / "out", top_k=100, flip=False, rerank=True,
                                      fast_path=fast_path("cpu"))  # re-ranked at full size, as the default does
    print(f"real export: {time.perf_counter() - start:.0f} s, {result['timings']}")
    table, lines, _, _ = _check_files(tmp_path / "out", course_data, 100)
    assert len(table) == 19_679
    assert len(lines) == 2_248
    assert all(len(ranked) == 100 for _, ranked in lines)
