"""RECIST 1.1 size of a node mask, measured in world axial planes on the original image grid.

Long axis: the longest in-plane diameter, in the axial slice (plane of constant world z) where that diameter
is largest. Short axis: the width of the mask perpendicular to the long axis in the same slice (the caliper
width; for the convex shapes of nodes it equals the longest perpendicular chord). Volume: voxels × voxel
volume. The outline of a slice is taken at its boundary edges' midpoints (where a marching-squares contour
at 0.5 runs between an inside and an outside pixel centre), which is unbiased for a shape sampled on pixels.

A mask on an oblique grid is first resampled onto a world-aligned grid (linear interpolation of the 0/1
mask; its 0.5 level is the outline); an axial or permuted/flipped grid is only transposed and flipped. All coordinate
conversions go through :class:`lymphcad.geometry.Geometry`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.geometry import Geometry, reorient_to_lps

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Recist:
    """A RECIST measurement.

    Attributes:
        short_axis_mm: width perpendicular to the long axis in the measuring slice.
        long_axis_mm: longest diameter in the measuring slice.
        volume_ml: mask volume on the original grid.
        slice_z_mm: world z (LPS) of the axial measuring slice.
        long_axis_xyz: (2, 3) world end points of the long axis (LPS mm).
        short_axis_xyz: (2, 3) world end points of the short axis (through the mask's slice centroid).
    """

    short_axis_mm: float
    long_axis_mm: float
    volume_ml: float
    slice_z_mm: float
    long_axis_xyz: FloatArray
    short_axis_xyz: FloatArray


def axial_grid(mask_zyx: NDArray[np.bool_], geometry: Geometry) -> tuple[NDArray[np.float32], Geometry]:
    """The mask on a world-aligned grid (identity direction) covering its voxels, as a 0…1 field.

    The field is the linear interpolation of the 0/1 mask (exactly 0/1 on a non-oblique grid); the mask
    there is ``field >= 0.5``.

    An axial or permuted/flipped grid is reoriented exactly (:func:`lymphcad.geometry.reorient_to_lps`); an
    oblique one is resampled at its finest spacing in-plane (at least 1 mm along z).
    """
    zz, yy, xx = np.nonzero(mask_zyx)
    if zz.size == 0:
        raise ValueError("empty mask")
    if not geometry.is_oblique():
        lps_mask, lps = reorient_to_lps(mask_zyx, geometry)  # exact: a transpose and flips
        return np.ascontiguousarray(lps_mask, dtype=np.float32), lps
    sp_ijk = np.asarray(geometry.spacing_ijk)
    inplane = float(min(sp_ijk))
    sp_xyz = np.array([inplane, inplane, max(inplane, 1.0)])
    corners = np.array(
        [
            [i, j, k]
            for i in (xx.min() - 1, xx.max() + 1)
            for j in (yy.min() - 1, yy.max() + 1)
            for k in (zz.min() - 1, zz.max() + 1)
        ],
        dtype=np.float64,
    )
    world = geometry.index_to_world(corners)
    lo, hi = world.min(axis=0), world.max(axis=0)
    # anchor the new grid on a source voxel centre so a non-oblique grid is sampled exactly
    anchor = geometry.index_to_world(np.array([xx.min(), yy.min(), zz.min()], dtype=np.float64))
    start = anchor - np.ceil((anchor - lo) / sp_xyz - 1e-6) * sp_xyz
    n = np.floor((hi - start) / sp_xyz + 1e-6).astype(int) + 1
    target = Geometry(
        (int(n[2]), int(n[1]), int(n[0])),
        (float(sp_xyz[2]), float(sp_xyz[1]), float(sp_xyz[0])),
        (float(start[0]), float(start[1]), float(start[2])),
        np.eye(3),
    )
    kk, jj, ii = np.meshgrid(np.arange(n[2]), np.arange(n[1]), np.arange(n[0]), indexing="ij")
    pts = target.index_to_world(np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1).astype(np.float64))
    src = geometry.world_to_zyx(pts).T
    values = ndimage.map_coordinates(mask_zyx.astype(np.float32), src, order=1, mode="constant", cval=0.0)
    return values.reshape(int(n[2]), int(n[1]), int(n[0])), target


def _boundary_points(
    slice_yx: NDArray[np.floating], sy: float, sx: float, sigma_px: float = 0.8
) -> FloatArray:
    """Outline points (x, y in mm, slice-local) of a slice mask at sub-pixel positions.

    The mask is blurred (Gaussian, ``sigma_px`` pixels) and the 0.5 level is located on every pixel edge it
    crosses by linear interpolation (the vertices of a marching-squares contour). On a straight edge this
    runs midway between inside and outside pixel centres; on a staircase it runs through the steps' middle
    instead of their corners, so extreme points are not biased outwards.
    """
    f = (
        ndimage.gaussian_filter(np.pad(np.asarray(slice_yx, dtype=np.float64), 3), sigma_px, mode="constant")
        - 0.5
    )
    pts = []
    for axis in (0, 1):
        a = f
        b = np.roll(f, -1, axis=axis)
        cross = a * b < 0
        if axis == 0:
            cross[-1, :] = False
        else:
            cross[:, -1] = False
        ys, xs = np.nonzero(cross)
        t = a[ys, xs] / (a[ys, xs] - b[ys, xs])
        if axis == 0:
            pts.append(np.stack([(xs - 3) * sx, (ys - 3 + t) * sy], axis=1))
        else:
            pts.append(np.stack([(xs - 3 + t) * sx, (ys - 3) * sy], axis=1))
    out = np.concatenate(pts)
    if len(out) == 0:  # a single pixel blurs below 0.5 everywhere: its own square
        ys, xs = np.nonzero(slice_yx >= 0.5)
        c = np.stack([xs * sx, ys * sy], axis=1)
        out = np.concatenate([c + np.array([dx * sx / 2, dy * sy / 2]) for dx in (-1, 1) for dy in (-1, 1)])
    return out


def feret_2d(
    points: FloatArray, axis_hint: FloatArray | None = None, *, search_deg: int = 3
) -> tuple[float, float, FloatArray, FloatArray]:
    """(long, short, long end points (2, 2), unit long direction) of a 2D outline given as points (x, y).

    The caliper extent is evaluated every degree. The long axis is the largest extent, searched within
    ``search_deg`` of ``axis_hint`` (the area's principal axis) when given: the outline's pixel steps make
    the unconstrained maximum wander by several degrees on roundish nodes, which tilts the short axis.
    The short axis is the extent at 90° to the long axis.
    """
    hull = points  # extents over every outline point (a convex hull would only drop interior ones)
    theta = np.deg2rad(np.arange(180.0))
    dirs = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    proj = hull @ dirs.T  # (P, 180)
    extent = proj.max(axis=0) - proj.min(axis=0)
    if axis_hint is None:
        best = int(np.argmax(extent))
    else:
        centre = round(float(np.degrees(np.arctan2(axis_hint[1], axis_hint[0])))) % 180
        window = (centre + np.arange(-search_deg, search_deg + 1)) % 180
        best = int(window[int(np.argmax(extent[window]))])
    u = dirs[best]
    ends = hull[[int(np.argmin(proj[:, best])), int(np.argmax(proj[:, best]))]]
    return float(extent[best]), float(extent[(best + 90) % 180]), ends, u


def principal_axis(xy: FloatArray) -> FloatArray | None:
    """Unit direction of the largest second moment of a 2D point set (None when it is round or tiny)."""
    if len(xy) < 3:
        return None
    w, v = np.linalg.eigh(np.cov(xy.T))
    if w[1] <= 1.05 * w[0]:  # round: no preferred direction
        return None
    return np.asarray(v[:, 1], dtype=np.float64)


def measure_mask(mask_zyx: NDArray[np.bool_], geometry: Geometry) -> Recist:
    """RECIST long/short axis and volume of a non-empty mask given on ``geometry`` (any direction, spacing)."""
    if mask_zyx.shape != geometry.shape_zyx:
        raise ValueError(f"mask shape {mask_zyx.shape} != geometry shape {geometry.shape_zyx}")
    mask = np.asarray(mask_zyx, dtype=bool)
    volume_ml = float(mask.sum()) * geometry.voxel_volume_mm3 / 1000.0
    field, grid = axial_grid(mask, geometry)
    axial = field >= 0.5 - 1e-6
    _, sy, sx = grid.spacing_zyx
    best: tuple[float, float, int, FloatArray, FloatArray, int] | None = None
    areas = axial.sum(axis=(1, 2))
    # the longest diameter lies on one of the larger sections: skip slices under half the largest area
    for k in np.flatnonzero(areas >= 0.5 * areas.max()).tolist():
        sl = axial[k]
        pts = _boundary_points(field[k], sy, sx)
        ys, xs = np.nonzero(sl)
        long, short, ends, u = feret_2d(pts, principal_axis(np.stack([xs * sx, ys * sy], axis=1)))
        area = int(sl.sum())
        if best is None or (long, area) > (best[0], best[5]):
            best = (long, short, k, ends, u, area)
    if best is None:  # the resampled mask vanished (thinner than half a voxel everywhere)
        return Recist(0.0, 0.0, volume_ml, float("nan"), np.full((2, 3), np.nan), np.full((2, 3), np.nan))
    long, short, k, ends, u, _ = best
    ys, xs = np.nonzero(axial[k])
    centre = np.array([xs.mean() * sx, ys.mean() * sy])
    n = np.array([-u[1], u[0]])
    short_ends = np.stack([centre - n * short / 2.0, centre + n * short / 2.0])

    def to_world(p: FloatArray) -> FloatArray:
        ijk = np.stack([p[:, 0] / sx, p[:, 1] / sy, np.full(len(p), float(k))], axis=1)
        return grid.index_to_world(ijk)

    return Recist(
        short_axis_mm=short,
        long_axis_mm=long,
        volume_ml=volume_ml,
        slice_z_mm=float(grid.index_to_world(np.array([0.0, 0.0, float(k)]))[2]),
        long_axis_xyz=to_world(ends),
        short_axis_xyz=to_world(short_ends),
    )
