"""Evaluation and re-ranking benchmarks at Market-1501 size, with their slow references.

The references live in :mod:`reid_utils._reference` (so tests import them from the installed
package) and are re-exported here:

* :func:`evaluate_reid_reference`: torchreid's per-query NumPy loop;
* :func:`re_ranking_reference`: k-reciprocal re-ranking step by step (small problems only).

Benchmarks (items 3 and 4 of the suite):

* :func:`bench_evaluation`: ``evaluate_reid`` vs the loop on a synthetic Market-sized problem
  (3,368 queries x 15,913 gallery images, junk, distractors, same-camera matches), interleaved,
  medians, speed-up and max abs difference of mAP / mINP / CMC;
* :func:`bench_rerank`: ``re_ranking`` seconds and peak resident memory at Market size, in a
  fresh child process (peak RSS is per process).

Command line: ``python -m benchmarks.eval_reference [eval|rerank|all] [--dim 2048] [--threads 1]``
(prints JSON).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from reid_utils._reference import evaluate_reid_reference, re_ranking_reference

__all__ = [
    "evaluate_reid_reference",
    "re_ranking_reference",
    "market_like_distmat",
    "market_like_features",
    "bench_evaluation",
    "bench_rerank",
]

MARKET_NUM_QUERY = 3368
MARKET_NUM_GALLERY = 15913


def market_like_distmat(seed=0, num_query=MARKET_NUM_QUERY, num_gallery=MARKET_NUM_GALLERY, num_ids=750, dim=128):
    """A synthetic Market-like evaluation problem.

    750 identities seen by 6 cameras; the gallery holds ~82 % identity images, ~9 % distractors
    (id 0) and ~8 % junk (id -1). Features are identity centre + noise, so the ranking is
    realistic (mAP around 0.6), and many matches share the query's camera.

    Returns:
        ``distmat (Q, G) float32`` squared Euclidean, ``q_pids, g_pids, q_camids, g_camids``.
    """
    rng = np.random.default_rng(seed)
    q_pids = np.resize(np.arange(1, num_ids + 1), num_query)
    num_distractors, num_junk = int(0.094 * num_gallery), int(0.082 * num_gallery)
    g_pids = np.concatenate([
        rng.integers(1, num_ids + 1, num_gallery - num_distractors - num_junk),
        np.zeros(num_distractors, np.int64),
        -np.ones(num_junk, np.int64),
    ])
    q_camids, g_camids = rng.integers(0, 6, num_query), rng.integers(0, 6, num_gallery)
    centers = rng.standard_normal((num_ids + 1, dim)).astype(np.float32)

    def features(pids):
        noise = 1.2 * rng.standard_normal((len(pids), dim)).astype(np.float32)
        return centers[np.maximum(pids, 0)] * (pids > 0)[:, None] + noise

    qf, gf = features(q_pids), features(g_pids)
    distmat = (qf**2).sum(1)[:, None] + (gf**2).sum(1)[None, :] - 2 * qf @ gf.T
    return distmat.astype(np.float32), q_pids, g_pids, q_camids, g_camids


def market_like_features(seed=0, num_query=MARKET_NUM_QUERY, num_gallery=MARKET_NUM_GALLERY, dim=2048, num_ids=1500):
    """L2-normalised float32 torch features ``(Q, dim), (G, dim)`` with identity structure."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, num_ids, (num_query + num_gallery,), generator=generator)
    centers = torch.randn(num_ids, dim, generator=generator)
    q = torch.randn(num_query, dim, generator=generator)
    g = torch.randn(num_gallery, dim, generator=generator)
    for x, x_ids in ((q, ids[:num_query]), (g, ids[num_query:])):  # in place: a small memory peak
        x += centers[x_ids]
        x /= x.norm(dim=1, keepdim=True)
    return q, g


def bench_evaluation(repeats=3, seed=0) -> dict:
    """``evaluate_reid`` vs the per-query loop at Market size: medians of interleaved runs."""
    from reid_utils.metrics import evaluate_reid

    problem = market_like_distmat(seed)
    fast_times, loop_times, fast_cpu, loop_cpu = [], [], [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fast = evaluate_reid(*problem)
        fast_times.append(time.perf_counter() - start)
        fast_cpu.append(time.process_time() - start_cpu)
        start, start_cpu = time.perf_counter(), time.process_time()
        loop = evaluate_reid_reference(*problem)
        loop_times.append(time.perf_counter() - start)
        loop_cpu.append(time.process_time() - start_cpu)
    diff = max(
        abs(fast["mAP"] - loop["mAP"]), abs(fast["mINP"] - loop["mINP"]), float(np.abs(fast["cmc"] - loop["cmc"]).max())
    )
    fast_s, loop_s = statistics.median(fast_times), statistics.median(loop_times)
    return {
        "eval_seconds": fast_s,
        "eval_loop_seconds": loop_s,
        "eval_speedup": loop_s / fast_s,
        "eval_max_abs_diff": diff,
        # CPU seconds: both sides are single-threaded, so on a busy shared machine these are
        # closer to what an idle core would give than the wall-clock times.
        "eval_cpu_seconds": statistics.median(fast_cpu),
        "eval_loop_cpu_seconds": statistics.median(loop_cpu),
        "eval_mAP": fast["mAP"],
        "eval_problem": f"{problem[0].shape[0]} x {problem[0].shape[1]} (market protocol)",
    }


def _rerank_in_this_process(dim: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from reid_utils.rerank import re_ranking

    q, g = market_like_features(dim=dim)
    before_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    start, start_cpu = time.perf_counter(), time.process_time()
    re_ranking(q, g)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # ru_maxrss is in KiB on Linux
    return {
        "rerank_seconds": seconds,
        "rerank_cpu_seconds": cpu_seconds,  # summed over threads
        "rerank_peak_gb": peak_gb,
        "rerank_peak_before_call_gb": before_gb,
        "rerank_dim": dim,
        "rerank_threads": threads,
    }


def bench_rerank(dim=2048, threads=1) -> dict:
    """``re_ranking`` at Market size (3,368 + 15,913 features of ``dim``), in a fresh process.

    ``rerank_peak_gb`` is that process's peak resident memory (Python, torch, the features and
    the re-ranking together); ``rerank_peak_before_call_gb`` is the peak before the call.
    """
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.eval_reference", "rerank", "--dim", str(dim), "--threads", str(threads)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=["eval", "rerank", "all"])
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension for re-ranking")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for re-ranking")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved evaluation runs")
    args = parser.parse_args(argv)
    result = {}
    if args.what == "rerank":  # the child process of bench_rerank
        result = _rerank_in_this_process(args.dim, args.threads)
    else:
        if args.what in ("eval", "all"):
            result.update(bench_evaluation(args.repeats))
        if args.what == "all":
            result.update(bench_rerank(args.dim, args.threads))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
