"""A real CT background analysed once for insertion: tissue map, landmarks, stations, noise spectrum, the
depth of node-hosting tissue and the additive model's smooth reference (shared by all cases of a cohort)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume, reorient_to_lps
from lymphcad.phantom.background import (
    NODE_HOST,
    Landmarks,
    background_region,
    classify_background,
    find_landmarks,
    smooth_hu,
    station_masks,
)
from lymphcad.phantom.formation import NoiseModel


@dataclass(frozen=True)
class BackgroundAnalysis:
    """Everything insertion needs from a background, computed once and shared by its cases."""

    tissue: NDArray[np.uint8]
    landmarks: Landmarks
    stations: dict[str, NDArray[np.bool_]]
    region: str  # the background's own region (``auto`` resolves to it)
    noise: NoiseModel
    depth_mm: NDArray[np.float32]  # distance (mm) to the nearest voxel that cannot host a node
    hu_smooth: NDArray[np.float32]  # the background smoothed by ~3 mm (the additive model's reference)

    def station_voxels(self, name: str) -> NDArray[np.intp]:
        """(N, 3) voxel indices of a station."""
        return np.argwhere(self.stations[name])


def canonical_volume(vol: CTVolume) -> CTVolume:
    """The background with its array axes along +z, +y, +x of LPS (axis flips/permutations only, no
    interpolation): landmarks and stations read directions from the array. Oblique grids are refused."""
    geom = vol.geometry
    if geom.is_oblique():
        raise InputError("oblique backgrounds are not supported for insertion")
    if np.allclose(geom.direction, np.eye(3)):
        return vol
    arr, g = reorient_to_lps(vol.array, geom)
    return CTVolume(arr, g)


def analyse_background(vol: CTVolume) -> BackgroundAnalysis:
    """Tissue map, landmarks, stations, noise spectrum and hosting depth of a background whose array axes
    run along +z, +y, +x of LPS (:func:`canonical_volume`; ``insert_cohort`` reorients the background)."""
    geom = vol.geometry
    if geom.is_oblique():
        raise InputError("oblique backgrounds are not supported for insertion")
    if not np.allclose(geom.direction, np.eye(3)):
        raise InputError("reorient the background first (lymphcad.phantom.analysis.canonical_volume)")
    sp = geom.spacing_zyx
    tis = classify_background(vol.array, sp)
    sm = smooth_hu(vol.array, sp)
    lm = find_landmarks(tis, sm, geom)
    stations = station_masks(tis, lm, geom)
    noise = NoiseModel.measure(vol.array, tis, sp)
    depth = hosting_depth(tis, stations, sp)
    smooth3 = hosting_reference(vol.array, tis, sp)
    return BackgroundAnalysis(tis, lm, stations, background_region(tis, lm, geom), noise, depth, smooth3)


def hosting_depth(
    tissue: NDArray[np.uint8], stations: dict[str, NDArray[np.bool_]], sp: tuple[float, float, float]
) -> NDArray[np.float32]:
    """Distance (mm) to the nearest voxel that cannot host a node, around the stations (+ 40 mm; 0 elsewhere)."""
    dz, dy, dx = sp
    host = np.isin(tissue, np.asarray(NODE_HOST, dtype=np.uint8))
    depth = np.zeros(tissue.shape, np.float32)
    if stations:
        union = np.zeros(tissue.shape, bool)
        for m in stations.values():
            union |= m
        zz, yy, xx = np.nonzero(union)
        pad = (round(40.0 / dz) + 1, round(40.0 / dy) + 1, round(40.0 / dx) + 1)
        box = tuple(
            slice(max(0, int(a.min()) - p), min(n, int(a.max()) + p + 1))
            for a, p, n in zip((zz, yy, xx), pad, tissue.shape, strict=True)
        )
        hb = host[box].copy()
        # the volume's border cannot host a node either
        hb[0], hb[-1] = False, False
        depth[box] = ndimage.distance_transform_edt(hb, sampling=sp).astype(np.float32)
    return depth


def hosting_reference(
    hu: NDArray[Any], tissue: NDArray[np.uint8], sp: tuple[float, float, float]
) -> NDArray[np.float32]:
    """The additive model's reference: the local mean (~3 mm) of node-hosting tissue only (a plain blur would
    mix in the vessels and organs beside the node and leave their shadow inside it)."""
    dz, dy, dx = sp
    host = np.isin(tissue, np.asarray(NODE_HOST, dtype=np.uint8))
    sig = (max(0.5, 2.0 / dz), 3.0 / dy, 3.0 / dx)
    hf = host.astype(np.float32)
    num = ndimage.gaussian_filter(hu.astype(np.float32) * hf, sig)
    den = ndimage.gaussian_filter(hf, sig)
    plain = ndimage.gaussian_filter(hu.astype(np.float32), sig)
    return np.asarray(np.where(den > 0.05, num / np.maximum(den, 1e-6), plain), np.float32)
