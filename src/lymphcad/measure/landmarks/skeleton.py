"""The spine (vertebral body per slice), and from the lungs their apices and the diaphragm domes."""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.measure.landmarks.view import IN_PLANE, AxialView, FloatArray

#: cortical bone: HU above this
BONE_HU: Final = 700.0
#: the domes are read on lung columns at least this far from the midline (mm): beside the heart
DOME_LATERAL_MM: Final = 35.0


def find_spine(
    hu: NDArray[np.float32], body: NDArray[np.bool_], body_cx: NDArray[np.float64], sx: float
) -> dict[int, FloatArray]:
    """Per slice: (x, y) of the vertebral body (bone near the midline, in the back half of the body)."""
    _nz, ny, nx = hu.shape
    rows: NDArray[np.bool_] = np.asarray(body.any(axis=2), dtype=bool)  # (z, y)
    has: NDArray[np.bool_] = np.asarray(rows.any(axis=1), dtype=bool)
    top = np.argmax(rows, axis=1)
    bottom = ny - 1 - np.argmax(rows[:, ::-1], axis=1)
    ymid = (0.5 * (top + bottom)).astype(int)
    x0 = np.round(body_cx).astype(int)
    half = round(30.0 / sx)
    yy = np.arange(ny)[None, :, None]
    xx = np.arange(nx)[None, None, :]
    band = (yy >= ymid[:, None, None]) & (np.abs(xx - x0[:, None, None]) <= half) & has[:, None, None]
    lab, n = ndimage.label((hu > 200.0) & band, structure=IN_PLANE)
    out: dict[int, FloatArray] = {}
    if n == 0:
        return out
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:].astype(np.float64)
    # bone has a cortex: a contrast-filled aorta beside the spine is bright but never that bright
    cortex = np.zeros(n + 1, dtype=bool)
    cortex[lab[hu > BONE_HU]] = True
    sizes[~cortex[1:]] = 0
    objs = ndimage.find_objects(lab)
    slice_of = np.array([sl[0].start for sl in objs], dtype=np.int64)
    order = np.lexsort((-sizes, slice_of))
    _, first = np.unique(slice_of[order], return_index=True)
    for c in order[first].tolist():
        if sizes[c] < 20:
            continue
        sl = objs[c]
        ys, xs = np.nonzero(lab[sl][0] == c + 1)
        ys = ys + sl[1].start
        xs = xs + sl[2].start
        # the vertebral body is the front part of the bone: its front half-height
        y_front = np.percentile(ys, 20)
        y_half = np.percentile(ys, 50)
        sel = ys <= y_half
        out[int(slice_of[c])] = np.array([float(xs[sel].mean()), float(0.5 * (y_front + y_half))])
    return out


def find_domes(
    lung: NDArray[np.bool_], body_cx: NDArray[np.float64], sz: float, view: AxialView
) -> tuple[float | None, float | None, float | None]:
    """(right dome z, left dome z, lung apex z) in array k (None where no lung)."""
    if not lung.any():
        return None, None, None
    ks = np.nonzero(lung.any(axis=(1, 2)))[0]
    top = float(ks.max())
    nz, _ny, nx = lung.shape
    any_col = lung.any(axis=0)
    bottom = np.argmax(lung, axis=0).astype(float)  # lowest lung slice per column
    topc = (nz - 1 - np.argmax(lung[::-1], axis=0)).astype(float)
    # columns through the lung's height; where the scan's top cuts the lungs short (an abdominal CT shows
    # only their bases), the columns that reach the top
    long_col = any_col & ((topc - bottom) * sz >= 60.0)
    if long_col.sum() < 40:
        long_col = any_col & (topc >= nz - 1) & ((topc - bottom) * sz >= 15.0)
    cx = float(np.median(body_cx[ks]))
    xs = np.arange(nx)[None, :]
    lateral = DOME_LATERAL_MM / float(view.geometry.spacing_zyx[2])
    out: list[float | None] = []
    # columns lateral of the heart and mediastinum: their lowest lung lies on the diaphragm
    for side in (xs < cx - lateral, xs > cx + lateral):
        sel = long_col & np.broadcast_to(side, long_col.shape)
        out.append(float(np.percentile(bottom[sel], 75)) if sel.sum() >= 20 else None)
    right, left = out
    if right is not None and left is not None and left > right:
        left = right  # the left dome lies at or below the right; higher means the heart's top was read
    return right, left, top
