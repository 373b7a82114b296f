"""The time budget plans the schedule: the arithmetic, then a real (tiny) budgeted run."""
import time

import pytest

from reid_utils.config import TrainConfig
from reid_utils.engine import main
from reid_utils.engine.budget import EpochPlanner, epochs_that_fit, estimate_epoch_seconds
from reid_utils.engine.optim import COSINE_FLOOR, LRSchedule


def test_epochs_that_fit():
    assert epochs_that_fit(100.0, 30.0) == 3
    assert epochs_that_fit(90.0, 30.0) == 3  # exactly
    assert epochs_that_fit(29.0, 30.0) == 0
    assert epochs_that_fit(-5.0, 30.0) == 0
    with pytest.raises(ValueError):
        epochs_that_fit(10.0, 0.0)


def test_estimate_epoch_seconds_counts_training_and_validation():
    # 100 steps of 1 s; validation of 300 images with flip: 1.3 * 300 * 2 * (1 / 32 / 3) s
    assert estimate_epoch_seconds(1.0, 100, 300, 32, flip=True) == pytest.approx(100 + 1.3 * 600 / 96)
    assert estimate_epoch_seconds(1.0, 100, 0, 32, flip=True) == 100


def make_planner(num_epochs=None, cap=None, logs=None):
    planner = EpochPlanner(600, cap=cap, steps_per_epoch=10, batch_size=8, val_images=0, flip=False,
                           start=time.monotonic(), log=(logs if logs is not None else []).append)
    planner.num_epochs = num_epochs
    return planner


def test_planner_follows_the_speed_both_ways_within_the_cap():
    logs = []
    planner = make_planner(num_epochs=5, logs=logs)
    # epochs of 50 s: about 11 fit in the ~580 s left, one of them kept in reserve -> it grows
    assert 10 <= planner.after_epoch(1, [50.0]) <= 11
    assert "re-planned" in logs[-1]
    assert planner.after_epoch(2, [50.0, 400.0]) == 3  # a slow epoch (a busy machine) shrinks it to what fits
    assert planner.after_epoch(3, [50.0, 400.0, 5.0]) == 3  # and a complete plan does not grow again
    assert make_planner(num_epochs=8).after_epoch(3, [400.0, 5.0, 5.0]) == 4  # the slowest of the last three decides
    assert make_planner(num_epochs=8).after_epoch(3, [800.0, 5.0, 5.0]) == 3  # never below the epochs done
    assert make_planner(num_epochs=8).after_epoch(3, [5.0, 5.0, 5.0]) > 100  # a free machine: it grows
    assert make_planner(num_epochs=4, cap=6).after_epoch(1, [10.0]) == 6  # num_epochs caps it


def test_planner_holds_its_plan_while_epoch_times_jitter():
    planner = make_planner(num_epochs=None)
    planner.budget = 100.0  # epochs of about 10 s: 9 fit with one in reserve
    assert planner.after_epoch(1, [10.0]) == 9
    planner.start -= 10.0 * 7  # seven more epochs done, the last ones 8 % slower than planned
    assert planner.after_epoch(8, [10.0, 10.8, 10.8]) == 9  # the last epoch still fits: the plan holds
    planner.start -= 10.8
    assert planner.after_epoch(9, [10.8, 10.8, 10.8]) == 9


def test_a_replanned_cosine_continues_without_a_jump():
    cfg = TrainConfig.from_overrides(num_epochs=10, warmup_epochs=1)
    schedule = LRSchedule(cfg, steps_per_epoch=10)
    before = schedule(40)
    for epochs in (20, 6):  # grows, then shrinks
        schedule.set_num_epochs(epochs, at_step=40)
        assert schedule(40) == pytest.approx(before)
        assert schedule(41) <= before  # still decaying
    assert schedule(6 * 10 - 1) == pytest.approx(COSINE_FLOOR)  # the floor at the new end
    state = schedule.state_dict()
    resumed = LRSchedule(cfg, steps_per_epoch=10)
    resumed.load_state_dict(state)
    assert [resumed(s) for s in range(40, 60)] == [schedule(s) for s in range(40, 60)]


def test_tiny_budget_ends_inside_it_with_the_lr_annealed(tiny_course_root, tmp_path):
    budget_minutes = 0.25
    start = time.monotonic()
    history = main(data_root=str(tiny_course_root), out_dir=str(tmp_path / "run"), height=64, width=32, batch_p=4,
                   batch_k=2, val_fraction=0.25, precision="fp32", num_threads=1, progress=False,
                   warmup_epochs=1, max_minutes=budget_minutes, patience=0)
    seconds = time.monotonic() - start
    assert seconds < budget_minutes * 60
    assert len(history["epoch"]) > 1
    timeline = f"lr {history['lr']}, epoch seconds {history['epoch_seconds']}, {seconds:.1f} s in all"
    assert history["lr"][-1] <= 1.5 * COSINE_FLOOR * 1e-3, timeline  # the peak lr is 1e-3: annealed to the floor
    assert sum(history["epoch_seconds"]) > 0.5 * budget_minutes * 60  # and the budget was used
