# %% [markdown]
# # 03 · Re-identification training
#
# Train multi-task person re-identification models: an identity loss (cross-entropy
# with label smoothing, or AM-Softmax), a batch-hard triplet loss on P x K batches and
# the attribute loss, combined as `alpha * attribute + (1 - alpha) * identity + triplet`.
# Models: `apr` (APR-Net with the Attribute Re-weighting Module, the default),
# `resnet50`, `convhead`, `self_attention`, `la_transformer` (a Locally Aware
# Transformer on row and column parts) and `osnet` (the APR-Net head on an omni-scale trunk
# built to train from scratch). The validation mAP and rank-1 are measured on
# identities never seen in training.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/reid-utils/reid_utils/blob/main/notebooks/03_reid_training.ipynb)
#
# **On Colab**: run the setup cell below first, and choose *Runtime → Change runtime type → GPU* for real training. There `OUTPUT_DIR` defaults to `MyDrive/reid_utils_outputs` on Google Drive (the first run asks for access): each notebook gets a runtime of its own, and only Drive carries the split, checkpoints and submission from one notebook to the next, and through a disconnect.

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
from reid_utils.data import load_dataset, load_split
from reid_utils.engine import best_epoch, main, refit, refit_dir
from reid_utils.evaluation import best_checkpoint, reid_table
from reid_utils.metrics import random_ranking_map
from reid_utils.notebook import (
    data_root,
    gpu_available,
    in_colab,
    output_dir,
    run_dir,
    show,
    show_path,
    smoke_mode,
)
from reid_utils.visualize import plot_history

# %%
SMOKE = smoke_mode()  # True under the tests (REID_SMOKE=1): tiny runs on the bundled sample
DATA_ROOT = None      # None: $REID_DATA_ROOT, else the bundled sample (see notebook 01)
OUTPUT_DIR = None     # None: Drive's MyDrive/reid_utils_outputs on Colab, else <repo>/outputs
RESUME = True         # continue an interrupted run from OUTPUT_DIR/reid/<model>/last.pt
MODELS = ["apr"]      # add "resnet50", "convhead", "self_attention", "la_transformer", "osnet" to compare
REFIT = True          # then train the best model again on every identity: notebook 05 exports that refit

GPU = gpu_available()  # a CUDA GPU; the defaults below follow it
PARAMS = dict(        # TrainConfig fields for every model (they win over a model's own defaults)
    # CPU: the README's recipe, a 60-minute budget: the epochs are planned from the measured
    # speed so that the warmup and the cosine end inside it. GPU: the Colab recipe (README).
    max_minutes=0 if GPU else 60,
    num_epochs=60 if GPU else None,  # None: as many as the budget allows
    height=256 if GPU else 128,  # the papers' 256x128 on a GPU; 128x64 (4x cheaper) on a CPU
    width=128 if GPU else 64,
    depth=50 if GPU else 18,     # ResNet depth 18, 34 or 50
    pretrained=in_colab(),       # ImageNet weights: they need internet (Colab), else from scratch
)
PER_MODEL = {         # extra TrainConfig fields per model, on top of PARAMS and the model's defaults
    # apr: identity + attribute losses, no triplet (the README's ablation: a triplet loss costs mAP)
    "la_transformer": dict(id_loss="amsoftmax", am_scale=30.0, am_margin=0.35),
    "osnet": dict(pretrained=False),  # torchvision has no OSNet ImageNet weights: from scratch
}
if SMOKE:             # one short epoch per model, CPU, fp32, seeded (SMOKE_SETTINGS)
    PARAMS, PER_MODEL, RESUME = dict(smoke=True), {}, False

# %% [markdown]
# `SMOKE` is set when the tests run the notebooks (`REID_SMOKE=1`): they then always use the bundled sample and `<repo>/outputs/smoke` (never your own runs), and any training is a few steps of a tiny model (`reid_utils.config.SMOKE_SETTINGS`), so that each notebook runs in about a minute on a CPU.

# %%
root = data_root(DATA_ROOT, smoke=SMOKE)
out = output_dir(OUTPUT_DIR, smoke=SMOKE)
print("data:   ", show_path(root))
print("outputs:", show_path(out))

