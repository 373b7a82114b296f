"""The benchmark run: settings presets and :func:`run_benchmarks`."""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..config import TrainConfig
from ..engine.runtime import fast_path, select_device
from ..errors import ConfigError
from .contention import bench_contention
from .loader import bench_loader
from .model_speed import bench_infer, bench_train, bench_trunks
from .ranking import bench_eval, bench_rerank
from .recipe import bench_recipe
from .report import TARGETS, format_report, jsonable, machine_info
from .timing import size_key

SECTIONS = ("train", "infer", "eval", "rerank", "loader", "contention", "trunks", "recipe")

#: Headline keys of the result; always present (None when their section did not run).
HEADLINE_KEYS = (
    "train_speedup",
    "infer_speedup",
    "infer_compiled_speedup",
    "eval_speedup",
    "eval_max_abs_diff",
    "rerank_seconds",
    "rerank_peak_gb",
    "loader_img_s",
    "contention_slowdown",
    "osnet_train_speedup",
    "recipe_fastest",
    "recipe_compiled_speedup",
)


@dataclass(frozen=True)
class BenchSettings:
    """Sizes and repetitions of one run (:data:`FULL` and :data:`QUICK` are the presets)."""

    sizes: tuple[tuple[int, int], ...] = ((256, 128), (128, 64))  # (H, W) inputs; the first is the headline
    depth: int = 50  # ResNet depth of the APR-Net trunk
    num_ids: int = 751  # identity classes (Market-1501 train)
    batch_p: int = 8  # training batch = batch_p identities x batch_k images (PK)
    batch_k: int = 4
    train_reps: int = 5  # timed training steps per side and size
    infer_batch: int = 64  # images per inference forward pass
    infer_reps: int = 5  # timed forward passes per side and size
    warmup: int = 2  # untimed rounds per side first (oneDNN / cuDNN choose their kernels)
    compile: bool = True  # also time torch.compile inference at the first size
    feature_dim: int = 553  # embedding size of the eval / re-ranking problems (APR-Net: 512 + 41)
    eval_queries: int = 3368  # Market-1501 test split: 3,368 queries ...
    eval_gallery: int = 15913  # ... against 15,913 gallery images
    eval_reps: int = 3  # timed runs per evaluator (the loop takes ~40 s a run on 2 cores)
    rerank_queries: int = 3368  # re-ranking problem: 3,368 + 15,913 images
    rerank_gallery: int = 15913
    rerank_check_queries: int = 40  # small problem for the exactness check against the reference
    rerank_check_gallery: int = 160
    loader_batches: int = 30  # timed batches per size (after the first, which starts the workers)
    data_root: str | None = None  # loader data (None: REID_DATA_ROOT, course data, sample)
    prefer_course_data: bool = True  # loader: use ../shared/data/market1501_course when present
    contention_reps: int = 6  # timed training steps per contention case
    recipe_size: tuple[int, int] = (TrainConfig.height, TrainConfig.width)  # the CPU recipe's step ...
    recipe_depth: int = TrainConfig.depth  # ... (ResNet depth of its apr) ...
    recipe_batch_p: int = TrainConfig.batch_p  # ... and identities per batch (x batch_k images)


FULL = BenchSettings()
QUICK = BenchSettings(
    sizes=((128, 64),),
    batch_p=2,
    batch_k=4,
    train_reps=3,
    infer_batch=16,
    infer_reps=3,
    warmup=1,
    compile=False,
    eval_queries=600,
    eval_gallery=3000,
    eval_reps=2,
    rerank_queries=300,
    rerank_gallery=1500,
    loader_batches=8,
    prefer_course_data=False,
    contention_reps=3,
    recipe_batch_p=4,
)


