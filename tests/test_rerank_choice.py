"""``export_submission(rerank="auto")``: re-ranking where validation says it helps (issue 12).

The decision's numbers are checked against a slow reference (the paper's step-by-step
re-ranking and a per-query AP loop); the export-level tests check what lands in the files and
the manifest, and that a checkpoint without a usable validation split (a refit, a dataset with
no training images) is re-ranked instead of failing.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reid_utils.config import TrainConfig
from reid_utils.data import load_dataset, make_split, save_split
from reid_utils.engine.checkpoint import save_checkpoint
from reid_utils.errors import ExportError
from reid_utils.export import REID_FILE, check_submission, export_submission
from reid_utils.export import rerank_choice, threshold
from reid_utils.export.rerank_choice import choose_rerank, parse_rerank, rerank_gain
from reid_utils.metrics.reference import re_ranking_reference
from reid_utils.models import build_model_from_config

pytestmark = pytest.mark.usefixtures("one_thread")


def clusters(query_noise: float, seed: int = 0, num_ids: int = 6, per_id: int = 24, queries: int = 3, dim: int = 16):
    """Validation features: tight gallery clusters around unit centres, queries ``query_noise`` away."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    gallery = np.concatenate([c + 0.35 * rng.normal(size=(per_id, dim)) / np.sqrt(dim) for c in centres])
    query = np.concatenate([c + query_noise * rng.normal(size=(queries, dim)) / np.sqrt(dim) for c in centres])

    def part(embeddings, per):
        return {"embeddings": torch.tensor(embeddings, dtype=torch.float32), "pids": np.repeat(np.arange(num_ids), per)}

    return {"query": part(query, queries), "gallery": part(gallery, per_id), "described": "a made-up split"}


def slow_course_map(distmat: np.ndarray, q_pids, g_pids, top_k: int) -> float:
    """Course mAP of the top-k lists, one query at a time: every same-identity image is relevant."""
    aps = []
    for row, pid in zip(distmat, q_pids):
        ranked = np.argsort(row, kind="stable")[:top_k]
        hits, total = 0, 0.0
        for rank, j in enumerate(ranked, start=1):
            if g_pids[j] == pid:
                hits += 1
                total += hits / rank
        aps.append(total / np.sum(g_pids == pid))
    return float(np.mean(aps))


def test_parse_rerank():
    assert parse_rerank(None) == parse_rerank("auto") == parse_rerank(" AUTO ") == "auto"
    assert parse_rerank(True) is True and parse_rerank("on") is True
    assert parse_rerank(False) is False and parse_rerank("off") is False
    for bad in (1, 0, "yes", 0.5):
        with pytest.raises(ExportError, match=r"expected True, False or 'auto'"):
            parse_rerank(bad)


def test_gain_matches_a_slow_reference_and_noisy_queries_gain():
    features = clusters(query_noise=2.0)
    top_k = 30
    gain = rerank_gain(features, top_k=top_k)
    unit = {k: torch.nn.functional.normalize(features[k]["embeddings"], dim=1).double().numpy()
            for k in ("query", "gallery")}  # cosine: re-ranking runs on unit vectors
    q_pids, g_pids = features["query"]["pids"], features["gallery"]["pids"]
    plain = 1.0 - unit["query"] @ unit["gallery"].T
    reranked = re_ranking_reference(unit["query"], unit["gallery"])
    assert gain["plain_mAP"] == pytest.approx(slow_course_map(plain, q_pids, g_pids, top_k), abs=1e-6)
    assert gain["reranked_mAP"] == pytest.approx(slow_course_map(reranked, q_pids, g_pids, top_k), abs=1e-4)
    assert gain["num_queries"] == 18
    # queries far from their clusters: the gallery's k-reciprocal structure pulls them back
    assert gain["reranked_mAP"] > gain["plain_mAP"] + 0.02


@pytest.mark.parametrize("noise, expected", [(2.0, True), (0.2, False)])
def test_choose_rerank_on_where_it_helps_and_off_on_a_tie(monkeypatch, noise, expected):
    features = clusters(query_noise=noise)
    monkeypatch.setattr(rerank_choice, "validation_features", lambda *args, **kwargs: features)
    rerank, record, reused = choose_rerank(None, "run/best.pt", {}, None, None, top_k=30)
    assert rerank is expected and reused is features
    assert record["mode"] == "auto" and record["chosen_on"] == "a made-up split"
    if not expected:  # well-separated clusters: both rankings are perfect, a tie keeps the plain one
        assert record["plain_mAP"] == record["reranked_mAP"] == 1.0
    assert f"{record['plain_mAP']:.4f} plain, {record['reranked_mAP']:.4f} re-ranked" in record["reason"]


def _checkpoint(path, pid_to_label: dict, **overrides):
    cfg = TrainConfig.from_overrides(model="resnet50", depth=18, height=64, width=32, **overrides)
    torch.manual_seed(0)
    return save_checkpoint(path, build_model_from_config(cfg, num_ids=len(pid_to_label)), cfg, pid_to_label)


@pytest.fixture(scope="module")
def fp32():
    from reid_utils.engine.runtime import fast_path

    return fast_path("cpu", precision="fp32")


@pytest.fixture(scope="module")
def validated(tiny_course_root, tmp_path_factory):
    """A checkpoint with its run's split beside it, as ``train`` leaves it."""
    run = tmp_path_factory.mktemp("validated_run")
    split = make_split(load_dataset(tiny_course_root), val_fraction=0.25, seed=0)
    save_split(split, run / "split.json")
    return _checkpoint(run / "best.pt", split.pid_to_label)


