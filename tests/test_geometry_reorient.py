"""reorient_to_lps: every voxel keeps its value and its world position, for all 48 axis-aligned grids."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lymphcad.geometry import Geometry, reorient_to_lps


def _signed_permutations() -> list[np.ndarray]:
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            for c, w in enumerate(perm):
                m[w, c] = signs[c]
            mats.append(m)
    return mats


@pytest.mark.parametrize("direction", _signed_permutations())
def test_reorient_keeps_values_at_their_world_positions(direction: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    geom = Geometry((4, 5, 6), (2.5, 0.7, 0.9), (10.0, -20.0, 30.0), direction)
    array = rng.integers(-1000, 1000, size=geom.shape_zyx).astype(np.int16)
    out, new = reorient_to_lps(array, geom)
    assert out.shape == new.shape_zyx
    assert np.allclose(new.direction, np.eye(3))
    zyx = np.stack(np.meshgrid(*[np.arange(s) for s in geom.shape_zyx], indexing="ij"), -1).reshape(-1, 3)
    world = geom.zyx_to_world(zyx.astype(float))
    new_zyx = new.world_to_voxel_zyx(world)
    assert np.array_equal(out[tuple(new_zyx.T)], array[tuple(zyx.T)])
    # increasing column index = towards the patient's left, row = posterior, slice = superior
    assert new.orientation_codes() == "LPS"


def test_reorient_oblique_keeps_world_positions() -> None:
    angle = np.deg2rad(5.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1.0]])
    direction = rot @ np.diag([-1.0, 1.0, -1.0])
    geom = Geometry((3, 4, 5), (3.0, 1.0, 1.5), (1.0, 2.0, 3.0), direction)
    array = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    out, new = reorient_to_lps(array, geom)
    for zyx in [(0, 0, 0), (2, 3, 4), (1, 2, 0)]:
        world = geom.zyx_to_world(np.asarray(zyx, dtype=float))
        k, j, i = new.world_to_voxel_zyx(world)
        assert out[k, j, i] == array[zyx]
