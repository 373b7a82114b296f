"""Command line: ``python -m reid_utils <command>``, mirroring the notebooks.

Commands
  sample   write the synthetic sample dataset
  inspect  detect a dataset's layout, validate it and print a summary
  train    train a model (every TrainConfig field is an option)
  evaluate evaluate a checkpoint on the validation split or the official query/gallery
  export   write classification_test.csv and reid_test.txt for the course
  search   find a person in any folder of images, by photo and/or description
  onnx     export a checkpoint to ONNX and check it against PyTorch
  bench    measure the fast paths against plain implementations
  pipeline the whole sample pipeline: data, attribute model, re-ID model, evaluation, export

Input problems (a missing folder, a bad CSV, an unknown option value, a mismatched checkpoint)
end with a one-line message and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

from .errors import ConfigError, ReidError, TrainingError


def _cmd_sample(args: argparse.Namespace) -> int:
    from .io import check_writable
    from .synthetic.generator import write_sample

    if not 0 <= args.seed < 2**63:
        raise ConfigError(f"--seed {args.seed} is out of range, expected 0 <= seed < 2**63")
    check_writable(args.out.parent)  # a file in the way or a read-only folder: one line, exit 2
    root = write_sample(args.out, num_ids=args.ids, seed=args.seed, layout=args.layout)
    print(f"wrote {args.layout}-layout sample to {root}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .data.inspect import format_summary, summarize

    summary = summarize(args.root, check_images=not args.no_image_check)
    print(json.dumps(summary, indent=2, default=str) if args.json else format_summary(summary))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import TrainConfig
    from .engine import best_epoch, fit

    overrides = {k: v for k, v in vars(args).items() if k not in ("func", "command")}
    cfg = TrainConfig.from_overrides(**overrides)
    history = fit(cfg)
    if history.get(cfg.early_stopping_metric):
        row = best_epoch(history, cfg.early_stopping_metric)
        keys = ("epoch", "mAP", "rank1", "course_mAP", "course_rank1", "attribute_accuracy")
        print("best epoch: " + ", ".join(f"{k} {row[k]:.4g}" for k in keys if k in row))
    else:  # no validation split (val_fraction=0): best.pt is the last epoch
        losses = history.get("train_loss") or [float("nan")]
        print(f"trained {len(history.get('epoch', []))} epoch(s), last training loss {losses[-1]:.4g}; no validation "
              f"split (val_fraction={cfg.val_fraction}), so best.pt is the last epoch; checkpoints in {cfg.out_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation.report import evaluate_command

    evaluate_command(args.data, args.checkpoint, out=args.out, rerank=args.rerank, flip=args.flip)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export.submission import export_submission

    result = export_submission(args.data, args.checkpoint, args.out, top_k=args.top_k, rerank=args.rerank,
                               attribute_checkpoint=args.attribute_checkpoint, threshold=args.threshold)
    for name, path in result["paths"].items():
        print(f"wrote {name}: {path}")
    print(f"wrote manifest: {result['manifest_path']}")
    choice = result["rerank_choice"]
    print(f"re-ranking {'on' if result['rerank'] else 'off'}" + (f": {choice['reason']}" if choice else ""))
    if result["threshold"] is not None:
        print(f"distance threshold {result['threshold']:.4f}: {result['mean_results']:.1f} results per query on average")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from .search import search

    result = search(args.checkpoint, args.gallery, query=args.query, where=args.where, top_k=args.top_k,
                    out_dir=args.out, cache=args.cache, flip=args.flip, batch_size=args.batch_size, progress=True)
    gallery = result["gallery"]
    source = (f"features from {gallery['cache']}" if gallery["cached"]
              else f"features cached in {gallery['cache']}" if gallery["cache"] else "features not cached")
    print(f"gallery: {len(gallery['paths'])} images in {args.gallery} ({source})")
    if gallery["skipped"]:
        print(f"skipped {len(gallery['skipped'])} unreadable images (first: {gallery['skipped'][0][1]})")
    table = result["table"]
    print(f"query: {table['query'].iloc[0] if len(table) else ''}")
    for row in table.itertuples(index=False):
        print(f"{row.rank:4d}  {row.score:.4f}  {row.path}")
    for name, path in result["paths"].items():
        print(f"wrote {name}: {path}")
    return 0


def _cmd_onnx(args: argparse.Namespace) -> int:
    from .export.onnx import export_onnx

    result = export_onnx(args.checkpoint, args.out, dynamic_batch=args.dynamic_batch, flip=args.flip,
                         images=args.images, tolerance=args.tolerance)
    worst = max(result["max_difference"].values())
    details = ", ".join(f"{k} {v:.2g}" for k, v in result["max_difference"].items())
    print(f"wrote {result['path']} ({result['model']}, input float32 (B, 3, {result['height']}, {result['width']}) "
          "RGB in [0, 1])")
    print(f"onnxruntime vs PyTorch on {result['num_images']} images: largest difference {worst:.2g} ({details})")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.gpu:
        from .bench.gpu import format_gpu_report, gpu_check

        report = gpu_check(dry_run=args.dry_run)
        print(json.dumps(report, indent=2) if args.json else format_gpu_report(report))
        return 0
    from .bench import run_benchmarks

    run_benchmarks(quick=args.quick, as_json=args.json, sections=args.only)
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    run_pipeline(out_dir=args.out, data_root=args.data, smoke=args.smoke, readme_images=args.readme_images,
                 refit=args.refit)
    return 0


def _none_or(kind: type):
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field: ``num_epochs`` is ``--num-epochs`` (or ``--epochs``).

    Options the user does not give are left out, so the config's per-model defaults apply.
    """
    from .config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    shortcuts = {"data_root": ["--data"], "out_dir": ["--out"], "num_epochs": ["--epochs"]}
    for field in dataclasses.fields(TrainConfig):
        names = shortcuts.get(field.name, []) + [f"--{field.name.replace('_', '-')}"]
        kind = hints[field.name]
        optional = type(None) in typing.get_args(kind)
        if optional:  # Optional[X] -> X, and "none" on the command line gives None
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        help_text = field.metadata.get("help", "").replace("%", "%%")
        if kind is bool:
            parser.add_argument(*names, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
        elif kind in (int, float, str):
            parser.add_argument(*names, dest=field.name, type=_none_or(kind) if optional else kind,
                                default=argparse.SUPPRESS, help=help_text)
        elif typing.get_origin(kind) is typing.Literal:
            parser.add_argument(*names, dest=field.name, choices=typing.get_args(kind),
                                default=argparse.SUPPRESS, help=help_text)
        else:  # tuples and other structured values: JSON on the command line
            parser.add_argument(*names, dest=field.name, type=json.loads, default=argparse.SUPPRESS,
                                help=(help_text + " (JSON)").strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reid_utils", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="write the synthetic sample dataset")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--ids", type=int, default=None, help="number of training identities (default: the bundled sample's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=("course", "market"), default="course")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("inspect", help="validate a dataset and print a summary")
    p.add_argument("root", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON (keys: layout, train_ids, train_images, ...)")
    p.add_argument("--no-image-check", action="store_true", help="skip decoding every image")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("train", help="train a model; every TrainConfig field is an option")
    _add_config_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint")
    p.add_argument("--data", type=Path, default=None, help="dataset root (default: REID_DATA_ROOT or the sample)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, default=None, help="write the results table (JSON/CSV) here")
    p.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("export", help="write classification_test.csv and reid_test.txt")
    p.add_argument("--data", type=Path, default=None, help="dataset root (default: REID_DATA_ROOT or the sample)")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--top-k", type=int, default=100)
    p.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=None,
                   help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3); default: on where it raises the course "
                        "mAP on the checkpoint's validation split (a refit: that of the run it repeats; none: on)")
    p.add_argument("--attribute-checkpoint", type=Path, default=None,
                   help="attribute model for classification_test.csv (default: --checkpoint)")
    p.add_argument("--threshold", default=None, metavar="auto|VALUE",
                   help="cut each list at this distance (auto: chosen on the checkpoint's validation split); "
                        "default: exactly --top-k results per query")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("search", help="find a person in any folder of images, by photo and/or description")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--gallery", type=Path, required=True, help="folder of images, searched recursively")
    p.add_argument("--query", type=Path, nargs="+", default=None,
                   help="image(s) or a folder of one person; several images are averaged")
    p.add_argument("--where", default=None, help='a description, e.g. "upcolour=red,backpack=yes"; '
                   "with --query, hits matching it come first")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("outputs") / "search",
                   help="folder for results.csv and results.html (gallery features are cached beside it)")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True,
                   help="cache gallery features in <out>/../search_cache")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("onnx", help="export a checkpoint to ONNX, checked against PyTorch with onnxruntime")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="any batch size (default); --no-dynamic-batch fixes it to 1")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="flip averaging inside the graph, as evaluation does (default)")
    p.add_argument("--images", type=Path, default=None,
                   help="folder of images for the check (default: the bundled sample)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed difference from PyTorch")
    p.set_defaults(func=_cmd_onnx)

    p = sub.add_parser("bench", help="fast paths vs plain implementations, as ratios")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    p.add_argument("--only", nargs="*", default=None,
                   help="sections to run (train, infer, eval, rerank, loader, contention, trunks, recipe; default: all)")
    p.add_argument("--gpu", action="store_true", help="the GPU check: APR-Net ResNet-50 256x128 under AMP, < 5 min")
    p.add_argument("--dry-run", action="store_true", help="with --gpu: the same check, small, on the CPU if no GPU")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("pipeline", help="run the whole pipeline (default: on the bundled sample)")
    p.add_argument("--out", type=Path, default=Path("outputs"))
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="tiny and fast: one short epoch per model")
    p.add_argument("--readme-images", action="store_true", help="also refresh the README's images in img/")
    p.add_argument("--refit", action=argparse.BooleanOptionalAction, default=True,
                   help="retrain the re-ID model on every training identity for the submission (default)")
    p.set_defaults(func=_cmd_pipeline)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ReidError, TrainingError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an output path we could not write, met outside the checked places
        from .io import OUTPUT_ERRNOS

        if err.errno not in OUTPUT_ERRNOS or not err.filename:
            raise
        print(f"error: {err.filename}: {err.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
