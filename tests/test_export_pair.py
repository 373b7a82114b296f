"""The two deliverables are replaced as a pair (issue 13.1), from one or two models (14.4), with
fixed or thresholded lists (14.5).

The kill tests run the swap in a forked child that SIGKILLs itself just before its n-th
file-system call (rename, replace, symlink, unlink, rmdir, mkdir, fsync, open), for every n
until the swap completes, and check after each kill that the folder holds the old pair or the
new pair, never a mix; then that the next run tidies up and succeeds. The end-to-end test kills
``python -m reid_utils export`` itself at several moments of its run.
"""
from __future__ import annotations

import builtins
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from reid_utils.config import TrainConfig
from reid_utils.engine.checkpoint import save_checkpoint
from reid_utils.errors import ExportError, OutputError
from reid_utils.evaluation import score_submission
from reid_utils.evaluation.scoring import read_ground_truth
from reid_utils.export import (
    CLASSIFICATION_FILE,
    MANIFEST_FILE,
    REID_FILE,
    check_submission,
    export_submission,
    read_classification_csv,
    read_reid_txt,
    swap,
    threshold_effect,
)
from reid_utils.export.submission import validate_reid_lines
from reid_utils.export.threshold import (
    cut_at_threshold,
    list_average_precision,
    measure_threshold_effect,
    parse_threshold,
)
from reid_utils.metrics.retrieval import rank_gallery
from reid_utils.models import build_model_from_config

pytestmark = pytest.mark.usefixtures("one_thread")

FILES = ("a.csv", "b.txt")
COUNTED = ("rename", "replace", "symlink", "unlink", "rmdir", "mkdir", "fsync")


def writer(tag: str):
    """Write both files of version ``tag`` (two separate writes: a kill can fall between them)."""
    def write(folder: Path) -> None:
        for name in FILES:
            with builtins.open(folder / name, "w") as f:
                f.write(f"{tag}\n")
    return write


def state(out: Path) -> str | None:
    """The version ``out`` holds, None when it is missing; fails on a mix of versions."""
    if not out.exists():
        return None
    tags = {name: (out / name).read_text() if (out / name).is_file() else "<missing>" for name in FILES}
    assert len(set(tags.values())) == 1, f"a mix of versions in {out}: {tags}"
    return tags[FILES[0]].strip()


def run_killed_at(n: int, action) -> bool:
    """Run ``action()`` in a forked child that SIGKILLs itself just before its n-th counted
    file-system call. True when the child was killed, False when it finished first."""
    pid = os.fork()
    if pid == 0:  # the child: count, kill, never return into pytest
        try:
            count = [0]

            def counted(function):
                def call(*args, **kwargs):
                    count[0] += 1
                    if count[0] == n:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return function(*args, **kwargs)
                return call

            for name in COUNTED:
                setattr(os, name, counted(getattr(os, name)))
            builtins.open = counted(builtins.open)
            action()
            os._exit(0)
        except BaseException:  # noqa: BLE001
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the swap failed in the child"
    return False


def leftovers(out: Path) -> list[str]:
    """Entries next to ``out`` other than ``out`` and the version folder it links to."""
    keep = {out.name} | ({os.readlink(out)} if out.is_symlink() else set())
    return sorted(p.name for p in out.parent.iterdir() if p.name not in keep)


