"""The airway from air: the trachea from its top down to the carina, and the main bronchi below it."""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.measure.landmarks.view import AxialView, FloatArray, components

#: airway lumen: smoothed HU below this
AIR_LUMEN_HU: Final = -900.0
#: trachea cross-section (mm²) accepted at the start of the airway search
TRACHEA_AREA_MM2: Final = (60.0, 700.0)
#: main bronchi are followed this far below the carina (mm)
BRONCHUS_LENGTH_MM: Final = 60.0


def find_airway(
    lumen: NDArray[np.bool_],
    body: NDArray[np.bool_],
    view: AxialView,
    body_cx: NDArray[np.float64],
    notes: list[str],
) -> tuple[list[FloatArray], FloatArray | None, list[FloatArray], list[FloatArray]]:
    """Trachea rows (x, y, z, r) from the top down, carina, right and left bronchus rows (array units)."""
    nz = lumen.shape[0]
    sz, sy, sx = view.geometry.spacing_zyx
    px = sy * sx
    trachea: list[FloatArray] = []
    carina = None
    right: list[FloatArray] = []
    left: list[FloatArray] = []
    prev: NDArray[np.bool_] | None = None
    prev_area = 0.0
    k = nz - 1
    # start: from the top, the first slice with a round, midline air column of trachea size inside the body
    while k >= 0 and prev is None:
        lab, n = components(lumen[k] & body[k])
        best = None
        for c in range(1, n + 1):
            m = lab == c
            area = float(m.sum()) * px
            if not TRACHEA_AREA_MM2[0] <= area <= TRACHEA_AREA_MM2[1]:
                continue
            ys, xs = np.nonzero(m)
            if abs(xs.mean() - body_cx[k]) * sx > 25.0:
                continue
            # it must continue downwards for 15 mm (not a bubble in the oesophagus or pharynx)
            below = max(0, k - int(np.ceil(15.0 / sz)))
            if not all(
                (lumen[kk] & ndimage.binary_dilation(m, iterations=2)).any() for kk in range(below, k)
            ):
                continue
            if best is None or area > best[0]:
                best = (area, m)
        if best is not None:
            prev, prev_area = best[1], best[0]
        else:
            k -= 1
    if prev is None:
        notes.append("airway: no trachea-sized midline air column found (scan without the chest, or no air)")
        return trachea, carina, right, left
    gap = 0
    while k >= 0:
        lab, n = components(lumen[k])
        ids = [c for c in np.unique(lab[ndimage.binary_dilation(prev, iterations=1) & (lab > 0)]).tolist()]
        pieces = [(lab == c) for c in ids]
        pieces = [p for p in pieces if float(p.sum()) * px >= 15.0]
        if not pieces:
            # a narrowing (partial volume, secretions) may hide the lumen on a slice or two
            gap += 1
            if gap * sz > 8.0:
                notes.append("airway: the trachea was lost before it divided (no carina)")
                break
            k -= 1
            continue
        gap = 0
        total = float(sum(p.sum() for p in pieces)) * px
        if total > 3.0 * max(prev_area, 80.0):
            notes.append("airway: the lumen leaked into the lung before the carina (low-density lung?)")
            break
        pieces.sort(key=lambda p: -int(p.sum()))
        if len(pieces) >= 2 and not _real_split(lumen, k, pieces[0], pieces[1], prev_area, px):
            pieces = pieces[:1]  # a wisp of air beside the lumen or a partial-volume notch, not the carina
        if len(pieces) >= 2:
            a, b = pieces[0], pieces[1]
            ca, cb = (np.array(ndimage.center_of_mass(p)) for p in (a, b))
            parent = np.array(ndimage.center_of_mass(prev))
            carina = np.array([k + 0.5, parent[0], parent[1]])
            r_piece, l_piece = (a, b) if ca[1] < cb[1] else (b, a)  # smaller x = patient right
            right, left = (
                _follow_bronchus(lumen, r_piece, k, px, sz),
                _follow_bronchus(lumen, l_piece, k, px, sz),
            )
            break
        m = pieces[0]
        ys, xs = np.nonzero(m)
        area = float(m.sum()) * px
        trachea.append(np.array([xs.mean(), ys.mean(), float(k), np.sqrt(area / np.pi)]))
        prev, prev_area = m, area
        k -= 1
    return trachea, carina, right, left


def _real_split(
    lumen: NDArray[np.bool_],
    k: int,
    a: NDArray[np.bool_],
    b: NDArray[np.bool_],
    parent_area: float,
    px: float,
) -> bool:
    """Two lumen pieces are the main bronchi when both are substantial and both go on one slice lower."""
    floor = max(20.0, 0.15 * parent_area)
    if float(a.sum()) * px < floor or float(b.sum()) * px < floor:
        return False
    if k == 0:
        return True
    below = lumen[k - 1]
    return bool((below & ndimage.binary_dilation(a)).any() and (below & ndimage.binary_dilation(b)).any())


def _follow_bronchus(
    lumen: NDArray[np.bool_], start: NDArray[np.bool_], k0: int, px: float, sz: float
) -> list[FloatArray]:
    """Rows (x, y, k, r) of one main bronchus and its continuation (the larger branch at each division,
    the intermediate / lower-lobe trunk) down to ``BRONCHUS_LENGTH_MM`` below the carina."""
    rows = []
    prev = start
    prev_area = float(start.sum()) * px
    for k in range(k0, max(-1, k0 - int(np.ceil(BRONCHUS_LENGTH_MM / sz))), -1):
        lab, _ = components(lumen[k])
        ids = [c for c in np.unique(lab[ndimage.binary_dilation(prev, iterations=1) & (lab > 0)]).tolist()]
        if not ids:
            break
        m = lab == max(ids, key=lambda c: int((lab == c).sum()))
        area = float(m.sum()) * px
        if area > 3.0 * max(prev_area, 40.0):
            break
        ys, xs = np.nonzero(m)
        rows.append(np.array([xs.mean(), ys.mean(), float(k), np.sqrt(area / np.pi)]))
        prev, prev_area = m, area
    return rows
