"""Box conventions (lymphcad.boxes): world LPS [x0, y0, z0, x1, y1, z1], full voxel size, (0, 6) when empty."""

from __future__ import annotations

import numpy as np
import pytest

from lymphcad.boxes import EMPTY_BOXES, as_boxes, box_iou, cube_boxes, instance_boxes, nndet_instance_boxes
from lymphcad.geometry import Geometry

GEOM = Geometry((6, 8, 10), (2.0, 0.8, 0.5), (10.0, -20.0, 30.0), np.diag([-1.0, 1.0, 1.0]))


def test_single_voxel_box_covers_the_full_voxel() -> None:
    labels = np.zeros(GEOM.shape_zyx, np.uint16)
    labels[2, 3, 4] = 1  # (z, y, x)
    ids, boxes = instance_boxes(labels, GEOM)
    assert ids.tolist() == [1]
    c = GEOM.zyx_to_world([2.0, 3.0, 4.0])
    # x axis is flipped by the direction: the box is still ordered x0 <= x1
    half = np.array([0.25, 0.4, 1.0])
    np.testing.assert_allclose(boxes[0], np.concatenate([c - half, c + half]))


def test_nndet_box_is_padded_by_one_voxel_between_centres() -> None:
    labels = np.zeros(GEOM.shape_zyx, np.uint16)
    labels[1:3, 2:5, 3:4] = 2
    ids, full = instance_boxes(labels, GEOM)
    _, nndet = nndet_instance_boxes(labels, GEOM)
    assert ids.tolist() == [2]
    spacing_xyz = np.array([0.5, 0.8, 2.0])
    np.testing.assert_allclose(nndet[0, 3:] - nndet[0, :3], full[0, 3:] - full[0, :3] + spacing_xyz)
    # voxel extent x: 1 voxel → full box 0.5 mm wide, nnDetection box 1.0 mm (centres x-1 .. x+1)
    assert full[0, 3] - full[0, 0] == pytest.approx(0.5)
    assert nndet[0, 3] - nndet[0, 0] == pytest.approx(1.0)
    np.testing.assert_allclose((nndet[0, :3] + nndet[0, 3:]) / 2, (full[0, :3] + full[0, 3:]) / 2)


def test_empty_and_selected_ids() -> None:
    labels = np.zeros(GEOM.shape_zyx, np.uint16)
    ids, boxes = instance_boxes(labels, GEOM)
    assert ids.shape == (0,) and boxes.shape == (0, 6)
    labels[0, 0, 0] = 1
    labels[5, 7, 9] = 3
    ids, boxes = instance_boxes(labels, GEOM, ids=[3, 2])
    assert ids.tolist() == [3] and boxes.shape == (1, 6)
    assert as_boxes([]).shape == (0, 6)
    assert EMPTY_BOXES.shape == (0, 6)
    assert box_iou(EMPTY_BOXES, boxes).shape == (0, 1)


def test_cube_boxes_and_iou_hand_values() -> None:
    cubes = cube_boxes([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]], [10.0, 10.0])
    np.testing.assert_allclose(cubes[0], [-5, -5, -5, 5, 5, 5])
    iou = box_iou(cubes, cubes)
    # overlap 5×10×10 = 500, union 1500
    np.testing.assert_allclose(iou, [[1.0, 1 / 3], [1 / 3, 1.0]])
    assert box_iou([[0, 0, 0, 1, 1, 1]], [[2, 2, 2, 3, 3, 3]])[0, 0] == 0.0
    assert box_iou([[0, 0, 0, 0, 0, 0]], [[0, 0, 0, 0, 0, 0]])[0, 0] == 0.0
    with pytest.raises(ValueError):
        cube_boxes([[0.0, 0.0, 0.0]], [1.0, 2.0])


def test_iou_matches_monai_box_iou() -> None:
    from monai.data.box_utils import box_iou as monai_box_iou

    rng = np.random.default_rng(3)
    lo = rng.uniform(-20, 20, (7, 3))
    a = np.concatenate([lo, lo + rng.uniform(1, 15, (7, 3))], axis=1)
    lo = rng.uniform(-20, 20, (5, 3))
    b = np.concatenate([lo, lo + rng.uniform(1, 15, (5, 3))], axis=1)
    np.testing.assert_allclose(box_iou(a, b), monai_box_iou(a, b), atol=1e-6)
