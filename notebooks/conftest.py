"""pytest settings for the notebooks: ``python -m pytest --nbval notebooks/`` runs them in smoke mode.

``REID_SMOKE=1`` (unless already set) makes every notebook a tiny, deterministic run on the
bundled sample that writes to ``outputs/smoke/`` (see ``reid_utils.notebook.smoke_mode``); the
kernels nbval starts inherit it. ``REID_SMOKE=0 python -m pytest --nbval-lax notebooks/`` runs
them for real instead (outputs are then not compared).
"""
import os

os.environ.setdefault("REID_SMOKE", "1")
