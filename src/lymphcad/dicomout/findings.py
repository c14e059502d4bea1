"""What a DICOM result says about each detection (a finding) and about the algorithm that made it.

Both the SR and the SEG are built from the same :class:`Finding` list, so a finding's tracking
identifier and UID are the same in both and a viewer can link an SR measurement group to its segment.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from lymphcad import __version__
from lymphcad.errors import UsageError
from lymphcad.geometry import Geometry
from lymphcad.io.detections import Detection

#: Root for UIDs derived from content (UUID-derived "2.25." form, PS3.5 B.2).
_UUID_ROOT = "2.25."


@dataclass(frozen=True)
class AlgorithmInfo:
    """The algorithm identification of a result (DICOM TID 4019 / SEG AlgorithmIdentificationSequence)."""

    model_name: str
    model_sha256: str
    name: str = "lymphcad"
    version: str = __version__

    @property
    def parameters(self) -> dict[str, str]:
        """Model name and weights hash, recorded as algorithm parameters."""
        return {"model": self.model_name, "model_sha256": self.model_sha256}


class VoxelMask(Protocol):
    """A detection's mask on (a crop of) the CT grid: what the detector's measurement step produces."""

    @property
    def mask_zyx(self) -> NDArray[np.bool_]: ...

    @property
    def geometry(self) -> Geometry: ...


@dataclass(frozen=True)
class Finding:
    """One detection as it goes into DICOM: tracking identity, centre (world LPS mm) and measurements."""

    tracking_id: str
    tracking_uid: str
    center_xyz: tuple[float, float, float]
    probability: float
    diameter_mm: float | None = None
    short_axis_mm: float | None = None
    long_axis_mm: float | None = None
    volume_ml: float | None = None
    mask: VoxelMask | None = field(default=None, repr=False, compare=False)


def _optional_mm(det: Detection, name: str) -> float | None:
    """An optional size/volume column (formats.md 1.2) when the detection carries it and it is positive."""
    value = getattr(det, name, None)
    if value is None:
        return None
    v = float(value)
    return v if math.isfinite(v) and v > 0 else None


def tracking_uid(series_uid: str, center_xyz: Sequence[float], probability: float) -> str:
    """A UID that is the same each time the same detection is exported from the same series."""
    key = f"{series_uid}|{center_xyz[0]:.3f}|{center_xyz[1]:.3f}|{center_xyz[2]:.3f}|{probability:.6f}"
    digest = hashlib.sha256(key.encode()).digest()[:16]
    return _UUID_ROOT + str(int.from_bytes(digest, "big"))


def findings_from_detections(
    detections: Iterable[Detection],
    *,
    series_uid: str,
    threshold: float = 0.0,
    masks: Sequence[VoxelMask | None] | None = None,
) -> list[Finding]:
    """Detections with probability ≥ ``threshold``, most probable first, numbered "lymph node 1", "2", …

    ``masks`` (parallel to ``detections``, None where a detection has none) become the SEG's pixels.
    """
    if not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--sr-threshold must lie in [0, 1], got {threshold}")
    dets = list(detections)
    if masks is not None and len(masks) != len(dets):
        raise ValueError(f"{len(masks)} masks for {len(dets)} detections")
    paired = [(d, None if masks is None else masks[n]) for n, d in enumerate(dets)]
    kept = sorted(
        (dm for dm in paired if dm[0].probability >= threshold),
        key=lambda dm: (-dm[0].probability, dm[0].center_xyz),
    )
    return [
        Finding(
            tracking_id=f"lymph node {n}",
            tracking_uid=tracking_uid(series_uid, d.center_xyz, d.probability),
            center_xyz=(float(d.center_xyz[0]), float(d.center_xyz[1]), float(d.center_xyz[2])),
            probability=float(d.probability),
            diameter_mm=None if d.diameter_mm is None else float(d.diameter_mm),
            short_axis_mm=_optional_mm(d, "short_axis_mm"),
            long_axis_mm=_optional_mm(d, "long_axis_mm"),
            volume_ml=_optional_mm(d, "volume_ml"),
            mask=m,
        )
        for n, (d, m) in enumerate(kept, start=1)
    ]
