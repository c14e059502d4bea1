"""Detector commands: ``train`` and ``detect``. Thin: arguments are checked here, the work is in
:mod:`lymphcad.detector`."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import typer

from lymphcad.cli._common import app, console, err_console, progress
from lymphcad.cli._detect_support import second_stage_record, synthetic_model_notice
from lymphcad.cli._guards import (
    check_detections_output,
    check_device_name,
    check_input,
    check_output_dir,
)
from lymphcad.cli.clinical import clinical_options
from lymphcad.errors import InputError, UsageError


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=False)
    logging.getLogger("lymphcad").setLevel(logging.INFO)


def _threads(n: int | None) -> None:
    import torch

    if n is not None:
        if n < 1:
            raise UsageError(f"--threads must be >= 1, got {n}")
        torch.set_num_threads(n)


@app.command("train")
def train_cmd(
    cohort: Path = typer.Argument(..., help="Training cohort folder (docs/formats.md)."),
    split: Path = typer.Option(..., "--split", help="splits.json (docs/formats.md)."),
    fold: int = typer.Option(
        0, "--fold", help="Fold index in splits.json: train on its 'train', validate on its 'val'."
    ),
    out: Path = typer.Option(..., "--out", help="Run folder (checkpoints, history, curves, model/)."),
    config: Path | None = typer.Option(
        None, "--config", help="TOML config (sections plan, network, augment, train, detect)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its latest checkpoint."
    ),
    truth: str = typer.Option(
        "labels", "--truth", help="labels (annotations.csv) or extra (the phantom's full truth)."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Override train.epochs."),
    device: str | None = typer.Option(
        None, "--device", help="cpu | cuda | cuda:N | auto (overrides train.device)."
    ),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch."),
) -> None:
    """Train the 3D centre-heatmap detector on one fold of a cohort (multi-GPU under torchrun)."""
    check_input(cohort, "COHORT")
    check_input(split, "--split")
    check_output_dir(out, "--out", inputs=[cohort, split])
    from lymphcad.detector.train import train

    if truth not in ("labels", "extra"):
        raise UsageError(f"--truth must be labels or extra, not {truth!r}")
    check_device_name(device)
    _setup_logging()
    _threads(threads)
    with progress() as bar:
        task = bar.add_task("train", total=None)

        def on_progress(done: int, total: int, message: str) -> None:
            bar.update(task, completed=done, total=total, description=message)

        result = train(
            cohort,
            split=split,
            fold=fold,
            out=out,
            config=config,
            resume=resume,
            truth=truth,
            epochs=epochs,
            device=device,
            progress=on_progress,
        )
    if int(os.environ.get("RANK", "0")) != 0:
        return  # under torchrun only rank 0 reports
    last = result.history[-1] if result.history else {}
    console.print(
        f"run {result.run}: {result.epochs_done} epoch(s), {result.n_parameters:,} parameters, "
        f"{result.seconds / 60:.1f} min this call; last loss {last.get('loss', '-')}, "
        f"val CPM {last.get('val_cpm', '-') or '-'}"
    )


@app.command("train-fpr")
def train_fpr_cmd(
    cohort: Path = typer.Argument(..., help="Training cohort folder (docs/formats.md)."),
    model: str = typer.Option(..., "--model", help="The first stage: run folder, model folder/file or name."),
    split: Path = typer.Option(..., "--split", help="splits.json (docs/formats.md)."),
    fold: int = typer.Option(
        0, "--fold", help="Fold: candidates from its 'train', fusion weight from its 'val'."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for fpr.pt (default: beside the first stage's model.pt)."
    ),
    truth: str = typer.Option(
        "labels", "--truth", help="labels (annotations.csv) or extra (the phantom's full truth)."
    ),
    iters: int | None = typer.Option(None, "--iters", help="Training iterations (default 1000)."),
    device: str = typer.Option("auto", "--device", help="cpu | cuda | cuda:N | auto."),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch."),
) -> None:
    """Train the second stage (false-positive reduction) on the first stage's candidates of one fold."""
    import dataclasses

    from lymphcad.detector.fpr import FPRConfig
    from lymphcad.detector.fpr_train import train_fpr

    if truth not in ("labels", "extra"):
        raise UsageError(f"--truth must be labels or extra, not {truth!r}")
    check_device_name(device)
    if out is not None:
        check_output_dir(out, "--out", inputs=[cohort, split])
    if iters is not None and iters < 1:
        raise UsageError(f"--iters must be >= 1, got {iters}")
    _setup_logging()
    _threads(threads)
    cfg = FPRConfig() if iters is None else dataclasses.replace(FPRConfig(), iters=iters)
    with progress() as bar:
        task = bar.add_task("train-fpr", total=None)

        def on_progress(done: int, total: int, message: str) -> None:
            bar.update(task, completed=done, total=total, description=message)

        summary = train_fpr(
            cohort,
            model=model,
            split=split,
            fold=fold,
            out=out,
            truth=truth,
            config=cfg,
            device=device,
            progress=on_progress,
        )
    console.print(
        f"second stage: {summary['candidates']} candidates ({summary['positives']} positive) from "
        f"{summary['train_cases']} case(s); fusion weight {summary['weight']:g} "
        f"(validation CPM by weight: {summary['validation_cpm_by_weight'] or 'no validation cases'})"
    )


