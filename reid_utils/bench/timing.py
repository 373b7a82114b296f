"""Interleaved timing and the per-side process switches."""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch

from ..engine.runtime import FastPath


def interleaved(sides: dict[str, Callable[[], object]], reps: int, warmup: int = 0) -> dict[str, list[float]]:
    """Seconds of each call of each side: ``warmup + reps`` rounds, the order reversed every
    round (A B, B A, A B ...) so that neither side always runs first; warm-up rounds are dropped.

    Each callable must finish its work before returning (synchronise the GPU inside).

    >>> seconds = interleaved({"a": lambda: None, "b": lambda: None}, reps=3, warmup=1)
    >>> [len(seconds["a"]), len(seconds["b"])]
    [3, 3]
    """
    names = list(sides)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + reps):
        for name in names if round_index % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            sides[name]()
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                seconds[name].append(elapsed)
    return seconds


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def sync(device: torch.device) -> None:
    """Wait for the GPU (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def activate(fp: FastPath) -> None:
    """Per-side process switches on CUDA: cuDNN autotuning and TF32 on the fast side only
    (so the plain side is true fp32)."""
    if fp.device.type == "cuda":
        torch.backends.cudnn.benchmark = fp.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = fp.autocast_dtype is not None
        torch.backends.cudnn.allow_tf32 = fp.autocast_dtype is not None


def log(message: str) -> None:
    """Progress on stderr (stdout stays one JSON object with ``--json``)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def error_line(error: BaseException) -> str:
    """``"RuntimeError: its first line"``: an exception in one line, for a result that reports it."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def size_key(size) -> str:
    """``(256, 128)`` -> ``"256x128"``."""
    return f"{size[0]}x{size[1]}"
