"""Per-detection segmentation: a node in fat touching an enhanced artery and a poorly enhanced vein."""

from __future__ import annotations

import numpy as np
import pytest

from lymphcad.geometry import CTVolume, Geometry
from lymphcad.measure.recist import measure_mask
from lymphcad.measure.segment import MaskSource, NetworkMask, segment_detection
from measure_fixtures import ellipsoid_mask, world_points

SEMI = (9.0, 6.0, 7.0)


def _scene(vein_hu: float, noise: float = 12.0) -> tuple[CTVolume, np.ndarray, np.ndarray]:
    """Fat (-100 HU) with a 50-HU node, an enhanced artery (250 HU) and a vein of ``vein_hu`` both touching it."""
    geom = Geometry((50, 96, 96), (1.5, 0.75, 0.75), (-36.0, -36.0, -37.5))
    centre = np.array([0.0, 0.0, 0.0])
    node = ellipsoid_mask(geom, centre, SEMI, 0.0)
    pts = world_points(geom)
    # craniocaudal vessels touching the node: an artery (radius 7 mm) on its right, a vein (4 mm) behind it
    artery = (pts[..., 0] - (-SEMI[0] - 7.0)) ** 2 + pts[..., 1] ** 2 <= 7.0**2
    vein = pts[..., 0] ** 2 + (pts[..., 1] - (SEMI[1] + 4.0)) ** 2 <= 4.0**2
    hu = np.full(geom.shape_zyx, -100.0)
    hu[vein] = vein_hu
    hu[artery] = 250.0
    hu[node] = 50.0
    rng = np.random.default_rng(0)
    hu += rng.normal(0.0, noise, hu.shape)
    vol = CTVolume(np.round(hu).astype(np.int16), geom)
    return vol, node, centre


@pytest.mark.parametrize("vein_hu", [60.0, 140.0])
def test_node_touching_vessels_is_measured(vein_hu: float) -> None:
    vol, node, centre = _scene(vein_hu)
    truth = measure_mask(node, vol.geometry)
    for diameter in (12.0, 15.0, 20.0):  # the detector's size estimate is rough
        m = segment_detection(vol, tuple(centre), diameter)
        assert m.source == MaskSource.REGION_GROWING
        rec = measure_mask(m.mask_zyx, m.geometry)
        assert abs(rec.short_axis_mm - truth.short_axis_mm) <= 1.0, (diameter, rec, truth)
        assert abs(rec.long_axis_mm - truth.long_axis_mm) <= 1.5, (diameter, rec, truth)
        assert rec.volume_ml == pytest.approx(truth.volume_ml, rel=0.2)


def test_nothing_node_like_gives_a_sphere() -> None:
    geom = Geometry((30, 40, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    air = CTVolume(np.full(geom.shape_zyx, -1000, dtype=np.int16), geom)
    m = segment_detection(air, (20.0, 20.0, 15.0), 10.0)
    assert m.source == MaskSource.SPHERE
    assert measure_mask(m.mask_zyx, m.geometry).short_axis_mm == pytest.approx(10.0, abs=1.0)


def test_network_mask_is_used_when_given() -> None:
    vol, node, centre = _scene(60.0)
    # a probability map on a coarser grid (the network's), covering the node only
    coarse = Geometry((25, 48, 48), (3.0, 1.5, 1.5), (-35.625, -35.625, -36.75))
    inside = ellipsoid_mask(coarse, centre, SEMI, 0.0)
    prob = np.where(inside, 0.9, 0.05).astype(np.float32)
    m = segment_detection(vol, tuple(centre), 15.0, network=NetworkMask(prob, coarse))
    assert m.source == MaskSource.NETWORK
    truth = measure_mask(node, vol.geometry)
    rec = measure_mask(m.mask_zyx, m.geometry)
    assert abs(rec.short_axis_mm - truth.short_axis_mm) <= 1.6  # half the network's voxel each side


def test_crop_geometry_is_a_subgrid_of_the_image() -> None:
    vol, _, centre = _scene(60.0)
    m = segment_detection(vol, tuple(centre), 15.0)
    start = np.asarray(m.start_zyx, dtype=float)
    np.testing.assert_allclose(
        m.geometry.zyx_to_world(np.zeros(3)), vol.geometry.zyx_to_world(start), atol=1e-9
    )