@pytest.mark.parametrize("start", ["link", "folder", "no_symlinks", "missing"])
def test_kill_at_every_step_leaves_old_or_new_pair(tmp_path, monkeypatch, start):
    """``link``: OUT is already a symbolic link (the usual case on a local disk): every instant
    is the old or the new pair, no recovery needed. ``folder``: OUT is a real folder (a first
    export into an existing folder) and ``no_symlinks``: a file system without links (Google
    Drive): OUT may be briefly absent, and the recovery rule then gives the old or the new pair.
    ``missing``: the first export ever."""
    out = tmp_path / "submission"
    if start == "no_symlinks":
        def no_links(*args, **kwargs):
            raise OSError(95, "Operation not supported")
        monkeypatch.setattr(os, "symlink", no_links)
    if start == "folder":
        out.mkdir()
        writer("old")(out)
    elif start != "missing":
        swap.replace_folder(out, writer("old"), FILES)
    assert out.is_symlink() == (start == "link")
    old = None if start == "missing" else "old"

    outcomes = set()
    for n in range(1, 200):
        killed = run_killed_at(n, lambda: swap.replace_folder(out, writer("new"), FILES))
        now = state(out)
        if start == "link":
            assert now in (old, "new"), f"kill {n}: {now}"
        swap.recover(out)  # what the next run does first
        after = state(out)
        assert after in (old, "new") and (now is None or after == now), f"kill {n}: {now} -> {after}"
        assert leftovers(out) == [], f"kill {n}: leftovers"
        outcomes.add(after)
        # back to the old pair for the next kill point
        if after != old:
            if old is None:
                swap._remove(out)
            else:
                swap.replace_folder(out, writer("old"), FILES)
        if start == "folder" and out.is_symlink():  # keep testing the one-time migration
            swap._remove(out)
            out.mkdir()
            writer("old")(out)
        if not killed:
            break
    else:
        pytest.fail("the swap never finished")
    assert outcomes == {old, "new"}  # kills fell both before and after the swap
    assert n > 8  # every step of staging, swapping and cleaning was a kill point

    swap.replace_folder(out, writer("next"), FILES)  # the next run works and leaves nothing else
    assert state(out) == "next" and leftovers(out) == []


def test_leftovers_are_removed_by_the_next_run(tmp_path):
    out = tmp_path / "sub"
    swap.replace_folder(out, writer("v1"), FILES)
    token = "0" * 20 + "abcdef"
    for kind in ("tmp", "v", "old"):
        (tmp_path / f".sub.{kind}-{token}").mkdir()
        writer("junk")(tmp_path / f".sub.{kind}-{token}")
    os.symlink(f".sub.v-{token}", tmp_path / f".sub.link-{token}")
    swap.replace_folder(out, writer("v2"), FILES)
    assert state(out) == "v2" and leftovers(out) == []


def test_failed_write_leaves_the_old_pair_and_no_temporary_folder(tmp_path):
    out = tmp_path / "sub"
    swap.replace_folder(out, writer("v1"), FILES)

    def half_then_fail(folder):
        (folder / FILES[0]).write_text("v2\n")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left"):
        swap.replace_folder(out, half_then_fail, FILES)
    assert state(out) == "v1" and leftovers(out) == []


