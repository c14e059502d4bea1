"""Mass effect: a node larger than the fat at its station pushes its neighbours aside instead of overlapping them.

In a thin patient's mediastinum the spaces between vessels, airway and oesophagus are a few millimetres of
fat or thin soft tissue; a real enlarged node there displaces the structures around it. :class:`Push` models
this as a smooth **radial displacement field** about the node centre, in the node's own frame (radius
``rho`` normalised by the node's half-axes, so ``rho = 1`` is the node's ellipsoid):

* the *seed* — the hosting tissue (fat, thin septa) inside ``rho < rho0``, checked by the caller — is
  stretched to fill the node's zone ``rho < rho_node`` (the node's ellipsoid with its lobulation and a
  partial-volume margin): the node covers nothing but hosting tissue;
* outside, tissue is treated as incompressible: what lay at ``rho`` moves to ``(rho³ + rho_node³ − rho0³)^⅓``
  (the flow of a growing sphere), so vessels, airway, oesophagus and the lung boundary are pushed outward
  and keep their volume (lumen voxel counts are kept; only their shape adapts near the node);
* the displacement, ≈ ``(rho_node³ − rho0³) / (3 rho²)`` far out, is tapered smoothly to zero between
  :data:`RHO_FULL` and :data:`RHO_END`, so the background beyond is untouched.

The background is resampled with cubic splines; the noise, a property of the scan rather than the anatomy,
is kept in place where the anatomy is homogeneous (only the smooth anatomy moves there), so the warp leaves
no smoothed halo. Bone does not move: the push fades out over a few millimetres towards it (the tissue in
between is compressed). Callers keep bone and other nodes out of ``rho < RHO_RIGID``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

_G = TypeVar("_G", bound=np.generic)

#: full incompressible displacement inside this normalised radius, tapered to zero at RHO_END
RHO_FULL: Final = 2.5
RHO_END: Final = 4.0
#: within this normalised radius (of the source) nothing rigid may lie: bone, the body's edge, other nodes
RHO_RIGID: Final = 1.3
#: distance (mm) over which the push fades out towards fixed structures (bone, airway)
FIXED_RAMP_MM: Final = 3.0
#: margin (normalised, drawn per node) of the node's zone beyond its lobulated surface: its partial-volume rim
ZONE_MARGIN: Final = (0.02, 0.08)
#: gradient (HU per voxel of the ~1-voxel-smoothed image) above which the noise moves with the anatomy
EDGE_GRADIENT_HU: Final = 25.0


@dataclass(frozen=True)
class Push:
    """The radial displacement of one node (grid mm z y x as ``NodeGeometry``; half-axes in the node frame x y z)."""

    centre_zyx_mm: tuple[float, float, float]
    rot: NDArray[np.float64]  # node axes (columns) in world x y z
    half: tuple[float, float, float]
    rho0: float  # the seed: hosting tissue inside this normalised radius
    rho_node: float  # the node's zone: its ellipsoid with lobulation and margin

    @property
    def push_mm(self) -> float:
        """How far the neighbours move at the node's surface along its short axis (mm)."""
        return max(0.0, (self.rho_node - self.rho0) * min(self.half))

    def source_radius(self, rho: NDArray[np.float32]) -> NDArray[np.float32]:
        """Normalised radius in the background that a point at normalised radius ``rho`` shows after the push."""
        r0, rn = np.float32(self.rho0), np.float32(self.rho_node)
        if r0 >= rn:
            return rho
        inner = rho * (r0 / rn)
        outer = np.cbrt(np.maximum(rho**3 - (rn**3 - r0**3), np.float32(0.0)))
        src = np.where(rho <= rn, inner, outer)
        t = np.clip((rho - np.float32(RHO_FULL)) / np.float32(RHO_END - RHO_FULL), 0.0, 1.0)
        w = 1.0 - t * t * (3.0 - 2.0 * t)  # smoothstep from 1 (full push) to 0 (untouched)
        return np.asarray(rho - w * (rho - src), np.float32)

    def extent_zyx_mm(self, rho: float) -> NDArray[np.float64]:
        """Half-extent (mm, z y x) of the ellipsoid at normalised radius ``rho``."""
        e = np.sqrt(((self.rot * np.asarray(self.half)[None, :]) ** 2).sum(axis=1)) * rho  # x y z
        return np.asarray(e[::-1], np.float64)

    def box(
        self, shape: tuple[int, int, int], spacing_zyx: tuple[float, float, float], rho: float = RHO_END
    ) -> tuple[slice, slice, slice]:
        """The grid box holding the ellipsoid at ``rho`` (+1 voxel), clipped to the grid (the anatomy beyond
        the field of view moves too: the edge voxels sample inside it)."""
        c = np.asarray(self.centre_zyx_mm)
        sp = np.asarray(spacing_zyx)
        ext = self.extent_zyx_mm(rho)
        lo = np.maximum(np.floor((c - ext) / sp).astype(int) - 1, 0)
        hi = np.minimum(np.ceil((c + ext) / sp).astype(int) + 2, np.asarray(shape))
        return (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))

    def normalised_radius(
        self, box: tuple[slice, slice, slice], spacing_zyx: tuple[float, float, float]
    ) -> tuple[NDArray[np.float32], tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]]:
        """Per voxel of ``box``: the normalised radius, and the offsets (mm, z y x) from the centre."""
        dz, dy, dx = spacing_zyx
        c = self.centre_zyx_mm
        z = (np.arange(box[0].start, box[0].stop) * dz - c[0]).astype(np.float32)[:, None, None]
        y = (np.arange(box[1].start, box[1].stop) * dy - c[1]).astype(np.float32)[None, :, None]
        x = (np.arange(box[2].start, box[2].stop) * dx - c[2]).astype(np.float32)[None, None, :]
        r = self.rot.astype(np.float32)
        h = np.asarray(self.half, np.float32)
        u = (x * r[0, 0] + y * r[1, 0] + z * r[2, 0]) / h[0]
        v = (x * r[0, 1] + y * r[1, 1] + z * r[2, 1]) / h[1]
        w = (x * r[0, 2] + y * r[1, 2] + z * r[2, 2]) / h[2]
        rho = np.sqrt(u * u + v * v + w * w).astype(np.float32)
        return rho, (z, y, x)

    def source_coords(
        self,
        box: tuple[slice, slice, slice],
        spacing_zyx: tuple[float, float, float],
        fixed: NDArray[np.bool_] | None = None,
    ) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
        """(3, *box) voxel coordinates, relative to ``box``, that each voxel of ``box`` samples after the push;
        and the mask of voxels the push moves (``rho < RHO_END``). ``fixed`` voxels (bone) do not move: the
        displacement fades to zero over :data:`FIXED_RAMP_MM` towards them (the tissue between is compressed)."""
        rho, (z, y, x) = self.normalised_radius(box, spacing_zyx)
        src = self.source_radius(rho)
        s = np.where(rho > 1e-6, src / np.maximum(rho, np.float32(1e-6)), np.float32(0.0)).astype(np.float32)
        if fixed is not None and fixed.any():
            d = ndimage.distance_transform_edt(~fixed, sampling=spacing_zyx)
            t = np.clip(d / FIXED_RAMP_MM, 0.0, 1.0).astype(np.float32)
            s = np.asarray(1.0 - (1.0 - s) * t * t * (3.0 - 2.0 * t), np.float32)
        c = self.centre_zyx_mm
        coords = np.empty((3, *rho.shape), np.float32)
        for a, (off, start) in enumerate(zip((z, y, x), (b.start for b in box), strict=True)):
            coords[a] = (np.float32(c[a]) + s * off) / np.float32(spacing_zyx[a]) - np.float32(start)
        return coords, rho < RHO_END


