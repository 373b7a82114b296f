"""Command line: ``python -m reid_utils <command>``, mirroring the notebooks.

Commands
  sample   write the synthetic sample dataset
  inspect  detect a dataset's layout, validate it and print a summary
  train    train a model (every TrainConfig field is an option)
  evaluate evaluate a checkpoint on the validation split or the official query/gallery
  export   write classification_test.csv and reid_test.txt for the course
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

from .errors import ReidError, TrainingError


def _cmd_sample(args: argparse.Namespace) -> int:
    from .data.synthetic import write_sample

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
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_command

    evaluate_command(args.data, args.checkpoint, out=args.out, rerank=args.rerank, flip=args.flip)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_submission

    result = export_submission(args.data, args.checkpoint, args.out, top_k=args.top_k, rerank=args.rerank)
    for name, path in result["paths"].items():
        print(f"wrote {name}: {path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_benchmarks

    run_benchmarks(quick=args.quick, as_json=args.json, sections=args.only)
    return 0


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from .pipeline import run_pipeline

    run_pipeline(out_dir=args.out, data_root=args.data, smoke=args.smoke)
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
    p.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("bench", help="fast paths vs plain implementations, as ratios")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    p.add_argument("--only", nargs="*", default=None, help="sections to run (train, infer, eval, rerank, loader)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("pipeline", help="run the whole pipeline (default: on the bundled sample)")
    p.add_argument("--out", type=Path, default=Path("outputs"))
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--smoke", action="store_true", help="tiny and fast: one short epoch per model")
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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
