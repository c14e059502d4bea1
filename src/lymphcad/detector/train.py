"""The training loop: plan → cases → patches → AdamW + cosine schedule → checkpoints, validation, curves.

A run folder ``RUN`` holds::

    RUN/config.toml            the resolved configuration (every value)
    RUN/plan.json              the preprocessing plan (computed from the training fold)
    RUN/split.json             the cases used (train / val) and where they came from
    RUN/checkpoints/epoch_NNNN.pt   one per epoch (the last ``KEEP_CHECKPOINTS`` are kept)
    RUN/history.csv            one row per epoch: losses, learning rate, time, validation metrics
    RUN/curves.png             loss and metric curves
    RUN/model/                 the latest weights as a shippable model (model.pt + plan.json)
    RUN/val/epoch_NNNN/        validation detections and eval.json (when an evaluator is present)

Determinism: patch ``j`` of the global batch of iteration ``i`` in epoch ``e`` is drawn from its own stream
``numpy.random.default_rng([seed, e, i, j])`` and nothing else is random, and a checkpoint stores weights,
optimiser, scheduler and scaler states. So on CPU an interrupted run resumed with ``--resume`` ends with
bit-identical weights to an uninterrupted one. On CUDA cuDNN is put in deterministic mode; some 3D kernels
may still differ in the last bits.

Multi-GPU: started under ``torchrun`` (``WORLD_SIZE`` > 1) each process trains with
DistributedDataParallel on its share of the global batch (``train.batch_size`` patches per process: rank
``r`` draws patches ``j = r·B … r·B + B − 1``), so N processes with batch B see the same patches as one
process with batch N·B; the logged losses are averaged over the processes. Rank 0 alone writes files
(checkpoints, history, model); the others wait for it at the end of every epoch, so a resumed run starts
every rank from the same checkpoint. BatchNorm statistics stay per process (as usual with DDP), which is
why the loss curve matches one process's within a tolerance rather than exactly (tests/detector).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import torch
import torch.distributed as tdist

from lymphcad import atomic
from lymphcad.cohort import Cohort, TruthMode, open_cohort
from lymphcad.detector.common import load_cases, lr_factor, resolve_device
from lymphcad.detector.config import (
    DetectConfig,
    DetectorConfig,
    TrainConfig,
    dumps_config,
    load_config,
    plain,
    save_config,
)
from lymphcad.detector.history import read_history, write_history
from lymphcad.detector.infer import detect_prepared
from lymphcad.detector.model import (
    MODEL_FORMAT,
    MODEL_VERSION,
    network_from_payload,
    read_payload,
    save_model,
)
from lymphcad.detector.network import CenterNet3D, build_network, count_parameters
from lymphcad.detector.plan import Plan, compute_plan, enhanced_fraction, load_plan, save_plan
from lymphcad.detector.sampling import PatchSampler, TrainCase
from lymphcad.detector.targets import centre_cells, focal_loss, masked_l1
from lymphcad.errors import InputError, UsageError
from lymphcad.evaluate import EvalSettings, evaluate_truth
from lymphcad.evaluate.settings import FP_RATES
from lymphcad.evaluate.truth import load_truth
from lymphcad.io.detections import Detection, DetectionTable, read_detections, write_detections
from lymphcad.measure.calibration import calibration_beside
from lymphcad.measure.fit import fit_on_fold
from lymphcad.splits import read_fold

log = logging.getLogger(__name__)

KEEP_CHECKPOINTS: Final = 3

#: progress callback: (done iterations, total iterations, message)
ProgressFn = Callable[[int, int, str], None]


@dataclass
class DistInfo:
    """Distributed setting (single process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_kind: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    backend = "nccl" if device_kind == "cuda" else "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend)
    return DistInfo(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def patch_streams(
    seed: int, epoch: int, iteration: int, batch_size: int, dist: DistInfo
) -> list[np.random.Generator]:
    """The random streams of this process's share of one iteration's global batch (one stream per patch)."""
    first = dist.rank * batch_size
    return [np.random.default_rng([seed, epoch, iteration, first + k]) for k in range(batch_size)]


def compute_losses(
    out: dict[str, torch.Tensor],
    batch: dict[str, torch.Tensor],
    *,
    w_size: float,
    w_offset: float,
    dist: DistInfo | None = None,
) -> dict[str, torch.Tensor]:
    """The three losses and their weighted sum (``"loss"``; the heatmap's weight is 1).

    Under DDP (``dist.world`` > 1) the losses are normalised by the counts over *all* processes' batches and
    scaled by the number of processes, so the gradients that DDP averages are those of the global batch's
    loss (a process whose patches hold no node would otherwise weigh as much as one whose patches do).
    """
    n_pos = n_mask = None
    scale = 1.0
    if dist is not None and dist.world > 1:
        counts = torch.stack([centre_cells(batch["heatmap"]), batch["reg_mask"].float().sum()])
        tdist.all_reduce(counts)
        n_pos, n_mask = counts[0], counts[1]
        scale = float(dist.world)
    heat = focal_loss(out["heatmap"], batch["heatmap"], batch["ignore"], n_pos=n_pos) * scale
    size = masked_l1(out["size"], batch["size"], batch["reg_mask"], n_mask=n_mask) * scale
    offset = masked_l1(out["offset"], batch["offset"], batch["reg_mask"], n_mask=n_mask) * scale
    total = heat + w_size * size + w_offset * offset
    return {"loss": total, "loss_heatmap": heat, "loss_size": size, "loss_offset": offset}


# -- data ---------------------------------------------------------------------------------------------
def build_plan_from_cohort(cohort: Cohort, case_ids: Sequence[str], cfg: DetectorConfig) -> Plan:
    """Compute the plan from the training cases' headers and contrast statistics (reads each image once)."""
    geoms = [cohort.geometries[c] for c in case_ids]
    fractions = [enhanced_fraction(cohort.read_image(c).array) for c in case_ids]
    return compute_plan(
        geoms,
        fractions,
        spacing_mm=cfg.plan.target_spacing_mm,
        hu_window=cfg.plan.hu_window,
        source=f"{cohort.info.source} ({len(case_ids)} training cases)",
    )


# -- checkpoints --------------------------------------------------------------------------------------
def checkpoint_path(run: Path, epoch: int) -> Path:
    """RUN/checkpoints/epoch_NNNN.pt (epoch counted from 1 = after the first epoch)."""
    return run / "checkpoints" / f"epoch_{epoch:04d}.pt"


def latest_checkpoint(run: Path) -> Path | None:
    """The newest checkpoint of a run, or None."""
    ckpts = sorted((run / "checkpoints").glob("epoch_*.pt"))
    return ckpts[-1] if ckpts else None


def optimizer_step(
    loss: torch.Tensor,
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    *,
    grad_clip: float,
) -> None:
    """Backpropagate ``loss``, clip the gradient norm and step (through the AMP scaler on CUDA)."""
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), grad_clip)
        optimizer.step()


