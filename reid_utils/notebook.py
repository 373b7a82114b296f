"""Conveniences for the notebooks in ``notebooks/`` (the library itself never needs them).

* Where things are: :func:`repo_root`, :func:`data_root`, :func:`output_dir`, :func:`run_dir`,
  :func:`find_checkpoints`, :func:`figure_dir`, :func:`show_path`.
* The environment: :func:`smoke_mode` (``REID_SMOKE=1``, set by the notebook tests),
  :func:`in_colab`, :func:`gpu_available`, :func:`mount_drive`, :func:`versions`,
  :func:`inference_fast_path`.
* Display: :func:`show` (a figure as an image only, so nbval has no text to compare),
  :func:`describe_dataset`.
* Tables from training histories: :func:`load_history`, :func:`attribute_accuracy_table`,
  :func:`reid_table`.
* Data figures of notebook 01: :func:`plot_dataset_overview`, :func:`plot_attribute_examples`.

Output folder layout shared by the notebooks (``OUTPUT_DIR``, default ``<repo>/outputs``;
``<repo>/outputs/smoke`` in smoke mode so that tests never touch real runs)::

    split.json                     notebook 01: the identity-disjoint train/validation split
    attribute/<model>/best.pt      notebook 02 (also last.pt, history.json, curves.png)
    reid/<model>/best.pt           notebook 03
    figures/                       notebook 04 in smoke mode (otherwise img/ in the repository)
    submission/                    notebook 05: classification_test.csv, reid_test.txt
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

SMOKE_ENV_VAR = "REID_SMOKE"
TASKS = ("attribute", "reid")  # sub-folders of the output folder: notebook 02, notebook 03
DRIVE_MOUNTPOINT = "/content/drive"
#: What notebooks 02 and 03 train by default (and so in smoke mode): notebooks 04 and 05 use these.
DEFAULT_RUNS: dict[str, tuple[str, ...]] = {"attribute": ("resnet50", "cbam", "alm"), "reid": ("apr",)}


# ---------------------------------------------------------------------------------------------
# Where things are


def repo_root() -> Path:
    """The repository checkout (the folder holding ``pyproject.toml``), whatever the kernel's cwd.

    nbval starts kernels in ``notebooks/`` and Colab in ``/content``: paths never depend on it.
    Falls back to the nearest parent of the cwd with a ``pyproject.toml``, then to the cwd.
    """
    from .data.locate import repo_root as package_checkout

    root = package_checkout()
    if root is not None:
        return root
    cwd = Path.cwd().resolve()
    return next((p for p in (cwd, *cwd.parents) if (p / "pyproject.toml").is_file()), cwd)


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
    Drive is slow), elsewhere next to the zip.
    """
    from .data import ENV_VAR, ensure_sample, extract_zip, resolve_data_root

    if smoke:
        return ensure_sample()
    given = str(path) if path is not None and str(path) != "" else os.environ.get(ENV_VAR, "").strip()
    if given and in_colab() and given.lower().endswith(".zip") and Path(given).expanduser().is_file():
        zip_path = Path(given).expanduser()
        return extract_zip(zip_path, Path("/content") / zip_path.stem)
    return resolve_data_root(path)


def gpu_available() -> bool:
    """True when a CUDA GPU is visible (on Colab: *Runtime > Change runtime type > GPU*)."""
    import torch

    return torch.cuda.is_available()


