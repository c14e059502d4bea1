"""The working view of a CT (world-aligned LPS grid), the landmarks record and the helpers every finder uses."""

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
#: body: HU above this (then holes filled per slice)
BODY_HU: Final = -400.0


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
    """The CT on a world-aligned LPS grid, in-plane block-averaged to about ``work_mm`` (see the package docstring)."""
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
IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def body_mask(hu: NDArray[np.float32]) -> NDArray[np.bool_]:
    """The body per slice: the largest component above BODY_HU with its holes (lungs, airway) filled."""
    lab, n = ndimage.label(hu > BODY_HU, structure=IN_PLANE)
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
    return np.asarray(ndimage.binary_fill_holes(keep[lab], structure=IN_PLANE), dtype=bool)


def components(mask: NDArray[np.bool_]) -> tuple[NDArray[np.int32], int]:
    lab, n = ndimage.label(mask)
    return np.asarray(lab, dtype=np.int32), int(n)
