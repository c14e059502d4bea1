"""Training on a mix of cohorts (phantom + insertions into real CT) with hard-negative mining and a mask loss.

:func:`lymphcad.detector.train.train` trains on one cohort's fold; this loop trains the model meant for real
anatomy (issue 12) on several sources at once (:mod:`lymphcad.detector.datamix`) and adds what real
backgrounds need: hard-negative patches (mimic prior + the network's own false positives, re-mined every
``mine_every`` epochs), CT-physics intensity augmentation (:mod:`lymphcad.detector.augment`) and, when the
network has a mask head, the auxiliary segmentation loss on the synthetic nodes' masks.

A run folder ``RUN`` holds::

    RUN/config.toml, RUN/plan.json     the resolved configuration and the preprocessing plan
    RUN/mix.json                       the sources, their weights, training and validation cases
    RUN/checkpoints/epoch_NNNN.pt      weights + optimiser + scheduler + the mined negatives (last 3 kept)
    RUN/history.csv, RUN/curves.png    one row per epoch: losses, time, mined points, validation CPM
    RUN/model/                         the latest weights as a loadable model

Resumable: ``resume=True`` continues after the newest checkpoint; on CPU the result is bit-identical to an
uninterrupted run (every epoch draws from ``default_rng([seed, epoch])``, mining is deterministic and its
result is stored in the checkpoint). ``init_from`` starts a new run from another run's or model's weights
(a warm start on new data, e.g. after the insertion method changed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from lymphcad import atomic
from lymphcad.cohort import Cohort, open_cohort
from lymphcad.detector.common import resolve_device
from lymphcad.detector.config import DetectConfig, DetectorConfig, load_config, save_config
from lymphcad.detector.datamix import (
    CompactCase,
    MixSampler,
    MixSource,
    load_compact_case,
    mine_hard_negatives,
    mined_from_json,
    mined_to_json,
)
from lymphcad.detector.history import write_history
from lymphcad.detector.infer import detect_prepared
from lymphcad.detector.model import (
    network_from_payload,
    read_payload,
    resolve_model_path,
    save_model,
)
from lymphcad.detector.network import CenterNet3D, DetectorNet, build_network, count_parameters
from lymphcad.detector.plan import (
    Plan,
    PreparedVolume,
    compute_plan,
    enhanced_fraction,
    load_plan,
    prepare_volume,
    save_plan,
)
from lymphcad.detector.synthetic import sphere_volume
from lymphcad.detector.targets import seg_loss
from lymphcad.detector.train import (
    checkpoint_path,
    compute_losses,
    latest_checkpoint,
    optimizer_step,
    resume_training,
    save_checkpoint,
    training_state,
)
from lymphcad.errors import InputError, UsageError
from lymphcad.evaluate import EvalSettings, evaluate_truth
from lymphcad.evaluate.matching import CaseTruth
from lymphcad.evaluate.settings import FP_RATES
from lymphcad.evaluate.truth import case_truth
from lymphcad.geometry import Geometry
from lymphcad.io.detections import Detection, DetectionTable

log = logging.getLogger(__name__)

HISTORY_COLUMNS: Final = (
    "epoch",
    "iterations",
    "loss",
    "loss_heatmap",
    "loss_size",
    "loss_offset",
    "loss_seg",
    "lr",
    "seconds",
    "mined",
    "val_cpm",
    "val_sens_at_1",
    "val_sens_at_3",
    "val_phantom_cpm",
    "val_insertion_cpm",
    "val_sphere_peak",
)

ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class MixSettings:
    """How the mix is trained beyond :class:`~lymphcad.detector.config.DetectorConfig`."""

    #: share of patches centred on a hard negative (mimic prior or mined false positive)
    p_hard: float = 0.25
    #: re-mine the network's false positives every N epochs from epoch ``mine_start`` (0 = never)
    mine_every: int = 5
    mine_start: int = 5
    #: leave out mined false positives that look like a real node (datamix.node_like): the real backgrounds'
    #: own unannotated nodes must not become negatives
    mine_skip_node_like: bool = False
    #: validation cases per source (held out by case, from the end of each source's case list)
    val_per_source: int = 1

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dataclasses.asdict(self)


@dataclass
class MixResult:
    """What a finished (or interrupted) run reports."""

    run: Path
    epochs_done: int
    seconds: float
    history: list[dict[str, Any]]
    n_parameters: int


def mix_losses(
    out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg: DetectorConfig
) -> dict[str, torch.Tensor]:
    """The detector's losses plus the weighted mask loss when the network has a mask head."""
    losses = compute_losses(out, batch, w_size=cfg.train.w_size, w_offset=cfg.train.w_offset)
    if "seg" in out:
        s = seg_loss(out["seg"], batch["seg"], batch["seg_ignore"])
        losses["loss_seg"] = s
        losses["loss"] = losses["loss"] + cfg.train.w_seg * s
    else:
        losses["loss_seg"] = torch.zeros(())
    return losses


