"""reid_utils: pedestrian attribute recognition and person re-identification on Market-1501.

Modules: ``data`` (schema, layouts, Dataset, split, sampler, transforms, synthetic sample),
``models`` (registry ``build_model``), ``losses``, ``metrics``, ``rerank``, ``retrieval``,
``engine`` (train / evaluate / fit), ``inference`` (batched feature extraction), ``export``
(course deliverables), ``config`` (one typed config), ``cli`` (``python -m reid_utils``).
"""

__version__ = "0.1.0"
