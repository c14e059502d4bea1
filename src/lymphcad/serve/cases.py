"""What the review page shows of a case: ranked findings and the display volume (LPS order, capped size).

The browser receives the int16 volume once as raw bytes after a JSON header and reformats it itself.
Browser memory is 2 bytes per voxel (a 512×512×600 case is 315 MB); above ``max_voxels`` the volume is
averaged over slabs of whole slices along z until it fits, and the page shows a notice saying so.
"""

from __future__ import annotations

import io
import json
import math
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from lymphcad.geometry import CTVolume, Geometry, reorient_to_lps
from lymphcad.io.detections import DetectionTable
from lymphcad.report.planes import Plane, plane_image, window_u8

#: default cap on the voxels sent to the browser (320 MB of int16; a 512×512×600 case fits)
MAX_VOXELS: Final = 160_000_000
_CHUNK: Final = 8 << 20


@dataclass(frozen=True)
class Finding:
    """A detection under review: ``d<rank>`` (1-based rank by probability within its case)."""

    finding_id: str
    rank: int
    center_xyz: tuple[float, float, float]
    probability: float
    diameter_mm: float | None


def rank_findings(table: DetectionTable) -> dict[str, tuple[Finding, ...]]:
    """Per case, detections ranked by descending probability (ties: file order) with their ``d<n>`` ids."""
    by_case: dict[str, list[int]] = {}
    for i, cid in enumerate(table.case_ids.tolist()):
        by_case.setdefault(str(cid), []).append(i)
    out: dict[str, tuple[Finding, ...]] = {}
    for cid, rows in by_case.items():
        rows.sort(key=lambda r: -float(table.probabilities[r]))  # stable: ties keep file order
        found = []
        for rank, r in enumerate(rows, start=1):
            c = table.centers_xyz[r]
            d = float(table.diameters_mm[r])
            found.append(
                Finding(
                    f"d{rank}",
                    rank,
                    (float(c[0]), float(c[1]), float(c[2])),
                    float(table.probabilities[r]),
                    None if math.isnan(d) else d,
                )
            )
        out[cid] = tuple(found)
    return out


