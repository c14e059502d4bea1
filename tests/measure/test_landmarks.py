"""Landmarks found by image analysis on phantom CTs (whose anatomy is known) and on a CT without a chest."""

from __future__ import annotations

import numpy as np
import pytest

from lymphcad.geometry import CTVolume, Geometry
from lymphcad.measure.landmarks import axial_view, find_landmarks


@pytest.fixture(scope="module")
def phantom():  # type: ignore[no-untyped-def]
    from lymphcad.phantom.generate import generate_case

    c = generate_case(3, 0, "mediastinal", 0.5, "tiny")
    return CTVolume(c.image, c.geometry), np.asarray(c.params["grid"]["world_shift_xyz"], dtype=float)


def test_phantom_carina_and_arch(phantom) -> None:  # type: ignore[no-untyped-def]
    """The phantom is built around a carina at frame (0, -10, 0) and an arch whose top is at frame z ≈ 63."""
    vol, shift = phantom
    lm = find_landmarks(vol)
    assert lm.carina_xyz is not None, lm.notes
    np.testing.assert_allclose(lm.carina_xyz - shift, [0.0, -10.0, 0.0], atol=10.0)
    assert lm.arch_top_z is not None and abs(lm.arch_top_z - shift[2] - 63.0) <= 10.0
    # the right bronchus runs to the patient's right (smaller x), the left one to the left
    assert lm.bronchus_right[-1, 0] < lm.carina_xyz[0] < lm.bronchus_left[-1, 0]
    # the descending aorta lies left of the trachea and behind it
    x, y, r = lm.aorta_at(float(lm.carina_xyz[2]) - 5.0) or (np.nan, np.nan, np.nan)
    assert x > lm.carina_xyz[0] and y > lm.carina_xyz[1] and 8.0 <= r <= 16.0


def test_landmarks_do_not_depend_on_storage_order(phantom) -> None:  # type: ignore[no-untyped-def]
    """The same CT stored flipped (RAS-like, x and y reversed) gives the same world landmarks."""
    vol, _ = phantom
    g = vol.geometry
    flip = np.diag([-1.0, -1.0, 1.0])
    corner = g.zyx_to_world(np.array([0.0, g.shape_zyx[1] - 1.0, g.shape_zyx[2] - 1.0]))
    flipped = CTVolume(
        np.ascontiguousarray(vol.array[:, ::-1, ::-1]),
        Geometry(g.shape_zyx, g.spacing_zyx, tuple(corner), flip),
    )
    a, b = find_landmarks(vol), find_landmarks(flipped)
    assert a.carina_xyz is not None and b.carina_xyz is not None
    np.testing.assert_allclose(a.carina_xyz, b.carina_xyz, atol=1e-6)
    assert a.arch_top_z == pytest.approx(b.arch_top_z)


def test_axial_view_keeps_world_positions(phantom) -> None:  # type: ignore[no-untyped-def]
    vol, _ = phantom
    view = axial_view(vol)
    # a voxel of the view sits where the original voxel with the same world position is (within half a block)
    p = view.geometry.zyx_to_world(np.array([10.0, 20.0, 30.0]))
    src = vol.geometry.world_to_zyx(p)
    assert np.all(src >= 0) and np.all(src < np.asarray(vol.geometry.shape_zyx))


def test_no_chest_says_why() -> None:
    geom = Geometry((20, 64, 64), (2.5, 2.0, 2.0), (0.0, 0.0, 0.0))
    water = np.full(geom.shape_zyx, -1000, dtype=np.int16)
    water[:, 8:56, 8:56] = 30
    lm = find_landmarks(CTVolume(water, geom))
    assert lm.carina_xyz is None and lm.arch_top_z is None
    assert any("trachea" in n for n in lm.notes) and any("aorta" in n for n in lm.notes)


def test_weakly_enhanced_aorta_is_found(phantom) -> None:  # type: ignore[no-untyped-def]
    """A late/weak contrast phase (aorta ~115 HU, below the usual 125 HU floor) still gives the aorta and the
    arch's top (the floor is lowered once when no aortic lumen is found)."""
    vol, _ = phantom
    hu = np.asarray(vol.array, dtype=np.float32)
    soft = (hu > 60.0) & (hu < 400.0)  # blood and soft tissue, not bone's cortex
    hu[soft] = 60.0 + (hu[soft] - 60.0) * 0.45
    washed = CTVolume(hu.astype(np.int16), vol.geometry)
    a, b = find_landmarks(vol), find_landmarks(washed)
    assert len(b.aorta) > 0, b.notes
    assert a.arch_top_z is not None and b.arch_top_z is not None
    assert abs(a.arch_top_z - b.arch_top_z) <= 10.0
