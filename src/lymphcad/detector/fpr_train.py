"""Training the second stage (false-positive reduction, :mod:`lymphcad.detector.fpr`) on a first stage's
candidates.

* :func:`collect_candidates`: runs the first stage on training cases and labels each candidate with the
  evaluator's radius rule (positive within max(5 mm, diameter / 2) of an enlarged node, negative otherwise;
  hits on ignored findings are negatives by default, dropped with ``ignored_as_negative=False``); the
  ground-truth centres are added as positives too.
* :func:`fit_network`: balanced batches, flips / in-plane quarter turns / ±jitter / intensity augmentation,
  AdamW + cosine.
* :func:`train_fpr`: both, then the fusion weight ``w`` of ``p = p1^(1-w) · p2^w`` chosen on the validation
  cases by CPM with the project's evaluator (w = 0 keeps the first stage unchanged); writes ``fpr.pt``.
  Candidates are labelled with the thresholds the first stage was trained with (read from its model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from lymphcad.cohort import TruthMode, open_cohort
from lymphcad.detector.common import load_cases, lr_factor, resolve_device
from lymphcad.detector.fpr import (
    CandidateNet,
    FPRConfig,
    crop_cubes,
    fuse,
    save_fpr,
    score_crops,
)
from lymphcad.detector.infer import detect_prepared, normalised_padded, with_overrides
from lymphcad.detector.model import load_model, resolve_model_path
from lymphcad.detector.sampling import TrainCase
from lymphcad.detector.train import evaluate_subset
from lymphcad.errors import InputError
from lymphcad.io.detections import Detection
from lymphcad.splits import read_fold

#: fusion weights tried on the validation cases
FUSION_WEIGHTS: Final = (0.0, 0.25, 0.5, 0.75, 1.0)


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
    cases: Sequence[TrainCase],
    first_stage: Callable[[TrainCase], tuple[list[Detection], torch.Tensor]],
    cfg: FPRConfig,
    pad_value: float,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> CandidateSet:
    """Run the first stage on training cases and keep labelled crops (ignored hits: see ``ignored_as_negative``).

    ``first_stage(case)`` returns the first stage's detections of a case and the normalised plan-grid image
    they came from (crops are cut from it, padded with ``pad_value``).
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


# -- orchestration -----------------------------------------------------------------------------------------
def train_fpr(
    cohort_path: str | Path,
    *,
    model: str | Path,
    split: str | Path,
    fold: int,
    out: str | Path | None = None,
    truth: TruthMode | str = TruthMode.LABELS,
    config: FPRConfig | None = None,
    device: str = "auto",
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Train the second stage of a first-stage model on one fold; writes ``fpr.pt`` (default: beside the model).

    Candidates come from the first stage on the fold's training cases, labelled with the thresholds the
    first stage was trained with (``enlarged_mm``, ``ignore_below_mm`` from its model); the fusion weight is
    chosen by CPM on its validation cases (all of them) with the project's evaluator. Returns a summary
    (also in the file).
    """
    mode = TruthMode.parse(truth)
    cfg = config or FPRConfig()
    dev = resolve_device(device)
    first = load_model(model, device=dev)
    target = Path(out) if out is not None else resolve_model_path(model).parent
    cohort = open_cohort(cohort_path)
    train_ids, val_ids, _ = read_fold(split, fold)
    if not train_ids:
        raise InputError(f"fold {fold} has no training cases", split)
    settings = with_overrides(first.detect, second_stage=False)
    pad_value = first.plan.normalised_air()
    thresholds = {"enlarged_mm": first.enlarged_mm, "ignore_below_mm": first.ignore_below_mm}

    def first_stage(case: TrainCase) -> tuple[list[Detection], torch.Tensor]:
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
            load_cases(cohort, train_ids, first.plan, mode, **thresholds),
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
        val_cases = load_cases(cohort, val_ids, first.plan, mode, **thresholds)
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
            scores[f"{w:g}"] = float(res["val_cpm"])
        best = max(FUSION_WEIGHTS, key=lambda w: (scores[f"{w:g}"], -w))
        cfg = dataclasses.replace(cfg, weight=float(best), validation=scores)
    summary = {
        "first_stage": first.name,
        "first_stage_sha256": first.sha256,
        "fold": fold,
        "truth": str(mode),
        **thresholds,
        "train_cases": len(train_ids),
        "val_cases": len(val_ids),
        **data.summary(),
        "final_loss_mean_last_100": float(np.mean(losses[-100:])),
        "weight": cfg.weight,
        "validation_cpm_by_weight": scores,
    }
    save_fpr(target, net, cfg, meta=summary)
    return summary
