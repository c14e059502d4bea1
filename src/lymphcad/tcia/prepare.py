"""``lymphcad prepare``: a CT Lymph Nodes download + its annotation archives → a cohort (formats.md §2).

Per patient (in parallel over patients with the batch engine, :mod:`lymphcad.batch`: local processes
forked from a forkserver that has imported lymphcad once, or Ray actors; a failing patient is retried and
then listed in ``extra/prepare/failures.csv``):

1. **CT series** (spec §2.5): the patient's folders are found by reading the ``PatientID`` of one file per
   folder, so every layout of spec §2 works (retriever "descriptive", classic UID folders, tcia-utils flat
   folders). Folders whose files are not CT (the 2023 DICOM SEG series) are ignored; among several CT
   series the one with the most files is taken. The series is read with the foundation reader
   (:func:`lymphcad.io.dicom.stream_dicom_series`: geometric slice sort, rescale to HU) and written as
   ``images/<PatientID>.nii.gz`` (int16): a second thread deflates each slab of slices while the next one
   is read, and the content hash is computed on the same slabs (the file is the one ``write_ct`` writes).
2. **Centroids** → annotations.csv in world LPS mm, computed from ``_indices.txt`` and the image geometry
   (``p = O + D·diag(s)·ijk``), and cross-checked against ``_physicalPoints.txt``: the index base that
   fits (0 or 1, per axis) is detected on the data, not assumed (spec §3.1 self-check), and every node
   whose two positions disagree by more than 0.05 mm is reported. Sizes come from ``_sizes.txt`` (MED: short
   axis; ABD: short, long; the order is checked: col 1 ≤ col 2). The region comes from the id prefix.
3. **Masks** → ``labels/<PatientID>.nii.gz``: the grid is compared with the CT (size, origin, spacing,
   direction; a mismatch is reported and the mask is not used), ids are relabelled to consecutive 1..N
   (the original ids are recorded), and ``label_id`` of each node is the relabelled id under its centre.
4. **Candidates** → ``candidates.csv`` in the detections format (formats.md §3) with probability 1.0 for
   every candidate (pos and neg: the generator's output is the union; its pos/neg labels are kept in
   ``extra/candidate_labels.csv``), so the NIH candidate generator can be evaluated like any detector
   (its FROC collapses to a single operating point: sensitivity at ~40 FP/volume).

A per-case record ``extra/prepare/<case>.json`` is written last; a case whose record and image exist and
whose inputs are unchanged is skipped on the next run. A patient that fails is reported and skipped.
``dataset.json`` (licence, citations, ``case_regions``, ``content_hashes``) is written at the end.

The per-patient steps (1–3 and the record) are :mod:`lymphcad.tcia.prepare_case`; this module runs them
over a download and writes the cohort's shared files (4, ``dataset.json``, the summary).
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from lymphcad import __version__, atomic, citations
from lymphcad.batch.engine import Failure, Task, run_batch, write_failures
from lymphcad.batch.executors import make_executor, usable_cpus
from lymphcad.cohort import Annotation, CohortWriter, DatasetInfo
from lymphcad.errors import InputError
from lymphcad.tcia import COLLECTION
from lymphcad.tcia.archives import (
    CANDIDATE_RE,
    CENTROID_RE,
    PatientCentroids,
    Source,
    mask_entries,
    read_candidates,
    read_centroids,
    unknown_entries,
)

if TYPE_CHECKING:
    pass

from lymphcad.tcia.prepare_case import (
    DISAGREE_MM,
    CaseJob,
    CaseResult,
    ConvertSpec,
    case_signature,
    discover,
    record_path,
    region_of,
)


# -- the whole run ------------------------------------------------------------------------------------
@dataclass
class PrepareOptions:
    """Settings of one prepare run."""

    raw: Path
    annotations: Path
    out: Path
    masks: Path | None = None
    candidates: Path | None = None
    workers: int = 1
    patients: Sequence[str] = ()
    #: deflate threads per worker; None = the usable CPUs shared out among the workers (at least 1)
    deflate_threads: int | None = None
    #: Ray instead of local processes: None = no, "" = a local Ray, "auto" or an address = a cluster
    ray: str | None = None
    #: extra attempts for a patient that fails (then it is listed in extra/prepare/failures.csv)
    retries: int = 1
    #: resample series with missing slices or uneven spacing (gaps up to the reader's cap), with a warning
    allow_gaps: bool = False


def auto_deflate_threads(workers: int, cpus: int | None = None) -> int:
    """Deflate threads per worker so that the workers' threads together fill the CPUs, never fewer than 1.

    Deflating the .nii.gz costs ~2.5× decoding the DICOM files (benchmarks/results/prepare.json), so a worker
    left alone on a machine deflates on the spare cores instead of leaving them idle.
    """
    n = usable_cpus() if cpus is None else cpus
    return max(1, n // max(1, workers))


@dataclass
class PrepareReport:
    """Outcome of a run (also written to extra/prepare-report.json)."""

    cases: dict[str, CaseResult] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    #: how the conversion ran (worker processes, deflate threads per worker)
    settings: dict[str, int] = field(default_factory=dict)
    #: the executor that ran the conversions (serial, local processes, Ray)
    executor: str = "serial"

    def summary_lines(self) -> list[str]:
        """Human-readable lines for the console (no PHI: ids, counts and geometry only)."""
        s = self.summary
        lines = [
            f"{s.get('n_cases', 0)} case(s) in the cohort ({s.get('converted', 0)} converted, {s.get('skipped', 0)} "
            f"already done, {len(self.failed)} failed); {s.get('n_nodes', 0)} centroid(s)",
        ]
        if s.get("mb_per_s") is not None:
            lines.append(
                f"throughput: {s['dicom_mb']:.1f} MB of DICOM in {self.seconds:.1f} s = {s['mb_per_s']:.1f} MB/s "
                f"({s.get('workers', 1)} worker(s) x {s.get('deflate_threads', 1)} deflate thread(s))"
            )
        ib = s.get("index_base", {})
        if ib:
            lines.append(
                "index base self-check (spec §3.1): "
                + ", ".join(f"{k}: {v} case(s)" for k, v in sorted(ib.items()))
            )
        lines.append(
            f"physicalPoints vs indices: max disagreement {s.get('max_disagreement_mm', 0.0):.4f} mm; "
            f"{s.get('nodes_over_0.05mm', 0)} node(s) over {DISAGREE_MM} mm"
        )
        m = s.get("masks", {})
        if m:
            lines.append(
                f"masks: {m.get('written', 0)} written, {m.get('grid_mismatch', 0)} grid mismatch(es), "
                f"{m.get('non_consecutive_ids', 0)} with non-consecutive ids (relabelled), "
                f"instances per region {m.get('instances_per_region', {})}, dtypes {m.get('dtypes', {})}"
            )
        so = s.get("sizes_short_le_long")
        if so:
            lines.append(
                f"ABD sizes column 1 ≤ column 2 on {so['rows'] - so['violations']} of {so['rows']} rows"
            )
        if s.get("candidates"):
            lines.append(f"candidates.csv: {s['candidates']} candidate(s) at probability 1.0")
        for case, err in sorted(self.failed.items()):
            lines.append(f"FAILED {case}: {err}")
        lines.append(
            f"licence: {citations.CT_LYMPH_NODES_LICENSE}; cite: {citations.CT_LYMPH_NODES_DATA_CITATION}"
        )
        return lines


def _load_record(out: Path, case_id: str, signature: str) -> CaseResult | None:
    path = record_path(out, case_id)
    if not path.is_file() or not (out / "images" / f"{case_id}.nii.gz").is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rec = CaseResult(**data)
    except (OSError, ValueError, TypeError):
        return None
    if rec.signature != signature or rec.status != "converted":
        return None
    rec.status = "skipped"
    return rec


def prepare(
    opts: PrepareOptions,
    *,
    on_case: Callable[[str, str, int], None] | None = None,
) -> PrepareReport:
    """Run the conversion (see the module docstring)."""
    t0 = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    report = PrepareReport()
    with Source.open(opts.annotations) as ann:
        centroids = read_centroids(ann)
        unknown_ann = unknown_entries(ann, (CENTROID_RE,))
    masks: dict[str, str] = {}
    if opts.masks is not None:
        with Source.open(opts.masks) as msrc:
            masks = mask_entries(msrc)
    cands: dict[str, dict[str, NDArray[np.float64]]] = {}
    unknown_cand: list[str] = []
    if opts.candidates is not None:
        with Source.open(opts.candidates) as csrc:
            cands = read_candidates(csrc)
            unknown_cand = unknown_entries(csrc, (CANDIDATE_RE,))
    found = discover(Path(opts.raw))
    if not found:
        raise InputError("no DICOM files with a PatientID found", opts.raw)
    case_ids = sorted(found)
    if opts.patients:
        missing = sorted(set(opts.patients) - set(found))
        if missing:
            raise InputError(f"patient(s) not found in the download: {', '.join(missing[:5])}", opts.raw)
        case_ids = sorted(set(opts.patients))
    n_workers = max(1, min(opts.workers, len(case_ids)))
    threads = opts.deflate_threads if opts.deflate_threads is not None else auto_deflate_threads(n_workers)
    report.settings = {"workers": n_workers, "deflate_threads": threads, "allow_gaps": opts.allow_gaps}
    jobs: list[CaseJob] = []
    for cid in case_ids:
        mask = (Path(opts.masks), masks[cid]) if opts.masks is not None and cid in masks else None
        sig = case_signature(found[cid], centroids.get(cid), mask, allow_gaps=opts.allow_gaps)
        jobs.append(
            CaseJob(
                cid,
                found[cid],
                out,
                centroids.get(cid),
                mask[0] if mask else None,
                mask[1] if mask else None,
                sig,
                threads,
                opts.allow_gaps,
            )
        )
    total = len(jobs)
    todo: list[CaseJob] = []
    for job in jobs:
        rec = _load_record(out, job.case_id, job.signature)
        if rec is not None:
            report.cases[job.case_id] = rec
            if on_case:
                on_case(job.case_id, "skipped", total)
        else:
            todo.append(job)

    def _done(res: CaseResult) -> None:
        if res.status == "failed":
            report.failed[res.case_id] = res.error
        else:
            report.cases[res.case_id] = res
        if on_case:
            on_case(res.case_id, res.status if res.status != "failed" else f"FAILED ({res.error})", total)

    def _failed(f: Failure) -> None:
        _done(CaseResult(f.key, "failed", error=f"{f.error} (after {f.attempts} attempt(s))"))

    # the batch engine: serial, local processes (forkserver: one server imports lymphcad once and forks the
    # workers, which start without re-importing numpy/pydicom/nibabel, about 1 CPU-s each) or Ray actors
    executor = make_executor(
        workers=opts.workers if len(todo) > 1 else 1,
        ray=opts.ray,
        threads=threads,
        preload=("lymphcad.tcia.prepare", "lymphcad.io.dicom", "lymphcad.io.nifti"),
    )
    batch = run_batch(
        [Task(job.case_id, job) for job in todo],
        ConvertSpec(),
        executor,
        on_result=lambda outcome: _done(outcome.result),
        retries=opts.retries,
        keep_going=True,
        skipped=total - len(todo),
        on_failure=_failed,
    )
    if batch.executor:
        report.executor = batch.executor
    fail_file = out / "extra" / "prepare" / "failures.csv"
    if batch.failures:
        write_failures(fail_file, batch.failures)
    elif fail_file.is_file():
        fail_file.unlink()
    report.seconds = time.perf_counter() - t0
    _finish(opts, out, report, cands, unknown_ann, unknown_cand, centroids)
    return report


def _finish(
    opts: PrepareOptions,
    out: Path,
    report: PrepareReport,
    cands: dict[str, dict[str, NDArray[np.float64]]],
    unknown_ann: list[str],
    unknown_cand: list[str],
    centroids: dict[str, PatientCentroids],
) -> None:
    from lymphcad.io.detections import Detection, write_detections, write_provenance

    cases = sorted(report.cases)
    annotations: list[Annotation] = []
    for cid in cases:
        for row in report.cases[cid].annotations:
            annotations.append(
                Annotation(
                    cid,
                    int(row["node_id"]),
                    tuple(row["center_xyz"]),
                    row["short_axis_mm"],
                    row["long_axis_mm"],
                    row["region"],
                    row["label_id"],
                )
            )
    case_regions = {c: region_of(c) or "both" for c in cases}
    hashes = {c: report.cases[c].content_hash for c in cases}
    summary = _summarise(report, case_regions)
    summary.update(report.settings)
    summary["unknown_files_ignored"] = {"annotations": len(unknown_ann), "candidates": len(unknown_cand)}
    summary["patients_without_annotations"] = sorted(c for c in cases if c not in centroids)
    if not opts.patients:
        summary["annotation_patients_without_ct"] = sorted(
            set(centroids) - set(report.cases) - set(report.failed)
        )
    by_hash: dict[str, list[str]] = defaultdict(list)
    for c, h in hashes.items():
        by_hash[h].append(c)
    summary["duplicate_volumes"] = sorted(sorted(v) for v in by_hash.values() if len(v) > 1)
    report.summary = summary
    writer = CohortWriter(out)
    if cands:
        dets = []
        label_rows = []
        for cid in cases:
            for kind in ("pos", "neg"):
                for p in cands.get(cid, {}).get(kind, np.zeros((0, 3))):
                    dets.append(Detection(cid, (float(p[0]), float(p[1]), float(p[2])), 1.0, None))
                    label_rows.append((cid, *(f"{v:.3f}" for v in p), kind))
        write_detections(out / "candidates.csv", dets)
        write_provenance(
            out / "candidates.csv",
            model_name="NIH CADe candidate generator (MED_ABD_LYMPH_CANDIDATES, pos + neg)",
            model_sha256=None,
            settings={"probability": "1.0 for every candidate (the archive carries no scores)"},
            inputs={str(opts.candidates): "archive"},
            license=citations.CT_LYMPH_NODES_LICENSE,
            citation=list(citations.CT_LYMPH_NODES_CITATIONS),
        )
        with atomic.atomic_open(writer.extra_dir() / "candidate_labels.csv") as fh:
            fh.write("case_id,coordX,coordY,coordZ,label\n")
            for r in sorted(label_rows):
                fh.write(",".join(str(x) for x in r) + "\n")
        summary["candidates"] = len(dets)
    info = DatasetInfo(
        name="ct-lymph-nodes",
        description=(
            "TCIA CT Lymph Nodes: contrast-enhanced CT with radiologist centroids (annotations.csv), "
            "sparse instance masks (labels/, Seff et al. 2015) and the NIH candidates (candidates.csv)"
        ),
        cases=cases,
        case_regions=case_regions,
        license=citations.CT_LYMPH_NODES_LICENSE,
        citation=list(citations.CT_LYMPH_NODES_CITATIONS),
        source=citations.CT_LYMPH_NODES_SOURCE,
        content_hashes=hashes,
        extra={
            "data_usage_policy": citations.TCIA_DATA_USAGE_POLICY,
            "collection": COLLECTION,
            "prepared_by": f"lymphcad {__version__} prepare",
            "prepared_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "self_checks": {k: v for k, v in summary.items() if k not in ("converted", "skipped")},
        },
    )
    writer.finish(info, annotations)
    atomic.write_json(
        writer.extra_dir() / "prepare-report.json",
        {
            "summary": summary,
            "failed": report.failed,
            "cases": {
                c: {"checks": r.checks, "seconds": round(r.seconds, 3), "status": r.status}
                for c, r in sorted(report.cases.items())
            },
        },
    )
    tmp = out / "extra" / ".tmp"
    if tmp.is_dir():
        for p in tmp.iterdir():
            p.unlink(missing_ok=True)
        tmp.rmdir()


def _summarise(report: PrepareReport, case_regions: dict[str, str]) -> dict[str, Any]:
    s: dict[str, Any] = {
        "n_cases": len(report.cases),
        "converted": sum(1 for r in report.cases.values() if r.status == "converted"),
        "skipped": sum(1 for r in report.cases.values() if r.status == "skipped"),
        "failed": sorted(report.failed),
        "n_nodes": sum(len(r.annotations) for r in report.cases.values()),
    }
    converted = [r for r in report.cases.values() if r.status == "converted"]
    mb = sum(r.dicom_bytes for r in converted) / 1e6
    s["dicom_mb"] = mb
    s["mb_per_s"] = (mb / report.seconds) if converted and report.seconds > 0 else None
    bases: Counter[str] = Counter()
    max_dis = 0.0
    over = 0
    over_cases: dict[str, list[int]] = {}
    order = {"rows": 0, "violations": 0}
    masks = {"written": 0, "grid_mismatch": 0, "non_consecutive_ids": 0}
    mismatch_cases: dict[str, list[str]] = {}
    inst: Counter[str] = Counter()
    dtypes: Counter[str] = Counter()
    for cid, r in sorted(report.cases.items()):
        c = r.checks.get("centroids", {})
        if "index_base" in c:
            bases[c["index_base"]] += 1
            max_dis = max(max_dis, float(c.get("max_disagreement_mm", 0.0)))
            if c.get("nodes_over_0.05mm"):
                over += len(c["nodes_over_0.05mm"])
                over_cases[cid] = c["nodes_over_0.05mm"]
        so = r.checks.get("sizes_short_le_long")
        if so:
            order["rows"] += so["rows"]
            order["violations"] += so["violations"]
        m = r.checks.get("mask", {})
        if m.get("present"):
            dtypes[m.get("dtype_on_disk", "?")] += 1
            if not m.get("grid_matches_ct", True):
                masks["grid_mismatch"] += 1
                mismatch_cases[cid] = m.get("grid_differences", [])
            elif "n_instances" in m:
                masks["written"] += 1
                inst[case_regions.get(cid, "")] += int(m["n_instances"])
                if not m.get("ids_consecutive", True):
                    masks["non_consecutive_ids"] += 1
    s["index_base"] = dict(bases)
    s["max_disagreement_mm"] = max_dis
    s["nodes_over_0.05mm"] = over
    if over_cases:
        s["disagreeing_nodes"] = over_cases
    if order["rows"]:
        s["sizes_short_le_long"] = order
    masks_out: dict[str, Any] = dict(masks)
    masks_out["instances_per_region"] = dict(sorted(inst.items()))
    masks_out["dtypes"] = dict(dtypes)
    if mismatch_cases:
        masks_out["grid_mismatch_cases"] = mismatch_cases
    s["masks"] = masks_out
    return s
