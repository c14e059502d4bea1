"""Everything :mod:`lymphcad.measure` adds to one case's detections, for ``detect`` and the benchmarks.

:func:`finish_case` takes a case's raw detections and its CT and returns them with a calibrated probability,
RECIST size, volume, location and voxel index; the per-detection masks are merged into one label volume
(label n = the case's n-th detection by probability, i.e. finding ``d<n>`` of formats.md §6; a voxel claimed
by two detections goes to the more probable one). :func:`provenance` says how each value was made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lymphcad.geometry import CTVolume, Geometry
from lymphcad.io.detections import Detection
from lymphcad.io.nifti import write_nifti
from lymphcad.measure.calibration import Calibration, calibration_beside, find_calibration
from lymphcad.measure.landmarks import Landmarks, find_landmarks
from lymphcad.measure.recist import measure_mask
from lymphcad.measure.segment import (
    DetectionMask,
    MaskSource,
    NetworkMask,
    SegmentSettings,
    segment_detection,
)
from lymphcad.measure.stations import locate


@dataclass(frozen=True)
class MeasureOptions:
    """What to add to detections.

    Attributes:
        measure: segment each detection and measure it (RECIST, volume).
        locate: find landmarks and name each detection's region and station.
        masks_dir: write ``<case>.nii.gz`` label volumes there (None = no masks on disk).
        calibration: the score map (None = raw scores).
        calibration_path: where the calibration came from (for the provenance).
        segment: segmentation parameters.
        min_probability: drop detections whose reported (calibrated) probability is below it — the user's
            ``--threshold`` when a calibration changes the scale (None = keep all).
    """

    measure: bool = True
    locate: bool = True
    masks_dir: Path | None = None
    calibration: Calibration | None = None
    calibration_path: Path | None = None
    segment: SegmentSettings = field(default_factory=SegmentSettings)
    min_probability: float | None = None


def options_for_model(
    model_path: str | Path,
    *,
    raw_scores: bool = False,
    masks_dir: Path | None = None,
    measure: bool = True,
    threshold: float | None = None,
) -> MeasureOptions:
    """Options for ``detect``: the model's calibration unless ``raw_scores``, masks to ``masks_dir``; a
    ``threshold`` applies to the calibrated probability when there is a calibration."""
    cal = None if raw_scores else find_calibration(model_path)
    return MeasureOptions(
        min_probability=threshold if cal is not None else None,
        measure=measure,
        locate=measure,
        masks_dir=masks_dir,
        calibration=cal,
        calibration_path=None if cal is None else calibration_beside(model_path),
    )


@dataclass(frozen=True, eq=False)
class CaseResult:
    """One case's finished detections, their masks (same order; None when not measured), the landmarks
    (None when not located) and notes (why a location is unknown)."""

    detections: list[Detection]
    masks: list[DetectionMask | None]
    landmarks: Landmarks | None = None
    notes: tuple[str, ...] = ()


def voxel_index(geometry: Geometry, xyz: tuple[float, float, float]) -> tuple[int, int, int] | None:
    """The nearest voxel (i, j, k) of a world point, None when it lies outside the image."""
    zyx = geometry.world_to_voxel_zyx(np.asarray(xyz, dtype=np.float64))
    if np.any(zyx < 0) or np.any(zyx >= np.asarray(geometry.shape_zyx)):
        return None
    return (int(zyx[2]), int(zyx[1]), int(zyx[0]))


def finish_case(
    volume: CTVolume,
    detections: Sequence[Detection],
    options: MeasureOptions,
    *,
    network: NetworkMask | None = None,
) -> CaseResult:
    """Calibrate, measure and locate one case's detections; write its label volume when asked."""
    order = sorted(range(len(detections)), key=lambda i: -detections[i].probability)
    dets = [detections[i] for i in order]
    out: list[Detection] = []
    masks: list[DetectionMask | None] = []
    landmarks = find_landmarks(volume) if options.locate and dets else None
    notes: list[str] = []
    for det in dets:
        prob = det.probability
        if options.calibration is not None:
            prob = float(options.calibration.apply(prob))
        if options.min_probability is not None and prob < options.min_probability:
            continue
        changes: dict[str, Any] = {"probability": prob, "ijk": voxel_index(volume.geometry, det.center_xyz)}
        mask = None
        if options.measure:
            mask = segment_detection(
                volume, det.center_xyz, det.diameter_mm, options.segment, network=network
            )
            rec = measure_mask(mask.mask_zyx, mask.geometry)
            if rec.short_axis_mm > 0:
                changes.update(
                    short_axis_mm=round(rec.short_axis_mm, 2),
                    long_axis_mm=round(rec.long_axis_mm, 2),
                    volume_ml=round(rec.volume_ml, 3),
                )
        if landmarks is not None:
            loc = locate(landmarks, det.center_xyz)
            changes["location"] = loc.label
            if loc.reason and loc.reason not in notes:
                notes.append(loc.reason)
        masks.append(mask)
        out.append(dataclasses.replace(det, **changes))
    if options.masks_dir is not None and out:
        write_label_volume(options.masks_dir / f"{out[0].case_id}.nii.gz", volume.geometry, masks)
    return CaseResult(out, masks, landmarks, tuple(notes))


