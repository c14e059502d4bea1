"""The rendering canvas: a (z, y, x) HU volume plus a tissue map, painted with analytic primitives.

Every primitive is a signed-distance function (SDF, negative inside) evaluated only inside its bounding
box. Coverage ``a = clip(0.5 - sdf / h, 0, 1)`` (h = mean voxel size) gives sub-voxel partial volume
(spec §6.6.1); primitives are composited in painter's order (alpha-over) and the tissue map takes a
primitive's class where its coverage is ≥ 0.5.

Coordinates here are *frame* mm (LPS axes: +x patient left, +y posterior, +z head); the case's world
origin is the frame plus a per-case shift that only the geometry knows about.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]
SDF = Callable[[Any, Any, Any], Any]


@dataclass
class Box:
    """Index ranges of a bounding box in array order."""

    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return (slice(self.z0, self.z1), slice(self.y0, self.y1), slice(self.x0, self.x1))

    @property
    def empty(self) -> bool:
        return self.z1 <= self.z0 or self.y1 <= self.y0 or self.x1 <= self.x0


class Canvas:
    """HU volume + tissue map on a regular axis-aligned grid (frame coordinates)."""

    def __init__(
        self,
        shape_zyx: tuple[int, int, int],
        spacing_zyx: tuple[float, float, float],
        first_xyz: tuple[float, float, float],
        texture: F32 | None = None,
    ) -> None:
        self.shape = shape_zyx
        self.spacing = spacing_zyx
        self.first = first_xyz
        nz, ny, nx = shape_zyx
        dz, dy, dx = spacing_zyx
        self.xs = (first_xyz[0] + dx * np.arange(nx)).astype(np.float32)
        self.ys = (first_xyz[1] + dy * np.arange(ny)).astype(np.float32)
        self.zs = (first_xyz[2] + dz * np.arange(nz)).astype(np.float32)
        self.h = float(np.mean(spacing_zyx))
        self.hu = np.full(shape_zyx, -1000.0, dtype=np.float32)
        self.tissue = np.zeros(shape_zyx, dtype=np.uint8)
        self.texture = texture  # unit-SD smooth random field (same shape) or None

    # -- geometry helpers -----------------------------------------------------------------------
    def box(self, lo: Iterable[float], hi: Iterable[float], margin: float | None = None) -> Box:
        """Index box covering the frame-mm box [lo, hi] (x, y, z) plus a margin (default 2 voxels)."""
        lo = np.asarray(list(lo), dtype=float)
        hi = np.asarray(list(hi), dtype=float)
        m = 2.0 * self.h if margin is None else margin
        out = []
        for axis, ax_arr, sp in (
            (2, self.zs, self.spacing[0]),
            (1, self.ys, self.spacing[1]),
            (0, self.xs, self.spacing[2]),
        ):
            a = int(np.floor((lo[axis] - m - ax_arr[0]) / sp))
            b = int(np.ceil((hi[axis] + m - ax_arr[0]) / sp)) + 1
            n = ax_arr.shape[0]
            out += [max(0, a), min(n, b)]
        return Box(*out)

    def coords(self, b: Box) -> tuple[F32, F32, F32]:
        """Broadcastable frame coordinates (X, Y, Z) of a box."""
        x = self.xs[b.x0 : b.x1][None, None, :]
        y = self.ys[b.y0 : b.y1][None, :, None]
        z = self.zs[b.z0 : b.z1][:, None, None]
        return x, y, z

    def coverage(self, sdf: Any) -> F32:
        """Sub-voxel coverage from a signed distance (mm)."""
        out: F32 = np.clip(0.5 - sdf / self.h, 0.0, 1.0).astype(np.float32)
        return out

    # -- painting -------------------------------------------------------------------------------
    def paint(
        self,
        b: Any,
        sdf: Any,
        hu: float,
        tissue: int,
        *,
        tex_sd: float = 0.0,
        tex_flip: int = 0,
        allowed: Iterable[int] | None = None,
        forbidden: Iterable[int] | None = None,
        hu_field: Any = None,
        mask: Any = None,
    ) -> F32 | None:
        """Alpha-over a primitive into the box; returns its coverage (or None when it touched nothing)."""
        if b.empty:
            return None
        a = self.coverage(sdf)
        if a.shape != (b.z1 - b.z0, b.y1 - b.y0, b.x1 - b.x0):
            a = np.broadcast_to(a, (b.z1 - b.z0, b.y1 - b.y0, b.x1 - b.x0)).copy()
        sl = b.slices
        tis = self.tissue[sl]
        if allowed is not None:
            a *= _member(tis, allowed)
        if forbidden is not None:
            a *= ~_member(tis, forbidden)
        if mask is not None:
            a *= mask
        if not a.any():
            return None
        value: Any = np.float32(hu)
        if hu_field is not None:
            value = value + hu_field
        if tex_sd > 0 and self.texture is not None:
            value = value + np.float32(tex_sd) * self._tex(sl, tex_flip)
        cur = self.hu[sl]
        cur += a * (value - cur)
        tis[a >= 0.5] = tissue
        return a

    def _tex(self, sl: tuple[slice, slice, slice], flip: int) -> F32:
        assert self.texture is not None
        t = self.texture
        if flip % 4 == 1:
            t = t[::-1]
        elif flip % 4 == 2:
            t = t[:, ::-1]
        elif flip % 4 == 3:
            t = t[:, :, ::-1]
        return t[sl]

    # -- primitives -----------------------------------------------------------------------------
    def ellipsoid_sdf(
        self,
        center: Iterable[float],
        half_axes: Iterable[float],
        rot: NDArray[np.float64] | None = None,
        *,
        perturb: Callable[[Any, Any, Any], Any] | None = None,
        pad: float = 0.0,
    ) -> tuple[Box, Any]:
        """(box, sdf) of a rotated ellipsoid; ``rot`` columns are the axis directions (frame)."""
        c = np.asarray(list(center), dtype=np.float32)
        ax = np.asarray(list(half_axes), dtype=np.float32)
        ext = float(ax.max()) * (1.3 if perturb is not None else 1.0) + pad
        if rot is None:
            reach = ax + pad
            b = self.box(c - reach, c + reach)
        else:
            reach = np.abs(np.asarray(rot)) @ ax + pad
            b = self.box(c - reach, c + reach)
        if b.empty:
            return b, None
        x, y, z = self.coords(b)
        px, py, pz = x - c[0], y - c[1], z - c[2]
        if rot is None:
            u, v, w = px, py, pz
        else:
            r = np.asarray(rot, dtype=np.float32)
            u = px * r[0, 0] + py * r[1, 0] + pz * r[2, 0]
            v = px * r[0, 1] + py * r[1, 1] + pz * r[2, 1]
            w = px * r[0, 2] + py * r[1, 2] + pz * r[2, 2]
        q2 = (u / ax[0]) ** 2 + (v / ax[1]) ** 2 + (w / ax[2]) ** 2
        q = np.sqrt(q2) + np.float32(1e-6)
        g = np.sqrt((u / ax[0] ** 2) ** 2 + (v / ax[1] ** 2) ** 2 + (w / ax[2] ** 2) ** 2) / q + np.float32(
            1e-6
        )
        if perturb is not None:
            q = q / (1.0 + perturb(u / q / ax[0], v / q / ax[1], w / q / ax[2]))
        sdf = (q - 1.0) / g
        del ext
        return b, sdf

    def ellipsoid(
        self,
        center: Iterable[float],
        half_axes: Iterable[float],
        hu: float,
        tissue: int,
        rot: NDArray[np.float64] | None = None,
        **kw: Any,
    ) -> F32 | None:
        b, sdf = self.ellipsoid_sdf(center, half_axes, rot)
        if sdf is None:
            return None
        return self.paint(b, sdf, hu, tissue, **kw)

    def segment_sdf(
        self, p0: NDArray[np.float64], p1: NDArray[np.float64], r0: float, r1: float
    ) -> tuple[Box, Any]:
        """(box, sdf) of a cone-capsule between two points."""
        rmax = max(r0, r1)
        lo = np.minimum(p0, p1) - rmax
        hi = np.maximum(p0, p1) + rmax
        b = self.box(lo, hi)
        if b.empty:
            return b, None
        x, y, z = self.coords(b)
        d = (p1 - p0).astype(np.float32)
        L2 = float(d @ d) + 1e-9
        px, py, pz = x - np.float32(p0[0]), y - np.float32(p0[1]), z - np.float32(p0[2])
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / np.float32(L2), 0.0, 1.0)
        qx, qy, qz = px - t * d[0], py - t * d[1], pz - t * d[2]
        dist = np.sqrt(qx * qx + qy * qy + qz * qz)
        return b, dist - (np.float32(r0) + t * np.float32(r1 - r0))

    def tube(
        self, pts: NDArray[np.float64], radii: NDArray[np.float64] | float, hu: float, tissue: int, **kw: Any
    ) -> None:
        """Paint a tube along a polyline (segment-wise capsules)."""
        pts = np.asarray(pts, dtype=np.float64)
        r = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(pts),))
        for i in range(len(pts) - 1):
            b, sdf = self.segment_sdf(pts[i], pts[i + 1], float(r[i]), float(r[i + 1]))
            if sdf is not None:
                self.paint(b, sdf, hu, tissue, **kw)

    def ztube_sdf(
        self,
        zk: NDArray[np.float64],
        xk: NDArray[np.float64],
        yk: NDArray[np.float64],
        ak: NDArray[np.float64],
        bk: NDArray[np.float64],
        *,
        caps: bool = True,
    ) -> tuple[Box, Any]:
        """(box, sdf) of a roughly vertical tube with elliptic section; knots (z, x, y, a, b) interpolated in z."""
        zk = np.asarray(zk, dtype=float)
        order = np.argsort(zk)
        zk, xk, yk, ak, bk = (np.asarray(v, dtype=float)[order] for v in (zk, xk, yk, ak, bk))
        lo = [float(np.min(xk - ak)), float(np.min(yk - bk)), float(zk[0])]
        hi = [float(np.max(xk + ak)), float(np.max(yk + bk)), float(zk[-1])]
        b = self.box(lo, hi)
        if b.empty:
            return b, None
        x, y, z = self.coords(b)
        zz = z[:, 0, 0].astype(float)
        cx = np.interp(zz, zk, xk).astype(np.float32)[:, None, None]
        cy = np.interp(zz, zk, yk).astype(np.float32)[:, None, None]
        ca = np.interp(zz, zk, ak).astype(np.float32)[:, None, None]
        cb = np.interp(zz, zk, bk).astype(np.float32)[:, None, None]
        u = (x - cx) / ca
        v = (y - cy) / cb
        q = np.sqrt(u * u + v * v) + np.float32(1e-6)
        g = np.sqrt((u / ca) ** 2 + (v / cb) ** 2) / q + np.float32(1e-6)
        sdf = (q - 1.0) / g
        if caps:
            zc = np.maximum(np.float32(zk[0]) - z, z - np.float32(zk[-1]))
            sdf = np.maximum(sdf, zc)
        return b, sdf

    def ztube(
        self, zk: Any, xk: Any, yk: Any, ak: Any, bk: Any, hu: float, tissue: int, **kw: Any
    ) -> F32 | None:
        b, sdf = self.ztube_sdf(
            np.asarray(zk), np.asarray(xk), np.asarray(yk), np.asarray(ak), np.asarray(bk)
        )
        if sdf is None:
            return None
        return self.paint(b, sdf, hu, tissue, **kw)


def _member(tis: NDArray[np.uint8], classes: Iterable[int]) -> NDArray[np.bool_]:
    cl = list(classes)
    if len(cl) <= 3:
        m = tis == cl[0]
        for c in cl[1:]:
            m |= tis == c
        res: NDArray[np.bool_] = m
        return res
    return np.isin(tis, np.asarray(cl, dtype=np.uint8))


def rotation_from_axis(axis: NDArray[np.float64], spin: float = 0.0) -> NDArray[np.float64]:
    """A rotation whose first column is ``axis`` (normalised); ``spin`` turns the other two about it."""
    a = np.asarray(axis, dtype=float)
    a = a / (np.linalg.norm(a) + 1e-12)
    helper = np.array([0.0, 0.0, 1.0]) if abs(a[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    b = np.cross(a, helper)
    b /= np.linalg.norm(b)
    c = np.cross(a, b)
    cs, sn = np.cos(spin), np.sin(spin)
    b2 = cs * b + sn * c
    c2 = -sn * b + cs * c
    return np.stack([a, b2, c2], axis=1)


def smooth_path(
    rng: np.random.Generator, knots: NDArray[np.float64], n: int = 8, jitter: float = 0.0
) -> NDArray[np.float64]:
    """Catmull-Rom-like densification of control points (linear interpolation of a jittered polyline)."""
    k = np.asarray(knots, dtype=float)
    if jitter > 0:
        k = k + rng.normal(0.0, jitter, k.shape) * np.r_[0, np.ones(len(k) - 2), 0][:, None]
    seg = np.linspace(0, 1, n, endpoint=False)
    out = [k[i] + (k[i + 1] - k[i]) * s for i in range(len(k) - 1) for s in seg]
    out.append(k[-1])
    pts = np.asarray(out)
    # light smoothing of interior points (keeps the ends)
    for _ in range(2):
        pts[1:-1] = 0.25 * pts[:-2] + 0.5 * pts[1:-1] + 0.25 * pts[2:]
    return pts
