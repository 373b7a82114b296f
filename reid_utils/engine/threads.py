"""CPU threads that survive a busy machine.

Why a second CPU-bound process made two-thread training 3-5x slower instead of 2x: torch's
intra-op threads meet at a barrier after every parallel region (each convolution, each
matmul). Linux's autogroup scheduler gives every terminal session an equal share of the CPU,
so next to one busy process from another terminal our session gets one core's worth of time
for two threads. One of them is then often descheduled while the other reaches the barrier
and waits for it, spinning (OpenMP's default wait policy) and so burning the share the first
one needs. ``nice`` cannot help: the share is per session, not per process.

The fix: use as many threads as there are cores that *other* processes leave free. The
:class:`ThreadGovernor` measures that from ``/proc/stat`` (the CPU time of the cores we may
run on) minus ``/proc/self/stat`` (ours) over the last interval, before training and again after every
epoch, and calls ``torch.set_num_threads`` when the answer changes; each change is logged.
With one busy process on two cores it trains on one thread, which owns a whole core. Where
``/proc`` cannot be read (macOS, Windows) it does nothing.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

#: Seconds sampled before training starts, when there is no previous interval to look at.
FIRST_SAMPLE_SECONDS = 0.5


def _allowed_cpus() -> set[int] | None:
    """The CPUs this process may run on (affinity, cpusets), or None where that is unknown."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _cpu_times(cpus: set[int] | None = None) -> tuple[float, float, float] | None:
    """``(busy, all, ours)`` CPU ticks since boot, summed over ``cpus`` (the per-CPU lines of
    /proc/stat; None: all of them), or None where /proc cannot be read. Counting only the
    CPUs we may use keeps a busy neighbour on *our* cores visible on a big shared host."""
    busy = total = 0.0
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *values = line.split()
                if not (name.startswith("cpu") and name[3:].isdigit()):
                    continue
                if cpus is not None and int(name[3:]) not in cpus:
                    continue
                fields = [float(v) for v in values]
                idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
                all_ticks = sum(fields[:8])  # user nice system idle iowait irq softirq steal
                busy, total = busy + all_ticks - idle, total + all_ticks
        with open("/proc/self/stat", encoding="ascii") as f:
            ours = f.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    if total <= 0:
        return None
    return busy, total, float(ours[11]) + float(ours[12])  # utime + stime of all our threads


def cores_used_by_others(before: tuple[float, float, float], after: tuple[float, float, float], cores: int) -> float:
    """Cores' worth of CPU time other processes used between two :func:`_cpu_times` samples.

    >>> cores_used_by_others((100, 400, 50), (300, 600, 150), cores=2)  # 200 busy of 200, 100 ours
    1.0
    """
    busy, total, ours = (a - b for a, b in zip(after, before))
    if total <= 0:
        return 0.0
    return max(0.0, (busy - ours) / total * cores)


def threads_for(free_cores: float, max_threads: int) -> int:
    """Threads for ``free_cores`` (rounded, at least 1, at most ``max_threads``).

    >>> threads_for(1.0, 2), threads_for(1.7, 2), threads_for(0.2, 2), threads_for(3.9, 2)
    (1, 2, 1, 2)
    """
    return max(1, min(max_threads, int(free_cores + 0.5)))


class ThreadGovernor:
    """Keeps torch's intra-op threads at the cores other processes leave free (module docstring).

    ``governor = ThreadGovernor(max_threads=2, log=print)``; ``governor.update()`` before
    training and after each epoch. ``update`` returns the thread count it set.
    """

    def __init__(self, max_threads: int, log: Callable[[str], None] = lambda message: None):
        self.max_threads = max(1, int(max_threads))
        self.log = log
        self.threads = torch.get_num_threads()
        self.cpus = _allowed_cpus()
        self.cores = len(self.cpus) if self.cpus else (os.cpu_count() or 1)
        self._last = _cpu_times(self.cpus)

    @property
    def active(self) -> bool:
        return self._last is not None and self.max_threads > 1

    def update(self) -> int:
        if not self.active:
            return self.threads
        now = _cpu_times(self.cpus)
        if now is None:
            return self.threads
        if now[1] - self._last[1] < 10 * self.cores:  # too short an interval to say anything: sample a little
            time.sleep(FIRST_SAMPLE_SECONDS)
            now = _cpu_times(self.cpus) or now
        others = cores_used_by_others(self._last, now, self.cores)
        self._last = now
        free = min(self.max_threads, self.cores - others)
        threads = threads_for(free, self.max_threads)
        if threads != self.threads:
            self.log(f"threads: {self.threads} -> {threads} (other processes use {others:.1f} cores)")
            torch.set_num_threads(threads)
            self.threads = threads
        return threads
