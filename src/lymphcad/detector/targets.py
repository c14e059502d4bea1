"""Target encoding and decoding for the centre-heatmap detector, and the losses that compare them.

Conventions (all arrays in (z, y, x) order on the plan grid, see :mod:`lymphcad.detector.plan`):

* An input voxel index ``v`` (continuous) maps to output cell units ``u = (v - (s - 1) / 2) / s`` with
  ``s`` = :data:`~lymphcad.detector.network.STRIDE`; cell ``c`` has its centre at input voxel
  ``s·c + (s - 1)/2``. So cell centres and voxel centres share one world grid.
* **Heatmap**: for each node a Gaussian around its nearest cell (value exactly 1 there),
  ``exp(-d² / 2σ²)`` with ``d`` in mm and ``σ = clip(diameter / 4, 2.5 mm, 8 mm)``; nodes combine by max.
* **Size**: ``log(diameter_mm / 10)``. **Offset**: ``u - c`` (cells), regressed on the 3×3×3 cells around
  each node's centre cell (the peak found at inference may sit one cell off).
* **Ignore**: cells near "neither" findings (e.g. nodes just under the size threshold) take no part in the
  heatmap loss.

Decoding reverses this: local maxima of the sigmoid heatmap (3×3×3) above a threshold, offset-refined,
mapped to world mm by the caller, then :func:`nms_mm` in millimetres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from lymphcad.detector.network import STRIDE

SIZE_REF_MM: Final = 10.0
SIGMA_MIN_MM: Final = 2.5
SIGMA_MAX_MM: Final = 8.0
SIGMA_PER_DIAMETER: Final = 0.25


def sigma_mm(diameter_mm: float) -> float:
    """The heatmap Gaussian's σ (mm) for a node of the given diameter."""
    return float(np.clip(SIGMA_PER_DIAMETER * diameter_mm, SIGMA_MIN_MM, SIGMA_MAX_MM))


def voxel_to_cell(v: NDArray[np.float64], stride: int = STRIDE) -> NDArray[np.float64]:
    """Continuous input-voxel positions → continuous output-cell positions."""
    return (np.asarray(v, dtype=np.float64) - (stride - 1) / 2.0) / stride


def cell_to_voxel(u: NDArray[np.float64], stride: int = STRIDE) -> NDArray[np.float64]:
    """Continuous output-cell positions → continuous input-voxel positions."""
    return np.asarray(u, dtype=np.float64) * stride + (stride - 1) / 2.0


@dataclass(frozen=True)
class Targets:
    """Training targets of one patch, each ``(C, Z, Y, X)`` float32 at the output stride."""

    heatmap: NDArray[np.float32]  # (1, ...)
    ignore: NDArray[np.float32]  # (1, ...) 1 = excluded from the heatmap loss
    size: NDArray[np.float32]  # (1, ...)
    offset: NDArray[np.float32]  # (3, ...)
    reg_mask: NDArray[np.float32]  # (1, ...) 1 where size/offset are regressed


