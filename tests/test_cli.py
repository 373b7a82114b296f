"""The command line: sample, inspect, train options, and one-line errors with exit code 2."""
import json
import subprocess
import sys

import pytest

from reid_utils.cli import main


def test_sample_then_inspect_json(tmp_path, capsys):
    root = tmp_path / "sample"
    assert main(["sample", str(root), "--ids", "6", "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(root), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "course"
    assert summary["train_ids"] == 6
    assert summary["train_images"] == len(list((root / "train").glob("*.jpg")))
    assert summary["test_images"] == len(list((root / "test").glob("*.jpg")))
    assert summary["query_images"] == len(list((root / "queries").glob("*.jpg")))


def test_inspect_market_layout(tiny_market_root, capsys):
    assert main(["inspect", str(tiny_market_root), "--json", "--no-image-check"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "market"
    assert summary["train_ids"] > 0 and summary["query_images"] > 0


@pytest.mark.real_data
def test_inspect_real_course_data(course_data, capsys):
    assert main(["inspect", str(course_data), "--json", "--no-image-check"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "course"
    assert (summary["train_ids"], summary["train_images"], summary["test_images"], summary["query_images"]) == (
        600, 10443, 19679, 2248)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["inspect", "/nonexistent/dataset"], ["/nonexistent/dataset"]),
        (["train", "--data", "/nonexistent/dataset", "--smoke"], ["/nonexistent/dataset"]),
        (["train", "--smoke", "--lr", "-1"], ["lr"]),
        (["export", "--checkpoint", "/nonexistent/best.pt", "--out", "x"], ["/nonexistent/best.pt"]),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    for word in words:
        assert word in err


def test_unknown_option_and_bad_choice_are_argparse_errors(capsys):
    for argv in (["train", "--no-such-option", "1"], ["train", "--model", "resnet51"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    assert "resnet50" in capsys.readouterr().err  # the valid choices are listed


def test_every_config_field_is_an_option():
    from reid_utils.cli import build_parser
    from reid_utils.config import TrainConfig

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    dests = {action.dest for action in train._actions}
    assert set(TrainConfig.field_names()) <= dests
    args = train.parse_args(["--triplet-margin", "none", "--epochs", "3", "--no-augment", "--data", "d"])
    assert (args.triplet_margin, args.num_epochs, args.augment, args.data_root) == (None, 3, False, "d")
    assert not hasattr(train.parse_args([]), "lr")  # options not given leave the per-model defaults alone


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "reid_utils", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for command in ("sample", "inspect", "train", "evaluate", "export", "bench", "pipeline"):
        assert command in proc.stdout