def warp_labels(a: NDArray[_G], coords: NDArray[np.float32], moved: NDArray[np.bool_]) -> NDArray[_G]:
    """A label / class map pushed (nearest neighbour): the same box, moved voxels resampled."""
    out = a.copy()
    out[moved] = ndimage.map_coordinates(a, coords[:, moved], order=0, mode="nearest")
    return out


def warp_smooth(
    a: NDArray[np.float32], coords: NDArray[np.float32], moved: NDArray[np.bool_]
) -> NDArray[np.float32]:
    """A smooth map pushed (linear interpolation)."""
    out = a.copy()
    out[moved] = ndimage.map_coordinates(a, coords[:, moved], order=1, mode="nearest")
    return out


def warp_image(
    a: NDArray[np.float32], coords: NDArray[np.float32], moved: NDArray[np.bool_]
) -> NDArray[np.float32]:
    """A CT box pushed: the anatomy moves (cubic splines); where it is homogeneous the scan's noise stays in
    place (interpolating noise would smooth it), at edges it moves with the anatomy."""
    smooth = np.asarray(ndimage.gaussian_filter(a, (0.0, 1.0, 1.0)), np.float32)
    noise = a - smooth
    spline = ndimage.spline_filter(a, order=3, output=np.float32)
    warped = ndimage.map_coordinates(spline, coords[:, moved], order=3, mode="nearest", prefilter=False)
    noise_spline = ndimage.spline_filter(noise, order=3, output=np.float32)
    warped_noise = ndimage.map_coordinates(
        noise_spline, coords[:, moved], order=3, mode="nearest", prefilter=False
    )
    ws = smooth.copy()
    ws[moved] = warped - warped_noise
    grad = ndimage.gaussian_gradient_magnitude(ws, (0.0, 1.0, 1.0))[moved]
    keep = np.exp(-((grad / np.float32(EDGE_GRADIENT_HU)) ** 2)).astype(np.float32)
    out = a.copy()
    out[moved] = warped + keep * (noise[moved] - warped_noise)
    return out
