"""Conveniences for the notebooks in ``notebooks/`` (the library itself never needs them).

* Where things are: :func:`repo_root`, :func:`data_root`, :func:`output_dir`, :func:`run_dir`,
  :func:`find_checkpoints`, :func:`refit_of`, :func:`figure_dir`, :func:`show_path`.
* The environment: :func:`smoke_mode` (``REID_SMOKE=1``, set by the notebook tests),
  :func:`in_colab`, :func:`gpu_available`, :func:`mount_drive`, :func:`ensure_drive`, :func:`versions`,
  :func:`inference_fast_path`.
* Display: :func:`show` (a figure as an image only, so nbval has no text to compare),
  :func:`describe_dataset`.

Tables from training histories are in :mod:`reid_utils.evaluation.history`, data figures in
:mod:`reid_utils.visualize.dataset`.

Output folder layout shared by the notebooks (``OUTPUT_DIR``, default ``<repo>/outputs``, on
Colab :data:`COLAB_OUTPUT_DIR` on Google Drive; ``<repo>/outputs/smoke`` in smoke mode so that
tests never touch real runs)::

    split.json                     notebook 01: the identity-disjoint train/validation split
    attribute/<model>/best.pt      notebook 02 (also last.pt, history.json, curves.png)
    reid/<model>/best.pt           notebook 03
    reid/<model>_all_ids/best.pt   notebook 03: its refit on every identity (notebook 05 exports it)
    figures/                       notebook 04
    submission/                    notebook 05: classification_test.csv, reid_test.txt
"""
from __future__ import annotations

import contextlib
import io
import os
import platform
import sys
import warnings
from pathlib import Path

import numpy
import pandas
import torch
import torchvision

from . import __version__
from .data import ENV_VAR, extract_zip, format_summary, resolve_data_root
from .engine import is_refit, main, refit, refit_dir
from .engine.runtime import describe_precision, fast_path, select_device
from .io import repo_root as package_checkout
from .models import MODEL_NAMES
from .synthetic import ensure_sample

SMOKE_ENV_VAR = "REID_SMOKE"
#: The environment of smoke-mode notebook kernels (the tests, ``make_notebooks.py``): smoke
#: mode on, and on x86 the same vector instructions (AVX2, which every x86 CPU of the last
#: ten years has) whatever the CPU, so that the numbers nbval compares do not depend on
#: whether a machine also has AVX-512 or AMX.
SMOKE_ENVIRONMENT = {SMOKE_ENV_VAR: "1"}
X86_SMOKE_ENVIRONMENT = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
TASKS = ("attribute", "reid")  # sub-folders of the output folder: notebook 02, notebook 03
DRIVE_MOUNTPOINT = "/content/drive"
#: The notebooks' output folder on Colab when ``OUTPUT_DIR`` is None. Colab gives each notebook
#: opened from a badge a runtime of its own, whose disk the next notebook never sees (and which
#: is gone at a disconnect): only a Drive folder carries the split, the checkpoints and the
#: submission from one notebook to the next.
COLAB_OUTPUT_DIR = DRIVE_MOUNTPOINT + "/MyDrive/reid_utils_outputs"
#: What notebooks 02 and 03 train by default (and so in smoke mode): notebooks 04 and 05 use these.
DEFAULT_RUNS: dict[str, tuple[str, ...]] = {"attribute": ("resnet50", "cbam", "alm"), "reid": ("apr",)}


# ---------------------------------------------------------------------------------------------
# Where things are


def repo_root() -> Path:
    """The repository checkout (the folder holding ``pyproject.toml``), whatever the kernel's cwd.

    nbval starts kernels in ``notebooks/`` and Colab in ``/content``: paths never depend on it.
    Falls back to the nearest parent of the cwd with a ``pyproject.toml``, then to the cwd.
    """
    root = package_checkout()
    if root is not None:
        return root
    cwd = Path.cwd().resolve()
    return next((p for p in (cwd, *cwd.parents) if (p / "pyproject.toml").is_file()), cwd)


def smoke_environment() -> dict[str, str]:
    """The variables smoke-mode kernels run under (see :data:`SMOKE_ENVIRONMENT`)."""
    x86 = platform.machine().lower() in ("x86_64", "amd64", "x86")
    return {**SMOKE_ENVIRONMENT, **(X86_SMOKE_ENVIRONMENT if x86 else {})}


def smoke_mode() -> bool:
    """True when the environment variable ``REID_SMOKE`` is ``1`` / ``true`` / ``yes``.

    The notebook tests set it: every notebook then runs a tiny, deterministic version of itself
    on the bundled sample (see :data:`reid_utils.config.SMOKE_SETTINGS`).
    """
    return os.environ.get(SMOKE_ENV_VAR, "").strip().lower() in ("1", "true", "yes")


