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
5. Duplicate positions, missing slices and non-uniform spacing fail unless ``allow_gaps=True`` (the CLI's
   ``--allow-gaps``; it bridges gaps up to 10 mm or two slice steps), which
   drops duplicates and resamples linearly along the normal to a uniform spacing (with a warning).
6. Pixels are decoded straight into a preallocated int16 array, slice by slice:
   HU = round(RescaleSlope·raw + RescaleIntercept), rounded half away from zero and clipped to int16.
   Uncompressed little-endian data is read directly from the file offset; compressed data goes through
   pydicom's decoders (pylibjpeg/openjpeg/libjpeg/RLE); the retired lossy JPEG processes 6–8/10–12
   (…4.53/…4.55), which pydicom cannot decode, fall back to SimpleITK (GDCM) for those slices.
   ``workers > 1`` decodes in forked worker processes writing into shared memory (Linux).

The steps live in :mod:`~lymphcad.io.dicom.header` (1–2), :mod:`~lymphcad.io.dicom.layout` (3–5) and
:mod:`~lymphcad.io.dicom.pixels` (6); :mod:`~lymphcad.io.dicom.read` puts them together, and this package
is the public API. :mod:`~lymphcad.io.dicom.write` writes a CTVolume as a DICOM CT series.
"""

from __future__ import annotations

from lymphcad.io.dicom.header import (
    CT_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    LEGACY_ENHANCED_CT_IMAGE_STORAGE,
    DicomSeriesError,
    SeriesInfo,
    list_series,
)
from lymphcad.io.dicom.read import SeriesStream, dicom_summary, read_dicom_series, stream_dicom_series

__all__ = [
    "CT_IMAGE_STORAGE",
    "ENHANCED_CT_IMAGE_STORAGE",
    "LEGACY_ENHANCED_CT_IMAGE_STORAGE",
    "DicomSeriesError",
    "SeriesInfo",
    "SeriesStream",
    "dicom_summary",
    "list_series",
    "read_dicom_series",
    "stream_dicom_series",
]
