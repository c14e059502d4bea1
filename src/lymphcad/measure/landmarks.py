"""Anatomical landmarks found in the CT itself by image analysis (no model): the body, the airway (trachea,
carina, main bronchi) from air, the aorta (descending, arch top, abdominal course, bifurcation) from the
contrast-enhanced lumen, the spine and the diaphragm domes.

The CT is first viewed on a world-aligned LPS grid at about ``WORK_MM`` in-plane (array axes = world z, y, x,
increasing towards head, posterior and patient left): an axial or permuted/flipped grid is transposed and
flipped by :func:`lymphcad.geometry.reorient_to_lps` (no interpolation), an oblique one is resampled. Every landmark is returned in world LPS mm.
A landmark that is not found is None and :attr:`Landmarks.notes` says why; the station rules then say
"unknown" for what depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.geometry import CTVolume, Geometry, reorient_to_lps

FloatArray = NDArray[np.float64]
#: working in-plane resolution (mm)
WORK_MM: Final = 2.0
#: thin slices are taken every n-th so that the working slice step is about this (mm)
WORK_Z_MM: Final = 2.5
#: airway lumen: smoothed HU below this
AIR_LUMEN_HU: Final = -900.0
#: body: HU above this (then holes filled per slice)
BODY_HU: Final = -400.0
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
#: cortical bone: HU above this
BONE_HU: Final = 700.0
#: trachea cross-section (mm²) accepted at the start of the airway search
TRACHEA_AREA_MM2: Final = (60.0, 700.0)
#: the domes are read on lung columns at least this far from the midline (mm): beside the heart
DOME_LATERAL_MM: Final = 35.0
#: main bronchi are followed this far below the carina (mm)
BRONCHUS_LENGTH_MM: Final = 60.0


@dataclass(frozen=True, eq=False)
class Landmarks:
    """Landmarks in world LPS mm (None / empty where not found; see ``notes``).

    Attributes:
        body_x_mm: the body's midline x (mean of the body's x extent, world).
        trachea: (K, 4) rows (x, y, z, radius) of the trachea's lumen centre from its top down to the carina.
        carina_xyz: the carina (the airway's split), or None.
        bronchus_right, bronchus_left: (M, 4) rows (x, y, z, radius) of the main bronchi below the carina.
        aorta: (L, 4) rows (x, y, z, radius) of the descending/abdominal aorta centre per slice, top down.
        arch_top_z: world z of the upper border of the aortic arch, or None.
        ascending_xy: (x, y, radius) of the ascending aorta just below the carina, or None.
        bifurcation_z: world z where the abdominal aorta ends (iliac bifurcation), or None.
        spine: (S, 3) vertebral body centres per slice.
        dome_right_z, dome_left_z: world z of the top of each diaphragm dome, or None.
        lung_top_z: world z of the lung apices, or None.
        z_range: (lowest, highest) world z of the scan.
        notes: why a landmark is missing.
    """

    body_x_mm: float
    trachea: FloatArray
    carina_xyz: FloatArray | None
    bronchus_right: FloatArray
    bronchus_left: FloatArray
    aorta: FloatArray
    arch_top_z: float | None
    ascending_xy: tuple[float, float, float] | None
    bifurcation_z: float | None
    spine: FloatArray
    dome_right_z: float | None
    dome_left_z: float | None
    lung_top_z: float | None
    z_range: tuple[float, float]
    notes: tuple[str, ...] = field(default=())

    def trachea_at(self, z: float) -> tuple[float, float, float] | None:
        """(x, y, radius) of the trachea at world z (the nearest row; its top or carina end beyond them)."""
        if len(self.trachea) == 0:
            return None
        i = int(np.argmin(np.abs(self.trachea[:, 2] - z)))
        return float(self.trachea[i, 0]), float(self.trachea[i, 1]), float(self.trachea[i, 3])

    def aorta_at(self, z: float) -> tuple[float, float, float] | None:
        """(x, y, radius) of the descending/abdominal aorta at world z, None outside its found course."""
        if len(self.aorta) == 0:
            return None
        zs = self.aorta[:, 2]
        if z > zs.max() + 10.0 or z < zs.min() - 10.0:
            return None
        i = int(np.argmin(np.abs(zs - z)))
        return float(self.aorta[i, 0]), float(self.aorta[i, 1]), float(self.aorta[i, 3])


# -- the working view -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class AxialView:
    """The CT on a world-aligned grid: ``hu`` (z, y, x) float32 and its ``geometry`` (identity direction)."""

    hu: NDArray[np.float32]
    geometry: Geometry

    def world(self, zyx: FloatArray) -> FloatArray:
        """World LPS of (continuous) array positions."""
        return self.geometry.zyx_to_world(zyx)


def axial_view(volume: CTVolume, work_mm: float = WORK_MM) -> AxialView:
    """The CT on a world-aligned LPS grid, in-plane block-averaged to about ``work_mm`` (see module doc)."""
    geom = volume.geometry
    arr = np.asarray(volume.array)
    if geom.is_oblique(tol=0.05):
        lo, hi = geom.world_bounds()
        sp_in = max(work_mm, min(geom.spacing_zyx[1:]))
        sp_z = max(1.0, float(geom.spacing_zyx[0]))
        n = np.maximum(1, np.floor((hi - lo) / np.array([sp_in, sp_in, sp_z]))).astype(int)
        target = Geometry(
            (int(n[2]), int(n[1]), int(n[0])),
            (sp_z, sp_in, sp_in),
            tuple(lo + 0.5 * np.array([sp_in, sp_in, sp_z])),
        )
        hu = np.empty(target.shape_zyx, dtype=np.float32)
        yy, xx = np.meshgrid(np.arange(n[1]), np.arange(n[0]), indexing="ij")
        for k in range(int(n[2])):
            pts = target.zyx_to_world(
                np.stack([np.full(xx.size, k), yy.ravel(), xx.ravel()], axis=1).astype(float)
            )
            src = geom.world_to_zyx(pts).T
            hu[k] = ndimage.map_coordinates(arr, src, order=1, mode="nearest").reshape(yy.shape)
        return AxialView(hu, target)
    view, lps = reorient_to_lps(arr, geom)  # exact: a transpose and flips
    sp_world = [lps.spacing_zyx[2], lps.spacing_zyx[1], lps.spacing_zyx[0]]  # along x, y, z
    fy = max(1, round(work_mm / sp_world[1]))
    fx = max(1, round(work_mm / sp_world[0]))
    fz = max(1, round(WORK_Z_MM / sp_world[2]))
    _nz, ny, nx = view.shape
    ny2, nx2 = ny // fy, nx // fx
    # block mean in-plane (sum of strided views: no float copy of the full volume), every fz-th slice
    sub = view[::fz]
    hu = np.zeros((sub.shape[0], ny2, nx2), dtype=np.float32)
    for dy in range(fy):
        for dx in range(fx):
            hu += sub[:, dy : ny2 * fy : fy, dx : nx2 * fx : fx]
    hu /= float(fy * fx)
    # block centres sit (f - 1) / 2 voxels in from the first voxel
    origin = lps.zyx_to_world(np.array([0.0, (fy - 1) / 2.0, (fx - 1) / 2.0]))
    target = Geometry(
        (int(hu.shape[0]), int(hu.shape[1]), int(hu.shape[2])),
        (sp_world[2] * fz, sp_world[1] * fy, sp_world[0] * fx),
        (float(origin[0]), float(origin[1]), float(origin[2])),
        lps.direction,
    )
    return AxialView(np.ascontiguousarray(hu), target)


# -- helpers ----------------------------------------------------------------------------------------------
#: connectivity within a slice only: one ``ndimage.label`` call labels every slice's components at once
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def _body(hu: NDArray[np.float32]) -> NDArray[np.bool_]:
    """The body per slice: the largest component above BODY_HU with its holes (lungs, airway) filled."""
    lab, n = ndimage.label(hu > BODY_HU, structure=_IN_PLANE)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    # an in-plane component lies in one slice: the largest of each slice
    slice_of = np.array([sl[0].start for sl in ndimage.find_objects(lab)], dtype=np.int64)
    order = np.lexsort((-sizes, slice_of))
    _, first = np.unique(slice_of[order], return_index=True)
    keep = np.zeros(n + 1, dtype=bool)
    keep[order[first] + 1] = True
    # holes filled slice by slice (the in-plane structure does not connect slices)
    return np.asarray(ndimage.binary_fill_holes(keep[lab], structure=_IN_PLANE), dtype=bool)


def _components(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int32], int]:
    lab, n = ndimage.label(mask)
    return np.asarray(lab, dtype=np.int32), int(n)


# -- airway -----------------------------------------------------------------------------------------------
def _find_airway(
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
        lab, n = _components(lumen[k] & body[k])
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
        lab, n = _components(lumen[k])
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
        lab, _ = _components(lumen[k])
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


# -- aorta ------------------------------------------------------------------------------------------------
class _Calibre:
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


def _find_aorta(
    view: AxialView,
    blood: NDArray[np.bool_],
    depth: _Calibre,
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
        lab, n = _components(depth[k] >= 7.0)
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
    lab, n = _components(depth[k0] >= 7.0)
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
    depth: _Calibre, seed: tuple[int, float, float, float], sy: float, sx: float
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
        lab, _n = _components(depth[k] >= core_r)
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
    lab, _ = _components(depth2d >= core_r)
    c = lab[round(y), round(x)]
    return None if c == 0 else np.asarray(lab == c)


def _overlapping(mask2d: NDArray[np.bool_], prev: NDArray[np.bool_]) -> NDArray[np.bool_] | None:
    lab, _ = _components(mask2d)
    ids = np.unique(lab[ndimage.binary_dilation(prev, iterations=1) & (lab > 0)])
    if ids.size == 0:
        return None
    keep = np.zeros(int(lab.max()) + 1, dtype=bool)
    keep[ids] = True
    return np.asarray(keep[lab])


# -- spine, lungs, domes ----------------------------------------------------------------------------------
def _find_spine(
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
    lab, n = ndimage.label((hu > 200.0) & band, structure=_IN_PLANE)
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


def _domes(
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


# -- all together -----------------------------------------------------------------------------------------
def find_landmarks(volume: CTVolume, *, work_mm: float = WORK_MM) -> Landmarks:
    """Find the landmarks of one CT (see the module docstring)."""
    view = axial_view(volume, work_mm)
    hu = view.hu
    sz, sy, sx = view.geometry.spacing_zyx
    notes: list[str] = []
    body = _body(hu)
    cols: NDArray[np.bool_] = np.asarray(body.any(axis=1), dtype=bool)  # (z, x): body columns per slice
    has_body = np.asarray(cols.any(axis=1), dtype=bool)
    first = np.argmax(cols, axis=1)
    last = hu.shape[2] - 1 - np.argmax(cols[:, ::-1], axis=1)
    body_cx = np.where(has_body, 0.5 * (first + last), hu.shape[2] / 2.0).astype(np.float64)
    smooth = ndimage.gaussian_filter(hu, (0.0, 0.5, 0.5))
    lumen = (smooth < AIR_LUMEN_HU) & body
    trachea, carina, right, left = _find_airway(lumen, body, view, body_cx, notes)
    spine = _find_spine(smooth, body, body_cx, sx)
    not_bone = ~ndimage.binary_dilation(smooth > BONE_HU, iterations=1)
    # a weakly enhanced scan (late arterial / portal phase, thin contrast: aorta ~130 HU) leaves too few
    # lumen pixels above the usual floor for an aortic core: then the floor is lowered once
    for floor in (ENHANCED_HU[0], WEAK_ENHANCED_HU):
        tried: list[str] = []
        blood = (smooth >= floor) & (smooth <= ENHANCED_HU[1]) & body & not_bone
        depth = _Calibre(blood, sy, sx)
        aorta, arch_k, asc, bif_k = _find_aorta(view, blood, depth, carina, body_cx, spine, tried)
        if aorta:
            break
    notes += tried
    # lungs: large air regions inside the body that are not the airway
    air = (smooth < -500.0) & body
    lab, n = _components(air)
    lung = np.zeros_like(air)
    if n:
        sizes = np.bincount(lab.ravel())[1:] * view.geometry.voxel_volume_mm3
        keep = np.concatenate([[False], sizes >= 100_000.0])  # > 100 ml
        lung = keep[lab]
    if carina is None and not lung.any():
        notes.append("lungs: none in the scan (not a chest CT)")
    dome_r, dome_l, lung_top = _domes(lung, body_cx, sz, view)
    domes = [d for d in (dome_r, dome_l) if d is not None]
    if bif_k is not None and domes and bif_k > min(domes) - 60.0 / sz:
        notes.append("aorta: lost in the chest or upper abdomen (not a bifurcation)")
        bif_k = None

    def to_world(rows: list[FloatArray]) -> FloatArray:
        if not rows:
            return np.zeros((0, 4))
        a = np.asarray(rows, dtype=np.float64)
        w = view.world(np.stack([a[:, 2], a[:, 1], a[:, 0]], axis=1))
        return np.concatenate([w, a[:, 3:4]], axis=1)

    def z_of(k: float | None) -> float | None:
        return None if k is None else float(view.world(np.array([k, 0.0, 0.0]))[2])

    mid = view.world(np.array([0.0, 0.0, float(np.median(body_cx[has_body])) if has_body.any() else 0.0]))
    spine_rows = [np.array([v[0], v[1], float(k)]) for k, v in sorted(spine.items(), reverse=True)]
    spine_w = (
        view.world(np.stack([[r[2], r[1], r[0]] for r in spine_rows]).astype(float))
        if spine_rows
        else np.zeros((0, 3))
    )
    z_lo = z_of(0.0)
    z_hi = z_of(float(hu.shape[0] - 1))
    assert z_lo is not None and z_hi is not None
    asc_w = None
    if asc is not None:
        p = view.world(np.array([0.0, asc[1], asc[0]]))
        asc_w = (float(p[0]), float(p[1]), float(asc[2]))
    return Landmarks(
        body_x_mm=float(mid[0]),
        trachea=to_world(trachea),
        carina_xyz=None if carina is None else view.world(carina),
        bronchus_right=to_world(right),
        bronchus_left=to_world(left),
        aorta=to_world(aorta),
        arch_top_z=z_of(arch_k),
        ascending_xy=asc_w,
        bifurcation_z=z_of(bif_k),
        spine=spine_w,
        dome_right_z=z_of(dome_r),
        dome_left_z=z_of(dome_l),
        lung_top_z=z_of(lung_top),
        z_range=(min(z_lo, z_hi), max(z_lo, z_hi)),
        notes=tuple(notes),
    )
