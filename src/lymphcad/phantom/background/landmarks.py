"""Landmarks of a real CT background (:func:`find_landmarks`): per slice the spine (largest posterior midline
bone component), the trachea and the carina (where the airway splits into two bronchi), the aorta (round enhanced
lumen beside / in front of the spine) and the aortic bifurcation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.geometry import Geometry
from lymphcad.phantom.background.tissue_map import Tissue


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
