"""Read a CT series from DICOM files into an int16 HU :class:`~lymphcad.geometry.CTVolume` (LPS geometry).

How a folder is read (see docs/io.md for the reasons):

1. Every file's header is parsed once, up to the pixel data, keeping only the elements the reader uses:
   uncompressed little-endian files (the usual TCIA form) by a small parser of this module, anything else
   (compressed, big-endian, deflated, non-ASCII text, unusual encodings) by pydicom with large values
   deferred. Files that are not DICOM are skipped. Files are grouped by SeriesInstanceUID (a missing UID
   is the group ``""``).
2. Only CT image series are kept: Modality ``CT``, or — when Modality is missing — a CT Image Storage SOP
   class. SEG, SR, RT, presentation states and other non-image objects are ignored, not errors.
   Several CT series → ``series_uid`` chooses, otherwise :class:`DicomSeriesError` lists them.
3. Refused with a clear :class:`DicomSeriesError`: enhanced (multi-frame) CT, localizer/scout images,
   derived reformats (MPR/MIP/projection), slices of different size/orientation/pixel spacing, and
   gantry-tilted (sheared) series.
4. Slices are sorted by their position along the slice normal ``n = row × column`` (never by file name
   or InstanceNumber). Slice k = 0 is the one with the lowest ``IPP·n``; the direction's third column is
   ``n`` (pointing from slice 0 to slice 1), as SimpleITK's ImageSeriesReader orients a series in GDCM's
   sorted order.
5. Duplicate positions, missing slices and non-uniform spacing fail unless ``allow_gaps=True``, which
   drops duplicates and resamples linearly along the normal to a uniform spacing (with a warning).
6. Pixels are decoded straight into a preallocated int16 array, slice by slice:
   HU = round(RescaleSlope·raw + RescaleIntercept), rounded half away from zero and clipped to int16.
   Uncompressed little-endian data is read directly from the file offset; compressed data goes through
   pydicom's decoders (pylibjpeg/openjpeg/libjpeg/RLE); the retired lossy JPEG processes 6–8/10–12
   (…4.53/…4.55), which pydicom cannot decode, fall back to SimpleITK (GDCM) for those slices.
   ``workers > 1`` decodes in forked worker processes writing into shared memory (Linux).
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.errors import InvalidDicomError

from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume, Geometry

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
_CT_SOP_CLASSES = {CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE}
_ENHANCED = {ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE}

_NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}
#: Retired lossy JPEG processes that pydicom cannot decode: handed to SimpleITK (GDCM).
_RETIRED_JPEG = {"1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55"}
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


class DicomSeriesError(InputError):
    """A DICOM folder/series that cannot be read as one CT volume (the message says why)."""


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found in a folder (no patient-identifying fields)."""

    series_uid: str
    study_uid: str
    modality: str
    sop_class_uid: str
    n_files: int
    description: str
    files: tuple[Path, ...] = field(repr=False)


#: The elements the reader uses (tag → keyword); every other element of a header is skipped unparsed.
_TAGS: dict[int, str] = {
    0x00080008: "ImageType",
    0x00080016: "SOPClassUID",
    0x00080060: "Modality",
    0x00080070: "Manufacturer",
    0x0008103E: "SeriesDescription",
    0x00081090: "ManufacturerModelName",
    0x00180050: "SliceThickness",
    0x00180088: "SpacingBetweenSlices",
    0x00181120: "GantryDetectorTilt",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00200032: "ImagePositionPatient",
    0x00200037: "ImageOrientationPatient",
    0x00280002: "SamplesPerPixel",
    0x00280008: "NumberOfFrames",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280030: "PixelSpacing",
    0x00280100: "BitsAllocated",
    0x00280101: "BitsStored",
    0x00280103: "PixelRepresentation",
    0x00281052: "RescaleIntercept",
    0x00281053: "RescaleSlope",
}
#: Of those, the unsigned short (US) ones; all others are text (values joined by backslashes).
_US_KEYWORDS = frozenset(
    {"SamplesPerPixel", "Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation"}
)
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # Float/DoubleFloat/PixelData


