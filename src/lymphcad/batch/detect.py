"""``detect`` as a batch: one task per CT, per-case results kept as they finish, resumable, keeps going.

Inputs: see :mod:`lymphcad.batch.inputs` (a CT file, a DICOM folder, a cohort, or a list file).

Each finished case is written to the work folder ``OUT.parts/`` at once (``<case>.csv`` in the detections
format, then its record); the final ``OUT`` is assembled from the parts in case order and written
atomically, so it is the same file whatever executor ran the cases and in whatever order they finished.
A rerun with the same model and settings skips the cases already in ``OUT.parts/``. Cases that fail on
every attempt are listed in ``OUT``'s failures file (``dets.failures.csv``: case, error, attempts) and left
out of ``OUT``; the work folder is kept so that a rerun only retries them. After a run with no failure the
work folder is removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lymphcad import atomic
from lymphcad.batch.engine import (
    BatchAborted,
    BatchProgress,
    BatchReport,
    Executor,
    Failure,
    Outcome,
    PartStore,
    Task,
    fingerprint,
    largest_first,
    path_bytes,
    path_identity,
    prune_empty,
    run_batch,
    write_failures,
)
from lymphcad.batch.inputs import DetectInput, InputSet
from lymphcad.cohort import voxel_hash
from lymphcad.detector.common import resolve_device
from lymphcad.detector.config import DetectConfig, Precision, plain
from lymphcad.detector.infer import detect_volume, with_overrides
from lymphcad.detector.model import LoadedModel, load_model
from lymphcad.detector.plan import plan_warnings
from lymphcad.detector.precision import concrete_precision
from lymphcad.errors import InputError, UsageError
from lymphcad.io.checks import check_fits_model
from lymphcad.io.detections import Detection, read_detections, write_detections, write_detections_json
from lymphcad.io.reader import read_ct_input
from lymphcad.measure.run import MeasureOptions, finish_case, options_for_model


# -- the worker ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseDetections:
    """What a worker returns for one CT."""

    case_id: str
    detections: tuple[Detection, ...]
    voxel_hash: str
    warnings: tuple[str, ...]
    #: why a location is unknown (lymphcad.measure), for the provenance
    notes: tuple[str, ...] = ()


_MODELS: dict[tuple[str | None, str], LoadedModel] = {}


def set_torch_threads(threads: int) -> None:
    """``threads`` intra-op threads for torch in this process, and one inter-op thread: eager inference runs
    no inter-op work, and N workers × their own inter-op pools would only oversubscribe the cores. (The
    inter-op count can be set once per process, before any parallel work: a later call keeps the first.)"""
    torch.set_num_threads(max(1, threads))
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def cached_model(model: str | None, device: torch.device) -> LoadedModel:
    """Load a model once per process and device (the serial run reuses the one the driver loaded)."""
    key = (model, str(device))
    if key not in _MODELS:
        _MODELS[key] = load_model(model, device=device)
    return _MODELS[key]


@dataclass(frozen=True)
class DetectSpec:
    """The worker recipe of a detect batch (picklable): model, device and the settings overrides."""

    model: str | None = None
    device: str = "cpu"
    tta: bool | None = None
    threshold: float | None = None
    max_detections: int | None = None
    second_stage: bool | None = None
    #: lymphcad.measure: raw scores instead of the model's calibration; size/location; label volumes folder
    raw_scores: bool = False
    measure: bool = True
    masks_dir: str | None = None
    #: the network's number format (a Precision value; None = the model's setting, normally "auto")
    precision: str | None = None

    def settings(self, loaded: LoadedModel, measure: MeasureOptions) -> DetectConfig:
        """The model's settings with this run's overrides; ``precision`` is resolved for this run's device
        (never ``auto``), so the run's fingerprint and provenance say what the network computed in.

        With a calibration (``measure``, from :meth:`measure_options`), ``threshold`` is a floor on the
        calibrated probability (applied after it, by :func:`lymphcad.measure.run.finish_case`); the raw peaks
        are then kept down to the lower of it and the model's own threshold, so that no peak whose calibrated
        probability reaches it is lost before.
        """
        threshold = self.threshold
        if threshold is not None and measure.calibration is not None:
            threshold = min(threshold, loaded.detect.threshold)
        requested = loaded.detect.precision if self.precision is None else Precision(self.precision)
        return with_overrides(
            loaded.detect,
            tta_flips=self.tta,
            threshold=threshold,
            max_detections=self.max_detections,
            second_stage=self.second_stage,
            precision=concrete_precision(requested, resolve_device(self.device)),
        )

    def measure_options(self, loaded: LoadedModel) -> MeasureOptions:
        """What lymphcad.measure adds to each case's detections (calibration, size, location, masks)."""
        return options_for_model(
            loaded.path,
            raw_scores=self.raw_scores,
            masks_dir=None if self.masks_dir is None else Path(self.masks_dir),
            measure=self.measure,
            threshold=self.threshold,
        )

    def setup(self, threads: int) -> Callable[[Any], Any]:
        """Load the model on this worker (once) with ``threads`` torch threads."""
        set_torch_threads(threads)
        loaded = cached_model(self.model, resolve_device(self.device))
        measure = self.measure_options(loaded)
        return _CaseDetector(loaded, self.settings(loaded, measure), measure)


