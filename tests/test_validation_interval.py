"""``val_every``: validation after every N-th epoch and after the last, and what depends on it
(the time budget's arithmetic, patience, best.pt, the history and its curves)."""
import math
import time

import numpy as np
import pytest

from reid_utils.engine import main
from reid_utils.engine.budget import EpochPlanner, estimate_epoch_seconds
from reid_utils.engine.checkpoint import load_checkpoint
from reid_utils.engine.optim import EarlyStopping
from reid_utils.visualize import plot_history

TINY = dict(height=64, width=32, batch_p=4, batch_k=2, val_fraction=0.25, precision="fp32", num_threads=1,
            progress=False, warmup_epochs=1)


def test_an_epoch_pays_its_share_of_the_validation_passes():
    # 100 steps of 1 s; a validation pass over 300 images with flip: 1.3 * 600 / 96 s, once in 4 epochs
    assert estimate_epoch_seconds(1.0, 100, 300, 32, flip=True, val_every=4) == pytest.approx(100 + 1.3 * 600 / 96 / 4)


@pytest.mark.parametrize("val_every, epochs", [(1, 5), (4, 7)])
def test_the_plan_spends_the_skipped_validations_on_epochs(val_every, epochs):
    planner = EpochPlanner(600, cap=None, steps_per_epoch=10, batch_size=8, val_images=100, flip=False,
                           start=time.monotonic(), log=[].append, val_every=val_every)
    planner.budget = 100.0
    # training 10 s and validation 8 s: every epoch validated, 18 s each -> 5 fit (one in reserve: 100 // 18 - 1
    # + 1); every 4th, 12 s each after keeping the last epoch's 6 s extra -> 94 // 12 = 7
    assert planner.after_epoch(1, [10.0], validation_seconds=8.0) == epochs


def test_patience_counts_the_epochs_between_validations():
    early = EarlyStopping("mAP", patience=4)
    assert early.update(0.5, 2)
    assert not early.update(0.4, 4) and not early.should_stop  # 2 epochs without improvement
    assert not early.update(0.45, 6) and early.should_stop  # 4
    every_epoch = EarlyStopping("mAP", patience=2)
    assert [every_epoch.update(v, e) for e, v in enumerate([0.5, 0.4, 0.6, 0.3], start=1)] == [True, False, True, False]
    assert every_epoch.bad_epochs == 1 and not every_epoch.should_stop


def test_a_run_validates_every_nth_epoch_and_the_last(tiny_course_root, tmp_path):
    out = tmp_path / "run"
    history = main(data_root=str(tiny_course_root), out_dir=str(out), num_epochs=5, val_every=2, patience=0, **TINY)
    assert history["epoch"] == [1, 2, 3, 4, 5]
    assert [not math.isnan(v) for v in history["mAP"]] == [False, True, False, True, True]
    assert [not math.isnan(v) for v in history["attribute_accuracy"]] == [False, True, False, True, True]
    best = load_checkpoint(out / "best.pt")
    scores = np.asarray(history["score"], dtype=float)
    assert best["epoch"] == int(np.nanargmax(scores)) + 1 in (2, 4, 5)  # best.pt among the validated epochs
    # the curves join the validated epochs instead of breaking at every gap
    fig = plot_history(history)
    assert list(fig.axes[2].lines[0].get_xdata()) == [2, 4, 5]
    assert (out / "curves.png").stat().st_size > 0


def test_a_budgeted_run_validates_its_last_epoch(tiny_course_root, tmp_path):
    history = main(data_root=str(tiny_course_root), out_dir=str(tmp_path / "run"), max_minutes=0.15, patience=0,
                   val_every=1000, **TINY)
    validated = [not math.isnan(v) for v in history["mAP"]]
    assert len(validated) > 1 and validated == [False] * (len(validated) - 1) + [True]
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == len(validated)
