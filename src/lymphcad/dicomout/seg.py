"""Detections as a binary DICOM SEG on the source series' frames, one segment per finding.

One segment per finding (not one "Lymph node" segment): each segment carries the finding's tracking
identifier and UID, the same as its SR measurement group, so a viewer links an SR finding to its own
voxels and can show, hide or colour each node separately. The pixels are the detection's mask when it
has one (sampled, nearest voxel, at each source pixel centre), else a sphere of the detector's diameter
around the centre (``DEFAULT_DIAMETER_MM`` when a detection has none), drawn on each source slice's own
pixel grid, so the SEG frames match the source instances exactly. Where spheres overlap a
voxel goes to the more probable finding (the label-map input of highdicom); every segment keeps at least
its centre pixel. Frames without any segment are omitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from lymphcad.dicomout.findings import AlgorithmInfo, Finding, VoxelMask
from lymphcad.dicomout.source import SourceSeries
from lymphcad.dicomout.sr import LYMPH_NODE

#: Sphere diameter used when a detection carries no diameter.
DEFAULT_DIAMETER_MM = 10.0
SEG_SERIES_NUMBER = 9902
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")


@dataclass(frozen=True)
class SegSegment:
    """A segment as read back from a SEG (for checks): identity and its pixels per source instance."""

    number: int
    label: str
    tracking_id: str
    tracking_uid: str
    pixels: dict[str, NDArray[np.bool_]]  # source SOPInstanceUID → (rows, cols) mask; only non-empty frames


def _radius(finding: Finding) -> float:
    return (finding.diameter_mm or DEFAULT_DIAMETER_MM) / 2.0


def _paint_mask(out: NDArray[np.uint16], source: SourceSeries, mask: VoxelMask, label: int) -> None:
    """Paint ``label`` where the source pixel centres fall in ``mask`` (nearest voxel)."""
    geom = mask.geometry
    idx = np.argwhere(mask.mask_zyx)
    if idx.size == 0:
        return
    corners = geom.zyx_to_world(_box_corners(idx.min(0) - 0.5, idx.max(0) + 0.5))
    _, rows, cols = out.shape
    for s, sl in enumerate(source.slices):
        ijk = sl.plane.world_to_index(corners)
        thick = 0.5 * max(geom.spacing_zyx)  # pixels farther than this from every voxel cannot hit one
        if (
            ijk[:, 2].min() * sl.plane.spacing_zyx[0] > thick
            or ijk[:, 2].max() * sl.plane.spacing_zyx[0] < -thick
        ):
            continue
        i0, i1 = max(0, int(np.floor(ijk[:, 0].min()))), min(cols - 1, int(np.ceil(ijk[:, 0].max())))
        j0, j1 = max(0, int(np.floor(ijk[:, 1].min()))), min(rows - 1, int(np.ceil(ijk[:, 1].max())))
        if i0 > i1 or j0 > j1:
            continue
        jj, ii = np.mgrid[j0 : j1 + 1, i0 : i1 + 1]
        pts = np.stack([ii.ravel(), jj.ravel(), np.zeros(ii.size)], axis=1)
        vox = geom.world_to_voxel_zyx(sl.plane.index_to_world(pts))
        ok = np.all((vox >= 0) & (vox < np.asarray(geom.shape_zyx)), axis=1)
        hit = np.zeros(ok.shape, dtype=bool)
        hit[ok] = mask.mask_zyx[vox[ok, 0], vox[ok, 1], vox[ok, 2]]
        out[s, j0 : j1 + 1, i0 : i1 + 1][hit.reshape(ii.shape)] = label


def _box_corners(lo: NDArray[np.float64], hi: NDArray[np.float64]) -> NDArray[np.float64]:
    """The 8 corners (z, y, x) of a box."""
    return np.array([[z, y, x] for z in (lo[0], hi[0]) for y in (lo[1], hi[1]) for x in (lo[2], hi[2])])


def label_map(source: SourceSeries, findings: Sequence[Finding]) -> NDArray[np.uint16]:
    """(slices, rows, cols) array: 0 background, n = finding n (1-based), on the source slices' grids."""
    first = source.slices[0].plane
    _, rows, cols = first.shape_zyx
    out = np.zeros((len(source.slices), rows, cols), dtype=np.uint16)
    # paint the least probable first so that the most probable wins where spheres overlap
    order = sorted(range(len(findings)), key=lambda n: findings[n].probability)
    for n in order:
        finding = findings[n]
        if finding.mask is not None:
            _paint_mask(out, source, finding.mask, n + 1)
            continue
        r = _radius(finding)
        for s, sl in enumerate(source.slices):
            plane = sl.plane
            col, row, k = plane.world_to_index(np.asarray(finding.center_xyz))
            dz = float(k) * plane.spacing_zyx[0]
            if abs(dz) >= r:
                continue
            rr = np.sqrt(r * r - dz * dz)
            row_sp, col_sp = plane.spacing_zyx[1], plane.spacing_zyx[2]
            j0, j1 = max(0, int(np.floor(row - rr / row_sp))), min(rows - 1, int(np.ceil(row + rr / row_sp)))
            i0, i1 = max(0, int(np.floor(col - rr / col_sp))), min(cols - 1, int(np.ceil(col + rr / col_sp)))
            if j0 > j1 or i0 > i1:
                continue
            jj, ii = np.mgrid[j0 : j1 + 1, i0 : i1 + 1]
            inside = ((jj - row) * row_sp) ** 2 + ((ii - col) * col_sp) ** 2 <= rr * rr
            out[s, j0 : j1 + 1, i0 : i1 + 1][inside] = n + 1
    for n, finding in enumerate(findings):  # every segment keeps its centre pixel
        s, colrow, _ = source.nearest_slice(finding.center_xyz)
        i, j = (
            int(np.clip(np.floor(v + 0.5), 0, lim - 1)) for v, lim in zip(colrow, (cols, rows), strict=True)
        )
        out[s, j, i] = n + 1
    return out


