"""The pooled FROC curve and its reading (formats.md §4). Pure numpy.

One pooled curve: every distinct score, descending, is a threshold t giving
(FP per volume, sensitivity) = (#FP with score ≥ t / n_cases, #nodes whose kept hit scores ≥ t / n_nodes),
with (0, 0) prepended. Missed nodes stay in the denominator. The sensitivity at a rate r is
``numpy.interp(r, fps, sens)``: linear between points, clamped after the last point, and the upper value at
an exact jump. This is what ``monai.metrics.froc.compute_froc_score`` does on the same curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lymphcad.evaluate.settings import CPM_RATES

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class FrocCurve:
    """A FROC curve: ``thresholds`` (K,) descending; ``fps`` and ``sensitivity`` (K + 1,) with (0, 0) first.

    ``sensitivity`` is NaN throughout when there are no nodes.
    """

    thresholds: FloatArray
    fps: FloatArray
    sensitivity: FloatArray
    n_nodes: int
    n_cases: int

    @property
    def max_fp_per_volume(self) -> float:
        """FP per volume at the lowest threshold (the curve is clamped beyond it)."""
        return float(self.fps[-1])


def froc_curve(tp_scores: ArrayLike, fp_scores: ArrayLike, *, n_nodes: int, n_cases: int) -> FrocCurve:
    """Build the pooled curve.

    Args:
        tp_scores: score of each hit node's kept hit (one per hit node; missed nodes are left out).
        fp_scores: scores of all detections counted as false positives.
        n_nodes: all annotated nodes (hit or missed): the sensitivity's denominator.
        n_cases: number of volumes: the FP rate's denominator (≥ 1).
    """
    if n_cases < 1:
        raise ValueError("a FROC curve needs at least one case")
    tp = np.sort(np.asarray(tp_scores, dtype=np.float64).reshape(-1))
    fp = np.sort(np.asarray(fp_scores, dtype=np.float64).reshape(-1))
    if tp.size > n_nodes:
        raise ValueError(f"{tp.size} hit nodes but only {n_nodes} nodes")
    thresholds = np.unique(np.concatenate([tp, fp]))[::-1]
    n_tp = tp.size - np.searchsorted(tp, thresholds, side="left")
    n_fp = fp.size - np.searchsorted(fp, thresholds, side="left")
    fps = np.concatenate([[0.0], n_fp / float(n_cases)])
    sens = np.concatenate([[0.0], n_tp / float(n_nodes)]) if n_nodes > 0 else np.full(fps.shape, np.nan)
    return FrocCurve(np.ascontiguousarray(thresholds), fps, sens, int(n_nodes), int(n_cases))


def sensitivity_at(curve: FrocCurve, rates: Sequence[float] | FloatArray) -> FloatArray:
    """Sensitivity at each FP-per-volume rate: ``numpy.interp(rates, fps, sensitivity)``."""
    return np.asarray(
        np.interp(np.asarray(rates, dtype=np.float64), curve.fps, curve.sensitivity), dtype=np.float64
    )


def cpm(curve: FrocCurve) -> float:
    """Competition performance metric: mean sensitivity at the 7 LUNA rates 1/8 … 8."""
    return float(np.mean(sensitivity_at(curve, CPM_RATES)))
