"""Evaluation settings and the fixed constants of the protocol (formats.md §4), stated once."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

#: FP-per-volume rates reported in eval.json, with their spelling as JSON keys.
FP_RATES: Final = (0.125, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
FP_RATE_KEYS: Final = ("0.125", "0.25", "0.5", "1", "2", "3", "4", "6", "8")
#: The 7 LUNA16 rates whose mean is the CPM (3 and 6 are reported, not averaged).
CPM_RATES: Final = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
#: IoU thresholds of the box AP.
AP_IOUS: Final = (0.1, 0.5)
#: Node-size strata by short axis in mm: (key, lower bound inclusive, upper bound exclusive).
SIZE_BINS: Final = (
    ("<10", 0.0, 10.0),
    ("10-15", 10.0, 15.0),
    ("15-20", 15.0, 20.0),
    (">=20", 20.0, float("inf")),
)
#: `--radius auto` never goes below this (mm).
AUTO_RADIUS_MIN_MM: Final = 5.0


class MatchRule(enum.StrEnum):
    """When a detection point hits a ground-truth node."""

    MASK = "mask"
    RADIUS = "radius"
    MASK_OR_RADIUS = "mask-or-radius"


class DuplicatePolicy(enum.StrEnum):
    """What further hits on an already-hit node count as."""

    IGNORE = "ignore"  # LUNA16: neither TP nor FP
    FP = "fp"  # nnDetection: false positives


@dataclass(frozen=True)
class EvalSettings:
    """How to evaluate. ``radius_mm=None`` means ``--radius auto``.

    Attributes:
        match: the hit rule.
        radius_mm: fixed hit radius in mm, or None for auto = max(5 mm, short axis / 2, else long axis / 2).
        duplicates: the duplicate policy.
        nndet_boxes: use nnDetection's padded voxel boxes as AP ground truth.
        bootstrap: number of bootstrap resamples over cases (0 = no CI).
        seed: seed of the bootstrap.
        ap_max_detections: per-volume cap on detections entering AP (COCO/nnDetection: 100).
    """

    match: MatchRule = MatchRule.MASK_OR_RADIUS
    radius_mm: float | None = None
    duplicates: DuplicatePolicy = DuplicatePolicy.IGNORE
    nndet_boxes: bool = False
    bootstrap: int = 1000
    seed: int = 0
    ap_max_detections: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "match", MatchRule(self.match))
        object.__setattr__(self, "duplicates", DuplicatePolicy(self.duplicates))
        if self.radius_mm is not None and not (self.radius_mm > 0 and self.radius_mm < float("inf")):
            raise ValueError(f"radius_mm must be a positive number, got {self.radius_mm}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")
        if self.ap_max_detections < 1:
            raise ValueError(f"ap_max_detections must be >= 1, got {self.ap_max_detections}")

    def to_json(self) -> dict[str, Any]:
        """The settings as written into eval.json's ``rule``."""
        return {
            "match": self.match.value,
            "radius_mm": "auto" if self.radius_mm is None else self.radius_mm,
            "radius_auto": f"max({AUTO_RADIUS_MIN_MM:g} mm, short_axis/2, else long_axis/2)"
            if self.radius_mm is None
            else None,
            "duplicates": self.duplicates.value,
            "box_convention": "nndetection-padded-voxel" if self.nndet_boxes else "world-full-voxel",
            "ap_iou_thresholds": list(AP_IOUS),
            "ap_max_detections_per_volume": self.ap_max_detections,
            "ap_interpolation": "coco-101-point",
            "fp_rates": list(FP_RATES),
            "cpm_rates": list(CPM_RATES),
            "interpolation": "numpy.interp on the pooled curve with (0, 0) prepended",
            "bootstrap_resamples": self.bootstrap,
            "bootstrap_seed": self.seed,
        }