@dataclass
class _Header:
    """What the reader needs of one file's header (no other element is kept)."""

    path: Path
    values: dict[str, Any]  # keyword → str (text, backslash-separated values) or int (US)
    transfer_syntax: str
    media_sop_class: str
    has_pixels: bool
    pixel_at: tuple[int, int] | None  # (file offset, length) of a native, not-yet-read PixelData
    ds: Any = None  # the pydicom Dataset, when read by pydicom (loaded on demand to decode pixels)

    def get(self, keyword: str) -> Any:
        """The value of ``keyword`` (None when absent)."""
        return self.values.get(keyword)

    def text(self, keyword: str) -> str:
        """``keyword``'s value as stripped text ("" when absent)."""
        v = self.values.get(keyword)
        return "" if v is None else str(v).strip()

    def dataset(self) -> Any:
        """The full pydicom Dataset (large values deferred), read on first use."""
        if self.ds is None:
            self.ds = pydicom.dcmread(str(self.path), defer_size=512)
        return self.ds


# -- scanning ---------------------------------------------------------------------------------------
def _read_header(path: Path) -> Any | None:
    """The dataset with large values deferred, or None when ``path`` is not a DICOM file."""
    try:
        return pydicom.dcmread(str(path), defer_size=512)
    except (
        InvalidDicomError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
    ):
        return None
    except Exception:  # a corrupt file is not a reason to fail the whole folder
        return None


_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_TEXT_VRS = frozenset(
    {b"AE", b"AS", b"CS", b"DA", b"DS", b"DT", b"IS", b"LO", b"LT", b"SH", b"ST", b"TM", b"UI"}
)
_HEAD_BYTES = 1 << 16
_u16 = struct.Struct("<H").unpack_from
_u32 = struct.Struct("<I").unpack_from
_tag = struct.Struct("<HH").unpack_from


class _Unsupported(Exception):
    """The fast parser cannot read this header: pydicom reads it instead."""


class _Short(Exception):
    """The header goes on past the bytes read so far."""


def _element(buf: bytes, pos: int, explicit: bool) -> tuple[int, bytes, int, int]:
    """(tag, VR or b"", value length, value start) of the element at ``pos``."""
    if pos + 8 > len(buf):
        raise _Short
    group, elem = _tag(buf, pos)
    tag = (group << 16) | elem
    if group == 0xFFFE:  # item / delimiters: no VR
        return tag, b"", _u32(buf, pos + 4)[0], pos + 8
    if not explicit:
        return tag, b"", _u32(buf, pos + 4)[0], pos + 8
    vr = buf[pos + 4 : pos + 6]
    if not (vr.isalpha() and vr.isupper()):
        raise _Unsupported  # not explicit VR after all (e.g. a mislabelled implicit-VR file): pydicom copes
    if vr in _LONG_VRS:
        if pos + 12 > len(buf):
            raise _Short
        return tag, vr, _u32(buf, pos + 8)[0], pos + 12
    return tag, vr, _u16(buf, pos + 6)[0], pos + 8


def _skip_sequence(buf: bytes, pos: int, explicit: bool) -> int:
    """Position after an undefined-length sequence's delimiter (its items are skipped, not parsed)."""
    while True:
        tag, _, length, pos = _element(buf, pos, False)
        if tag == 0xFFFEE0DD:
            return pos
        if tag != 0xFFFEE000:
            raise _Unsupported
        if length != _UNDEFINED:
            pos += length
            continue
        while True:  # an undefined-length item: its elements up to the item delimiter
            tag, vr, length, pos = _element(buf, pos, explicit)
            if tag == 0xFFFEE00D:
                break
            if length == _UNDEFINED:
                pos = _skip_sequence(buf, pos, explicit and vr != b"UN")
            else:
                pos += length


