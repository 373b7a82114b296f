"""The whole pipeline in one call: what the five notebooks do, in order.

``python -m reid_utils pipeline`` (README quickstart, command 1) runs it on the bundled sample:

1. data: locate, validate and summarise the dataset; make the identity-disjoint split;
2. attribute model (notebook 02, ``attribute_model``);
3. re-ID model (notebook 03, ``reid_model``);
4. evaluation of both on the validation split, with figures (notebook 04);
5. the course deliverables from the re-ID model (notebook 05), scored when the data has a
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

from .io import atomic_write_text

#: Recipes for the sample: small enough for 2 CPU cores in a few minutes, long enough to learn.
SAMPLE_ATTRIBUTE_RUN = {"model": "alm", "depth": 18, "num_epochs": 12}
SAMPLE_REID_RUN = {"model": "apr", "depth": 18, "num_epochs": 15}
SMOKE_RUN = {"smoke": True}


def _log(message: str) -> None:
    print(f"[pipeline] {message}", file=sys.stderr, flush=True)


def run_pipeline(out_dir: str | os.PathLike = "outputs", data_root: str | os.PathLike | None = None,
                 smoke: bool = False, attribute_run: dict | None = None, reid_run: dict | None = None) -> dict:
    """Run data preparation, both trainings, evaluation and export; return a summary dict.

    ``attribute_run`` / ``reid_run`` are ``main(**overrides)`` hyperparameters for the two
    trainings (defaults: :data:`SAMPLE_ATTRIBUTE_RUN`, :data:`SAMPLE_REID_RUN`); ``smoke=True``
    makes every stage tiny (CI).
    """
    import matplotlib

    matplotlib.use("Agg")
    from .data import load_dataset, make_split, resolve_data_root, save_split
    from .data.inspect import format_summary, summarize
    from .engine import main as train_main
    from .evaluation import evaluate_checkpoint, format_result, to_jsonable
    from .export import export_submission, score_submission

    start = time.perf_counter()
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

    _log("evaluating on the validation split")
    evaluation, results = {}, {}
    for stage, checkpoint in runs.items():
        result = evaluate_checkpoint(checkpoint, root, split_file=split_file,
                                     rerank=(False,) if smoke else (False, True))
        print(format_result(result))
        results[stage] = result
        evaluation[stage] = to_jsonable(result)
    atomic_write_text(out_dir / "evaluation.json", json.dumps(evaluation, indent=2))
    if not smoke:
        _write_figures(runs, results, out_dir / "figures")

    _log("exporting the course deliverables")
    export = export_submission(root, runs["reid"], out_dir / "submission")
    score = score_submission(root, out_dir / "submission")
    if score:
        print("submission scored against the ground truth:", json.dumps(score))
    summary = {
        "data_root": str(root),
        "checkpoints": {k: str(v) for k, v in runs.items()},
        "submission": {k: str(v) for k, v in export["paths"].items()},
        "score": score,
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(out_dir / "pipeline.json", json.dumps(summary, indent=2))
    _log(f"done in {summary['seconds']} s; outputs in {out_dir}")
    return summary


def _write_figures(runs: dict, results: dict, folder: Path) -> None:
    """The figures of notebook 04 for both models: training curves, per-attribute accuracy,
    CMC curves, a retrieval grid (re-ID model) and a t-SNE of its validation embeddings."""
    from .checkpoint import load_checkpoint
    from .plots import plot_history
    from .retrieval import rank_gallery
    from .visualize import plot_attribute_accuracy, plot_cmc, plot_retrieval_grid, plot_tsne

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