@dataclass(frozen=True)
class _CaseDetector:
    loaded: LoadedModel
    settings: DetectConfig
    measure: MeasureOptions

    def __call__(self, item: DetectInput) -> CaseDetections:
        volume = read_ct_input(item.path, series_uid=item.series, allow_gaps=item.allow_gaps)
        check_fits_model(volume, self.loaded.plan.spacing_mm, item.where)
        warnings = tuple(plan_warnings(volume, self.loaded.plan))
        dets = detect_volume(volume, self.loaded, self.settings, case_id=item.case_id)
        finished = finish_case(volume, dets, self.measure)
        return CaseDetections(
            item.case_id,
            tuple(finished.detections),
            "sha256-voxels:" + voxel_hash(volume.array),
            warnings,
            finished.notes,
        )


# -- the driver -----------------------------------------------------------------------------------------
def parts_dir(out: Path) -> Path:
    """The work folder of ``OUT``: ``OUT.parts`` beside it."""
    return out.with_name(out.name + ".parts")


def failures_path(out: Path) -> Path:
    """The failures file of ``OUT``: ``dets.csv`` → ``dets.failures.csv``."""
    return out.with_name(f"{out.stem}.failures.csv")


@dataclass
class DetectBatchResult:
    """What a detect batch did (for the CLI's summary and the provenance)."""

    n_cases: int
    ran: list[str]
    skipped: list[str]
    failures: list[Failure]
    n_detections: int
    input_hashes: dict[str, str]
    seconds: float
    start_seconds: float
    executor: str
    device: str
    loaded: LoadedModel
    settings: DetectConfig
    kept_parts: Path | None
    #: per case that ran: why a location is unknown
    measurement_notes: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: the engine's report (every task's timing, for the benchmarks' timeline)
    report: BatchReport | None = None


def _input_id(item: DetectInput, inputs: InputSet) -> str:
    """The input's identity for resuming: size and time of its files, plus the cohort's content hash."""
    try:
        stat = path_identity(item.path)
    except OSError:
        stat = "missing"
    known = inputs.content_hashes.get(item.case_id)
    read = f"|series:{item.series}|gaps:{item.allow_gaps}"
    return (f"content:{known}|stat:{stat}" if known else f"stat:{stat}") + read


def _merge_parts(store: PartStore, keys: Sequence[str], out: Path) -> int:
    """Write OUT from the finished cases' part files in case order (each part's rows are already sorted,
    so OUT is what one write of all rows gives); returns the number of rows."""
    header: str | None = None
    body: list[str] = []
    for key in sorted(keys):
        lines = store.path(key, ".csv").read_text(encoding="utf-8").splitlines(keepends=True)
        if not lines:
            continue
        if header is None:
            header = lines[0]
        elif lines[0] != header:
            raise InputError(f"the part of case {key} has another header than the others", store.root)
        body.extend(lines[1:])
    if header is None:  # no finished case: the empty table with its header
        write_detections(out, [])
        return 0
    atomic.write_text(out, header + "".join(body))
    return len(body)


