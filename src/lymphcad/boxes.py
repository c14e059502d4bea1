"""The one home of box conventions in lymphcad (formats.md §4).

Rules, stated once here and nowhere else:

* A box in files and metrics is **axis-aligned in world LPS mm**, written ``[x0, y0, z0, x1, y1, z1]``
  with ``x0 <= x1`` etc. (MONAI's ``StandardMode``). An array of boxes has shape ``(N, 6)`` float64;
  no boxes is shape ``(0, 6)``, never ``(0,)`` or ``(1, 0)``.
* **Ground truth** box of an instance: the extent of its voxels *including their full voxel size*
  (voxel centres ± half a spacing), mapped to world. With an oblique direction it is the world
  bounding box of that index-space box.
* **nnDetection** box (``--nndet-boxes``): nnDetection's ``instances_to_boxes_np`` pads the voxel-index
  extent by one voxel on each side (``min - 1``, ``max + 1``, measured between voxel centres); that
  index box is mapped to world the same way.
* **Detection** box: a cube of side ``diameter_mm`` centred on the detection point.
* IoU is volume-based with zero-width boxes allowed (``TO_REMOVE = 0``, as in MONAI and nnDetection).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from lymphcad.geometry import Geometry

FloatArray = NDArray[np.float64]

#: Shape of "no boxes".
EMPTY_BOXES: Final = np.zeros((0, 6), dtype=np.float64)
EMPTY_BOXES.setflags(write=False)


def as_boxes(boxes: ArrayLike) -> FloatArray:
    """Return ``boxes`` as a ``(N, 6)`` float64 array; empty input of any shape becomes ``(0, 6)``."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 6), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 6:
        raise ValueError(f"boxes must have shape (N, 6), got {arr.shape}")
    return arr


def _index_boxes_to_world(lo_zyx: FloatArray, hi_zyx: FloatArray, geometry: Geometry) -> FloatArray:
    """World LPS boxes covering index-space boxes given by corners ``lo_zyx``/``hi_zyx`` (N, 3), array order."""
    n = lo_zyx.shape[0]
    if n == 0:
        return np.zeros((0, 6), dtype=np.float64)
    # the 8 corners of every box, (N*8, 3) in (z, y, x)
    sel = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=bool)  # (8, 3)
    corners = np.where(sel[None, :, :], hi_zyx[:, None, :], lo_zyx[:, None, :]).reshape(-1, 3)
    world = geometry.zyx_to_world(corners).reshape(n, 8, 3)
    return np.concatenate([world.min(axis=1), world.max(axis=1)], axis=1)


def _instance_extents(
    labels_zyx: NDArray[np.integer], ids: ArrayLike | None
) -> tuple[NDArray[np.int64], FloatArray, FloatArray]:
    """Instance ids present and their inclusive voxel extents (min, max voxel index, array order)."""
    arr = np.asarray(labels_zyx)
    if arr.dtype.kind not in "iu" or arr.dtype.itemsize > 4:  # find_objects takes uint16/int32 without a copy
        arr = arr.astype(np.int64)
    slices = ndimage.find_objects(arr)
    present = [i + 1 for i, s in enumerate(slices) if s is not None]
    present_set = set(present)
    wanted = present if ids is None else [int(i) for i in np.asarray(ids).ravel() if int(i) in present_set]
    lo = np.array([[s.start for s in slices[i - 1]] for i in wanted], dtype=np.float64).reshape(-1, 3)
    hi = np.array([[s.stop - 1 for s in slices[i - 1]] for i in wanted], dtype=np.float64).reshape(-1, 3)
    return np.asarray(wanted, dtype=np.int64), lo, hi


def instance_boxes(
    labels_zyx: NDArray[np.integer], geometry: Geometry, *, ids: ArrayLike | None = None
) -> tuple[NDArray[np.int64], FloatArray]:
    """World boxes of the instances of a label mask, full voxel size included.

    Args:
        labels_zyx: ``(z, y, x)`` integer instance mask, 0 = background.
        geometry: the mask's grid.
        ids: instance ids to box (absent ids are skipped); default every id present, ascending.

    Returns:
        ``(ids, boxes)``: ``(N,)`` int64 ids and ``(N, 6)`` world LPS boxes ``[x0, y0, z0, x1, y1, z1]``.
    """
    found, lo, hi = _instance_extents(labels_zyx, ids)
    return found, _index_boxes_to_world(lo - 0.5, hi + 0.5, geometry)


def nndet_instance_boxes(
    labels_zyx: NDArray[np.integer], geometry: Geometry, *, ids: ArrayLike | None = None
) -> tuple[NDArray[np.int64], FloatArray]:
    """World boxes of nnDetection's padded voxel boxes: voxel centres ``min - 1`` to ``max + 1`` on each axis.

    Same arguments and return as :func:`instance_boxes`; each box is one voxel wider per axis than
    :func:`instance_boxes` gives (nnDetection ``instances_to_boxes_np``).
    """
    found, lo, hi = _instance_extents(labels_zyx, ids)
    return found, _index_boxes_to_world(lo - 1.0, hi + 1.0, geometry)


def cube_boxes(centers_xyz: ArrayLike, diameters_mm: ArrayLike) -> FloatArray:
    """Cubes of side ``diameters_mm`` (N,) centred on ``centers_xyz`` (N, 3) world LPS mm → ``(N, 6)``."""
    c = np.asarray(centers_xyz, dtype=np.float64).reshape(-1, 3)
    half = np.asarray(diameters_mm, dtype=np.float64).reshape(-1)[:, None] / 2.0
    if half.shape[0] != c.shape[0]:
        raise ValueError(f"{c.shape[0]} centres but {half.shape[0]} diameters")
    return np.concatenate([c - half, c + half], axis=1)


def box_volume(boxes: ArrayLike) -> FloatArray:
    """Volumes in mm³ of ``(N, 6)`` boxes."""
    b = as_boxes(boxes)
    return np.asarray(np.prod(np.clip(b[:, 3:] - b[:, :3], 0.0, None), axis=1), dtype=np.float64)


def box_iou(boxes_a: ArrayLike, boxes_b: ArrayLike) -> FloatArray:
    """Pairwise IoU of ``(N, 6)`` and ``(M, 6)`` world boxes → ``(N, M)`` (0 where the union is empty)."""
    a, b = as_boxes(boxes_a), as_boxes(boxes_b)
    lo = np.maximum(a[:, None, :3], b[None, :, :3])
    hi = np.minimum(a[:, None, 3:], b[None, :, 3:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=2)
    union = box_volume(a)[:, None] + box_volume(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return np.asarray(iou, dtype=np.float64)