def _fast_parse(buf: bytes, at_eof: bool, path: Path) -> _Header | None:
    """Parse an uncompressed little-endian Part-10 header from ``buf`` (the file's first bytes).

    None when ``buf`` is not such a file; raises :class:`_Unsupported` for anything unusual and
    :class:`_Short` when more bytes are needed.
    """
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise _Unsupported
    pos = 132
    meta: dict[int, bytes] = {}
    while True:
        if pos + 2 > len(buf):
            raise _Short
        if _u16(buf, pos)[0] != 0x0002:
            break  # end of the (always explicit VR) file meta group
        tag, vr, length, start = _element(buf, pos, True)
        if length == _UNDEFINED:
            raise _Unsupported
        meta[tag] = buf[start : start + length]
        pos = start + length
    try:
        ts = meta.get(0x00020010, b"").decode("ascii").rstrip("\0 ").strip()
        media_sop = meta.get(0x00020002, b"").decode("ascii").rstrip("\0 ").strip()
    except UnicodeDecodeError as exc:
        raise _Unsupported from exc
    if ts not in _NATIVE_LE:
        raise _Unsupported
    explicit = ts == "1.2.840.10008.1.2.1"
    values: dict[str, Any] = {}
    has_pixels = False
    pixel_at: tuple[int, int] | None = None
    while True:
        try:
            tag, vr, length, start = _element(buf, pos, explicit)
        except _Short:
            if at_eof and pos == len(buf):
                break  # a dataset without pixel data
            raise
        if tag in _PIXEL_TAGS:
            has_pixels = True
            if tag == 0x7FE00010 and length != _UNDEFINED and (not explicit or vr in (b"OW", b"OB")):
                pixel_at = (start, length)
            break  # nothing the reader needs comes after the pixel data
        if length == _UNDEFINED:
            if explicit and vr not in (b"SQ", b"UN"):
                raise _Unsupported
            pos = _skip_sequence(buf, start, explicit and vr != b"UN")
            continue
        keyword = _TAGS.get(tag)
        if keyword is not None:
            if start + length > len(buf):
                raise _Short
            raw = buf[start : start + length]
            if keyword in _US_KEYWORDS:
                if length != 2 or (explicit and vr != b"US"):
                    raise _Unsupported
                values[keyword] = _u16(raw, 0)[0]
            else:
                if (explicit and vr not in _TEXT_VRS) or b"\x1b" in raw:
                    raise _Unsupported
                try:
                    values[keyword] = raw.decode("ascii").rstrip("\0 ")
                except UnicodeDecodeError as exc:
                    raise _Unsupported from exc
        pos = start + length
    return _Header(path, values, ts, media_sop, has_pixels, pixel_at)


def _fast_header(path: Path) -> _Header | None:
    """The header by the fast parser, or None when pydicom must read this file."""
    try:
        with open(path, "rb") as f:
            buf = f.read(_HEAD_BYTES)
            at_eof = len(buf) < _HEAD_BYTES
            while True:
                try:
                    return _fast_parse(buf, at_eof, path)
                except _Short:
                    if at_eof:
                        return None  # truncated: let pydicom judge it
                    more = f.read()
                    buf += more
                    at_eof = True
    except (_Unsupported, OSError, struct.error):
        return None


def _header_from_dataset(path: Path, ds: Any) -> _Header:
    values: dict[str, Any] = {}
    for keyword in _TAGS.values():
        try:
            v = ds.get(keyword)
        except Exception:
            continue
        if v is None:
            continue
        if keyword in _US_KEYWORDS and isinstance(v, int):
            values[keyword] = int(v)
        elif isinstance(v, (list, tuple)) or v.__class__.__name__ == "MultiValue":
            values[keyword] = "\\".join(str(x) for x in v)
        else:
            values[keyword] = str(v)
    meta = getattr(ds, "file_meta", None)
    ts = _str(meta, "TransferSyntaxUID") if meta is not None else ""
    media_sop = _str(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
    elem = ds._dict.get(0x7FE00010)
    pixel_at = None
    deferred = elem is not None and getattr(elem, "value_tell", None) is not None and elem.value is None
    if deferred and elem.length != _UNDEFINED:
        pixel_at = (int(elem.value_tell), int(elem.length))
    return _Header(path, values, ts, media_sop, has_pixels, pixel_at, ds)


def _expand(folder_or_files: str | Path | Iterable[str | Path]) -> tuple[list[Path], Path | None]:
    if isinstance(folder_or_files, (str, Path)):
        p = Path(folder_or_files)
        if p.is_dir():
            files = sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith("."))
            return files, p
        if p.is_file():
            return [p], p
        raise DicomSeriesError("no such file or folder", p)
    files = [Path(f) for f in folder_or_files]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DicomSeriesError("no such file", missing[0])
    return files, None