def build_seg(
    source: SourceSeries,
    findings: Sequence[Finding],
    algorithm: AlgorithmInfo,
    *,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.seg.Segmentation:
    """The binary SEG of ``findings`` (at least one) on the frames of ``source``."""
    if not findings:
        raise ValueError("a SEG needs at least one finding (an empty result is written as an SR only)")
    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.cid7162.ArtificialIntelligence,
        version=algorithm.version,
        parameters=algorithm.parameters,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=f.tracking_id,
            segmented_property_category=ANATOMICAL_STRUCTURE,
            segmented_property_type=LYMPH_NODE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
            tracking_uid=f.tracking_uid,
            tracking_id=f.tracking_id,
        )
        for n, f in enumerate(findings, start=1)
    ]
    return hd.seg.Segmentation(
        source_images=source.datasets,
        pixel_array=label_map(source, findings),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid or hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer="lymphcad",
        manufacturer_model_name=algorithm.model_name[:64],
        software_versions=algorithm.version,
        device_serial_number="0",
        content_description="lymph node detections (unverified)",
        content_label="LYMPHNODES",
        series_description="lymphcad lymph node segments (unverified)",
    )


def read_seg_segments(seg: Dataset) -> list[SegSegment]:
    """The segments of a SEG and their pixels per source instance, read with highdicom.

    The frames are read once as a label map (segments of a SEG written here never overlap) and only for
    the source instances that have a frame.
    """
    doc = hd.seg.Segmentation.from_dataset(seg)
    with_frames = list(
        dict.fromkeys(
            str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
            for item in seg.PerFrameFunctionalGroupsSequence
        )
    )
    numbers = [int(n) for n in doc.segment_numbers]
    labels = (
        doc.get_pixels_by_source_instance(
            source_sop_instance_uids=with_frames, segment_numbers=numbers, combine_segments=True
        )
        if with_frames
        else np.zeros((0, 1, 1), dtype=np.uint16)
    )
    out: list[SegSegment] = []
    for number in numbers:
        desc = doc.get_segment_description(number)
        pixels: dict[str, NDArray[np.bool_]] = {}
        for uid, frame in zip(with_frames, labels, strict=True):
            hit = frame == number
            if hit.any():
                pixels[uid] = hit
        out.append(
            SegSegment(
                number=number,
                label=str(desc.segment_label),
                tracking_id=str(desc.tracking_id),
                tracking_uid=str(desc.tracking_uid),
                pixels=pixels,
            )
        )
    return out
