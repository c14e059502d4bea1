"""Writing CT as DICOM: valid CT Image Storage slices built from an array and a position, and whole series.

:func:`write_dicom_series` exports any :class:`~lymphcad.geometry.CTVolume` (right-handed direction) as a
series that reads back to the same voxels and geometry. :func:`ct_slice` is the one builder behind it and
behind the tests and benchmarks that need DICOM of a chosen size, geometry or encoding (real files cannot
be made to order), so every written file carries the same mandatory attributes; callers add what their
case needs (a planted PatientName, nested sequences, a compression) to the returned dataset before saving.
:func:`body_slice` draws a CT-like torso slice for speed benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lymphcad.geometry import CTVolume, hu_to_int16

#: axial rows along +x, columns along +y (LPS)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def ds_number(value: float) -> str:
    """A decimal string (DS, ≤ 16 characters) as exact as fits: 1.25 → '1.25', -600.0 → '-600'."""
    for digits in range(15, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return "0" if text == "-0" else text
    raise ValueError(f"{value} does not fit a DICOM decimal string")


def ct_slice(
    pixels: NDArray[np.integer],
    position: Sequence[float],
    *,
    series_uid: str,
    study_uid: str = "1.2.3",
    instance: int = 1,
    orientation: Sequence[float] = AXIAL,
    pixel_spacing: tuple[float, float] = (0.7, 0.8),
    slice_thickness: float = 1.0,
    slope: float = 1.0,
    intercept: float = -1024.0,
    bits_stored: int = 16,
    modality: str | None = "CT",
    sop_class: str = CTImageStorage,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    description: str = "synthetic",
    patient_id: str | None = None,
    frame_of_reference: str | None = None,
    syntax: str = ExplicitVRLittleEndian,
) -> Dataset:
    """One CT slice: ``pixels`` (rows, columns; uint16 or int16 stored values) at ``position`` (LPS mm).

    ``pixel_spacing`` is (row spacing, column spacing) as DICOM orders it; the stored values map to HU as
    ``stored × slope + intercept``. ``modality=None`` leaves Modality out (some files lack it).
    """
    if pixels.ndim != 2 or pixels.dtype not in (np.uint16, np.int16):
        raise ValueError(f"pixels must be a 2-D uint16/int16 array, got {pixels.dtype} {pixels.shape}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(image_type)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    if modality is not None:
        ds.Modality = modality
    ds.SeriesDescription = description
    if patient_id is not None:
        ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    # one frame of reference per study unless given: derived from the study UID (same for every slice)
    ds.FrameOfReferenceUID = frame_of_reference or generate_uid(
        entropy_srcs=[study_uid, "frame-of-reference"]
    )
    ds.InstanceNumber = int(instance)
    ds.ImagePositionPatient = [ds_number(float(v)) for v in position]
    ds.ImageOrientationPatient = [ds_number(float(v)) for v in orientation]
    ds.PixelSpacing = [ds_number(float(v)) for v in pixel_spacing]
    ds.SliceThickness = ds_number(slice_thickness)
    ds.Rows, ds.Columns = (int(v) for v in pixels.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.RescaleIntercept = ds_number(intercept)
    ds.RescaleSlope = ds_number(slope)
    ds.PixelData = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    return ds


def body_slice(k: int, n: int, size: int = 512, *, seed: int | None = None) -> NDArray[np.uint16]:
    """Slice ``k`` of ``n`` of a CT-like torso in 12-bit stored values (HU + 1024): air, an elliptic body whose
    height changes along z, two lungs, a spine, a vessel that moves from slice to slice and 15 HU noise.

    Realistic enough for reading and compression speed (the air/tissue mix sets the deflate ratio), not
    for anatomy; the noise is drawn from ``seed`` (default ``k``), so a slice is the same every time.
    """
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) * (512.0 / size)
    c = 256.0
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    hu[((x - c) / 220) ** 2 + ((y - c) / (160 + 20 * np.sin(k / max(n, 1) * np.pi))) ** 2 <= 1] = 40.0
    for side in (-1, 1):
        hu[((x - c - side * 95) / 70) ** 2 + ((y - c + 10) / 100) ** 2 <= 1] = -850.0
    hu[((x - c) / 25) ** 2 + ((y - c - 110) / 25) ** 2 <= 1] = 700.0
    hu[((x - c - 30 * np.cos(k / 40)) / 12) ** 2 + ((y - c + 20) / 12) ** 2 <= 1] = 250.0
    rng = np.random.default_rng(k if seed is None else seed)
    hu += rng.normal(0, 15, size=hu.shape).astype(np.float32)
    return np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16)


def write_dicom_series(
    volume: CTVolume,
    folder: str | Path,
    *,
    patient_id: str = "SYNTHETIC",
    study_uid: str | None = None,
    series_uid: str | None = None,
    description: str = "synthetic",
) -> list[Path]:
    """Write a CT volume as a DICOM series (one file per z-slice, signed 16-bit, intercept −1024 when it fits).

    The geometry is carried exactly as DICOM can: ImageOrientationPatient = the directions of the i and j
    axes, ImagePositionPatient of slice k = the world position of voxel (k, 0, 0) (lymphcad.geometry), so
    reading the folder back gives the same voxels and geometry — provided the direction matrix is
    right-handed (k along i × j), since DICOM readers order slices along i × j. Returns the files in z order.
    """
    geom = volume.geometry
    if not geom.is_right_handed():
        raise ValueError(
            "a left-handed direction (k opposite to i × j) has no DICOM series form; flip z first"
        )
    hu = hu_to_int16(volume.array)
    intercept = -1024 if int(hu.max(initial=0)) + 1024 <= 32767 else 0
    stored = (hu.astype(np.int32) - intercept).astype(np.int16)
    study = study_uid or generate_uid()
    series = series_uid or generate_uid()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    orientation = list(geom.dicom_orientation())
    paths = []
    for k in range(geom.shape_zyx[0]):
        ds = ct_slice(
            stored[k],
            [float(v) for v in geom.zyx_to_world(np.array([[k, 0.0, 0.0]]))[0]],
            series_uid=series,
            study_uid=study,
            instance=k + 1,
            orientation=orientation,
            pixel_spacing=(geom.spacing_zyx[1], geom.spacing_zyx[2]),
            slice_thickness=geom.spacing_zyx[0],
            intercept=intercept,
            description=description,
            patient_id=patient_id,
        )
        path = out / f"CT{k + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