def _str(ds: Any, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:
        return ""
    if value is None:
        return ""
    return str(value).strip()


def _sop_class(h: _Header) -> str:
    return h.text("SOPClassUID") or h.media_sop_class


def _is_ct_image(h: _Header) -> bool:
    if not h.has_pixels:
        return False
    modality = h.text("Modality").upper()
    if modality:
        return modality == "CT"
    return _sop_class(h) in _CT_SOP_CLASSES


def _scan(files: Sequence[Path]) -> dict[str, list[_Header]]:
    groups: dict[str, list[_Header]] = defaultdict(list)
    with warnings.catch_warnings():
        # pydicom warns about non-conformant values (e.g. an invalid UID) that do not matter here
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
        for f in files:
            h = _fast_header(f)
            if h is None:
                ds = _read_header(f)
                if ds is None:
                    continue
                h = _header_from_dataset(f, ds)
            if _is_ct_image(h):
                groups[h.text("SeriesInstanceUID")].append(h)
    return dict(groups)


def _info(uid: str, headers: list[_Header]) -> SeriesInfo:
    h = headers[0]
    return SeriesInfo(
        series_uid=uid,
        study_uid=h.text("StudyInstanceUID"),
        modality=h.text("Modality"),
        sop_class_uid=_sop_class(h),
        n_files=len(headers),
        description=h.text("SeriesDescription"),
        files=tuple(h.path for h in headers),
    )


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """All CT image series under ``folder`` (recursive), sorted by series UID; other files are ignored."""
    files, _ = _expand(folder)
    groups = _scan(files)
    return [_info(uid, groups[uid]) for uid in sorted(groups)]


def _choose(
    groups: dict[str, list[_Header]], series_uid: str | None, where: Path | None
) -> tuple[str, list[_Header]]:
    if not groups:
        raise DicomSeriesError(
            "no CT image series found (non-DICOM, SEG, SR and other non-CT files are ignored)", where
        )
    if series_uid is not None:
        if series_uid not in groups:
            listing = ", ".join(f"{u or '(no UID)'} ({len(h)} files)" for u, h in sorted(groups.items()))
            raise DicomSeriesError(f"series {series_uid!r} not found; CT series here: {listing}", where)
        return series_uid, groups[series_uid]
    if len(groups) > 1:
        listing = "; ".join(
            f"{u or '(no UID)'}: {len(h)} files, {h[0].text('SeriesDescription') or 'no description'}"
            for u, h in sorted(groups.items())
        )
        raise DicomSeriesError(
            f"{len(groups)} CT series found, choose one with series_uid (--series): {listing}", where
        )
    uid = next(iter(groups))
    return uid, groups[uid]


# -- geometry ---------------------------------------------------------------------------------------
def _floats(h: _Header, keyword: str, n: int) -> NDArray[np.float64]:
    path = h.path
    try:
        value = h.get(keyword)
        arr = np.asarray([float(v) for v in str(value).split("\\")], dtype=np.float64) if value else None
    except Exception as exc:
        raise DicomSeriesError(f"unreadable {keyword} ({exc})", path) from exc
    if arr is None or arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise DicomSeriesError(f"missing or invalid {keyword}", path)
    return arr


def _int(h: _Header, keyword: str) -> int:
    try:
        return int(h.get(keyword))
    except (TypeError, ValueError) as exc:
        raise DicomSeriesError(f"missing or invalid {keyword}", h.path) from exc


def _frame_axes(iop: NDArray[np.float64], path: Path) -> NDArray[np.float64]:
    """Orthonormal [row, column, normal] (columns) from ImageOrientationPatient."""
    r, c = iop[:3], iop[3:]
    nr = np.linalg.norm(r)
    if nr == 0:
        raise DicomSeriesError("ImageOrientationPatient has a zero row vector", path)
    r = r / nr
    c = c - (c @ r) * r
    nc = np.linalg.norm(c)
    if nc < 1e-3:
        raise DicomSeriesError("ImageOrientationPatient row and column vectors are parallel", path)
    c = c / nc
    n = np.cross(r, c)
    return np.stack([r, c, n], axis=1)


@dataclass
class _Plan:
    """What to decode, in which order, and the output geometry."""

    headers: list[_Header]  # sorted along the normal, duplicates removed
    positions: NDArray[np.float64]  # along the normal, ascending
    axes: NDArray[np.float64]
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]  # (row spacing = between rows, column spacing)
    origin: NDArray[np.float64]
    gaps: list[str]
    dropped_duplicates: int