def test_a_folder_with_other_files_is_refused_not_emptied(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.md").write_text("keep me")
    with pytest.raises(ExportError, match="holds 'notes.md'"):
        swap.replace_folder(out, writer("v1"), FILES)
    assert (out / "notes.md").read_text() == "keep me"
    with pytest.raises(OutputError, match="a folder of its own"):
        swap.replace_folder(".", writer("v1"), FILES)


# ---------------------------------------------------------------------------------------------
# The real export: one or two checkpoints, the manifest, thresholds


def _checkpoint(path: Path, seed: int, model: str = "resnet50", num_ids: int = 8, **overrides) -> Path:
    cfg = TrainConfig.from_overrides(model=model, depth=18, height=64, width=32, **overrides)
    torch.manual_seed(seed)
    return save_checkpoint(path, build_model_from_config(cfg, num_ids=num_ids), cfg, {pid: pid for pid in range(num_ids)})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair_ckpts")
    return {"a": _checkpoint(folder / "a.pt", 0), "b": _checkpoint(folder / "b.pt", 1, model="apr")}


@pytest.fixture(scope="module")
def fp32():
    from reid_utils.engine.runtime import fast_path

    return fast_path("cpu", precision="fp32")


def test_two_checkpoints_attributes_from_one_rankings_from_the_other(tiny_course_root, checkpoints, fp32,
                                                                      tmp_path):
    common = dict(top_k=10, rerank=False, fast_path=fp32, num_workers=0)
    only_a = export_submission(tiny_course_root, checkpoints["a"], tmp_path / "a", **common)
    only_b = export_submission(tiny_course_root, checkpoints["b"], tmp_path / "b", **common)
    both = export_submission(tiny_course_root, checkpoints["a"], tmp_path / "ab",
                             attribute_checkpoint=checkpoints["b"], **common)
    text = {name: {k: (tmp_path / k / name).read_bytes() for k in ("a", "b", "ab")}
            for name in (CLASSIFICATION_FILE, REID_FILE)}
    assert text[CLASSIFICATION_FILE]["a"] != text[CLASSIFICATION_FILE]["b"]  # the models differ ...
    assert text[REID_FILE]["a"] != text[REID_FILE]["b"]
    assert text[CLASSIFICATION_FILE]["ab"] == text[CLASSIFICATION_FILE]["b"]  # ... attributes from b
    assert text[REID_FILE]["ab"] == text[REID_FILE]["a"]  # ... rankings from a
    manifest = check_submission(tmp_path / "ab")
    assert manifest["checkpoints"]["reid"]["path"] == str(checkpoints["a"].resolve())
    assert manifest["checkpoints"]["attribute"]["path"] == str(checkpoints["b"].resolve())
    assert manifest["checkpoints"]["attribute"]["model"] == "apr"
    assert manifest["checkpoints"]["reid"]["tensor_digest"] != manifest["checkpoints"]["attribute"]["tensor_digest"]
    assert manifest["settings"] == {"top_k": 10, "rerank": False, "rerank_choice": None, "flip": True,
                                    "metric": "cosine", "threshold": None}
    one = check_submission(tmp_path / "a")["checkpoints"]
    assert one["reid"] == one["attribute"] and both["manifest"]["num_test"] == only_a["num_test"] == only_b["num_test"]


def test_manifest_catches_a_file_copied_from_another_export(tiny_course_root, checkpoints, fp32, tmp_path):
    for name, ckpt in (("x", "a"), ("y", "b")):
        export_submission(tiny_course_root, checkpoints[ckpt], tmp_path / name, top_k=5, fast_path=fp32, num_workers=0)
    target = (tmp_path / "x" / REID_FILE).resolve()
    target.write_bytes((tmp_path / "y" / REID_FILE).read_bytes())  # a hand-made mix
    with pytest.raises(ExportError, match="reid_test.txt: differs from the file submission.json lists"):
        check_submission(tmp_path / "x")


def test_threshold_cuts_lists_and_the_validator_and_scorer_accept_them(tiny_course_root, checkpoints, fp32, tmp_path):
    from reid_utils.data import load_dataset
    from reid_utils.engine import extract, load_model_from_checkpoint
    from reid_utils.metrics.retrieval import compute_distance

    index = load_dataset(tiny_course_root)
    model, _ = load_model_from_checkpoint(checkpoints["a"])
    feats = [extract(model, records, fp32, height=64, width=32, num_workers=0)["embeddings"]
             for records in (index.query, index.test)]
    nearest = compute_distance(*feats, metric="cosine").sort(dim=1).values  # (Q, G)
    threshold = float(nearest[:, 9].median())  # about half the queries keep more than 10 images
    common = dict(top_k=20, rerank=False, fast_path=fp32, num_workers=0)  # the threshold is a plain distance
    fixed = export_submission(tiny_course_root, checkpoints["a"], tmp_path / "fixed", **common)
    cut = export_submission(tiny_course_root, checkpoints["a"], tmp_path / "cut", threshold=threshold, **common)
    fixed_lines, cut_lines = read_reid_txt(fixed["paths"]["reid"]), read_reid_txt(cut["paths"]["reid"])
    lengths = [len(r) for _, r in cut_lines]
    assert min(lengths) >= 1 and max(lengths) <= 20 and len(set(lengths)) > 1  # variable, never empty
    assert all(c[1] == f[1][: len(c[1])] for c, f in zip(cut_lines, fixed_lines))  # prefixes of the top-k lists
    assert cut["mean_results"] == pytest.approx(np.mean(lengths))
    assert check_submission(tmp_path / "cut")["settings"]["threshold"]["value"] == threshold
    q_names = [q for q, _ in cut_lines]
    g_names = read_classification_csv(cut["paths"]["classification"])["id"].tolist()
    validate_reid_lines(cut_lines, q_names, g_names, top_k=20, min_results=1)
    with pytest.raises(ExportError, match=r"expected 20"):  # the fixed-length check still holds by default
        validate_reid_lines(cut_lines, q_names, g_names, top_k=20)
    scores = {name: score_submission(tiny_course_root, tmp_path / name) for name in ("fixed", "cut")}
    assert scores["cut"]["mAP"] <= scores["fixed"]["mAP"] + 1e-12  # cutting a list never raises the course AP
    # the scorer pads the short lists; threshold.py's per-query loop takes them as they are: same course AP
    truth = read_ground_truth(tiny_course_root)
    test_pid = truth[truth["split"] == "test"].set_index("file")["pid"]
    query_pid = truth[truth["split"] != "test"].set_index("file")["pid"]  # names repeat across the two splits
    matches = [test_pid[ranked].to_numpy() == query_pid[q] for q, ranked in cut_lines]
    relevant = [int((test_pid == query_pid[q]).sum()) for q, _ in cut_lines]
    assert scores["cut"]["mAP"] == pytest.approx(np.nanmean(list_average_precision(matches, relevant)), abs=1e-12)


def test_threshold_auto_is_chosen_on_the_validation_split(tiny_course_root, fp32, tmp_path):
    from reid_utils.data import load_dataset, make_split, save_split

    split = make_split(load_dataset(tiny_course_root), val_fraction=0.25, seed=0)
    save_split(split, tmp_path / "run" / "split.json")  # the run's split, next to its checkpoint
    ckpt = _checkpoint(tmp_path / "run" / "best.pt", 0, num_ids=split.num_train_ids)
    result = export_submission(tiny_course_root, ckpt, tmp_path / "sub", top_k=30, fast_path=fp32, num_workers=0,
                               threshold="auto")
    chosen = check_submission(tmp_path / "sub")["settings"]["threshold"]
    assert chosen["chosen_on"] == f"validation split {tmp_path / 'run' / 'split.json'}"
    assert chosen["value"] == result["threshold"] > 0 and 1 <= result["mean_results"] <= 30

    effect = measure_threshold_effect(ckpt, tiny_course_root, top_k=30, fast_path=fp32, num_workers=0)
    assert effect["described"] == chosen["chosen_on"] and effect["num_queries"] == len(split.val_query)
    assert effect["threshold_mAP"] <= effect["top_k_mAP"] and 1 <= effect["mean_results"] <= 30

    no_val = _checkpoint(tmp_path / "run0" / "best.pt", 0, val_fraction=0.0)  # trained without validation
    with pytest.raises(ExportError, match="threshold='auto' needs the checkpoint's validation split: .*no queries"):
        export_submission(tiny_course_root, no_val, tmp_path / "sub2", fast_path=fp32, num_workers=0, threshold="auto")
    assert not (tmp_path / "sub2").exists()


def test_threshold_effect_and_parsing():
    assert parse_threshold(None) is None and parse_threshold("auto") == "auto" and parse_threshold("0.5") == 0.5
    for bad in ("-1", "inf", "nan", "x", True):
        with pytest.raises(ExportError):
            parse_threshold(bad)
    # worked example: AP of a cut list never exceeds that of its full list
    assert list_average_precision([np.array([True, False, True]), np.array([True])], [2, 2]).tolist() == [
        pytest.approx((1 + 2 / 3) / 2), 0.5]
    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 5, 40), rng.integers(0, 5, 200)
    distmat = torch.as_tensor(rng.random((40, 200)) + 0.5 * (q_pids[:, None] != g_pids[None, :]), dtype=torch.float32)
    ranked = rank_gallery(distmat, 50).numpy()
    lists = cut_at_threshold(distmat, ranked, 0.3)
    assert all(1 <= len(row) <= 50 and (row == ranked[i][: len(row)]).all() for i, row in enumerate(lists))
    effect = threshold_effect(distmat, q_pids, g_pids, top_k=50)
    assert effect["threshold_mAP"] <= effect["top_k_mAP"] and 1 <= effect["mean_results"] < 50
    assert len(effect["thresholds"]) == 2 and effect["num_queries"] == 40