def encode(
    centers_zyx: NDArray[np.float64],
    diameters_mm: NDArray[np.float64],
    out_shape_zyx: tuple[int, int, int],
    *,
    spacing_mm: float,
    ignore_zyx: NDArray[np.float64] | None = None,
    ignore_radius_mm: NDArray[np.float64] | None = None,
    stride: int = STRIDE,
) -> Targets:
    """Encode nodes (input-voxel centres ``(N, 3)`` zyx, diameters ``(N,)`` mm) into output-grid targets.

    Nodes whose centre cell falls outside the output grid still paint the part of their Gaussian that is
    inside (so a node cut by the patch border is not a negative), but get no centre and no regression.
    """
    shape = tuple(int(s) for s in out_shape_zyx)
    heat = np.zeros(shape, dtype=np.float32)
    size = np.zeros(shape, dtype=np.float32)
    offset = np.zeros((3, *shape), dtype=np.float32)
    reg = np.zeros(shape, dtype=np.float32)
    reg_owner = np.full(shape, -np.inf, dtype=np.float32)
    ignore = np.zeros(shape, dtype=np.float32)
    cell_mm = spacing_mm * stride
    centers = np.asarray(centers_zyx, dtype=np.float64).reshape(-1, 3)
    diams = np.asarray(diameters_mm, dtype=np.float64).reshape(-1)
    for center, diam in zip(centers, diams, strict=True):
        u = voxel_to_cell(center, stride)
        c = np.floor(u + 0.5).astype(np.int64)
        sig = sigma_mm(float(diam)) / cell_mm  # in cells
        rad = math.ceil(3.0 * sig)
        lo = np.maximum(c - rad, 0)
        hi = np.minimum(c + rad + 1, np.asarray(shape))
        if np.any(lo >= hi):
            continue
        zz, yy, xx = np.meshgrid(
            np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), np.arange(lo[2], hi[2]), indexing="ij"
        )
        d2 = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
        g = np.exp(-d2 / (2.0 * sig * sig)).astype(np.float32)
        sl = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        np.maximum(heat[sl], g, out=heat[sl])
        # regression on the 3×3×3 cells around the centre cell; a cell belongs to the node nearest to it
        rlo = np.maximum(c - 1, 0)
        rhi = np.minimum(c + 2, np.asarray(shape))
        if np.any(rlo >= rhi):
            continue
        for z in range(rlo[0], rhi[0]):
            for y in range(rlo[1], rhi[1]):
                for x in range(rlo[2], rhi[2]):
                    closeness = -float((u[0] - z) ** 2 + (u[1] - y) ** 2 + (u[2] - x) ** 2)
                    if closeness > reg_owner[z, y, x]:
                        reg_owner[z, y, x] = closeness
                        reg[z, y, x] = 1.0
                        size[z, y, x] = math.log(max(float(diam), 1.0) / SIZE_REF_MM)
                        offset[:, z, y, x] = (u[0] - z, u[1] - y, u[2] - x)
    if ignore_zyx is not None and len(ignore_zyx):
        radii = np.asarray(ignore_radius_mm, dtype=np.float64).reshape(-1)
        for center, r_mm in zip(np.asarray(ignore_zyx, dtype=np.float64).reshape(-1, 3), radii, strict=True):
            u = voxel_to_cell(center, stride)
            r = r_mm / cell_mm
            lo = np.maximum(np.floor(u - r).astype(np.int64), 0)
            hi = np.minimum(np.ceil(u + r).astype(np.int64) + 1, np.asarray(shape))
            if np.any(lo >= hi):
                continue
            zz, yy, xx = np.meshgrid(
                np.arange(lo[0], hi[0]), np.arange(lo[1], hi[1]), np.arange(lo[2], hi[2]), indexing="ij"
            )
            inside = ((zz - u[0]) ** 2 + (yy - u[1]) ** 2 + (xx - u[2]) ** 2) <= r * r
            sl = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
            ignore[sl] = np.maximum(ignore[sl], inside.astype(np.float32))
        ignore[heat >= 0.5] = 0.0  # a true node's core is never ignored
    return Targets(heat[None], ignore[None], size[None], offset, reg[None])


# -- losses -------------------------------------------------------------------------------------------
def centre_cells(target: torch.Tensor) -> torch.Tensor:
    """Number of centre cells (heatmap value 1) in a target batch: the focal loss's normaliser."""
    return (target >= 1.0 - 1e-6).float().sum()


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore: torch.Tensor,
    *,
    alpha: float = 2.0,
    beta: float = 4.0,
    n_pos: torch.Tensor | None = None,
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of centre cells (≥ 1).

    ``n_pos``: the divisor when it is not this batch's own count (DDP: the count over all processes).
    """
    logits = logits.float()
    p = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    log_1mp = F.logsigmoid(-logits)
    pos = (target >= 1.0 - 1e-6).float()
    keep = 1.0 - ignore
    pos_loss = -((1.0 - p) ** alpha) * log_p * pos
    neg_loss = -((1.0 - target) ** beta) * (p**alpha) * log_1mp * (1.0 - pos) * keep
    divisor = pos.sum() if n_pos is None else n_pos
    return (pos_loss.sum() + neg_loss.sum()) / divisor.clamp(min=1.0)


def masked_l1(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, n_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute error over masked cells (mask broadcasts over channels); 0 when the mask is empty.

    ``n_mask``: the number of masked cells to divide by when it is not this batch's own (DDP: all processes').
    """
    pred = pred.float()
    diff = (pred - target).abs() * mask
    n = (mask.sum() if n_mask is None else n_mask) * pred.shape[1]
    return diff.sum() / n.clamp(min=1.0)