@dataclass(frozen=True, eq=False)
class DisplayVolume:
    """A case as the page shows it: int16 (z, y, x) in LPS order, C-contiguous, and its exact geometry."""

    array: NDArray[np.int16]
    geometry: Geometry
    source_shape_zyx: tuple[int, int, int]
    factor: int
    notice: str | None

    def header(self) -> dict[str, Any]:
        """The JSON header sent before the voxels."""
        g = self.geometry
        return {
            "shape_zyx": list(g.shape_zyx),
            "spacing_zyx": list(g.spacing_zyx),
            "origin_xyz": list(g.origin_xyz),
            "direction": g.direction.tolist(),
            "dtype": "int16",
            "byte_order": "little",
            "downsample_z": self.factor,
            "notice": self.notice,
        }

    def payload_prefix(self) -> bytes:
        """``uint32 LE header length`` + the JSON header, padded with spaces to a multiple of 8 bytes."""
        text = json.dumps(self.header()).encode()
        pad = (-(4 + len(text))) % 8
        text += b" " * pad
        return struct.pack("<I", len(text)) + text

    def payload_size(self) -> int:
        """Total bytes of the volume response."""
        return len(self.payload_prefix()) + self.array.nbytes

    def payload(self) -> Iterator[bytes]:
        """The response body in chunks (no copy of the whole volume)."""
        yield self.payload_prefix()
        flat = self.array.reshape(-1).view(np.uint8).data
        for start in range(0, len(flat), _CHUNK):
            yield bytes(flat[start : start + _CHUNK])

    def to_zyx(self, xyz: tuple[float, float, float]) -> tuple[float, float, float]:
        """Continuous display-array position (z, y, x) of a world point."""
        z, y, x = self.geometry.world_to_zyx(np.asarray(xyz, dtype=np.float64))
        return (float(z), float(y), float(x))

    def to_world(self, zyx: tuple[float, float, float]) -> tuple[float, float, float]:
        """World LPS mm of a continuous display-array position (z, y, x)."""
        x, y, z = self.geometry.zyx_to_world(np.asarray(zyx, dtype=np.float64))
        return (float(x), float(y), float(z))

    def slice_png(self, plane: Plane, index: int, width: float, level: float) -> bytes:
        """A server-rendered slice (fallback and tests): windowed, radiological, square-mm pixels."""
        image, (row_mm, col_mm) = plane_image(self.array, self.geometry.spacing_zyx, plane, index)
        pil = Image.fromarray(window_u8(image, width, level), mode="L")
        unit = min(row_mm, col_mm)
        size = (max(1, round(image.shape[1] * col_mm / unit)), max(1, round(image.shape[0] * row_mm / unit)))
        if size != pil.size:
            pil = pil.resize(size, Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        return buf.getvalue()


def _slab_factor(shape_zyx: tuple[int, int, int], max_voxels: int) -> int:
    nz, ny, nx = shape_zyx
    factor = max(1, math.ceil(nz * ny * nx / max_voxels))
    return factor if nz >= factor else 1


def _slab_geometry(geom: Geometry, factor: int) -> Geometry:
    """Grid of the means of ``factor`` consecutive slices (z) of an LPS-ordered grid."""
    if factor == 1:
        return geom
    nz, ny, nx = geom.shape_zyx
    first = geom.zyx_to_world(np.array([(factor - 1) / 2.0, 0.0, 0.0]))
    return Geometry(
        (nz // factor, ny, nx),
        (geom.spacing_zyx[0] * factor, geom.spacing_zyx[1], geom.spacing_zyx[2]),
        (float(first[0]), float(first[1]), float(first[2])),
        geom.direction,
    )


def display_geometry(geom: Geometry, *, max_voxels: int = MAX_VOXELS) -> tuple[Geometry, int]:
    """The display grid of an image (LPS order, slab-averaged when too big) from its geometry alone."""
    _, lps = reorient_to_lps(np.broadcast_to(np.int16(0), geom.shape_zyx), geom)
    factor = _slab_factor(lps.shape_zyx, max_voxels)
    return _slab_geometry(lps, factor), factor


def make_display_volume(volume: CTVolume, *, max_voxels: int = MAX_VOXELS) -> DisplayVolume:
    """Reorient a CT to LPS order and, above ``max_voxels``, average slabs of ``factor`` slices along z."""
    array, geom = reorient_to_lps(volume.array, volume.geometry)
    array = np.asarray(array, dtype=np.int16)
    nz, ny, nx = geom.shape_zyx
    factor = _slab_factor(geom.shape_zyx, max_voxels)
    notice = None
    if factor > 1:
        keep = (nz // factor) * factor
        slabs = array[:keep].reshape(nz // factor, factor, ny, nx)
        array = np.round(slabs.mean(axis=1, dtype=np.float32)).astype(np.int16)
        geom = _slab_geometry(geom, factor)
        dropped = nz - keep
        notice = (
            f"Large volume ({nx}×{ny}×{nz} voxels, {2 * nx * ny * nz / 1e6:.0f} MB): shown as the mean of "
            f"every {factor} slices ({geom.spacing_zyx[0]:.2f} mm)"
            + (f"; the last {dropped} slice(s) are not shown" if dropped else "")
            + ". Findings keep their exact positions."
        )
    return DisplayVolume(np.ascontiguousarray(array), geom, volume.shape_zyx, factor, notice)


class VolumeCache:
    """The last few display volumes, loaded once each even when several requests ask at the same time."""

    def __init__(self, load: Callable[[str], DisplayVolume], *, capacity: int = 2) -> None:
        self._load = load
        self._capacity = capacity
        self._items: OrderedDict[str, DisplayVolume] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, case_id: str) -> DisplayVolume:
        """The case's display volume (from the cache, or loaded now)."""
        with self._lock:
            if case_id in self._items:
                self._items.move_to_end(case_id)
                return self._items[case_id]
            case_lock = self._loading.setdefault(case_id, threading.Lock())
        with case_lock:
            with self._lock:
                if case_id in self._items:
                    return self._items[case_id]
            vol = self._load(case_id)
            with self._lock:
                self._items[case_id] = vol
                while len(self._items) > self._capacity:
                    self._items.popitem(last=False)
                self._loading.pop(case_id, None)
            return vol

    def prefetch(self, case_id: str) -> None:
        """Load a case in a background thread (the next case, the first case at launch)."""
        threading.Thread(target=self._quiet_get, args=(case_id,), daemon=True).start()

    def _quiet_get(self, case_id: str) -> None:
        try:
            self.get(case_id)
        except Exception:  # the request that needs it will report the error
            return
