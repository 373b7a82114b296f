# %% [markdown]
# # 05 · Predictions export
#
# Turn the trained models into the two files the course asks for, for the unlabelled
# `test/` and `queries/` images (or `bounding_box_test/` and `query/` of Market-1501). By
# default the CSV comes from the model with the best validation attribute accuracy (an
# attribute model of notebook 02, or the re-ID model if it is better) and the rankings from
# the refit of notebook 03's best re-ID model (below); the cell below says which.
#
# * `classification_test.csv`: `id` (the test image's file name) and the 27 attribute
#   columns of `annotations_train.csv`, 1/2 encoded, age 1-4, one row per test image;
# * `reid_test.txt`: one line per query, `QUERY.jpg: G1.jpg, G2.jpg, ...`, its top-100
#   test images, best first.
#
# Both files are validated, then replaced together with a manifest (`submission.json`)
# naming the checkpoints: an existing submission is never replaced by a broken one or by a
# mix of two exports. The same from the command line: `python -m reid_utils export
# --checkpoint outputs/reid/apr_all_ids/best.pt --attribute-checkpoint outputs/attribute/alm/best.pt
# --out outputs/submission`.
#
# **The rankings come from the refit on every identity** when notebook 03 made one
# (`REFIT = True`, its default): the best re-ID model trained again on all training
# identities, a quarter more people than the validated run saw (with notebook 01's default
# split). Without a refit, from the
# validated model. Re-ranking is on where it raises the validation course mAP (`RERANK`; a
# refit has no held-out people, so the validated run it repeats decides).
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/reid-utils/reid_utils/blob/main/notebooks/05_predictions_export.ipynb)
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
from reid_utils.evaluation import best_checkpoint, score_submission
from reid_utils.export import export_submission, read_classification_csv, read_reid_txt
from reid_utils.notebook import (
    data_root,
    find_checkpoints,
    head,
    inference_fast_path,
    output_dir,
    refit_of,
    show_path,
    smoke_checkpoints,
    smoke_mode,
)

# %%
SMOKE = smoke_mode()  # True under the tests (REID_SMOKE=1): the tiny checkpoint, the bundled sample
DATA_ROOT = None      # None: $REID_DATA_ROOT, else the bundled sample; the folder with test/ and queries/
OUTPUT_DIR = None     # the OUTPUT_DIR of notebooks 02 and 03 (None: Drive on Colab, else <repo>/outputs)
REID_CHECKPOINT = None       # None: the refit of notebook 03's best re-ID model (validation mAP), else that model
ATTRIBUTE_CHECKPOINT = None  # None: the model with the best validation attribute accuracy (notebooks 02 and 03)
SUBMISSION_DIR = None # None: OUTPUT_DIR/submission
TOP_K = 100           # test images listed per query
RERANK = "auto"       # k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3) before the top-k: True, False, or "auto":
                      # on where it raises the validation course mAP (a refit: that of the run it repeats)

# %% [markdown]
# `SMOKE` is set when the tests run the notebooks (`REID_SMOKE=1`): they then always use the bundled sample and `<repo>/outputs/smoke` (never your own runs), and any training is a few steps of a tiny model (`reid_utils.config.SMOKE_SETTINGS`), so that each notebook runs in about a minute on a CPU.

# %%
root = data_root(DATA_ROOT, smoke=SMOKE)
out = output_dir(OUTPUT_DIR, smoke=SMOKE)
if SMOKE:  # the tests may run this notebook alone: train the tiny checkpoint if missing
    smoke_checkpoints(out, root)
reid_checkpoint, attribute_checkpoint = REID_CHECKPOINT or None, ATTRIBUTE_CHECKPOINT or None
if reid_checkpoint is None or attribute_checkpoint is None:  # only then look in OUTPUT_DIR
    found = find_checkpoints(out)  # {"attribute/alm": best.pt, ..., "reid/apr": best.pt}
if reid_checkpoint is None:
    validated = found[best_checkpoint({k: v for k, v in found.items() if k.startswith("reid/")}, "mAP")]
    reid_checkpoint = refit_of(validated) or validated
if attribute_checkpoint is None:
    attribute_checkpoint = found[best_checkpoint(found, "attribute_accuracy")]
submission = SUBMISSION_DIR or out / "submission"
print("data:                 ", show_path(root))
print("rankings (re-ID):     ", show_path(reid_checkpoint))
print("attributes (the CSV): ", show_path(attribute_checkpoint))

# %% [markdown]
# ## Predict and write

# %%
result = export_submission(root, reid_checkpoint, submission, top_k=TOP_K, rerank=RERANK,
                           attribute_checkpoint=attribute_checkpoint,
                           fast_path=inference_fast_path(SMOKE), progress=not SMOKE)
print(f"{result['num_test']} test images, {result['num_queries']} queries")
for path in result["paths"].values():
    print("wrote", show_path(path))

# %%
# NBVAL_IGNORE_OUTPUT
print(f"{result['images_per_second']:.0f} images/s ({result['fast_path']})")
print(f"re-ranking {'on' if result['rerank'] else 'off'}"
      + (f": {result['rerank_choice']['reason']}" if result["rerank_choice"] else " (RERANK)"))
print(", ".join(f"{step} {seconds:.1f} s" for step, seconds in result["timings"].items()))

# %% [markdown]
# ## The files
#
# Their shape (checked again on reading) and first lines:

# %%
table = read_classification_csv(result["paths"]["classification"])
lines = read_reid_txt(result["paths"]["reid"])
print(f"classification_test.csv: {len(table)} rows x {table.shape[1]} columns:",
      ", ".join(table.columns[:6]), "...")
print(f"reid_test.txt: {len(lines)} lines of {len(lines[0][1])} test images each")

# %%
# NBVAL_IGNORE_OUTPUT
print(head(result["paths"]["classification"]))
print()
print(head(result["paths"]["reid"]))

# %% [markdown]
# ## Score (the synthetic sample only)
#
# The sample ships its hidden answers (`dataset/sample/ground_truth.csv`), so the
# submission can be scored here as the course evaluator would: mAP over the submitted
# lists (every test image of the query's identity is a match), rank-k, and attribute
# accuracy. On the real data there is no ground truth: upload the two files instead.

# %%
# NBVAL_IGNORE_OUTPUT
scores = score_submission(root, submission)
if scores is None:
    print("no ground truth for", show_path(root), "- submit the two files to the course evaluator")
else:
    print(f"re-ID: mAP {100 * scores['mAP']:.1f}%, rank-1 {100 * scores['rank1']:.1f}%, "
          f"rank-10 {100 * scores['rank10']:.1f}% over {scores['num_queries']} queries")
    print(f"attributes: mean accuracy {100 * scores['attribute_accuracy']:.1f}%, "
          f"mA {100 * scores['mA']:.1f}% over {scores['num_attribute_rows']} labelled test images")