def data_root(path: str | os.PathLike | None = None, smoke: bool = False) -> Path:
    """The dataset folder: the bundled sample in smoke mode, else ``path``, ``$REID_DATA_ROOT``
    or the sample (:func:`reid_utils.data.resolve_data_root`).

    A ``.zip`` (e.g. ``dataset.zip`` on Google Drive) is checked and extracted once: on Colab
    to ``/content/<zip name>`` (the runtime's local disk: reading 30,000 small files from
    Drive is slow), elsewhere next to the zip. A path on Drive mounts it first (:func:`ensure_drive`).
    """
    if smoke:
        return ensure_sample()
    given = str(path) if path is not None and str(path) != "" else os.environ.get(ENV_VAR, "").strip()
    ensure_drive(given)
    if given and in_colab() and given.lower().endswith(".zip") and Path(given).expanduser().is_file():
        zip_path = Path(given).expanduser()
        return extract_zip(zip_path, Path("/content") / zip_path.stem)
    return resolve_data_root(path)


def gpu_available() -> bool:
    """True when a CUDA GPU is visible (on Colab: *Runtime > Change runtime type > GPU*)."""
    import torch

    return torch.cuda.is_available()


def output_dir(path: str | os.PathLike | None = None, smoke: bool = False) -> Path:
    """The notebooks' output folder, created: ``path``, else :data:`COLAB_OUTPUT_DIR` on Colab
    (Drive is mounted first: :func:`ensure_drive`) and ``<repo>/outputs`` elsewhere
    (``<repo>/outputs/smoke`` in smoke mode, which also ignores ``path``). On Colab a path
    outside Drive, such as ``/content/outputs``, stays on this notebook's runtime."""
    if smoke:
        out = repo_root() / "outputs" / "smoke"
    elif path is not None and str(path) != "":
        out = Path(path).expanduser()
    else:
        out = Path(COLAB_OUTPUT_DIR) if in_colab() else repo_root() / "outputs"
    ensure_drive(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_dir(out: str | os.PathLike, task: str, model: str) -> Path:
    """``out/<task>/<model>``: where notebook 02 (``task="attribute"``) or 03 (``"reid"``) trains ``model``."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return Path(out) / task / model


def find_checkpoints(out: str | os.PathLike) -> dict[str, Path]:
    """Every ``out/<task>/<model>/best.pt``, as ``{"<task>/<model>": path}``: attribute models
    first, then re-ID models, each in registry order (unknown names last, sorted). Refits
    (``<model>_all_ids``, no validation split to evaluate on) are left out: :func:`refit_of`.

    Raises FileNotFoundError, saying where it looked, when there is none.
    """
    found = {}
    for task in TASKS:
        paths = {p.parent.name: p for p in sorted(Path(out, task).glob("*/best.pt")) if not is_refit(p.parent)}
        order = [m for m in MODEL_NAMES if m in paths] + sorted(set(paths) - set(MODEL_NAMES))
        found.update({f"{task}/{model}": paths[model] for model in order})
    if not found:
        raise FileNotFoundError(
            f"no checkpoint in {Path(out) / 'attribute'}/<model>/best.pt or {Path(out) / 'reid'}/<model>/best.pt: "
            "train models in notebooks 02 and 03 first (with the same OUTPUT_DIR), or name checkpoints in the "
            "parameters cell (CHECKPOINTS in notebook 04, REID_CHECKPOINT and ATTRIBUTE_CHECKPOINT in 05)"
        )
    return found


def refit_of(checkpoint: str | os.PathLike) -> Path | None:
    """The refit on every identity (:func:`reid_utils.engine.refit`) of the run that wrote
    ``checkpoint``: ``reid/apr/best.pt`` -> ``reid/apr_all_ids/best.pt``. None when there is
    none, or when it is older than ``checkpoint`` (the refit of an earlier recipe)."""
    path = refit_dir(Path(checkpoint).parent) / "best.pt"
    if not path.is_file() or path.stat().st_mtime < Path(checkpoint).stat().st_mtime:
        return None
    return path


def smoke_checkpoints(out: str | os.PathLike, root: str | os.PathLike | None = None) -> dict[str, Path]:
    """The checkpoints of :data:`DEFAULT_RUNS` under ``out`` (as :func:`find_checkpoints` names
    them), training any that is missing with ``main(smoke=True)`` (a few seconds each), and the
    refits of the re-ID ones, as notebook 03 leaves them.

    For smoke mode only: notebooks 04 and 05 then run on their own, and always on the same set
    and with the same output (warnings and other stderr of these runs are swallowed; errors
    still raise).
    """
    found = {}
    for task, models in DEFAULT_RUNS.items():
        for model in models:
            folder = run_dir(out, task, model)
            if not (folder / "best.pt").is_file():
                with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    main(model=model, smoke=True, data_root=None if root is None else str(root),
                         out_dir=str(folder), split_file=str(Path(out) / "split.json"))
            if task == "reid" and refit_of(folder / "best.pt") is None:
                with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    refit(folder, model=model, smoke=True, data_root=None if root is None else str(root))
            found[f"{task}/{model}"] = folder / "best.pt"
    return found


def figure_dir(out: str | os.PathLike) -> Path:
    """Where notebook 04 saves its figures: ``out/figures``, next to the checkpoints (on Colab
    with ``OUTPUT_DIR`` on Drive they survive a disconnect). The README's images are refreshed
    by ``python -m reid_utils pipeline --readme-images`` only."""
    folder = Path(out) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def show_path(path: str | os.PathLike | None) -> str:
    """``path`` relative to the repository root when inside it (``dataset/sample``), else as is.

    Links are not followed: a swapped output folder (a link to its current version) shows
    under its stable name, ``outputs/submission/reid_test.txt``.
    """
    if path is None:
        return "None"
    path = Path(os.path.abspath(path))
    for root in (Path(os.path.abspath(repo_root())), repo_root().resolve()):
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return str(path)


# ---------------------------------------------------------------------------------------------
# Environment


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules


def mount_drive(mountpoint: str = DRIVE_MOUNTPOINT) -> Path | None:
    """Mount Google Drive on Colab (asks for permission once) and return ``<mountpoint>/MyDrive``.

    Elsewhere it prints why nothing happened and returns None: a local ``OUTPUT_DIR`` or
    ``DATA_ROOT`` works without it.
    """
    if not in_colab():
        print("mount_drive: not running on Google Colab; use local paths for DATA_ROOT and OUTPUT_DIR")
        return None
    from google.colab import drive  # type: ignore[import-not-found]

    drive.mount(mountpoint)
    return Path(mountpoint) / "MyDrive"


def ensure_drive(path: str | os.PathLike) -> None:
    """Mount Google Drive when ``path`` is on it (under ``/content/drive``), this is Colab and
    Drive is not mounted yet; otherwise nothing. A folder made there before the mount would
    be on the runtime's disk, not on Drive, and would block the mount."""
    on_drive = str(path) != "" and Path(str(path)).expanduser().absolute().is_relative_to(DRIVE_MOUNTPOINT)
    if on_drive and in_colab() and not Path(DRIVE_MOUNTPOINT, "MyDrive").is_dir():
        mount_drive(DRIVE_MOUNTPOINT)


def versions() -> str:
    """The runtime report of every notebook's versions cell: Python, torch (and its CUDA),
    torchvision, numpy, pandas, reid_utils, the device (GPU name or CPU threads) and the
    precision training will use there. On Colab without a GPU it says how to get one."""
    device = select_device("auto")
    if device.type == "cuda":
        device_text = f"cuda: {torch.cuda.get_device_name(device)}"
    else:
        device_text = f"{device.type} ({torch.get_num_threads()} threads)"
    lines = [
        f"python      {platform.python_version()}",
        f"torch       {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"torchvision {torchvision.__version__}",
        f"numpy       {numpy.__version__}",
        f"pandas      {pandas.__version__}",
        f"reid_utils  {__version__}",
        f"device      {device_text}",
        f"precision   {describe_precision(device)}",
        f"colab       {in_colab()}",
    ]
    if in_colab() and device.type != "cuda":
        lines.append("no GPU: for real training choose Runtime -> Change runtime type -> T4 GPU, then run all cells again")
    return "\n".join(lines)


def inference_fast_path(smoke: bool = False):
    """The :class:`~reid_utils.engine.runtime.FastPath` for evaluation and export: the automatic one
    (GPU, bf16 where it helps), or plain fp32 on one CPU thread in smoke mode (the same
    numbers on every machine)."""
    if smoke:
        return fast_path("cpu", "fp32", num_threads=1).apply()
    return fast_path(select_device("auto"))


# ---------------------------------------------------------------------------------------------
# Display


def show(*figures, dpi: int = 72, format: str = "png") -> None:
    """Display matplotlib figures as images only (``format="jpeg"`` for grids of photos).

    A returned ``Figure`` would also print a text line whose size depends on the backend's
    dpi; showing the image alone keeps the notebooks' compared outputs identical everywhere
    (nbval does not compare images), and a modest ``dpi`` keeps the stored notebooks small.
    """
    from IPython.display import display

    if format not in ("png", "jpeg"):
        raise ValueError(f"format must be 'png' or 'jpeg', got {format!r}")
    for figure in figures:
        buffer = io.BytesIO()
        options = {"pil_kwargs": {"quality": 80}} if format == "jpeg" else {}
        figure.savefig(buffer, format=format, dpi=dpi, bbox_inches="tight", **options)
        display({f"image/{format}": buffer.getvalue()}, raw=True)


def head(path: str | os.PathLike, lines: int = 3, width: int = 160) -> str:
    """The first ``lines`` lines of a text file, each cut to ``width`` characters."""
    with open(path, encoding="utf-8") as f:
        first = [line.rstrip("\n") for _, line in zip(range(lines), f)]
    return "\n".join(line if len(line) <= width else line[: width - 4] + " ..." for line in first)


def describe_dataset(summary: dict) -> str:
    """:func:`reid_utils.data.format_summary` with paths shown relative to the repository."""
    shown = dict(summary, root=show_path(summary["root"]))
    if summary.get("annotation_file"):
        shown["annotation_file"] = show_path(summary["annotation_file"])
    return format_summary(shown)
