"""Execute the notebooks from their jupytext sources and store the cleaned outputs.

Each notebook's source is the percent-format script next to it (``02_attribute_training.py``
for ``02_attribute_training.ipynb``); the ``.ipynb`` is what Colab opens and what nbval
compares. From the repository root::

    python notebooks/make_notebooks.py            # all five: source -> run in smoke mode -> clean -> .ipynb
    python notebooks/make_notebooks.py 02 04      # only these
    python notebooks/make_notebooks.py --check    # exit 1 if a pair is out of sync
    python notebooks/make_notebooks.py --repo https://github.com/you/reid_utils   # a fork's address

After editing a notebook in Jupyter or Colab, bring the edit back into its source with
``jupytext --sync notebooks/02_attribute_training.ipynb`` (the newer file wins), then rerun
this script so that the stored outputs match the code.

The repository's address lives in one place, ``[project.urls] Repository`` in pyproject.toml.
Every run writes it into the Colab badges (notebooks and README) and into the Colab setup cell,
whose code is ``notebooks/colab_setup.py`` (the same cell in all five notebooks). ``--repo URL``
changes the address everywhere at once, without executing anything.

Cleaning (nbstripout ``--keep-output`` style): cell metadata other than tags, kernel details
and stderr (progress bars, warnings) go; execution counts become 1, 2, 3... over the executed
cells, because nbval needs a count on every reference cell with outputs.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import jupytext
import nbformat
import tomllib
from nbclient import NotebookClient

from reid_utils.notebook import smoke_environment

NOTEBOOK_DIR = Path(__file__).resolve().parent
ROOT = NOTEBOOK_DIR.parent
SETUP_TEMPLATE = NOTEBOOK_DIR / "colab_setup.py"
SKIP, IGNORE = "# NBVAL_SKIP", "# NBVAL_IGNORE_OUTPUT"
PAIRING = {"formats": "ipynb,py:percent"}


def sources() -> dict[str, Path]:
    """``{"01": notebooks/01_data_preparation.py, ...}``."""
    return {p.name[:2]: p for p in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))}


def repository() -> str:
    """``https://github.com/OWNER/NAME`` from pyproject.toml's ``[project.urls] Repository``."""
    with open(ROOT / "pyproject.toml", "rb") as file:
        url = tomllib.load(file)["project"]["urls"]["Repository"].rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise SystemExit(f"pyproject.toml: [project.urls] Repository = {url!r} is not https://github.com/OWNER/NAME")
    return url.removesuffix(".git")


def set_repository(url: str) -> None:
    """Write ``url`` into pyproject.toml (the one place the address lives)."""
    path = ROOT / "pyproject.toml"
    text, count = re.subn(r'(?m)^Repository = ".*"$', f'Repository = "{url.rstrip("/").removesuffix(".git")}"',
                          path.read_text(encoding="utf-8"))
    if count != 1:
        raise SystemExit(f"{path}: expected one 'Repository = ...' line under [project.urls]")
    path.write_text(text, encoding="utf-8")


def setup_cell(url: str) -> str:
    """The Colab setup cell, cloning ``url`` by default."""
    text = SETUP_TEMPLATE.read_text(encoding="utf-8").strip()
    return re.sub(r'(REPO_URL = os\.environ\.get\("REID_REPO_URL", )"[^"]*"', rf'\1"{url}.git"', text)


def with_address(text: str, url: str) -> str:
    """``text`` with every Colab badge pointing at ``url``."""
    slug = url.removeprefix("https://github.com/")
    return re.sub(r"(colab\.research\.google\.com/github/)[\w.-]+/[\w.-]+(/blob/)", rf"\g<1>{slug}\2", text)


def render(nb: nbformat.NotebookNode, url: str) -> nbformat.NotebookNode:
    """``nb`` with the current setup cell (the skipped cell that checks for Colab) and badges."""
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith(SKIP) and '"google.colab" in sys.modules' in cell.source:
            cell.source = setup_cell(url)
        elif cell.cell_type == "markdown":
            cell.source = with_address(cell.source, url)
    return nb


