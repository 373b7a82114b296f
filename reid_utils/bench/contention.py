"""Training speed next to a busy process, with and without the thread governor.

The busy process is started in a new session (``setsid``), as a program started from another
terminal is: Linux's autogroup scheduler then shares the CPU between the two sessions, which
is what made two-thread training 3-5x slower (see :mod:`reid_utils.engine.threads`). One run
measures the same training step (APR-Net ResNet-18, 128x64, batch 32, the automatic fast
path) three ways, one after the other (the busy process cannot be paused between steps):

* ``alone``: nothing else running, the usual threads;
* ``busy_fixed``: the busy process running, the usual threads (the behaviour before the fix);
* ``busy_governed``: the busy process running, the threads the governor chooses.

``contention_slowdown`` = governed / alone seconds per step (the goal is at most 2.3 on two
cores); ``contention_slowdown_fixed`` is the same without the governor.
"""
from __future__ import annotations

import subprocess
import sys
import time

import torch

from ..engine.runtime import FastPath
from ..engine.threads import ThreadGovernor
from .model_speed import apr_model, pk_batch, train_step
from .timing import log, median

#: A CPU-bound process that never ends (killed when the measurement is done).
BUSY_LOOP = "while True:\n    pass"


def start_busy_process() -> subprocess.Popen:
    """One CPU-bound Python process in its own session, as if started from another terminal."""
    return subprocess.Popen([sys.executable, "-c", BUSY_LOOP], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _seconds_per_step(step, reps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return median(times)


def bench_contention(settings, fast: FastPath) -> dict:
    """Seconds per training step alone, next to a busy process with the usual threads, and
    next to it with the governor's threads (see the module docstring)."""
    if fast.device.type != "cpu":
        return {"error": "the contention section measures CPU threads; it runs on the CPU only"}
    threads = torch.get_num_threads()
    model = apr_model(depth=18, num_ids=settings.num_ids)
    batch = pk_batch(8, 4, 128, 64, fast.device)
    step = train_step(model, fast, batch)
    reps, warmup = settings.contention_reps, settings.warmup
    log(f"contention: training step alone ({threads} threads)")
    alone = _seconds_per_step(step, reps, warmup)
    busy = start_busy_process()
    try:
        time.sleep(0.5)  # let the scheduler see it
        log(f"contention: next to a busy process, {threads} threads (no governor)")
        fixed = _seconds_per_step(step, reps, warmup)
        governor = ThreadGovernor(threads)
        governed_threads = governor.update()
        log(f"contention: next to a busy process, {governed_threads} threads (governor)")
        governed = _seconds_per_step(step, reps, warmup)
    finally:
        busy.kill()
        busy.wait()
        torch.set_num_threads(threads)
    return {
        "alone_seconds": alone,
        "busy_fixed_seconds": fixed,
        "busy_governed_seconds": governed,
        "threads": threads,
        "governed_threads": governed_threads,
        "contention_slowdown": governed / alone,
        "contention_slowdown_fixed": fixed / alone,
    }
