"""Second stage: false-positive reduction that re-scores the first stage's candidates (docs/design.md §7).

The first stage (the centre-heatmap network) proposes up to ``max_detections`` candidates per volume. Most of
its false positives at a few per volume are node mimics — vessels in cross-section, collapsed bowel,
the oesophagus, small unannotated nodes — that a classifier looking at a cube of context around each
candidate can tell apart (Roth et al. 2014 did this on the CT Lymph Nodes collection with 2.5D views).

* :class:`CandidateNet`: a small 3D CNN on a ``crop_vox``³ cube (plan grid, default 24 voxels = 48 mm at
  2 mm) centred on a candidate → one logit.
* :func:`collect_candidates`: runs the first stage on training cases and labels each candidate with the
  evaluator's radius rule (positive within max(5 mm, diameter / 2) of an enlarged node, negative otherwise;
  hits on ignored findings are negatives by default, dropped with ``ignored_as_negative=False``); the
  ground-truth centres are added as positives too.
* :func:`train_fpr`: balanced batches, flips / in-plane quarter turns / ±jitter / intensity augmentation,
  AdamW + cosine; then the fusion weight ``w`` of ``p = p1^(1-w) · p2^w`` is chosen on the validation cases
  by CPM with the project's evaluator (w = 0 keeps the first stage unchanged).
* :func:`rescore`: applied by :func:`lymphcad.detector.infer.detect_prepared` when the model folder holds
  ``fpr.pt``.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from lymphcad import atomic
from lymphcad.errors import InputError

#: marks a file as a lymphcad second-stage model
FPR_FORMAT: Final = "lymphcad-fpr"
FPR_VERSION: Final = 1
#: file name of the second stage inside a model folder
FPR_FILE: Final = "fpr.pt"
#: fusion weights tried on the validation cases
FUSION_WEIGHTS: Final = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
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
    #: fusion p = p1^(1 - weight) · p2^weight; set by validation in :func:`train_fpr`
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


@dataclass
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


def label_candidates(
    cands_xyz: NDArray[np.float64],
    pos_xyz: NDArray[np.float64],
    pos_diameter_mm: NDArray[np.float64],
    ign_xyz: NDArray[np.float64],
    ign_radius_mm: NDArray[np.float64],
    *,
    match_min_mm: float = 5.0,
) -> NDArray[np.int8]:
    """1 = hits an enlarged node (within max(match_min_mm, d / 2)), -1 = hits only an ignored finding, 0 = FP."""
    cands = np.asarray(cands_xyz, dtype=np.float64).reshape(-1, 3)
    lab = np.zeros(len(cands), np.int8)
    if len(cands) == 0:
        return lab
    if len(pos_xyz):
        d = np.linalg.norm(cands[:, None, :] - np.asarray(pos_xyz)[None], axis=2)
        radius = np.maximum(match_min_mm, np.asarray(pos_diameter_mm) / 2.0)
        lab[(d <= radius[None]).any(axis=1)] = 1
    if len(ign_xyz):
        d = np.linalg.norm(cands[:, None, :] - np.asarray(ign_xyz)[None], axis=2)
        hit = (d <= np.asarray(ign_radius_mm)[None]).any(axis=1)
        lab[hit & (lab == 0)] = -1
    return lab


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


# -- training data -----------------------------------------------------------------------------------------
@dataclass
class CandidateSet:
    """Crops (with a jitter margin) of labelled candidates: ``crops`` (N, 1, s+2m, …), ``labels`` 0/1."""

    crops: torch.Tensor
    labels: NDArray[np.int8]
    n_cases: int
    n_from_truth: int

    def summary(self) -> dict[str, int]:
        """Counts for logs and the saved model."""
        return {
            "candidates": len(self.labels),
            "positives": int((self.labels == 1).sum()),
            "negatives": int((self.labels == 0).sum()),
            "positives_from_truth": self.n_from_truth,
            "cases": self.n_cases,
        }


def collect_candidates(
    cases: Sequence[Any],
    first_stage: Callable[[Any], tuple[list[Any], torch.Tensor]],
    cfg: FPRConfig,
    pad_value: float,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> CandidateSet:
    """Run the first stage on training cases and keep labelled crops (ignored hits: see ``ignored_as_negative``).

    ``cases`` are :class:`~lymphcad.detector.sampling.TrainCase` objects; ``first_stage(case)`` returns the
    first stage's detections of a case and the normalised plan-grid image they came from (crops are cut
    from it, padded with ``pad_value``).
    """
    size = cfg.crop_vox + 2 * cfg.jitter_vox
    crops: list[torch.Tensor] = []
    labels: list[NDArray[np.int8]] = []
    n_truth = 0
    for k, case in enumerate(cases):
        dets, img = first_stage(case)
        g = case.prepared.geometry
        xyz = np.array([d.center_xyz for d in dets], dtype=np.float64).reshape(-1, 3)
        pos_xyz = g.zyx_to_world(case.nodes_zyx) if len(case.nodes_zyx) else np.zeros((0, 3))
        ign_xyz = g.zyx_to_world(case.ignore_zyx) if len(case.ignore_zyx) else np.zeros((0, 3))
        lab = label_candidates(
            xyz,
            pos_xyz,
            case.diameters_mm,
            ign_xyz,
            case.ignore_radius_mm,
            match_min_mm=cfg.match_min_mm,
        )
        if cfg.ignored_as_negative:
            lab[lab < 0] = 0
        keep = lab >= 0
        zyx = g.world_to_zyx(xyz[keep]) if keep.any() else np.zeros((0, 3))
        # the truth centres are positives as well: the classifier must know nodes the first stage missed
        zyx = np.concatenate([zyx, np.asarray(case.nodes_zyx, dtype=np.float64).reshape(-1, 3)])
        lab_k = np.concatenate([lab[keep], np.ones(len(case.nodes_zyx), np.int8)])
        n_truth += len(case.nodes_zyx)
        crops.append(crop_cubes(img, zyx, size, pad_value=pad_value))
        labels.append(lab_k)
        if progress:
            progress(k + 1, len(cases))
    return CandidateSet(
        torch.cat(crops) if crops else torch.zeros((0, 1, size, size, size)),
        np.concatenate(labels) if labels else np.zeros(0, np.int8),
        len(cases),
        n_truth,
    )


def _augment(batch: torch.Tensor, cfg: FPRConfig, rng: np.random.Generator) -> torch.Tensor:
    """Random jittered crop, flips, in-plane quarter turns and intensity changes of margin-padded cubes."""
    s, m = cfg.crop_vox, cfg.jitter_vox
    out = torch.empty((len(batch), 1, s, s, s), dtype=batch.dtype)
    for i in range(len(batch)):
        oz, oy, ox = (int(v) for v in rng.integers(0, 2 * m + 1, size=3))
        x = batch[i, :, oz : oz + s, oy : oy + s, ox : ox + s]
        dims = [d for d, f in zip((1, 2, 3), rng.random(3) < 0.5, strict=True) if f]
        if dims:
            x = torch.flip(x, dims)
        x = torch.rot90(x, int(rng.integers(0, 4)), dims=(2, 3))
        lo, hi = cfg.intensity_scale
        x = x * float(rng.uniform(lo, hi)) + float(rng.uniform(-cfg.intensity_shift, cfg.intensity_shift))
        out[i] = x
    if cfg.noise_sd > 0:
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**31 - 1)))
        out = out + cfg.noise_sd * torch.randn(out.shape, generator=gen, dtype=out.dtype)
    return out


def centre_crop(crops: torch.Tensor, cfg: FPRConfig) -> torch.Tensor:
    """The unjittered ``crop_vox``³ centre of margin-padded cubes."""
    m, s = cfg.jitter_vox, cfg.crop_vox
    return crops[:, :, m : m + s, m : m + s, m : m + s]


def fit_network(
    data: CandidateSet,
    cfg: FPRConfig,
    *,
    device: torch.device | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[CandidateNet, list[float]]:
    """Train :class:`CandidateNet` on labelled crops with balanced batches; returns it and the loss per step."""
    from lymphcad.detector.train import lr_factor  # train imports infer, which imports this module

    pos = np.nonzero(data.labels == 1)[0]
    neg = np.nonzero(data.labels == 0)[0]
    if len(pos) == 0 or len(neg) == 0:
        raise InputError(
            f"the second stage needs positive and negative candidates (got {len(pos)} and {len(neg)})"
        )
    dev = device or torch.device("cpu")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = CandidateNet(cfg.channels).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    n_pos = max(1, round(cfg.batch_size * cfg.p_positive))
    for it in range(cfg.iters):
        f = lr_factor(it, warmup=cfg.warmup_iters, total=cfg.iters)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * f
        idx = np.concatenate([rng.choice(pos, n_pos), rng.choice(neg, cfg.batch_size - n_pos)])
        x = _augment(data.crops[idx], cfg, rng).to(dev)
        y = torch.as_tensor(data.labels[idx].astype(np.float32), device=dev)
        net.train()
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress:
            progress(it + 1, cfg.iters, losses[-1])
    net.eval()
    return net, losses


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
    names = {f.name for f in dataclasses.fields(FPRConfig)}
    raw = {
        k: (tuple(v) if isinstance(v, list) else v)
        for k, v in dict(data.get("config", {})).items()
        if k in names
    }
    cfg = FPRConfig(**raw)  # type: ignore[arg-type]
    net = CandidateNet(cfg.channels)
    try:
        net.load_state_dict(data["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise InputError("second-stage weights do not fit the network", path) from exc
    net.to(device)
    net.eval()
    return FPRModel(net, cfg, path)


# -- orchestration -----------------------------------------------------------------------------------------
def train_fpr(
    cohort_path: str | Path,
    *,
    model: str | Path,
    split: str | Path,
    fold: int,
    out: str | Path | None = None,
    truth: str = "labels",
    config: FPRConfig | None = None,
    device: str = "auto",
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Train the second stage of a first-stage model on one fold; writes ``fpr.pt`` (default: beside the model).

    Candidates come from the first stage on the fold's training cases; the fusion weight is chosen by CPM
    on its validation cases (all of them) with the project's evaluator. Returns a summary (also in the file).
    """
    from lymphcad.cohort import open_cohort
    from lymphcad.detector.config import DetectorConfig
    from lymphcad.detector.infer import detect_prepared, normalised_padded, with_overrides
    from lymphcad.detector.model import load_model, resolve_model_path
    from lymphcad.detector.sampling import read_split
    from lymphcad.detector.train import evaluate_subset, load_cases, resolve_device

    cfg = config or FPRConfig()
    dev = resolve_device(device)
    first = load_model(model, device=dev)
    target = Path(out) if out is not None else resolve_model_path(model).parent
    cohort = open_cohort(cohort_path)
    train_ids, val_ids, _ = read_split(split, fold)
    if not train_ids:
        raise InputError(f"fold {fold} has no training cases", split)
    dcfg = DetectorConfig()
    settings = with_overrides(first.detect, second_stage=False)
    pad_value = first.plan.normalised_air()

    def first_stage(case: Any) -> tuple[list[Any], torch.Tensor]:
        """Detections and the normalised image they came from (normalised once, used for the crops too)."""
        img = normalised_padded(case.prepared, first.plan)
        dets = detect_prepared(
            case.prepared, first.network, first.plan, settings, case_id=case.case_id, image=img
        )
        return dets, img

    def step(message: str) -> Callable[[int, int], None]:
        return lambda done, total: progress(done, total, message) if progress else None

    with torch.no_grad():
        data = collect_candidates(
            load_cases(cohort, train_ids, first.plan, truth, dcfg),
            first_stage,
            cfg,
            pad_value,
            progress=step("candidates"),
        )
    net, losses = fit_network(
        data, cfg, device=dev, progress=lambda i, n, loss: step(f"fit (loss {loss:.3f})")(i, n)
    )
    # fusion weight by validation CPM (first-stage candidates re-scored with each weight)
    scores: dict[str, float] = {}
    if val_ids:
        val_cases = load_cases(cohort, val_ids, first.plan, truth, dcfg)
        fpr = FPRModel(net, cfg, target / FPR_FILE)
        per_case = []
        with torch.no_grad():
            for case in val_cases:
                dets, img = first_stage(case)
                g = case.prepared.geometry
                zyx = g.world_to_zyx(np.array([d.center_xyz for d in dets]).reshape(-1, 3))
                crops = crop_cubes(img, zyx, cfg.crop_vox, pad_value=pad_value)
                p2 = score_crops(net, crops) if len(dets) else np.zeros(0)
                per_case.append((dets, np.array([d.probability for d in dets]), p2))
        for w in FUSION_WEIGHTS:
            fused_dets = []
            for dets, p1, p2 in per_case:
                p = fuse(p1, p2, w) if len(dets) else p1
                fused_dets += [
                    dataclasses.replace(d, probability=float(v)) for d, v in zip(dets, p, strict=True)
                ]
            res = evaluate_subset(cohort, [c.case_id for c in val_cases], fused_dets)
            scores[f"{w:g}"] = float(res["val_cpm"]) if res else float("nan")
        best = max(FUSION_WEIGHTS, key=lambda w: (scores[f"{w:g}"], -w))
        cfg = dataclasses.replace(cfg, weight=float(best), validation=scores)
        fpr.config = cfg
    summary = {
        "first_stage": first.name,
        "first_stage_sha256": first.sha256,
        "fold": fold,
        "truth": truth,
        "train_cases": len(train_ids),
        "val_cases": len(val_ids),
        **data.summary(),
        "final_loss_mean_last_100": float(np.mean(losses[-100:])),
        "weight": cfg.weight,
        "validation_cpm_by_weight": scores,
    }
    save_fpr(target, net, cfg, meta=summary)
    return summary
