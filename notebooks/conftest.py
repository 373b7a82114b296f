"""pytest settings for the notebooks: ``python -m pytest --nbval notebooks/`` runs them in smoke mode.

``REID_SMOKE=1`` (unless already set) makes every notebook a tiny, deterministic run on the
bundled sample that writes to ``outputs/smoke/`` (see ``reid_utils.notebook.smoke_mode``). The
kernels nbval starts inherit it, with the AVX2 kernel settings of
``reid_utils.notebook.smoke_environment`` that keep the compared numbers the same on any x86
CPU. ``REID_SMOKE=0 python -m pytest --nbval-lax notebooks/`` runs them for real instead
(outputs are then not compared).
"""
import os

from reid_utils.notebook import smoke_environment

os.environ.setdefault("REID_SMOKE", "1")
if os.environ["REID_SMOKE"] == "1":
    os.environ.update(smoke_environment())
