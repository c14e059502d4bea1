"""Published lymph-node detection results on the real TCIA CT Lymph Nodes data, as reference points.

Source: ``shared/docs/literature.md`` (results table), entries marked verified (V) only. These are
**published numbers on real CT Lymph Nodes data**, never results of this package; plots and tables label
them so. Ground truth there = the 388 mediastinal / 595 abdominal radiologist centroids (NIH protocol),
except nnDetection, which uses the sparse instance masks (box AP). Results on re-annotated or private data
(Klinder, Iuga, Bouget, LN-DETR, ...) are left out: they are not comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

#: Label to show beside every published point.
PUBLISHED_LABEL: Final = "published, real CT Lymph Nodes data"
SOURCE_DOC: Final = "shared/docs/literature.md"


@dataclass(frozen=True)
class OperatingPoint:
    """A published sensitivity at an FP-per-volume rate (region: mediastinal, abdominal or pooled)."""

    method: str
    reference: str
    region: str
    fp_per_volume: float
    sensitivity: float
    protocol: str


@dataclass(frozen=True)
class PublishedAP:
    """A published box AP (nnDetection, IoU ≥ 0.1)."""

    method: str
    reference: str
    region: str
    iou: float
    ap: float
    protocol: str


_NIH_CV = "NIH centroids, candidate-based, cross-validation"

OPERATING_POINTS: Final = (
    OperatingPoint("Seff 2014", "Seff et al., MICCAI 2014", "mediastinal", 6.0, 0.780, _NIH_CV + " (6-fold)"),
    OperatingPoint("Seff 2014", "Seff et al., MICCAI 2014", "abdominal", 6.0, 0.731, _NIH_CV + " (6-fold)"),
    OperatingPoint(
        "Seff 2014", "Seff et al., MICCAI 2014", "mediastinal", 10.0, 0.861, _NIH_CV + " (6-fold)"
    ),
    OperatingPoint("Seff 2014", "Seff et al., MICCAI 2014", "abdominal", 10.0, 0.872, _NIH_CV + " (6-fold)"),
    OperatingPoint("Roth 2014", "Roth et al., MICCAI 2014", "mediastinal", 3.0, 0.70, _NIH_CV),
    OperatingPoint("Roth 2014", "Roth et al., MICCAI 2014", "abdominal", 3.0, 0.83, _NIH_CV),
    OperatingPoint("Roth 2014", "Roth et al., MICCAI 2014", "mediastinal", 6.0, 0.84, _NIH_CV),
    OperatingPoint("Roth 2014", "Roth et al., MICCAI 2014", "abdominal", 6.0, 0.90, _NIH_CV),
    OperatingPoint(
        "Roth 2016", "Roth et al., IEEE TMI 2016", "pooled", 3.0, 0.77, _NIH_CV + " (176 patients)"
    ),
    OperatingPoint("Seff 2015", "Seff et al., MICCAI 2015", "pooled", 3.0, 0.78, _NIH_CV + " (about 78 %)"),
    OperatingPoint("Shin 2016", "Shin et al., IEEE TMI 2016", "mediastinal", 3.0, 0.85, _NIH_CV),
    OperatingPoint(
        "Singh 2020",
        "Singh et al., ICPRAM 2020",
        "mediastinal",
        2.88,
        0.84,
        "NIH centroids, U-Net candidates",
    ),
)

PUBLISHED_AP: Final = (
    PublishedAP(
        "nnDetection (5-fold CV)",
        "Baumgartner et al., MICCAI 2021",
        "mediastinal",
        0.1,
        0.440,
        "TCIA masks, 70/30 split",
    ),
    PublishedAP(
        "nnDetection (5-fold CV)",
        "Baumgartner et al., MICCAI 2021",
        "abdominal",
        0.1,
        0.493,
        "TCIA masks, 70/30 split",
    ),
    PublishedAP(
        "nnDetection (hold-out)",
        "Baumgartner et al., MICCAI 2021",
        "mediastinal",
        0.1,
        0.500,
        "TCIA masks, 70/30 split",
    ),
    PublishedAP(
        "nnDetection (hold-out)",
        "Baumgartner et al., MICCAI 2021",
        "abdominal",
        0.1,
        0.470,
        "TCIA masks, 70/30 split",
    ),
)
