"""The aorta from the enhanced lumen: descending and abdominal course, arch top, ascending part, bifurcation."""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.measure.landmarks.view import AxialView, FloatArray, components

#: contrast-enhanced blood: smoothed HU within this range
ENHANCED_HU: Final = (125.0, 700.0)
#: the lower floor tried when no aortic lumen is found above ``ENHANCED_HU[0]`` (weak enhancement)
WEAK_ENHANCED_HU: Final = 95.0
#: the aorta is followed through its core: pixels at least this deep inside the lumen (mm)
AORTA_CORE_MM: Final = 7.5
#: the ascending aorta's centre lies at most this far left of the carina (the pulmonary trunk lies farther left)
ASCENDING_LEFT_MM: Final = 10.0
#: below the thoracic core, the aorta is followed through lumens at least this deep (mm): the abdominal
#: aorta (radius ~9-12 mm) but not the iliac arteries (5-7 mm)
AORTA_MIN_R_MM: Final = 6.5
#: ... whose centre moved at most this far from the previous slice's (mm)
AORTA_STEP_MM: Final = 8.0
#: the abdominal aorta is followed across this many slices where it is too thin (working slices)
AORTA_GAP_SLICES: Final = 2
#: below the chest, aorta seeds lie at most this far left or right of the vertebral body's centre (mm)
ABDOMINAL_AORTA_MM: Final = 30.0
#: an aorta followed down from the carina for less than this (mm) is looked for at other levels too
SHORT_TRACK_MM: Final = 60.0
#: without a carina, aorta seeds are tried at levels this far apart (mm)
SEED_STEP_MM: Final = 25.0


class Calibre:
    """Per slice, computed when first asked: distance (mm) of each mask pixel to the mask's border (2D)."""

    def __init__(self, mask: NDArray[np.bool_], sy: float, sx: float) -> None:
        self.mask, self.sampling = mask, (sy, sx)
        self.cache: dict[int, NDArray[np.float32]] = {}

    def __getitem__(self, k: int) -> NDArray[np.float32]:
        got = self.cache.get(k)
        if got is None:
            m = self.mask[k]
            got = np.zeros(m.shape, dtype=np.float32)
            if m.any():
                ys, xs = np.nonzero(m)
                y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                got[y0:y1, x0:x1] = ndimage.distance_transform_edt(m[y0:y1, x0:x1], sampling=self.sampling)
            self.cache[k] = got
        return got


