"""The public side of DICOM reading: one CT series → :class:`~lymphcad.geometry.CTVolume`, streamed or whole,
and a non-PHI summary. The steps are in :mod:`~lymphcad.io.dicom.header` (scan), :mod:`~lymphcad.io.dicom.layout`
(checks, sorting, gaps) and :mod:`~lymphcad.io.dicom.pixels` (decoding)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lymphcad.geometry import CTVolume, Geometry
from lymphcad.io.dicom.header import (
    DicomSeriesError,
    choose_series,
    expand_inputs,
    scan_series,
    sop_class,
)
from lymphcad.io.dicom.layout import (
    SliceLayout,
    layout_slices,
    resample_uniform,
)
from lymphcad.io.dicom.pixels import decode_all, decode_into, is_parallel, shared_empty


def _load(
    folder_or_files: str | Path | Iterable[str | Path], series_uid: str | None, allow_gaps: bool
) -> tuple[SliceLayout, str]:
    files, where = expand_inputs(folder_or_files)
    groups = scan_series(files)
    uid, headers = choose_series(groups, series_uid, where)
    return layout_slices(headers, allow_gaps=allow_gaps), uid


@dataclass
class SeriesStream:
    """A checked CT series whose geometry is known before its pixels are decoded.

    :meth:`slabs` decodes the slices into :attr:`array` in z order, so a consumer (e.g. a NIfTI writer in
    another thread) can process the leading slices while the rest are still being read.
    """

    geometry: Geometry
    array: NDArray[np.int16]  # (z, y, x), filled by slabs()
    layout: SliceLayout = field(repr=False)
    workers: int = 1

    def slabs(self, size: int = 16) -> Iterator[int]:
        """Decode the volume; yields how many leading z-slices of :attr:`array` are final so far."""
        layout, n = self.layout, self.array.shape[0]
        if layout.gaps or self.workers > 1:
            # decoded in place when the array is shared memory (parallel, no gaps): no second volume
            direct = not layout.gaps and is_parallel(self.workers) and len(layout.headers) > 1
            vol = decode_all(
                layout.headers, layout.rows, layout.cols, self.workers, out=self.array if direct else None
            )
            if direct:
                yield n
                return
            if layout.gaps:
                vol, spacing_z = resample_uniform(vol, layout.positions)
                warnings.warn(
                    f"{layout.headers[0].path.parent}: "
                    + "; ".join(layout.gaps)
                    + f"; resampled linearly to {vol.shape[0]} slices at {spacing_z:.3f} mm",
                    stacklevel=2,
                )
            self.array[...] = vol
            yield n
            return
        for k0 in range(0, n, size):
            k1 = min(n, k0 + size)
            for k in range(k0, k1):
                decode_into(layout.headers[k], self.array[k])
            yield k1


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
    layout, _ = _load(folder_or_files, series_uid, allow_gaps)
    geom = layout.geometry()
    n = geom.shape_zyx[0]
    shape = (n, layout.rows, layout.cols)
    shared = not layout.gaps and is_parallel(min(workers, n))
    return SeriesStream(geom, shared_empty(shape) if shared else np.empty(shape, np.int16), layout, workers)


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

    Keys: series_uid, n_files, n_slices (stored, duplicates dropped), size_ijk / spacing_zyx (of the
    volume :func:`read_dicom_series` returns; with gaps, under ``allow_gaps``), orientation (LPS letters), direction,
    origin_xyz, modality, sop_class_uid, transfer_syntaxes, manufacturer, model, description,
    slice_thickness, gaps (list of messages; empty = uniform), readable (bool: readable without
    ``allow_gaps``), problem (why not), allow_gaps_problem (when even ``allow_gaps`` cannot read it: a gap
    too wide to bridge), and — when ``hu_range`` and the series can be decoded —
    hu_min / hu_max (of the slices as stored, before any gap resampling). With ``hu_range=False`` only
    headers are read.
    """
    files, where = expand_inputs(folder_or_files)
    groups = scan_series(files)
    uid, headers = choose_series(groups, series_uid, where)
    h0 = headers[0]
    out: dict[str, Any] = {
        "series_uid": uid,
        "n_files": len(headers),
        "modality": h0.text("Modality") or "(missing)",
        "sop_class_uid": sop_class(h0),
        "transfer_syntaxes": sorted({h.transfer_syntax for h in headers}),
        "manufacturer": h0.text("Manufacturer"),
        "model": h0.text("ManufacturerModelName"),
        "description": h0.text("SeriesDescription"),
        "slice_thickness": h0.text("SliceThickness"),
    }
    try:
        layout = layout_slices(headers, allow_gaps=True, _max_gap_mm=math.inf)
    except DicomSeriesError as exc:
        out.update(readable=False, problem=exc.problem)
        return out
    if layout.gaps:
        try:
            layout_slices(headers, allow_gaps=True)
        except DicomSeriesError as exc:
            out.update(allow_gaps_problem=exc.problem)
    geom = layout.geometry()  # with gaps: the grid allow_gaps resamples to (as the reader does)
    out.update(
        readable=not layout.gaps,
        problem="; ".join(layout.gaps),
        n_slices=len(layout.positions),
        size_ijk=list(geom.size_ijk),
        spacing_zyx=list(geom.spacing_zyx),
        orientation=geom.orientation_codes(),
        direction=geom.direction.tolist(),
        origin_xyz=list(geom.origin_xyz),
        gaps=layout.gaps,
    )
    if hu_range:
        vol = decode_all(layout.headers, layout.rows, layout.cols, workers)
        lo, hi = int(vol.min()), int(vol.max())
        out.update(hu_min=lo, hu_max=hi)
    return out
