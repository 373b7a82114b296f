"""Reliability of training: exact resume, NaN stops, and SIGKILL at random points (including in
the middle of a checkpoint write) never leaves an unloadable checkpoint."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import reid_utils.engine.loop as loop
from reid_utils.config import TrainConfig
from reid_utils.engine import main
from reid_utils.engine.budget import DEFAULT_NUM_EPOCHS
from reid_utils.engine.checkpoint import changed_settings, load_checkpoint, load_model_from_checkpoint
from reid_utils.errors import CheckpointError, TrainingError

TIMING_KEYS = ("train_images_per_second", "epoch_seconds")


def tiny_run(root: Path, out: Path, **overrides) -> dict:
    settings = dict(data_root=str(root), out_dir=str(out), height=64, width=32, num_epochs=3, batch_p=4,
                    batch_k=2, val_fraction=0.25, precision="fp32", num_threads=1, progress=False, max_steps=4,
                    warmup_epochs=1)
    settings.update(overrides)
    return settings


def assert_same_state(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}: {key} differs"


def assert_same_history(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key not in TIMING_KEYS:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize(
    "cache_images, triplet_weight", [(True, 1.0), (False, 0.0)], ids=["tensor-batches-pk", "dataloader-shuffled"]
)
def test_resume_after_interruption_equals_uninterrupted_run(tiny_course_root, tmp_path, monkeypatch, cache_images,
                                                            triplet_weight):
    """fp32 on the CPU: bitwise equal weights, optimizer state and history.

    Everything random is either checkpointed (python / numpy / torch RNG states) or a pure
    function of (seed, epoch) (the batch samplers and the tensor path's augmentation
    generator), so a resumed run repeats the uninterrupted one exactly.
    """
    settings = tiny_run(tiny_course_root, tmp_path / "full", cache_images=cache_images, num_workers=0,
                        triplet_weight=triplet_weight)
    full = main(**settings)

    real = loop.train_one_epoch

    def interrupted(*args, **kwargs):
        if args[5] == 1:  # epoch index 1: after epoch 1's checkpoint was written
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    cut_dir = tmp_path / "cut"
    monkeypatch.setattr(loop, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(**{**settings, "out_dir": str(cut_dir)})
    monkeypatch.setattr(loop, "train_one_epoch", real)
    assert load_checkpoint(cut_dir / "last.pt")["epoch"] == 1
    resumed = main(**{**settings, "out_dir": str(cut_dir), "resume": True})

    assert_same_history(full, resumed)
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(cut_dir / "last.pt")
    assert_same_state(a["model"], b["model"], "model")
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for key in a["optimizer"]["state"]:
        assert_same_state(a["optimizer"]["state"][key], b["optimizer"]["state"][key], f"optimizer state {key}")
    assert a["early_stopping"] == b["early_stopping"] and a["scheduler"] == b["scheduler"]
    assert load_checkpoint(tmp_path / "full" / "best.pt")["epoch"] == load_checkpoint(cut_dir / "best.pt")["epoch"]


def test_resume_without_checkpoint_starts_fresh_and_finished_run_is_kept(tiny_course_root, tmp_path):
    settings = tiny_run(tiny_course_root, tmp_path / "run", num_epochs=1, max_steps=2, resume=True)
    first = main(**settings)
    assert first["epoch"] == [1]
    again = main(**settings)  # nothing left to do: the same history, no extra epoch
    assert_same_history(first, again)


def test_a_finished_run_resumed_with_other_settings_fails_instead_of_returning_old_results(tiny_course_root, tmp_path):
    """The notebooks' flow: change a hyperparameter in ``main()`` and run again with RESUME = True."""
    settings = tiny_run(tiny_course_root, tmp_path / "run", num_epochs=1, max_steps=2, resume=True)
    main(**settings)
    last = tmp_path / "run" / "last.pt"
    before = last.stat().st_mtime_ns
    expected = (r"last.pt: resuming continues the run stored there as it was configured, and these settings "
                r"differ: lr 0.001 -> 0.0005; seed 0 -> 3. Set resume=False")
    with pytest.raises(CheckpointError, match=expected):
        main(**{**settings, "lr": 5e-4, "seed": 3})
    assert last.stat().st_mtime_ns == before  # nothing written
    # where and how it runs is not a setting of the run: a finished run is only reloaded
    again = main(**{**settings, "eval_batch_size": 8, "progress": True})
    assert again["epoch"] == [1] and last.stat().st_mtime_ns == before


def test_an_interrupted_run_is_never_continued_under_half_applied_settings(tiny_course_root, tmp_path, monkeypatch):
    """A new seed could not reach the sampler, whose state comes from the checkpoint: refused too."""
    settings = tiny_run(tiny_course_root, tmp_path / "run", resume=True)
    real = loop.train_one_epoch

    def interrupted(*args, **kwargs):
        if args[5] == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        main(**settings)
    monkeypatch.setattr(loop, "train_one_epoch", real)
    with pytest.raises(CheckpointError, match=r"these settings differ: seed 0 -> 1\. Set resume=False"):
        main(**{**settings, "seed": 1})
    assert main(**settings)["epoch"] == [1, 2, 3]  # the same settings continue it


