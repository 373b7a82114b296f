"""Build the five notebooks from the cell lists below, then run them in smoke mode to store their outputs.

Edit the notebooks here, not in Jupyter: this file is their source. From the repository root::

    python notebooks/make_notebooks.py              # write all five and execute them (REID_SMOKE=1, a few minutes)
    python notebooks/make_notebooks.py 02 04        # only these (04 trains what it misses)
    python notebooks/make_notebooks.py --no-execute # write the cells only, without outputs
    python notebooks/make_notebooks.py --check      # exit 1 if a notebook's cells differ from this file

The stored outputs are nbval's reference (``python -m pytest --nbval notebooks/``): they come
from smoke mode on the bundled sample, with cell timing and kernel details stripped
(``nbstripout --keep-output``), execution counts renumbered 1, 2, 3... (nbval needs them on
every cell with outputs) and stderr (progress bars, warnings) dropped. Every
notebook opens the same way (../shared/STYLE.md): title and purpose with an Open-in-Colab
badge, a Colab setup cell (``# NBVAL_SKIP``), a versions cell (``# NBVAL_IGNORE_OUTPUT``), one
imports cell and one parameters cell. Cells whose numbers depend on training are marked
``# NBVAL_IGNORE_OUTPUT``; the compared cells print only what is deterministic by construction
(dataset statistics, file names, counts, model sizes).
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parent
#: GitHub "owner/name" of the repository, for the Colab badge and the clone in the setup cell.
GITHUB_REPO = os.environ.get("REID_GITHUB_REPO", "reid-utils/reid_utils")
BRANCH = "main"
SKIP, IGNORE = "# NBVAL_SKIP", "# NBVAL_IGNORE_OUTPUT"


# ---------------------------------------------------------------------------------------------
# Cells


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str, marker: str | None = None) -> nbformat.NotebookNode:
    source = textwrap.dedent(text).strip()
    cell = nbformat.v4.new_code_cell((marker + "\n" + source) if marker else source)
    if marker == SKIP:
        cell.metadata["tags"] = ["skip-execution"]  # nbclient skips it as nbval does
    return cell


def opening(filename: str, title: str, purpose: str, gpu_hint: bool = False) -> list:
    """Title, purpose and badge; the Colab setup cell; the versions cell."""
    badge = (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{GITHUB_REPO}/blob/{BRANCH}/notebooks/{filename})"
    )
    colab = (
        "\n\n**On Colab**: run the setup cell below first"
        + (", and choose *Runtime → Change runtime type → GPU* for real training." if gpu_hint else ".")
        + " Keep `OUTPUT_DIR` on Google Drive (parameters cell) so that a disconnected runtime loses"
        " at most the epoch in progress."
    )
    return [
        md(f"# {title}\n\n{textwrap.dedent(purpose).strip()}\n\n{badge}{colab}"),
        code(
            f'''
            # Google Colab only: get the code and install it (nothing happens elsewhere).
            # Working from a fork? Put its address in REPO_URL.
            import sys

            REPO_URL = "https://github.com/{GITHUB_REPO}.git"
            if "google.colab" in sys.modules:
                !test -d /content/reid_utils || git clone --quiet --depth 1 $REPO_URL /content/reid_utils
                %cd /content/reid_utils
                !pip install --quiet -e .
            ''',
            SKIP,
        ),
        code(
            """
            from reid_utils.notebook import versions

            print(versions())
            """,
            IGNORE,
        ),
    ]


def drive_cell() -> nbformat.NotebookNode:
    return code(
        """
        if USE_DRIVE:
            mount_drive()  # Google Drive appears under /content/drive/MyDrive
        """,
        SKIP,
    )


def locate_cell() -> nbformat.NotebookNode:
    return code(
        """
        root = data_root(DATA_ROOT, smoke=SMOKE)
        out = output_dir(OUTPUT_DIR, smoke=SMOKE)
        print("data:   ", show_path(root))
        print("outputs:", show_path(out))
        """
    )


SMOKE_NOTE = (
    "`SMOKE` is set when the tests run the notebooks (`REID_SMOKE=1`): they then always use the bundled "
    "sample and `<repo>/outputs/smoke` (never your own runs), and any training is a few steps of a tiny "
    "model (`reid_utils.config.SMOKE_SETTINGS`), so that each notebook runs in about a minute on a CPU."
)


# ---------------------------------------------------------------------------------------------
# 01 data preparation


def notebook_01() -> list:
    return [
        *opening(
            "01_data_preparation.ipynb",
            "01 · Data preparation",
            """
            Find the dataset (your Market-1501 data when it is configured, otherwise the bundled
            synthetic sample), check every file, look at its statistics, and save the
            identity-disjoint train / validation split that notebooks 02-04 share.
            """,
        ),
        code(
            """
            from reid_utils.data import load_dataset, make_split, save_split, summarize
            from reid_utils.notebook import (
                data_root,
                describe_dataset,
                mount_drive,
                output_dir,
                plot_attribute_examples,
                plot_dataset_overview,
                show,
                show_path,
                smoke_mode,
            )
            """
        ),
        code(
            """
            SMOKE = smoke_mode()  # True under the tests (REID_SMOKE=1): the bundled sample, outputs/smoke
            DATA_ROOT = None      # None: $REID_DATA_ROOT, else the bundled sample; or a folder or a dataset.zip,
                                  # e.g. "/content/drive/MyDrive/dataset.zip" (extracted once; on Colab to /content)
            OUTPUT_DIR = None     # None: <repo>/outputs; on Colab e.g. "/content/drive/MyDrive/reid_outputs"
            USE_DRIVE = False     # Colab: mount Google Drive (for a DATA_ROOT or OUTPUT_DIR on Drive)
            VAL_FRACTION = 0.2    # share of the training identities held out for validation
            SPLIT_SEED = 0        # seed of the split (every notebook reuses the saved split)
            CHECK_IMAGES = True   # decode every image once to find corrupt files (about a minute on Market-1501)
            """
        ),
        md(
            f"""
            ## Where the data is

            Real data, in either layout (see the README):

            * **course layout**: `train/` (`PPPP_cC_NNNNNNNNN.jpg`), `test/`, `queries/` and
              `annotations_train.csv`, e.g. the course's `dataset.zip`;
            * **official Market-1501**: `bounding_box_train/`, `bounding_box_test/`, `query/` and
              `market_attribute.mat`.

            On Colab, upload `dataset.zip` to Google Drive, set `USE_DRIVE = True` and
            `DATA_ROOT = "/content/drive/MyDrive/dataset.zip"` (in every notebook): the zip is
            checked and extracted once per runtime to `/content/dataset`, the fast local disk.
            Locally, set `DATA_ROOT` to the folder (or a zip, extracted next to itself), or the
            environment variable `REID_DATA_ROOT` for every notebook and the command line at once.
            Without any of these, the bundled synthetic sample (`dataset/sample`) is used.

            {SMOKE_NOTE}
            """
        ),
        drive_cell(),
        locate_cell(),
        md(
            """
            ## Validate and summarize

            Every image is parsed (file name: person id and camera) and, with `CHECK_IMAGES`,
            decoded; every training identity must have an annotation row and every row images.
            Problems stop here with a message naming the file. Non-image files (the course zip
            holds `desktop.ini` files) are skipped and counted.
            """
        ),
        code(
            """
            summary = summarize(root, check_images=CHECK_IMAGES)
            print(describe_dataset(summary))
            """
        ),
        md(
            """
            ## Statistics

            Images per identity and per camera, and how often each of the 30 binary attribute
            columns (age one-hot, then the yes/no and colour attributes) is positive over the
            training identities. Rare attributes (a few percent) are the hard ones: the
            weighted losses of notebook 02 are there for them.
            """
        ),
        code(
            """
            index = load_dataset(root)
            show(plot_dataset_overview(index))
            """
        ),
        md(
            """
            One example per class of each of the 12 attribute groups (the groups of the APR-Net
            report: age has 4 classes, upper colour 8 + multicolour, lower colour 9 + multicolour).
            """
        ),
        code(
            """
            show(plot_attribute_examples(index.train, seed=SPLIT_SEED), format="jpeg")
            """
        ),
        md(
            """
            ## The train / validation split

            Validation identities never appear in training. Their images are divided the
            Market-1501 way: one query per (identity, camera), the rest gallery. The split is
            saved to `OUTPUT_DIR/split.json`; notebooks 02 and 03 train on it and notebook 04
            evaluates on it. Run this notebook again after changing the dataset (a split that no
            longer matches the data is refused with a clear message).
            """
        ),
        code(
            """
            split = make_split(index, val_fraction=VAL_FRACTION, seed=SPLIT_SEED)
            split_file = out / "split.json"
            save_split(split, split_file)
            print(split)
            print("saved to", show_path(split_file))
            """
        ),
        md(
            "Next: train attribute models in `02_attribute_training.ipynb` and re-ID models in "
            "`03_reid_training.ipynb`."
        ),
    ]


# ---------------------------------------------------------------------------------------------
# 02 / 03 training


def training_cells(task: str, example: str, epochs: int) -> list:
    """Locate, train every model, and plot the curves (shared by notebooks 02 and 03)."""
    return [
        drive_cell(),
        locate_cell(),
        md(
            f"""
            ## Train

            `main(**overrides)` takes any `TrainConfig` field (`help(TrainConfig)`, or
            `python -m reid_utils train --help`); a misspelt name is an error listing the valid
            ones. Each model writes `OUTPUT_DIR/{task}/<model>/`: `best.pt` (the best epoch,
            used by notebooks 04 and 05), `last.pt` (after every epoch, for `resume`),
            `history.json` and `curves.png`. With `RESUME = True`, running this cell again after a
            disconnect continues from `last.pt`; a finished run is only reloaded.

            The same run from a terminal (every field is an option):
            `python -m reid_utils train --model {example} --out outputs/{task}/{example} --epochs {epochs} --resume`.
            """
        ),
        code(
            f"""
            histories = {{}}
            for name in MODELS:
                overrides = {{**PARAMS, **PER_MODEL.get(name, {{}})}}
                histories[name] = main(
                    model=name,
                    data_root=str(root),
                    out_dir=str(run_dir(out, "{task}", name)),
                    split_file=str(out / "split.json"),  # the split of notebook 01 (made here if missing)
                    resume=RESUME,
                    **overrides,
                )
            """,
            IGNORE,
        ),
        code(
            f"""
            for name in histories:
                print(name, "->", show_path(run_dir(out, "{task}", name) / "best.pt"))
            """
        ),
        md(
            """
            ## Training curves

            Loss components, validation attribute accuracy (mean and per group), validation
            re-ID mAP and rank-1 under both protocols, and the learning rate.
            """
        ),
        code(
            """
            show(*(plot_history(history, title=name) for name, history in histories.items()))
            """
        ),
    ]


def notebook_02() -> list:
    return [
        *opening(
            "02_attribute_training.ipynb",
            "02 · Attribute training",
            """
            Train the pedestrian-attribute models on the split of notebook 01 and compare their
            validation accuracy per attribute group:

            * `resnet50`: the multi-task baseline (ResNet backbone, BN-neck, 12 grouped attribute
              heads plus an identity classifier);
            * `cbam`: ResNet with channel and spatial attention, weighted BCE on the 30 binary
              attributes;
            * `alm`: the Attribute Localization Module network (Tang et al., ICCV 2019): a feature
              pyramid, one localized box per attribute and level, deep supervision, max voting.
            """,
            gpu_hint=True,
        ),
        code(
            """
            from reid_utils.engine import main
            from reid_utils.notebook import (
                attribute_accuracy_table,
                data_root,
                gpu_available,
                in_colab,
                mount_drive,
                output_dir,
                run_dir,
                show,
                show_path,
                smoke_mode,
            )
            from reid_utils.plots import plot_history
            """
        ),
        code(
            """
            SMOKE = smoke_mode()  # True under the tests (REID_SMOKE=1): tiny runs on the bundled sample
            DATA_ROOT = None      # None: $REID_DATA_ROOT, else the bundled sample (see notebook 01)
            OUTPUT_DIR = None     # None: <repo>/outputs; on Colab e.g. "/content/drive/MyDrive/reid_outputs"
            USE_DRIVE = False     # Colab: mount Google Drive (for an OUTPUT_DIR or DATA_ROOT on Drive)
            RESUME = True         # continue an interrupted run from OUTPUT_DIR/attribute/<model>/last.pt
            MODELS = ["resnet50", "cbam", "alm"]  # registry names (reid_utils.models.MODEL_NAMES)

            GPU = gpu_available()  # a CUDA GPU; the defaults below follow it
            PARAMS = dict(        # TrainConfig fields for every model (they win over a model's own defaults)
                num_epochs=30,    # training epochs (the cosine schedule spans them)
                height=256 if GPU else 128,  # the papers' 256x128 on a GPU; 128x64 (4x cheaper) on a CPU
                width=128 if GPU else 64,
                depth=50 if GPU else 18,     # ResNet depth 18, 34 or 50
                pretrained=in_colab(),       # ImageNet weights: they need internet (Colab), else from scratch
                max_minutes=0,    # stop after the epoch that would pass this budget (0: none)
            )
            PER_MODEL = {         # extra TrainConfig fields per model, on top of PARAMS
                "resnet50": dict(early_stopping_metric="attribute_accuracy"),  # best.pt by attribute accuracy
                "cbam": dict(attribute_weighting="frequency"),  # the attention report's class weights
                "alm": dict(attribute_weighting="exp"),         # ALM's exp(-positive ratio) weights
            }
            if SMOKE:             # one short epoch per model, CPU, fp32, seeded (SMOKE_SETTINGS)
                PARAMS, PER_MODEL, RESUME = dict(smoke=True), {}, False
            """
        ),
        md(SMOKE_NOTE),
        *training_cells("attribute", "alm", 30),
        md(
            """
            ## Validation accuracy per attribute

            Accuracy (%) of each of the 12 attribute groups on the validation identities, at each
            model's best epoch, laid out like the multi-task README's table; `mA` is the
            label-based mean accuracy over the 30 binary columns (mean of positive and negative
            recall), which rewards rare attributes that plain accuracy ignores.
            """
        ),
        code(
            """
            attribute_accuracy_table(histories).round(1)
            """,
            IGNORE,
        ),
        md(
            "Next: `03_reid_training.ipynb` trains the re-ID models; `04_evaluation.ipynb` compares every "
            "checkpoint."
        ),
    ]


def notebook_03() -> list:
    return [
        *opening(
            "03_reid_training.ipynb",
            "03 · Re-identification training",
            """
            Train multi-task person re-identification models: an identity loss (cross-entropy
            with label smoothing, or AM-Softmax), a batch-hard triplet loss on P x K batches and
            the attribute loss, combined as `alpha * attribute + (1 - alpha) * identity + triplet`.
            Models: `apr` (APR-Net with the Attribute Re-weighting Module, the default),
            `resnet50`, `convhead`, `self_attention` and `la_transformer` (a Locally Aware
            Transformer on row and column parts). The validation mAP and rank-1 are measured on
            identities never seen in training.
            """,
            gpu_hint=True,
        ),
        code(
            """
            from reid_utils.engine import main
            from reid_utils.notebook import (
                data_root,
                gpu_available,
                in_colab,
                mount_drive,
                output_dir,
                reid_table,
                run_dir,
                show,
                show_path,
                smoke_mode,
            )
            from reid_utils.plots import plot_history
            """
        ),
        code(
            """
            SMOKE = smoke_mode()  # True under the tests (REID_SMOKE=1): tiny runs on the bundled sample
            DATA_ROOT = None      # None: $REID_DATA_ROOT, else the bundled sample (see notebook 01)
            OUTPUT_DIR = None     # None: <repo>/outputs; on Colab e.g. "/content/drive/MyDrive/reid_outputs"
            USE_DRIVE = False     # Colab: mount Google Drive (for an OUTPUT_DIR or DATA_ROOT on Drive)
            RESUME = True         # continue an interrupted run from OUTPUT_DIR/reid/<model>/last.pt
            MODELS = ["apr"]      # add "resnet50", "convhead", "self_attention", "la_transformer" to compare

            GPU = gpu_available()  # a CUDA GPU; the defaults below follow it
            PARAMS = dict(        # TrainConfig fields for every model (they win over a model's own defaults)
                num_epochs=40,    # training epochs (the cosine schedule spans them)
                height=256 if GPU else 128,  # the papers' 256x128 on a GPU; 128x64 (4x cheaper) on a CPU
                width=128 if GPU else 64,
                depth=50 if GPU else 18,     # ResNet depth 18, 34 or 50
                pretrained=in_colab(),       # ImageNet weights: they need internet (Colab), else from scratch
                alpha=0.5,        # weight of the attribute loss; 1 - alpha for the identity loss
                batch_p=16,       # P identities x K images per batch (the triplet loss needs K >= 2)
                batch_k=4,
                max_minutes=0,    # stop after the epoch that would pass this budget (0: none)
            )
            PER_MODEL = {         # extra TrainConfig fields per model, on top of PARAMS
                "apr": dict(id_loss="ce", label_smoothing=0.1, triplet_weight=1.0, triplet_margin=0.3),
                "la_transformer": dict(id_loss="amsoftmax", am_scale=30.0, am_margin=0.35),
            }
            if SMOKE:             # one short epoch per model, CPU, fp32, seeded (SMOKE_SETTINGS)
                PARAMS, PER_MODEL, RESUME = dict(smoke=True), {}, False
            """
        ),
        md(SMOKE_NOTE),
        *training_cells("reid", "apr", 40),
        md(
            """
            ## Validation re-ID

            At each model's best epoch (by `early_stopping_metric`, default the mean of mAP and
            attribute accuracy), in %: `mAP`, `rank1`, `rank5` and `mINP` under the Market-1501
            protocol (same-camera matches ignored), `course_mAP` / `course_rank1` under the course
            protocol (every same-identity image counts). Notebook 04 adds flip averaging and
            re-ranking.
            """
        ),
        code(
            """
            reid_table(histories).round(1)
            """,
            IGNORE,
        ),
        md(
            "Next: `04_evaluation.ipynb` evaluates these checkpoints (flip averaging, re-ranking, figures); "
            "`05_predictions_export.ipynb` writes the submission."
        ),
    ]


# ---------------------------------------------------------------------------------------------
# 04 evaluation


def notebook_04() -> list:
    return [
        *opening(
            "04_evaluation.ipynb",
            "04 · Evaluation",
            """
            Evaluate every checkpoint of notebooks 02 and 03 on the validation split: attribute
            accuracy per group, mA and F1; re-ID rank-1/5/10, mAP and mINP without and with flip
            averaging and k-reciprocal re-ranking; model size and cost. Then look at the models:
            training curves, per-attribute accuracy, retrievals, a t-SNE of the embeddings, ALM's
            attribute boxes, CMC curves, and an attribute-based person search. Figures are also
            written to `img/` for the README.
            """,
        ),
        code(
            """
            import torch

            from reid_utils.checkpoint import load_model_from_checkpoint
            from reid_utils.data import build_transforms, load_dataset, read_image
            from reid_utils.data.schema import GROUP_NAMES, group_probabilities
            from reid_utils.evaluation import evaluate_checkpoint, results_table
            from reid_utils.notebook import (
                data_root,
                figure_dir,
                find_checkpoints,
                inference_fast_path,
                load_history,
                matches_attribute_query,
                mount_drive,
                output_dir,
                show,
                show_path,
                smoke_checkpoints,
                smoke_mode,
            )
            from reid_utils.plots import plot_history
            from reid_utils.retrieval import attribute_search, rank_gallery
            from reid_utils.visualize import (
                plot_attribute_accuracy,
                plot_attribute_boxes,
                plot_cmc,
                plot_confusion_matrices,
                plot_images,
                plot_retrieval_grid,
                plot_tsne,
            )
            """
        ),
        code(
            """
            SMOKE = smoke_mode()  # True under the tests (REID_SMOKE=1): the tiny checkpoints in outputs/smoke
            DATA_ROOT = None      # None: $REID_DATA_ROOT, else the bundled sample (the data the models trained on)
            OUTPUT_DIR = None     # None: <repo>/outputs; the OUTPUT_DIR of notebooks 02 and 03
            USE_DRIVE = False     # Colab: mount Google Drive (for an OUTPUT_DIR or DATA_ROOT on Drive)
            CHECKPOINTS = None    # None: every OUTPUT_DIR/<task>/<model>/best.pt; or {"name": "path/to/best.pt"}
            PROTOCOL = "market"   # re-ID table: "market" (same-camera matches ignored) or "course"
            RETRIEVAL_MODEL = "reid/apr"    # model for the retrieval grid, t-SNE and search (else the first)
            ALM_MODEL = "attribute/alm"     # model whose attribute boxes are drawn
            NUM_QUERIES = 4       # rows of the retrieval grid
            SEARCH = {"upcolour": "red", "backpack": "yes", "gender": "female"}  # attribute-based search
            """
        ),
        md(SMOKE_NOTE + " In smoke mode the figures go to `outputs/smoke/figures/` instead of `img/`."),
        drive_cell(),
        code(
            """
            root = data_root(DATA_ROOT, smoke=SMOKE)
            out = output_dir(OUTPUT_DIR, smoke=SMOKE)
            figures = figure_dir(out, smoke=SMOKE)
            if SMOKE:  # the tests may run this notebook alone: train any missing tiny checkpoint first
                checkpoints = smoke_checkpoints(out, root)
            else:
                checkpoints = CHECKPOINTS or find_checkpoints(out)
            print("data:   ", show_path(root))
            print("figures:", show_path(figures))
            for name, path in checkpoints.items():
                print(f"{name:24s} {show_path(path)}")
            """
        ),
        md(
            """
            ## Results table

            Each checkpoint is evaluated on the validation split it was trained with (identities
            it never saw), with and without flip averaging (mean of the image's and its mirror's
            features) and k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3).
            """
        ),
        code(
            """
            fast_path = inference_fast_path(SMOKE)
            results = {
                name: evaluate_checkpoint(path, root, fast_path=fast_path, progress=not SMOKE)
                for name, path in checkpoints.items()
            }
            table = results_table(results, protocol=PROTOCOL)  # one row per model, values in %
            """,
            IGNORE,
        ),
        md("Model size and cost (parameters, and GFLOPs of one forward pass at the trained input size):"),
        code(
            """
            table[["params (M)", "GFLOPs"]].round(3)
            """
        ),
        md("Attribute accuracy (%) per group with flip averaging, their mean, mA and instance-based F1:"),
        code(
            """
            table[[*GROUP_NAMES, "mean", "mA", "F1"]].round(1)
            """,
            IGNORE,
        ),
        md("Re-ID (%), without and with flip averaging and re-ranking:"),
        code(
            """
            table[[c for c in table.columns if c.split()[0] in ("rank1", "rank5", "rank10", "mAP", "mINP")]].round(1).T
            """,
            IGNORE,
        ),
        md("## Training curves"),
        code(
            """
            show(*(
                plot_history(load_history(path), title=name, path=figures / f"curves_{name.replace('/', '_')}.png")
                for name, path in checkpoints.items()
            ), dpi=60)
            """
        ),
        md(
            """
            ## Per-attribute accuracy

            Accuracy per attribute group and model, then the confusion matrices (rows: true class)
            of the multi-class groups for the retrieval model: which ages and colours get mixed up.
            """
        ),
        code(
            """
            accuracies = {name: result["attributes"][True]["accuracy"] for name, result in results.items()}
            show(plot_attribute_accuracy(accuracies, path=figures / "attribute_accuracy.png"))
            """
        ),
        code(
            """
            chosen = RETRIEVAL_MODEL if RETRIEVAL_MODEL in results else next(iter(results))
            confusion = results[chosen]["attributes"][True]["confusion"]
            show(plot_confusion_matrices(confusion, path=figures / "confusion_matrices.png"))
            """
        ),
        md(
            """
            ## Retrievals

            Each validation query (left) and its 10 nearest gallery images with flip averaging,
            framed green when they show the same person, red otherwise.
            """
        ),
        code(
            """
            query = results[chosen]["features"]["query"]
            gallery = results[chosen]["features"]["gallery"]
            ranked = rank_gallery(results[chosen]["features"]["distmat"], top_k=10)  # (Q, 10) gallery indices
            print(f"{chosen}: {len(query['paths'])} queries, {len(gallery['paths'])} gallery images")
            show(plot_retrieval_grid(query["paths"][:NUM_QUERIES], gallery["paths"], ranked[:NUM_QUERIES],
                                     query["pids"][:NUM_QUERIES], gallery["pids"], path=figures / "retrieval_grid.png"),
                 format="jpeg", dpi=64)
            """
        ),
        md(
            """
            ## t-SNE of the validation embeddings

            Query and gallery embeddings of the retrieval model in 2-D, one colour per identity:
            tight, separate clusters mean the features re-identify people they were not trained on.
            """
        ),
        code(
            """
            embeddings = torch.cat([query["embeddings"], gallery["embeddings"]]).numpy()
            pids = [*query["pids"], *gallery["pids"]]
            show(plot_tsne(embeddings, pids, num_ids=20, path=figures / "tsne.png"))
            """
        ),
        md(
            """
            ## ALM attribute boxes

            The region each Attribute Localization Module looks at, for a few attributes, at the
            three pyramid levels (blue fine, orange middle, red coarse), as in figure 5 of the
            ALM paper.
            """
        ),
        code(
            """
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
            """
        ),
        md("## CMC curves\n\nRank-k matching rate (Market protocol, flip averaging) of every model."),
        code(
            """
            curves = {name: result["cmc"]["market +flip"] for name, result in results.items()}
            show(plot_cmc(curves, max_rank=20, path=figures / "cmc.png"))
            """
        ),
        md(
            """
            ## Attribute-based person search

            Find people from a description instead of a photo: gallery images are ranked by the
            predicted probability of having every requested attribute (`SEARCH` in the
            parameters cell; group and class names as in `reid_utils.data.schema.GROUPS`), here
            the validation gallery of the retrieval model. Titles are the log-probabilities. The
            last line says how many results really have every attribute, and how many gallery
            images do: on the small synthetic sample a three-attribute description may match
            nobody at all.
            """
        ),
        code(
            """
            probs = group_probabilities(gallery["attribute_logits"], results[chosen]["model"]["attribute_form"])
            indices, scores = attribute_search(SEARCH, probs, top_k=10)
            found = [gallery["paths"][i] for i in indices]
            print("search:", ", ".join(f"{group}={value}" for group, value in SEARCH.items()))
            titles = [f"{score:.2f}" for score in scores.tolist()]
            show(plot_images(found, titles=titles, path=figures / "attribute_search.png"), format="jpeg")
            """
        ),
        code(
            """
            records = {str(r.path): r for r in load_dataset(root).train}
            hits = matches_attribute_query(SEARCH, [records[p] for p in found])
            base = matches_attribute_query(SEARCH, [records[p] for p in gallery["paths"] if p in records])
            print(f"{hits.sum()} of the top {len(hits)} really match; {100 * base.mean():.1f}% of the gallery does")
            """,
            IGNORE,
        ),
        md(
            "Next: `05_predictions_export.ipynb` writes the course submission with the checkpoint you pick."
        ),
    ]


# ---------------------------------------------------------------------------------------------
# 05 predictions export


def notebook_05() -> list:
    return [
        *opening(
            "05_predictions_export.ipynb",
            "05 · Predictions export",
            """
            Turn a checkpoint into the two files the course asks for, for the unlabelled `test/`
            and `queries/` images (or `bounding_box_test/` and `query/` of Market-1501):

            * `classification_test.csv`: `id` (the test image's file name) and the 27 attribute
              columns of `annotations_train.csv`, 1/2 encoded, age 1-4, one row per test image;
            * `reid_test.txt`: one line per query, `QUERY.jpg: G1.jpg, G2.jpg, ...`, its top-100
              test images, best first.

            Both files are validated before they are written, and written atomically: an existing
            submission is never replaced by a broken one. The same from the command line:
            `python -m reid_utils export --checkpoint outputs/reid/apr/best.pt --out outputs/submission`.
            """,
        ),
        code(
            """
            from reid_utils.export import export_submission, read_classification_csv, read_reid_txt, score_submission
            from reid_utils.notebook import (
                data_root,
                head,
                inference_fast_path,
                mount_drive,
                output_dir,
                run_dir,
                show_path,
                smoke_checkpoints,
                smoke_mode,
            )
            """
        ),
        code(
            """
            SMOKE = smoke_mode()  # True under the tests (REID_SMOKE=1): the tiny checkpoint, the bundled sample
            DATA_ROOT = None      # None: $REID_DATA_ROOT, else the bundled sample; the folder with test/ and queries/
            OUTPUT_DIR = None     # None: <repo>/outputs; the OUTPUT_DIR of notebooks 02 and 03
            USE_DRIVE = False     # Colab: mount Google Drive (for an OUTPUT_DIR or DATA_ROOT on Drive)
            CHECKPOINT = None     # None: OUTPUT_DIR/reid/apr/best.pt (notebook 03); it predicts both files
            SUBMISSION_DIR = None # None: OUTPUT_DIR/submission
            TOP_K = 100           # test images listed per query
            RERANK = False        # k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3) before taking the top-k
            """
        ),
        md(SMOKE_NOTE),
        drive_cell(),
        code(
            """
            root = data_root(DATA_ROOT, smoke=SMOKE)
            out = output_dir(OUTPUT_DIR, smoke=SMOKE)
            if SMOKE:  # the tests may run this notebook alone: train the tiny checkpoint if missing
                smoke_checkpoints(out, root)
            checkpoint = CHECKPOINT or run_dir(out, "reid", "apr") / "best.pt"
            submission = SUBMISSION_DIR or out / "submission"
            print("data:      ", show_path(root))
            print("checkpoint:", show_path(checkpoint))
            """
        ),
        md("## Predict and write"),
        code(
            """
            result = export_submission(root, checkpoint, submission, top_k=TOP_K, rerank=RERANK,
                                       fast_path=inference_fast_path(SMOKE), progress=not SMOKE)
            print(f"{result['num_test']} test images, {result['num_queries']} queries")
            for path in result["paths"].values():
                print("wrote", show_path(path))
            """
        ),
        code(
            """
            print(f"{result['images_per_second']:.0f} images/s ({result['fast_path']})")
            print(", ".join(f"{step} {seconds:.1f} s" for step, seconds in result["timings"].items()))
            """,
            IGNORE,
        ),
        md("## The files\n\nTheir shape (checked again on reading) and first lines:"),
        code(
            """
            table = read_classification_csv(result["paths"]["classification"])
            lines = read_reid_txt(result["paths"]["reid"])
            print(f"classification_test.csv: {len(table)} rows x {table.shape[1]} columns:",
                  ", ".join(table.columns[:6]), "...")
            print(f"reid_test.txt: {len(lines)} lines of {len(lines[0][1])} test images each")
            """
        ),
        code(
            """
            print(head(result["paths"]["classification"]))
            print()
            print(head(result["paths"]["reid"]))
            """,
            IGNORE,
        ),
        md(
            """
            ## Score (the synthetic sample only)

            The sample ships its hidden answers (`dataset/sample/ground_truth.csv`), so the
            submission can be scored here as the course evaluator would: mAP over the submitted
            lists (every test image of the query's identity is a match), rank-k, and attribute
            accuracy. On the real data there is no ground truth: upload the two files instead.
            """
        ),
        code(
            """
            scores = score_submission(root, submission)
            if scores is None:
                print("no ground truth for", show_path(root), "- submit the two files to the course evaluator")
            else:
                print(f"re-ID: mAP {100 * scores['mAP']:.1f}%, rank-1 {100 * scores['rank1']:.1f}%, "
                      f"rank-10 {100 * scores['rank10']:.1f}% over {scores['num_queries']} queries")
                print(f"attributes: mean accuracy {100 * scores['attribute_accuracy']:.1f}%, "
                      f"mA {100 * scores['mA']:.1f}% over {scores['num_attribute_rows']} labelled test images")
            """,
            IGNORE,
        ),
    ]


NOTEBOOKS = {
    "01": ("01_data_preparation.ipynb", notebook_01),
    "02": ("02_attribute_training.ipynb", notebook_02),
    "03": ("03_reid_training.ipynb", notebook_03),
    "04": ("04_evaluation.ipynb", notebook_04),
    "05": ("05_predictions_export.ipynb", notebook_05),
}


# ---------------------------------------------------------------------------------------------
# Build, execute, clean


def build(key: str) -> nbformat.NotebookNode:
    """The notebook ``key`` ("01".."05") without outputs, with deterministic cell ids."""
    nb = nbformat.v4.new_notebook()
    nb.cells = NOTEBOOKS[key][1]()
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{key}-{i:02d}"
    nb.metadata = clean_metadata()
    nbformat.validate(nb)
    return nb


def clean_metadata() -> dict:
    """Only what Jupyter and Colab need to pick a Python 3 kernel (no versions, no paths)."""
    return {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }


def execute(nb: nbformat.NotebookNode, timeout: int = 900) -> float:
    """Run ``nb`` in smoke mode from ``notebooks/`` (as nbval does); returns the seconds taken."""
    from nbclient import NotebookClient

    os.environ["REID_SMOKE"] = "1"  # the kernel inherits the environment
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    return time.perf_counter() - start


def strip(nb: nbformat.NotebookNode, name: str) -> list[str]:
    """Clean an executed notebook in place: cell metadata other than tags, kernel details and
    stderr go; execution counts become 1, 2, 3... over the executed cells (nbval refuses a
    reference cell with outputs but no count, so they cannot be removed; renumbering keeps them
    identical from one regeneration to the next). Returns notes about the stderr dropped
    (raises if a cell whose output nbval compares wrote to stderr)."""
    notes = []
    count = 0
    for cell in nb.cells:
        tags = cell.metadata.get("tags")
        cell.metadata = {"tags": tags} if tags else {}
        if cell.cell_type != "code":
            continue
        skipped = cell.source.startswith(SKIP)
        if not skipped:
            count += 1
        cell.execution_count = None if skipped else count
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                if not cell.source.startswith(IGNORE):
                    raise RuntimeError(f"{name} cell {cell.id} (compared by nbval) wrote to stderr:\n{output.text}")
                notes.append(f"{name} cell {cell.id}: dropped stderr: {output.text.strip()[:300]}")
                continue
            if "execution_count" in output:
                output.execution_count = cell.execution_count
            previous = kept[-1] if kept else None
            if (previous is not None and output.get("output_type") == "stream"
                    and previous.get("output_type") == "stream" and previous.get("name") == output.get("name")):
                previous.text += output.text  # one stdout block, however the kernel flushed it
                continue
            kept.append(output)
        cell.outputs = kept
    nb.metadata = clean_metadata()
    return notes


def same_cells(a: nbformat.NotebookNode, b: nbformat.NotebookNode) -> bool:
    """Same cell types and sources (outputs ignored)."""
    return [(c.cell_type, c.source) for c in a.cells] == [(c.cell_type, c.source) for c in b.cells]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="*", default=list(NOTEBOOKS), help="notebook numbers, e.g. 01 04 (default: all)")
    parser.add_argument("--no-execute", action="store_true", help="write the cells without running them")
    parser.add_argument("--check", action="store_true", help="only check that the notebooks match this file")
    args = parser.parse_args(argv)
    unknown = [k for k in args.which if k not in NOTEBOOKS]
    if unknown:
        parser.error(f"unknown notebook(s) {unknown}; choose from {', '.join(NOTEBOOKS)}")

    if args.check:
        stale = [NOTEBOOKS[k][0] for k in args.which
                 if not (NOTEBOOK_DIR / NOTEBOOKS[k][0]).is_file()
                 or not same_cells(build(k), nbformat.read(NOTEBOOK_DIR / NOTEBOOKS[k][0], as_version=4))]
        for name in stale:
            print(f"{name} differs from make_notebooks.py: run python notebooks/make_notebooks.py")
        return 1 if stale else 0

    for key in args.which:
        filename = NOTEBOOKS[key][0]
        nb = build(key)
        if not args.no_execute:
            seconds = execute(nb)
            for note in strip(nb, filename):
                print(note, file=sys.stderr)
            print(f"{filename}: executed in {seconds:.0f} s")
        nbformat.validate(nb)
        nbformat.write(nb, NOTEBOOK_DIR / filename)
        print(f"wrote notebooks/{filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