def run_detect_batch(
    inputs: InputSet,
    spec: DetectSpec,
    executor: Executor,
    out: Path,
    *,
    retries: int = 1,
    keep_going: bool | None = None,
    json_out: bool = False,
    on_progress: Callable[[BatchProgress], None] | None = None,
    on_message: Callable[[str], None] | None = None,
    notice: Callable[[LoadedModel], str | None] | None = None,
) -> DetectBatchResult:
    """Run detection on every input (see the module docstring); returns what was done.

    ``keep_going`` None = on for several inputs, off for one. The model is loaded here once on the CPU to
    check it and fingerprint the run (model hash + settings) before any worker starts.
    """
    if retries < 0:
        raise UsageError(f"--retries must be >= 0, got {retries}")
    keep = inputs.multi if keep_going is None else keep_going
    loaded = cached_model(spec.model, torch.device("cpu"))
    measure = spec.measure_options(loaded)
    settings = spec.settings(loaded, measure)
    # every worker computes in the format resolved here (a cluster's nodes may differ in what is native)
    spec = dataclasses.replace(spec, precision=settings.precision.value)
    run_fp = fingerprint(
        {
            "job": "detect",
            "model": loaded.fingerprint,
            "settings": plain(dataclasses.asdict(settings)),
            "measurement": {
                "measure": spec.measure,
                "masks": spec.masks_dir,
                "calibration": None
                if measure.calibration is None
                else [measure.calibration.to_json()[k] for k in ("method", "x", "y", "temperature")],
                "min_probability": measure.min_probability,
            },
        }
    )
    store = PartStore(parts_dir(out), run_fp)
    store.create()
    say = on_message or (lambda _m: None)
    line = notice(loaded) if notice is not None else None
    if line:
        say(line)

    ids = {it.case_id: _input_id(it, inputs) for it in inputs.items}
    by_case = {it.case_id: it for it in inputs.items}
    hashes: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    skipped: list[str] = []
    tasks: list[Task] = []
    for it in inputs.items:
        rec = store.record(it.case_id, ids[it.case_id])
        if rec is not None:
            skipped.append(it.case_id)
            hashes[it.label] = str(rec.get("voxel_hash", ""))
        else:
            tasks.append(Task(it.case_id, it))
    if executor.capacity > 1:  # several workers: the largest cases first (a serial run keeps case order)
        tasks = largest_first(tasks, lambda t: path_bytes(t.payload.path))
    if skipped:
        say(f"resuming: {len(skipped)} case(s) already done in {store.root}, {len(tasks)} to run")

    def on_result(outcome: Outcome) -> None:
        res: CaseDetections = outcome.result
        for w in res.warnings:
            say(f"warning: {res.case_id}: {w}")
        part = store.path(res.case_id, ".csv")
        write_detections(part, res.detections, measurements=True)  # one header for every part
        if res.notes:
            notes[res.case_id] = list(res.notes)
        store.commit(
            res.case_id,
            ids[res.case_id],
            [part.name],
            {
                "voxel_hash": res.voxel_hash,
                "n_detections": len(res.detections),
                "seconds": round(outcome.seconds, 3),
                "worker": outcome.worker,
            },
        )
        hashes[by_case[res.case_id].label] = res.voxel_hash

    def on_failure(f: Failure) -> None:
        say(f"FAILED {f.key} after {f.attempts} attempt(s): {f.error}")

    try:
        report = run_batch(
            tasks,
            spec,
            executor,
            on_result=on_result,
            retries=retries,
            keep_going=keep,
            skipped=len(skipped),
            on_progress=on_progress,
            on_failure=on_failure,
        )
    except BaseException as exc:
        prune_empty(store.root)
        if not isinstance(exc, BatchAborted):
            raise
        raise BatchAborted(
            f"{exc.problem}; the finished cases are kept in {store.root} and a rerun resumes "
            "(--keep-going runs the other cases)"
        ) from None
    done = set(skipped) | set(report.done)
    finished = [it.case_id for it in inputs.items if it.case_id in done]
    n_dets = _merge_parts(store, finished, out)
    if json_out:
        write_detections_json(out.with_suffix(".json"), read_detections(out).rows())
    fail_file = failures_path(out)
    if report.failures:
        write_failures(fail_file, report.failures)
        kept: Path | None = store.root
    else:
        if fail_file.is_file():
            fail_file.unlink()  # an earlier run's failures are fixed now
        store.remove((".csv",))
        kept = None
    return DetectBatchResult(
        n_cases=len(inputs.items),
        ran=report.done,
        skipped=skipped,
        failures=report.failures,
        n_detections=n_dets,
        input_hashes={it.label: hashes[it.label] for it in inputs.items if it.label in hashes},
        seconds=report.seconds,
        start_seconds=report.start_seconds,
        executor=report.executor or executor.describe(),
        device=str(resolve_device(spec.device)),
        loaded=loaded,
        settings=settings,
        kept_parts=kept,
        measurement_notes=notes,
        report=report,
    )