def output_dir(path: str | os.PathLike | None = None, smoke: bool = False) -> Path:
    """The notebooks' output folder, created: ``path`` (e.g. a Google Drive folder on Colab),
    else ``<repo>/outputs`` (``<repo>/outputs/smoke`` in smoke mode, which also ignores ``path``)."""
    if smoke:
        out = repo_root() / "outputs" / "smoke"
    elif path is not None and str(path) != "":
        out = Path(path).expanduser()
    else:
        out = repo_root() / "outputs"
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_dir(out: str | os.PathLike, task: str, model: str) -> Path:
    """``out/<task>/<model>``: where notebook 02 (``task="attribute"``) or 03 (``"reid"``) trains ``model``."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return Path(out) / task / model


def find_checkpoints(out: str | os.PathLike) -> dict[str, Path]:
    """Every ``out/<task>/<model>/best.pt``, as ``{"<task>/<model>": path}``: attribute models
    first, then re-ID models, each in registry order (unknown names last, sorted).

    Raises FileNotFoundError, saying where it looked, when there is none.
    """
    from .models import MODEL_NAMES

    found = {}
    for task in TASKS:
        paths = {p.parent.name: p for p in sorted(Path(out, task).glob("*/best.pt"))}
        order = [m for m in MODEL_NAMES if m in paths] + sorted(set(paths) - set(MODEL_NAMES))
        found.update({f"{task}/{model}": paths[model] for model in order})
    if not found:
        raise FileNotFoundError(
            f"no checkpoint in {Path(out) / 'attribute'}/<model>/best.pt or {Path(out) / 'reid'}/<model>/best.pt: "
            "train models in notebooks 02 and 03 first (with the same OUTPUT_DIR), or set CHECKPOINTS"
        )
    return found


def smoke_checkpoints(out: str | os.PathLike, root: str | os.PathLike | None = None) -> dict[str, Path]:
    """The checkpoints of :data:`DEFAULT_RUNS` under ``out`` (as :func:`find_checkpoints` names
    them), training any that is missing with ``main(smoke=True)`` (a few seconds each).

    For smoke mode only: notebooks 04 and 05 then run on their own, and always on the same set
    and with the same output (warnings and other stderr of these runs are swallowed; errors
    still raise).
    """
    from .engine import main

    found = {}
    for task, models in DEFAULT_RUNS.items():
        for model in models:
            folder = run_dir(out, task, model)
            if not (folder / "best.pt").is_file():
                with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    main(model=model, smoke=True, data_root=None if root is None else str(root),
                         out_dir=str(folder), split_file=str(Path(out) / "split.json"))
            found[f"{task}/{model}"] = folder / "best.pt"
    return found


def figure_dir(out: str | os.PathLike, smoke: bool = False) -> Path:
    """Where notebook 04 saves its figures: ``<repo>/img`` for the README, or ``out/figures``
    in smoke mode (tests must not rewrite the README's images)."""
    folder = Path(out) / "figures" if smoke else repo_root() / "img"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def show_path(path: str | os.PathLike | None) -> str:
    """``path`` relative to the repository root when inside it (``dataset/sample``), else as is."""
    if path is None:
        return "None"
    path = Path(path)
    try:
        return path.resolve().relative_to(repo_root().resolve()).as_posix()
    except ValueError:
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


def versions() -> str:
    """One line per component: Python, torch, torchvision, numpy, pandas, reid_utils, device."""
    import numpy
    import pandas
    import torch
    import torchvision

    from . import __version__
    from .runtime import select_device

    device = select_device("auto")
    if device.type == "cuda":
        device_text = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        device_text = f"{device.type} ({torch.get_num_threads()} threads)"
    lines = [
        f"python      {platform.python_version()}",
        f"torch       {torch.__version__}",
        f"torchvision {torchvision.__version__}",
        f"numpy       {numpy.__version__}",
        f"pandas      {pandas.__version__}",
        f"reid_utils  {__version__}",
        f"device      {device_text}",
        f"colab       {in_colab()}",
    ]
    return "\n".join(lines)


def inference_fast_path(smoke: bool = False):
    """The :class:`~reid_utils.runtime.FastPath` for evaluation and export: the automatic one
    (GPU, bf16 where it helps), or plain fp32 on one CPU thread in smoke mode (the same
    numbers on every machine)."""
    from .runtime import fast_path, select_device

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
    from .data import format_summary

    shown = dict(summary, root=show_path(summary["root"]))
    if summary.get("annotation_file"):
        shown["annotation_file"] = show_path(summary["annotation_file"])
    return format_summary(shown)


def matches_attribute_query(query: Mapping[str, str], records: Sequence) -> np.ndarray:
    """``(N,)`` bool: which ``records`` truly have every attribute of ``query`` (e.g.
    ``{"upcolour": "red", "gender": "female"}``); unknown attributes count as no match."""
    from .retrieval import parse_attribute_query

    wanted = parse_attribute_query(query)  # [(group index, class index), ...]; unknown names raise
    if not len(records):
        return np.zeros(0, dtype=bool)
    groups = np.stack([np.asarray(r.attributes) for r in records])  # (N, 12), -1 unknown
    return np.logical_and.reduce([groups[:, g] == c for g, c in wanted])


# ---------------------------------------------------------------------------------------------
# Tables from training histories


def load_history(checkpoint_or_run: str | os.PathLike) -> dict:
    """The per-epoch history of a run: ``history.json`` next to a checkpoint, or in a run folder."""
    path = Path(checkpoint_or_run)
    folder = path if path.is_dir() else path.parent
    history_file = folder / "history.json"
    if not history_file.is_file():
        raise FileNotFoundError(f"{history_file}: no training history (train the model in notebook 02 or 03)")
    return json.loads(history_file.read_text(encoding="utf-8"))


def _best_rows(histories: Mapping[str, dict], metric: str) -> dict[str, dict]:
    from .engine import best_epoch

    return {name: best_epoch(history, metric) for name, history in histories.items()}


def attribute_accuracy_table(histories: Mapping[str, dict], metric: str = "attribute_accuracy"):
    """Validation accuracy per attribute group at each model's best epoch (by ``metric``), in %.

    Laid out like the multi-task README's table: one row per model, the 12 attribute groups,
    their ``mean``, then label-based ``mA`` and the ``epoch`` picked.
    """
    import pandas as pd

    from .data.schema import GROUP_NAMES

    rows = {}
    for name, best in _best_rows(histories, metric).items():
        row = {group: 100 * best[f"attribute_accuracy_{group}"] for group in GROUP_NAMES}
        row.update(mean=100 * best["attribute_accuracy"], mA=100 * best["mA"], epoch=int(best["epoch"]))
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def reid_table(histories: Mapping[str, dict], metric: str = "score"):
    """Validation re-ID at each model's best epoch (by ``metric``), in %: Market-protocol mAP,
    rank-1, rank-5, mINP, course-protocol mAP / rank-1, mean attribute accuracy, and the epoch."""
    import pandas as pd

    keys = ("mAP", "rank1", "rank5", "mINP", "course_mAP", "course_rank1", "attribute_accuracy")
    rows = {}
    for name, best in _best_rows(histories, metric).items():
        row = {key: 100 * best[key] for key in keys if key in best}
        row["epoch"] = int(best["epoch"])
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


# ---------------------------------------------------------------------------------------------
# Data figures (notebook 01)


def plot_dataset_overview(index, path=None):
    """Three panels about the training images of a :class:`~reid_utils.data.DatasetIndex`:
    images per identity (histogram), images per camera, and the positive rate of each of the
    30 binary attribute columns over the identities."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from .data.parsing import is_labelled
    from .data.schema import BINARY_COLUMNS, groups_to_binary
    from .visualize import save_figure

    labelled = [r for r in index.train if is_labelled(r.pid)]
    _, per_identity = np.unique([r.pid for r in labelled], return_counts=True)
    cams, per_camera = np.unique([r.camid for r in index.train if r.camid >= 0], return_counts=True)
    attributes = {r.pid: r.attributes for r in labelled}  # labels are per identity
    rates = groups_to_binary(np.stack(list(attributes.values()))).mean(axis=0)  # (30,)

    fig = Figure(figsize=(14, 3.4), layout="constrained")
    ax_id, ax_cam, ax_attr = fig.subplots(1, 3, width_ratios=[1, 1, 2.6])
    low, high = int(per_identity.min()), int(per_identity.max())
    ax_id.hist(per_identity, bins=np.arange(low, high + 2) - 0.5 if high - low < 60 else 30, color="#1f77b4")
    ax_id.set(title=f"images per identity ({len(per_identity)} ids)", xlabel="images", ylabel="identities",
              xlim=(low - 2.5, high + 2.5) if high - low < 5 else None)
    ax_id.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_cam.bar([f"c{c + 1}" for c in cams], per_camera, color="#ff7f0e")
    ax_cam.set(title="training images per camera", ylabel="images")
    ax_attr.bar(range(len(BINARY_COLUMNS)), 100 * rates, color="#2ca02c")
    ax_attr.set_xticks(range(len(BINARY_COLUMNS)), BINARY_COLUMNS, rotation=90, fontsize=7)
    ax_attr.set(title="attribute positive rate over identities", ylabel="%", ylim=(0, 100))
    for ax in (ax_id, ax_cam, ax_attr):
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_attribute_examples(records: Sequence, seed: int = 0, image_size: tuple[int, int] = (64, 128),
                            per_row: int = 11, path=None):
    """An example training image of every class of the 12 attribute groups (randomly chosen,
    seeded), titled ``group / class``; groups are packed left to right, ``per_row`` panels per
    row. A class no image has gets an empty panel marked "(none)"."""
    from matplotlib.figure import Figure

    from .data import read_image
    from .data.schema import GROUPS
    from .visualize import save_figure

    rng = np.random.default_rng(seed)
    labelled = [r for r in records if bool((np.asarray(r.attributes) >= 0).all())]
    groups = np.stack([r.attributes for r in labelled])  # (N, 12)
    rows: list[list[tuple[int, int]]] = [[]]  # (group, class) per panel
    for g, group in enumerate(GROUPS):
        if rows[-1] and len(rows[-1]) + group.num_classes > per_row:
            rows.append([])
        rows[-1].extend((g, c) for c in range(group.num_classes))
    num_cols = max(per_row, max(len(row) for row in rows))
    fig = Figure(figsize=(0.66 * num_cols, 1.5 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), num_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(num_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            g, c = row[j]
            candidates = np.flatnonzero(groups[:, g] == c)
            if len(candidates):
                record = labelled[int(rng.choice(candidates))]
                ax.imshow(np.asarray(read_image(record.path).resize(image_size)))
            label = GROUPS[g].classes[c] + ("" if len(candidates) else "\n(none)")
            first = c == 0  # the group's name above its first class
            ax.set_title(f"{GROUPS[g].name}\n{label}" if first else f"\n{label}", fontsize=7,
                         loc="left" if first else "center")
    return save_figure(fig, path)
