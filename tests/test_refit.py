"""The final fit on every identity (issue 12): ``engine.refit`` and how the notebooks find it."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from reid_utils.data import load_dataset
from reid_utils.engine import best_epoch, load_checkpoint, main, refit, refit_dir, validated_run
from reid_utils.errors import CheckpointError
from reid_utils.notebook import find_checkpoints, refit_of

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def validated(tiny_course_root, tmp_path_factory):
    """A smoke run with validation, two epochs, in ``out/reid/apr``."""
    run = tmp_path_factory.mktemp("refit_out") / "reid" / "apr"
    main(model="apr", smoke=True, num_epochs=2, max_steps=2, data_root=str(tiny_course_root), out_dir=str(run))
    return run


@pytest.fixture(scope="module")
def refitted(validated, tiny_course_root):
    """The refit's history (its folder: ``refit_dir(validated)``)."""
    return refit(validated, model="apr", smoke=True, max_steps=2, data_root=str(tiny_course_root),
                 val_fraction=0.3, split_file="ignored.json", num_epochs=9)  # the refit replaces these three


def _copy(validated, tmp_path):
    """The validated run and its refit, copied with their times (tests that touch files use these)."""
    out = tmp_path / "out"
    shutil.copytree(validated.parent.parent, out, copy_function=shutil.copy2)
    return out / "reid" / "apr"


def test_refit_trains_every_identity_for_the_epochs_validation_chose(validated, refitted, tiny_course_root):
    folder = refit_dir(validated)
    assert folder == validated.parent / "apr_all_ids" and (folder / "best.pt").is_file()
    chosen = int(best_epoch(json.loads((validated / "history.json").read_text()))["epoch"])  # by "score"
    assert chosen == load_checkpoint(validated / "best.pt")["epoch"]
    assert refitted["epoch"] == list(range(1, chosen + 1))
    ckpt = load_checkpoint(folder / "best.pt")
    assert ckpt["config"]["val_fraction"] == 0.0 and ckpt["config"]["split_file"] is None
    every = {r.pid for r in load_dataset(tiny_course_root).train}
    validated_ids = set(load_checkpoint(validated / "best.pt")["pid_to_label"])
    assert set(ckpt["pid_to_label"]) == every and len(every) > len(validated_ids)  # a third more people
    assert np.isnan(np.asarray(refitted.get("mAP", []), dtype=float)).all()  # no validation: nothing to evaluate
    assert validated_run(folder / "best.pt") == validated / "best.pt" and validated_run(validated / "best.pt") is None


def test_a_run_without_validation_cannot_choose_a_refit_length(tiny_course_root, tmp_path):
    run = tmp_path / "reid" / "apr"
    main(model="apr", smoke=True, val_fraction=0.0, data_root=str(tiny_course_root), out_dir=str(run))
    with pytest.raises(CheckpointError, match=r"best.pt: trained without validation, so nothing chose the refit's length"):
        refit(run, model="apr", smoke=True, data_root=str(tiny_course_root))


def test_resume_never_continues_the_refit_of_an_earlier_recipe(validated, refitted, tiny_course_root, tmp_path):
    run = _copy(validated, tmp_path)
    best = refit_dir(run) / "best.pt"
    options = dict(model="apr", smoke=True, max_steps=2, data_root=str(tiny_course_root), resume=True)
    before = best.stat().st_mtime_ns
    refit(run, **options)  # a finished refit of this recipe: only reloaded
    assert best.stat().st_mtime_ns == before
    stamp = (run / "best.pt").stat().st_mtime - 60
    for path in refit_dir(run).iterdir():  # now it predates the validated run: an earlier recipe's
        os.utime(path, (stamp, stamp))
    refit(run, **options)
    assert best.stat().st_mtime > stamp + 60  # trained again


def test_resume_starts_a_refit_with_other_settings_again(validated, refitted, tiny_course_root, tmp_path):
    """The refit follows its run's settings: resuming it under other ones trains it anew, never half applied."""
    run = _copy(validated, tmp_path)
    best = refit_dir(run) / "best.pt"
    before = best.stat().st_mtime_ns
    refit(run, model="apr", smoke=True, max_steps=2, data_root=str(tiny_course_root), resume=True, lr=5e-4)
    assert best.stat().st_mtime_ns > before and load_checkpoint(best)["config"]["lr"] == 5e-4


def test_notebooks_leave_refits_out_of_evaluation_and_export_them(validated, refitted, tmp_path):
    run = _copy(validated, tmp_path)
    out = run.parent.parent
    refit_ckpt = refit_dir(run) / "best.pt"
    assert "reid/apr" in find_checkpoints(out) and "reid/apr_all_ids" not in find_checkpoints(out)
    assert refit_of(run / "best.pt") == refit_ckpt
    stamp = (run / "best.pt").stat().st_mtime - 60
    os.utime(refit_ckpt, (stamp, stamp))  # older than its run: an earlier recipe's
    assert refit_of(run / "best.pt") is None
    assert refit_of(run.parent / "resnet50" / "best.pt") is None
