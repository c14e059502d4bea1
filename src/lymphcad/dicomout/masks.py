"""Per-detection masks from a label volume (``detect --masks DIR`` writes ``<case>.nii.gz``: label n = the
case's n-th detection by probability), cropped to each label's box for the SEG writer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.errors import InputError
from lymphcad.geometry import Geometry
from lymphcad.io.detections import Detection
from lymphcad.io.nifti import read_nifti_array


@dataclass(frozen=True)
class CroppedMask:
    """One detection's mask on the box of the CT grid that holds it."""

    mask_zyx: NDArray[np.bool_]
    geometry: Geometry


def masks_from_labels(
    labels: NDArray[np.integer], geometry: Geometry, n_detections: int
) -> list[CroppedMask | None]:
    """Mask n (0-based) = voxels labelled n + 1, cropped to their box; None where a label is absent."""
    boxes = ndimage.find_objects(np.asarray(labels, dtype=np.int64), max_label=n_detections)
    out: list[CroppedMask | None] = []
    for n, box in enumerate(boxes):
        if box is None:
            out.append(None)
            continue
        start = tuple(int(s.start) for s in box)
        shape = tuple(int(s.stop - s.start) for s in box)
        out.append(
            CroppedMask(
                np.asarray(labels[box] == n + 1, dtype=bool),
                geometry.crop((start[0], start[1], start[2]), (shape[0], shape[1], shape[2])),
            )
        )
    return out


def masks_for_detections(path: Path, detections: Sequence[Detection]) -> list[CroppedMask | None]:
    """The masks of one case's detections from its label volume, parallel to ``detections``.

    Labels number the detections by descending probability (ties by centre), as the detections CSV
    orders them.
    """
    try:
        labels, geometry = read_nifti_array(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the label volume ({exc})", path) from None
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"the label volume is {labels.dtype}, not integer labels", path)
    order = sorted(
        range(len(detections)), key=lambda i: (-detections[i].probability, detections[i].center_xyz)
    )
    by_rank = masks_from_labels(labels, geometry, len(detections))
    out: list[CroppedMask | None] = [None] * len(detections)
    for rank, i in enumerate(order):
        out[i] = by_rank[rank]
    return out
