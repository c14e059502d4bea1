"""The source CT series of a DICOM result: its headers (no pixels), their planes and frame of reference.

SR and SEG objects reference the exact instances a detection was made on, so they are built from the
source files' own headers (read with pydicom, pixel data skipped), not from the resampled volume.
Each slice's plane is a one-voxel-thick :class:`~lymphcad.geometry.Geometry` (i = column, j = row,
k = along the normal), so every coordinate conversion goes through :mod:`lymphcad.geometry`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from lymphcad.errors import InputError
from lymphcad.geometry import Geometry, direction_from_dicom, positions_along_normal
from lymphcad.io.dicom import CT_IMAGE_STORAGE, list_series

#: Character set written when the source has none (or an empty one): highdicom copies the patient and
#: study modules from the source and fails on an empty SpecificCharacterSet.
DEFAULT_CHARSET = "ISO_IR 100"


@contextlib.contextmanager
def no_phi_warnings() -> Iterator[None]:
    """Silence library warnings that quote header values (highdicom's person-name check prints the
    patient's name): no PHI is ever printed or logged."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*person name.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="highdicom")
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
        yield


@dataclass(frozen=True)
class SourceSlice:
    """One source instance: its header (no pixels) and its plane in world LPS mm."""

    dataset: Dataset = field(repr=False)
    sop_instance_uid: str
    plane: Geometry  # shape (1, rows, cols); index (i, j, k) = (column, row, distance along normal)


@dataclass(frozen=True)
class SourceSeries:
    """The headers of one single-frame CT series, sorted along the slice normal."""

    folder: Path
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    slices: tuple[SourceSlice, ...]

    @property
    def datasets(self) -> list[Dataset]:
        """The headers in slice order (what highdicom takes as evidence / source images)."""
        return [s.dataset for s in self.slices]

    def nearest_slice(self, xyz: Sequence[float]) -> tuple[int, NDArray[np.float64], float]:
        """(slice index, (column, row) pixel position, distance to the plane in mm) for a world point."""
        best: tuple[int, NDArray[np.float64], float] | None = None
        for n, s in enumerate(self.slices):
            ijk = s.plane.world_to_index(np.asarray(xyz, dtype=np.float64))
            dist = abs(float(ijk[2]) * s.plane.spacing_zyx[0])
            if best is None or dist < best[2]:
                best = (n, np.asarray(ijk[:2], dtype=np.float64), dist)
        assert best is not None  # a SourceSeries always has slices
        return best


def _floats(ds: Dataset, keyword: str, n: int, path: Path) -> NDArray[np.float64]:
    value = ds.get(keyword)
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{keyword} is missing or not numeric", path) from None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise InputError(f"{keyword} must have {n} finite values", path)
    return arr


def slice_plane(ds: Dataset, path: Path) -> Geometry:
    """The plane of one CT slice as a one-voxel-thick Geometry (thickness = SliceThickness or 1 mm)."""
    iop = _floats(ds, "ImageOrientationPatient", 6, path)
    ipp = _floats(ds, "ImagePositionPatient", 3, path)
    row_sp, col_sp = _floats(ds, "PixelSpacing", 2, path)
    try:
        direction = direction_from_dicom(iop)
    except ValueError as exc:
        raise InputError(f"bad ImageOrientationPatient ({exc})", path) from None
    try:
        thickness = float(ds.get("SliceThickness") or 1.0)
    except (TypeError, ValueError):
        thickness = 1.0
    try:
        return Geometry(
            shape_zyx=(1, int(ds.Rows), int(ds.Columns)),
            spacing_zyx=(thickness if thickness > 0 else 1.0, float(row_sp), float(col_sp)),
            origin_xyz=(float(ipp[0]), float(ipp[1]), float(ipp[2])),
            direction=direction,
        )
    except ValueError as exc:
        raise InputError(f"bad image plane ({exc})", path) from None


#: The Clinical Trial Subject module (PS3.3 C.7.1.3); dropped from the header copy when its Type 1C
#: subject ID and reading ID are both empty (TCIA exports often have that), so the SR/SEG that copy it stay valid.
_CLINICAL_TRIAL_SUBJECT = (
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID",
    "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID",
    "ClinicalTrialProtocolEthicsCommitteeName",
    "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
)


def _read(path: Path) -> Dataset:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError) as exc:
        raise InputError(f"cannot read the DICOM header ({exc})", path) from None
    if not str(ds.get("SpecificCharacterSet") or "").strip():
        ds.SpecificCharacterSet = DEFAULT_CHARSET
    if not str(ds.get("ClinicalTrialSubjectID") or "") and not str(
        ds.get("ClinicalTrialSubjectReadingID") or ""
    ):
        for keyword in _CLINICAL_TRIAL_SUBJECT:
            if keyword in ds:
                delattr(ds, keyword)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not str(ds.get(keyword) or "").strip():
            raise InputError(f"{keyword} is empty: the instance cannot be referenced by a DICOM SR/SEG", path)
    return ds


def read_source_series(folder: str | Path, *, series_uid: str | None = None) -> SourceSeries:
    """Read the headers of the CT series under ``folder`` that detection ran on.

    The same series choice as the reader (``series_uid`` when several); enhanced/multi-frame CT and
    series without a frame of reference are refused (an SR/SEG must reference single CT frames in one
    frame of reference).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(
            "DICOM SR/SEG output needs a DICOM folder as input (a NIfTI file has no source instances "
            "to reference)",
            folder,
        )
    series = list_series(folder)
    if series_uid is not None:
        series = [s for s in series if s.series_uid == series_uid]
    if not series:
        raise InputError("no CT image series found for the DICOM SR/SEG references", folder)
    if len(series) > 1:
        raise InputError(f"{len(series)} CT series found; choose one with --series", folder)
    info = series[0]
    if info.sop_class_uid != CT_IMAGE_STORAGE:
        raise InputError(
            f"SR/SEG output supports single-frame CT Image Storage, not {info.sop_class_uid}", folder
        )
    slices: list[tuple[Geometry, SourceSlice]] = []
    seen: set[str] = set()
    frame_uids: set[str] = set()
    for path in info.files:
        ds = _read(path)
        uid = str(ds.get("SOPInstanceUID", ""))
        if not uid or uid in seen:
            continue  # duplicates carry no new plane
        seen.add(uid)
        plane = slice_plane(ds, path)
        frame_uids.add(str(ds.get("FrameOfReferenceUID", "")))
        slices.append((plane, SourceSlice(ds, uid, plane)))
    frame_uids.discard("")
    if len(frame_uids) != 1:
        raise InputError(
            "the series has no single FrameOfReferenceUID (needed to place SCOORD3D points)", folder
        )
    # along the first slice's normal, as the reader orders a series
    positions, _ = positions_along_normal([p.origin_xyz for p, _ in slices], slices[0][0].direction)
    order = np.argsort(positions, kind="stable")
    ordered = [slices[int(i)][1] for i in order]
    return SourceSeries(
        folder=folder,
        study_uid=info.study_uid,
        series_uid=info.series_uid,
        frame_of_reference_uid=next(iter(frame_uids)),
        slices=tuple(ordered),
    )
