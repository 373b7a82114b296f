"""Evaluation from a checkpoint, the evaluate command, and the figures of notebook 04.

An untrained ResNet-18 at 64x32 is saved through the engine's checkpoint API with the run's
validation split next to it, then evaluated on the tiny synthetic datasets. The numbers of an
untrained model are arbitrary; the tests check structure, the protocol logic, the numbers against
the per-query reference evaluator on the features returned, and the results table against them.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from reid_utils.config import TrainConfig
from reid_utils.data import load_dataset, make_split, save_split
from reid_utils.engine.checkpoint import save_checkpoint
from reid_utils.engine.runtime import fast_path
from reid_utils.errors import CheckpointError, DataError
from reid_utils.evaluation.report import (
    REID_COLUMNS,
    evaluate_checkpoint,
    evaluate_command,
    format_result,
    results_table,
    to_jsonable,
)
from reid_utils.metrics.reference import evaluate_reid_reference
from reid_utils.models import build_model_from_config
from reid_utils.schema import GROUP_NAMES
from reid_utils.visualize import figures as visualize

HEIGHT, WIDTH = 64, 32


def _save_untrained(run_dir, root, seed: int = 0):
    """An untrained resnet18 checkpoint in ``run_dir`` with its split saved next to it."""
    split = make_split(load_dataset(root), val_fraction=0.25, seed=0)
    save_split(split, run_dir / "split.json")
    cfg = TrainConfig.from_overrides(model="resnet50", depth=18, height=HEIGHT, width=WIDTH, out_dir=str(run_dir))
    torch.manual_seed(seed)
    model = build_model_from_config(cfg, num_ids=split.num_train_ids)
    return save_checkpoint(run_dir / "best.pt", model, cfg, split.pid_to_label), split


@pytest.fixture(scope="module")
def course_run(tiny_course_root, tmp_path_factory):
    path, split = _save_untrained(tmp_path_factory.mktemp("course_run"), tiny_course_root)
    return path, split


@pytest.fixture(scope="module")
def fp():
    return fast_path("cpu", precision="fp32")


@pytest.fixture(scope="module")
def course_result(course_run, tiny_course_root, fp):
    return evaluate_checkpoint(course_run[0], tiny_course_root, fast_path=fp, num_workers=0)


def _row(reid: pd.DataFrame, flip: bool, rerank: bool, protocol: str) -> pd.Series:
    """The one row of ``result["reid"]`` for a setting."""
    rows = reid[(reid["flip"] == flip) & (reid["rerank"] == rerank) & (reid["protocol"] == protocol)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_evaluate_checkpoint_on_validation_split(course_result, course_run):
    result, split = course_result, course_run[1]
    assert result["source"].startswith("validation split") and "split.json" in result["source"]
    assert (result["num_query"], result["num_gallery"]) == (len(split.val_query), len(split.val_gallery))
    reid = result["reid"]
    assert len(reid) == 2 * 2 * 2  # flip x rerank x protocol
    assert set(map(tuple, reid[["flip", "rerank", "protocol"]].to_numpy().tolist())) == {
        (f, r, p) for f in (False, True) for r in (False, True) for p in ("market", "course")
    }
    values = reid[list(REID_COLUMNS)].to_numpy()
    assert np.all((values >= 0) & (values <= 1))
    assert np.all(reid["rank1"] <= reid["rank5"]) and np.all(reid["rank5"] <= reid["rank10"])
    assert len(result["cmc"]) == 8 and all(len(c) == 50 for c in result["cmc"].values())

    table = result["attribute_table"]
    assert list(table.columns) == ["flip", *GROUP_NAMES, "mean", "mA", "F1"]
    assert len(table) == 2
    np.testing.assert_allclose(table[list(GROUP_NAMES)].mean(axis=1), table["mean"])
    assert result["model"]["params"] > 1e6 and result["model"]["gflops"] > 0
    assert (result["model"]["height"], result["model"]["width"]) == (HEIGHT, WIDTH)


def test_evaluate_checkpoint_matches_the_reference_evaluator(course_result):
    feats = course_result["features"]  # the last flip setting (True), distances before re-ranking
    query, gallery = feats["query"], feats["gallery"]
    for protocol in ("market", "course"):
        expected = evaluate_reid_reference(feats["distmat"].numpy(), query["pids"], gallery["pids"], query["camids"],
                                           gallery["camids"], protocol=protocol)
        row = _row(course_result["reid"], True, False, protocol)
        assert row["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
        assert row["rank1"] == pytest.approx(expected["cmc"][0], abs=1e-6)
        assert row["mINP"] == pytest.approx(expected["mINP"], abs=1e-6)
        assert row["num_valid_queries"] == expected["num_valid_queries"]
        np.testing.assert_allclose(course_result["cmc"][f"{protocol} +flip"], expected["cmc"], atol=1e-6)


def test_threshold_and_junk_reports(course_result):
    t = course_result["threshold"]
    assert t["threshold"] > 0 and 0 <= t["f1"] <= 1 and 0 <= t["two_fold_f1"] <= 1
    junk = course_result["junk"]
    assert junk["flagged"] >= 1 and junk["gallery_junk"] == 0  # the course training images hold no junk
    for protocol in ("market", "course"):
        assert set(junk[protocol]) == {"mAP", "mAP_demoted", "rank1", "rank1_demoted"}


def test_flip_changes_features_but_not_protocol_logic(course_run, course_result, tiny_course_root, fp):
    # the flip settings in the other order: the features returned are then the unflipped ones
    unflipped = evaluate_checkpoint(course_run[0], tiny_course_root, flip=(True, False), rerank=(False,), fast_path=fp,
                                    num_workers=0)
    flipped, plain = course_result["features"], unflipped["features"]
    assert [plain[s]["paths"] for s in ("query", "gallery")] == [flipped[s]["paths"] for s in ("query", "gallery")]
    assert not torch.allclose(plain["query"]["embeddings"], flipped["query"]["embeddings"])
    assert not torch.allclose(plain["distmat"], flipped["distmat"])
    for protocol in ("market", "course"):
        off, on = (_row(course_result["reid"], flip, False, protocol) for flip in (False, True))
        assert _row(unflipped["reid"], False, False, protocol)["mAP"] == pytest.approx(off["mAP"], abs=1e-6)
        # make_split gives every query a gallery image of its identity from another camera, so neither
        # protocol skips a query, with or without flip
        assert off["num_valid_queries"] == on["num_valid_queries"] == course_result["num_query"]


def test_results_table_and_report(course_result):
    table = results_table({"r18": course_result, "again": course_result})
    assert list(table.index) == ["r18", "again"]
    for column in ("params (M)", "GFLOPs", *GROUP_NAMES, "mean", "mA", "F1", "rank1", "mAP +flip +rerank", "mINP +flip"):
        assert column in table.columns
    row, reid, attributes = table.loc["r18"], course_result["reid"], course_result["attributes"][True]
    assert row["params (M)"] == course_result["model"]["params"] / 1e6
    assert row["rank1"] == pytest.approx(100 * _row(reid, False, False, "market")["rank1"])
    assert row["mAP +flip +rerank"] == pytest.approx(100 * _row(reid, True, True, "market")["mAP"])
    assert row["mINP +flip"] == pytest.approx(100 * _row(reid, True, False, "market")["mINP"])
    assert row["age"] == pytest.approx(100 * attributes["accuracy"]["age"])  # attributes: the flip row
    assert row["mean"] == pytest.approx(100 * attributes["mean_accuracy"])
    assert row["mA"] == pytest.approx(100 * attributes["mA"])
    course = results_table({"r18": course_result}, protocol="course").loc["r18"]
    assert course["mAP +rerank"] == pytest.approx(100 * _row(reid, False, True, "course")["mAP"])
    text = format_result(course_result)
    assert "re-ID (%)" in text and "junk flagging" in text and "distance threshold" in text
    json.dumps(to_jsonable(course_result))  # JSON-safe without the feature tensors


def test_market_layout_uses_official_query_gallery(tiny_market_root, tmp_path, fp):
    ckpt, _ = _save_untrained(tmp_path, tiny_market_root)
    result = evaluate_checkpoint(ckpt, tiny_market_root, rerank=(False,), flip=(True,), fast_path=fp, num_workers=0)
    index = load_dataset(tiny_market_root)
    assert result["source"].startswith("official")
    assert (result["num_query"], result["num_gallery"]) == (len(index.query), len(index.test))
    assert result["junk"]["gallery_junk"] == sum(r.pid <= 0 for r in index.test) > 0
    assert len(result["attribute_table"]) == 1  # test identities carry their .mat attributes


def test_course_test_images_cannot_be_evaluated(course_run, tiny_course_root, fp):
    with pytest.raises(DataError, match="unlabelled"):
        evaluate_checkpoint(course_run[0], tiny_course_root, source="test", fast_path=fp)


def test_validation_identities_seen_in_training_are_rejected(tiny_course_root, tmp_path, fp):
    split = make_split(load_dataset(tiny_course_root), val_fraction=0.25, seed=0)
    cfg = TrainConfig.from_overrides(model="resnet50", depth=18, height=HEIGHT, width=WIDTH)
    leaked = {pid: i for i, pid in enumerate(sorted(set(split.pid_to_label) | set(split.val_pids)))}
    model = build_model_from_config(cfg, num_ids=len(leaked))
    path = save_checkpoint(tmp_path / "best.pt", model, cfg, leaked)  # no split.json: rebuilt from the config
    with pytest.raises(CheckpointError, match="validation identities"):
        evaluate_checkpoint(path, tiny_course_root, fast_path=fp)


def test_evaluate_command_writes_outputs(course_run, tiny_course_root, tmp_path, capsys):
    result = evaluate_command(tiny_course_root, course_run[0], out=tmp_path / "eval", rerank=False, flip=False)
    printed = capsys.readouterr().out
    assert "re-ID (%)" in printed and "wrote" in printed
    assert len(result["reid"]) == 2
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert saved["num_query"] == result["num_query"]
    assert len(pd.read_csv(tmp_path / "eval" / "reid.csv")) == 2
    assert list(pd.read_csv(tmp_path / "eval" / "attributes.csv").columns)[-3:] == ["mean", "mA", "F1"]


# ---------------------------------------------------------------------------------------------
# Figures: each returns a Figure and saves a PNG


def test_figures(course_result, tmp_path):
    feats = course_result["features"]
    query, gallery = feats["query"], feats["gallery"]
    ranked = torch.topk(feats["distmat"], k=min(10, feats["distmat"].shape[1]), largest=False).indices.numpy()
    accuracy = course_result["attributes"][True]["accuracy"]
    figures = {
        "accuracy": visualize.plot_attribute_accuracy(accuracy, path=tmp_path / "accuracy.png"),
        "accuracy_models": visualize.plot_attribute_accuracy({"a": accuracy, "b": accuracy}),
        "grid": visualize.plot_retrieval_grid(query["paths"][:3], gallery["paths"], ranked[:3], query["pids"][:3],
                                              gallery["pids"], path=tmp_path / "grid.png"),
        "cmc": visualize.plot_cmc(course_result["cmc"], path=tmp_path / "cmc.png"),
        "tsne": visualize.plot_tsne(torch.cat([query["embeddings"], gallery["embeddings"]]).numpy(),
                                    np.concatenate([query["pids"], gallery["pids"]]), path=tmp_path / "tsne.png"),
        "confusion": visualize.plot_confusion_matrices(course_result["attributes"][True]["confusion"],
                                                       path=tmp_path / "confusion.png"),
        "images": visualize.plot_images(gallery["paths"][:4], titles=["a", "b", "c", "d"]),
    }
    boxes = torch.rand(2, 3, 30, 4) * torch.tensor([1.0, 1.0, 2.0, 2.0]) - torch.tensor([0.0, 0.0, 1.0, 1.0])
    figures["boxes"] = visualize.plot_attribute_boxes(gallery["paths"][:2], boxes, path=tmp_path / "boxes.png")
    assert all(isinstance(f, Figure) for f in figures.values())
    for name in ("accuracy", "grid", "cmc", "tsne", "confusion", "boxes"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    grid_axes = figures["grid"].axes
    frame = grid_axes[1].spines["top"].get_edgecolor()  # the first result of the first query
    g = ranked[0, 0]
    expected = visualize.MATCH_COLOUR if gallery["pids"][g] == query["pids"][0] else visualize.MISMATCH_COLOUR
    from matplotlib.colors import to_rgba

    assert frame == to_rgba(expected)


def test_attribute_boxes_rejects_unknown_attribute(tiny_course_root):
    with pytest.raises(KeyError, match="unknown attribute"):
        visualize.plot_attribute_boxes([], torch.zeros(1, 3, 30, 4), attributes=["wings"])


def test_cli_evaluate(course_run, tiny_course_root, tmp_path, capsys):
    from reid_utils.cli import main

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--data", str(tiny_course_root), "--checkpoint", str(course_run[0]),
                 "--no-rerank", "--no-flip", "--out", str(out)]) == 0
    assert "re-ID (%)" in capsys.readouterr().out
    assert json.loads(out.read_text())["model"]["name"] == "resnet50"

    assert main(["evaluate", "--data", str(tiny_course_root), "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert "missing.pt" in err and "Traceback" not in err
