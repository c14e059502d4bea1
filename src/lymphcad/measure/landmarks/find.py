"""All landmarks of one CT together: the view, the body, then the airway, spine, aorta, lungs and domes."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.geometry import CTVolume
from lymphcad.measure.landmarks.airway import AIR_LUMEN_HU, find_airway
from lymphcad.measure.landmarks.aorta import ENHANCED_HU, WEAK_ENHANCED_HU, Calibre, find_aorta
from lymphcad.measure.landmarks.skeleton import BONE_HU, find_domes, find_spine
from lymphcad.measure.landmarks.view import WORK_MM, FloatArray, Landmarks, axial_view, body_mask, components


def find_landmarks(volume: CTVolume, *, work_mm: float = WORK_MM) -> Landmarks:
    """Find the landmarks of one CT (see the package docstring, :mod:`lymphcad.measure.landmarks`)."""
    view = axial_view(volume, work_mm)
    hu = view.hu
    sz, sy, sx = view.geometry.spacing_zyx
    notes: list[str] = []
    body = body_mask(hu)
    cols: NDArray[np.bool_] = np.asarray(body.any(axis=1), dtype=bool)  # (z, x): body columns per slice
    has_body = np.asarray(cols.any(axis=1), dtype=bool)
    first = np.argmax(cols, axis=1)
    last = hu.shape[2] - 1 - np.argmax(cols[:, ::-1], axis=1)
    body_cx = np.where(has_body, 0.5 * (first + last), hu.shape[2] / 2.0).astype(np.float64)
    smooth = ndimage.gaussian_filter(hu, (0.0, 0.5, 0.5))
    lumen = (smooth < AIR_LUMEN_HU) & body
    trachea, carina, right, left = find_airway(lumen, body, view, body_cx, notes)
    spine = find_spine(smooth, body, body_cx, sx)
    not_bone = ~ndimage.binary_dilation(smooth > BONE_HU, iterations=1)
    # a weakly enhanced scan (late arterial / portal phase, thin contrast: aorta ~130 HU) leaves too few
    # lumen pixels above the usual floor for an aortic core: then the floor is lowered once
    for floor in (ENHANCED_HU[0], WEAK_ENHANCED_HU):
        tried: list[str] = []
        blood = (smooth >= floor) & (smooth <= ENHANCED_HU[1]) & body & not_bone
        depth = Calibre(blood, sy, sx)
        aorta, arch_k, asc, bif_k = find_aorta(view, blood, depth, carina, body_cx, spine, tried)
        if aorta:
            break
    notes += tried
    # lungs: large air regions inside the body that are not the airway
    air = (smooth < -500.0) & body
    lab, n = components(air)
    lung = np.zeros_like(air)
    if n:
        sizes = np.bincount(lab.ravel())[1:] * view.geometry.voxel_volume_mm3
        keep = np.concatenate([[False], sizes >= 100_000.0])  # > 100 ml
        lung = keep[lab]
    if carina is None and not lung.any():
        notes.append("lungs: none in the scan (not a chest CT)")
    dome_r, dome_l, lung_top = find_domes(lung, body_cx, sz, view)
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
