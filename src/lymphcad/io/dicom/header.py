"""Step 1 of reading a DICOM CT series: parse every file's header once and group the CT image series.

Only the elements the reader uses are kept (:class:`SliceHeader`). Uncompressed little-endian files (the
usual TCIA form) are parsed by the small parser below, anything else (compressed, big-endian, deflated,
non-ASCII text, unusual encodings) by pydicom with large values deferred; files that are not DICOM are
skipped. Only CT image series are kept (step 2): Modality ``CT``, or — when Modality is missing — a CT
Image Storage SOP class; SEG, SR, RT and other non-image objects are ignored, not errors.
"""

from __future__ import annotations

import struct
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from lymphcad.errors import InputError, InputWarning

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
_CT_SOP_CLASSES = {CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, LEGACY_ENHANCED_CT_IMAGE_STORAGE}
#: uncompressed little-endian transfer syntaxes (implicit and explicit VR): read without pydicom
NATIVE_LE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


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
class SliceHeader:
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
def read_header(path: Path) -> Any | None:
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


def _fast_parse(buf: bytes, at_eof: bool, path: Path) -> SliceHeader | None:
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
    if ts not in NATIVE_LE:
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
    return SliceHeader(path, values, ts, media_sop, has_pixels, pixel_at)


def fast_header(path: Path) -> SliceHeader | None:
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


def header_from_dataset(path: Path, ds: Any) -> SliceHeader:
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
    return SliceHeader(path, values, ts, media_sop, has_pixels, pixel_at, ds)


def expand_inputs(folder_or_files: str | Path | Iterable[str | Path]) -> tuple[list[Path], Path | None]:
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


def sop_class(h: SliceHeader) -> str:
    return h.text("SOPClassUID") or h.media_sop_class


def _is_ct_image(h: SliceHeader) -> bool:
    if not h.has_pixels:
        return False
    modality = h.text("Modality").upper()
    if modality:
        return modality == "CT"
    return sop_class(h) in _CT_SOP_CLASSES


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def scan_series(files: Sequence[Path]) -> dict[str, list[SliceHeader]]:
    """CT image headers grouped by SeriesInstanceUID; other files are skipped, except that a DICOM file
    which cannot be read (truncated, corrupt) is named in a warning rather than becoming a silent gap."""
    groups: dict[str, list[SliceHeader]] = defaultdict(list)
    unreadable: list[Path] = []
    with warnings.catch_warnings():
        # pydicom warns about non-conformant values (e.g. an invalid UID) that do not matter here
        warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
        for f in files:
            h = fast_header(f)
            if h is None:
                ds = read_header(f)
                if ds is None:
                    if _has_dicm_magic(f):
                        unreadable.append(f)
                    continue
                h = header_from_dataset(f, ds)
            if _is_ct_image(h):
                groups[h.text("SeriesInstanceUID")].append(h)
            elif not h.has_pixels and sop_class(h) in _CT_SOP_CLASSES:
                unreadable.append(f)  # a CT slice whose pixel data is cut off
    if unreadable:
        more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
        warnings.warn(
            f"{unreadable[0]}: a DICOM file that cannot be read (truncated or corrupt){more}; left out",
            InputWarning,
            stacklevel=3,
        )
    return dict(groups)


def series_info(uid: str, headers: list[SliceHeader]) -> SeriesInfo:
    h = headers[0]
    return SeriesInfo(
        series_uid=uid,
        study_uid=h.text("StudyInstanceUID"),
        modality=h.text("Modality"),
        sop_class_uid=sop_class(h),
        n_files=len(headers),
        description=h.text("SeriesDescription"),
        files=tuple(h.path for h in headers),
    )


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """All CT image series under ``folder`` (recursive), sorted by series UID; other files are ignored."""
    files, _ = expand_inputs(folder)
    groups = scan_series(files)
    return [series_info(uid, groups[uid]) for uid in sorted(groups)]


def choose_series(
    groups: dict[str, list[SliceHeader]], series_uid: str | None, where: Path | None
) -> tuple[str, list[SliceHeader]]:
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
            f"{len(groups)} CT series found, choose one with --series UID: {listing}", where
        )
    uid = next(iter(groups))
    return uid, groups[uid]
