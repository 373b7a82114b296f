"""Run the benchmark suite: ``python benchmarks/run_bench.py [--json] [--quick] [--only SECTION ...]``.

The same as ``python -m reid_utils bench ...`` (see ``benchmarks/README.md``); the work is done
by :func:`reid_utils.bench.run_benchmarks`.
"""
from reid_utils.cli import main

if __name__ == "__main__":
    import sys

    raise SystemExit(main(["bench", *sys.argv[1:]]))
