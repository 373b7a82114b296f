# %% [markdown]
# # 04 · Evaluation
#
# Evaluate every checkpoint of notebooks 02 and 03 on the validation split: attribute
# accuracy per group, mA and F1; re-ID rank-1/5/10, mAP and mINP without and with flip
# averaging and k-reciprocal re-ranking; model size and cost. Then look at the models:
# training curves, per-attribute accuracy, retrievals, a t-SNE of the embeddings, ALM's
# attribute boxes, CMC curves, and an attribute-based person search. Figures are also
# written to `img/` for the README.
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/reid-utils/reid_utils/blob/main/notebooks/04_evaluation.ipynb)
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
from pathlib import Path

import torch
from IPython.display import HTML, display

from reid_utils.data import build_transforms, load_dataset, read_image
from reid_utils.engine import input_size, load_model_from_checkpoint
from reid_utils.evaluation import evaluate_checkpoint, load_history, results_table
from reid_utils.evaluation.scoring import read_ground_truth
from reid_utils.metrics.retrieval import attribute_search, matches_attribute_query, rank_gallery
from reid_utils.notebook import (
    data_root,
    figure_dir,
    find_checkpoints,
    inference_fast_path,
    output_dir,
    show,
    show_path,
    smoke_checkpoints,
    smoke_mode,
)
from reid_utils.schema import GROUP_NAMES, group_probabilities
from reid_utils.search import search
from reid_utils.visualize import (
    activation_maps,
    plot_activation_maps,
    plot_attribute_accuracy,
    plot_attribute_boxes,
    plot_cmc,
    plot_confusion_matrices,
    plot_history,
    plot_images,
    plot_retrieval_grid,
    plot_tsne,
)

# %%
SMOKE = smoke_mode()  # True under the tests (REID_SMOKE=1): the tiny checkpoints in outputs/smoke
DATA_ROOT = None      # None: $REID_DATA_ROOT, else the bundled sample (the data the models trained on)
OUTPUT_DIR = None     # the OUTPUT_DIR of notebooks 02 and 03 (None: Drive on Colab, else <repo>/outputs)
CHECKPOINTS = None    # None: every OUTPUT_DIR/<task>/<model>/best.pt but refits (no split); or {"name": "path"}
PROTOCOL = "market"   # re-ID table: "market" (same-camera matches ignored) or "course"
RETRIEVAL_MODEL = "reid/apr"    # model for the retrieval grid, t-SNE and search (else the first)
ALM_MODEL = "attribute/alm"     # model whose attribute boxes are drawn
NUM_QUERIES = 4       # rows of the retrieval grid
SEARCH = {"upcolour": "red", "backpack": "yes", "gender": "female"}  # attribute-based search
SEARCH_GALLERY = None # search any folder: None = the dataset's test images, or a folder of your images
SEARCH_QUERY = None   # None = the dataset's first query image, or image path(s) of one person
SEARCH_WHERE = None   # optional description, e.g. "upcolour=red": hits that match it come first
SEARCH_TOP_K = 6      # hits shown by the folder search and the activation maps
ACTIVATION_GROUP = "upcolour"  # attribute group whose activation maps are drawn

# %% [markdown]
# `SMOKE` is set when the tests run the notebooks (`REID_SMOKE=1`): they then always use the bundled sample and `<repo>/outputs/smoke` (never your own runs), and any training is a few steps of a tiny model (`reid_utils.config.SMOKE_SETTINGS`), so that each notebook runs in about a minute on a CPU.

# %%
root = data_root(DATA_ROOT, smoke=SMOKE)
out = output_dir(OUTPUT_DIR, smoke=SMOKE)
figures = figure_dir(out)
if SMOKE:  # the tests may run this notebook alone: train any missing tiny checkpoint first
    checkpoints = smoke_checkpoints(out, root)
else:
    checkpoints = CHECKPOINTS or find_checkpoints(out)
print("data:   ", show_path(root))
print("figures:", show_path(figures))
for name, path in checkpoints.items():
    print(f"{name:24s} {show_path(path)}")

# %% [markdown]
# ## Results table
#
# Each checkpoint is evaluated on the validation split it was trained with (identities
# it never saw), with and without flip averaging (mean of the image's and its mirror's
# features) and k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3).

# %%
# NBVAL_IGNORE_OUTPUT
fast_path = inference_fast_path(SMOKE)
results = {
    name: evaluate_checkpoint(path, root, fast_path=fast_path, progress=not SMOKE)
    for name, path in checkpoints.items()
}
table = results_table(results, protocol=PROTOCOL)  # one row per model, values in %

