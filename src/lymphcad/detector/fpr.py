"""Second stage: false-positive reduction that re-scores the first stage's candidates (docs/design.md §7).

The first stage (the centre-heatmap network) proposes up to ``max_detections`` candidates per volume. Most of
its false positives at a few per volume are node mimics — vessels in cross-section, collapsed bowel,
the oesophagus, small unannotated nodes — that a classifier looking at a cube of context around each
candidate can tell apart (Roth et al. 2014 did this on the CT Lymph Nodes collection with 2.5D views).

This module is what inference needs (it imports nothing of the detector): the model and its use.

* :class:`CandidateNet`: a small 3D CNN on a ``crop_vox``³ cube (plan grid, default 24 voxels = 48 mm at
  2 mm) centred on a candidate → one logit.
* :func:`rescore`: crops, scores and fuses ``p = p1^(1-w) · p2^w``; applied by
  :func:`lymphcad.detector.infer.detect_prepared` when the model folder holds ``fpr.pt``.
* :func:`save_fpr` / :func:`load_fpr`: the ``fpr.pt`` file.

Its training (candidate collection, fitting, the choice of ``w`` by validation CPM) is
:mod:`lymphcad.detector.fpr_train`.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from lymphcad import atomic
from lymphcad.errors import InputError
from lymphcad.records import dataclass_from_dict

#: marks a file as a lymphcad second-stage model
FPR_FORMAT: Final = "lymphcad-fpr"
FPR_VERSION: Final = 1
#: file name of the second stage inside a model folder
FPR_FILE: Final = "fpr.pt"


@dataclass(frozen=True)
class FPRConfig:
    """Settings of the second stage (saved inside ``fpr.pt``)."""

    crop_vox: int = 24
    channels: int = 8
    iters: int = 1000
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    #: share of positives in a batch
    p_positive: float = 0.5
    #: random shift of the crop centre (plan voxels, uniform ±) during training
    jitter_vox: int = 2
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    intensity_shift: float = 0.05  # in normalised units (the plan maps its HU window to about [-1, 1])
    noise_sd: float = 0.03
    #: a candidate within max(match_min_mm, diameter / 2) of an enlarged node is a positive
    match_min_mm: float = 5.0
    #: hits on ignored findings (e.g. 8–10 mm nodes under ``--truth extra``) train as negatives: the
    #: evaluation counts them as false positives, and the first stage was not taught to separate them
    ignored_as_negative: bool = True
    seed: int = 0
    #: fusion p = p1^(1 - weight) · p2^weight; set by validation in :func:`~lymphcad.detector.fpr_train.train_fpr`
    weight: float = 0.5
    #: fusion weights scored on validation (CPM) → chosen weight
    validation: dict[str, float] = field(default_factory=dict)


class CandidateNet(nn.Module):
    """A light 3D CNN: one conv at full resolution, then two stages of two convs, each stage after a 2×
    max-pool (BN + ReLU after every conv), global average pooling and one logit (about 52 k parameters at
    ``channels = 8``; a single conv at the full 24³ grid keeps CPU training to a few minutes)."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        c = int(channels)

        def cbr(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv3d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm3d(cout),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *cbr(1, c),
            nn.MaxPool3d(2),
            *cbr(c, 2 * c),
            *cbr(2 * c, 2 * c),
            nn.MaxPool3d(2),
            *cbr(2 * c, 4 * c),
            *cbr(4 * c, 4 * c),
            nn.MaxPool3d(2),
        )
        self.head = nn.Linear(4 * c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, s, s, s)`` normalised cubes → ``(B,)`` logits."""
        f = self.features(x)
        logits: torch.Tensor = self.head(f.mean(dim=(2, 3, 4))).squeeze(1)
        return logits


@dataclass(frozen=True)
class FPRModel:
    """A loaded second stage: network (eval mode) and its config."""

    network: CandidateNet
    config: FPRConfig
    path: Path


# -- crops -------------------------------------------------------------------------------------------------
def crop_cubes(
    img: torch.Tensor, centres_zyx: NDArray[np.float64], size: int, *, pad_value: float
) -> torch.Tensor:
    """Cubes of ``size`` voxels centred on (rounded) continuous voxel positions; outside = ``pad_value``.

    ``img`` is a (Z, Y, X) tensor on the plan grid; returns ``(N, 1, size, size, size)``.
    """
    n = len(centres_zyx)
    out = torch.full((n, 1, size, size, size), float(pad_value), dtype=img.dtype)
    if n == 0:
        return out
    shape = np.asarray(img.shape)
    lo = np.round(np.asarray(centres_zyx, dtype=np.float64)).astype(np.int64) - size // 2
    for i in range(n):
        a = lo[i]
        b = a + size
        src_lo = np.maximum(a, 0)
        src_hi = np.minimum(b, shape)
        if np.any(src_hi <= src_lo):
            continue
        dst_lo = src_lo - a
        dst_hi = dst_lo + (src_hi - src_lo)
        out[i, 0, dst_lo[0] : dst_hi[0], dst_lo[1] : dst_hi[1], dst_lo[2] : dst_hi[2]] = img[
            src_lo[0] : src_hi[0], src_lo[1] : src_hi[1], src_lo[2] : src_hi[2]
        ]
    return out


# -- network use -------------------------------------------------------------------------------------------
@torch.no_grad()
def score_crops(network: CandidateNet, crops: torch.Tensor, *, batch: int = 128) -> NDArray[np.float64]:
    """Second-stage probabilities of ``(N, 1, s, s, s)`` crops."""
    network.eval()
    dev = next(network.parameters()).device
    out = []
    for i in range(0, len(crops), batch):
        out.append(torch.sigmoid(network(crops[i : i + batch].to(dev))).float().cpu())
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


def fuse(p1: NDArray[np.float64], p2: NDArray[np.float64], weight: float) -> NDArray[np.float64]:
    """Weighted geometric mean ``p1^(1-w) · p2^w`` (w = 0: first stage only, w = 1: second stage only)."""
    eps = 1e-6
    p1c = np.clip(p1, eps, 1.0)
    p2c = np.clip(p2, eps, 1.0)
    return np.exp((1.0 - weight) * np.log(p1c) + weight * np.log(p2c))


def rescore(
    fpr: FPRModel,
    img: torch.Tensor,
    centres_zyx: NDArray[np.float64],
    p1: NDArray[np.float64],
    *,
    pad_value: float,
) -> NDArray[np.float64]:
    """Fused probabilities of first-stage candidates at plan-grid positions ``centres_zyx`` of ``img``."""
    if len(p1) == 0 or fpr.config.weight == 0.0:
        return np.asarray(p1, dtype=np.float64)
    crops = crop_cubes(img, centres_zyx, fpr.config.crop_vox, pad_value=pad_value)
    return fuse(np.asarray(p1, dtype=np.float64), score_crops(fpr.network, crops), fpr.config.weight)


# -- persistence -------------------------------------------------------------------------------------------
def save_fpr(
    folder: str | Path, network: CandidateNet, cfg: FPRConfig, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``folder/fpr.pt`` atomically (float32 weights, config, meta)."""
    payload = {
        "format": FPR_FORMAT,
        "version": FPR_VERSION,
        "config": dataclasses.asdict(cfg),
        "state_dict": {k: v.detach().cpu().clone() for k, v in network.state_dict().items()},
        "meta": meta or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    path = Path(folder) / FPR_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, buf.getvalue())
    return path


def load_fpr(path: str | Path, *, device: str | torch.device = "cpu") -> FPRModel:
    """Load ``fpr.pt``; a damaged or foreign file raises InputError naming it."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"cannot read the second-stage model ({type(exc).__name__})", path) from exc
    if not isinstance(data, dict) or data.get("format") != FPR_FORMAT:
        raise InputError("not a lymphcad second-stage model (format tag missing)", path)
    if int(data.get("version", 0)) > FPR_VERSION:
        raise InputError(
            f"second-stage model version {data.get('version')} is newer than this lymphcad", path
        )
    cfg = dataclass_from_dict(FPRConfig, dict(data.get("config", {})))
    net = CandidateNet(cfg.channels)
    try:
        net.load_state_dict(data["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise InputError("second-stage weights do not fit the network", path) from exc
    net.to(device)
    net.eval()
    return FPRModel(net, cfg, path)
