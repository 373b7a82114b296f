"""The notebooks' Colab setup cell, run as Colab would: a stand-in ``google.colab`` module, the
repository's address from ``REID_REPO_URL`` (here a local clone), a throwaway virtual
environment that already has torch and torchvision (as Colab has); and pip's own resolver
report that installing the project keeps an installed torch/torchvision pair."""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SETUP_CELL = REPO_ROOT / "notebooks" / "colab_setup.py"
RUN_CELL = (
    "import sys, types\n"
    "sys.modules['google.colab'] = types.ModuleType('google.colab')  # what Colab's kernel has\n"
    "exec(compile(open(sys.argv[1]).read(), 'setup cell', 'exec'))\n"
)

needs_git = pytest.mark.skipif(shutil.which("git") is None or not (REPO_ROOT / ".git").exists(),
                               reason="needs git and a git checkout")


@pytest.fixture(scope="module")
def colab_python(tmp_path_factory) -> Path:
    """A fresh venv whose interpreter sees this environment's packages (torch, torchvision ...)
    but not its reid_utils, like a Colab runtime: the cell must install the package itself."""
    root = tmp_path_factory.mktemp("colab") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True)
    python = root / "bin" / "python"
    inner_site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                                check=True, capture_output=True, text=True).stdout.strip()
    # plain path lines: the outer site-packages' own .pth files (our editable install) are not run
    Path(inner_site, "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def run_cell(python: Path, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "REID_CHECKOUT": str(tmp_path / "checkout"), **env}
    environment.pop("PYTHONPATH", None)
    return subprocess.run([str(python), "-c", RUN_CELL, str(SETUP_CELL)], cwd=tmp_path, env=environment,
                          capture_output=True, text=True, timeout=600)


def imported_from(python: Path, cwd: Path) -> str:
    return subprocess.run([str(python), "-c", "import reid_utils; print(reid_utils.__file__)"], cwd=cwd,
                          capture_output=True, text=True, check=True).stdout.strip()


@needs_git
def test_setup_cell_clones_installs_and_imports_from_the_clone(colab_python, tmp_path):
    done = run_cell(colab_python, tmp_path, REID_REPO_URL=REPO_ROOT.as_uri())
    assert done.returncode == 0, done.stderr[-3000:]
    checkout = tmp_path / "checkout"
    assert f"from {checkout / 'reid_utils'}" in done.stdout
    # a new kernel (another process, elsewhere) imports the package from the clone
    assert imported_from(colab_python, tmp_path.parent) == str(checkout / "reid_utils" / "__init__.py")


@needs_git
def test_setup_cell_installs_from_a_zip_on_drive(colab_python, tmp_path):
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.split()
    archive = tmp_path / "drive" / "reid_utils.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:  # as a user zips the folder: one top folder
        for name in files:
            if (REPO_ROOT / name).is_file() and not name.startswith("dataset/"):
                zf.write(REPO_ROOT / name, f"reid_utils-main/{name}")
    done = run_cell(colab_python, tmp_path, REID_REPO_SOURCE=str(archive))
    assert done.returncode == 0, done.stderr[-3000:]
    assert imported_from(colab_python, tmp_path.parent) == str(tmp_path / "checkout" / "reid_utils" / "__init__.py")


def test_setup_cell_raises_in_the_cell_when_the_clone_fails(tmp_path):
    done = run_cell(Path(sys.executable), tmp_path, REID_REPO_URL=(tmp_path / "no-such-repo").as_uri())
    assert done.returncode != 0
    assert "RuntimeError" in done.stderr and "Could not clone" in done.stderr and "REPO_SOURCE" in done.stderr
    assert not (tmp_path / "checkout").exists()


def test_setup_cell_raises_when_the_drive_copy_is_missing(tmp_path):
    done = run_cell(Path(sys.executable), tmp_path, REID_REPO_SOURCE=str(tmp_path / "MyDrive" / "nothing.zip"))
    assert done.returncode != 0 and "nothing.zip does not exist" in done.stderr


def test_setup_cell_retries_cleanly_after_a_broken_copy(tmp_path):
    leftover = tmp_path / "checkout"
    (leftover / "reid_utils").mkdir(parents=True)  # a copy interrupted before pyproject.toml arrived
    done = run_cell(Path(sys.executable), tmp_path, REID_REPO_URL=(tmp_path / "no-such-repo").as_uri())
    assert "Could not clone" in done.stderr and "FileExistsError" not in done.stderr
    assert not leftover.exists()


@pytest.fixture
def colab_drive(monkeypatch, tmp_path):
    """This process as a Colab runtime (a stand-in ``google.colab``) whose Drive mounts under
    ``tmp_path/drive``; returns ``(mounts, files)``: the mount calls so far, and what Drive holds
    once mounted (``{path under MyDrive: folder to copy there}``)."""
    from reid_utils import notebook

    mounts, files = [], {}

    def mount(mountpoint):
        mounts.append(mountpoint)
        Path(mountpoint, "MyDrive").mkdir(parents=True)
        for name, source in files.items():
            shutil.copytree(source, Path(mountpoint, "MyDrive", name))

    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mount)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(notebook, "DRIVE_MOUNTPOINT", str(tmp_path / "drive"))
    monkeypatch.setattr(notebook, "COLAB_OUTPUT_DIR", str(tmp_path / "drive" / "MyDrive" / "reid_utils_outputs"))
    return mounts, files


def test_on_colab_the_outputs_default_to_drive_mounted_before_the_folder_is_made(colab_drive, tmp_path):
    """Each notebook has a runtime of its own: only Drive carries the outputs to the next one."""
    from reid_utils.notebook import output_dir

    mounts, _ = colab_drive
    out = output_dir()
    assert out == tmp_path / "drive" / "MyDrive" / "reid_utils_outputs" and out.is_dir()
    assert mounts == [str(tmp_path / "drive")]  # the stand-in mount would fail on a folder made first
    assert output_dir() == out and len(mounts) == 1  # mounted once a runtime
    assert output_dir(tmp_path / "drive" / "MyDrive" / "mine") == tmp_path / "drive" / "MyDrive" / "mine"
    assert len(mounts) == 1


def test_on_colab_a_folder_off_drive_stays_on_the_runtime(colab_drive, tmp_path):
    from reid_utils.notebook import output_dir

    mounts, _ = colab_drive
    assert output_dir(tmp_path / "content" / "outputs") == tmp_path / "content" / "outputs"
    assert mounts == []


def test_on_colab_a_data_root_on_drive_is_mounted_before_it_is_read(colab_drive, tmp_path, tiny_course_root):
    from reid_utils.notebook import data_root

    mounts, files = colab_drive
    files["dataset"] = tiny_course_root
    root = data_root(str(tmp_path / "drive" / "MyDrive" / "dataset"))
    assert root == tmp_path / "drive" / "MyDrive" / "dataset" and mounts == [str(tmp_path / "drive")]


def test_pip_keeps_the_installed_torch_and_torchvision(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
                           "-e", str(REPO_ROOT)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and "network" in done.stderr.lower():
        pytest.skip("pip needs the package index to build the editable wheel")
    assert done.returncode == 0, done.stderr[-2000:]
    to_install = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert to_install == {"reid-utils"} or to_install == {"reid_utils"}, to_install
