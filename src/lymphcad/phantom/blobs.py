"""The phantom's fixed reference detector (spec §6.11.5–6): multi-scale LoG blobness inside 0–120 HU.

Intensities are first mapped to node-likeness (a tent over 0–120 HU peaking at 60 HU, so fat, air, bone
and enhanced vessels are flat zero), resampled to a 2 mm grid, filtered by scale-normalised −LoG at
σ = 2.5–7 mm, and local maxima whose smoothed HU lies in 0–120 are ranked by their response.

No training. Used to calibrate difficulty: at d = 0.5 it should need 30–60 candidates per volume to
reach ≥ 95 % sensitivity (the NIH-era candidate generator: ~40 per patient), and its sensitivity at a
fixed candidate count should fall as the difficulty rises.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

SCALES_MM = (2.5, 3.5, 5.0, 7.0)


def blob_candidates(
    image: NDArray[Any],
    spacing_zyx: tuple[float, float, float],
    *,
    region: NDArray[Any] | None = None,
    grid_mm: float = 2.0,
    scales_mm: tuple[float, ...] = SCALES_MM,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Candidates sorted by blobness: (positions (N, 3) in array mm (z, y, x) from voxel 0, scores (N,))."""
    zoom = [s / grid_mm for s in spacing_zyx]
    # node-likeness inside 0–120 HU: a tent peaking at 60 HU (fat, air, bone and enhanced vessels → 0)
    like = np.clip(1.0 - np.abs(image.astype(np.float32) - 60.0) / 60.0, 0.0, 1.0) * np.float32(120.0)
    img = ndimage.zoom(like, zoom, order=1)
    raw = ndimage.zoom(image.astype(np.float32), zoom, order=1)
    reg = None
    if region is not None:
        reg = ndimage.zoom(region.astype(np.uint8), zoom, order=0) > 0
        reg = reg[: img.shape[0], : img.shape[1], : img.shape[2]]
    best = np.full(img.shape, -np.inf, np.float32)
    for s in scales_mm:
        sv = s / grid_mm
        r = -(sv * sv) * ndimage.gaussian_laplace(img, sv)
        np.maximum(best, r, out=best)
    smooth = ndimage.gaussian_filter(raw, 1.0)
    peaks = (best == ndimage.maximum_filter(best, size=5)) & (best > 0) & (smooth >= 0) & (smooth <= 120)
    if reg is not None:
        peaks &= reg
    pos = np.argwhere(peaks).astype(np.float64)
    score = best[peaks].astype(np.float64)
    order = np.argsort(-score, kind="stable")
    return pos[order] * grid_mm, score[order]


def hits_at_rank(
    cand_mm: NDArray[np.float64], nodes_mm: NDArray[np.float64], radii_mm: NDArray[np.float64]
) -> NDArray[np.int64]:
    """For each node, the rank (1-based) of the first candidate within its radius; a huge value when none."""
    out = np.full(len(nodes_mm), 10**9, dtype=np.int64)
    if len(cand_mm) == 0:
        return out
    for n, (c, r) in enumerate(zip(nodes_mm, radii_mm, strict=True)):
        d = np.sqrt(((cand_mm - c) ** 2).sum(1))
        idx = np.nonzero(d <= r)[0]
        if len(idx):
            out[n] = int(idx[0]) + 1
    return out


def candidates_needed(ranks: list[NDArray[np.int64]], target: float = 0.95) -> int:
    """Smallest per-volume candidate count N whose pooled sensitivity (top N per volume) reaches ``target``."""
    allr = np.sort(np.concatenate(ranks)) if ranks else np.array([], dtype=np.int64)
    if len(allr) == 0:
        return 0
    k = int(np.ceil(target * len(allr))) - 1
    return int(allr[k])


def sensitivity_at(ranks: list[NDArray[np.int64]], n: int) -> float:
    allr = np.concatenate(ranks) if ranks else np.array([], dtype=np.int64)
    return float(np.mean(allr <= n)) if len(allr) else float("nan")
