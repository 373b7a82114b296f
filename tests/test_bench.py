"""The benchmark suite runs and reports what it promises (keys, correctness); timings are never asserted."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from reid_utils.bench import HEADLINE_KEYS, BenchSettings, interleaved, market_like_problem, run_benchmarks
from reid_utils.cli import main
from reid_utils.errors import ConfigError

#: Tiny sizes for the model sections: the code paths of the full run in a few seconds.
TINY = BenchSettings(
    sizes=((64, 32),), depth=18, num_ids=10, batch_p=2, batch_k=2, train_reps=1, infer_batch=4, infer_reps=1,
    warmup=0, compile=False, eval_queries=200, eval_gallery=900, eval_reps=1, rerank_queries=30,
    rerank_gallery=120, rerank_check_queries=12, rerank_check_gallery=48, loader_batches=2, prefer_course_data=False,
    recipe_size=(64, 32), recipe_batch_p=2,
)


def test_quick_json_eval_and_loader(tiny_course_root, monkeypatch, capsys):
    monkeypatch.setenv("REID_DATA_ROOT", str(tiny_course_root))
    result = run_benchmarks(quick=True, as_json=True, sections=["eval", "loader"])
    printed = json.loads(capsys.readouterr().out)  # stdout is exactly one JSON object
    assert printed == result
    assert set(HEADLINE_KEYS) <= set(result)
    for key in ("machine", "settings", "targets", "seconds", "eval", "loader"):
        assert key in result
    for key in ("cpu", "cores", "torch", "cpu_bf16", "device", "fast_path", "plain_path"):
        assert key in result["machine"]
    assert result["sections"] == ["eval", "loader"]
    assert result["train_speedup"] is None and result["infer_speedup"] is None  # not run

    assert result["eval_max_abs_diff"] <= 1e-6  # fast evaluator == per-query loop
    evaluation = result["eval"]
    assert (evaluation["num_query"], evaluation["num_gallery"]) == (600, 3000)
    assert 0.5 < evaluation["mAP"] <= 1.0  # the synthetic problem is a realistic one
    assert evaluation["speedup"] > 0 and result["eval_speedup"] == evaluation["speedup"]

    loader = result["loader"]
    assert loader["data_root"] == str(tiny_course_root)
    assert loader["num_images"] == 16 * 6
    assert result["loader_img_s"] == loader["sizes"]["128x64"]["loader_img_s"] > 0
    assert loader["sizes"]["128x64"]["tensor_img_s"] > 0


def test_train_and_infer_sections_tiny_model(capsys):
    result = run_benchmarks(settings=TINY, sections="train,infer")
    table = capsys.readouterr().out
    for section in ("train", "infer"):
        entry = result[section]["sizes"]["64x32"]
        assert entry["fast_img_s"] > 0 and entry["plain_img_s"] > 0
        assert len(entry["fast_rep_seconds"]) == len(entry["plain_rep_seconds"]) == 1
        assert entry["speedup"] == pytest.approx(entry["fast_img_s"] / entry["plain_img_s"])
        assert result[f"{section}_speedup"] == entry["speedup"]
        assert f"| {section} img/s | 64x32 |" in table
    assert result["train"]["batch_size"] == 4
    assert result["eval_speedup"] is None


def test_trunks_section_compares_osnet_with_resnet18(capsys):
    result = run_benchmarks(settings=TINY, sections="trunks")
    table = capsys.readouterr().out
    entry = result["trunks"]["sizes"]["64x32"]
    assert entry["osnet_img_s"] > 0 and entry["resnet18_img_s"] > 0
    assert entry["speedup"] == pytest.approx(entry["osnet_img_s"] / entry["resnet18_img_s"])
    assert result["osnet_train_speedup"] == entry["speedup"]
    # forward + backward cost: OSNet needs about half of ResNet-18's FLOPs per image
    assert 0.3 < entry["osnet_gflops_per_image"] / entry["resnet18_gflops_per_image"] < 0.7
    assert "| train img/s, osnet vs apr resnet18 (fast path) | 64x32 |" in table


def test_recipe_section_times_each_variant_against_the_recipe(capsys):
    result = run_benchmarks(settings=TINY, sections="recipe")
    table = capsys.readouterr().out
    recipe = result["recipe"]
    variants = recipe["variants"]
    other_format = "contiguous" if "channels_last" in recipe["path"] else "channels_last"
    # TINY: 2 identities x 2 images; half and twice the identities
    assert set(variants) == {"recipe", "batch2", "batch8", other_format}
    assert {name: v["batch_size"] for name, v in variants.items()} == {
        "recipe": 4, "batch2": 2, "batch8": 8, other_format: 4}
    for v in variants.values():
        assert len(v["rep_seconds"]) == 1
        assert v["img_s"] == pytest.approx(v["batch_size"] / v["rep_seconds"][0])
        assert v["vs_recipe"] == pytest.approx(v["img_s"] / variants["recipe"]["img_s"])
    assert result["recipe_fastest"] == max(variants, key=lambda name: variants[name]["img_s"])
    assert result["recipe_compiled_speedup"] is None  # compile off in TINY
    assert recipe["size"] == "64x32" and recipe["model"] == "apr (resnet18)"
    assert "| train img/s, batch8 vs the recipe's step (batch 4) | 64x32 |" in table
    assert f"| train img/s, {other_format} vs the recipe's step (batch 4) | 64x32 |" in table


def test_recipe_section_compiled_variant_and_its_failure(monkeypatch, capsys):
    """The compiled step's wiring (torch.compile replaced by the identity: compiling a training
    step takes a minute) and a compile failure, reported in one line instead of a variant."""
    settings = dataclasses.replace(TINY, compile=True)
    monkeypatch.setattr(torch, "compile", lambda model: model)
    result = run_benchmarks(settings=settings, sections="recipe")
    recipe = result["recipe"]
    assert recipe["variants"]["compiled"]["batch_size"] == 4 and recipe["compile_seconds"] > 0
    assert result["recipe_compiled_speedup"] == recipe["variants"]["compiled"]["vs_recipe"]
    assert "| train img/s, compiled (compiled in " in capsys.readouterr().out

    def fail(model):
        raise RuntimeError("no C compiler found\nsecond line")

    monkeypatch.setattr(torch, "compile", fail)
    result = run_benchmarks(settings=settings, sections="recipe")
    assert result["recipe"]["compile_error"] == "RuntimeError: no C compiler found"
    assert "compiled" not in result["recipe"]["variants"] and result["recipe_compiled_speedup"] is None
    assert "| train, recipe step, torch.compile | 64x32 | failed: RuntimeError: no C compiler found |" in (
        capsys.readouterr().out)


def test_rerank_section_reports_seconds_and_memory():
    pytest.importorskip("reid_utils.metrics.rerank")
    result = run_benchmarks(settings=TINY, as_json=True, sections=["rerank"])
    rerank = result["rerank"]
    assert "error" not in rerank, rerank.get("error")
    assert result["rerank_seconds"] == rerank["seconds"] > 0
    assert result["rerank_peak_gb"] == rerank["peak_gb"]  # max(0, peak - baseline): never negative
    assert rerank["shape"] == [30, 120] and rerank["check_size"] == [12, 48]
    # the fast re-ranking runs in float32 here, the reference in float64: rounding only (about 1e-6, see
    # test_rerank.py's float32 test); a wrong neighbour set or weight would differ by 1e-3 or more
    assert rerank["max_abs_diff"] <= 1e-4


def test_cli_bench_json(capsys):
    assert main(["bench", "--json", "--quick", "--only", "eval"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sections"] == ["eval"] and result["quick"] is True
    assert result["eval_max_abs_diff"] <= 1e-6


def test_unknown_section_is_a_config_error():
    with pytest.raises(ConfigError, match="valid sections: train, infer, eval, rerank, loader"):
        run_benchmarks(quick=True, sections=["training"])


def test_interleaved_alternates_and_drops_warmup():
    calls = []
    seconds = interleaved({"fast": lambda: calls.append("fast"), "plain": lambda: calls.append("plain")},
                          reps=3, warmup=1)
    assert calls == ["fast", "plain", "plain", "fast", "fast", "plain", "plain", "fast"]
    assert len(seconds["fast"]) == len(seconds["plain"]) == 3


def test_market_like_problem_has_market_structure():
    p = market_like_problem(num_query=337, num_gallery=1600, dim=32, seed=3)
    assert p["q_feats"].shape == (337, 32) and p["g_feats"].shape == (1600, 32)
    assert p["q_feats"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(p["g_feats"], axis=1), 1.0, rtol=1e-5)
    g_pids = p["g_pids"]
    assert (g_pids == -1).sum() == 80 and (g_pids == 0).sum() == 208  # 5 % junk, 13 % distractors
    assert set(p["q_pids"]) <= set(g_pids[g_pids > 0])  # every query identity is in the gallery
    assert p["q_camids"].min() >= 0 and p["g_camids"].max() <= 5
