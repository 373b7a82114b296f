# %% [markdown]
# # 02 · Attribute training
#
# Train the pedestrian-attribute models on the split of notebook 01 and compare their
# validation accuracy per attribute group:
#
# * `resnet50`: the multi-task baseline (ResNet backbone, BN-neck, 12 grouped attribute
#   heads plus an identity classifier);
# * `cbam`: ResNet with channel and spatial attention, weighted BCE on the 30 binary
#   attributes;
# * `alm`: the Attribute Localization Module network (Tang et al., ICCV 2019): a feature
#   pyramid, one localized box per attribute and level, deep supervision, max voting.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/reid-utils/reid_utils/blob/main/notebooks/02_attribute_training.ipynb)
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
from reid_utils.engine import best_epoch, main
from reid_utils.evaluation import attribute_accuracy_table
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
RESUME = True         # continue an interrupted run from OUTPUT_DIR/attribute/<model>/last.pt
MODELS = ["resnet50", "cbam", "alm"]  # registry names (reid_utils.models.MODEL_NAMES)

GPU = gpu_available()  # a CUDA GPU; the defaults below follow it
PARAMS = dict(        # TrainConfig fields for every model (they win over a model's own defaults)
    num_epochs=30,    # training epochs (the cosine schedule spans them; with a budget, at most)
    height=256 if GPU else 128,  # the papers' 256x128 on a GPU; 128x64 (4x cheaper) on a CPU
    width=128 if GPU else 64,
    depth=50 if GPU else 18,     # ResNet depth 18, 34 or 50
    pretrained=in_colab(),       # ImageNet weights: they need internet (Colab), else from scratch
    # CPU: at most 20 minutes per model (three models: an hour), the epochs planned from the
    # measured speed so that the cosine ends inside it; 0: no budget
    max_minutes=0 if GPU else 20,
)
PER_MODEL = {         # extra TrainConfig fields per model, on top of PARAMS
    "resnet50": dict(early_stopping_metric="attribute_accuracy"),  # best.pt by attribute accuracy
    "cbam": dict(attribute_weighting="frequency"),  # the attention report's class weights
    "alm": dict(attribute_weighting="exp"),         # ALM's exp(-positive ratio) weights
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
# ones. Each model writes `OUTPUT_DIR/attribute/<model>/`: `best.pt` (the best epoch,
# used by notebooks 04 and 05), `last.pt` (after every epoch, for `resume`),
# `history.json` and `curves.png`. With `RESUME = True`, running this cell again after a
# disconnect continues from `last.pt` and a finished run is only reloaded; resuming with
# other settings (a changed `PARAMS`) is an error that lists them: set `RESUME = False` to
# train anew.
#
# The same run from a terminal (every field is an option):
# `python -m reid_utils train --model alm --out outputs/attribute/alm --epochs 30 --resume`
# (`--max-minutes 20` on a CPU).

# %%
# NBVAL_IGNORE_OUTPUT
histories = {}
for name in MODELS:
    overrides = {**PARAMS, **PER_MODEL.get(name, {})}
    histories[name] = main(
        model=name,
        data_root=str(root),
        out_dir=str(run_dir(out, "attribute", name)),
        split_file=str(out / "split.json"),  # the split of notebook 01 (made here if missing)
        resume=RESUME,
        **overrides,
    )

# %%
for name in histories:
    print(name, "->", show_path(run_dir(out, "attribute", name) / "best.pt"))

# %% [markdown]
# ## Training curves
#
# Loss components, validation attribute accuracy (mean and per group), validation
# re-ID mAP and rank-1 under both protocols, and the learning rate.

# %%
show(*(plot_history(history, title=name) for name, history in histories.items()))

# %% [markdown]
# ## Validation accuracy per attribute
#
# Accuracy (%) of each of the 12 attribute groups on the validation identities, at each
# model's best epoch, laid out like the multi-task README's table; `mA` is the
# label-based mean accuracy over the 30 binary columns (mean of positive and negative
# recall), which rewards rare attributes that plain accuracy ignores.

# %%
# NBVAL_IGNORE_OUTPUT
attribute_accuracy_table(histories).round(1)

# %% [markdown]
# **Regression check.** In smoke mode (the tests: CPU, fp32, seeded, AVX2 kernels on any x86
# CPU) the numbers below are reproducible, so nbval compares them, rounded to whole percent: a
# change that alters training or evaluation changes them and fails the notebook test. The next
# cell asserts what must hold on any data: every model's label-based mA beats chance (50 %).

# %%
best = {name: best_epoch(history, "attribute_accuracy") for name, history in histories.items()}
print({name: {"accuracy": round(100 * row["attribute_accuracy"]), "mA": round(100 * row["mA"])}
       for name, row in best.items()})

# %%
for name, row in best.items():
    assert row["mA"] > 0.5, f"{name}: label-based mA {row['mA']:.3f} is not above chance (0.5): the pipeline is broken"

# %% [markdown]
# Next: `03_reid_training.ipynb` trains the re-ID models; `04_evaluation.ipynb` compares every checkpoint.
