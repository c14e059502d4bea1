"""What a real CT background holds, for node insertion: a tissue map, landmarks and node stations.

* **Tissue map** (HU + morphology, :func:`classify_background`): outside, visceral / subcutaneous fat, thick
  soft tissue (organ parenchyma, muscle, myocardium, bowel: survives a 2D opening of radius
  :data:`THICK_RADIUS_MM`), thin soft tissue (fascia, vessel walls, partial-volume edges: a node may
  displace it), enhanced vessel lumen / enhancing organ, bone, lung, gas, airway (trachea and main
  bronchi: small air components in the mediastinum, separate from the lungs in each slice) and oesophagus
  (air or soft tissue behind the trachea / in front of the spine, where detectable).
* **Landmarks** (:func:`find_landmarks`): per slice the spine (largest posterior midline bone component),
  the trachea and the carina (where the airway splits into two bronchi), the aorta (round enhanced lumen
  beside / in front of the spine) and the aortic bifurcation.
* **Stations** (:func:`station_masks`): where nodes live, as voxel masks built from the landmarks —
  mediastinal (paratracheal R/L, prevascular, aortopulmonary window, subcarinal, hilar R/L,
  paraoesophageal) and abdominal (para-aortic, paracaval / aortocaval, mesenteric, iliac).

Arrays are (z, y, x) with z increasing superior... only when the geometry says so: every direction here is
taken from the geometry (LPS world), never from the array order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from matplotlib.path import Path as MplPath
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from lymphcad.geometry import Geometry


class Tissue(enum.IntEnum):
    """Classes of the background tissue map (uint8 values)."""

    OUTSIDE = 0
    FAT_VISC = 1
    FAT_SUBCUT = 2
    SOFT = 3
    VESSEL = 4
    BONE = 5
    LUNG = 6
    GAS = 7
    AIRWAY = 8
    OESOPHAGUS = 9
    SOFT_THIN = 10


CLASS_NAMES: Final = {
    0: "outside",
    1: "fat_visceral",
    2: "fat_subcutaneous",
    3: "soft_tissue_thick (organ parenchyma, muscle, bowel)",
    4: "vessel_lumen_or_enhancing_organ",
    5: "bone",
    6: "lung",
    7: "gas",
    8: "airway",
    9: "oesophagus",
    10: "soft_tissue_thin (fascia, vessel wall, partial volume)",
}
#: a node's interior (coverage ≥ 0.5) may lie only in these classes (it displaces fat and thin septa)
NODE_HOST: Final = (Tissue.FAT_VISC, Tissue.SOFT_THIN)
#: classes a node's interior must never overlap
FORBIDDEN: Final = tuple(int(t) for t in Tissue if t not in NODE_HOST)
#: soft tissue thicker than this (2D opening radius, mm) is parenchyma/muscle, thinner is displaceable
THICK_RADIUS_MM: Final = 2.5
#: HU bands (after ~1 mm smoothing)
FAT_HU: Final = (-220.0, -35.0)
VESSEL_HU: Final = 125.0
BONE_HU: Final = 300.0
CORTEX_HU: Final = 550.0
AIR_HU: Final = -400.0
LUNG_MIN_CM3: Final = 100.0
#: an air component whose median HU (after smoothing) is below this is gas, not lung
LUNG_MAX_GAS_HU: Final = -960.0
#: width (mm) of the partial-volume rim of air structures (fat-like HU there is not fat)
PV_RIM_MM: Final = 2.0


def _disk(r_mm: float, dy: float, dx: float) -> NDArray[np.bool_]:
    ry, rx = max(1, round(r_mm / dy)), max(1, round(r_mm / dx))
    yy, xx = np.mgrid[-ry : ry + 1, -rx : rx + 1]
    return np.asarray(((yy * dy) ** 2 + (xx * dx) ** 2) <= r_mm * r_mm + 1e-6)


def smooth_hu(hu: NDArray[Any], spacing_zyx: tuple[float, float, float]) -> NDArray[np.float32]:
    """The HU volume smoothed by ~1 mm in-plane (a sharp kernel's noise would scatter the classes)."""
    dz, dy, dx = spacing_zyx
    return np.asarray(
        ndimage.gaussian_filter(hu.astype(np.float32), (0.6 / dz, 1.0 / dy, 1.0 / dx)), dtype=np.float32
    )


def classify_background(hu: NDArray[Any], spacing_zyx: tuple[float, float, float]) -> NDArray[np.uint8]:
    """The tissue map (:class:`Tissue` values) of a real CT (z, y, x) from HU and morphology."""
    _dz, dy, dx = spacing_zyx
    sm = smooth_hu(hu, spacing_zyx)
    body = sm > AIR_HU
    lab, n = ndimage.label(body)
    if n == 0:
        return np.zeros(sm.shape, np.uint8)
    sizes = ndimage.sum_labels(body, lab, index=np.arange(1, n + 1))
    body = lab == (int(np.argmax(sizes)) + 1)
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    out: NDArray[np.uint8] = np.full(sm.shape, int(Tissue.SOFT), np.uint8)
    out[~body] = Tissue.OUTSIDE
    air = body & (sm < AIR_HU)
    lung = _lungs(air, sm, spacing_zyx)
    lung = ndimage.binary_dilation(lung, iterations=1) & (sm < -200) | lung
    airway, oeso_air = _airways(air & ~lung, lung, body, spacing_zyx)
    out[air] = Tissue.GAS
    out[lung & body] = Tissue.LUNG
    out[airway] = Tissue.AIRWAY
    bone = ndimage.binary_dilation(_bone(sm, body), iterations=1) & body
    out[body & (sm > VESSEL_HU) & ~bone] = Tissue.VESSEL
    out[bone] = Tissue.BONE
    fat = body & (sm > FAT_HU[0]) & (sm < FAT_HU[1])
    out[fat] = Tissue.FAT_VISC
    # thin soft tissue: what a 2D opening of radius THICK_RADIUS_MM removes (walls, septa, edges)
    disk = _disk(THICK_RADIUS_MM, dy, dx)
    for k in range(out.shape[0]):
        soft = out[k] == Tissue.SOFT
        if soft.any():
            thick = ndimage.binary_opening(soft, structure=disk)
            out[k][soft & ~thick] = Tissue.SOFT_THIN
    # the partial-volume rim of lung, airway and gas (fat-like HU) belongs to them, not to fat
    rim = _disk(PV_RIM_MM, dy, dx)
    for k in range(out.shape[0]):
        for cls in (Tissue.LUNG, Tissue.AIRWAY, Tissue.GAS):
            m = out[k] == cls
            if m.any():
                grow = ndimage.binary_dilation(m, structure=rim) & body[k]
                grow &= (out[k] == Tissue.FAT_VISC) | (out[k] == Tissue.SOFT_THIN)
                out[k][grow] = cls
    _mark_oesophagus(out, oeso_air, spacing_zyx, _superior_step_of(spacing_zyx))
    _mark_subcutaneous(out, body, dx)
    return out


def _bone(sm: NDArray[np.float32], body: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Per slice, components above BONE_HU with ≥ 3 % cortical voxels (> CORTEX_HU): bone; the rest of
    the bright voxels is contrast-filled lumen (a CTA-like aorta reaches 400–500 HU, cortex ≥ 700 at 1 mm)."""
    bright = body & (sm > BONE_HU)
    out = np.zeros(sm.shape, bool)
    for k in range(sm.shape[0]):
        if not bright[k].any():
            continue
        lab, n = ndimage.label(bright[k])
        size = ndimage.sum_labels(bright[k], lab, index=np.arange(1, n + 1))
        cortex = ndimage.sum_labels(sm[k] > CORTEX_HU, lab, index=np.arange(1, n + 1))
        keep = np.zeros(n + 1, bool)
        keep[1:] = (cortex >= 3) & (cortex >= 0.03 * size)
        out[k] = keep[lab]
    return out


def _lungs(
    air: NDArray[np.bool_], sm: NDArray[np.float32], spacing_zyx: tuple[float, float, float]
) -> NDArray[np.bool_]:
    """Air components > 100 cm³ inside the body, minus the central airways they may connect to."""
    dz, dy, dx = spacing_zyx
    lab, n = ndimage.label(air)
    if n == 0:
        return np.zeros(air.shape, bool)
    vol = ndimage.sum_labels(air, lab, index=np.arange(1, n + 1)) * dz * dy * dx / 1000.0
    keep = np.zeros(n + 1, bool)
    keep[1:] = vol > LUNG_MIN_CM3
    # bowel and stomach gas is darker than aerated lung (≈ −1000 against −900…−750 HU with its vessels)
    for c in (int(v) + 1 for v in np.nonzero(keep[1:])[0]):
        if float(ndimage.median(sm, lab, c)) < LUNG_MAX_GAS_HU:
            keep[c] = False
    lung = keep[lab]
    # per slice, small (< 12 cm²) lung pieces in the middle third are airway seen through a thin wall
    out = lung.copy()
    for k in range(lung.shape[0]):
        if not lung[k].any():
            continue
        l2, n2 = ndimage.label(lung[k])
        if n2 < 2:
            continue
        areas = ndimage.sum_labels(lung[k], l2, index=np.arange(1, n2 + 1)) * dy * dx / 100.0
        big = areas.max()
        for i in range(n2):
            if areas[i] < 12.0 and big > 4 * areas[i]:
                out[k][l2 == i + 1] = False
    return np.asarray(out, bool)


def _airways(
    air: NDArray[np.bool_],
    lung: NDArray[np.bool_],
    body: NDArray[np.bool_],
    spacing_zyx: tuple[float, float, float],
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(airway, oesophageal air): small air components between the lungs (2D), grouped in 3D.

    The largest 3D group that spans ≥ 10 mm is the trachea with its main bronchi; other groups within
    30 mm behind it are air in the oesophagus.
    """
    dz, dy, dx = spacing_zyx
    cand = np.zeros(air.shape, bool)
    for k in range(air.shape[0]):
        if not air[k].any() or not body[k].any():
            continue
        _ys, xs = np.nonzero(body[k])
        cx = 0.5 * (xs.min() + xs.max())
        half_w = 0.5 * (xs.max() - xs.min())
        l2, n2 = ndimage.label(air[k])
        if n2 == 0:
            continue
        areas = ndimage.sum_labels(air[k], l2, index=np.arange(1, n2 + 1)) * dy * dx / 100.0
        cms = ndimage.center_of_mass(air[k], l2, np.arange(1, n2 + 1))
        for i in range(n2):
            if 0.2 <= areas[i] <= 12.0 and abs(cms[i][1] - cx) < 0.35 * half_w:
                cand[k][l2 == i + 1] = True
    lab, n = ndimage.label(cand)
    if n == 0:
        return cand, np.zeros(air.shape, bool)
    objs = ndimage.find_objects(lab)
    vols = ndimage.sum_labels(cand, lab, index=np.arange(1, n + 1))
    best, best_v = 0, 0.0
    for i, sl in enumerate(objs):
        if sl is None:
            continue
        if (sl[0].stop - sl[0].start) * dz >= 10.0 and vols[i] > best_v:
            best, best_v = i + 1, float(vols[i])
    if best == 0:
        return np.zeros(air.shape, bool), np.zeros(air.shape, bool)
    airway = lab == best
    oeso = np.zeros(air.shape, bool)
    # air behind the trachea, slice by slice
    ay = np.nonzero(airway)[1]
    for i in range(1, n + 1):
        if i == best or objs[i - 1] is None:
            continue
        comp = lab[objs[i - 1]] == i
        zz, yy, _xx = np.nonzero(comp)
        k0 = objs[i - 1][0].start
        ks = np.unique(zz + k0)
        shared = [k for k in ks if airway[k].any()]
        ref_y = (
            float(np.mean([np.nonzero(airway[k])[0].max() for k in shared])) if shared else float(ay.max())
        )
        dyy = (float(np.mean(yy + objs[i - 1][1].start)) - ref_y) * dy
        if 0.0 < dyy < 30.0:
            oeso[objs[i - 1]] |= comp
    return airway, oeso


def _superior_step_of(spacing_zyx: tuple[float, float, float]) -> int:
    """The classifier works on arrays only: it assumes k increases superior (callers flip when not)."""
    return 1


def _mark_oesophagus(
    out: NDArray[np.uint8], oeso_air: NDArray[np.bool_], spacing_zyx: tuple[float, float, float], up: int
) -> None:
    """Oesophagus: its air, and the thick soft-tissue blob (≤ 7 cm²) touching it or right behind the
    trachea, tracked slice by slice from the neck down (superior → inferior) below the carina."""
    _dz, dy, dx = spacing_zyx
    out[oeso_air & (out == Tissue.GAS)] = Tissue.OESOPHAGUS
    nz = out.shape[0]
    order = range(nz - 1, -1, -1) if up > 0 else range(nz)
    prev: tuple[float, float] | None = None
    for k in order:
        trach = out[k] == Tissue.AIRWAY
        seed = oeso_air[k].copy()
        if trach.any() and not seed.any():
            ys, xs = np.nonzero(trach)
            if ys.size * dy * dx < 600.0:  # a single trachea section, not the bronchi
                y1, x0 = int(ys.max()), round(xs.mean())
                for step in range(1, max(2, round(12.0 / dy))):
                    y = y1 + step
                    if y < out.shape[1] and out[k, y, x0] == Tissue.SOFT:
                        seed[y, x0] = True
                        break
        if not seed.any() and prev is not None:
            j, i = round(prev[0]), round(prev[1])
            if out[k, j, i] in (Tissue.SOFT, Tissue.GAS):
                seed[j, i] = True
        if not seed.any():
            prev = None
            continue
        soft = (out[k] == Tissue.SOFT) | (out[k] == Tissue.OESOPHAGUS)
        grow = ndimage.binary_dilation(seed, structure=_disk(1.5, dy, dx))
        l2, _ = ndimage.label(soft)
        ids = np.unique(l2[grow & soft])
        found = np.zeros(soft.shape, bool)
        for i in ids[ids > 0]:
            comp = l2 == i
            if comp.sum() * dy * dx <= 700.0:  # ≤ 7 cm²: an oesophagus section, not the heart or a muscle
                found |= comp
        if not found.any() and prev is not None:
            # merged with a neighbour (left atrium, aortic wall): the soft tissue within 9 mm of the last centre
            yy, xx = np.ogrid[: soft.shape[0], : soft.shape[1]]
            near = ((yy - prev[0]) * dy) ** 2 + ((xx - prev[1]) * dx) ** 2 <= 81.0
            cand = soft & near
            if 50.0 <= cand.sum() * dy * dx <= 400.0:
                found = cand
        if found.any():
            out[k][found] = Tissue.OESOPHAGUS
            jj, ii = np.nonzero(found)
            prev = (float(jj.mean()), float(ii.mean()))
        else:
            prev = None


def _mark_subcutaneous(out: NDArray[np.uint8], body: NDArray[np.bool_], dx: float) -> None:
    """Fat connected (per slice) to a 4 mm skin band is subcutaneous."""
    for k in range(out.shape[0]):
        bk = body[k]
        if not bk.any():
            continue
        skin = bk & ~ndimage.binary_erosion(bk, iterations=max(1, round(4.0 / dx)))
        fk = out[k] == Tissue.FAT_VISC
        lab2, n2 = ndimage.label(fk | skin)
        if n2 == 0:
            continue
        touch = np.unique(lab2[skin])
        touch = touch[touch > 0]
        out[k][np.isin(lab2, touch) & fk] = Tissue.FAT_SUBCUT


# -- landmarks ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Landmarks:
    """Landmarks of a background in voxel (k, j, i) and world LPS mm; absent ones are None.

    ``per_slice_*`` arrays hold NaN where the structure is absent in a slice.
    """

    carina_k: int | None
    carina_xyz: tuple[float, float, float] | None
    trachea_ji: NDArray[np.float64]  # (nz, 2) trachea centroid (j, i) per slice, NaN where absent
    spine_ji: NDArray[np.float64]  # (nz, 2) vertebral-body centre per slice
    spine_front_j: NDArray[np.float64]  # (nz,) anterior edge of the vertebral body (row index)
    aorta_ji: NDArray[np.float64]  # (nz, 2) abdominal/descending aorta centre per slice
    bifurcation_k: int | None  # lowest slice with the abdominal aorta (iliac arteries below)
    lung_slices: NDArray[np.bool_]  # (nz,) slices with ≥ 20 cm² of lung
    superior_step: int  # +1 when increasing k goes superior (towards the head), else −1

    def summary(self) -> dict[str, Any]:
        """JSON-ready landmark summary (for extra/ and messages)."""
        return {
            "carina_k": self.carina_k,
            "carina_xyz": None if self.carina_xyz is None else [round(v, 1) for v in self.carina_xyz],
            "trachea_slices": int(np.isfinite(self.trachea_ji[:, 0]).sum()),
            "spine_slices": int(np.isfinite(self.spine_ji[:, 0]).sum()),
            "aorta_slices": int(np.isfinite(self.aorta_ji[:, 0]).sum()),
            "bifurcation_k": self.bifurcation_k,
            "lung_slices": int(self.lung_slices.sum()),
        }


def _superior_step(geom: Geometry) -> int:
    """+1 when k increases towards the head (world z, LPS superior = +z)."""
    z0 = geom.zyx_to_world([0.0, 0.0, 0.0])[2]
    z1 = geom.zyx_to_world([1.0, 0.0, 0.0])[2]
    return 1 if z1 > z0 else -1


def find_landmarks(tissue: NDArray[np.uint8], hu_smooth: NDArray[np.float32], geom: Geometry) -> Landmarks:
    """Spine, trachea, carina, aorta and aortic bifurcation of a background (see :class:`Landmarks`)."""
    nz = tissue.shape[0]
    dz, dy, dx = geom.spacing_zyx
    up = _superior_step(geom)
    nan2 = np.full((nz, 2), np.nan)
    trachea, spine, aorta = nan2.copy(), nan2.copy(), nan2.copy()
    spine_front = np.full(nz, np.nan)
    lung_slices = (tissue == Tissue.LUNG).sum(axis=(1, 2)) * dy * dx / 100.0 >= 20.0
    airway = tissue == Tissue.AIRWAY
    n_airway = np.zeros(nz, int)
    for k in range(nz):
        body = tissue[k] != Tissue.OUTSIDE
        if body.sum() * dy * dx < 2000.0:
            continue
        by, bx = np.nonzero(body)
        cx, cy = 0.5 * (bx.min() + bx.max()), 0.5 * (by.min() + by.max())
        # spine: the largest bone component in the posterior half near the midline
        # (bone or bright lumen: at 3–5 mm the vertebral cortex can blur below the cortical threshold)
        bone = (tissue[k] == Tissue.BONE) | (tissue[k] == Tissue.VESSEL)
        l2, n2 = ndimage.label(bone)
        if n2:
            cms = ndimage.center_of_mass(bone, l2, np.arange(1, n2 + 1))
            areas = ndimage.sum_labels(bone, l2, index=np.arange(1, n2 + 1))
            best = -1
            for i in range(n2):
                jy, ix = cms[i]
                if jy > cy and abs(ix - cx) * dx < 45.0 and (best < 0 or areas[i] > areas[best]):
                    best = i
            if best >= 0 and areas[best] * dy * dx > 150.0:
                comp = l2 == best + 1
                jj, ii = np.nonzero(comp)
                ic = float(np.median(ii))
                col = comp[:, max(0, int(ic) - 3) : int(ic) + 4].any(axis=1)
                front = float(np.nonzero(col)[0].min())
                spine_front[k] = front
                spine[k] = (front + 15.0 / dy, ic)  # the vertebral body's centre ≈ 15 mm behind its front
        # trachea / bronchi
        if airway[k].any():
            _l3, n3 = ndimage.label(airway[k])
            n_airway[k] = n3
            jj, ii = np.nonzero(airway[k])
            trachea[k] = (float(jj.mean()), float(ii.mean()))
        # aorta: a round enhanced lumen in front of / beside the spine (unenhanced CT: a round soft-tissue section)
        for cls_ in (Tissue.VESSEL, Tissue.SOFT):
            if not np.isfinite(spine_front[k]) or np.isfinite(aorta[k, 0]):
                break
            ves = tissue[k] == cls_
            if cls_ == Tissue.SOFT:
                ves = ndimage.binary_opening(ves, iterations=1)
            l4, _n4 = ndimage.label(ves)
            best_d = np.inf
            for i, sl in enumerate(ndimage.find_objects(l4)):
                if sl is None:
                    continue
                comp = l4[sl] == i + 1
                area = comp.sum() * dy * dx
                h, w = (sl[0].stop - sl[0].start) * dy, (sl[1].stop - sl[1].start) * dx
                if not (150.0 <= area <= 1500.0) or max(h, w) > 1.6 * min(h, w) + 4.0:
                    continue
                if area < 0.6 * np.pi * (0.25 * (h + w)) ** 2:
                    continue  # not round enough
                jc = 0.5 * (sl[0].start + sl[0].stop)
                ic = 0.5 * (sl[1].start + sl[1].stop)
                dj = (spine_front[k] - jc) * dy  # mm in front of the vertebral body
                di = (ic - spine[k][1]) * dx  # mm to the patient's left (+x in LPS when i increases x)
                # in front of the vertebral body (abdomen), or beside it on the left (descending thoracic aorta)
                if (2.0 < dj < 45.0 and -25.0 < di < 35.0) or (-40.0 < dj < 45.0 and 15.0 < di < 50.0):
                    d = abs(dj - 10.0) + abs(di)
                    if d < best_d:
                        best_d, aorta[k] = d, (jc, ic)
    # carina: going down (inferior), the first slice where the airway splits in two after a single trachea
    carina_k: int | None = None
    order = list(range(nz)) if up < 0 else list(range(nz - 1, -1, -1))  # superior → inferior
    seen_single = False
    for k in order:
        if n_airway[k] == 1:
            seen_single = True
        elif n_airway[k] >= 2 and seen_single:
            carina_k = k - up  # the last single-lumen slice above the split
            break
    if carina_k is None and seen_single:
        ks = [k for k in order if n_airway[k] >= 1]
        carina_k = ks[-1] if ks else None
    carina_xyz = None
    if carina_k is not None and np.isfinite(trachea[carina_k, 0]):
        j, i = trachea[carina_k]
        carina_xyz = tuple(float(v) for v in geom.zyx_to_world([float(carina_k), j, i]))
    # bifurcation: the most inferior aorta slice below the lungs, when the volume continues below it
    bif: int | None = None
    lows = np.nonzero(lung_slices)[0]
    if lows.size:
        lowest = int(lows.min()) if up > 0 else int(lows.max())
        abd_ks = set(range(0, lowest)) if up > 0 else set(range(lowest + 1, nz))
    else:
        abd_ks = set(range(nz))
    ab = [k for k in order if np.isfinite(aorta[k, 0]) and k in abd_ks]
    if ab:
        last = ab[-1]
        below = order[order.index(last) + 1 :]
        if len(below) * dz >= 15.0:
            bif = last
    return Landmarks(
        carina_k,
        carina_xyz,  # type: ignore[arg-type]
        trachea,
        spine,
        spine_front,
        aorta,
        bif,
        lung_slices,
        up,
    )


# -- stations -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StationSpec:
    """A nodal station of the insertion: name, region, sampling weight (relative, within the region)."""

    name: str
    region: str
    weight: float


STATIONS: Final = (
    StationSpec("paratracheal_r", "mediastinal", 0.24),
    StationSpec("paratracheal_l", "mediastinal", 0.12),
    StationSpec("prevascular", "mediastinal", 0.08),
    StationSpec("ap_window", "mediastinal", 0.08),
    StationSpec("subcarinal", "mediastinal", 0.20),
    StationSpec("hilar_r", "mediastinal", 0.10),
    StationSpec("hilar_l", "mediastinal", 0.08),
    StationSpec("paraoesophageal", "mediastinal", 0.06),
    StationSpec("para_aortic", "abdominal", 0.30),
    StationSpec("paracaval", "abdominal", 0.25),
    StationSpec("mesenteric", "abdominal", 0.25),
    StationSpec("iliac", "abdominal", 0.20),
)
STATION_BY_NAME: Final = {s.name: s for s in STATIONS}


def _fill_nan(a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per column, NaNs replaced by linear interpolation between the nearest finite slices (edges held)."""
    out = a.copy()
    idx = np.arange(a.shape[0])
    for c in range(a.shape[1]):
        ok = np.isfinite(a[:, c])
        if ok.sum() == 0:
            continue
        out[:, c] = np.interp(idx, idx[ok], a[ok, c])
    return out


def station_masks(tissue: NDArray[np.uint8], lm: Landmarks, geom: Geometry) -> dict[str, NDArray[np.bool_]]:
    """Voxel masks (visceral fat and thin soft tissue) of every station the landmarks allow.

    Offsets are in mm from the landmarks, in the patient frame (LPS: x to the patient's left, y posterior,
    z superior), converted through the geometry's spacing and axis signs; a station whose landmarks are
    missing is left out.
    """
    nz, ny, nx = tissue.shape
    dz, dy, dx = geom.spacing_zyx
    # patient-direction signs of the array axes (identity-like grids only: insertion refuses oblique ones)
    sx = float(np.sign(geom.zyx_to_world([0.0, 0.0, 1.0])[0] - geom.zyx_to_world([0.0, 0.0, 0.0])[0]))
    sy = float(np.sign(geom.zyx_to_world([0.0, 1.0, 0.0])[1] - geom.zyx_to_world([0.0, 0.0, 0.0])[1]))
    host = np.isin(tissue, np.asarray(NODE_HOST, dtype=np.uint8))
    jj = np.arange(ny, dtype=np.float64)[:, None]
    ii = np.arange(nx, dtype=np.float64)[None, :]
    out: dict[str, NDArray[np.bool_]] = {}

    def dist(mask: NDArray[np.bool_]) -> NDArray[np.float32]:
        if not mask.any():
            return np.full(mask.shape, np.inf, np.float32)
        return np.asarray(ndimage.distance_transform_edt(~mask, sampling=(dz, dy, dx)), dtype=np.float32)

    up = lm.superior_step
    z_rel = (np.arange(nz) - (lm.carina_k if lm.carina_k is not None else 0)) * dz * up  # mm above the carina
    if lm.carina_k is not None and np.isfinite(lm.trachea_ji[:, 0]).any():
        tr = _fill_nan(lm.trachea_ji)
        med = mediastinum(tissue, lm) & host
        if med.any():
            # distances only inside the mediastinum's bounding box (+ 20 mm)
            zz, yy, xx = np.nonzero(med)
            pad = (round(20.0 / dz) + 1, round(20.0 / dy) + 1, round(20.0 / dx) + 1)
            box = tuple(
                slice(max(0, int(a.min()) - p), min(n, int(a.max()) + p + 1))
                for a, p, n in zip((zz, yy, xx), pad, tissue.shape, strict=True)
            )
            tb = tissue[box]
            d_air, d_ves = dist(tb == Tissue.AIRWAY), dist(tb == Tissue.VESSEL)
            d_lung, d_oes = dist(tb == Tissue.LUNG), dist(tb == Tissue.OESOPHAGUS)
            mb = med[box]
            names = (
                "paratracheal_r",
                "paratracheal_l",
                "prevascular",
                "ap_window",
                "subcarinal",
                "hilar_r",
                "hilar_l",
                "paraoesophageal",
            )
            masks = {n: np.zeros(tissue.shape, bool) for n in names}
            jb = jj[box[1]]
            ib = ii[:, box[2]]
            for kb in range(mb.shape[0]):
                k = kb + box[0].start
                m = mb[kb]
                if not m.any():
                    continue
                tj, ti = tr[k]
                xl = (ib - ti) * dx * sx  # mm to the patient's left of the trachea
                yp = (jb - tj) * dy * sy  # mm behind the trachea
                z = z_rel[k]
                near_air = d_air[kb] <= 15.0
                near_ves = d_ves[kb] <= 12.0
                sl2 = (k, box[1], box[2])
                if 0.0 < z <= 80.0:
                    masks["paratracheal_r"][sl2] = m & near_air & (xl < -3.0) & (np.abs(yp) < 25.0)
                    masks["paratracheal_l"][sl2] = m & near_air & (xl > 3.0) & (np.abs(yp) < 25.0)
                if -20.0 < z <= 70.0:
                    masks["prevascular"][sl2] = m & near_ves & (yp < -25.0) & (np.abs(xl) < 45.0)
                if -15.0 <= z <= 30.0:
                    masks["ap_window"][sl2] = (
                        m & near_ves & (xl > 8.0) & (xl < 45.0) & (yp > -35.0) & (yp < 10.0)
                    )
                if -45.0 <= z <= 0.0:
                    masks["subcarinal"][sl2] = m & (np.abs(xl) < 22.0) & (yp > -12.0) & (yp < 35.0)
                if -50.0 <= z <= 10.0:
                    hil = m & (d_lung[kb] <= 15.0) & (near_ves | near_air) & (np.abs(xl) > 22.0)
                    masks["hilar_r"][sl2] = hil & (xl < 0)
                    masks["hilar_l"][sl2] = hil & (xl > 0)
                if z < -30.0:
                    # beside the oesophagus where it is found; else the posterior mediastinum it runs through
                    # (up to 30 mm in front of the vertebral body, within 35 mm of the midline)
                    post = np.zeros_like(m)
                    if np.isfinite(lm.spine_front_j[k]):
                        ys = (jb - lm.spine_front_j[k]) * dy * sy
                        post = (ys > -30.0) & (ys < 0.0) & (np.abs(xl) < 35.0)
                    masks["paraoesophageal"][sl2] = m & (((d_oes[kb] <= 15.0) & (np.abs(xl) < 40.0)) | post)
            out.update(masks)
    # abdomen: aorta-relative stations in the slices below the lungs
    abd = abdominal_slices(lm)
    if np.isfinite(lm.aorta_ji[abd, 0]).any():
        ao = _fill_nan(np.where(abd[:, None], lm.aorta_ji, np.nan))
        has_ao = np.isfinite(lm.aorta_ji[:, 0]) & abd
        ks = np.nonzero(abd)[0]
        sub = slice(int(ks.min()), int(ks.max()) + 1)
        d_ves = np.full(tissue.shape, np.inf, np.float32)
        d_ves[sub] = dist(tissue[sub] == Tissue.VESSEL)
        names_a = ("para_aortic", "paracaval", "mesenteric", "iliac")
        masks_a = {n: np.zeros(tissue.shape, bool) for n in names_a}
        order = list(range(nz)) if up < 0 else list(range(nz - 1, -1, -1))  # superior → inferior
        below_bif = np.zeros(nz, bool)
        if lm.bifurcation_k is not None:
            below_bif[order[order.index(lm.bifurcation_k) + 1 :]] = True
        central = _central_ellipse(tissue, 0.7)
        for k in (int(v) for v in ks):
            fat = (tissue[k] == Tissue.FAT_VISC) & central[k]
            if not fat.any():
                continue
            aj, ai = ao[k]
            xl = (ii - ai) * dx * sx
            yp = (jj - aj) * dy * sy
            if below_bif[k]:
                masks_a["iliac"][k] = fat & (d_ves[k] <= 12.0) & (np.abs(xl) < 110.0) & (np.abs(yp) < 60.0)
                continue
            if not has_ao[k]:
                continue
            masks_a["para_aortic"][k] = fat & (xl > 5.0) & (xl < 40.0) & (np.abs(yp) < 30.0)
            masks_a["paracaval"][k] = fat & (xl < -5.0) & (xl > -55.0) & (np.abs(yp) < 30.0)
            masks_a["mesenteric"][k] = (
                fat & (d_ves[k] <= 10.0) & (yp < -25.0) & (yp > -120.0) & (np.abs(xl) < 70.0)
            )
        out.update(masks_a)
    return {k: v for k, v in out.items() if v.any()}


def abdominal_slices(lm: Landmarks) -> NDArray[np.bool_]:
    """Slices below the lowest slice with lung (all slices when there is no lung)."""
    nz = lm.lung_slices.shape[0]
    ks = np.nonzero(lm.lung_slices)[0]
    out = np.zeros(nz, bool)
    if ks.size == 0:
        out[:] = True
    elif lm.superior_step > 0:
        out[: int(ks.min())] = True
    else:
        out[int(ks.max()) + 1 :] = True
    return out


def mediastinum(tissue: NDArray[np.uint8], lm: Landmarks) -> NDArray[np.bool_]:
    """Per lung slice: inside the convex hull of both lungs and not lung (hila included, chest wall not)."""
    out = np.zeros(tissue.shape, bool)
    for k in np.nonzero(lm.lung_slices)[0]:
        lung = tissue[k] == Tissue.LUNG
        edge = lung & ~ndimage.binary_erosion(lung)
        pts = np.argwhere(edge)[::3].astype(np.float64)
        if len(pts) < 3:
            continue
        try:
            hull = ConvexHull(pts)
        except QhullError:
            continue
        poly = MplPath(pts[hull.vertices])
        j0, i0 = pts.min(axis=0).astype(int)
        j1, i1 = pts.max(axis=0).astype(int)
        gj, gi = np.mgrid[j0 : j1 + 1, i0 : i1 + 1]
        inside = poly.contains_points(np.stack([gj.ravel(), gi.ravel()], axis=1)).reshape(gj.shape)
        out[k, j0 : j1 + 1, i0 : i1 + 1] = inside
        out[k] &= ~lung
    return out


def _central_ellipse(tissue: NDArray[np.uint8], frac: float) -> NDArray[np.bool_]:
    """Per slice: inside an ellipse of ``frac`` × the body's half-extents (excludes flank and wall fat)."""
    out = np.zeros(tissue.shape, bool)
    yy, xx = np.mgrid[0 : tissue.shape[1], 0 : tissue.shape[2]]
    for k in range(tissue.shape[0]):
        b = tissue[k] != Tissue.OUTSIDE
        if b.sum() < 100:
            continue
        ys, xs = np.nonzero(b)
        cy, cx = 0.5 * (ys.min() + ys.max()), 0.5 * (xs.min() + xs.max())
        ay, ax = max(1.0, 0.5 * (ys.max() - ys.min())), max(1.0, 0.5 * (xs.max() - xs.min()))
        out[k] = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 < frac * frac
    return out


def background_region(tissue: NDArray[np.uint8], lm: Landmarks, geom: Geometry) -> str:
    """``mediastinal`` when the background shows a trachea with lungs around it, else ``abdominal``."""
    dz = geom.spacing_zyx[0]
    chest = lm.carina_k is not None and int(lm.lung_slices.sum()) * dz >= 40.0
    lungless = int((~lm.lung_slices).sum()) * dz
    if chest and lungless < 0.5 * tissue.shape[0] * dz:
        return "mediastinal"
    return "abdominal"
