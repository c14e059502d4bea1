"""Coordinate conventions: round trips, RAS↔LPS, and agreement with SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from lymphcad.geometry import (
    CTVolume,
    Geometry,
    direction_from_dicom,
    hu_to_int16,
    positions_along_normal,
    reorient_to_lps,
)

finite = st.floats(min_value=-500, max_value=500, allow_nan=False, allow_infinity=False)
spacing = st.floats(min_value=0.2, max_value=8.0, allow_nan=False)
sizes = st.integers(min_value=1, max_value=600)


@st.composite
def directions(draw: st.DrawFn) -> np.ndarray:
    """Oblique rotations, axis permutations and flips (det ±1)."""
    kind = draw(st.sampled_from(["rotation", "permutation"]))
    if kind == "rotation":
        quat = draw(st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4))
        if np.linalg.norm(quat) < 1e-3:
            quat = [0.0, 0.0, 0.0, 1.0]
        mat = Rotation.from_quat(quat).as_matrix()
    else:
        perm = draw(st.permutations([0, 1, 2]))
        mat = np.eye(3)[:, perm]
    signs = draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=3, max_size=3))
    mat = mat * np.asarray(signs)[None, :]
    mat[np.abs(mat) < 1e-12] = 0.0  # SimpleITK returns NaN for subnormal direction entries
    return np.asarray(mat)


@st.composite
def geometries(draw: st.DrawFn) -> Geometry:
    return Geometry(
        (draw(sizes), draw(sizes), draw(sizes)),
        (draw(spacing), draw(spacing), draw(spacing)),
        (draw(finite), draw(finite), draw(finite)),
        draw(directions()),
    )


points = st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(geometries(), points)
def test_world_index_round_trip(geom: Geometry, pts: list[tuple[float, float, float]]) -> None:
    xyz = np.asarray(pts)
    assert np.allclose(geom.index_to_world(geom.world_to_index(xyz)), xyz, atol=1e-6)
    assert np.allclose(geom.zyx_to_world(geom.world_to_zyx(xyz)), xyz, atol=1e-6)
    assert np.allclose(geom.world_to_zyx(xyz)[:, ::-1], geom.world_to_index(xyz))


@settings(max_examples=200, deadline=None)
@given(geometries())
def test_affine_round_trips(geom: Geometry) -> None:
    for back in (
        Geometry.from_affine_lps(geom.affine_lps(), geom.shape_zyx),
        Geometry.from_affine_ras(geom.affine_ras(), geom.shape_zyx),
        Geometry.from_json(geom.to_json()),
    ):
        assert geom.same_grid(back, atol_mm=1e-6, atol_dir=1e-9)


@settings(max_examples=100, deadline=None)
@given(geometries(), st.tuples(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50)))
def test_agrees_with_simpleitk(geom: Geometry, ijk: tuple[int, int, int]) -> None:
    image = sitk.Image(2, 2, 2, sitk.sitkInt16)  # size is irrelevant for the transform
    image.SetSpacing(geom.spacing_ijk)
    image.SetOrigin(geom.origin_xyz)
    image.SetDirection(tuple(float(v) for v in geom.direction.ravel()))
    expected = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk])
    assert np.allclose(geom.index_to_world(ijk), expected, atol=1e-6)
    back = image.TransformPhysicalPointToContinuousIndex(expected)
    assert np.allclose(geom.world_to_index(expected), back, atol=1e-6)


def test_ras_lps_flip_is_exactly_xy() -> None:
    geom = Geometry((4, 5, 6), (2.0, 0.5, 0.7), (10.0, -20.0, 30.0))
    lps = geom.affine_lps()
    ras = geom.affine_ras()
    assert np.allclose(ras[0], -lps[0]) and np.allclose(ras[1], -lps[1]) and np.allclose(ras[2], lps[2])
    assert geom.orientation_codes() == "LPS"
    flipped = Geometry((4, 5, 6), (2.0, 0.5, 0.7), (0, 0, 0), np.diag([-1.0, -1.0, 1.0]))
    assert flipped.orientation_codes() == "RAS"


def test_index_order_is_ijk_and_arrays_are_zyx() -> None:
    geom = Geometry((10, 20, 30), (3.0, 2.0, 1.0), (0.0, 0.0, 0.0))
    # voxel (i=1, j=2, k=3) → x = 1 mm, y = 4 mm, z = 9 mm
    assert np.allclose(geom.index_to_world([1, 2, 3]), [1.0, 4.0, 9.0])
    assert np.allclose(geom.zyx_to_world([3, 2, 1]), [1.0, 4.0, 9.0])
    assert geom.size_ijk == (30, 20, 10)
    assert geom.spacing_ijk == (1.0, 2.0, 3.0)


def test_contains_and_bounds() -> None:
    geom = Geometry((10, 10, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.diag([1.0, -1.0, 1.0]))
    assert geom.contains_world([0.0, 0.0, 0.0])
    assert geom.contains_world([0.0, -9.4, 9.4])
    assert not geom.contains_world([0.0, 9.0, 0.0])
    lo, hi = geom.world_bounds()
    assert np.allclose(lo, [-0.5, -9.5, -0.5]) and np.allclose(hi, [9.5, 0.5, 9.5])


def test_crop_and_resampled_keep_world_positions() -> None:
    d = Rotation.from_euler("xyz", [10, -20, 30], degrees=True).as_matrix()
    geom = Geometry((40, 50, 60), (2.5, 0.7, 0.8), (1.0, 2.0, 3.0), d)
    sub = geom.crop((5, 6, 7), (10, 10, 10))
    assert np.allclose(sub.zyx_to_world([0, 0, 0]), geom.zyx_to_world([5, 6, 7]))
    res = geom.resampled((1.25, 1.4, 1.6))
    lo, hi = geom.world_bounds()
    lo2, hi2 = res.world_bounds()
    assert np.allclose(lo, lo2, atol=1e-6) and np.allclose(hi, hi2, atol=1e-6)
    assert res.shape_zyx == (80, 25, 30)


def test_invalid_geometry_rejected() -> None:
    with pytest.raises(ValueError, match="orthonormal"):
        Geometry((2, 2, 2), (1, 1, 1), (0, 0, 0), np.ones((3, 3)))
    with pytest.raises(ValueError, match="spacing"):
        Geometry((2, 2, 2), (1, 0, 1), (0, 0, 0))
    with pytest.raises(ValueError, match="array shape"):
        CTVolume(np.zeros((2, 3, 4), np.int16), Geometry((2, 3, 5), (1, 1, 1), (0, 0, 0)))


def test_hu_to_int16_rounds_half_away_and_clips() -> None:
    vals = np.array([-1.5, -0.5, 0.49, 0.5, 2.5, 40000.0, -40000.0])
    assert hu_to_int16(vals).tolist() == [-2, -1, 0, 1, 3, 32767, -32768]
    assert hu_to_int16(np.array([70000], dtype=np.int32)).tolist() == [32767]


def test_world_to_voxel_rounds_ties_half_up_on_both_sides_of_zero() -> None:
    geom = Geometry((4, 4, 4), (2.0, 1.0, 1.0), (10.0, 20.0, 30.0))
    # halfway between voxel centres: i = -0.5 → 0, 0.5 → 1, 1.5 → 2; k = 0.5 → 1, -0.5 → 0 (i = -0.51 → -1)
    pts = np.array([[9.5, 20.0, 30.0], [10.5, 20.0, 30.0], [11.5, 20.0, 31.0], [9.49, 20.0, 29.0]])
    assert geom.world_to_voxel_zyx(pts).tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 2], [0, 0, -1]]


@settings(max_examples=100, deadline=None)
@given(geometries())
def test_reorient_to_lps_keeps_every_voxel_in_place(geom: Geometry) -> None:
    """Each voxel keeps its world position; an axis-aligned grid's index axes then run along +x, +y, +z."""
    if np.prod(geom.shape_zyx) > 5000:
        geom = Geometry((3, 4, 5), geom.spacing_zyx, geom.origin_xyz, geom.direction)
    array = np.arange(np.prod(geom.shape_zyx)).reshape(geom.shape_zyx)
    out, new = reorient_to_lps(array, geom)
    if not geom.is_oblique():  # axis-aligned grids become exactly canonical (oblique ones: nearest axes)
        assert new.nearest_axes() == ((0, 1, 2), (False, False, False))
        # is_oblique's default tolerance (1e-4 on each column's largest cosine) admits a rotation whose
        # off-diagonal cosines reach sqrt(1 - (1 - 1e-4)**2) ~ 0.0141, which reorientation keeps
        assert np.allclose(new.direction, np.eye(3), atol=np.sqrt(1.0 - (1.0 - 1e-4) ** 2) + 1e-9)
    zyx = np.argwhere(np.ones(geom.shape_zyx, bool))
    moved = new.world_to_voxel_zyx(geom.zyx_to_world(zyx))
    assert np.array_equal(out[tuple(moved.T)], array[tuple(zyx.T)])


