# %% [markdown]
# # 01 · Data preparation
#
# Find the dataset (your Market-1501 data when it is configured, otherwise the bundled
# synthetic sample), check every file, look at its statistics, and save the
# identity-disjoint train / validation split that notebooks 02-04 share.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/reid-utils/reid_utils/blob/main/notebooks/01_data_preparation.ipynb)
#
# **On Colab**: run the setup cell below first. There `OUTPUT_DIR` defaults to `MyDrive/reid_utils_outputs` on Google Drive (the first run asks for access): each notebook gets a runtime of its own, and only Drive carries the split, checkpoints and submission from one notebook to the next, and through a disconnect.

# %% tags=["skip-execution"]
# NBVAL_SKIP
# Colab only: get the code and install it; elsewhere this cell does nothing. Any failure stops
# here with what to do. A fork: set REPO_URL (or the environment variable REID_REPO_URL).
# A copy on Google Drive instead of GitHub: set REPO_SOURCE to the repository's folder or .zip.
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_URL = os.environ.get("REID_REPO_URL", "https://github.com/reid-utils/reid_utils.git")
REPO_SOURCE = os.environ.get("REID_REPO_SOURCE", "")  # e.g. "/content/drive/MyDrive/reid_utils.zip"
CHECKOUT = Path(os.environ.get("REID_CHECKOUT", "/content/reid_utils"))


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(command)}` failed (exit {done.returncode}):\n{done.stderr.strip()[-1500:]}")


def _copy_from_drive(source: Path, checkout: Path) -> None:
    if str(source).startswith("/content/drive") and not Path("/content/drive/MyDrive").exists():
        from google.colab import drive  # Colab's own module: the package is not installed yet

        drive.mount("/content/drive")
    if not source.exists():
        raise FileNotFoundError(f"REPO_SOURCE {source} does not exist: check the path (Drive is under /content/drive/MyDrive)")
    if source.is_dir():
        shutil.copytree(source, checkout, ignore=shutil.ignore_patterns(".venv", "outputs", "__pycache__"))
        return
    unzipped = checkout.with_name(checkout.name + ".unzip")
    shutil.rmtree(unzipped, ignore_errors=True)  # a leftover of an interrupted try
    try:
        with zipfile.ZipFile(source) as archive:  # a zip of the repository, with or without a top folder
            archive.extractall(unzipped)
        tops = list(unzipped.iterdir())
        root = tops[0] if len(tops) == 1 and tops[0].is_dir() else unzipped
        if not (root / "pyproject.toml").is_file():
            raise RuntimeError(f"{source} holds no pyproject.toml at its top: zip the repository folder itself")
        root.rename(checkout)
    finally:
        shutil.rmtree(unzipped, ignore_errors=True)


if "google.colab" in sys.modules:
    if not (CHECKOUT / "pyproject.toml").is_file():
        shutil.rmtree(CHECKOUT, ignore_errors=True)  # what an interrupted try left behind
        if REPO_SOURCE:
            _copy_from_drive(Path(REPO_SOURCE), CHECKOUT)
        else:
            try:
                _run("git", "clone", "--quiet", "--depth", "1", REPO_URL, str(CHECKOUT))
            except RuntimeError as error:
                raise RuntimeError(
                    f"{error}\nCould not clone {REPO_URL}. Check the address (a fork: set REPO_URL), or upload the "
                    "repository to Google Drive and set REPO_SOURCE to its folder or .zip."
                ) from None
    # Colab's own torch and torchvision satisfy the loose ranges, so pip keeps them.
    _run(sys.executable, "-m", "pip", "install", "--quiet", "-e", str(CHECKOUT))
    os.chdir(CHECKOUT)
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))  # the running kernel started before the install
    import reid_utils  # noqa: E402,F401  (fails here, not one cell later)

    print(f"reid_utils {reid_utils.__version__} from {Path(reid_utils.__file__).parent}")

# %%
# NBVAL_IGNORE_OUTPUT
from reid_utils.notebook import versions

print(versions())

# %%
from reid_utils.data import load_dataset, make_split, save_split, summarize
from reid_utils.notebook import (
    data_root,
    describe_dataset,
    output_dir,
    show,
    show_path,
    smoke_mode,
)
from reid_utils.visualize import plot_attribute_examples, plot_dataset_overview

# %%
SMOKE = smoke_mode()  # True under the tests (REID_SMOKE=1): the bundled sample, outputs/smoke
DATA_ROOT = None      # None: $REID_DATA_ROOT, else the bundled sample; or a folder or a dataset.zip,
                      # e.g. "/content/drive/MyDrive/dataset.zip" (extracted once; on Colab to /content)
OUTPUT_DIR = None     # None: Drive's MyDrive/reid_utils_outputs on Colab, else <repo>/outputs
VAL_FRACTION = 0.2    # share of the training identities held out for validation
SPLIT_SEED = 0        # seed of the split (every notebook reuses the saved split)
CHECK_IMAGES = True   # decode every image once to find corrupt files (about a minute on Market-1501)

# %% [markdown]
# ## Where the data is
#
# Real data, in either layout (see the README):
#
# * **course layout**: `train/` (`PPPP_cC_NNNNNNNNN.jpg`), `test/`, `queries/` and
#   `annotations_train.csv`, e.g. the course's `dataset.zip`;
# * **official Market-1501**: `bounding_box_train/`, `bounding_box_test/`, `query/` and
#   `market_attribute.mat`.
#
# On Colab, upload `dataset.zip` to Google Drive and set
# `DATA_ROOT = "/content/drive/MyDrive/dataset.zip"` (in every notebook): Drive is mounted
# when a path is on it, and the zip is checked and extracted once per runtime to
# `/content/dataset`, the fast local disk.
# Locally, set `DATA_ROOT` to the folder (or a zip, extracted next to itself), or the
# environment variable `REID_DATA_ROOT` for every notebook and the command line at once.
# Without any of these, the bundled synthetic sample (`dataset/sample`) is used.
#
# `SMOKE` is set when the tests run the notebooks (`REID_SMOKE=1`): they then always use the bundled sample and `<repo>/outputs/smoke` (never your own runs), and any training is a few steps of a tiny model (`reid_utils.config.SMOKE_SETTINGS`), so that each notebook runs in about a minute on a CPU.

# %%
root = data_root(DATA_ROOT, smoke=SMOKE)
out = output_dir(OUTPUT_DIR, smoke=SMOKE)
print("data:   ", show_path(root))
print("outputs:", show_path(out))

# %% [markdown]
# ## Validate and summarize
#
# Every image is parsed (file name: person id and camera) and, with `CHECK_IMAGES`,
# decoded; every training identity must have an annotation row and every row images.
# Problems stop here with a message naming the file. Non-image files (the course zip
# holds `desktop.ini` files) are skipped and counted.

# %%
summary = summarize(root, check_images=CHECK_IMAGES)
print(describe_dataset(summary))

# %% [markdown]
# ## Statistics
#
# Images per identity and per camera, and how often each of the 30 binary attribute
# columns (age one-hot, then the yes/no and colour attributes) is positive over the
# training identities. Rare attributes (a few percent) are the hard ones: the
# weighted losses of notebook 02 are there for them.

# %%
index = load_dataset(root)
show(plot_dataset_overview(index))

# %% [markdown]
# One example per class of each of the 12 attribute groups (the groups of the APR-Net
# report: age has 4 classes, upper colour 8 + multicolour, lower colour 9 + multicolour).

# %%
show(plot_attribute_examples(index.train, seed=SPLIT_SEED), format="jpeg")

# %% [markdown]
# ## The train / validation split
#
# Validation identities never appear in training. Their images are divided the
# Market-1501 way: one query per (identity, camera), the rest gallery. The split is
# saved to `OUTPUT_DIR/split.json`; notebooks 02 and 03 train on it and notebook 04
# evaluates on it. Run this notebook again after changing the dataset (a split that no
# longer matches the data is refused with a clear message).

# %%
split = make_split(index, val_fraction=VAL_FRACTION, seed=SPLIT_SEED)
split_file = out / "split.json"
save_split(split, split_file)
print(split)
print("saved to", show_path(split_file))

# %% [markdown]
# Next: train attribute models in `02_attribute_training.ipynb` and re-ID models in `03_reid_training.ipynb`.
