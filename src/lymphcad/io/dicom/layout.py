"""Steps 3–5 of reading a DICOM CT series: check that the slices form one volume, sort them along the
slice normal, and handle duplicates and gaps.

3. Refused with a clear :class:`~lymphcad.io.dicom.header.DicomSeriesError`: enhanced (multi-frame) CT,
   localizer/scout images, derived reformats (MPR/MIP/projection), slices of different
   size/orientation/pixel spacing, and gantry-tilted (sheared) series.
4. Slices are sorted by their position along the slice normal ``n = row × column`` (never by file name or
   InstanceNumber). Slice k = 0 is the one with the lowest ``IPP·n``; the direction's third column is
   ``n`` (pointing from slice 0 to slice 1), as SimpleITK's ImageSeriesReader orients a series in GDCM's
   sorted order.
5. Duplicate positions, missing slices and non-uniform spacing fail unless ``allow_gaps=True`` (the CLI's
   ``--allow-gaps``; it bridges gaps up to :data:`MAX_BRIDGED_GAP_MM` or two slice steps), which
   drops duplicates and resamples linearly along the normal to a uniform spacing (with a warning).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lymphcad.geometry import Geometry, direction_from_dicom, hu_to_int16, positions_along_normal
from lymphcad.io.dicom.header import (
    ENHANCED_CT_IMAGE_STORAGE,
    LEGACY_ENHANCED_CT_IMAGE_STORAGE,
    DicomSeriesError,
    SliceHeader,
    sop_class,
)

_ENHANCED = {ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE}
#: ImageType values that mark images we must not read as an axial CT volume.
_REJECT_IMAGE_TYPES = {
    "LOCALIZER": "a localizer (scout) image",
    "MPR": "a derived multiplanar reformat (MPR)",
    "MIP": "a maximum intensity projection (MIP)",
    "MINIP": "a minimum intensity projection",
    "PROJECTION IMAGE": "a projection image",
    "CURVED": "a curved reformat",
    "VOLUME_RENDER": "a volume rendering",
}

#: Tolerances (mm): two slices closer than this along the normal are duplicates.
_DUP_TOL_MM = 1e-3
#: the widest gap between slices that ``allow_gaps`` interpolates across (or two slice steps, if more)
MAX_BRIDGED_GAP_MM = 10.0


# -- geometry ---------------------------------------------------------------------------------------
def _floats(h: SliceHeader, keyword: str, n: int) -> NDArray[np.float64]:
    path = h.path
    try:
        value = h.get(keyword)
        arr = np.asarray([float(v) for v in str(value).split("\\")], dtype=np.float64) if value else None
    except Exception as exc:
        raise DicomSeriesError(f"unreadable {keyword} ({exc})", path) from exc
    if arr is None or arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise DicomSeriesError(f"missing or invalid {keyword}", path)
    return arr


def _int(h: SliceHeader, keyword: str) -> int:
    try:
        return int(h.get(keyword))
    except (TypeError, ValueError) as exc:
        raise DicomSeriesError(f"missing or invalid {keyword}", h.path) from exc


@dataclass(frozen=True)
class SliceLayout:
    """What to decode, in which order, and the output geometry."""

    headers: list[SliceHeader]  # sorted along the normal, duplicates removed
    positions: NDArray[np.float64]  # along the normal, ascending
    axes: NDArray[np.float64]
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]  # (row spacing = between rows, column spacing)
    origin: NDArray[np.float64]
    gaps: list[str]
    dropped_duplicates: int

    def geometry(self) -> Geometry:
        """The grid of the volume the reader returns: the slices as they are, or — with gaps — the uniform
        grid they are resampled to (:func:`uniform_grid`); one slice: :func:`single_slice_spacing`."""
        pos = self.positions
        n = len(pos)
        if n == 1:
            spacing_z = single_slice_spacing(self.headers[0])
        elif self.gaps:
            n, spacing_z = uniform_grid(pos)
        else:
            spacing_z = float((pos[-1] - pos[0]) / (n - 1))
        return Geometry(
            (n, self.rows, self.cols),
            (spacing_z, self.pixel_spacing[0], self.pixel_spacing[1]),
            (float(self.origin[0]), float(self.origin[1]), float(self.origin[2])),
            self.axes,
        )


def _image_type_problem(h: SliceHeader) -> str | None:
    raw = h.text("ImageType")
    image_type = [v.strip().upper() for v in raw.split("\\")] if raw else []
    shown = "\\".join(image_type)
    for value, what in _REJECT_IMAGE_TYPES.items():
        if value in image_type:
            return f"this is {what} (ImageType {shown}), not an axial CT series; use the original reconstructed series"
    return None


def layout_slices(
    headers: list[SliceHeader],
    *,
    allow_gaps: bool,
    _allow_tilt: bool = False,
    _max_gap_mm: float = MAX_BRIDGED_GAP_MM,
) -> SliceLayout:
    first = headers[0]
    sop = sop_class(first)
    if sop in _ENHANCED:
        raise DicomSeriesError(
            "enhanced multi-frame CT (Enhanced/Legacy Converted Enhanced CT Image Storage) is not supported; "
            "convert it to classic single-frame CT slices first (e.g. dcm2niix, or dcmtk/emf2sf)",
            first.path,
        )
    problems = [_image_type_problem(h) for h in headers]
    rejected = [i for i, p in enumerate(problems) if p]
    if rejected:
        if len(rejected) == len(headers):
            raise DicomSeriesError(str(problems[rejected[0]]), headers[rejected[0]].path)
        # e.g. a scout stored in the same series as the axial slices: drop it, say so
        warnings.warn(
            f"{headers[rejected[0]].path.parent}: ignored {len(rejected)} localizer/reformat image(s) of the "
            f"series, e.g. {headers[rejected[0]].path.name}",
            stacklevel=3,
        )
        headers = [h for i, h in enumerate(headers) if not problems[i]]
        first = headers[0]
    for h in headers:
        try:
            frames = int(h.get("NumberOfFrames") or 1)
        except (TypeError, ValueError):
            frames = 1
        if frames != 1:
            raise DicomSeriesError(f"multi-frame image ({frames} frames) is not supported", h.path)
        if int(h.get("SamplesPerPixel") or 1) != 1:
            raise DicomSeriesError("colour images (SamplesPerPixel > 1) are not CT", h.path)

    rows, cols = _int(first, "Rows"), _int(first, "Columns")
    iop0 = _floats(first, "ImageOrientationPatient", 6)
    ps0 = _floats(first, "PixelSpacing", 2)
    try:
        axes = direction_from_dicom(iop0)
    except ValueError as exc:
        raise DicomSeriesError(str(exc), first.path) from exc
    ipps = []
    for h in headers:
        r, c = _int(h, "Rows"), _int(h, "Columns")
        if r != rows or c != cols:
            raise DicomSeriesError(
                f"slices differ in size ({r}×{c} vs {rows}×{cols}): not one volume", h.path
            )
        if h.get("ImageOrientationPatient") != first.get("ImageOrientationPatient") and not np.allclose(
            _floats(h, "ImageOrientationPatient", 6), iop0, atol=1e-4
        ):
            raise DicomSeriesError("slices differ in ImageOrientationPatient: not one volume", h.path)
        if h.get("PixelSpacing") != first.get("PixelSpacing") and not np.allclose(
            _floats(h, "PixelSpacing", 2), ps0, atol=1e-4
        ):
            raise DicomSeriesError("slices differ in PixelSpacing: not one volume", h.path)
        ipps.append(_floats(h, "ImagePositionPatient", 3))
    ipp = np.asarray(ipps)
    pos, _ = positions_along_normal(ipp, axes)
    order = np.lexsort((np.array([str(h.path) for h in headers]), pos))
    headers = [headers[i] for i in order]
    ipp, pos = ipp[order], pos[order]

    # gantry tilt / shear: slice origins must lie on one line along the normal
    if len(headers) > 1:
        off = float(positions_along_normal(ipp, axes)[1].max())
        if off > 0.1 * float(min(ps0)) and not _allow_tilt:
            tilt = first.text("GantryDetectorTilt")
            raise DicomSeriesError(
                f"gantry-tilted (sheared) series: slice positions drift {off:.2f} mm sideways from the slice normal"
                + (f" (GantryDetectorTilt {tilt}°)" if tilt else "")
                + "; lymphcad does not read tilted series. Resample it to an orthogonal grid first "
                "(e.g. dcm2niix, which writes a tilt-corrected '_Tilt_' NIfTI)",
                first.path,
            )

    gaps: list[str] = []
    dropped = 0
    d = np.diff(pos)
    dup = np.flatnonzero(d < _DUP_TOL_MM)
    if dup.size:
        i = int(dup[0])
        msg = (
            f"{dup.size} duplicate slice position(s), e.g. {headers[i].path.name} and {headers[i + 1].path.name} "
            f"both at {pos[i]:.2f} mm along the normal"
        )
        if not allow_gaps:
            raise DicomSeriesError(msg + "; remove the duplicates or pass --allow-gaps", first.path)
        keep = np.ones(len(headers), dtype=bool)
        keep[dup + 1] = False
        dropped = int((~keep).sum())
        headers = [h for h, k in zip(headers, keep, strict=True) if k]
        ipp, pos = ipp[keep], pos[keep]
        gaps.append(msg + f": kept the first of each, dropped {dropped}")
        d = np.diff(pos)
    if d.size:
        step = float(np.median(d))
        tol = max(0.02, 0.01 * step)
        bad = np.flatnonzero(np.abs(d - step) > tol)
        if bad.size:
            missing = int(np.sum(np.maximum(0, np.round(d[bad] / step) - 1)))
            msg = (
                f"slice spacing along the normal is not uniform: {bad.size} step(s) differ from the median "
                f"{step:.3f} mm (from {d.min():.3f} to {d.max():.3f} mm)"
                + (f", about {missing} slice(s) missing" if missing else "")
            )
            if not allow_gaps:
                raise DicomSeriesError(msg + "; pass --allow-gaps to resample to uniform spacing", first.path)
            cap = max(_max_gap_mm, 2.0 * step)
            if float(d.max()) > cap + tol:
                raise DicomSeriesError(
                    msg + f"; the largest gap is {float(d.max()):.1f} mm and --allow-gaps bridges at most "
                    f"{cap:.1f} mm ({MAX_BRIDGED_GAP_MM:g} mm or two slice steps): part of the scan is missing",
                    first.path,
                )
            gaps.append(msg)
    return SliceLayout(
        headers=headers,
        positions=pos,
        axes=axes,
        rows=rows,
        cols=cols,
        pixel_spacing=(float(ps0[0]), float(ps0[1])),
        origin=ipp[0],
        gaps=gaps,
        dropped_duplicates=dropped,
    )


def resample_uniform(vol: NDArray[np.int16], pos: NDArray[np.float64]) -> tuple[NDArray[np.int16], float]:
    """Linear resampling along axis 0 from positions ``pos`` to a uniform grid from pos[0] to pos[-1]."""
    n_out, spacing = uniform_grid(pos)
    out = np.empty((n_out, *vol.shape[1:]), dtype=np.int16)
    targets = pos[0] + spacing * np.arange(n_out)
    for k, t in enumerate(targets):
        j = int(np.clip(np.searchsorted(pos, t, side="right") - 1, 0, len(pos) - 2))
        w = float((t - pos[j]) / (pos[j + 1] - pos[j]))
        w = min(max(w, 0.0), 1.0)
        if w < 1e-6:
            out[k] = vol[j]
        elif w > 1 - 1e-6:
            out[k] = vol[j + 1]
        else:
            out[k] = hu_to_int16(vol[j].astype(np.float32) * (1 - w) + vol[j + 1].astype(np.float32) * w)
    return out, spacing


def single_slice_spacing(h: SliceHeader) -> float:
    """Spacing along the normal for a one-slice series: SpacingBetweenSlices, else 1 mm (as GDCM/SimpleITK)."""
    try:
        v = float(h.get("SpacingBetweenSlices") or 0.0)
    except (TypeError, ValueError):
        v = 0.0
    return abs(v) if v and math.isfinite(v) else 1.0


def uniform_grid(pos: NDArray[np.float64]) -> tuple[int, float]:
    """(slices, spacing) of the uniform grid that gap resampling produces from positions ``pos``."""
    span = float(pos[-1] - pos[0])
    n_out = round(span / float(np.min(np.diff(pos)))) + 1
    return n_out, span / (n_out - 1)
