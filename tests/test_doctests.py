"""The worked examples in the package's docstrings (``>>>``) run and show what they print.

``MODULES`` lists every module of ``reid_utils`` whose docstrings hold an example
(``grep -rln '>>>' reid_utils``); a second test keeps the list complete. ``EXCLUDED`` would
hold, with the reason, a module whose examples only illustrate (they need data files, a GPU or
the network); none does today: every example was read and is self-contained, and the one
random example (``metrics.scores.random_ranking_map``) is seeded.
"""
from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import reid_utils

MODULES = (
    "reid_utils.bench.suite",
    "reid_utils.bench.timing",
    "reid_utils.data.parsing",
    "reid_utils.engine.budget",
    "reid_utils.engine.threads",
    "reid_utils.errors",
    "reid_utils.evaluation.history",  # writes two small history.json files to a fresh temporary folder
    "reid_utils.evaluation.scoring",
    "reid_utils.export.submission",
    "reid_utils.export.threshold",
    "reid_utils.metrics.rerank",
    "reid_utils.metrics.retrieval",
    "reid_utils.metrics.scores",
    "reid_utils.models.alm",
    "reid_utils.models.summary",
    "reid_utils.schema",
    "reid_utils.search.ranking",
)
#: module -> why its examples are not run
EXCLUDED: dict[str, str] = {}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no example left: remove it from MODULES"
    assert result.failed == 0, f"{result.failed} of the {result.attempted} examples of {name} failed (output above)"


def test_every_module_with_examples_is_listed():
    package = Path(reid_utils.__file__).parent
    found = {
        ".".join(path.relative_to(package.parent).with_suffix("").parts)
        for path in package.rglob("*.py")
        if ">>>" in path.read_text(encoding="utf-8")
    }
    assert found == set(MODULES) | set(EXCLUDED)
