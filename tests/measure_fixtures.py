"""Synthetic shapes for the measurement tests: ellipsoids rasterised on any grid (world LPS mm)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from lymphcad.geometry import Geometry


def rotation(axis: tuple[float, float, float], angle: float) -> NDArray[np.float64]:
    """Rotation matrix about ``axis`` by ``angle`` radians (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.asarray(np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k, dtype=np.float64)


def world_points(geometry: Geometry) -> NDArray[np.float64]:
    """World position of every voxel centre, (z, y, x, 3)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in geometry.shape_zyx), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(np.float64)
    return geometry.index_to_world(ijk).reshape(*geometry.shape_zyx, 3)


def ellipsoid_mask(
    geometry: Geometry,
    centre_xyz: NDArray[np.float64],
    semi_axes_mm: tuple[float, float, float],
    in_plane_angle: float,
) -> NDArray[np.bool_]:
    """Voxels whose centre lies in an ellipsoid with axes (a along angle θ in the axial plane, b ⟂ it, c along z)."""
    u = np.array([np.cos(in_plane_angle), np.sin(in_plane_angle), 0.0])
    v = np.array([-np.sin(in_plane_angle), np.cos(in_plane_angle), 0.0])
    p = world_points(geometry) - centre_xyz
    q = (p @ u / semi_axes_mm[0]) ** 2 + (p @ v / semi_axes_mm[1]) ** 2 + (p[..., 2] / semi_axes_mm[2]) ** 2
    return np.asarray(q <= 1.0)