def _image_type_problem(h: _Header) -> str | None:
    raw = h.text("ImageType")
    image_type = [v.strip().upper() for v in raw.split("\\")] if raw else []
    shown = "\\".join(image_type)
    for value, what in _REJECT_IMAGE_TYPES.items():
        if value in image_type:
            return f"this is {what} (ImageType {shown}), not an axial CT series; use the original reconstructed series"
    return None


def _plan(headers: list[_Header], *, allow_gaps: bool, _allow_tilt: bool = False) -> _Plan:
    first = headers[0]
    sop = _sop_class(first)
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
    axes = _frame_axes(iop0, first.path)
    normal = axes[:, 2]
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
    pos = ipp @ normal
    order = np.lexsort((np.array([str(h.path) for h in headers]), pos))
    headers = [headers[i] for i in order]
    ipp, pos = ipp[order], pos[order]

    # gantry tilt / shear: slice origins must lie on one line along the normal
    if len(headers) > 1:
        rel = ipp - ipp[0]
        inplane = rel - np.outer(rel @ normal, normal)
        off = float(np.linalg.norm(inplane, axis=1).max())
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
            raise DicomSeriesError(
                msg + "; remove the duplicates or pass allow_gaps=True (--allow-gaps)", first.path
            )
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
                raise DicomSeriesError(
                    msg + "; pass allow_gaps=True (--allow-gaps) to resample to uniform spacing", first.path
                )
            gaps.append(msg)
    return _Plan(
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


# -- pixel decoding ---------------------------------------------------------------------------------
def _rescale_into(raw: NDArray[Any], h: _Header, out: NDArray[np.int16], path: Path) -> None:
    slope, inter = _rescale_params(h)
    if raw.shape != out.shape:
        raise DicomSeriesError(f"decoded pixel array has shape {raw.shape}, expected {out.shape}", path)
    if slope == 1.0 and float(inter).is_integer():
        if raw.dtype == np.int16 and inter == 0.0:
            out[...] = raw
            return
        tmp = raw.astype(np.int32)
        tmp += int(inter)
        np.clip(tmp, -32768, 32767, out=tmp)
        out[...] = tmp
        return
    v = raw.astype(np.float64) * slope + inter
    v = np.where(v >= 0, np.floor(v + 0.5), np.ceil(v - 0.5))
    np.clip(v, -32768, 32767, out=v)
    out[...] = v.astype(np.int16)


def _rescale_params(h: _Header) -> tuple[float, float]:
    path = h.path
    try:
        slope = float(h.get("RescaleSlope") or 1.0)
        inter = float(h.get("RescaleIntercept") or 0.0)
    except (TypeError, ValueError) as exc:
        raise DicomSeriesError(f"invalid RescaleSlope/RescaleIntercept ({exc})", path) from exc
    if not (math.isfinite(slope) and math.isfinite(inter)):
        raise DicomSeriesError(f"invalid RescaleSlope/RescaleIntercept ({slope}, {inter})", path)
    return slope, inter


def _native_into(h: _Header, out: NDArray[np.int16]) -> bool:
    """Uncompressed little-endian 16-bit pixels read from the file offset straight into ``out``.

    Signed or unsigned, the intercept is added in place (values that would leave int16 are clipped, as the
    general path does). Returns False when the file is not in that form (compressed, 8/32-bit, a slope,
    signed with fewer than 16 stored bits, bits set above BitsStored); the caller then decodes through
    pydicom, overwriting ``out``.
    """
    if h.transfer_syntax not in _NATIVE_LE or h.pixel_at is None:
        return False
    offset, length = h.pixel_at
    try:
        bits = int(h.get("BitsAllocated"))
        stored = int(h.get("BitsStored") or bits)
        signed = int(h.get("PixelRepresentation") or 0) == 1
        rows, cols = int(h.get("Rows")), int(h.get("Columns"))
    except (TypeError, ValueError):
        return False
    if bits != 16 or not 1 <= stored <= 16 or length < rows * cols * 2 or out.shape != (rows, cols):
        return False
    slope, inter = _rescale_params(h)
    if slope != 1.0 or not inter.is_integer():
        return False
    if signed and stored < 16:
        return False  # needs sign extension from bit stored-1: the general path handles it
    with open(h.path, "rb") as f:
        f.seek(offset)
        n = f.readinto(out.data.cast("B"))
    if n != rows * cols * 2:
        raise DicomSeriesError(f"pixel data is truncated ({n} of {rows * cols * 2} bytes)", h.path)
    if not signed and stored < 15 and int(out.max()) >= 2**stored:
        return False  # bits set above BitsStored: let pydicom decide what they mean
    stored_values = out if signed else out.view(np.uint16)
    lo, hi = (-(2 ** (stored - 1)), 2 ** (stored - 1) - 1) if signed else (0, 2**stored - 1)
    if lo + inter < -32768 or hi + inter > 32767:  # the stored range could leave int16: look at the values
        lo, hi = int(stored_values.min()), int(stored_values.max())
        if lo + inter < -32768 or hi + inter > 32767:  # they do: clip, as the general path does
            hu = stored_values.astype(np.int32)
            hu += int(inter)
            np.clip(hu, -32768, 32767, out=hu)
            out[...] = hu
            return True
    if inter:
        # stored + intercept in place, modulo 2**16: the int16 bits are exact since the result fits
        u = out.view(np.uint16)
        np.add(u, np.uint16(int(inter) % 65536), out=u)
    return True


def _decode_sitk(h: _Header, out: NDArray[np.int16]) -> None:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(h.path))
    except Exception as exc:
        ts = h.transfer_syntax
        raise DicomSeriesError(
            f"cannot decode pixel data (transfer syntax {ts}) with pydicom or SimpleITK: {exc}", h.path
        ) from exc
    hu = sitk.GetArrayFromImage(img).reshape(out.shape)  # already rescaled by GDCM
    if np.issubdtype(hu.dtype, np.floating):
        hu = np.where(hu >= 0, np.floor(hu + 0.5), np.ceil(hu - 0.5))
    out[...] = np.clip(hu, -32768, 32767).astype(np.int16)


