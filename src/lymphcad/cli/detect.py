"""Detector commands: ``train`` and ``detect``. Thin: arguments are checked here, the work is in
:mod:`lymphcad.detector`."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import typer

from lymphcad.cli._common import app, batch_progress, console, err_console, progress
from lymphcad.cli._detect_support import second_stage_record, synthetic_model_notice
from lymphcad.cli._guards import (
    check_detections_output,
    check_device_name,
    check_input,
    check_output_dir,
)
from lymphcad.cli.clinical import clinical_options
from lymphcad.detector.config import Precision, plain
from lymphcad.errors import InputError, UsageError

#: a file for the timeline of a detect batch (each task's worker, start, wall and CPU seconds; the command's
#: steps): written by the benchmarks' runs to show where the time goes (docs/scaling.md)
TIMELINE_ENV = "LYMPHCAD_BATCH_TIMELINE"


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
    from lymphcad.cohort import TruthMode
    from lymphcad.detector.train import train

    TruthMode.parse(truth)
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

    from lymphcad.cohort import TruthMode
    from lymphcad.detector.fpr import FPRConfig
    from lymphcad.detector.fpr_train import train_fpr

    TruthMode.parse(truth)
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


@app.command("detect")
def detect_cmd(
    input: Path | None = typer.Argument(
        None,
        help="A CT file (NIfTI, NRRD, MHA), a DICOM folder, a cohort folder or a .txt list of CTs (one a "
        "line); none with --dicomweb.",
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
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for torch per worker (default: the cores shared among workers)."
    ),
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Flip test-time augmentation (default: the model's setting)."
    ),
    precision: Precision | None = typer.Option(
        None,
        "--precision",
        case_sensitive=False,
        help="The network's number format: auto (bfloat16 where the CPU or GPU computes it natively, else "
        "float32; float16 on older GPUs), float32, bfloat16, float16 (CUDA only). Default: the model's (auto).",
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
    workers: int = typer.Option(
        1, "--workers", min=1, max=1024, help="Cases in parallel: local processes (or Ray actors with --ray)."
    ),
    ray: str | None = typer.Option(
        None,
        "--ray",
        help="Run on Ray: alone (or 'local') starts and stops a local Ray; 'auto' or HOST:PORT joins a cluster.",
    ),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="GPUs per Ray worker (with --ray)."),
    retries: int = typer.Option(1, "--retries", min=0, max=100, help="Extra attempts for a failing case."),
    keep_going: bool | None = typer.Option(
        None,
        "--keep-going/--fail-fast",
        help="After a case fails for good, run the others (default for cohorts and lists) or stop.",
    ),
    masks: Path | None = typer.Option(
        None, "--masks", help="Folder for a label volume per case (<case>.nii.gz; label n = detection d<n>)."
    ),
    raw_scores: bool = typer.Option(
        False,
        "--raw-scores",
        help="Report the detector's raw scores, not the model's calibrated probability.",
    ),
    measure: bool = typer.Option(
        True, "--measure/--no-measure", help="Segment, measure (RECIST, volume) and locate each detection."
    ),
) -> None:
    """Find lymph nodes: centres (world LPS mm), probability and diameter, one CSV row per detection
    (docs/formats.md).

    Several CTs run as a batch: each finished case is kept in OUT.parts/ at once, so a rerun after Ctrl-C
    or a crash only runs the missing cases; a case that fails is listed in OUT's .failures.csv.
    """
    from lymphcad.batch.inputs import collect_inputs

    # checked before torch and the model load (seconds): a wrong argument fails at once, nothing is lost
    check_device_name(device)
    if precision is Precision.FLOAT16 and not device.startswith("cuda"):
        import torch  # only for this combination: does "auto" find a GPU?

        if device == "cpu" or not torch.cuda.is_available():
            raise UsageError("--precision float16 needs a CUDA device; use bfloat16 or float32 on a CPU")
    clinical = clinical_options(
        input, out=out, sr=sr, seg=seg, sr_threshold=sr_threshold, dicomweb=dicomweb, study=study,
        series=series, store=store, user=user, password_file=password_file, token_file=token_file,
    )  # fmt: skip
    check_detections_output(out, inputs=clinical.inputs, json_form=json_out)
    if masks is not None:
        check_output_dir(masks, "--masks", inputs=clinical.inputs)
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold must lie in [0, 1], got {threshold}")
    from lymphcad.io.reader import precheck_ct_input

    input = clinical.fetch()  # a DICOMweb series is pulled now: PACS errors show before the model loads
    inputs = collect_inputs(input, series=series, allow_gaps=allow_gaps)
    if inputs.listed:  # a list's entries are checked as they run: a bad one fails its case only
        check_detections_output(out, inputs=[Path(it.path) for it in inputs.items], json_form=json_out)
    else:
        precheck_ct_input(input, series_uid=series, allow_gaps=allow_gaps)
    import dataclasses

    from lymphcad.batch.engine import write_timeline
    from lymphcad.batch.executors import make_executor

    # the workers (forkserver or Ray actors) start importing torch and lymphcad now, on the other cores,
    # while this process does the same imports, checks the model and scans the inputs
    executor = make_executor(
        workers=workers,
        ray=None if ray is None else ("" if ray == "local" else ray),
        threads=threads,
        gpus_per_worker=gpus_per_worker,
        preload=("lymphcad.batch.detect",),
    )
    marks = {"command": time.time()}
    try:
        executor.warm_up()
        marks["warm_up"] = time.time()
        from lymphcad.batch.detect import DetectSpec, failures_path, run_detect_batch
        from lymphcad.io.detections import read_detections, write_provenance
        from lymphcad.measure.run import provenance as measurement_provenance

        marks["imported"] = time.time()
        _setup_logging()
        spec = DetectSpec(
            model,
            device,
            tta,
            threshold,
            max_detections,
            second_stage,
            raw_scores=raw_scores,
            measure=measure,
            masks_dir=None if masks is None else str(masks),
            precision=None if precision is None else precision.value,
        )
        batch_inputs = inputs

        def say(message: str) -> None:
            err_console.print(message, markup=False, highlight=False, soft_wrap=True)

        with batch_progress("detect") as on_progress:
            res = run_detect_batch(
                batch_inputs,
                spec,
                executor,
                out,
                retries=retries,
                keep_going=keep_going,
                json_out=json_out,
                on_progress=on_progress,
                on_message=say,
                notice=lambda m: synthetic_model_notice(m.name, m.meta, batch_inputs.source),
            )
    finally:
        executor.close()
    marks["merged"] = time.time()
    timeline = os.environ.get(TIMELINE_ENV)
    if timeline and res.report is not None:
        write_timeline(Path(timeline), res.report, marks, executor)
    loaded, settings = res.loaded, res.settings
    write_provenance(
        out,
        model_name=loaded.name,
        model_sha256=loaded.fingerprint,
        settings={
            **plain(dataclasses.asdict(settings)),
            **second_stage_record(
                requested=settings.second_stage, flag=second_stage, has_fpr=loaded.fpr is not None
            ),
            "device": res.device,
            "model_path": str(loaded.path),
            "plan": loaded.plan.to_json(),
            "training_data": loaded.meta.get("training_data"),
            "executor": res.executor,
            "measurement": {
                **measurement_provenance(spec.measure_options(loaded)),
                "notes": res.measurement_notes,
            },
        },
        inputs=res.input_hashes,
        license=inputs.license,
        citation=list(inputs.citation),
    )
    done = len(res.ran) + len(res.skipped)
    resumed = f" ({len(res.skipped)} from an earlier run)" if res.skipped else ""
    started = f" (+{res.start_seconds:.1f} s starting it)" if res.start_seconds >= 0.1 else ""
    console.print(
        f"{res.n_detections} detection(s) in {done} volume(s){resumed}, {res.seconds:.1f} s on "
        f"{res.executor}{started} → {out} (model {loaded.name})"
    )
    dets = read_detections(out).rows() if clinical.wants_dicom else []
    clinical.finish(dets, model_name=loaded.name, model_sha256=loaded.fingerprint, masks_dir=masks)
    if res.failures:
        raise InputError(
            f"{len(res.failures)} of {res.n_cases} case(s) failed (listed in {failures_path(out)}); "
            f"the others are in {out}; rerun the same command to retry only the failed ones"
        )
