"""Hand-computed evaluation cohorts shared by tests/evaluate and tests/cli (expected numbers are worked
out in the comments of the tests that use them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lymphcad.cohort import Annotation, CohortWriter, DatasetInfo, IgnorePoint
from lymphcad.geometry import CTVolume, Geometry
from lymphcad.io.detections import Detection, DetectionTable

# a non-identity grid: anisotropic spacing and a flipped x axis
GEOM = Geometry((12, 24, 32), (2.0, 0.8, 0.7), (10.0, -20.0, 30.0), np.diag([-1.0, 1.0, 1.0]))


def world(zyx: Sequence[float]) -> tuple[float, float, float]:
    """World LPS point of an array position of GEOM."""
    p = GEOM.zyx_to_world(np.asarray(zyx, dtype=float))
    return (float(p[0]), float(p[1]), float(p[2]))


def dets(rows: Sequence[tuple[str, tuple[float, float, float], float, float | None]]) -> DetectionTable:
    return DetectionTable.from_detections([Detection(c, xyz, p, d) for c, xyz, p, d in rows])


# -- a mask cohort on disk (CohortWriter) -----------------------------------------------------------------
def write_mask_cohort(root: Path, *, eval_region: bool = False, ignore: bool = False) -> None:
    """Case M (mediastinal): node 1 = a rod of voxels z=5, y=10..11, x=5..25, centre voxel (5, 10, 15),
    short axis 4 (auto R 5). Case N (abdominal): node 1 without a mask instance (radius fallback), short 12."""
    w = CohortWriter(root)
    rod = np.zeros(GEOM.shape_zyx, np.uint16)
    rod[5, 10:12, 5:26] = 1
    anns = [
        Annotation("M", 1, world((5, 10, 15)), 4.0, 14.0, "mediastinal", 1),
        Annotation("N", 1, world((6, 12, 16)), 12.0, None, "abdominal", None),
    ]
    for case in ("M", "N"):
        w.write_image(case, CTVolume(np.zeros(GEOM.shape_zyx, np.int16), GEOM))
    w.write_label("M", rod, GEOM)
    w.write_label("N", np.zeros(GEOM.shape_zyx, np.uint16), GEOM)
    if eval_region:
        region = np.ones(GEOM.shape_zyx, np.uint8)
        region[:, :, 28:] = 0  # D (below) lies at x index 30
        w.write_eval_region("N", region, GEOM)
    info = DatasetInfo(
        "hand",
        "hand-computed",
        ["M", "N"],
        {"M": "mediastinal", "N": "abdominal"},
        "CC0",
        ["Cite: test"],
        "test",
    )
    w.finish(info, anns, [IgnorePoint("N", world((6, 12, 30)), 3.0)] if ignore else None)


MASK_DETS = [
    ("M", world((5, 10, 24)), 0.9, 10.0),  # A: inside the rod, 6.3 mm from the centre (mask only)
    ("M", world((7, 10, 15)), 0.8, 10.0),  # B: 4 mm from the centre, outside the rod (radius only)
    ("N", world((6, 12, 18)), 0.7, 10.0),  # C: 1.4 mm from N's node (radius fallback)
    ("N", world((6, 12, 30)), 0.85, 10.0),  # D: far from everything
]