def cells(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def out_of_sync(source: Path) -> str | None:
    """Why ``source`` and its ``.ipynb`` differ, or None when their cells are the same."""
    target = source.with_suffix(".ipynb")
    if not target.is_file():
        return f"{target.name} is missing"
    source_nb = jupytext.read(source)
    ours, theirs = cells(source_nb), cells(nbformat.read(target, as_version=4))
    if cells(render(jupytext.read(source), repository())) != ours:
        return f"{source.name} has a setup cell or badge that differs from colab_setup.py / pyproject.toml"
    if ours == theirs:
        return None
    first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    return f"{source.name} and {target.name} differ from cell {first}"


def execute(nb: nbformat.NotebookNode, timeout: int = 900) -> float:
    """Run ``nb`` in smoke mode from ``notebooks/`` (as nbval does); returns the seconds taken."""
    os.environ.update(smoke_environment())  # the kernel inherits the environment
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()
    return time.perf_counter() - start


def clean(nb: nbformat.NotebookNode, name: str) -> None:
    """Strip an executed notebook in place (see the module docstring). A cell whose output
    nbval compares must not write to stderr: that raises."""
    count = 0
    for i, cell in enumerate(nb.cells):
        tags = cell.metadata.get("tags")
        cell.metadata = {"tags": tags} if tags else {}
        cell.id = f"c{name[:2]}-{i:02d}"  # stable ids: no churn in diffs
        if cell.cell_type != "code":
            continue
        skipped = cell.source.startswith(SKIP)
        count += not skipped
        cell.execution_count = None if skipped else count
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                if not cell.source.startswith(IGNORE):
                    raise RuntimeError(f"{name} cell {i} (compared by nbval) wrote to stderr:\n{output.text}")
                continue
            if "execution_count" in output:
                output.execution_count = cell.execution_count
            previous = kept[-1] if kept else None
            if (previous is not None and output.get("output_type") == "stream"
                    and previous.get("output_type") == "stream" and previous.get("name") == output.get("name")):
                previous.text += output.text  # one stdout block, however the kernel flushed it
                continue
            kept.append(output)
        if cell.source.startswith(IGNORE) and str(ROOT) in str(kept):
            kept = []  # not compared, and a checkout's absolute path has no place in the repository
        cell.outputs = kept
    nb.metadata = {
        "jupytext": PAIRING,
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="*", help="notebook numbers, e.g. 02 04 (default: all)")
    parser.add_argument("--check", action="store_true", help="only check that every pair is in sync")
    parser.add_argument("--repo", metavar="URL", help="set the repository address (https://github.com/OWNER/NAME) everywhere")
    args = parser.parse_args(argv)
    found = sources()
    if args.repo:
        set_repository(args.repo)
        url = repository()
        for path in [*found.values(), *(p.with_suffix(".ipynb") for p in found.values()), ROOT / "README.md"]:
            if path.suffix == ".py":
                jupytext.write(render(jupytext.read(path), url), path, fmt="py:percent")
            elif path.suffix == ".ipynb":
                nbformat.write(render(nbformat.read(path, as_version=4), url), path)
            else:
                path.write_text(with_address(path.read_text(encoding="utf-8"), url), encoding="utf-8")
        print(f"repository address set to {url} in pyproject.toml, the notebooks and README.md")
        return 0
    which = args.which or list(found)
    unknown = [k for k in which if k not in found]
    if unknown:
        parser.error(f"unknown notebook(s) {unknown}; choose from {', '.join(found)}")
    if args.check:
        problems = [why for k in which if (why := out_of_sync(found[k]))]
        for why in problems:
            print(f"{why}: run python notebooks/make_notebooks.py (or jupytext --sync after a Jupyter edit)")
        return 1 if problems else 0
    for key in which:
        source = found[key]
        nb = render(jupytext.read(source), repository())
        jupytext.write(nb, source, fmt="py:percent")  # the source gets the current setup cell and badges
        seconds = execute(nb)
        clean(nb, source.stem)
        nbformat.validate(nb)
        nbformat.write(nb, source.with_suffix(".ipynb"))
        print(f"{source.with_suffix('.ipynb').name}: executed in {seconds:.0f} s and written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
