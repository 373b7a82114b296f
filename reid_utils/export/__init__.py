"""Exporting predictions: the course deliverables (:mod:`.submission`), replaced as a pair
(:mod:`.swap`) with a manifest (:mod:`.manifest`); re-ranking where validation says it helps
(:mod:`.rerank_choice`); variable-length lists (:mod:`.threshold`); ONNX models checked against
PyTorch (:mod:`.onnx`)."""
from .manifest import MANIFEST_FILE, check_submission, read_manifest
from .onnx import export_onnx
from .submission import (
    CLASSIFICATION_FILE,
    REID_FILE,
    SUBMISSION_FILES,
    export_submission,
    read_classification_csv,
    read_reid_txt,
    write_classification_csv,
    write_reid_txt,
)
from .swap import recover as recover_submission
from .threshold import threshold_effect

__all__ = [
    "CLASSIFICATION_FILE",
    "MANIFEST_FILE",
    "REID_FILE",
    "SUBMISSION_FILES",
    "check_submission",
    "export_onnx",
    "export_submission",
    "read_manifest",
    "recover_submission",
    "threshold_effect",
    "read_classification_csv",
    "read_reid_txt",
    "write_classification_csv",
    "write_reid_txt",
]