def _decode_into(h: _Header, out: NDArray[np.int16]) -> None:
    if not _native_into(h, out):
        ts = h.transfer_syntax
        if ts in _RETIRED_JPEG:
            _decode_sitk(h, out)
            return
        ds = None
        try:
            ds = h.dataset()
            raw = ds.pixel_array
        except Exception as exc:
            raise DicomSeriesError(
                f"cannot decode pixel data (transfer syntax {ts or 'unknown'}): {exc.__class__.__name__}: {exc}",
                h.path,
            ) from exc
        finally:
            if ds is not None:
                _forget_pixels(ds)
        _rescale_into(np.asarray(raw), h, out, h.path)


def _forget_pixels(ds: Any) -> None:
    """Drop the pixel bytes and decoded array that pydicom caches on the dataset."""
    for attr, value in (("_pixel_array", None), ("_pixel_id", {})):
        if hasattr(ds, attr):
            setattr(ds, attr, value)
    ds._dict.pop(0x7FE00010, None)


# worker-side state for forked decoding (set before the pool forks)
_FORK_STATE: dict[str, Any] = {}


def _worker_decode(indices: list[int]) -> None:
    headers: list[_Header] = _FORK_STATE["headers"]
    vol = _FORK_STATE["vol"]
    for k in indices:
        _decode_into(headers[k], vol[k])


def _shared_empty(shape: tuple[int, int, int]) -> NDArray[np.int16]:
    """An int16 array in anonymous shared memory: forked workers' writes land in the parent's array."""
    count = int(np.prod(shape))
    buf = mmap.mmap(-1, max(1, 2 * count))
    return np.frombuffer(buf, dtype=np.int16, count=count).reshape(shape)  # the array keeps buf alive


def _parallel(workers: int) -> bool:
    return workers > 1 and os.name == "posix"