class TrainingState(NamedTuple):
    """What a training loop steps besides the network: the optimiser, its learning-rate schedule and (CUDA
    with AMP only) the gradient scaler."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    #: iterations of the whole run (the schedule's length)
    total_iters: int


def training_state(network: torch.nn.Module, train: TrainConfig, device: torch.device) -> TrainingState:
    """AdamW with warm-up and cosine decay over the run (:func:`lr_factor`); AMP's scaler on CUDA when asked."""
    optimizer = torch.optim.AdamW(network.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    total_iters = train.epochs * train.iters_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, warmup=train.warmup_iters, total=total_iters)
    )
    scaler = torch.amp.GradScaler("cuda") if bool(train.amp and device.type == "cuda") else None
    return TrainingState(optimizer, scheduler, scaler, total_iters)


def resume_training(
    run: Path, network: CenterNet3D, state: TrainingState
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """Load the run's newest checkpoint into ``network`` and ``state``.

    Returns the epochs it completed, the history rows up to them and the checkpoint's payload (for the keys a
    loop adds with ``save_checkpoint(extra=...)``).
    """
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise UsageError(f"--resume: {run} holds no checkpoint yet")
    data = read_payload(ckpt)
    for key in ("optimizer", "scheduler", "epoch"):
        if key not in data:
            raise InputError(f"checkpoint lacks {key!r} (a model file, not a training checkpoint?)", ckpt)
    loaded = network_from_payload(data, where=ckpt)
    network.load_state_dict(loaded.state_dict())
    state.optimizer.load_state_dict(data["optimizer"])
    state.scheduler.load_state_dict(data["scheduler"])
    if state.scaler is not None and data.get("scaler"):
        state.scaler.load_state_dict(data["scaler"])
    start_epoch = int(data["epoch"])
    history = [dict(r) for r in read_history(run) if int(r["epoch"]) <= start_epoch]
    log.info("resuming %s after epoch %d", run, start_epoch)
    return start_epoch, history, data


def save_checkpoint(
    path: Path,
    *,
    network: CenterNet3D,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler | None,
    epoch: int,
    cfg: DetectorConfig,
    name: str,
    meta: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (loadable as a model too; ``meta`` defaults to ``{"epoch": epoch}``).

    ``extra``: further keys a training loop resumes from (e.g. the mixed-data loop's mined negatives).
    """
    payload: dict[str, Any] = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "name": name,
        "network": dataclasses.asdict(network.config),
        "detect": plain(dataclasses.asdict(cfg.detect)),
        "state_dict": network.state_dict(),
        "meta": {"epoch": epoch} if meta is None else meta,
        "epoch": epoch,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        **(extra or {}),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic.write_bytes(path, buf.getvalue())
    old = sorted(path.parent.glob("epoch_*.pt"))[:-KEEP_CHECKPOINTS]
    for p in old:
        p.unlink(missing_ok=True)


# -- validation ---------------------------------------------------------------------------------------
def evaluate_subset(
    cohort: Cohort, case_ids: Sequence[str], detections: Sequence[Detection]
) -> dict[str, float]:
    """FROC/CPM of detections on some cases of a cohort with the project's evaluator."""
    truths = load_truth(cohort, cases=case_ids)
    result = evaluate_truth(truths, DetectionTable.from_detections(detections), EvalSettings(bootstrap=0))
    sens = result.pooled.sensitivity_at_fp
    return {
        "val_cpm": float(result.pooled.cpm),
        "val_sens_at_1": float(sens[FP_RATES.index(1.0)]),
        "val_sens_at_3": float(sens[FP_RATES.index(3.0)]),
        "val_n_nodes": float(result.pooled.n_nodes),
    }


def validate(
    network: CenterNet3D,
    plan: Plan,
    detect: DetectConfig,
    cohort: Cohort,
    val_cases: Sequence[TrainCase],
    out: Path,
) -> dict[str, float]:
    """Detect on the validation cases (with the detection settings ``detect``), write their detections and
    evaluate them."""
    network.eval()
    dets: list[Detection] = []
    for case in val_cases:
        dets.extend(detect_prepared(case.prepared, network, plan, detect, case_id=case.case_id))
    network.train()
    out.mkdir(parents=True, exist_ok=True)
    write_detections(out / "dets.csv", dets)
    metrics = evaluate_subset(cohort, [c.case_id for c in val_cases], dets)
    atomic.write_json(out / "metrics.json", metrics)
    return metrics


def fit_run_calibration(cohort: Cohort, run: Path, val_ids: Sequence[str]) -> Path | None:
    """Fit the isotonic map raw score → P(the detection hits a node) on the last validation's detections and
    store it beside the run's model (``model/calibration.json``, applied by ``detect``); the validation fold
    was never trained on. Isotonic: the heatmap peak is not a logit, so no shape is assumed (temperature
    scaling: ``lymphcad calibrate --method temperature``). None when the fold gives too few hits."""
    vals = sorted((run / "val").glob("epoch_*/dets.csv"))
    if not vals:
        return None
    table = read_detections(vals[-1])
    try:
        fit = fit_on_fold(
            cohort,
            table,
            cases=val_ids,
            method="isotonic",
            source=f"validation fold of run {run.name} ({vals[-1].parent.name})",
        )
    except ValueError as exc:  # too few hits or misses on the fold to fit a map
        log.info("no calibration (%s); detect reports raw scores", exc)
        calibration_beside(run / "model").unlink(missing_ok=True)
        return None
    log.info("calibration on the validation fold: ECE %.3f raw -> %.3f", fit.ece_raw, fit.ece_calibrated)
    return fit.calibration.save(calibration_beside(run / "model"))


# -- the loop -----------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What a finished training run reports."""

    run: Path
    epochs_done: int
    seconds: float
    history: list[dict[str, Any]]
    n_parameters: int


def train(
    cohort_root: str | Path,
    *,
    split: str | Path,
    fold: int,
    out: str | Path,
    config: str | Path | DetectorConfig | None = None,
    resume: bool = False,
    truth: TruthMode | str = TruthMode.LABELS,
    epochs: int | None = None,
    device: str | None = None,
    progress: ProgressFn | None = None,
    stop_after_epochs: int | None = None,
) -> TrainResult:
    """Train a detector on one fold of a cohort; see the module docstring for the run folder.

    ``stop_after_epochs`` ends the call early after that many epochs *of this call* (used by tests to
    simulate an interruption; the schedule still follows the configured number of epochs). The caller's
    ``config`` is never changed (``epochs`` / ``device`` apply to a copy).
    """
    mode = TruthMode.parse(truth)
    run = Path(out)
    cfg_path = run / "config.toml"
    if resume:
        if not cfg_path.is_file():
            raise UsageError(f"--resume: {run} holds no config.toml (not a run folder?)")
        cfg = load_config(cfg_path)
        if config is not None:
            new = config if isinstance(config, DetectorConfig) else load_config(config)
            if dumps_config(new) != dumps_config(cfg):
                log.warning("--resume: using the run's own config.toml; the given config is ignored")
    else:
        cfg = config if isinstance(config, DetectorConfig) else load_config(config)
        if epochs is not None:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=int(epochs)))
        if device is not None:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=device))
        if latest_checkpoint(run) is not None:
            raise UsageError(f"{run} already holds checkpoints; use --resume or another --out")
    dev_kind = (
        "cuda"
        if (cfg.train.device.startswith("cuda") or (cfg.train.device == "auto" and torch.cuda.is_available()))
        else "cpu"
    )
    dist = _init_distributed(dev_kind)
    dev = resolve_device(cfg.train.device, dist.local_rank)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    torch.manual_seed(cfg.train.seed)

    cohort = open_cohort(cohort_root)
    train_ids, val_ids, test_ids = read_fold(split, fold)
    missing = [c for c in train_ids + val_ids if c not in cohort.info.cases]
    if missing:
        raise InputError(f"split names cases not in the cohort: {missing[:3]}", split)
    if not train_ids:
        raise InputError(f"fold {fold} has no training cases", split)

    if dist.main:
        run.mkdir(parents=True, exist_ok=True)
    if resume and (run / "plan.json").is_file():
        plan = load_plan(run / "plan.json")
    else:
        plan = build_plan_from_cohort(cohort, train_ids, cfg)
        if dist.main:
            save_config(cfg_path, cfg)
            save_plan(run / "plan.json", plan)
            atomic.write_json(
                run / "split.json",
                {
                    "cohort": str(Path(cohort_root).resolve()),
                    "splits": str(Path(split).resolve()),
                    "fold": fold,
                    "truth": str(mode),
                    "train": train_ids,
                    "val": val_ids,
                    "test_not_used": test_ids,
                },
            )
    thresholds = {"enlarged_mm": cfg.train.enlarged_mm, "ignore_below_mm": cfg.train.ignore_below_mm}
    cases = load_cases(cohort, train_ids, plan, mode, **thresholds)
    val_cases = []
    if cfg.train.val_every > 0 and val_ids:
        chosen = val_ids
        if 0 < cfg.train.val_max_cases < len(val_ids):  # evenly spread over the (sorted) val cases
            step = len(val_ids) / cfg.train.val_max_cases
            chosen = [val_ids[int(i * step)] for i in range(cfg.train.val_max_cases)]
        val_cases = load_cases(cohort, chosen, plan, TruthMode.LABELS, **thresholds)
    sampler = PatchSampler(cases, plan, cfg.train, cfg.augment)
    n_nodes = sum(len(c.nodes_zyx) for c in cases)
    log.info("training on %d cases (%d nodes), validating on %d", len(cases), n_nodes, len(val_cases))

    network = build_network(cfg.network).to(dev)
    model: torch.nn.Module = network
    if dist.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            network, device_ids=[dist.local_rank] if dev.type == "cuda" else None
        )
    state = training_state(network, cfg.train, dev)
    optimizer, scheduler, scaler, total_iters = state
    use_amp = scaler is not None
    start_epoch, history, _ = resume_training(run, network, state) if resume else (0, [], {})

    name = run.name or "run"
    t_start = time.perf_counter()
    network.train()
    end_epoch = cfg.train.epochs
    if stop_after_epochs is not None:
        end_epoch = min(end_epoch, start_epoch + stop_after_epochs)
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "loss_heatmap": 0.0, "loss_size": 0.0, "loss_offset": 0.0}
        for it in range(cfg.train.iters_per_epoch):
            batch = sampler.batch_of(patch_streams(cfg.train.seed, epoch, it, cfg.train.batch_size, dist))
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                outputs = model(batch["image"])
            losses = compute_losses(
                outputs, batch, w_size=cfg.train.w_size, w_offset=cfg.train.w_offset, dist=dist
            )
            if not torch.isfinite(losses["loss"]):
                raise RuntimeError(f"non-finite loss at epoch {epoch + 1}, iteration {it + 1}")
            optimizer_step(losses["loss"], network, optimizer, scaler, grad_clip=cfg.train.grad_clip)
            scheduler.step()
            for k in sums:
                sums[k] += float(losses[k].detach())
            if progress is not None and dist.main:
                done = epoch * cfg.train.iters_per_epoch + it + 1
                progress(
                    done,
                    total_iters,
                    f"epoch {epoch + 1}/{cfg.train.epochs} loss {sums['loss'] / (it + 1):.3f}",
                )
        if dist.world > 1:  # the logged losses are the mean over all processes
            total = torch.tensor(list(sums.values()), dtype=torch.float64, device=dev)
            tdist.all_reduce(total)
            sums = {k: float(v) / dist.world for k, v in zip(sums, total.tolist(), strict=True)}
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "iterations": (epoch + 1) * cfg.train.iters_per_epoch,
            **{k: f"{v / cfg.train.iters_per_epoch:.6f}" for k, v in sums.items()},
            "lr": f"{optimizer.param_groups[0]['lr']:.6g}",
            "seconds": f"{time.perf_counter() - t0:.1f}",
        }
        if dist.main:
            save_checkpoint(
                checkpoint_path(run, epoch + 1),
                network=network,
                optimizer=optimizer,
                scheduler=scheduler,
                scaler=scaler,
                epoch=epoch + 1,
                cfg=cfg,
                name=name,
                meta={"epoch": epoch + 1, **thresholds},
            )
            last = epoch + 1 == cfg.train.epochs
            if val_cases and ((epoch + 1) % cfg.train.val_every == 0 or last):
                metrics = validate(
                    network, plan, cfg.detect, cohort, val_cases, run / "val" / f"epoch_{epoch + 1:04d}"
                )
                if metrics:
                    row.update({k: f"{v:.4f}" for k, v in metrics.items()})
                    log.info("epoch %d validation: %s", epoch + 1, json.dumps(metrics))
            history.append(row)
            write_history(run, history)
            save_model(
                run / "model",
                network,
                plan,
                name=name,
                detect=cfg.detect,
                meta={"epoch": epoch + 1, **thresholds},
            )
        if dist.world > 1:
            tdist.barrier()  # rank 0 has written this epoch's checkpoint before any rank goes on
    if dist.main and val_cases:
        fit_run_calibration(cohort, run, [c.case_id for c in val_cases])
    if dist.world > 1:
        tdist.barrier()
        tdist.destroy_process_group()
    return TrainResult(run, len(history), time.perf_counter() - t_start, history, count_parameters(network))