def split_sources(
    sources: Sequence[MixSource], settings: MixSettings
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Training and validation case ids per source (the last ``val_per_source`` cases validate)."""
    train_ids: dict[str, list[str]] = {}
    val_ids: dict[str, list[str]] = {}
    for s in sources:
        cohort = open_cohort(s.root, check_headers=False)
        ids = sorted(s.cases if s.cases is not None else cohort.cases)
        if not ids:
            raise InputError(f"mix source {s.name!r} has no cases", s.root)
        n_val = min(settings.val_per_source, len(ids) - 1)
        train_ids[s.name] = ids[: len(ids) - n_val]
        val_ids[s.name] = ids[len(ids) - n_val :] if n_val > 0 else []
    return train_ids, val_ids


def _mix_plan(sources: Sequence[MixSource], train_ids: dict[str, list[str]], cfg: DetectorConfig) -> Plan:
    """The plan of the mix: the configured spacing (real backgrounds with 4–5 mm slices are interpolated to
    it rather than pulling the whole mix to 3 mm), ranges from every training case's header."""
    geoms = []
    for s in sources:
        cohort = open_cohort(s.root)
        geoms += [cohort.geometries[c] for c in train_ids[s.name]]
    plan = compute_plan(
        geoms,
        [],
        spacing_mm=cfg.plan.target_spacing_mm,
        hu_window=cfg.plan.hu_window,
        source="training mix: " + ", ".join(f"{s.name} ({len(train_ids[s.name])})" for s in sources),
    )
    return dataclasses.replace(plan, spacing_mm=float(cfg.plan.target_spacing_mm))


def load_mix(
    sources: Sequence[MixSource],
    ids: dict[str, list[str]],
    plan: Plan,
    cfg: DetectorConfig,
    *,
    progress: ProgressFn | None = None,
) -> list[CompactCase]:
    """Load every listed case of every source onto the plan grid (deterministic mimic points)."""
    out: list[CompactCase] = []
    total = sum(len(ids[s.name]) for s in sources)
    for si, s in enumerate(sources):
        cohort = open_cohort(s.root, check_headers=False)
        for ci, c in enumerate(ids[s.name]):
            rng = np.random.default_rng([cfg.train.seed, si, ci, 0x51])
            out.append(load_compact_case(cohort, c, plan, s, cfg.train, rng))
            if progress is not None:
                progress(len(out), total, f"loading {s.name}")
    return out


def _with_enhancement_range(plan: Plan, cases: Sequence[CompactCase]) -> Plan:
    fr = [enhanced_fraction(c.hu.numpy()) for c in cases] or [0.0]
    return dataclasses.replace(plan, enhanced_fraction_range=(float(min(fr)), float(np.median(fr))))


# -- validation ---------------------------------------------------------------------------------------
def case_truth_as(cohort: Cohort, case_id: str, as_id: str) -> CaseTruth:
    """The evaluation truth of one case under another case id (to pool cases of several cohorts)."""
    label = cohort.read_label(case_id)
    region = cohort.read_eval_region(case_id)
    geom = (
        label[1] if label is not None else region[1] if region is not None else cohort.geometries.get(case_id)
    )
    anns = [dataclasses.replace(a, case_id=as_id) for a in cohort.annotations_for(case_id)]
    ign = [dataclasses.replace(p, case_id=as_id) for p in cohort.ignore_for(case_id)]
    return case_truth(
        as_id,
        region=cohort.region_of(case_id),
        annotations=anns,
        geometry=geom,
        labels_zyx=None if label is None else label[0],
        eval_region_zyx=None if region is None else region[0],
        ignore=ign,
    )


def validate_mix(
    network: CenterNet3D,
    plan: Plan,
    cfg: DetectorConfig,
    sources: Sequence[MixSource],
    val_cases: dict[str, list[CompactCase]],
) -> dict[str, float]:
    """Pooled CPM (and sensitivity at 1 and 3 FP/vol) of all validation cases, and per source kind."""
    network.eval()
    truths: dict[str, list[Any]] = {"all": [], "phantom": [], "insertion": []}
    dets: dict[str, list[Detection]] = {"all": [], "phantom": [], "insertion": []}
    try:
        for s in sources:
            cohort = open_cohort(s.root, check_headers=False)
            for case in val_cases.get(s.name, []):
                as_id = f"{s.name}__{case.case_id}"
                found = detect_prepared(
                    PreparedVolume(case.hu_float, case.geometry), network, plan, cfg.detect, case_id=as_id
                )
                t = case_truth_as(cohort, case.case_id, as_id)
                for key in ("all", s.kind):
                    truths.setdefault(key, []).append(t)
                    dets.setdefault(key, []).extend(found)
    finally:
        network.train()
    out: dict[str, float] = {}
    for key in ("all", "phantom", "insertion"):
        if not truths[key]:
            continue
        res = evaluate_truth(
            truths[key], DetectionTable.from_detections(dets[key]), EvalSettings(bootstrap=0)
        )
        if key == "all":
            sens = res.pooled.sensitivity_at_fp
            out["val_cpm"] = float(res.pooled.cpm)
            out["val_sens_at_1"] = float(sens[FP_RATES.index(1.0)])
            out["val_sens_at_3"] = float(sens[FP_RATES.index(3.0)])
        else:
            out[f"val_{key}_cpm"] = float(res.pooled.cpm)
    return out


def sphere_peak(network: DetectorNet, plan: Plan, detect: DetectConfig) -> float:
    """The highest raw score within 3 mm of a plain 14 mm soft-tissue sphere (60 HU) in fat-like noise.

    A sanity check of what should carry over to any insertion method: a node without anatomical context
    must still be a node. A run that learns to find nodes only where its training insertion puts them
    (beside vessels, in mediastinal fat) lets this score fall; the release recipe does not ship such a run
    (the CLI test ``test_shipped_model_default_via_cli`` asks the same of the shipped model).
    """
    geom = Geometry((40, 64, 64), (2.0, 1.6, 1.6), (0.0, 0.0, 0.0), np.diag([-1.0, -1.0, 1.0]))
    centre = geom.zyx_to_world(np.array([20.0, 32.0, 32.0]))
    vol, _ = sphere_volume(geom, [centre], [14.0], seed=4)
    network.eval()
    try:
        found = detect_prepared(prepare_volume(vol, plan), network, plan, detect, case_id="sphere")
    finally:
        network.train()
    near = [d.probability for d in found if np.linalg.norm(np.asarray(d.center_xyz) - centre) <= 3.0]
    return float(max(near, default=0.0))


# -- checkpoints and history ----------------------------------------------------------------------------
def _init_weights(network: CenterNet3D, source: str | Path) -> None:
    """Copy every matching tensor from a model/checkpoint/run (a new head keeps its initialisation)."""
    path = resolve_model_path(source)
    other = network_from_payload(read_payload(path), where=path).state_dict()
    own = network.state_dict()
    copied = {k: v for k, v in other.items() if k in own and own[k].shape == v.shape}
    own.update(copied)
    network.load_state_dict(own)
    log.info("initialised %d of %d tensors from %s", len(copied), len(own), path)


# -- the loop -----------------------------------------------------------------------------------------
def train_mix(
    sources: Sequence[MixSource],
    *,
    out: str | Path,
    config: DetectorConfig | None = None,
    settings: MixSettings | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    progress: ProgressFn | None = None,
    stop_after_epochs: int | None = None,
    stop_at_epoch: int | None = None,
) -> MixResult:
    """Train on a mix of sources; see the module docstring for the run folder and resuming.

    ``stop_after_epochs`` ends this call after that many epochs (an interruption, for tests);
    ``stop_at_epoch`` ends the run at that epoch of its schedule, however often it was resumed on the way.
    """
    run = Path(out)
    if resume:
        if not (run / "config.toml").is_file():
            raise UsageError(f"--resume: {run} holds no config.toml (not a run folder?)")
        cfg = load_config(run / "config.toml")
        mix = json.loads((run / "mix.json").read_text(encoding="utf-8"))
        settings = MixSettings(**mix["settings"])
        train_ids = {k: list(v) for k, v in mix["train"].items()}
        val_ids = {k: list(v) for k, v in mix["val"].items()}
        plan = load_plan(run / "plan.json")
    else:
        if latest_checkpoint(run) is not None:
            raise UsageError(f"{run} already holds checkpoints; resume it or choose another folder")
        cfg = config or DetectorConfig()
        settings = settings or MixSettings()
        train_ids, val_ids = split_sources(sources, settings)
        plan = _mix_plan(sources, train_ids, cfg)
    dev = resolve_device(cfg.train.device)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)

    cases = load_mix(sources, train_ids, plan, cfg, progress=progress)
    val_list = load_mix(sources, val_ids, plan, cfg) if cfg.train.val_every > 0 else []
    val_cases: dict[str, list[CompactCase]] = {}
    for c in val_list:
        val_cases.setdefault(c.source, []).append(c)
    if not resume:
        plan = _with_enhancement_range(plan, cases)
        run.mkdir(parents=True, exist_ok=True)
        save_config(run / "config.toml", cfg)
        save_plan(run / "plan.json", plan)
        atomic.write_json(
            run / "mix.json",
            {
                "sources": [
                    {**dataclasses.asdict(s), "root": str(Path(s.root).resolve()), "cases": None}
                    for s in sources
                ],
                "settings": settings.to_json(),
                "train": train_ids,
                "val": val_ids,
                "init_from": None if init_from is None else str(init_from),
            },
        )
    sampler = MixSampler(
        cases,
        plan,
        cfg.train,
        cfg.augment,
        source_weights={s.name: s.weight for s in sources},
        p_hard=settings.p_hard,
    )
    log.info(
        "training on %d cases (%d nodes) from %d sources",
        len(cases),
        sum(len(c.nodes_zyx) for c in cases),
        len(sources),
    )

    network = build_network(cfg.network).to(dev)
    if init_from is not None and not resume:
        _init_weights(network, init_from)
    state = training_state(network, cfg.train, dev)
    optimizer, scheduler, scaler, total_iters = state
    use_amp = scaler is not None
    start_epoch, history, payload = resume_training(run, network, state) if resume else (0, [], {})
    if resume:
        mined_from_json(cases, json.loads(payload.get("mined") or "{}"))

    name = run.name or "run"
    t_start = time.perf_counter()
    network.train()
    end_epoch = cfg.train.epochs
    if stop_after_epochs is not None:
        end_epoch = min(end_epoch, start_epoch + stop_after_epochs)
    if stop_at_epoch is not None:
        end_epoch = min(end_epoch, stop_at_epoch)
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        mined_n = ""
        since = epoch - settings.mine_start
        if settings.mine_every > 0 and since >= 0 and since % settings.mine_every == 0:
            found = mine_hard_negatives(
                network,
                cases,
                plan,
                cfg.detect,
                round_index=since // settings.mine_every,
                skip_node_like=settings.mine_skip_node_like,
            )
            mined_n = str(sum(found.values()))
            log.info("epoch %d: mined %s false positives over %d groups", epoch + 1, mined_n, len(found))
        rng = np.random.default_rng([cfg.train.seed, epoch])
        keys = ("loss", "loss_heatmap", "loss_size", "loss_offset", "loss_seg")
        sums = dict.fromkeys(keys, 0.0)
        for it in range(cfg.train.iters_per_epoch):
            batch = {
                k: v.to(dev, non_blocking=True) for k, v in sampler.batch(rng, cfg.train.batch_size).items()
            }
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                outputs = network(batch["image"])
            losses = mix_losses(outputs, batch, cfg)
            if not torch.isfinite(losses["loss"]):
                raise RuntimeError(f"non-finite loss at epoch {epoch + 1}, iteration {it + 1}")
            optimizer_step(losses["loss"], network, optimizer, scaler, grad_clip=cfg.train.grad_clip)
            scheduler.step()
            for k in keys:
                sums[k] += float(losses[k].detach())
            if progress is not None:
                done = epoch * cfg.train.iters_per_epoch + it + 1
                progress(
                    done,
                    total_iters,
                    f"epoch {epoch + 1}/{cfg.train.epochs} loss {sums['loss'] / (it + 1):.3f}",
                )
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "iterations": (epoch + 1) * cfg.train.iters_per_epoch,
            **{k: f"{v / cfg.train.iters_per_epoch:.6f}" for k, v in sums.items()},
            "lr": f"{optimizer.param_groups[0]['lr']:.6g}",
            "seconds": f"{time.perf_counter() - t0:.1f}",
            "mined": mined_n,
        }
        save_checkpoint(
            checkpoint_path(run, epoch + 1),
            network=network,
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            epoch=epoch + 1,
            cfg=cfg,
            name=name,
            extra={"mined": json.dumps(mined_to_json(cases))},
        )
        last = epoch + 1 == cfg.train.epochs
        checkpoint_due = cfg.train.val_every > 0 and (epoch + 1) % cfg.train.val_every == 0
        if val_cases and (checkpoint_due or last):
            metrics = validate_mix(network, plan, cfg, sources, val_cases)
            metrics["val_sphere_peak"] = sphere_peak(network, plan, cfg.detect)
            row.update({k: f"{v:.4f}" for k, v in metrics.items()})
            log.info("epoch %d validation: %s", epoch + 1, json.dumps(metrics))
        history.append(row)
        write_history(
            run, history, columns=HISTORY_COLUMNS, plot=checkpoint_due or last or epoch + 1 == end_epoch
        )
        save_model(run / "model", network, plan, name=name, detect=cfg.detect, meta={"epoch": epoch + 1})
        if val_cases and (checkpoint_due or last):  # the weights of every validated epoch, to choose from
            save_model(
                run / "snapshots" / f"epoch_{epoch + 1:04d}",
                network,
                plan,
                name=name,
                detect=cfg.detect,
                meta={"epoch": epoch + 1},
            )
    return MixResult(run, len(history), time.perf_counter() - t_start, history, count_parameters(network))