def test_export_auto_decides_on_the_validation_split(tiny_course_root, validated, fp32, tmp_path, monkeypatch):
    common = dict(top_k=30, fast_path=fp32, num_workers=0)
    auto = export_submission(tiny_course_root, validated, tmp_path / "auto", **common)  # the default: "auto"
    settings = check_submission(tmp_path / "auto")["settings"]
    choice = settings["rerank_choice"]
    assert choice["mode"] == "auto" and choice["chosen_on"] == f"validation split {validated.parent / 'split.json'}"
    assert 0 <= choice["plain_mAP"] <= 1 and 0 <= choice["reranked_mAP"] <= 1
    assert settings["rerank"] is auto["rerank"] is (choice["reranked_mAP"] > choice["plain_mAP"])
    assert "rerank_choice" in auto["timings"]
    # the files are those of the explicit setting it chose; explicit settings record no choice
    given = export_submission(tiny_course_root, validated, tmp_path / "given", rerank=auto["rerank"], **common)
    assert (tmp_path / "auto" / REID_FILE).read_bytes() == (tmp_path / "given" / REID_FILE).read_bytes()
    assert given["rerank_choice"] is None and check_submission(tmp_path / "given")["settings"]["rerank_choice"] is None
    # threshold="auto" reuses the features the decision extracted: the split goes through the model once
    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs.get("purpose"))
        return extract_validation(*args, **kwargs)

    extract_validation = threshold.validation_features
    monkeypatch.setattr(threshold, "validation_features", counted)
    monkeypatch.setattr(rerank_choice, "validation_features", counted)
    cut = export_submission(tiny_course_root, validated, tmp_path / "cut", threshold="auto", **common)
    assert calls == ["rerank='auto'"] and 1 <= cut["mean_results"] <= 30


def test_without_a_validation_split_auto_reranks(tiny_course_root, fp32, tmp_path):
    pids = sorted({r.pid for r in load_dataset(tiny_course_root).train})
    refit = _checkpoint(tmp_path / "refit" / "best.pt", {pid: i for i, pid in enumerate(pids)},
                        val_fraction=0.0)  # trained on every identity
    result = export_submission(tiny_course_root, refit, tmp_path / "sub", top_k=10, fast_path=fp32, num_workers=0)
    assert result["rerank"] is True and "rerank" in result["timings"]
    assert result["rerank_choice"]["mode"] == "auto"
    assert result["rerank_choice"]["reason"].startswith("no validation split to decide on (rerank='auto' needs")
    assert "no queries" in result["rerank_choice"]["reason"]


def test_a_refit_decides_on_the_run_it_repeats(tiny_course_root, validated, fp32, tmp_path):
    """``runs/apr_all_ids/best.pt`` has no split of its own: ``runs/apr/best.pt`` and its split decide."""
    pids = sorted({r.pid for r in load_dataset(tiny_course_root).train})
    refit = _checkpoint(validated.parent.with_name(validated.parent.name + "_all_ids") / "best.pt",
                        {pid: i for i, pid in enumerate(pids)}, val_fraction=0.0)
    result = export_submission(tiny_course_root, refit, tmp_path / "sub", top_k=30, fast_path=fp32, num_workers=0)
    choice = result["rerank_choice"]
    assert choice["chosen_on"] == (f"validation split {validated.parent / 'split.json'}, of {validated} "
                                   "(the run this refit repeats)")
    assert result["rerank"] is (choice["reranked_mAP"] > choice["plain_mAP"])
    # the scores are those of the validated run's own decision
    own = export_submission(tiny_course_root, validated, tmp_path / "own", top_k=30, fast_path=fp32, num_workers=0)
    assert own["rerank_choice"]["plain_mAP"] == choice["plain_mAP"]
    assert own["rerank_choice"]["reranked_mAP"] == choice["reranked_mAP"]


def test_data_of_other_people_is_exported_not_refused(validated, fp32, tmp_path):
    """The hidden evaluation's data: other identities, so the run's split cannot be rebuilt there."""
    from reid_utils.synthetic.generator import write_sample

    hidden = write_sample(tmp_path / "hidden", num_ids=10, seed=1, layout="course", images_per_id=4)
    result = export_submission(hidden, validated, tmp_path / "sub", top_k=10, fast_path=fp32, num_workers=0)
    assert result["rerank"] is True and "no validation split to decide on" in result["rerank_choice"]["reason"]
    assert "split does not match the dataset" in result["rerank_choice"]["reason"]
    assert len((tmp_path / "sub" / REID_FILE).read_text().splitlines()) == result["num_queries"]


def test_cli_says_what_it_chose(tiny_course_root, validated, tmp_path, capsys):
    from reid_utils.cli import main

    assert main(["export", "--data", str(tiny_course_root), "--checkpoint", str(validated),
                 "--out", str(tmp_path / "auto"), "--top-k", "5"]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("re-ranking ")]
    assert len(line) == 1 and "plain" in line[0] and "re-ranked" in line[0]
    assert main(["export", "--data", str(tiny_course_root), "--checkpoint", str(validated),
                 "--out", str(tmp_path / "off"), "--top-k", "5", "--no-rerank"]) == 0
    assert "re-ranking off\n" in capsys.readouterr().out
    assert check_submission(tmp_path / "off")["settings"]["rerank"] is False