# ---------------------------------------------------------------------------------------------
# End to end: kill `python -m reid_utils export` itself

DRIVER = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from reid_utils.cli import main
    from reid_utils.export import swap

    kill_at = int(os.environ["KILL_AT"])  # the n-th file-system call of the swap; 0: never
    count = [0]
    real_replace_folder = swap.replace_folder

    def counted(function):
        def call(*args, **kwargs):
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return function(*args, **kwargs)
        return call

    def replace_folder(*args, **kwargs):  # count from the start of the swap
        for name in ("rename", "replace", "symlink", "unlink", "rmdir", "mkdir", "fsync"):
            setattr(os, name, counted(getattr(os, name)))
        print("SWAPPING", flush=True)
        return real_replace_folder(*args, **kwargs)

    submission = sys.modules["reid_utils.export.submission"]
    real_extract = submission.extract

    def extract(*args, **kwargs):  # lets the test kill us in the middle of the extraction
        print("EXTRACTING", flush=True)
        signal.pause() if kill_at < 0 else None
        return real_extract(*args, **kwargs)

    swap.replace_folder = submission.replace_folder = replace_folder
    submission.extract = extract
    sys.exit(main(sys.argv[1:]))
    """
)


def test_killing_the_export_command_leaves_old_or_new_pair(tiny_course_root, checkpoints, fp32, tmp_path):
    out = tmp_path / "submission"
    argv = [sys.executable, "-c", DRIVER, "export", "--data", str(tiny_course_root), "--checkpoint",
            str(checkpoints["a"]), "--out", str(out), "--top-k", "5"]
    seen = []
    # -1: SIGKILL from outside while it extracts features; n > 0: just before the n-th file-system
    # call of the swap (counted from a tidy folder: 9 = the link replacing OUT, 10 = the fsync
    # after it, 12 = while removing the old version)
    for kill_at in (-1, 9, 10, 12):
        swap.recover(out)  # as the next run would; then the old pair (model b) again, so that each kill counts
        if not out.exists() or check_submission(out)["checkpoints"]["reid"]["path"].endswith("a.pt"):
            export_submission(tiny_course_root, checkpoints["b"], out, top_k=5, fast_path=fp32, num_workers=0)
        old = {name: (out / name).read_bytes() for name in (CLASSIFICATION_FILE, REID_FILE, MANIFEST_FILE)}
        process = subprocess.Popen(argv, env={**os.environ, "OMP_NUM_THREADS": "1", "KILL_AT": str(kill_at)},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if kill_at == -1:
            assert process.stdout.readline().strip() == "EXTRACTING"
            process.kill()
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == -signal.SIGKILL, stderr[-2000:]
        manifest = check_submission(out)  # both files are the ones its manifest lists: never a mix
        which = Path(manifest["checkpoints"]["reid"]["path"]).name
        if which == "b.pt":
            assert {name: (out / name).read_bytes() for name in old} == old
        assert manifest["checkpoints"]["attribute"] == manifest["checkpoints"]["reid"]
        seen.append(which)
    assert seen == ["b.pt", "b.pt", "a.pt", "a.pt"]  # killed before the swap: old pair; after it: new pair
    swap.recover(out)
    assert leftovers(out) == [] and check_submission(out)


def test_cli_two_checkpoints_and_threshold(tiny_course_root, checkpoints, tmp_path, capsys):
    from reid_utils.cli import main

    out = tmp_path / "sub"
    assert main(["export", "--data", str(tiny_course_root), "--checkpoint", str(checkpoints["a"]),
                 "--attribute-checkpoint", str(checkpoints["b"]), "--out", str(out), "--top-k", "7",
                 "--threshold", "0.5"]) == 0
    printed = capsys.readouterr().out
    assert "wrote manifest:" in printed and "distance threshold 0.5000" in printed
    manifest = check_submission(out)
    assert manifest["checkpoints"]["attribute"]["model"] == "apr" and manifest["settings"]["threshold"]["value"] == 0.5
    assert main(["export", "--data", str(tiny_course_root), "--checkpoint", str(checkpoints["a"]), "--out",
                 str(out), "--threshold", "soon"]) == 2
    assert "threshold='soon'" in capsys.readouterr().err


def test_a_second_export_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "submission"
    swap.replace_folder(out, writer("old"), FILES)
    with open(tmp_path / ".submission.lock", "a") as held:  # what a running export holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(OutputError, match="another export is writing this folder right now"):
            swap.replace_folder(out, writer("new"), FILES)
    assert state(out) == "old"
    swap.replace_folder(out, writer("new"), FILES)  # once released, it goes through
    assert state(out) == "new" and leftovers(out) == []
