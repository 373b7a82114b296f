"""The synthetic sample dataset: procedural pedestrians (:mod:`.pedestrian`) seen by six
cameras (:mod:`.cameras`), written as JPEG files in the course or the official Market layout
(:mod:`.generator`). The data layer reads them like real data; nothing here is needed to use
real data.
"""
from .generator import GROUND_TRUTH_FILE, LAYOUTS, SAMPLE_ROOT, ensure_sample, sample_root, write_sample

__all__ = ["GROUND_TRUTH_FILE", "LAYOUTS", "SAMPLE_ROOT", "ensure_sample", "sample_root", "write_sample"]
