"""The tissue map of a real CT background (HU + morphology, :func:`classify_background`): outside, visceral /
subcutaneous fat, thick soft tissue (organ parenchyma, muscle, myocardium, bowel: survives a 2D opening of radius
:data:`THICK_RADIUS_MM`), thin soft tissue (fascia, vessel walls, partial-volume edges: a node may displace it),
enhanced vessel lumen / enhancing organ, bone, lung, gas, airway (trachea and main bronchi: small air components in
the mediastinum, separate from the lungs in each slice) and oesophagus (air or soft tissue behind the trachea / in
front of the spine, where detectable).
"""

from __future__ import annotations

import enum
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage


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
    # a crop's lungs reach the image border (no hole to fill): air darker than AIR_HU whose median is not
    # outside air (≈ −1000 HU; aerated lung −900…−750) lies inside the body
    lab, n = ndimage.label(~body)
    if n:
        med = np.asarray(ndimage.median(sm, lab, np.arange(1, n + 1)), np.float64)
        inner = np.zeros(n + 1, bool)
        inner[1:] = med > LUNG_MAX_GAS_HU
        body |= inner[lab]
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