# %% [markdown]
# ## Train
#
# `main(**overrides)` takes any `TrainConfig` field (`help(TrainConfig)`, or
# `python -m reid_utils train --help`); a misspelt name is an error listing the valid
# ones. Each model writes `OUTPUT_DIR/reid/<model>/`: `best.pt` (the best epoch,
# used by notebooks 04 and 05), `last.pt` (after every epoch, for `resume`),
# `history.json` and `curves.png`. With `RESUME = True`, running this cell again after a
# disconnect continues from `last.pt` and a finished run is only reloaded; resuming with
# other settings (a changed `PARAMS`) is an error that lists them: set `RESUME = False` to
# train anew.
#
# The same run from a terminal (every field is an option):
# `python -m reid_utils train --model apr --out outputs/reid/apr --max-minutes 60 --resume`.

# %%
# NBVAL_IGNORE_OUTPUT
histories = {}
for name in MODELS:
    overrides = {**PARAMS, **PER_MODEL.get(name, {})}
    histories[name] = main(
        model=name,
        data_root=str(root),
        out_dir=str(run_dir(out, "reid", name)),
        split_file=str(out / "split.json"),  # the split of notebook 01 (made here if missing)
        resume=RESUME,
        **overrides,
    )

# %%
for name in histories:
    print(name, "->", show_path(run_dir(out, "reid", name) / "best.pt"))

# %% [markdown]
# ## Training curves
#
# Loss components, validation attribute accuracy (mean and per group), validation
# re-ID mAP and rank-1 under both protocols, and the learning rate.

# %%
show(*(plot_history(history, title=name) for name, history in histories.items()))

# %% [markdown]
# ## Validation re-ID
#
# At each model's best epoch (by `early_stopping_metric`, default the mean of mAP and
# attribute accuracy), in %: `mAP`, `rank1`, `rank5` and `mINP` under the Market-1501
# protocol (same-camera matches ignored), `course_mAP` / `course_rank1` under the course
# protocol (every same-identity image counts). Notebook 04 adds flip averaging and
# re-ranking.

# %%
# NBVAL_IGNORE_OUTPUT
reid_table(histories).round(1)

# %% [markdown]
# **Regression check.** In smoke mode these numbers are reproducible (CPU, fp32, seeded) and
# compared by nbval, rounded to whole percent. The assertion below must hold on any data: the
# re-ID mAP beats a random ranking of the same validation gallery (`random_ranking_map`).

# %%
best = {name: best_epoch(history) for name, history in histories.items()}
print({name: {key: round(100 * row[key]) for key in ("mAP", "course_mAP", "mA")} for name, row in best.items()})

# %%
split = load_split(out / "split.json", load_dataset(root))
chance = random_ranking_map([r.pid for r in split.val_query], [r.pid for r in split.val_gallery], protocol="course")
for name, row in best.items():
    assert row["course_mAP"] > 1.5 * chance, f"{name}: course mAP {row['course_mAP']:.3f} is not above chance {chance:.3f}"

# %% [markdown]
# ## The final fit, on every identity
#
# Validation held some identities out (`VAL_FRACTION` in notebook 01: a fifth by default) to
# choose the model and its length. The model that writes the submission should see all of
# them (a quarter more people with the default split): the model
# with the best validation mAP is trained again with `val_fraction=0` for the epochs that
# validated best (at most; `max_minutes` still holds), into `OUTPUT_DIR/reid/<model>_all_ids/`.
# Notebook 05 exports that refit when it exists; its validation numbers are those above
# (it has no held-out identities of its own). `REFIT = False` skips it (half the time).

# %%
# NBVAL_IGNORE_OUTPUT
if REFIT:
    chosen = best_checkpoint({name: run_dir(out, "reid", name) / "best.pt" for name in histories}, "mAP")
    refit(run_dir(out, "reid", chosen), model=chosen, data_root=str(root), resume=RESUME,
          **{**PARAMS, **PER_MODEL.get(chosen, {})})
    print(chosen, "refit on every identity ->", show_path(refit_dir(run_dir(out, "reid", chosen)) / "best.pt"))

# %% [markdown]
# Next: `04_evaluation.ipynb` evaluates these checkpoints (flip averaging, re-ranking, figures); `05_predictions_export.ipynb` writes the submission.