def test_without_a_budget_num_epochs_none_is_the_default_it_stands_for(tiny_course_root, tmp_path):
    settings = tiny_run(tiny_course_root, tmp_path / "run", num_epochs=1, max_steps=2)
    main(**settings)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    ckpt["config"]["num_epochs"] = DEFAULT_NUM_EPOCHS  # as checkpoints before num_epochs=None stored it
    assert changed_settings(ckpt, TrainConfig.from_overrides(**{**settings, "num_epochs": None})) == []
    with_budget = TrainConfig.from_overrides(**{**settings, "num_epochs": None, "max_minutes": 5})
    assert changed_settings(ckpt, with_budget) == [f"num_epochs {DEFAULT_NUM_EPOCHS} -> None", "max_minutes 0.0 -> 5.0"]


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_checkpoint(tiny_course_root, tmp_path, monkeypatch):
    from reid_utils.losses import MultiTaskLoss

    real_terms = MultiTaskLoss.terms
    calls = {"n": 0}

    def poisoned(self, outputs, pids, attributes, index=None):
        total, terms = real_terms(self, outputs, pids, attributes, index)
        if outputs.get("id_logits") is not None:  # training steps only
            calls["n"] += 1
            if calls["n"] == 4 + 2:  # epoch 2 (4 steps per epoch), step 2
                total, terms = total * float("nan"), terms * float("nan")
        return total, terms

    monkeypatch.setattr(MultiTaskLoss, "terms", poisoned)
    out = tmp_path / "run"
    with pytest.raises(TrainingError) as info:
        main(**tiny_run(tiny_course_root, out))
    message = str(info.value)
    assert "epoch 2, step 2/4" in message and "nan" in message and str(out / "last.pt") in message
    assert "\n" not in message
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["history"]["epoch"] == [1]
    model, _ = load_model_from_checkpoint(out / "best.pt")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert json.loads((out / "history.json").read_text())["epoch"] == [1]


# ---------------------------------------------------------------------------------------------
# SIGKILL

WORKER = textwrap.dedent(
    """
    import io, json, sys, time
    import torch
    torch.set_num_threads(1)
    import reid_utils.engine.checkpoint as checkpoint
    from reid_utils.engine import main
    from reid_utils.io import atomic_open, atomic_torch_save

    settings, stall_epoch = json.loads(sys.argv[1]), int(sys.argv[2])

    def save(obj, path):
        print("SAVING", path, obj["epoch"], flush=True)
        if obj["epoch"] == stall_epoch and str(path).endswith("last.pt"):
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            data = buffer.getvalue()
            with atomic_open(path, "wb") as f:  # half the bytes are on disk when we are killed
                f.write(data[: len(data) // 2])
                f.flush()
                print("HALF-WRITTEN", path, flush=True)
                time.sleep(60)
                f.write(data[len(data) // 2 :])
        else:
            atomic_torch_save(obj, path)
        print("SAVED", path, obj["epoch"], flush=True)

    checkpoint.atomic_torch_save = save

    main(**settings)
    print("DONE", flush=True)
    """
)


def _start(settings: dict, stall_epoch: int = -1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(settings), str(stall_epoch)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for(process: subprocess.Popen, marker: str, timeout: float = 120) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith(marker):
            return lines
    process.kill()
    raise AssertionError(f"no {marker!r} from the training process; output:\n" + "\n".join(lines[-30:]))


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    process.stdout.close()


@pytest.mark.slow
def test_sigkill_at_random_points_leaves_a_loadable_checkpoint_and_resume_completes(tiny_course_root, tmp_path):
    seed = int(os.environ.get("REID_KILL_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    out = tmp_path / "run"
    settings = tiny_run(tiny_course_root, out, num_epochs=6, max_steps=2, resume=True)
    where = f"(REID_KILL_SEED={seed})"

    # 1. killed in the middle of writing last.pt for epoch 2: epoch 1's file is intact
    process = _start(settings, stall_epoch=2)
    _wait_for(process, "HALF-WRITTEN")
    _kill(process)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1, where
    assert list(out.glob(".last.pt.*.tmp")), "the half-written temporary file should be left behind"

    # 2. killed at random moments after a checkpoint was saved (training, validation or a write)
    last_epoch = 1
    for _ in range(2):
        process = _start(settings)
        _wait_for(process, "SAVED")
        time.sleep(rng.uniform(0.0, 1.5))
        _kill(process)
        epoch = load_checkpoint(out / "last.pt")["epoch"]  # always loadable
        assert epoch >= last_epoch, where
        last_epoch = epoch
        load_model_from_checkpoint(out / "last.pt")

    # 3. resuming completes, and the leftovers of killed writes are cleaned up
    history = main(**settings)
    assert history["epoch"] == list(range(1, 7)), where
    assert load_checkpoint(out / "last.pt")["epoch"] == 6
    assert not list(out.glob(".*.tmp"))