def find_aorta(
    view: AxialView,
    blood: NDArray[np.bool_],
    depth: Calibre,
    carina: FloatArray | None,
    body_cx: NDArray[np.float64],
    spine: dict[int, FloatArray],
    notes: list[str],
) -> tuple[list[FloatArray], float | None, tuple[float, float, float] | None, float | None]:
    """Descending/abdominal aorta rows (x, y, k, r), arch top (array k), ascending aorta (x, y, r), bifurcation k."""
    nz = blood.shape[0]
    sz, sy, sx = view.geometry.spacing_zyx

    # seed: a round enhanced lumen of aortic calibre left of the spine and in front of it, at the carina or
    # (without a carina) the one of several levels from which the aorta is followed farthest down
    def seeds_at(k: int, min_left_mm: float) -> list[tuple[int, float, float, float]]:
        out = []
        lab, n = components(depth[k] >= 7.0)
        for c in range(1, n + 1):
            m = lab == c
            r = float(depth[k][m].max())
            if not 7.0 <= r <= 22.0:
                continue
            y, x = (float(v) for v in ndimage.center_of_mass(m))
            sp = spine.get(k)
            ref_x = sp[0] if sp is not None else body_cx[k]
            # left of the midline/spine, not in front of the trachea by much (descending, not ascending)
            if (x - ref_x) * sx < min_left_mm or (x - ref_x) * sx > 60.0:
                continue
            if sp is not None and (sp[1] - y) * sy > 60.0:
                continue
            # behind the carina: the ascending aorta and the pulmonary arteries lie in front of it
            if carina is not None and (y - carina[1]) * sy < 5.0:
                continue
            out.append((k, y, x, r))
        return out

    seed = None
    down: tuple[list[FloatArray], float | None] = ([], None)
    if carina is not None:
        cands = seeds_at(int(np.clip(round(carina[0]), 0, nz - 1)), 5.0)
        if cands:
            seed = max(cands, key=lambda c: c[3])
            down = _track_down(depth, seed, sy, sx)
    chest_seed = seed
    # (a carina without an aortic lumen beside it: no contrast at this floor, rather than another level)
    if (carina is None or chest_seed is not None) and len(down[0]) * sz < SHORT_TRACK_MM:
        # no carina (or a false one, e.g. bowel gas, from which no aorta goes down): below the chest the aorta
        # runs in front of the spine, near the midline; of the lumens there, the one followed farthest down
        # (organ vessels end within a few centimetres)
        step = max(1, round(SEED_STEP_MM / sz))
        for k in range(nz - 1 - step // 2, -1, -step):
            sp = spine.get(k)
            for cand in seeds_at(k, 0.0):  # the abdominal aorta lies just left of the midline
                if sp is not None and abs(cand[2] - sp[0]) * sx > ABDOMINAL_AORTA_MM:
                    continue
                track = _track_down(depth, cand, sy, sx)
                if len(track[0]) > len(down[0]):
                    seed, down = cand, track
    if seed is None:
        notes.append("aorta: no enhanced round lumen of aortic calibre beside the spine (no IV contrast?)")
        return [], None, None, None
    # where the aorta was lost (a narrowing at the renal vein's crossing, a crus), it is picked up again below
    # when a lumen of aortic calibre near its last centre goes on down for a while
    rows, bif = down
    for _ in range(3):
        if bif is None or not rows:
            break
        last = rows[-1]
        found: tuple[list[FloatArray], float | None] | None = None
        for k in range(int(last[2]) - AORTA_GAP_SLICES - 1, max(-1, int(last[2]) - round(40.0 / sz)), -1):
            for cand in seeds_at(k, -10.0):
                if np.hypot((cand[2] - last[0]) * sx, (cand[1] - last[1]) * sy) > 2.0 * AORTA_STEP_MM:
                    continue
                track = _track_down(depth, cand, sy, sx)
                if len(track[0]) * sz >= 20.0 and (found is None or len(track[0]) > len(found[0])):
                    found = track
            if found is not None:
                break
        if found is None:
            break
        rows, bif = rows + found[0], found[1]
    down = (rows, bif)
    # the arch and the ascending aorta are read at the carina's seed when there is one
    k0, y0, x0, r0 = chest_seed if chest_seed is not None else seed
    # a core thicker than the arch's branches and the brachiocephalic veins (radius ≤ ~7 mm)
    core_r = max(0.55 * r0, AORTA_CORE_MM)
    # upwards: follow cores of aortic calibre; the highest one reached is the arch
    prev = _core_at(depth[k0], core_r, y0, x0)
    arch_k: float | None = None
    k = k0 + 1
    while prev is not None and k < nz:
        nxt = _overlapping(depth[k] >= core_r, prev)
        if nxt is None:
            arch_k = k - 1 + 0.25 * r0 / sz  # the core stops ~0.8 r below the vessel's upper border
            break
        prev = nxt
        k += 1
    if arch_k is None:
        notes.append("aorta: the arch's top lies above the scan" if k >= nz else "aorta: arch not found")
    # the ascending aorta: the largest calibre core in front of the trachea/carina at the seed level, right
    # of the pulmonary trunk (which lies left of the midline and may be as wide and as bright)
    asc = None
    mid_x = carina[2] if carina is not None else body_cx[k0]
    lab, n = components(depth[k0] >= 7.0)
    for c in range(1, n + 1):
        m = lab == c
        r = float(depth[k0][m].max())
        y, x = (float(v) for v in ndimage.center_of_mass(m))
        if (y - y0) * sy > -25.0 or abs(x - x0) * sx < 10.0 or (x - mid_x) * sx > ASCENDING_LEFT_MM:
            continue
        if asc is None or r > asc[2]:
            asc = (x, y, r)
    # downwards: the descending then abdominal aorta (followed from the seed above)
    rows, bif = down
    return rows, arch_k, asc, bif


def _track_down(
    depth: Calibre, seed: tuple[int, float, float, float], sy: float, sx: float
) -> tuple[list[FloatArray], float | None]:
    """Aorta rows (x, y, k, r) from the seed down, slice by slice, until it divides (the bifurcation k, or
    None when the scan ends first)."""
    k0, y0, x0, r0 = seed
    # a core thicker than the arch's branches and the brachiocephalic veins (radius ≤ ~7 mm)
    core_r = max(0.55 * r0, AORTA_CORE_MM)
    rows: list[FloatArray] = [np.array([x0, y0, float(k0), r0])]
    prev = _core_at(depth[k0], core_r, y0, x0)
    bif: float | None = None
    k = k0 - 1
    while prev is not None and k >= 0:
        lab, _n = components(depth[k] >= core_r)
        ids = np.unique(lab[ndimage.binary_dilation(prev, iterations=2) & (lab > 0)]).tolist()
        if ids:
            m = lab == max(ids, key=lambda c: float(depth[k][lab == c].max()))
        else:
            # the abdominal aorta is narrower than the thoracic core: follow the nearest lumen of aortic
            # calibre; none near (the iliacs part sideways and are thinner) is the bifurcation
            m = _nearest_lumen(depth[k], rows[-1], sy, sx)
            if m is None:
                # a slice or two of a narrower lumen (noise, a touching crus) is not yet the bifurcation
                ahead = [kk for kk in range(k - 1, max(-1, k - 1 - AORTA_GAP_SLICES), -1)]
                found = [(kk, _nearest_lumen(depth[kk], rows[-1], sy, sx)) for kk in ahead]
                found = [(kk, mm) for kk, mm in found if mm is not None]
                if not found:
                    bif = k + 0.5
                    break
                k, m = found[0]
        r = float(depth[k][m].max())
        y, x = (float(v) for v in ndimage.center_of_mass(m))
        rows.append(np.array([x, y, float(k), r]))
        prev = m
        k -= 1
    return rows, bif


def _nearest_lumen(
    depth2d: NDArray[np.float32], last: FloatArray, sy: float, sx: float
) -> NDArray[np.bool_] | None:
    """A disc at the deepest lumen point (the lumen's centre) within ``AORTA_STEP_MM`` of the previous slice's
    aortic centre ``last`` (x, y, k, r), None when that point is less than ``AORTA_MIN_R_MM`` deep. The deepest
    point stays in the aorta where a touching vein (IVC, renal vein) merges with it in the threshold."""
    ny, nx = depth2d.shape
    yy, xx = np.ogrid[:ny, :nx]
    near = ((yy - last[1]) * sy) ** 2 + ((xx - last[0]) * sx) ** 2 <= AORTA_STEP_MM**2
    d = np.where(near, depth2d, 0.0)
    j, i = np.unravel_index(int(np.argmax(d)), d.shape)
    r = float(d[j, i])
    if r < AORTA_MIN_R_MM:
        return None
    return np.asarray(((yy - j) * sy) ** 2 + ((xx - i) * sx) ** 2 <= (0.5 * r) ** 2)


def _core_at(depth2d: NDArray[np.float32], core_r: float, y: float, x: float) -> NDArray[np.bool_] | None:
    lab, _ = components(depth2d >= core_r)
    c = lab[round(y), round(x)]
    return None if c == 0 else np.asarray(lab == c)


def _overlapping(mask2d: NDArray[np.bool_], prev: NDArray[np.bool_]) -> NDArray[np.bool_] | None:
    lab, _ = components(mask2d)
    ids = np.unique(lab[ndimage.binary_dilation(prev, iterations=1) & (lab > 0)])
    if ids.size == 0:
        return None
    keep = np.zeros(int(lab.max()) + 1, dtype=bool)
    keep[ids] = True
    return np.asarray(keep[lab])
