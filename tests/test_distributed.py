"""torchrun: two CPU processes on the gloo backend train a few steps and leave one checkpoint."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reid_utils.engine.checkpoint import load_model_from_checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("budget", [[], ["--max-minutes", "0.3", "--val-every", "2"]], ids=["epochs", "budget"])
def test_torchrun_two_processes_write_one_loadable_checkpoint(tiny_course_root, tmp_path, budget):
    """With a time budget each rank times its own steps: rank 0's plan must hold on both, or one
    rank would wait for the other forever (the timeout)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this python")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "reid_utils", "train", "--smoke",
           "--data", str(tiny_course_root), "--out", str(out), "--num-epochs", "50" if budget else "2",
           "--max-steps", "2", "--seed", "3", *budget]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # rank 0 alone writes: exactly one set of files, no leftover temporary files
    names = sorted(p.name for p in out.iterdir())
    assert names == ["best.pt", "curves.png", "history.json", "last.pt", "split.json"], names
    history = json.loads((out / "history.json").read_text())
    if not budget:
        assert history["epoch"] == [1, 2]
    else:  # planned, validated every second epoch and after the last
        assert 2 < len(history["epoch"]) < 50  # the plan, not the cap of 50
        validated = [e for e, v in zip(history["epoch"], history["mAP"]) if v == v]
        assert validated[:-1] == list(range(2, len(history["epoch"]), 2)) and validated[-1] == history["epoch"][-1]
    model, ckpt = load_model_from_checkpoint(out / "best.pt")
    assert ckpt["config"]["model"] == "apr"
    assert model.num_ids == len(ckpt["pid_to_label"])
