"""RECIST size and volume from masks: ellipsoids at oblique orientations and anisotropic spacing."""

from __future__ import annotations

import numpy as np
import pytest

from lymphcad.geometry import Geometry
from lymphcad.measure.recist import axial_grid, measure_mask
from measure_fixtures import ellipsoid_mask, rotation

CASES = [
    # spacing_zyx, grid direction (axis, angle), semi-axes (a, b, c), in-plane angle
    ((2.5, 0.7, 0.7), None, (12.0, 7.0, 8.0), 0.0),
    ((2.0, 0.6, 0.9), None, (11.0, 6.0, 9.0), 0.7),
    ((1.2, 0.8, 0.8), None, (9.0, 5.0, 6.0), 2.2),
    ((3.0, 0.8, 0.5), None, (14.0, 9.0, 12.0), 1.3),
    ((1.0, 0.7, 0.7), ((1.0, 0.3, 0.2), 0.35), (12.0, 7.0, 8.0), 0.4),
    ((1.5, 0.6, 0.8), ((0.2, 1.0, 0.5), 0.5), (10.0, 6.5, 7.0), 2.8),
    ((0.9, 0.9, 0.6), ((0.0, 0.0, 1.0), 0.6), (13.0, 8.0, 9.0), 1.0),  # in-plane rotated grid
]


def _truth_at(semi: tuple[float, float, float], dz: float) -> tuple[float, float]:
    """Long and short diameter of the ellipsoid's axial section at height dz from its centre."""
    f = np.sqrt(max(0.0, 1.0 - (dz / semi[2]) ** 2))
    return 2 * semi[0] * f, 2 * semi[1] * f


@pytest.mark.parametrize(("spacing", "rot", "semi", "angle"), CASES)
def test_ellipsoid_diameters_within_half_a_voxel(
    spacing: tuple[float, float, float],
    rot: tuple[tuple[float, float, float], float] | None,
    semi: tuple[float, float, float],
    angle: float,
) -> None:
    direction = np.eye(3) if rot is None else rotation(*rot)
    geom = Geometry((48, 80, 80), spacing, (-30.0, 12.0, -200.0), direction)
    centre = geom.index_to_world(np.array([40.3, 39.6, 24.2]))
    mask = ellipsoid_mask(geom, centre, semi, angle)
    rec = measure_mask(mask, geom)
    long_true, short_true = _truth_at(semi, rec.slice_z_mm - centre[2])
    # half a voxel: the in-plane spacing on an axial grid; the coarsest spacing once the grid is tilted
    half = 0.5 * (
        max(spacing)
        if geom.is_oblique() and rot is not None and rot[0] != (0.0, 0.0, 1.0)
        else max(spacing[1:])
    )
    assert abs(rec.long_axis_mm - long_true) <= half, (rec.long_axis_mm, long_true)
    assert abs(rec.short_axis_mm - short_true) <= half, (rec.short_axis_mm, short_true)
    # the chosen slice is the largest: within one slice of the centre
    assert abs(rec.slice_z_mm - centre[2]) <= max(spacing) + 1e-6
    # the long axis lies along the ellipsoid's major axis (mod 180°)
    d = rec.long_axis_xyz[1] - rec.long_axis_xyz[0]
    found = np.degrees(np.arctan2(d[1], d[0])) % 180.0
    diff = abs(found - np.degrees(angle) % 180.0)
    assert min(diff, 180.0 - diff) < 6.0


def test_sphere_volume() -> None:
    geom = Geometry((60, 70, 70), (1.25, 0.6, 0.6), (0.0, 0.0, 0.0))
    centre = geom.index_to_world(np.array([35.0, 35.0, 30.0]))
    r = 12.0
    mask = ellipsoid_mask(geom, centre, (r, r, r), 0.0)
    rec = measure_mask(mask, geom)
    true_ml = 4.0 / 3.0 * np.pi * r**3 / 1000.0
    assert rec.volume_ml == pytest.approx(true_ml, rel=0.01)
    assert rec.short_axis_mm == pytest.approx(2 * r, abs=0.3)
    assert rec.long_axis_mm == pytest.approx(2 * r, abs=0.3)


def test_permuted_grid_is_sampled_voxel_for_voxel() -> None:
    """A grid stored RAS-wise (flipped x, y) resamples onto the world-aligned grid without interpolation."""
    geom = Geometry((20, 30, 30), (2.0, 0.8, 0.7), (50.0, 40.0, 0.0), np.diag([-1.0, -1.0, 1.0]))
    centre = geom.index_to_world(np.array([15.0, 15.0, 10.0]))
    mask = ellipsoid_mask(geom, centre, (8.0, 5.0, 6.0), 0.3)
    axial, grid = axial_grid(mask, geom)
    assert np.allclose(axial, np.round(axial), atol=1e-5)
    assert int((axial >= 0.5).sum()) == int(mask.sum())
    assert grid.spacing_zyx == (2.0, 0.8, 0.7)


def test_measurement_does_not_depend_on_the_storage_order() -> None:
    """The same ellipsoid on an LPS grid and a flipped (RAS-stored) grid measures the same."""
    centre = np.array([10.0, -20.0, 30.0])
    results = []
    for flip in (np.eye(3), np.diag([-1.0, -1.0, 1.0])):
        origin = centre - flip @ (np.array([40.0, 40.0, 20.0]) * np.array([0.7, 0.7, 1.5]))
        geom = Geometry((40, 80, 80), (1.5, 0.7, 0.7), tuple(origin), flip)
        rec = measure_mask(ellipsoid_mask(geom, centre, (11.0, 6.0, 7.0), 0.9), geom)
        results.append((rec.short_axis_mm, rec.long_axis_mm, rec.volume_ml))
    assert results[0] == pytest.approx(results[1], abs=1e-6)
