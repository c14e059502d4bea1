"""Calibrated probabilities: a monotone map from the detector's raw score to "this detection hits a node".

Method: **isotonic regression** (pool-adjacent-violators) fitted on the validation fold's detections, each
labelled 1 when it hits a ground-truth node (a ``tp`` or, with LUNA-style duplicates, a ``duplicate``: it
still is a true node hit) and 0 when it is a ``fp``; ignored and outside-region detections take no part.
Why isotonic and not temperature scaling: the score is the peak of a focal-loss heatmap, not the logit of
a classifier trained for this target, so its relation to the hit frequency has no reason to be a sigmoid of
a scaled logit (one temperature cannot fix the low and the high end at once); isotonic regression assumes
only that a higher score is not less likely to be a hit, and a validation fold has hundreds to thousands
of detections, enough for it. Temperature scaling is kept (:func:`fit_temperature`) for comparison in the
benchmark.

The stored map is piecewise linear through the PAV blocks' (mean score, hit rate) points and continued
linearly to (0, 0) and (1, 1) beyond the first and last block, so it is **strictly increasing**: the order
of detections, hence FROC/CPM/AP, is unchanged by calibration. It lives beside the model as a small JSON
file (``calibration.json``).
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar

from lymphcad import atomic
from lymphcad.errors import InputError

FloatArray = NDArray[np.float64]
CALIBRATION_FILE: Final = "calibration.json"
CALIBRATION_FORMAT: Final = "lymphcad-calibration"
#: fewest hits and misses a fit accepts
MIN_CLASS_COUNT: Final = 5
ECE_BINS: Final = 10


@dataclass(frozen=True)
class Calibration:
    """A monotone score → probability map.

    Attributes:
        method: ``isotonic`` (knots ``x`` → ``y``, linear between) or ``temperature`` (``temperature``).
        x, y: knots (increasing); unused for temperature scaling.
        temperature: logit divisor of temperature scaling (1.0 for isotonic).
        n_detections, n_hits: size of the fitting set.
        source: what it was fitted on (free text: cohort, fold, detections file).
    """

    method: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    temperature: float = 1.0
    n_detections: int = 0
    n_hits: int = 0
    source: str = ""

    def apply(self, scores: ArrayLike) -> FloatArray:
        """Calibrated probabilities of raw scores (any shape), in [0, 1]."""
        s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
        if self.method == "temperature":
            return _sigmoid(_logit(s) / self.temperature)
        return np.clip(np.interp(s, self.x, self.y), 0.0, 1.0)

    def to_json(self) -> dict[str, Any]:
        """The JSON stored beside the model."""
        return {
            "format": CALIBRATION_FORMAT,
            "version": 1,
            "method": self.method,
            "x": list(self.x),
            "y": list(self.y),
            "temperature": self.temperature,
            "n_detections": self.n_detections,
            "n_hits": self.n_hits,
            "target": "the detection hits a ground-truth node (tp or duplicate vs fp)",
            "source": self.source,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], path: Path | None = None) -> Calibration:
        """Inverse of :meth:`to_json`; a malformed file raises InputError naming it."""
        try:
            if data.get("format") != CALIBRATION_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, not {CALIBRATION_FORMAT!r}")
            method = str(data["method"])
            x = tuple(float(v) for v in data["x"])
            y = tuple(float(v) for v in data["y"])
            if method not in ("isotonic", "temperature"):
                raise ValueError(f"unknown method {method!r}")
            if method == "isotonic" and (len(x) != len(y) or len(x) < 2 or np.any(np.diff(x) < 0)):
                raise ValueError("knots must be two or more increasing x with as many y")
            return cls(
                method,
                x,
                y,
                float(data.get("temperature", 1.0)),
                int(data.get("n_detections", 0)),
                int(data.get("n_hits", 0)),
                str(data.get("source", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"not a lymphcad calibration ({exc})", path) from None

    def save(self, path: str | Path) -> Path:
        """Write the JSON atomically."""
        atomic.write_json(path, self.to_json())
        return Path(path)


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read calibration ({exc.strerror})", path) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"calibration is not JSON ({exc.msg}, line {exc.lineno})", path) from None
    return Calibration.from_json(data, path)


def calibration_beside(model_path: str | Path) -> Path:
    """Where a model's calibration lives: ``calibration.json`` in the model's folder."""
    p = Path(model_path)
    return (p if p.is_dir() else p.parent) / CALIBRATION_FILE


def find_calibration(model_path: str | Path) -> Calibration | None:
    """The calibration stored beside a model, or None when it has none."""
    p = calibration_beside(model_path)
    return load_calibration(p) if p.is_file() else None


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def _sigmoid(z: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def _check(scores: ArrayLike, hits: ArrayLike) -> tuple[FloatArray, FloatArray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    h = np.asarray(hits, dtype=np.float64).ravel()
    if s.shape != h.shape:
        raise ValueError(f"{s.size} scores but {h.size} labels")
    if not np.all(np.isfinite(s)) or np.any((s < 0) | (s > 1)):
        raise ValueError("scores must lie in [0, 1]")
    n_hit = int(h.sum())
    if n_hit < MIN_CLASS_COUNT or s.size - n_hit < MIN_CLASS_COUNT:
        raise ValueError(
            f"calibration needs at least {MIN_CLASS_COUNT} hits and {MIN_CLASS_COUNT} misses "
            f"(got {n_hit} hits of {s.size} detections)"
        )
    return s, h


def pool_adjacent_violators(y: FloatArray, w: FloatArray) -> tuple[FloatArray, FloatArray, NDArray[np.int64]]:
    """Isotonic (non-decreasing) fit of ``y`` with weights ``w``: (block values, block weights, block ends)."""
    vals: list[float] = []
    wts: list[float] = []
    ends: list[int] = []
    for i, (yi, wi) in enumerate(zip(y.tolist(), w.tolist(), strict=True)):
        vals.append(yi)
        wts.append(wi)
        ends.append(i)
        while len(vals) > 1 and vals[-2] >= vals[-1]:
            wsum = wts[-2] + wts[-1]
            merged = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / wsum
            vals[-2:] = [merged]
            wts[-2:] = [wsum]
            ends[-2:] = [ends[-1]]
    return np.array(vals), np.array(wts), np.array(ends, dtype=np.int64)


def fit_isotonic(scores: ArrayLike, hits: ArrayLike, *, source: str = "") -> Calibration:
    """Fit the strictly increasing isotonic map (see the module docstring) to raw scores and 0/1 hits."""
    s, h = _check(scores, hits)
    order = np.argsort(s, kind="stable")
    s, h = s[order], h[order]
    # equal scores form one point (their hit rate), so ties never split
    uniq, start = np.unique(s, return_index=True)
    counts = np.diff(np.append(start, s.size)).astype(np.float64)
    rates = np.add.reduceat(h, start) / counts
    vals, _, ends = pool_adjacent_violators(rates, counts)
    starts = np.concatenate([[0], ends[:-1] + 1])
    centres = np.array(
        [np.average(uniq[a : b + 1], weights=counts[a : b + 1]) for a, b in zip(starts, ends, strict=True)]
    )
    xs = [0.0, *centres.tolist(), 1.0]
    ys = [0.0, *vals.tolist(), 1.0]
    # continue to (0, 0) and (1, 1); drop knots that would repeat x
    kx, ky = [xs[0]], [ys[0]]
    for x, y in zip(xs[1:], ys[1:], strict=True):
        if x > kx[-1] + 1e-12:
            kx.append(x)
            ky.append(max(y, ky[-1]))
    # a vanishing slope keeps flat stretches (hit rate 0 below the first block) strictly increasing
    ky = [(1.0 - 1e-6) * y + 1e-6 * x for x, y in zip(kx, ky, strict=True)]
    return Calibration("isotonic", tuple(kx), tuple(ky), 1.0, int(s.size), int(h.sum()), source)


def fit_temperature(scores: ArrayLike, hits: ArrayLike, *, source: str = "") -> Calibration:
    """Temperature scaling of the score's logit (one parameter, fitted by maximum likelihood)."""
    s, h = _check(scores, hits)
    z = _logit(s)

    def nll(log_t: float) -> float:
        p = np.clip(_sigmoid(z / np.exp(log_t)), 1e-9, 1 - 1e-9)
        return float(-np.mean(h * np.log(p) + (1 - h) * np.log(1 - p)))

    res = minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded")
    return Calibration("temperature", (), (), float(np.exp(res.x)), int(s.size), int(h.sum()), source)


@dataclass(frozen=True)
class Reliability:
    """Equal-width reliability bins: detections, mean predicted probability and hit rate per bin."""

    edges: FloatArray
    counts: NDArray[np.int64]
    mean_predicted: FloatArray  # NaN in empty bins
    hit_rate: FloatArray  # NaN in empty bins
    ece: float


def reliability(probabilities: ArrayLike, hits: ArrayLike, bins: int = ECE_BINS) -> Reliability:
    """Reliability bins and the expected calibration error (ECE = Σ n_b/N · |hit rate − mean p|)."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    h = np.asarray(hits, dtype=np.float64).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(idx, weights=p, minlength=bins) / counts
        rate = np.bincount(idx, weights=h, minlength=bins) / counts
    ece = float(np.nansum(counts / max(1, p.size) * np.abs(rate - mean_p))) if p.size else float("nan")
    return Reliability(edges, counts, mean_p, rate, ece)


def expected_calibration_error(probabilities: ArrayLike, hits: ArrayLike, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width bins (NaN without detections)."""
    return reliability(probabilities, hits, bins).ece