def seg_loss(logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor) -> torch.Tensor:
    """Auxiliary mask loss: BCE on soft targets (cell coverage in [0, 1]) + soft Dice, ignored cells excluded.

    The Dice term is computed over the whole batch as one set (patches without a node then add only false
    positive mass), so it stays defined when a patch holds no node.
    """
    logits = logits.float()
    keep = 1.0 - ignore
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = (bce * keep).sum() / keep.sum().clamp(min=1.0)
    p = torch.sigmoid(logits) * keep
    t = target * keep
    dice = 1.0 - (2.0 * (p * t).sum() + 1.0) / (p.sum() + t.sum() + 1.0)
    return bce + dice


# -- decoding -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Peaks:
    """Decoded peaks: positions in input-voxel (z, y, x) units on the plan grid, scores, diameters (mm)."""

    zyx: NDArray[np.float64]  # (N, 3)
    score: NDArray[np.float64]  # (N,)
    diameter_mm: NDArray[np.float64]  # (N,)


def decode(
    prob: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    *,
    threshold: float,
    max_peaks: int,
    stride: int = STRIDE,
) -> Peaks:
    """Local maxima (3×3×3) of a probability map ``(Z, Y, X)`` at ≥ ``threshold``, best ``max_peaks``.

    ``size`` is ``(Z, Y, X)`` log(d/10 mm), ``offset`` is ``(3, Z, Y, X)`` in cells.
    """
    p = prob.float()
    pooled = F.max_pool3d(p[None, None], kernel_size=3, stride=1, padding=1)[0, 0]
    is_peak = (p == pooled) & (p >= threshold)
    idx = torch.nonzero(is_peak, as_tuple=False)
    if idx.shape[0] == 0:
        empty = np.zeros((0,), dtype=np.float64)
        return Peaks(np.zeros((0, 3), dtype=np.float64), empty, empty.copy())
    scores = p[idx[:, 0], idx[:, 1], idx[:, 2]]
    order = torch.argsort(scores, descending=True, stable=True)[:max_peaks]
    idx = idx[order]
    scores = scores[order]
    off = offset.float()[:, idx[:, 0], idx[:, 1], idx[:, 2]].T  # (N, 3)
    off = off.clamp(-1.5, 1.5)
    cells = idx.double() + off.double()
    zyx = cell_to_voxel(cells.cpu().numpy(), stride)
    diam = SIZE_REF_MM * torch.exp(size.float()[idx[:, 0], idx[:, 1], idx[:, 2]].clamp(-3.0, 3.0))
    return Peaks(zyx, scores.double().cpu().numpy(), diam.double().cpu().numpy())


def nms_mm(
    points_xyz: NDArray[np.float64],
    scores: NDArray[np.float64],
    diameters_mm: NDArray[np.float64],
    *,
    min_dist_mm: float,
    diameter_factor: float,
) -> NDArray[np.int64]:
    """Greedy non-maximum suppression by distance in mm; returns kept indices, best first.

    A point is suppressed when it lies closer to an already kept point than
    ``max(min_dist_mm, diameter_factor × that kept point's diameter)``.
    """
    pts = np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            radius = max(min_dist_mm, diameter_factor * float(diameters_mm[j]))
            if float(np.linalg.norm(pts[i] - pts[j])) < radius:
                ok = False
                break
        if ok:
            kept.append(int(i))
    return np.asarray(kept, dtype=np.int64)