def _decode_all(
    headers: list[_Header], rows: int, cols: int, workers: int, out: NDArray[np.int16] | None = None
) -> NDArray[np.int16]:
    """Decode every slice into ``out`` (allocated when None; with ``workers > 1`` it must come from
    :func:`_shared_empty`, since forked workers write into it)."""
    n = len(headers)
    shape = (n, rows, cols)
    workers = max(1, min(int(workers), n))
    if not _parallel(workers):
        vol = np.empty(shape, dtype=np.int16) if out is None else out
        for k, h in enumerate(headers):
            _decode_into(h, vol[k])
        return vol
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    vol = _shared_empty(shape) if out is None else out
    _FORK_STATE.update(headers=headers, vol=vol)
    try:
        chunks = [list(range(i, n, workers)) for i in range(workers)]
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
            for fut in [pool.submit(_worker_decode, c) for c in chunks]:
                fut.result()
    finally:
        _FORK_STATE.clear()
    return vol


def _resample_uniform(vol: NDArray[np.int16], pos: NDArray[np.float64]) -> tuple[NDArray[np.int16], float]:
    """Linear resampling along axis 0 from positions ``pos`` to a uniform grid from pos[0] to pos[-1]."""
    n_out, spacing = _uniform_grid(pos)
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
            v = vol[j].astype(np.float32) * (1 - w) + vol[j + 1].astype(np.float32) * w
            out[k] = np.where(v >= 0, np.floor(v + 0.5), np.ceil(v - 0.5)).astype(np.int16)
    return out, spacing


def _slice_spacing_single(h: _Header) -> float:
    """Spacing along the normal for a one-slice series: SpacingBetweenSlices, else 1 mm (as GDCM/SimpleITK)."""
    try:
        v = float(h.get("SpacingBetweenSlices") or 0.0)
    except (TypeError, ValueError):
        v = 0.0
    return abs(v) if v and math.isfinite(v) else 1.0


def _load(
    folder_or_files: str | Path | Iterable[str | Path], series_uid: str | None, allow_gaps: bool
) -> tuple[_Plan, str]:
    files, where = _expand(folder_or_files)
    groups = _scan(files)
    uid, headers = _choose(groups, series_uid, where)
    return _plan(headers, allow_gaps=allow_gaps), uid


@dataclass
class SeriesStream:
    """A checked CT series whose geometry is known before its pixels are decoded.

    :meth:`slabs` decodes the slices into :attr:`array` in z order, so a consumer (e.g. a NIfTI writer in
    another thread) can process the leading slices while the rest are still being read.
    """

    geometry: Geometry
    array: NDArray[np.int16]  # (z, y, x), filled by slabs()
    plan: _Plan = field(repr=False)
    workers: int = 1

    def slabs(self, size: int = 16) -> Iterator[int]:
        """Decode the volume; yields how many leading z-slices of :attr:`array` are final so far."""
        plan, n = self.plan, self.array.shape[0]
        if plan.gaps or self.workers > 1:
            # decoded in place when the array is shared memory (parallel, no gaps): no second volume
            direct = not plan.gaps and _parallel(self.workers) and len(plan.headers) > 1
            vol = _decode_all(
                plan.headers, plan.rows, plan.cols, self.workers, out=self.array if direct else None
            )
            if direct:
                yield n
                return
            if plan.gaps:
                vol, spacing_z = _resample_uniform(vol, plan.positions)
                warnings.warn(
                    f"{plan.headers[0].path.parent}: "
                    + "; ".join(plan.gaps)
                    + f"; resampled linearly to {vol.shape[0]} slices at {spacing_z:.3f} mm",
                    stacklevel=2,
                )
            self.array[...] = vol
            yield n
            return
        for k0 in range(0, n, size):
            k1 = min(n, k0 + size)
            for k in range(k0, k1):
                _decode_into(plan.headers[k], self.array[k])
            yield k1


def _uniform_grid(pos: NDArray[np.float64]) -> tuple[int, float]:
    """(slices, spacing) of the uniform grid that gap resampling produces from positions ``pos``."""
    span = float(pos[-1] - pos[0])
    n_out = round(span / float(np.min(np.diff(pos)))) + 1
    return n_out, span / (n_out - 1)


