"""Agreement figures for ``evaluate``: measured vs true size (MAE, Bland–Altman) and probability calibration
(reliability bins, ECE). Pure functions on arrays; :mod:`lymphcad.evaluate.run` gathers the arrays."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from lymphcad.measure.calibration import ECE_BINS, reliability


def _num(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


@dataclass(frozen=True)
class SizeAgreement:
    """Measured minus true size over matched detections with both values (mm)."""

    n: int
    mae: float
    median_abs: float
    p90_abs: float
    bias: float
    loa_low: float
    loa_high: float

    def to_json(self) -> dict[str, Any]:
        """eval.json form (NaN as null)."""
        return {
            "n": self.n,
            "mean_absolute_error_mm": _num(self.mae),
            "median_absolute_error_mm": _num(self.median_abs),
            "p90_absolute_error_mm": _num(self.p90_abs),
            "bias_mm": _num(self.bias),
            "bland_altman_limits_mm": [_num(self.loa_low), _num(self.loa_high)],
        }


def size_agreement(measured: ArrayLike, truth: ArrayLike) -> SizeAgreement:
    """MAE, median and 90th percentile of |error|, bias and Bland–Altman 95 % limits (bias ± 1.96 SD)."""
    m = np.asarray(measured, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    ok = np.isfinite(m) & np.isfinite(t)
    d = m[ok] - t[ok]
    if d.size == 0:
        nan = float("nan")
        return SizeAgreement(0, nan, nan, nan, nan, nan, nan)
    sd = float(np.std(d, ddof=1)) if d.size > 1 else 0.0
    bias = float(d.mean())
    a = np.abs(d)
    return SizeAgreement(
        int(d.size),
        float(a.mean()),
        float(np.median(a)),
        float(np.percentile(a, 90)),
        bias,
        bias - 1.96 * sd,
        bias + 1.96 * sd,
    )


def calibration_block(probabilities: ArrayLike, hits: ArrayLike, *, bins: int = ECE_BINS) -> dict[str, Any]:
    """eval.json's calibration block: ECE and the reliability bins of detections labelled hit (1) / not (0)."""
    p = np.asarray(probabilities, dtype=np.float64)
    h = np.asarray(hits, dtype=np.float64)
    rel = reliability(p, h, bins)
    return {
        "target": "the detection hits a ground-truth node (tp or duplicate) vs not (fp); ignored and "
        "outside-region detections left out",
        "n_detections": int(p.size),
        "n_hits": int(h.sum()),
        f"ece_{bins}_bins": _num(rel.ece),
        "bins": [
            {
                "lo": float(rel.edges[i]),
                "hi": float(rel.edges[i + 1]),
                "n": int(rel.counts[i]),
                "mean_probability": _num(float(rel.mean_predicted[i])),
                "hit_rate": _num(float(rel.hit_rate[i])),
            }
            for i in range(bins)
        ],
    }
