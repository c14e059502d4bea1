"""Build, check and write the DICOM results of one detection run (SR always, SEG when asked and non-empty).

Everything is built and read back in memory first (:func:`check_results`: the same points to 0.5 mm, the
same probabilities, the same segment pixels); only then is anything written or stored, so a failure never
leaves half a result behind.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from lymphcad import atomic
from lymphcad.dicomout.findings import AlgorithmInfo, Finding, VoxelMask, findings_from_detections
from lymphcad.dicomout.seg import build_seg, label_map, read_seg_segments
from lymphcad.dicomout.source import DEFAULT_CHARSET, SourceSeries, no_phi_warnings
from lymphcad.dicomout.sr import PROBABILITY, build_sr
from lymphcad.errors import InputError, LymphcadError
from lymphcad.io.detections import Detection

# highdicom logs every module it copies at INFO level (and could quote header values): keep it quiet
# whatever the root logger does, so that nothing from the source headers reaches the console
logging.getLogger("highdicom").setLevel(logging.WARNING)

#: Largest distance (mm) allowed between a detection and its point read back from the SR.
POINT_TOLERANCE_MM = 0.5


class DicomResultError(LymphcadError):
    """A DICOM result that failed its own read-back check (a bug, reported before anything is written)."""


@dataclass(frozen=True)
class DicomResults:
    """The DICOM objects of one run: the SR (always) and the SEG (None when not asked or no finding)."""

    findings: tuple[Finding, ...]
    sr: Dataset
    seg: Dataset | None


def _roundtrip(ds: Dataset) -> Dataset:
    """Encode and decode ``ds`` (as a PACS would receive it)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return pydicom.dcmread(buf)


def _charset(ds: Dataset) -> None:
    if not str(ds.get("SpecificCharacterSet") or "").strip():
        ds.SpecificCharacterSet = DEFAULT_CHARSET


def _code(item: Dataset) -> tuple[str, str]:
    c = item.ConceptNameCodeSequence[0]
    return str(c.CodingSchemeDesignator), str(c.CodeValue)


def sr_groups(sr: Dataset) -> dict[str, tuple[tuple[float, float, float] | None, float | None]]:
    """Tracking UID → (SCOORD3D point, probability) of every measurement group, read from the raw content
    tree with pydicom (quick, and independent of the highdicom code that wrote it)."""
    out: dict[str, tuple[tuple[float, float, float] | None, float | None]] = {}

    def walk(items: Iterable[Dataset]) -> None:
        for item in items:
            if item.ValueType == "CONTAINER" and _code(item) == ("DCM", "125007"):
                uid, point, prob = None, None, None
                for child in item.ContentSequence:
                    if child.ValueType == "UIDREF" and _code(child) == ("DCM", "112040"):
                        uid = str(child.UID)
                    if child.ValueType == "NUM" and _code(child) == (
                        PROBABILITY.scheme_designator,
                        PROBABILITY.value,
                    ):
                        prob = float(child.MeasuredValueSequence[0].NumericValue)
                        for coord in getattr(child, "ContentSequence", []):
                            if coord.ValueType == "SCOORD3D":
                                xyz = [float(v) for v in coord.GraphicData]
                                point = (xyz[0], xyz[1], xyz[2])
                if uid is not None:
                    out[uid] = (point, prob)
            elif "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(sr.ContentSequence)
    return out


def check_results(source: SourceSeries, results: DicomResults) -> None:
    """Decode both objects and compare them with the findings; DicomResultError if anything differs.

    The SR is read with pydicom (:func:`sr_groups`), the SEG with highdicom; the tests read both with
    highdicom as well.
    """
    findings = {f.tracking_uid: f for f in results.findings}
    back = sr_groups(_roundtrip(results.sr))
    if set(back) != set(findings):
        raise DicomResultError("the SR does not hold exactly one measurement group per finding")
    for uid, (point, prob) in back.items():
        f = findings[uid]
        if point is None:
            raise DicomResultError(f"the SR has no SCOORD3D point for {f.tracking_id}")
        dist = float(np.linalg.norm(np.subtract(point, f.center_xyz)))
        if dist > POINT_TOLERANCE_MM:
            raise DicomResultError(f"SR point of {f.tracking_id} is {dist:.2f} mm from the detection")
        if prob is None or abs(prob - f.probability) > 1e-6:
            raise DicomResultError(f"SR probability of {f.tracking_id} differs from the detection")
    if results.seg is None:
        return
    expected = label_map(source, results.findings)
    index = {s.sop_instance_uid: n for n, s in enumerate(source.slices)}
    segments = read_seg_segments(_roundtrip(results.seg))
    if len(segments) != len(results.findings):
        raise DicomResultError("the SEG does not hold one segment per finding")
    for seg in segments:
        f = results.findings[seg.number - 1]
        if seg.tracking_uid != f.tracking_uid:
            raise DicomResultError(
                f"SEG segment {seg.number} does not carry the tracking UID of {f.tracking_id}"
            )
        want = {
            uid: expected[n] == seg.number for uid, n in index.items() if np.any(expected[n] == seg.number)
        }
        if set(want) != set(seg.pixels) or any(not np.array_equal(want[u], seg.pixels[u]) for u in want):
            raise DicomResultError(f"SEG pixels of segment {seg.number} differ from the finding's sphere")


def build_results(
    source: SourceSeries,
    detections: Iterable[Detection],
    algorithm: AlgorithmInfo,
    *,
    threshold: float = 0.0,
    with_seg: bool = True,
    masks: Sequence[VoxelMask | None] | None = None,
) -> DicomResults:
    """SR (+ SEG) of the detections with probability ≥ ``threshold``, checked by reading them back.

    ``masks``, parallel to ``detections``, give the SEG pixels of the detections that have one.
    """
    findings = findings_from_detections(
        detections, series_uid=source.series_uid, threshold=threshold, masks=masks
    )
    with no_phi_warnings():
        sr = build_sr(source, findings, algorithm)
        _charset(sr)
        seg = None
        if with_seg and findings:
            seg = build_seg(source, findings, algorithm)
            _charset(seg)
        results = DicomResults(tuple(findings), sr, seg)
        check_results(source, results)
    return results


def guard_outputs(source: SourceSeries, *paths: Path | None) -> None:
    """Refuse output paths that are one of the source files (outputs never overwrite inputs)."""
    sources = {Path(str(s.dataset.filename)).resolve() for s in source.slices if s.dataset.filename}
    for p in paths:
        if p is not None and p.resolve() in sources:
            raise InputError("output would overwrite a source DICOM file", p)


def write_results(results: DicomResults, *, sr_path: Path | None, seg_path: Path | None) -> list[Path]:
    """Write the SR and SEG atomically; returns the paths written (no SEG file for an empty result)."""
    written: list[Path] = []
    for ds, path in ((results.sr, sr_path), (results.seg, seg_path)):
        if ds is None or path is None:
            continue
        with atomic.atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        written.append(path)
    return written
