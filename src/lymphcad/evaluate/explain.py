"""Plain-language reasons for numbers an evaluation cannot give (printed beside "n/a")."""

from __future__ import annotations

import numpy as np

from lymphcad.evaluate.run import EvalResult


def ap_reason(result: EvalResult) -> str:
    """Why AP is missing: no detection has a size, or the cohort has no instance masks to box."""
    if not bool(np.isfinite(result.detections.diameters_mm).any()):
        return (
            "no row of the detections CSV has diameter_mm, and AP needs a box per detection (a cube of that "
            "side; docs/formats.md, Detections)"
        )
    if not any(t.labels_zyx is not None for t in result.matched.truths):
        return "the cohort has no labels/ instance masks, and AP's ground-truth boxes come from them"
    return "the stratum has no ground-truth box (no node with an instance mask)"
