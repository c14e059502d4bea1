"""RECIST measurement of a node from its voxel mask (spec §6.7) and the annotation row of a placed node."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.cohort import Annotation


def _feret(pts: NDArray[np.float64], sp: float) -> tuple[float, float]:
    """(LAD, SAD) of a 2D point set (pixel centres in mm): longest diameter and its perpendicular width."""
    if len(pts) == 1:
        return sp, sp
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    v = pts[j] - pts[i]
    lad = float(np.sqrt(d2[i, j]))
    if lad == 0:
        return sp, sp
    n = np.array([-v[1], v[0]]) / lad
    proj = pts @ n
    return lad + sp, float(proj.max() - proj.min()) + sp


@dataclass(frozen=True)
class MaskMeasurement:
    """What :func:`measure_mask` measures on one node mask (mm, voxel indices of the mask's array)."""

    lad_mm: float
    sad_mm: float
    #: the axial slice (z index) of the RECIST measurement
    recist_slice: int
    #: where a reader puts the mark: mean (x, y) of the RECIST slice's voxels and that slice (i, j, k)
    reader_ijk: tuple[float, float, float]
    centroid_zyx: tuple[float, float, float]
    #: 3D axes (mm) from the voxel covariance, longest first
    axes3d_mm: tuple[float, float, float]
    volume_mm3: float
    n_vox: int


def measure_mask(mask: NDArray[np.bool_], spacing_zyx: tuple[float, float, float]) -> MaskMeasurement:
    """RECIST measurement of one node mask (z, y, x): LAD on the axial slice where it is longest, SAD ⟂ it."""
    dz, dy, dx = spacing_zyx
    zz, yy, xx = np.nonzero(mask)
    best = (-1.0, 0.0, -1)
    for k in np.unique(zz):
        sl = mask[k]
        edge = sl & ~ndimage.binary_erosion(sl)
        ys, xs = np.nonzero(edge)
        pts = np.stack([xs * dx, ys * dy], axis=1).astype(float)
        lad, sad = _feret(pts, 0.5 * (dx + dy))
        if lad > best[0]:
            best = (lad, sad, int(k))
    lad, sad, kbest = best
    sel = zz == kbest
    reader = (float(np.mean(xx[sel])), float(np.mean(yy[sel])), float(kbest))
    coords = np.stack([xx * dx, yy * dy, zz * dz], axis=1).astype(float)
    cov = np.cov(coords.T) if len(coords) > 3 else np.eye(3)
    ev = np.sort(np.linalg.eigvalsh(cov))[::-1]
    a, b, c = (float(2 * np.sqrt(max(5 * e, 0.0))) for e in ev)
    return MaskMeasurement(
        lad_mm=float(lad),
        sad_mm=float(sad),
        recist_slice=kbest,
        reader_ijk=reader,
        centroid_zyx=(float(zz.mean()), float(yy.mean()), float(xx.mean())),
        axes3d_mm=(a, b, c),
        volume_mm3=float(mask.sum() * dx * dy * dz),
        n_vox=int(mask.sum()),
    )


def record_annotation(case_id: str, rec: dict[str, Any]) -> Annotation:
    """An annotations.csv row for a placed node record (id, xyz, sad, lad, region); label_id = node id."""
    return Annotation(
        case_id,
        rec["id"],
        tuple(rec["xyz"]),
        round(rec["sad"], 3),
        round(rec["lad"], 3),
        rec["region"],
        rec["id"],
    )
