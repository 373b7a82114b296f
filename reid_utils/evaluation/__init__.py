"""Evaluating trained models: a checkpoint on validation data, a submission against a ground
truth, and tables from training histories.

* :mod:`.report`: :func:`evaluate_checkpoint` (both protocols, flip, re-ranking, thresholds,
  junk flags), :func:`results_table`, :func:`format_result`, the ``evaluate`` command;
* :mod:`.scoring`: :func:`score_submission` (the course evaluator on the sample's hidden answers);
* :mod:`.history`: :func:`load_history`, :func:`attribute_accuracy_table`, :func:`reid_table`,
  :func:`best_checkpoint` (which model writes which deliverable).
"""
from .history import attribute_accuracy_table, best_checkpoint, load_history, reid_table
from .report import evaluate_checkpoint, evaluate_command, format_result, results_table, to_jsonable
from .scoring import score_submission, submission_average_precision

__all__ = [
    "attribute_accuracy_table",
    "best_checkpoint",
    "evaluate_checkpoint",
    "evaluate_command",
    "format_result",
    "load_history",
    "reid_table",
    "results_table",
    "score_submission",
    "submission_average_precision",
    "to_jsonable",
]
