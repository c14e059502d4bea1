"""A mask per detection: a 3D segmentation of a crop around it, on the original image grid.

Method (``region-growing``): crop a box of ``crop_factor`` × the detection's diameter around the point;
smooth lightly (Gaussian, ``smooth_mm``); estimate the node's attenuation as the median of the soft-tissue
voxels near the point; keep voxels whose HU lies between the midpoint to fat and ``node + upper_hu`` (this
leaves out fat, air, contrast-enhanced vessels, calcified bone), and only within ``max_radius_factor`` × the
diameter of the point; open with a ball of ``opening_factor`` × the diameter (at most ``opening_max_mm``): the ball
passes through the node but not through the narrow neck where a convex node touches a muscle, bowel loop
or a poorly enhanced vein of node-like HU, and a vein thinner than the ball vanishes; keep the connected
piece at the point, give back ``opening_mm`` of border in the HU range (the opening rounds the node's
tips), and fill holes (necrotic or calcified centres
belong to the node). When nothing node-like lies at the point, the mask is a sphere of the detection's
diameter (``sphere``) and the provenance says so.

A network's segmentation output can replace the image analysis: pass a :class:`NetworkMask` (a
probability map with its own geometry, e.g. the detector's output grid); it is resampled onto the crop
(linear) and thresholded, and the piece at the point is kept (``network``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.geometry import CTVolume, Geometry

FloatArray = NDArray[np.float64]
#: soft-tissue window used to estimate a node's attenuation at its centre (HU)
SOFT_TISSUE_HU: Final = (-40.0, 160.0)
#: typical mediastinal / abdominal fat (HU): the lower threshold is midway between it and the node
FAT_HU: Final = -100.0


class MaskSource(enum.Enum):
    """How a detection's mask was made (written to the provenance)."""

    REGION_GROWING = "region-growing"
    NETWORK = "network"
    SPHERE = "sphere"


