"""Sliding-window inference: :func:`detect_volume` is the detector's core, callable from any front end.

Steps: prepare the CT on the plan's grid (:func:`~lymphcad.detector.plan.prepare_volume`), normalise,
pad to a multiple of 8 with air, run the network on overlapping windows and blend their outputs with
Gaussian weights (optionally averaging flipped copies: test-time augmentation), find heatmap peaks,
map them to world LPS mm through the grid's geometry, and merge duplicates by distance in mm.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from lymphcad.detector.config import DetectConfig, Precision
from lymphcad.detector.fpr import FPRModel, rescore
from lymphcad.detector.model import LoadedModel
from lymphcad.detector.network import SIZE_MULTIPLE, STRIDE, DetectorNet
from lymphcad.detector.plan import Plan, PreparedVolume, prepare_volume
from lymphcad.detector.precision import activation_format, compute_dtype, computing_in
from lymphcad.detector.targets import decode, nms_mm
from lymphcad.geometry import CTVolume, Geometry
from lymphcad.io.detections import Detection

log = logging.getLogger(__name__)

#: flip sets used by test-time augmentation (array axes of the (Z, Y, X) volume)
_TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (1,), (1, 2))


@dataclass(frozen=True)
class DenseOutput:
    """Blended network outputs at the output stride: probability, log-size and offset maps, and the
    node-mask probability when the network has a mask head."""

    prob: torch.Tensor  # (z, y, x)
    size: torch.Tensor  # (z, y, x)
    offset: torch.Tensor  # (3, z, y, x)
    seg: torch.Tensor | None = None  # (z, y, x) probability that the cell lies inside a node


def _round_up(n: int, m: int) -> int:
    return int(math.ceil(n / m) * m)


def _starts(total: int, window: int, overlap: float) -> list[int]:
    """Window start positions covering ``total`` (window ≤ total), step a multiple of the stride."""
    if window >= total:
        return [0]
    step = max(SIZE_MULTIPLE, int(window * (1.0 - overlap)) // SIZE_MULTIPLE * SIZE_MULTIPLE)
    starts = list(range(0, total - window + 1, step))
    if starts[-1] != total - window:
        starts.append(total - window)
    return starts


def _gaussian_weight(shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """Blending weights: a separable Gaussian (σ = 1/4 of the side), floor at 1e-3."""
    axes = []
    for n in shape:
        x = torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2.0
        sig = max(n / 4.0, 1.0)
        axes.append(torch.exp(-(x**2) / (2 * sig * sig)))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (w / w.max()).clamp(min=1e-3)


def _windows(
    shape: tuple[int, int, int], window: tuple[int, int, int], overlap: float
) -> Iterator[tuple[int, int, int]]:
    for z in _starts(shape[0], window[0], overlap):
        for y in _starts(shape[1], window[1], overlap):
            for x in _starts(shape[2], window[2], overlap):
                yield (z, y, x)


@torch.no_grad()
def predict_dense(
    network: DetectorNet,
    image: torch.Tensor,
    *,
    window_zyx: tuple[int, int, int],
    overlap: float,
    tta_flips: bool = False,
    device: torch.device | None = None,
    precision: Precision = Precision.FLOAT32,
) -> DenseOutput:
    """Run the network over a normalised ``(Z, Y, X)`` image (sizes multiples of 8) by sliding windows.

    ``precision``: the network's number format (:mod:`lymphcad.detector.precision`); the outputs are
    blended in float32 whatever it is.
    """
    dev = device or next(network.parameters()).device
    dtype = compute_dtype(precision, dev)
    layout = activation_format(dtype, dev)
    shape = tuple(int(s) for s in image.shape)
    assert all(s % SIZE_MULTIPLE == 0 for s in shape), shape
    win = tuple(min(_round_up(w, SIZE_MULTIPLE), s) for w, s in zip(window_zyx, shape, strict=True))
    out_shape = tuple(s // STRIDE for s in shape)
    out_win = tuple(w // STRIDE for w in win)
    acc_p = torch.zeros(out_shape, dtype=torch.float32)
    acc_s = torch.zeros(out_shape, dtype=torch.float32)
    acc_o = torch.zeros((3, *out_shape), dtype=torch.float32)
    acc_w = torch.zeros(out_shape, dtype=torch.float32)
    acc_m: torch.Tensor | None = None  # the mask head's blend, when the network has one
    weight = _gaussian_weight(out_win, torch.device("cpu"))  # type: ignore[arg-type]
    flips = _TTA_FLIPS if tta_flips else ((),)
    for z, y, x in _windows(shape, win, overlap):  # type: ignore[arg-type]
        patch = image[z : z + win[0], y : y + win[1], x : x + win[2]].to(dev)[None, None]
        patch = patch.contiguous(memory_format=layout)
        p_sum = torch.zeros(out_win, device=dev)
        s_sum = torch.zeros(out_win, device=dev)
        o_sum = torch.zeros((3, *out_win), device=dev)
        m_sum: torch.Tensor | None = None
        for axes in flips:
            dims = [a + 2 for a in axes]
            inp = torch.flip(patch, dims) if axes else patch
            with computing_in(dtype, dev):
                out = network(inp)
            heat = out["heatmap"].float()
            size = out["size"].float()
            off = out["offset"].float()
            if axes:
                heat = torch.flip(heat, dims)
                size = torch.flip(size, dims)
                off = torch.flip(off, dims).clone()
                for a in axes:
                    off[:, a] = -off[:, a]
            if "seg" in out:
                seg = torch.sigmoid(out["seg"].float())
                seg = (torch.flip(seg, dims) if axes else seg)[0, 0]
                m_sum = seg if m_sum is None else m_sum + seg
            p_sum += torch.sigmoid(heat[0, 0])
            s_sum += size[0, 0]
            o_sum += off[0]
        n = float(len(flips))
        oz, oy, ox = z // STRIDE, y // STRIDE, x // STRIDE
        sl = (slice(oz, oz + out_win[0]), slice(oy, oy + out_win[1]), slice(ox, ox + out_win[2]))
        acc_p[sl] += (p_sum / n).cpu() * weight
        acc_s[sl] += (s_sum / n).cpu() * weight
        acc_o[(slice(None), *sl)] += (o_sum / n).cpu() * weight
        acc_w[sl] += weight
        if m_sum is not None:
            if acc_m is None:
                acc_m = torch.zeros(out_shape, dtype=torch.float32)
            acc_m[sl] += (m_sum / n).cpu() * weight
    acc_w = acc_w.clamp(min=1e-6)
    return DenseOutput(acc_p / acc_w, acc_s / acc_w, acc_o / acc_w, None if acc_m is None else acc_m / acc_w)


def predict_with(network: DetectorNet, image: torch.Tensor, settings: DetectConfig) -> DenseOutput:
    """:func:`predict_dense` with the window, overlap, flip TTA and number format of ``settings``."""
    return predict_dense(
        network,
        image,
        window_zyx=settings.window_zyx,
        overlap=settings.overlap,
        tta_flips=settings.tta_flips,
        precision=settings.precision,
    )


def normalised_padded(prepared: PreparedVolume, plan: Plan) -> torch.Tensor:
    """The plan-normalised image padded with air at the far ends to multiples of 8."""
    img = plan.normalise(prepared.hu)
    pad_val = plan.normalised_air()
    pads = [_round_up(s, SIZE_MULTIPLE) - s for s in img.shape]
    if any(pads):
        img = F.pad(img[None, None], (0, pads[2], 0, pads[1], 0, pads[0]), value=pad_val)[0, 0]
    return img.contiguous()


def detect_prepared(
    prepared: PreparedVolume,
    network: DetectorNet,
    plan: Plan,
    settings: DetectConfig,
    *,
    case_id: str,
    original: CTVolume | None = None,
    fpr: FPRModel | None = None,
    image: torch.Tensor | None = None,
    dense: DenseOutput | None = None,
) -> list[Detection]:
    """Detections on an already prepared volume (the training loop's validation uses this).

    With ``fpr`` (and ``settings.second_stage``) the kept candidates are re-scored by the second stage.
    ``image``: ``normalised_padded(prepared, plan)`` when the caller has it already (it is not recomputed);
    ``dense``: the network's blended output on that image, when the caller has it already.
    """
    img = normalised_padded(prepared, plan) if image is None else image
    if dense is None:
        dense = predict_with(network, img, settings)
    peaks = decode(
        dense.prob,
        dense.size,
        dense.offset,
        threshold=settings.threshold,
        max_peaks=max(4 * settings.max_detections, 50),
    )
    if len(peaks.score) == 0:
        return []
    world = prepared.geometry.zyx_to_world(peaks.zyx)
    inside = prepared.geometry.contains_world(world, margin_vox=0.5)
    if original is not None:
        inside &= original.geometry.contains_world(world, margin_vox=0.5)
    world, score, diam = world[inside], peaks.score[inside], peaks.diameter_mm[inside]
    keep = nms_mm(
        world,
        score,
        diam,
        min_dist_mm=settings.nms_min_mm,
        diameter_factor=settings.nms_diameter_factor,
    )[: settings.max_detections]
    if fpr is not None and settings.second_stage and len(keep):
        fused = rescore(fpr, img, peaks.zyx[inside][keep], score[keep], pad_value=plan.normalised_air())
        score = score.astype(np.float64, copy=True)
        score[keep] = fused
        keep = keep[np.argsort(-fused, kind="stable")]
    return [
        Detection(
            case_id,
            (float(world[i, 0]), float(world[i, 1]), float(world[i, 2])),
            float(np.clip(score[i], 0.0, 1.0)),
            float(diam[i]),
        )
        for i in keep
    ]


def detect_volume(
    volume: CTVolume,
    model: LoadedModel,
    settings: DetectConfig | None = None,
    *,
    case_id: str = "volume",
) -> list[Detection]:
    """Find lymph nodes in one CT: centres in world LPS mm, probability in [0, 1], diameter in mm.

    Args:
        volume: the CT (int16 HU, any spacing and direction).
        model: a loaded model (:func:`lymphcad.detector.model.load_model`).
        settings: inference settings; None = the model's defaults.
        case_id: written into each :class:`~lymphcad.io.detections.Detection`.

    Returns:
        Detections sorted by descending probability (at most ``settings.max_detections``).
    """
    settings = settings or model.detect
    prepared = prepare_volume(volume, model.plan)
    return detect_prepared(
        prepared, model.network, model.plan, settings, case_id=case_id, original=volume, fpr=model.fpr
    )


@dataclass(frozen=True)
class DetectionsWithMask:
    """Detections plus the network's node-mask probability on the input CT's own grid (None without a
    mask head): what per-detection masks (RECIST, volume, DICOM SEG) can start from."""

    detections: list[Detection]
    mask_prob: NDArray[np.float32] | None


def detect_volume_with_mask(
    volume: CTVolume,
    model: LoadedModel,
    settings: DetectConfig | None = None,
    *,
    case_id: str = "volume",
) -> DetectionsWithMask:
    """:func:`detect_volume` plus the mask head's probability resampled (trilinear) onto ``volume``'s grid."""
    settings = settings or model.detect
    prepared = prepare_volume(volume, model.plan)
    img = normalised_padded(prepared, model.plan)
    dense = predict_with(model.network, img, settings)
    dets = detect_prepared(
        prepared,
        model.network,
        model.plan,
        settings,
        case_id=case_id,
        original=volume,
        fpr=model.fpr,
        image=img,
        dense=dense,
    )
    if dense.seg is None:
        return DetectionsWithMask(dets, None)
    cells = output_geometry(prepared.geometry, tuple(int(s) for s in dense.seg.shape))  # type: ignore[arg-type]
    return DetectionsWithMask(dets, resample_onto(dense.seg, cells, volume.geometry))


def output_geometry(grid: Geometry, out_shape: tuple[int, int, int], stride: int = STRIDE) -> Geometry:
    """The geometry of the network's output cells: cell ``c`` is centred on input voxel ``stride·c + (stride−1)/2``."""
    first = np.full(3, (stride - 1) / 2.0)
    origin = grid.zyx_to_world(first)
    sz, sy, sx = grid.spacing_zyx
    spacing = (float(sz) * stride, float(sy) * stride, float(sx) * stride)
    return Geometry(
        out_shape, spacing, (float(origin[0]), float(origin[1]), float(origin[2])), grid.direction
    )


def resample_onto(
    values: torch.Tensor, source: Geometry, target: Geometry, *, chunk: int = 16
) -> NDArray[np.float32]:
    """Trilinear samples of a ``(Z, Y, X)`` map given on ``source`` at every voxel of ``target`` (0 outside).

    Works slab by slab along the target's first axis, so a full-resolution CT never needs a full-size
    coordinate grid in memory.
    """
    out = np.zeros(target.shape_zyx, dtype=np.float32)
    src = values.to(torch.float32)[None, None]
    size = torch.as_tensor(source.shape_zyx, dtype=torch.float64)
    _, ny, nx = target.shape_zyx
    jj, ii = np.meshgrid(np.arange(ny, dtype=np.float64), np.arange(nx, dtype=np.float64), indexing="ij")
    for k0 in range(0, target.shape_zyx[0], chunk):
        k1 = min(target.shape_zyx[0], k0 + chunk)
        kk = np.broadcast_to(np.arange(k0, k1, dtype=np.float64)[:, None, None], (k1 - k0, ny, nx))
        zyx = np.stack([kk, np.broadcast_to(jj, kk.shape), np.broadcast_to(ii, kk.shape)], axis=-1).reshape(
            -1, 3
        )
        cell = torch.from_numpy(np.ascontiguousarray(source.world_to_zyx(target.zyx_to_world(zyx))))
        norm = (2.0 * cell / (size - 1.0).clamp(min=1.0) - 1.0)[:, [2, 1, 0]].to(torch.float32)
        grid = norm.reshape(1, k1 - k0, ny, nx, 3)
        vals = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out[k0:k1] = vals[0, 0].numpy()
    return out


def with_overrides(base: DetectConfig, **overrides: Any) -> DetectConfig:
    """A copy of ``base`` with the given fields replaced (None values are skipped)."""
    changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    return replace(base, **changes)
