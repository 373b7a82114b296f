"""Evaluation and re-ranking at Market-1501 size, on a synthetic Market-like problem.

* :func:`bench_eval`: :func:`~reid_utils.metrics.evaluate_reid` against the per-query NumPy
  loop (:func:`~reid_utils.metrics.reference.evaluate_reid_reference`), interleaved; seconds, ratio,
  and the largest difference of CMC, mAP and mINP.
* :func:`bench_rerank`: :func:`~reid_utils.metrics.rerank.re_ranking` in a child process, so that its
  peak memory (the child's peak resident memory during the call minus its resident memory just
  before it, i.e. without the interpreter, torch and the input features; see
  :func:`rerank_child`) is measured apart from this process; plus its largest difference from
  the step-by-step reference on a small problem.
"""
from __future__ import annotations

import gc
import json
import subprocess
import sys
import time

import numpy as np
import torch

from ..metrics.reference import evaluate_reid_reference, re_ranking_reference
from ..metrics.rerank import re_ranking
from ..metrics.scores import evaluate_reid
from .timing import interleaved, log, median

RERANK_OPTIONS = {"k1": 20, "k2": 6, "lambda_value": 0.3}


def market_like_problem(
    num_query: int = 3368, num_gallery: int = 15913, dim: int = 553, seed: int = 0, num_cameras: int = 6
) -> dict:
    """Query and gallery features and labels shaped like Market-1501's test split.

    About 4.5 queries per identity (750 identities at full size), each identity in the gallery;
    the gallery is 82 % identity images, 13 % distractors (pid 0) and 5 % junk (pid -1, half of
    a random person). Every image has one of ``num_cameras`` cameras, so a query has gallery
    matches in its own camera (removed by the Market protocol) and in others. Features are
    identity centre + camera bias + noise, L2-normalised; their cosine distances score like a
    trained model (rank-1 about 0.95, mAP about 0.8, mINP about 0.4).

    Returns:
        dict with ``q_feats (Q, dim)``, ``g_feats (G, dim)`` float32 arrays and ``q_pids``,
        ``g_pids``, ``q_camids``, ``g_camids`` int64 arrays.
    """
    rng = np.random.default_rng(seed)
    num_ids = max(2, round(750 * num_query / 3368))
    num_distractors, num_junk = round(0.13 * num_gallery), round(0.05 * num_gallery)
    ids = np.arange(1, num_ids + 1)
    q_pids = rng.permutation(np.resize(ids, num_query))
    g_pids = rng.permutation(np.concatenate([
        np.resize(ids, num_gallery - num_distractors - num_junk), np.zeros(num_distractors, np.int64),
        np.full(num_junk, -1, np.int64),
    ]))
    q_camids = rng.integers(0, num_cameras, num_query)
    g_camids = rng.integers(0, num_cameras, num_gallery)
    centres = rng.standard_normal((num_ids + 1, dim), dtype=np.float32)  # row 0 unused
    camera_bias = 0.55 * rng.standard_normal((num_cameras, dim), dtype=np.float32)

    def features(pids: np.ndarray, camids: np.ndarray) -> np.ndarray:
        base = centres[np.maximum(pids, 0)] * (pids > 0)[:, None]  # (N, dim); distractors: nobody
        junk = pids == -1
        base[junk] = 0.5 * centres[rng.integers(1, num_ids + 1, junk.sum())]
        x = base + camera_bias[camids] + 2.0 * rng.standard_normal((len(pids), dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return {
        "q_feats": features(q_pids, q_camids),
        "g_feats": features(g_pids, g_camids),
        "q_pids": q_pids.astype(np.int64),
        "g_pids": g_pids.astype(np.int64),
        "q_camids": q_camids.astype(np.int64),
        "g_camids": g_camids.astype(np.int64),
    }


def bench_eval(settings) -> dict:
    """Seconds of ``evaluate_reid`` and of the per-query loop (medians), and their largest
    difference in CMC, mAP and mINP (``inf`` if they disagree on the number of valid queries)."""
    num_q, num_g = settings.eval_queries, settings.eval_gallery
    log(f"eval {num_q} x {num_g}: evaluate_reid vs the per-query loop")
    problem = market_like_problem(num_q, num_g, settings.feature_dim)
    q_feats, g_feats = torch.from_numpy(problem["q_feats"]), torch.from_numpy(problem["g_feats"])
    distmat = (1.0 - q_feats @ g_feats.T).numpy()  # (Q, G) float32 cosine distances
    args = (distmat, problem["q_pids"], problem["g_pids"], problem["q_camids"], problem["g_camids"])
    outputs: dict[str, dict] = {}
    sides = {
        "fast": lambda: outputs.__setitem__("fast", evaluate_reid(*args)),
        "reference": lambda: outputs.__setitem__("reference", evaluate_reid_reference(*args)),
    }
    seconds = interleaved(sides, settings.eval_reps)
    fast, reference = outputs["fast"], outputs["reference"]
    max_abs_diff = max(
        abs(fast["mAP"] - reference["mAP"]),
        abs(fast["mINP"] - reference["mINP"]),
        float(np.max(np.abs(np.asarray(fast["cmc"]) - np.asarray(reference["cmc"])))),
    )
    if fast["num_valid_queries"] != reference["num_valid_queries"]:
        max_abs_diff = float("inf")
    return {
        "num_query": num_q,
        "num_gallery": num_g,
        "fast_seconds": median(seconds["fast"]),
        "reference_seconds": median(seconds["reference"]),
        "speedup": median(seconds["reference"]) / median(seconds["fast"]),
        "max_abs_diff": max_abs_diff,
        "mAP": fast["mAP"],
        "rank1": float(fast["cmc"][0]),
        "mINP": fast["mINP"],
        "num_valid_queries": fast["num_valid_queries"],
        "fast_rep_seconds": seconds["fast"],
        "reference_rep_seconds": seconds["reference"],
    }


def bench_rerank(settings) -> dict:
    """Re-ranking seconds and peak memory (child process), and exactness on a small problem.

    Returns ``{"seconds", "peak_gb", "baseline_gb", "max_rss_gb", "max_abs_diff", ...}``, or
    an ``"error"`` entry when the child fails.
    """
    entry = {
        "num_query": settings.rerank_queries,
        "num_gallery": settings.rerank_gallery,
        "check_size": [settings.rerank_check_queries, settings.rerank_check_gallery],
    }
    small = market_like_problem(settings.rerank_check_queries, settings.rerank_check_gallery, 64, seed=1)
    try:
        fast = re_ranking(torch.from_numpy(small["q_feats"]), torch.from_numpy(small["g_feats"]), **RERANK_OPTIONS)
    except Exception as error:  # report and carry on with the other sections
        return {**entry, "error": f"re_ranking failed: {type(error).__name__}: {error}"}
    fast = fast.detach().cpu().double().numpy() if isinstance(fast, torch.Tensor) else np.asarray(fast, np.float64)
    reference = re_ranking_reference(small["q_feats"], small["g_feats"], **RERANK_OPTIONS)
    entry["max_abs_diff"] = float(np.max(np.abs(fast - reference)))

    log(f"rerank {settings.rerank_queries} + {settings.rerank_gallery} images in a child process")
    params = {"num_query": settings.rerank_queries, "num_gallery": settings.rerank_gallery,
              "dim": settings.feature_dim, "threads": torch.get_num_threads()}
    code = "import sys; from reid_utils.bench.ranking import rerank_child; rerank_child(sys.argv[1])"
    try:
        child = subprocess.run([sys.executable, "-c", code, json.dumps(params)], capture_output=True, text=True,
                               timeout=1800)
    except subprocess.TimeoutExpired:
        return {**entry, "error": "the re-ranking child process ran longer than 30 minutes"}
    if child.returncode != 0:
        lines = (child.stderr or child.stdout).strip().splitlines()
        return {**entry, "error": f"child process exited with {child.returncode}: {lines[-1] if lines else ''}"}
    entry.update(json.loads(child.stdout.strip().splitlines()[-1]))
    return entry


def rerank_child(params_json: str) -> None:
    """The child process of :func:`bench_rerank`: time one re-ranking, print one JSON line
    ``{"seconds", "peak_gb", "baseline_gb", "max_rss_gb", "memory_probe", "shape"[, "cuda_peak_gb"]}``.

    ``peak_gb`` = peak resident memory during the call minus resident memory just before it.
    On Linux the peak is the process's ``VmHWM``, reset just before the call (``clear_refs``);
    elsewhere it is ``ru_maxrss``, which on Linux would also count the parent's memory: a
    child started by vfork + exec inherits the parent's high-water mark.
    """
    params = json.loads(params_json)
    torch.set_num_threads(params["threads"])
    problem = market_like_problem(params["num_query"], params["num_gallery"], params["dim"])
    q_feats, g_feats = torch.from_numpy(problem["q_feats"]), torch.from_numpy(problem["g_feats"])
    del problem
    gc.collect()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    probe = "VmHWM" if _reset_peak_rss() else "ru_maxrss"
    baseline = current_rss_bytes()  # interpreter, torch, features: not re-ranking's memory
    start = time.perf_counter()
    distmat = re_ranking(q_feats, g_feats, **RERANK_OPTIONS)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = peak_rss_bytes() if probe == "VmHWM" else max_rss_bytes()
    if baseline is None:  # no /proc: the best baseline left is the peak before the call
        baseline = max_rss_bytes()
    out = {"seconds": seconds, "shape": list(distmat.shape), "memory_probe": probe}
    if baseline is not None and peak is not None:
        out.update(peak_gb=max(0, peak - baseline) / 2**30, baseline_gb=baseline / 2**30, max_rss_gb=peak / 2**30)
    if cuda:
        out["cuda_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    print(json.dumps(out), flush=True)


def _reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` to its current resident memory (Linux); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return peak_rss_bytes() is not None


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def current_rss_bytes() -> int | None:
    """This process's resident memory now, in bytes (Linux ``VmRSS``; else None)."""
    kib = _proc_status_kib("VmRSS")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory since start or the last reset (Linux ``VmHWM``; else None)."""
    kib = _proc_status_kib("VmHWM")
    return None if kib is None else kib * 1024


def max_rss_bytes() -> int | None:
    """``ru_maxrss`` in bytes (None where unknown, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS: bytes; Linux: KiB