# %% [markdown]
# **Regression check**, compared by nbval in smoke mode (reproducible there: CPU, fp32,
# seeded), rounded to whole percent: mean attribute accuracy, mA, and re-ID rank-1 and mAP
# with flip averaging.

# %%
print({name: {key: round(float(row[key])) for key in ("mean", "mA", "rank1 +flip", "mAP +flip")}
       for name, row in table.iterrows()})

# %% [markdown]
# Model size and cost (parameters, and GFLOPs of one forward pass at the trained input size):

# %%
table[["params (M)", "GFLOPs"]].round(3)

# %% [markdown]
# Attribute accuracy (%) per group with flip averaging, their mean, mA and instance-based F1:

# %%
# NBVAL_IGNORE_OUTPUT
table[[*GROUP_NAMES, "mean", "mA", "F1"]].round(1)

# %% [markdown]
# Re-ID (%), without and with flip averaging and re-ranking:

# %%
# NBVAL_IGNORE_OUTPUT
table[[c for c in table.columns if c.split()[0] in ("rank1", "rank5", "rank10", "mAP", "mINP")]].round(1).T

# %% [markdown]
# ## Training curves

# %%
show(*(
    plot_history(load_history(path), title=name, path=figures / f"curves_{name.replace('/', '_')}.png")
    for name, path in checkpoints.items()
), dpi=60)

# %% [markdown]
# ## Per-attribute accuracy
#
# Accuracy per attribute group and model, then the confusion matrices (rows: true class)
# of the multi-class groups for the retrieval model: which ages and colours get mixed up.

# %%
accuracies = {name: result["attributes"][True]["accuracy"] for name, result in results.items()}
show(plot_attribute_accuracy(accuracies, path=figures / "attribute_accuracy.png"))

# %%
chosen = RETRIEVAL_MODEL if RETRIEVAL_MODEL in results else next(iter(results))
confusion = results[chosen]["attributes"][True]["confusion"]
show(plot_confusion_matrices(confusion, path=figures / "confusion_matrices.png"))

# %% [markdown]
# ## Retrievals
#
# Each validation query (left) and its 10 nearest gallery images with flip averaging,
# framed green when they show the same person, red otherwise.

# %%
query = results[chosen]["features"]["query"]
gallery = results[chosen]["features"]["gallery"]
ranked = rank_gallery(results[chosen]["features"]["distmat"], top_k=10)  # (Q, 10) gallery indices
print(f"{chosen}: {len(query['paths'])} queries, {len(gallery['paths'])} gallery images")
show(plot_retrieval_grid(query["paths"][:NUM_QUERIES], gallery["paths"], ranked[:NUM_QUERIES],
                         query["pids"][:NUM_QUERIES], gallery["pids"], path=figures / "retrieval_grid.png"),
     format="jpeg", dpi=64)

# %% [markdown]
# ## t-SNE of the validation embeddings
#
# Query and gallery embeddings of the retrieval model in 2-D, one colour per identity:
# tight, separate clusters mean the features re-identify people they were not trained on.

# %%
embeddings = torch.cat([query["embeddings"], gallery["embeddings"]]).numpy()
pids = [*query["pids"], *gallery["pids"]]
show(plot_tsne(embeddings, pids, num_ids=20, path=figures / "tsne.png"))

# %% [markdown]
# ## ALM attribute boxes
#
# The region each Attribute Localization Module looks at, for a few attributes, at the
# three pyramid levels (blue fine, orange middle, red coarse), as in figure 5 of the
# ALM paper.

# %%
if ALM_MODEL in checkpoints:
    alm, alm_checkpoint = load_model_from_checkpoint(checkpoints[ALM_MODEL])
    paths = results[ALM_MODEL]["features"]["query"]["paths"][:4]
    transform = build_transforms(alm_checkpoint["height"], alm_checkpoint["width"], train=False)
    with torch.no_grad():
        boxes = alm(torch.stack([transform(read_image(p)) for p in paths]))["boxes"]  # (B, 3, K, 4)
    show(plot_attribute_boxes(paths, boxes, attributes=("hat", "backpack", "upred", "downblue"),
                              path=figures / "alm_boxes.png"), format="jpeg")
else:
    print(f"no {ALM_MODEL} checkpoint: train it in notebook 02")

# %% [markdown]
# ## CMC curves
#
# Rank-k matching rate (Market protocol, flip averaging) of every model.

