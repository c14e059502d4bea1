"""Per-region ground-truth rule and node-size distribution, derived from the collection's released marks.

TCIA "CT Lymph Nodes" marks mediastinal nodes from a 10 mm short axis (SAD) up, but abdominal nodes down to
about 6 mm (21 % of the 595 abdominal marks are below 10 mm). One rule "positive ≥ 10 mm" for both regions
teaches a detector to suppress a fifth of the abdominal ground truth. The rule here is derived per region
from the marks themselves (``benchmarks/gt_rule.py`` recomputes it from ../shared and writes
``benchmarks/results/gt_rule.json``; a test checks that the constants below equal the derivation):

* **positive**: SAD ≥ the 2.5th percentile of the region's marked SADs, rounded down to 0.5 mm — at least
  97.5 % of the marks count as positives;
* **ignore**: SAD in [positive − 2 mm, positive): the band where readers marked some nodes and not others
  (2 mm ≈ the inter-reader variation of a CT short axis); hits there count neither way;
* **negative**: smaller still — no released mark is that small (checked by the derivation).

Positive sizes are drawn from the region's marked SAD quantiles (inverse CDF, capped at
:data:`SAD_CAP_MM`), so inserted and phantom ground truth has the collection's size mix per region.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from lymphcad.tcia.archives import Source, read_centroids

#: percentile of the marked SADs that sets the positive threshold
POSITIVE_PERCENTILE: Final = 2.5
#: width (mm) of the ignore band below the positive threshold (reader variation of a short axis)
IGNORE_BAND_MM: Final = 2.0
#: largest short axis the node model draws (the issue's 5–35 mm range; 1 % of the marks are larger)
SAD_CAP_MM: Final = 35.0
#: smallest short axis the node model draws
SAD_MIN_MM: Final = 5.0
#: quantile levels stored for the size distribution
QUANTILE_LEVELS: Final = tuple(float(q) for q in np.linspace(0.0, 1.0, 21))
REGIONS: Final = ("mediastinal", "abdominal")


class TruthClass(enum.Enum):
    """What a node of a given size is for training and evaluation."""

    POSITIVE = "positive"
    IGNORE = "ignore"
    NEGATIVE = "negative"


@dataclass(frozen=True)
class TruthRule:
    """Positive from ``positive_min_mm``; ignored in [``ignore_min_mm``, ``positive_min_mm``); negative below."""

    region: str
    positive_min_mm: float
    ignore_min_mm: float

    def classify(self, sad_mm: float) -> TruthClass:
        """The class of a node whose measured short axis is ``sad_mm``."""
        if sad_mm >= self.positive_min_mm:
            return TruthClass.POSITIVE
        if sad_mm >= self.ignore_min_mm:
            return TruthClass.IGNORE
        return TruthClass.NEGATIVE


@dataclass(frozen=True)
class SizeDistribution:
    """Short axes of marked (positive) nodes of one region as quantiles; sampled by inverse CDF."""

    region: str
    levels: tuple[float, ...]
    sad_mm: tuple[float, ...]

    def sample(self, rng: np.random.Generator, *, lo: float = SAD_MIN_MM, hi: float = SAD_CAP_MM) -> float:
        """One short axis (mm) from the distribution, restricted to [lo, hi] (by rejection, then clipped)."""
        for _ in range(64):
            v = float(np.interp(rng.random(), self.levels, self.sad_mm))
            if lo <= v <= hi:
                return v
        return float(np.clip(np.interp(rng.random(), self.levels, self.sad_mm), lo, hi))


def derive_rule(region: str, marked_sad_mm: Sequence[float] | NDArray[np.float64]) -> TruthRule:
    """The rule of one region from its marked short axes (zeros = unknown size, left out)."""
    s = np.asarray(marked_sad_mm, dtype=np.float64)
    s = s[s > 0]
    if s.size == 0:
        raise ValueError(f"no marked sizes for region {region}")
    pos = math.floor(float(np.percentile(s, POSITIVE_PERCENTILE)) * 2.0) / 2.0
    return TruthRule(region, pos, pos - IGNORE_BAND_MM)


def derive_sizes(region: str, marked_sad_mm: Sequence[float] | NDArray[np.float64]) -> SizeDistribution:
    """The size distribution of one region: quantiles of the marked short axes at :data:`QUANTILE_LEVELS`."""
    s = np.asarray(marked_sad_mm, dtype=np.float64)
    s = s[s > 0]
    q = np.quantile(s, QUANTILE_LEVELS)
    return SizeDistribution(region, QUANTILE_LEVELS, tuple(round(float(v), 2) for v in q))


#: the rules derived from the released marks (TCIA CT Lymph Nodes, 388 MED + 595 ABD nodes; see module doc)
RULES: Final = {
    "mediastinal": TruthRule("mediastinal", 10.0, 8.0),
    "abdominal": TruthRule("abdominal", 7.5, 5.5),
}
#: marked short-axis quantiles (mm) at QUANTILE_LEVELS (0, 5, …, 100 %), from the same files
SIZES: Final = {
    "mediastinal": SizeDistribution(
        "mediastinal",
        QUANTILE_LEVELS,
        (
            10.0,
            10.7,
            11.0,
            11.4,
            11.6,
            11.95,
            12.38,
            12.91,
            13.4,
            13.8,
            14.3,
            14.8,
            15.4,
            15.8,
            16.24,
            17.5,
            18.4,
            20.21,
            22.7,
            25.6,
            46.8,
        ),
    ),
    "abdominal": SizeDistribution(
        "abdominal",
        QUANTILE_LEVELS,
        (
            6.06,
            8.4,
            9.07,
            9.52,
            9.9,
            10.32,
            10.77,
            11.16,
            11.62,
            12.04,
            12.61,
            13.22,
            13.85,
            14.76,
            15.66,
            16.61,
            17.96,
            19.53,
            21.68,
            26.15,
            55.55,
        ),
    ),
}


def rule_for(region: str) -> TruthRule:
    """The ground-truth rule of a region (``mediastinal`` or ``abdominal``)."""
    try:
        return RULES[region]
    except KeyError:
        raise ValueError(f"unknown region {region!r} (mediastinal or abdominal)") from None


def ignore_radius_mm(sad_mm: float, lad_mm: float) -> float:
    """Radius of an ignore.csv point for a node: half its long axis + 2 mm (as the phantom's ignore rows)."""
    return round(max(sad_mm, lad_mm) / 2.0 + 2.0, 3)


def read_marked_sizes(annotations: str | Path) -> dict[str, dict[str, list[float]]]:
    """Short and long axes (mm) of every node marked in the collection's annotation files (folder or zip
    MED_ABD_LYMPH_ANNOTATIONS), per region; the long axis is only in the abdominal files."""
    out: dict[str, dict[str, list[float]]] = {r: {"sad": [], "lad": []} for r in REGIONS}
    with Source.open(annotations) as src:
        for pid, pc in read_centroids(src).items():
            reg = "mediastinal" if pid.upper().startswith("MED") else "abdominal"
            for row in pc.sizes or []:
                out[reg]["sad"].append(float(row[0]))
                if len(row) > 1:
                    out[reg]["lad"].append(float(row[1]))
    return out
