"""pytest settings for the notebooks: ``python -m pytest --nbval notebooks/`` runs them in smoke mode.

``REID_SMOKE=1`` (unless already set) makes every notebook a tiny, deterministic run on the
bundled sample that writes to ``outputs/smoke/`` (see ``reid_utils.notebook.smoke_mode``). The
kernels nbval starts inherit it, with the AVX2 kernel settings of
``reid_utils.notebook.smoke_environment`` that keep the compared numbers the same on any x86
CPU. The variables are set just before the first notebook's kernel starts and restored after
the last notebook: the tests in ``tests/`` never run under them, whatever the order.
``REID_SMOKE=0 python -m pytest --nbval-lax notebooks/`` runs them for real instead (outputs
are then not compared).
"""
import os
from pathlib import Path

import pytest

from reid_utils.notebook import smoke_environment

HERE = Path(__file__).resolve().parent
_saved: dict[str, str | None] | None = None  # the variables' values before the notebooks


def _is_notebook(item) -> bool:
    return item is not None and HERE in Path(item.path).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Before a notebook's kernel starts (it inherits this process's environment)."""
    global _saved
    if _saved is None:
        changes = {"REID_SMOKE": os.environ.get("REID_SMOKE", "1")}
        if changes["REID_SMOKE"] == "1":
            changes.update(smoke_environment())
        _saved = {name: os.environ.get(name) for name in changes}
        os.environ.update(changes)


def pytest_runtest_teardown(item, nextitem):
    """After the last notebook item: the variables as they were."""
    global _saved
    if _saved is not None and not _is_notebook(nextitem):
        for name, value in _saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _saved = None
