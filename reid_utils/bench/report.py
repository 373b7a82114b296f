"""What a run was measured on, and the result as Markdown tables."""
from __future__ import annotations

import math
import os
import platform
import time

import numpy as np
import torch

from ..engine.runtime import FastPath, _cpuinfo_flags, available_cores, cpu_supports_bf16
from .timing import size_key, sync

#: Goals on the 2-core development CPU: key -> (comparison, value). Reported, never asserted.
TARGETS = {
    "train_speedup": (">=", 2.5),
    "infer_speedup": (">=", 3.0),
    "eval_speedup": (">=", 40.0),
    "eval_max_abs_diff": ("<=", 1e-6),
    "rerank_seconds": ("<=", 25.0),
    "rerank_peak_gb": ("<=", 3.0),
    "contention_slowdown": ("<=", 2.3),
}


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux), else what the platform module says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("model name", "hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


#: CPU flags that decide the fast path (vector width, fused multiply-add, native bf16 / AMX).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "neon", "asimd", "bf16")


def cpu_flags() -> list[str]:
    """Which of :data:`CPU_FLAGS` this CPU has (read from /proc/cpuinfo; empty where unreadable)."""
    found = _cpuinfo_flags() or set()
    return [flag for flag in CPU_FLAGS if flag in found]


def matmul_peak_gflops(device: torch.device, n: int = 2048, reps: int = 3) -> float:
    """The machine's measured fp32 matmul speed (GFLOP/s, best of ``reps``) with the current
    threads: the physical limit the training and inference figures are compared with."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(reps + 1):  # the first call warms up
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def machine_info(device: torch.device, fast: FastPath | None = None, plain: FastPath | None = None) -> dict:
    """CPU model and flags, cores, torch version, native bf16, device (and GPU), both paths in
    words, and the measured fp32 matmul peak."""
    info = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": available_cores(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": (fast.num_threads if fast is not None else None) or torch.get_num_threads(),
        "cpu_bf16": cpu_supports_bf16(),
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if fast is not None:
        info["fast_path"] = fast.describe()
    if plain is not None:
        info["plain_path"] = plain.describe()
    info["fp32_matmul_peak_gflops"] = matmul_peak_gflops(device)
    return info


def jsonable(value):
    """``value`` with NumPy scalars as Python numbers, tuples as lists, NaN as None and
    infinities as the strings "inf" / "-inf" (valid JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        return value if math.isfinite(value) else str(value)
    return value


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _target(key: str, value) -> str:
    """``">= 2.5 yes"`` / ``">= 2.5 NO"`` for a key of :data:`TARGETS`."""
    if key not in TARGETS or not isinstance(value, (int, float)) or isinstance(value, bool):
        return ""
    op, goal = TARGETS[key]
    ok = value >= goal if op == ">=" else value <= goal
    return f"{op} {goal:g} {'yes' if ok else 'NO'}"


def _share(entry: dict, key: str, peak: float | None, gflops_key: str = "gflops_per_image") -> str:
    """`` (12 %)``: the fp32 matmul peak's share that ``entry[key]`` images per second use,
    at ``entry[gflops_key]`` GFLOPs per image."""
    if not peak or gflops_key not in entry:
        return ""
    return f" ({100 * entry[key] * entry[gflops_key] / peak:.0f} %)"


def format_report(result: dict) -> str:
    """The result of :func:`~reid_utils.bench.run_benchmarks` as one Markdown table.

    Columns: ``benchmark | size | fast | plain | ratio | target``. Speeds are images per
    second (ratio = fast / plain), evaluation is seconds (ratio = loop / fast).
    """
    m = result["machine"]
    gpu = f" ({m['gpu']})" if m.get("gpu") else ""
    lines = [
        f"reid_utils bench{' --quick' if result.get('quick') else ''}: {m['cpu']}, {m['cores']} cores, "
        f"torch {m['torch']}, CPU bf16 {'yes' if m['cpu_bf16'] else 'no'}, device {m['device']}{gpu}",
        f"fast: {m.get('fast_path', '-')}   plain: {m.get('plain_path', '-')}",
        f"CPU flags: {' '.join(m.get('cpu_flags') or []) or '-'}; measured fp32 matmul peak "
        f"{_fmt(m.get('fp32_matmul_peak_gflops'))} GFLOP/s (the % after a speed is its share of this peak)",
        "",
        "| benchmark | size | fast | plain | ratio | target (2-core CPU) |",
        "|---|---|---|---|---|---|",
    ]
    headline = size_key(result["settings"]["sizes"][0])
    for section, key in (("train", "train_speedup"), ("infer", "infer_speedup")):
        for size, e in result.get(section, {}).get("sizes", {}).items():
            target = _target(key, e["speedup"]) if size == headline else ""
            peak = m.get("fp32_matmul_peak_gflops")
            lines.append(f"| {section} img/s | {size} | {_fmt(e['fast_img_s'])}{_share(e, 'fast_img_s', peak)} | "
                         f"{_fmt(e['plain_img_s'])}{_share(e, 'plain_img_s', peak)} | {_fmt(e['speedup'])}x | {target} |")
            if "compiled_img_s" in e:
                lines.append(f"| infer img/s, torch.compile (compiled in {_fmt(e['compile_seconds'])} s) | "
                             f"{size} | {_fmt(e['compiled_img_s'])} | {_fmt(e['plain_img_s'])} | "
                             f"{_fmt(e['compiled_speedup'])}x | |")
            if "compile_error" in e:
                lines.append(f"| infer, torch.compile | {size} | failed: {e['compile_error']} | | | |")
    if "eval" in result:
        e = result["eval"]
        lines.append(f"| eval seconds | {e['num_query']} x {e['num_gallery']} | {_fmt(e['fast_seconds'])} | "
                     f"{_fmt(e['reference_seconds'])} | {_fmt(e['speedup'])}x | "
                     f"{_target('eval_speedup', e['speedup'])} |")
        lines.append(f"| eval max abs diff (CMC, mAP, mINP) | {e['num_query']} x {e['num_gallery']} | "
                     f"{_fmt(e['max_abs_diff'])} | | | {_target('eval_max_abs_diff', e['max_abs_diff'])} |")
    if "rerank" in result:
        e = result["rerank"]
        size = f"{e.get('num_query', '?')} + {e.get('num_gallery', '?')}"
        if "seconds" in e:
            lines.append(f"| rerank seconds | {size} | {_fmt(e['seconds'])} | | | "
                         f"{_target('rerank_seconds', e['seconds'])} |")
            lines.append(f"| rerank peak GB | {size} | {_fmt(e.get('peak_gb'))} | | | "
                         f"{_target('rerank_peak_gb', e.get('peak_gb'))} |")
        if "max_abs_diff" in e:
            check = " + ".join(str(n) for n in e["check_size"])
            lines.append(f"| rerank max abs diff vs reference | {check} | {_fmt(e['max_abs_diff'])} | | | |")
        if "error" in e:
            lines.append(f"| rerank | {size} | failed: {e['error']} | | | |")
    if "loader" in result:
        e = result["loader"]
        for size, s in e["sizes"].items():
            lines.append(f"| loader img/s (DataLoader, {e['num_workers']} worker) vs train img/s | {size} | "
                         f"{_fmt(s['loader_img_s'])} | {_fmt(s.get('train_fast_img_s'))} | "
                         f"{_fmt(s.get('loader_over_train'))}x | > 1 |")
            lines.append(f"| loader img/s (on-tensor augmentation) | {size} | {_fmt(s['tensor_img_s'])} | | | |")
    if "contention" in result:
        e = result["contention"]
        if "error" in e:
            lines.append(f"| contention | | {e['error']} | | | |")
        else:
            lines.append(f"| contention: s/step next to a busy process, governor ({e['governed_threads']} threads) "
                         f"vs alone | 128x64 | {_fmt(e['busy_governed_seconds'])} | {_fmt(e['alone_seconds'])} | "
                         f"{_fmt(e['contention_slowdown'])}x slower | {_target('contention_slowdown', e['contention_slowdown'])} |")
            lines.append(f"| contention: same, fixed {e['threads']} threads (no governor) | 128x64 | "
                         f"{_fmt(e['busy_fixed_seconds'])} | {_fmt(e['alone_seconds'])} | "
                         f"{_fmt(e['contention_slowdown_fixed'])}x slower | |")
    for size, e in result.get("trunks", {}).get("sizes", {}).items():
        osnet, resnet18 = (f"{_fmt(e[f'{name}_img_s'])}"
                           f"{_share(e, f'{name}_img_s', m.get('fp32_matmul_peak_gflops'), f'{name}_gflops_per_image')}"
                           for name in ("osnet", "resnet18"))
        lines.append(f"| train img/s, osnet vs apr resnet18 (fast path) | {size} | {osnet} | {resnet18} | "
                     f"{_fmt(e['speedup'])}x | |")
    if "recipe" in result:
        e = result["recipe"]
        peak = m.get("fp32_matmul_peak_gflops")
        recipe = e["variants"]["recipe"]
        for name, v in e["variants"].items():
            if name != "recipe":
                compiled = f" (compiled in {_fmt(e['compile_seconds'])} s)" if name == "compiled" else ""
                lines.append(f"| train img/s, {name}{compiled} vs the recipe's step (batch {recipe['batch_size']}) | {e['size']} | "
                             f"{_fmt(v['img_s'])}{_share({**v, **e}, 'img_s', peak)} | "
                             f"{_fmt(recipe['img_s'])}{_share({**recipe, **e}, 'img_s', peak)} | {_fmt(v['vs_recipe'])}x | |")
        if "compile_error" in e:
            lines.append(f"| train, recipe step, torch.compile | {e['size']} | failed: {e['compile_error']} | | | |")
        lines.append(f"| train, recipe step: fastest variant | {e['size']} | {e['fastest']} | | | |")
    lines += [
        "",
        f"{result['seconds']:.0f} s in all. Medians of interleaved repetitions; ratio = fast / plain "
        "images per second (eval: loop seconds / fast seconds; loader: loader / fast training images per second).",
    ]
    return "\n".join(lines)
