"""Evaluation of lymph-node detections, comparable with every published protocol (formats.md §4).

FROC at 1/8 … 8 FP per volume and the LUNA CPM (NIH / LUNA16 / MONAI), box AP at IoU 0.1 and 0.5
(nnDetection / COCO), bootstrap CIs over cases, strata by region and node size. Computing only: drawing
lives in :mod:`lymphcad.report`, the command in :mod:`lymphcad.cli.evaluate`.
"""

from __future__ import annotations

from lymphcad.evaluate.run import EvalResult, StratumResult, evaluate_cohort, evaluate_truth, write_outputs
from lymphcad.evaluate.settings import CPM_RATES, FP_RATES, DuplicatePolicy, EvalSettings, MatchRule

__all__ = [
    "CPM_RATES",
    "FP_RATES",
    "DuplicatePolicy",
    "EvalResult",
    "EvalSettings",
    "MatchRule",
    "StratumResult",
    "evaluate_cohort",
    "evaluate_truth",
    "write_outputs",
]