def test_from_affine_ras_takes_a_given_spacing() -> None:
    """NIfTI readers take pixdim as the spacing (ITK): the direction still comes from the matrix."""
    affine = np.diag([-0.5, -0.5, 3.0, 1.0])
    affine[:3, 3] = (10.0, 20.0, -5.0)
    geom = Geometry.from_affine_ras(affine, (2, 3, 4), spacing_zyx=(2.5, 0.7, 0.7))
    assert geom.spacing_zyx == (2.5, 0.7, 0.7) and geom.origin_xyz == (-10.0, -20.0, -5.0)
    assert np.allclose(geom.direction, np.eye(3))
    assert Geometry.from_affine_ras(affine, (2, 3, 4)).spacing_zyx == (3.0, 0.5, 0.5)


@settings(max_examples=100, deadline=None)
@given(geometries())
def test_dicom_orientation_round_trips_for_right_handed_grids(geom: Geometry) -> None:
    direction = direction_from_dicom(geom.dicom_orientation())
    if geom.is_right_handed():
        assert np.allclose(direction, geom.direction, atol=1e-9)
    else:  # a DICOM stack's slices run along i × j: a left-handed grid's k comes back reversed
        assert np.allclose(direction[:, :2], geom.direction[:, :2], atol=1e-9)
        assert np.allclose(direction[:, 2], -geom.direction[:, 2], atol=1e-9)
    with pytest.raises(ValueError, match="parallel"):
        direction_from_dicom([1, 0, 0, 1, 0, 0])


def test_positions_along_normal_and_sideways_drift() -> None:
    direction = np.eye(3)
    pos, side = positions_along_normal([[0, 0, 5.0], [0, 0, 7.5], [0, 2.0, 10.0]], direction)
    assert pos.tolist() == [5.0, 7.5, 10.0] and side.tolist() == [0.0, 0.0, 2.0]
