"""The whole pipeline in one call: what the five notebooks do, in order.

``python -m reid_utils pipeline`` (README quickstart, command 1) runs it on the bundled sample:

1. data: locate, validate and summarise the dataset; make the identity-disjoint split;
2. attribute model (notebook 02, ``attribute_model``);
3. re-ID model (notebook 03, ``reid_model``);
4. evaluation of both on the validation split, with figures (notebook 04);
5. the course deliverables from the re-ID model's refit on every identity (notebook 05),
   re-ranked where re-ranking raised the validation course mAP, scored when the data has a
   ground truth (the sample does).

Everything lands under ``out_dir``: ``split.json``, ``attribute/<model>/``, ``reid/<model>/``
(``best.pt``, ``last.pt``, ``history.json``, ``curves.png``), ``evaluation.json``,
``figures/*.png`` and ``submission/{classification_test.csv,reid_test.txt}``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from PIL import Image

from .data import load_dataset, make_split, resolve_data_root, save_split
from .data.inspect import format_summary, summarize
from .engine import main as train_main, refit as refit_run, refit_dir
from .engine.checkpoint import load_checkpoint
from .evaluation import best_checkpoint, evaluate_checkpoint, format_result, score_submission, to_jsonable
from .export import export_submission
from .io import atomic_open, atomic_write_text, repo_root
from .metrics.retrieval import rank_gallery
from .visualize import plot_attribute_accuracy, plot_cmc, plot_history, plot_retrieval_grid, plot_tsne

#: The sample's recipes: long enough to learn, small enough for two CPU cores. The synthetic
#: images are simple, so 64x32 (4x cheaper than 128x64) learns them about as well (README,
#: "On the bundled sample") and keeps the whole pipeline under 3 minutes without bf16.
SAMPLE_ATTRIBUTE_RUN = {"model": "alm", "depth": 18, "num_epochs": 12, "height": 64, "width": 32}
SAMPLE_REID_RUN = {"model": "apr", "depth": 18, "num_epochs": 15, "height": 64, "width": 32}
SMOKE_RUN = {"smoke": True}


def _log(message: str) -> None:
    print(f"[pipeline] {message}", file=sys.stderr, flush=True)


#: README image (in ``img/``) -> the pipeline figure it is made from (``outputs/figures/``).
README_IMAGES = {
    "reid_curves.png": "reid_curves.png",
    "retrieval_grid.jpg": "retrieval_grid.png",
    "attribute_accuracy.png": "attribute_accuracy.png",
    "cmc.png": "cmc.png",
    "tsne.png": "tsne.png",
}


def run_pipeline(out_dir: str | os.PathLike = "outputs", data_root: str | os.PathLike | None = None,
                 smoke: bool = False, attribute_run: dict | None = None, reid_run: dict | None = None,
                 readme_images: bool = False, refit: bool = True) -> dict:
    """Run data preparation, both trainings, evaluation and export; return a summary dict.

    ``attribute_run`` / ``reid_run`` are ``main(**overrides)`` hyperparameters for the two
    trainings (defaults: :data:`SAMPLE_ATTRIBUTE_RUN`, :data:`SAMPLE_REID_RUN`); ``smoke=True``
    makes every stage tiny (CI). ``readme_images=True`` also refreshes the README's images in
    ``<repo>/img`` from the figures (the only thing that writes there).

    ``refit=True`` (the default path to the submission): once validation has measured the
    re-ID recipe, it is trained again on *every* training identity (``val_fraction=0``) for the
    number of epochs that validated best, and that model writes the rankings. The validation
    numbers stay those of the held-out run.
    """
    import matplotlib

    matplotlib.use("Agg")

    start = time.perf_counter()
    stages: dict[str, float] = {}  # seconds per stage, for the summary
    lap = start
    out_dir = Path(out_dir)
    root = resolve_data_root(data_root)
    _log(f"data: {root}")
    print(format_summary(summarize(root, check_images=True)))

    split_file = out_dir / "split.json"
    if not split_file.exists():
        save_split(make_split(load_dataset(root), val_fraction=0.2, seed=0), split_file)
    common = {"data_root": str(root), "split_file": str(split_file), "progress": False}

    runs = {}
    for stage, recipe in (("attribute", attribute_run or SAMPLE_ATTRIBUTE_RUN), ("reid", reid_run or SAMPLE_REID_RUN)):
        overrides = {**recipe, **(SMOKE_RUN if smoke else {}), **common}
        run_dir = out_dir / stage / overrides["model"]
        _log(f"training the {stage} model {overrides['model']} -> {run_dir}")
        train_main(out_dir=str(run_dir), **overrides)
        runs[stage] = run_dir / "best.pt"
        stages[f"train_{stage}"], lap = time.perf_counter() - lap, time.perf_counter()

    if refit and not smoke:
        recipe = reid_run or SAMPLE_REID_RUN
        _log(f"refitting {recipe['model']} on every training identity -> {refit_dir(runs['reid'].parent)}")
        refit_run(runs["reid"].parent, **{**recipe, **common})  # for the epochs validation chose
        stages["refit_reid"], lap = time.perf_counter() - lap, time.perf_counter()

    _log("evaluating on the validation split")
    evaluation, results = {}, {}
    for stage, checkpoint in runs.items():
        result = evaluate_checkpoint(checkpoint, root, split_file=split_file,
                                     rerank=(False,) if smoke else (False, True))
        print(format_result(result))
        results[stage] = result
        evaluation[stage] = to_jsonable(result)
    atomic_write_text(out_dir / "evaluation.json", json.dumps(evaluation, indent=2))
    stages["evaluate"], lap = time.perf_counter() - lap, time.perf_counter()
    if not smoke:
        _write_figures(runs, results, out_dir / "figures")
        if readme_images:
            update_readme_images(out_dir / "figures")
    stages["figures"], lap = time.perf_counter() - lap, time.perf_counter()

    # the CSV from whichever model validated best on attributes, the rankings from the re-ID model
    attribute_source = best_checkpoint(runs, "attribute_accuracy")
    _log(f"exporting the course deliverables: attributes from the {attribute_source} model, rankings from the reid model")
    reid_source = refit_dir(runs["reid"].parent) / "best.pt" if refit and not smoke else runs["reid"]
    # re-ranking where it raises the validation course mAP (a refit: that of the run it repeats)
    export = export_submission(root, reid_source, out_dir / "submission", attribute_checkpoint=runs[attribute_source])
    _log(f"re-ranking {'on' if export['rerank'] else 'off'}: {export['rerank_choice']['reason']}")
    score = score_submission(root, out_dir / "submission")
    if score:
        print("submission scored against the ground truth:", json.dumps(score))
    stages["export"] = time.perf_counter() - lap
    summary = {
        "data_root": str(root),
        "checkpoints": {k: str(v) for k, v in runs.items()},
        "attribute_source": attribute_source,
        "reid_source": str(reid_source),
        "rerank": export["rerank"],
        "rerank_choice": export["rerank_choice"],
        "submission": {k: str(v) for k, v in export["paths"].items()},
        "score": score,
        "seconds": round(time.perf_counter() - start, 1),
        "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
    }
    atomic_write_text(out_dir / "pipeline.json", json.dumps(summary, indent=2))
    _log(f"done in {summary['seconds']} s ({', '.join(f'{k} {v} s' for k, v in summary['stage_seconds'].items())}); "
         f"outputs in {out_dir}")
    return summary


def _write_figures(runs: dict, results: dict, folder: Path) -> None:
    """The figures of notebook 04 for both models: training curves, per-attribute accuracy,
    CMC curves, a retrieval grid (re-ID model) and a t-SNE of its validation embeddings."""
    folder.mkdir(parents=True, exist_ok=True)
    for stage, checkpoint in runs.items():
        history = load_checkpoint(checkpoint).get("history") or {}
        if history:
            plot_history(history, path=folder / f"{stage}_curves.png")
    plot_attribute_accuracy({f"{stage} ({r['model']['name']})": r["attributes"][True]["accuracy"]
                             for stage, r in results.items() if r["attributes"].get(True)},
                            path=folder / "attribute_accuracy.png")
    reid = results["reid"]
    plot_cmc({label: cmc for label, cmc in reid["cmc"].items() if label.startswith("market")},
             path=folder / "cmc.png", title=f"CMC, validation ({reid['model']['name']})")
    query, gallery = reid["features"]["query"], reid["features"]["gallery"]
    shown = list(range(0, len(query["paths"]), max(1, len(query["paths"]) // 6)))[:6]
    ranked = rank_gallery(reid["features"]["distmat"][shown], 10).numpy()
    plot_retrieval_grid([query["paths"][i] for i in shown], gallery["paths"], ranked,
                        query["pids"][shown], gallery["pids"], path=folder / "retrieval_grid.png")
    plot_tsne(gallery["embeddings"], gallery["pids"], path=folder / "tsne.png")
    _log(f"figures in {folder}")


def update_readme_images(figures: Path, img_dir: Path | None = None) -> None:
    """Copy the pipeline's figures into the README's ``img/`` (a JPEG where the PNG is large)."""
    img_dir = img_dir or (repo_root() or Path.cwd()) / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    for name, source in README_IMAGES.items():
        with Image.open(figures / source) as image:
            with atomic_open(img_dir / name, "wb", encoding=None) as file:
                image.convert("RGB").save(file, format="JPEG", quality=85) if name.endswith(".jpg") else image.save(file, format="PNG")
    _log(f"README images refreshed in {img_dir}")