def _case_id_from_path(path: Path) -> str:
    from lymphcad.importer import case_id_for

    return case_id_for(path)


def _inputs(
    path: Path, *, series: str | None = None, allow_gaps: bool = False
) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """(case id, loader) pairs and dataset info (license/citation) for a CT file, DICOM folder or cohort."""
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_dir() and (path / "dataset.json").is_file():
        from lymphcad.cohort import open_cohort

        cohort = open_cohort(path)
        items = [(c, (lambda c=c: cohort.read_image(c))) for c in cohort.cases]
        if series is not None or allow_gaps:
            raise UsageError("--series and --allow-gaps apply to a DICOM folder, not to a cohort", path)
        return items, {
            "license": cohort.info.license,
            "citation": list(cohort.info.citation),
            "cohort": cohort,
            "source": cohort.info.source,
        }
    from lymphcad.io.reader import read_ct_input

    def load() -> Any:
        return read_ct_input(path, series_uid=series, allow_gaps=allow_gaps)

    return [(_case_id_from_path(path), load)], {"license": None, "citation": []}


@app.command("detect")
def detect_cmd(
    input: Path | None = typer.Argument(
        None, help="A NIfTI file, a DICOM folder or a cohort folder (none with --dicomweb)."
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Detections CSV (docs/formats.md); its provenance goes beside it (dets.csv → dets.csv.json).",
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Run folder, model folder/file or shipped model name (default: the shipped model).",
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto (a CUDA GPU when present, else the CPU) | cpu | cuda | cuda:N."
    ),
    threads: int | None = typer.Option(None, "--threads", help="CPU threads for torch."),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Flip test-time augmentation (default: the model's setting)."
    ),
    second_stage: bool | None = typer.Option(
        None,
        "--second-stage/--no-second-stage",
        help="Re-score candidates with the model's false-positive reduction stage (fpr.pt) when it has one.",
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Lowest probability reported (default: the model's)."
    ),
    max_detections: int | None = typer.Option(
        None, "--max-detections", help="Per volume (default: the model's)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Also write OUT's JSON form (dets.csv → dets.json)."),
    series: str | None = typer.Option(
        None,
        "--series",
        help="SeriesInstanceUID: of a DICOM folder holding several CT series, or on the DICOMweb server "
        "(default there: the largest axial CT series).",
    ),
    allow_gaps: bool = typer.Option(
        False,
        "--allow-gaps",
        help="DICOM: resample missing slices / uneven spacing (small gaps only; warns).",
    ),
    sr: Path | None = typer.Option(None, "--sr", help="Also write a DICOM SR (TID 1500) of the detections."),
    seg: Path | None = typer.Option(None, "--seg", help="Also write a DICOM SEG, one segment per detection."),
    sr_threshold: float = typer.Option(0.0, "--sr-threshold", help="Lowest probability put in the SR/SEG."),
    dicomweb: str | None = typer.Option(None, "--dicomweb", help="Read the CT from this DICOMweb server."),
    study: str | None = typer.Option(None, "--study", help="StudyInstanceUID on the DICOMweb server."),
    store: bool = typer.Option(False, "--store", help="Store the SR and SEG back with STOW-RS."),
    user: str | None = typer.Option(None, "--user", help="DICOMweb user (HTTP basic auth)."),
    password_file: Path | None = typer.Option(None, "--password-file", help="File holding the password."),
    token_file: Path | None = typer.Option(None, "--token-file", help="File holding a bearer token."),
) -> None:
    """Find lymph nodes: centres (world LPS mm), probability and diameter, one CSV row per detection."""
    # checked before torch and the model load (seconds): a wrong argument fails at once, nothing is lost
    check_device_name(device)
    clinical = clinical_options(
        input, out=out, sr=sr, seg=seg, sr_threshold=sr_threshold, dicomweb=dicomweb, study=study,
        series=series, store=store, user=user, password_file=password_file, token_file=token_file,
    )  # fmt: skip
    check_detections_output(out, inputs=clinical.inputs, json_form=json_out)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold must lie in [0, 1], got {threshold}")
    from lymphcad.io.reader import precheck_ct_input

    input = clinical.fetch()  # a DICOMweb series is pulled now: PACS errors show before the model loads
    precheck_ct_input(input, series_uid=series, allow_gaps=allow_gaps)
    import dataclasses

    from lymphcad.cohort import voxel_hash
    from lymphcad.detector.common import resolve_device
    from lymphcad.detector.infer import detect_volume, with_overrides
    from lymphcad.detector.model import load_model
    from lymphcad.detector.plan import plan_warnings
    from lymphcad.io.checks import check_fits_model
    from lymphcad.io.detections import write_detections, write_detections_json, write_provenance

    _threads(threads)
    dev = resolve_device(device)
    loaded = load_model(model, device=dev)
    settings = with_overrides(
        loaded.detect,
        tta_flips=tta,
        threshold=threshold,
        max_detections=max_detections,
        second_stage=second_stage,
    )
    items, info = _inputs(input, series=series, allow_gaps=allow_gaps)
    notice = synthetic_model_notice(loaded.name, loaded.meta, info.get("source"))
    if notice is not None:
        err_console.print(notice, markup=False, highlight=False, soft_wrap=True)
    dets = []
    hashes: dict[str, str] = {}

    def where(case_id: str) -> str:
        return f"{input} (case {case_id})" if "cohort" in info else str(input)

    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("detect", total=len(items))
        for case_id, load in items:
            volume = load()
            check_fits_model(volume, loaded.plan.spacing_mm, where(case_id))
            for w in plan_warnings(volume, loaded.plan):
                err_console.print(f"warning: {case_id}: {w}", markup=False, highlight=False)
            dets.extend(detect_volume(volume, loaded, settings, case_id=case_id))
            hashes[f"{input}#{case_id}" if len(items) > 1 or "cohort" in info else str(input)] = (
                "sha256-voxels:" + voxel_hash(volume.array)
            )
            bar.advance(task)
    write_detections(out, dets)
    if json_out:
        write_detections_json(out.with_suffix(".json"), dets)
    citation = list(info.get("citation", []))
    write_provenance(
        out,
        model_name=loaded.name,
        model_sha256=loaded.fingerprint,
        settings={
            **dataclasses.asdict(settings),
            **second_stage_record(
                requested=settings.second_stage, flag=second_stage, has_fpr=loaded.fpr is not None
            ),
            "device": str(dev),
            "model_path": str(loaded.path),
            "plan": loaded.plan.to_json(),
            "training_data": loaded.meta.get("training_data"),
        },
        inputs=hashes,
        license=info.get("license"),
        citation=citation,
    )
    console.print(
        f"{len(dets)} detection(s) in {len(items)} volume(s), {time.perf_counter() - t0:.1f} s → {out} "
        f"(model {loaded.name})"
    )
    clinical.finish(dets, model_name=loaded.name, model_sha256=loaded.fingerprint)