@dataclass(frozen=True)
class SegmentSettings:
    """Parameters of the per-detection segmentation (mm and HU)."""

    crop_factor: float = 1.6
    crop_margin_mm: float = 6.0
    min_diameter_mm: float = 8.0
    max_radius_factor: float = 0.8
    max_radius_margin_mm: float = 3.0
    smooth_mm: float = 0.6
    seed_radius_mm: float = 3.0
    upper_hu: float = 70.0
    opening_mm: float = 1.0
    opening_factor: float = 0.45
    opening_max_mm: float = 6.0
    min_volume_mm3: float = 30.0

    def to_json(self) -> dict[str, float]:
        """Plain-JSON form (for the provenance)."""
        return {k: float(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True, eq=False)
class NetworkMask:
    """A segmentation network's node probability map (z, y, x) on its own grid."""

    probability_zyx: NDArray[np.floating]
    geometry: Geometry
    threshold: float = 0.5


@dataclass(frozen=True, eq=False)
class DetectionMask:
    """One detection's mask on a crop of the original grid.

    Attributes:
        mask_zyx: boolean mask of the crop.
        start_zyx: the crop's first voxel in the full image (array order).
        geometry: the crop's geometry (a sub-grid of the image's).
        source: how it was made.
        node_hu: the attenuation the region growing used (NaN for the other sources).
    """

    mask_zyx: NDArray[np.bool_]
    start_zyx: tuple[int, int, int]
    geometry: Geometry
    source: MaskSource
    node_hu: float = float("nan")


def _crop_box(
    geometry: Geometry, centre_zyx: FloatArray, half_mm: float
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(start, shape) of a box of ± ``half_mm`` around a continuous array position, clipped to the image."""
    half = np.ceil(half_mm / np.asarray(geometry.spacing_zyx)).astype(int)
    c = np.floor(centre_zyx + 0.5).astype(int)
    lo = np.clip(c - half, 0, np.asarray(geometry.shape_zyx) - 1)
    hi = np.clip(c + half + 1, 1, np.asarray(geometry.shape_zyx))
    shape = np.maximum(hi - lo, 1)
    return (int(lo[0]), int(lo[1]), int(lo[2])), (int(shape[0]), int(shape[1]), int(shape[2]))


def _distance_mm(
    shape: tuple[int, int, int], spacing: tuple[float, float, float], c: FloatArray
) -> FloatArray:
    """Distance (mm) of every voxel of a crop from a continuous array position (array axes scaled)."""
    z, y, x = (np.arange(n, dtype=np.float64) for n in shape)
    d: FloatArray = np.sqrt(
        ((z - c[0]) * spacing[0])[:, None, None] ** 2
        + ((y - c[1]) * spacing[1])[None, :, None] ** 2
        + ((x - c[2]) * spacing[2])[None, None, :] ** 2
    )
    return d


def _dilate(
    mask: NDArray[np.bool_], radius_mm: float, spacing: tuple[float, float, float]
) -> NDArray[np.bool_]:
    """Dilation by a ball of ``radius_mm`` (exact Euclidean, via the distance transform; O(voxels))."""
    if not mask.any():
        return mask
    # only the mask's bounding box grown by the radius can change
    idx = np.nonzero(mask)
    pad = [int(np.ceil(radius_mm / sp)) + 1 for sp in spacing]
    lo = [max(0, int(i.min()) - p) for i, p in zip(idx, pad, strict=True)]
    hi = [min(n, int(i.max()) + p + 1) for i, n, p in zip(idx, mask.shape, pad, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    out = np.zeros_like(mask)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing) <= radius_mm
    return out


def _piece_at(mask: NDArray[np.bool_], dist: FloatArray, seed_mm: float) -> NDArray[np.bool_]:
    """The connected piece of ``mask`` closest to the point (within ``seed_mm``), or an empty mask."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros_like(mask)
    near = labels[(dist <= seed_mm) & mask]
    if near.size == 0:
        return np.zeros_like(mask)
    ids, counts = np.unique(near, return_counts=True)
    return np.asarray(labels == ids[int(np.argmax(counts))])


#: connectivity within a slice only: one fill call fills every slice's holes (array slices = first axis)
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def _fill(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Holes filled in every slice (a hole enclosed in 3D is enclosed in each slice through it, too)."""
    if not mask.any():
        return mask
    return np.asarray(ndimage.binary_fill_holes(mask, structure=_IN_PLANE), dtype=bool)


def segment_detection(
    volume: CTVolume,
    center_xyz: tuple[float, float, float],
    diameter_mm: float | None,
    settings: SegmentSettings | None = None,
    *,
    network: NetworkMask | None = None,
) -> DetectionMask:
    """The mask of the node at a detection (see the module docstring for the method)."""
    s = settings or SegmentSettings()
    geom = volume.geometry
    diam = max(float(diameter_mm or 0.0), s.min_diameter_mm)
    c_full = geom.world_to_zyx(np.asarray(center_xyz, dtype=np.float64))
    start, shape = _crop_box(geom, c_full, s.crop_factor * diam / 2.0 + s.crop_margin_mm)
    crop_geom = geom.crop(start, shape)
    sl = tuple(slice(a, a + n) for a, n in zip(start, shape, strict=True))
    c = c_full - np.asarray(start, dtype=np.float64)
    dist = _distance_mm(shape, geom.spacing_zyx, c)
    r_max = s.max_radius_factor * diam + s.max_radius_margin_mm
    seed_mm = max(s.seed_radius_mm, 1.01 * max(geom.spacing_zyx) / 2.0)
    if network is not None:
        kk, jj, ii = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
        world = crop_geom.index_to_world(
            np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1).astype(np.float64)
        )
        src = network.geometry.world_to_zyx(world).T
        prob = ndimage.map_coordinates(
            np.asarray(network.probability_zyx, dtype=np.float32), src, order=1, mode="constant", cval=0.0
        ).reshape(shape)
        piece = _fill(_piece_at(prob >= network.threshold, dist, seed_mm))
        if piece.sum() * geom.voxel_volume_mm3 >= s.min_volume_mm3:
            return DetectionMask(piece, start, crop_geom, MaskSource.NETWORK)
    hu = np.asarray(volume.array[sl], dtype=np.float32)
    sigma = [s.smooth_mm / sp for sp in geom.spacing_zyx]
    smooth = ndimage.gaussian_filter(hu, sigma, mode="nearest")
    seed = (dist <= max(seed_mm, 0.3 * diam)) & (smooth >= SOFT_TISSUE_HU[0]) & (smooth <= SOFT_TISSUE_HU[1])
    node_hu = float(np.median(smooth[seed])) if seed.sum() >= 3 else float("nan")
    piece = np.zeros(shape, dtype=bool)
    if np.isfinite(node_hu):
        lo = (node_hu + FAT_HU) / 2.0
        hi = node_hu + s.upper_hu
        inside = (smooth >= lo) & (smooth <= hi) & (dist <= r_max)
        core = np.zeros(shape, dtype=bool)
        radius = float(np.clip(s.opening_factor * diam, s.opening_mm, s.opening_max_mm))
        depth = ndimage.distance_transform_edt(inside, sampling=geom.spacing_zyx)
        while radius >= s.opening_mm and not core.any():
            core = _piece_at(_dilate(depth > radius, radius, geom.spacing_zyx), dist, seed_mm)
            radius *= 0.85
        if not core.any():
            core = _piece_at(inside, dist, seed_mm)
        # at least one in-plane voxel: a restore thinner than a voxel gives nothing back on coarse grids
        restore = max(s.opening_mm, 1.01 * max(geom.spacing_zyx[1:]))
        piece = _fill(_dilate(core, restore, geom.spacing_zyx) & inside)
    if piece.sum() * geom.voxel_volume_mm3 >= s.min_volume_mm3:
        return DetectionMask(piece, start, crop_geom, MaskSource.REGION_GROWING, node_hu)
    sphere = dist <= diam / 2.0
    return DetectionMask(sphere, start, crop_geom, MaskSource.SPHERE, node_hu)