def stream_dicom_series(
    folder_or_files: str | Path | Iterable[str | Path],
    *,
    series_uid: str | None = None,
    allow_gaps: bool = False,
    workers: int = 1,
) -> SeriesStream:
    """Check one CT series and compute its geometry; the pixels are decoded by :meth:`SeriesStream.slabs`.

    Same input and checks as :func:`read_dicom_series` (which is this, fully consumed).
    """
    plan, _ = _load(folder_or_files, series_uid, allow_gaps)
    pos = plan.positions
    n = len(pos)
    if n == 1:
        spacing_z = _slice_spacing_single(plan.headers[0])
    elif plan.gaps:
        n, spacing_z = _uniform_grid(pos)
    else:
        spacing_z = float((pos[-1] - pos[0]) / (n - 1))
    geom = Geometry(
        (n, plan.rows, plan.cols),
        (spacing_z, plan.pixel_spacing[0], plan.pixel_spacing[1]),
        (float(plan.origin[0]), float(plan.origin[1]), float(plan.origin[2])),
        plan.axes,
    )
    shape = (n, plan.rows, plan.cols)
    shared = not plan.gaps and _parallel(min(workers, n))
    return SeriesStream(geom, _shared_empty(shape) if shared else np.empty(shape, np.int16), plan, workers)


def read_dicom_series(
    folder_or_files: str | Path | Iterable[str | Path],
    *,
    series_uid: str | None = None,
    allow_gaps: bool = False,
    workers: int = 1,
) -> CTVolume:
    """Read one CT series (a folder, searched recursively, a single file, or a list of files) as int16 HU.

    Raises :class:`DicomSeriesError` with the reason when the files cannot form one CT volume.
    """
    stream = stream_dicom_series(
        folder_or_files, series_uid=series_uid, allow_gaps=allow_gaps, workers=workers
    )
    for _ in stream.slabs(size=len(stream.array)):
        pass
    return CTVolume(stream.array, stream.geometry)


def dicom_summary(
    folder_or_files: str | Path | Iterable[str | Path],
    *,
    series_uid: str | None = None,
    hu_range: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Non-PHI facts about one CT series (no names, IDs, dates or institutions).

    Keys: series_uid, n_files, n_slices, size_ijk, spacing_zyx, orientation (LPS letters), direction,
    origin_xyz, modality, sop_class_uid, transfer_syntaxes, manufacturer, model, description,
    slice_thickness, gaps (list of messages; empty = uniform), readable (bool: readable without
    ``allow_gaps``), problem (why not), and — when ``hu_range`` and the series can be decoded —
    hu_min / hu_max (of the slices as stored, before any gap resampling). With ``hu_range=False`` only
    headers are read.
    """
    files, where = _expand(folder_or_files)
    groups = _scan(files)
    uid, headers = _choose(groups, series_uid, where)
    h0 = headers[0]
    out: dict[str, Any] = {
        "series_uid": uid,
        "n_files": len(headers),
        "modality": h0.text("Modality") or "(missing)",
        "sop_class_uid": _sop_class(h0),
        "transfer_syntaxes": sorted({h.transfer_syntax for h in headers}),
        "manufacturer": h0.text("Manufacturer"),
        "model": h0.text("ManufacturerModelName"),
        "description": h0.text("SeriesDescription"),
        "slice_thickness": h0.text("SliceThickness"),
    }
    try:
        plan = _plan(headers, allow_gaps=True)
    except DicomSeriesError as exc:
        out.update(readable=False, problem=exc.problem)
        return out
    pos = plan.positions
    sz = (
        _slice_spacing_single(plan.headers[0])
        if len(pos) == 1
        else (float(np.min(np.diff(pos))) if plan.gaps else float((pos[-1] - pos[0]) / (len(pos) - 1)))
    )
    geom = Geometry(
        (len(pos), plan.rows, plan.cols), (sz, *plan.pixel_spacing), tuple(plan.origin), plan.axes
    )
    out.update(
        readable=not plan.gaps,
        problem="; ".join(plan.gaps),
        n_slices=len(pos),
        size_ijk=list(geom.size_ijk),
        spacing_zyx=list(geom.spacing_zyx),
        orientation=geom.orientation_codes(),
        direction=geom.direction.tolist(),
        origin_xyz=list(geom.origin_xyz),
        gaps=plan.gaps,
    )
    if hu_range:
        vol = _decode_all(plan.headers, plan.rows, plan.cols, workers)
        lo, hi = int(vol.min()), int(vol.max())
        out.update(hu_min=lo, hu_max=hi)
    return out
