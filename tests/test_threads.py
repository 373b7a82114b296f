"""The thread governor: the arithmetic, then its decisions on simulated /proc readings."""
import pytest
import torch

from reid_utils.engine import threads
from reid_utils.engine.threads import ThreadGovernor, cores_used_by_others, threads_for


def test_cores_used_by_others_subtracts_our_own_time():
    # 2 cores for 100 ticks each: 200 ticks, all busy, 100 of them ours -> others use 1 core
    assert cores_used_by_others((100, 400, 50), (300, 600, 150), cores=2) == 1.0
    assert cores_used_by_others((100, 400, 50), (300, 600, 250), cores=2) == 0.0  # all ours
    assert cores_used_by_others((0, 0, 0), (0, 0, 0), cores=2) == 0.0


def test_threads_for_rounds_and_clamps():
    assert [threads_for(f, 2) for f in (0.0, 0.4, 0.6, 1.0, 1.6, 2.0, 7.0)] == [1, 1, 1, 1, 2, 2, 2]


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_governor_follows_a_busy_neighbour(monkeypatch, restore_threads):
    readings = iter([
        (0, 0, 0),          # at construction
        (200, 200, 100),    # both cores busy, half of it ours: a neighbour uses one core -> 1 thread
        (380, 400, 280),    # 180 of 200 ticks busy, all ours: the neighbour left -> 2 threads
    ])
    monkeypatch.setattr(threads, "_cpu_times", lambda cpus=None: next(readings))
    monkeypatch.setattr(threads, "_allowed_cpus", lambda: {0, 1})
    torch.set_num_threads(2)
    logs = []
    governor = ThreadGovernor(max_threads=2, log=logs.append)
    assert governor.update() == 1 and torch.get_num_threads() == 1
    assert "threads: 2 -> 1" in logs[-1]
    assert governor.update() == 2 and torch.get_num_threads() == 2


def test_governor_does_nothing_without_proc(monkeypatch, restore_threads):
    monkeypatch.setattr(threads, "_cpu_times", lambda cpus=None: None)
    torch.set_num_threads(2)
    governor = ThreadGovernor(max_threads=2)
    assert not governor.active and governor.update() == 2


def test_cpu_times_reads_this_machine():
    reading = threads._cpu_times(threads._allowed_cpus())
    if reading is None:
        pytest.skip("no /proc/stat here")
    busy, total, ours = reading
    assert 0 <= busy <= total and ours >= 0