def label_volume(geometry: Geometry, masks: Sequence[DetectionMask | None]) -> NDArray[np.uint16]:
    """uint16 label volume: label n+1 = ``masks[n]``; earlier (more probable) masks win overlaps."""
    labels = np.zeros(geometry.shape_zyx, dtype=np.uint16)
    for n in range(len(masks) - 1, -1, -1):
        m = masks[n]
        if m is None:
            continue
        sl = tuple(slice(a, a + s) for a, s in zip(m.start_zyx, m.mask_zyx.shape, strict=True))
        labels[sl][m.mask_zyx] = n + 1
    return labels


def write_label_volume(path: Path, geometry: Geometry, masks: Sequence[DetectionMask | None]) -> Path:
    """Write the label volume of a case's masks as NIfTI (atomically, the input image's grid)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(path, label_volume(geometry, masks), geometry)
    return path


def provenance(options: MeasureOptions) -> dict[str, Any]:
    """How each added value was made (for ``dets.csv.json``)."""
    cal = options.calibration
    return {
        "probability": (
            "raw detector score (--raw-scores or no calibration.json beside the model)"
            if cal is None
            else f"calibrated: {cal.method} map fitted on {cal.n_detections} detections ({cal.n_hits} node hits) "
            f"of {cal.source or 'a validation fold'}; file {options.calibration_path}"
        ),
        "short_axis_mm,long_axis_mm": (
            "not measured"
            if not options.measure
            else "RECIST 1.1 from the detection's mask on the original grid: longest diameter in the world axial "
            "slice where it is largest, width perpendicular to it in that slice (lymphcad.measure.recist)"
        ),
        "volume_ml": "not measured" if not options.measure else "mask voxels × voxel volume",
        "mask": (
            "not made"
            if not options.measure
            else "per-detection 3D segmentation of a crop (lymphcad.measure.segment): "
            f"{MaskSource.REGION_GROWING.value} in soft-tissue HU bounded by the detection's diameter, "
            f"{MaskSource.NETWORK.value} when a network mask is given, {MaskSource.SPHERE.value} of the "
            "detection's diameter when nothing node-like lies at the point"
        ),
        "segment_settings": options.segment.to_json(),
        "masks_dir": None if options.masks_dir is None else str(options.masks_dir),
        "location": (
            "not located"
            if not options.locate
            else "region and IASLC 2009 station / abdominal group by rules on landmarks found in the CT by image "
            "analysis (airway from air, aorta from the enhanced lumen, spine, diaphragm domes; "
            "lymphcad.measure.landmarks and .stations); 'unknown' where a landmark is missing (see notes)"
        ),
        "i,j,k": "nearest voxel of the point in the input image (formats.md §1 order)",
    }


def finding_text(det: Detection, rank: int | None = None) -> str:
    """One line as a radiologist reads a finding: ``d1 p=0.91 · 14.2 × 21.8 mm · 2.35 ml · mediastinal:4R``."""
    parts = [f"p={det.probability:.2f}"]
    if det.short_axis_mm is not None and det.long_axis_mm is not None:
        parts.append(f"{det.short_axis_mm:.1f} × {det.long_axis_mm:.1f} mm")
    elif det.diameter_mm is not None:
        parts.append(f"⌀ {det.diameter_mm:.1f} mm (detector)")
    if det.volume_ml is not None:
        parts.append(f"{det.volume_ml:.2f} ml")
    if det.location:
        parts.append(det.location)
    head = "" if rank is None else f"d{rank} "
    return head + " · ".join(parts)
