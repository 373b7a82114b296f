"""The final fit on every identity (issue 12): ``engine.refit`` and how the notebooks find it."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from reid_utils.data import load_dataset
from reid_utils.engine import best_epoch, load_checkpoint, main, refit, refit_dir
from reid_utils.errors import CheckpointError
from reid_utils.notebook import find_checkpoints, refit_of

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def validated(tiny_course_root, tmp_path_factory):
    """A smoke run with validation, two epochs, in ``out/reid/apr``."""
    out = tmp_path_factory.mktemp("refit_out")
    run = out / "reid" / "apr"
    main(model="apr", smoke=True, num_epochs=2, max_steps=2, data_root=str(tiny_course_root), out_dir=str(run))
    return run


@pytest.fixture(scope="module")
def refitted(validated, tiny_course_root):
    """The refit's history (its folder: ``refit_dir(validated)``)."""
    return refit(validated, model="apr", smoke=True, max_steps=2, data_root=str(tiny_course_root),
                 val_fraction=0.3, split_file="ignored.json", num_epochs=9)  # the refit replaces these three


def test_refit_trains_every_identity_for_the_epochs_validation_chose(validated, refitted, tiny_course_root):
    history = refitted
    folder = refit_dir(validated)
    assert folder == validated.parent / "apr_all_ids" and (folder / "best.pt").is_file()
    chosen = int(best_epoch(json.loads((validated / "history.json").read_text()))["epoch"])
    assert history["epoch"] == list(range(1, chosen + 1))
    ckpt = load_checkpoint(folder / "best.pt")
    assert ckpt["config"]["val_fraction"] == 0.0 and ckpt["config"]["split_file"] is None
    every = {r.pid for r in load_dataset(tiny_course_root).train}
    validated_ids = set(load_checkpoint(validated / "best.pt")["pid_to_label"])
    assert set(ckpt["pid_to_label"]) == every and len(every) > len(validated_ids)  # a third more people
    assert np.isnan(np.asarray(history.get("mAP", []), dtype=float)).all()  # no validation: nothing to evaluate


def test_a_run_without_validation_cannot_choose_a_refit_length(tiny_course_root, tmp_path):
    run = tmp_path / "reid" / "apr"
    main(model="apr", smoke=True, val_fraction=0.0, data_root=str(tiny_course_root), out_dir=str(run))
    with pytest.raises(CheckpointError, match=r"best.pt: no validation history to choose the refit's length"):
        refit(run, model="apr", smoke=True, data_root=str(tiny_course_root))


def test_notebooks_leave_refits_out_of_evaluation_and_export_them(validated, refitted):
    out = validated.parent.parent
    refit_ckpt = refit_dir(validated) / "best.pt"
    assert "reid/apr" in find_checkpoints(out) and "reid/apr_all_ids" not in find_checkpoints(out)
    assert refit_of(validated / "best.pt") == refit_ckpt
    stat = (validated / "best.pt").stat()
    os.utime(refit_ckpt, (stat.st_atime, stat.st_mtime - 60))  # older than its run: an earlier recipe's
    assert refit_of(validated / "best.pt") is None
    assert refit_of(validated.parent / "resnet50" / "best.pt") is None
