"""Node stations of a real CT background (:func:`station_masks`): where nodes live, as voxel masks built from
the landmarks — mediastinal (paratracheal R/L, prevascular, aortopulmonary window, subcarinal, hilar R/L,
paraoesophageal) and abdominal (para-aortic, paracaval / aortocaval, mesenteric, iliac) — and the region a
background shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from matplotlib.path import Path as MplPath
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from lymphcad.geometry import Geometry
from lymphcad.phantom.background.landmarks import Landmarks
from lymphcad.phantom.background.tissue_map import NODE_HOST, Tissue


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