def run_benchmarks(
    quick: bool = False,
    as_json: bool = False,
    sections: Sequence[str] | str | None = None,
    device: str = "auto",
    settings: BenchSettings | None = None,
) -> dict:
    """Run the benchmark ``sections`` (default: all of :data:`SECTIONS`), print, return the result.

    Args:
        quick: the :data:`QUICK` preset (under a minute) instead of :data:`FULL` (~10 minutes on
            2 CPU cores).
        as_json: print one JSON object on stdout instead of the tables (progress goes to stderr).
        sections: names from :data:`SECTIONS` (a list, or comma-separated strings); unknown
            names raise ConfigError.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ... (see :func:`~reid_utils.engine.runtime.select_device`).
        settings: explicit sizes and repetitions (overrides ``quick``).

    Returns:
        dict (JSON-ready) with the :data:`HEADLINE_KEYS`: ``train_speedup`` and
        ``infer_speedup`` (fast / plain images per second at the first size, eager),
        ``infer_compiled_speedup`` (torch.compile on the fast path / plain), ``eval_speedup``
        (loop seconds / fast seconds), ``eval_max_abs_diff``, ``rerank_seconds``,
        ``rerank_peak_gb``, ``loader_img_s``, ``contention_slowdown``,
        ``osnet_train_speedup`` (osnet / ResNet-18 apr training images per second at the first
        size), ``recipe_fastest`` (the fastest variant of the recipe's training step) and
        ``recipe_compiled_speedup`` (its torch.compile'd step / the eager one; None where
        compiling was off or failed); None when their section did not run; and
        ``machine``, ``settings``, ``targets``, ``sections``, ``quick``, ``seconds``, plus one
        dict per section that ran (``train`` and ``infer`` hold per-size entries under
        ``"sizes"``, e.g. ``result["train"]["sizes"]["128x64"]["fast_img_s"]``).
    """
    chosen = parse_sections(sections)
    settings = settings or (QUICK if quick else FULL)
    device = select_device(device)
    fast, plain = fast_path(device), fast_path(device, precision="fp32")
    saved = _global_state()
    start = time.perf_counter()
    result: dict = {key: None for key in HEADLINE_KEYS}
    result.update(
        quick=bool(quick), sections=list(chosen), machine=machine_info(device, fast, plain),
        settings=asdict(settings), targets={key: f"{op} {value:g}" for key, (op, value) in TARGETS.items()},
    )
    headline = size_key(settings.sizes[0])
    try:
        fast.apply()  # thread count (the same for both sides)
        if "train" in chosen:
            result["train"] = bench_train(settings, fast, plain)
            result["train_speedup"] = result["train"]["sizes"][headline]["speedup"]
        if "infer" in chosen:
            result["infer"] = bench_infer(settings, fast, plain)
            result["infer_speedup"] = result["infer"]["sizes"][headline]["speedup"]
            result["infer_compiled_speedup"] = result["infer"]["sizes"][headline].get("compiled_speedup")
        if "eval" in chosen:
            result["eval"] = bench_eval(settings)
            result["eval_speedup"] = result["eval"]["speedup"]
            result["eval_max_abs_diff"] = result["eval"]["max_abs_diff"]
        if "rerank" in chosen:
            result["rerank"] = bench_rerank(settings)
            result["rerank_seconds"] = result["rerank"].get("seconds")
            result["rerank_peak_gb"] = result["rerank"].get("peak_gb")
        if "loader" in chosen:
            train_sizes = result.get("train", {}).get("sizes", {})
            result["loader"] = bench_loader(settings, fast, {k: v["fast_img_s"] for k, v in train_sizes.items()})
            result["loader_img_s"] = result["loader"]["sizes"][headline]["loader_img_s"]
        if "contention" in chosen:
            result["contention"] = bench_contention(settings, fast)
            result["contention_slowdown"] = result["contention"].get("contention_slowdown")
        if "trunks" in chosen:
            result["trunks"] = bench_trunks(settings, fast)
            result["osnet_train_speedup"] = result["trunks"]["sizes"][headline]["speedup"]
        if "recipe" in chosen:
            result["recipe"] = bench_recipe(settings, fast)
            result["recipe_fastest"] = result["recipe"]["fastest"]
            result["recipe_compiled_speedup"] = result["recipe"]["compiled_speedup"]
    finally:
        _restore_global_state(saved)
    result["seconds"] = time.perf_counter() - start
    result = jsonable(result)
    print(json.dumps(result, indent=2) if as_json else format_report(result), flush=True)
    return result


def parse_sections(sections: Sequence[str] | str | None) -> tuple[str, ...]:
    """Section names in :data:`SECTIONS` order; None or nothing -> all of them.

    >>> parse_sections(["eval,train"])
    ('train', 'eval')
    """
    if sections is None:
        return SECTIONS
    if isinstance(sections, str):
        sections = [sections]
    names = [name.strip() for item in sections for name in item.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown benchmark section(s) {unknown}; valid sections: {', '.join(SECTIONS)}")
    return tuple(name for name in SECTIONS if name in names) or SECTIONS


def _global_state() -> dict:
    return {
        "threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
    }


def _restore_global_state(state: dict) -> None:
    torch.set_num_threads(state["threads"])
    torch.backends.cudnn.benchmark = state["cudnn_benchmark"]
    torch.backends.cuda.matmul.allow_tf32 = state["matmul_tf32"]
    torch.backends.cudnn.allow_tf32 = state["cudnn_tf32"]