# %%
curves = {name: result["cmc"]["market +flip"] for name, result in results.items()}
show(plot_cmc(curves, max_rank=20, path=figures / "cmc.png"))

# %% [markdown]
# ## Attribute-based person search
#
# Find people from a description instead of a photo: gallery images are ranked by the
# predicted probability of having every requested attribute (`SEARCH` in the
# parameters cell; group and class names as in `reid_utils.schema.GROUPS`), here
# the validation gallery of the retrieval model. Titles are the log-probabilities. The
# last line says how many results really have every attribute, and how many gallery
# images do: on the small synthetic sample a three-attribute description may match
# nobody at all.

# %%
probs = group_probabilities(gallery["attribute_logits"], results[chosen]["model"]["attribute_form"])
indices, scores = attribute_search(SEARCH, probs, top_k=10)
found = [gallery["paths"][i] for i in indices]
print("search:", ", ".join(f"{group}={value}" for group, value in SEARCH.items()))
titles = [f"{score:.2f}" for score in scores.tolist()]
show(plot_images(found, titles=titles, path=figures / "attribute_search.png"), format="jpeg")

# %%
# NBVAL_IGNORE_OUTPUT
records = {str(r.path): r for part in load_dataset(root).splits().values() for r in part}  # Market: test images
hits = matches_attribute_query(SEARCH, [records[p] for p in found])
base = matches_attribute_query(SEARCH, [records[p] for p in gallery["paths"]])
print(f"{hits.sum()} of the top {len(hits)} really match; {100 * base.mean():.1f}% of the gallery does")

# %% [markdown]
# ## Search any folder
#
# `search` finds a person in any folder of images (any names, sub-folders included), by
# photo (`SEARCH_QUERY`; several photos of one person are averaged), by description
# (`SEARCH_WHERE`), or both (hits matching the description first). It writes
# `results.csv` and a self-contained `results.html` (thumbnails embedded: it opens
# anywhere, e.g. after a Colab download) to `OUTPUT_DIR/search`, and caches the gallery's
# features in `OUTPUT_DIR/search_cache`, so the next query on the same folder takes seconds.
# The same from a terminal: `python -m reid_utils search --checkpoint CK --gallery DIR --query IMG`.
# Here: the retrieval model, the dataset's first query image and its test images.

# %%
# NBVAL_IGNORE_OUTPUT
index = load_dataset(root)
person_search = search(
    checkpoints[chosen],
    gallery=SEARCH_GALLERY or index.test[0].path.parent,
    query=SEARCH_QUERY or index.query[0].path,
    where=SEARCH_WHERE,
    top_k=SEARCH_TOP_K,
    out_dir=out / "search",
    fast_path=fast_path,
    progress=not SMOKE,
)
display(HTML(person_search["html"]))

# %%
# NBVAL_IGNORE_OUTPUT
truth = read_ground_truth(root)  # the synthetic sample's hidden identities; None for real data
if truth is None or SEARCH_GALLERY or SEARCH_QUERY:
    print("no hidden ground truth for these images")
else:
    pids = dict(zip(truth["file"], truth["pid"]))
    wanted = pids[Path(person_search["query_paths"][0]).name]
    same = [pids.get(Path(p).name) == wanted for p in person_search["table"]["path"]]
    print(f"{sum(same)} of the top {len(same)} show the query's person (the sample's hidden ground truth)")

# %% [markdown]
# ## Activation maps
#
# Where the retrieval model looks (Grad-CAM on its last feature map), for the query and its
# hits above: for the embedding (middle row: what makes each image look like the query) and
# for the attribute group `ACTIVATION_GROUP` (bottom row: the evidence for the predicted
# class). Red is strong evidence, blue none.

# %%
retrieval_model, retrieval_checkpoint = load_model_from_checkpoint(checkpoints[chosen])
images = person_search["query_paths"][:1] + person_search["table"]["path"].tolist()
size = input_size(retrieval_checkpoint)
maps = {
    "embedding": activation_maps(retrieval_model, images, "embedding",
                                 reference=person_search["query_embedding"], image_size=size),
    ACTIVATION_GROUP: activation_maps(retrieval_model, images, ACTIVATION_GROUP, image_size=size),
}
titles = ["query", *(str(rank) for rank in person_search["table"]["rank"])]
show(plot_activation_maps(images, maps, titles=titles, path=figures / "activation_maps.png"), format="jpeg")

# %% [markdown]
# Next: `05_predictions_export.ipynb` writes the course submission with the checkpoint you pick.
