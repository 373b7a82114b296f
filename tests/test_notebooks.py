"""The notebooks are paired with their jupytext sources, open the standard way, and are clean.

nbval runs them (``python -m pytest --nbval notebooks/``); these checks are static and fast:
a notebook edited in Jupyter but not synced back to its ``.py`` source, a missing standard
cell, leftover kernel metadata, stderr or an absolute path in a stored output fail here with
the reason.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import tomllib

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
MAX_NOTEBOOK_BYTES = 1_000_000


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", NOTEBOOK_DIR / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _load_generator()
SOURCES = GENERATOR.sources()
KEYS = list(SOURCES)


def _read(key: str):
    path = SOURCES[key].with_suffix(".ipynb")
    assert path.is_file(), f"{path} is missing: run python notebooks/make_notebooks.py"
    return nbformat.read(path, as_version=4)


def test_five_paired_notebooks():
    assert KEYS == ["01", "02", "03", "04", "05"]
    for source in SOURCES.values():
        assert source.read_text(encoding="utf-8").startswith("# %% [markdown]"), f"{source.name}: not percent format"


@pytest.mark.parametrize("key", KEYS)
def test_notebook_is_in_sync_with_its_source(key):
    assert GENERATOR.out_of_sync(SOURCES[key]) is None, (
        f"{GENERATOR.out_of_sync(SOURCES[key])}: after a Jupyter edit run jupytext --sync on the .ipynb, "
        "then python notebooks/make_notebooks.py"
    )


def test_sync_check_notices_an_edit(tmp_path, monkeypatch):
    source = tmp_path / SOURCES["01"].name
    source.write_text(SOURCES["01"].read_text(encoding="utf-8").replace("SMOKE = smoke_mode()", "SMOKE = True"))
    (tmp_path / SOURCES["01"].with_suffix(".ipynb").name).write_bytes(SOURCES["01"].with_suffix(".ipynb").read_bytes())
    assert "differ from cell" in GENERATOR.out_of_sync(source)


def test_repository_address_lives_in_pyproject():
    with open(REPO_ROOT / "pyproject.toml", "rb") as file:
        url = tomllib.load(file)["project"]["urls"]["Repository"]
    slug = url.removeprefix("https://github.com/")
    for key in KEYS:
        cells = _read(key).cells
        badges = re.findall(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/", cells[0].source)
        assert badges == [slug], (key, badges)
        assert f'"REID_REPO_URL", "{url}.git"' in cells[1].source
    readme_badges = set(re.findall(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/",
                                   (REPO_ROOT / "README.md").read_text(encoding="utf-8")))
    assert readme_badges <= {slug}


@pytest.mark.parametrize("key", KEYS)
def test_standard_opening(key):
    cells = _read(key).cells
    title, setup, versions, imports, parameters = cells[:5]
    assert title.cell_type == "markdown" and title.source.startswith("# ")
    assert "colab.research.google.com/assets/colab-badge.svg" in title.source
    assert setup.source == GENERATOR.setup_cell(GENERATOR.repository())
    assert versions.source.startswith("# NBVAL_IGNORE_OUTPUT") and "versions()" in versions.source
    code_lines = [line for line in imports.source.splitlines() if line.strip()]
    assert all(line.startswith(("import ", "from ", "    ", ")")) for line in code_lines), imports.source
    assert parameters.source.startswith("SMOKE = smoke_mode()")
    assert sum("smoke_mode()" in c.source for c in cells if c.cell_type == "code") == 1


@pytest.mark.parametrize("key", KEYS)
def test_notebook_is_clean(key):
    nb = _read(key)
    path = SOURCES[key].with_suffix(".ipynb")
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES, f"{path.name} is {path.stat().st_size} bytes"
    assert set(nb.metadata) == {"jupytext", "kernelspec", "language_info"}
    assert nb.metadata["jupytext"] == GENERATOR.PAIRING
    assert set(nb.metadata["language_info"]) == {"name"}
    text = path.read_text(encoding="utf-8")
    assert str(REPO_ROOT) not in text, "a stored output holds an absolute path of this checkout"
    count = 0
    for cell in nb.cells:
        assert set(cell.metadata) <= {"tags"}, cell.metadata
        if cell.cell_type != "code":
            continue
        if cell.source.startswith("# NBVAL_SKIP"):
            assert cell.execution_count is None and not cell.outputs
            continue
        count += 1
        assert cell.execution_count == count, "execution counts must be 1, 2, 3... (regenerate the notebook)"
        for output in cell.outputs:
            assert not (output.output_type == "stream" and output.name == "stderr"), f"stderr in {cell.id}"
            assert output.output_type != "error", f"error output in {cell.id}"


def test_generator_check_mode_agrees():
    assert GENERATOR.main(["--check"]) == 0


# ---------------------------------------------------------------------------------------------
# reid_utils.notebook helpers


def test_smoke_mode_reads_the_environment(monkeypatch):
    from reid_utils.notebook import smoke_mode

    for value, expected in (("1", True), ("true", True), ("0", False), ("", False)):
        monkeypatch.setenv("REID_SMOKE", value)
        assert smoke_mode() is expected
    monkeypatch.delenv("REID_SMOKE")
    assert smoke_mode() is False


def test_paths_resolve_from_the_repository(tmp_path, monkeypatch):
    from reid_utils.notebook import output_dir, repo_root, run_dir, show_path

    monkeypatch.chdir(tmp_path)  # the kernel's cwd does not matter
    assert repo_root() == REPO_ROOT
    assert show_path(REPO_ROOT / "dataset" / "sample") == "dataset/sample"
    assert show_path(tmp_path / "x") == str(tmp_path / "x")
    (tmp_path / ".submission.v-1").mkdir()
    (tmp_path / "submission").symlink_to(".submission.v-1")  # a swapped folder keeps its stable name
    assert show_path(tmp_path / "submission" / "reid_test.txt") == str(tmp_path / "submission" / "reid_test.txt")
    assert output_dir(tmp_path / "out") == tmp_path / "out" and (tmp_path / "out").is_dir()
    assert run_dir(tmp_path, "reid", "apr") == tmp_path / "reid" / "apr"
    with pytest.raises(ValueError, match="task must be one of"):
        run_dir(tmp_path, "training", "apr")


def test_find_checkpoints_orders_by_task_then_registry(tmp_path):
    from reid_utils.notebook import find_checkpoints

    with pytest.raises(FileNotFoundError, match="notebooks 02 and 03"):
        find_checkpoints(tmp_path)
    for task, model in (("reid", "apr"), ("attribute", "alm"), ("attribute", "resnet50"), ("reid", "zzz")):
        (tmp_path / task / model).mkdir(parents=True)
        (tmp_path / task / model / "best.pt").write_bytes(b"")
    (tmp_path / "reid" / "convhead").mkdir()  # no best.pt: not listed
    assert list(find_checkpoints(tmp_path)) == ["attribute/resnet50", "attribute/alm", "reid/apr", "reid/zzz"]


def test_history_tables_pick_the_best_epoch():
    from reid_utils.evaluation import attribute_accuracy_table, reid_table
    from reid_utils.schema import GROUP_NAMES

    history = {"epoch": [1, 2, 3], "attribute_accuracy": [0.5, 0.8, 0.7], "mA": [0.5, 0.6, 0.7],
               "mAP": [0.1, 0.2, 0.4], "rank1": [0.2, 0.3, 0.5], "score": [0.3, 0.5, 0.55]}
    history.update({f"attribute_accuracy_{g}": [0.5, 0.8, 0.7] for g in GROUP_NAMES})
    table = attribute_accuracy_table({"alm": history})
    assert list(table.columns) == [*GROUP_NAMES, "mean", "mA", "epoch"]
    assert table.loc["alm", "epoch"] == 2 and table.loc["alm", "mean"] == pytest.approx(80.0)
    reid = reid_table({"apr": history})
    assert reid.loc["apr", "epoch"] == 3 and reid.loc["apr", "mAP"] == pytest.approx(40.0)


def test_matches_attribute_query():
    import numpy as np

    from reid_utils.data import Record
    from reid_utils.metrics.retrieval import matches_attribute_query

    red_female = np.zeros(12, dtype=np.int64)
    red_female[[9, 10]] = [1, 2]  # gender female, upcolour red
    unknown = np.full(12, -1, dtype=np.int64)
    records = [Record(Path("a.jpg"), 1, 0, red_female), Record(Path("b.jpg"), 2, 0, np.zeros(12, np.int64)),
               Record(Path("c.jpg"), -1, 0, unknown)]
    assert matches_attribute_query({"upcolour": "red", "gender": "female"}, records).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="unknown class"):
        matches_attribute_query({"upcolour": "rouge"}, records)


def test_data_figures(tiny_course_root):
    from reid_utils.data import load_dataset
    from reid_utils.visualize import plot_attribute_examples, plot_dataset_overview

    index = load_dataset(tiny_course_root)
    assert len(plot_dataset_overview(index).axes) == 3
    examples = plot_attribute_examples(index.train, seed=0)
    assert len(examples.axes) == 4 * 11  # the 41 classes packed into rows of 11 panels
