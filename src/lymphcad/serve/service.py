"""The review session behind the web app: cohort, ranked findings, the review log, volumes and export."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lymphcad.cohort import Annotation, Cohort, open_cohort
from lymphcad.errors import InputError, LymphcadError
from lymphcad.geometry import Geometry
from lymphcad.hashing import file_sha256
from lymphcad.io.detections import (
    Detection,
    DetectionTable,
    read_detections,
    read_provenance,
    write_detections,
    write_provenance,
)
from lymphcad.serve.cases import (
    MAX_VOXELS,
    DisplayVolume,
    Finding,
    VolumeCache,
    display_geometry,
    make_display_volume,
    rank_findings,
)
from lymphcad.serve.models import (
    CaseOut,
    CaseState,
    CaseSummary,
    CohortOut,
    DecisionIn,
    ExportOut,
    FindingOut,
    Status,
    TruthOut,
)
from lymphcad.serve.store import Action, FindingDecision, ReviewStore, reviewed

REVIEW_LOG: Final = "review.csv"
REVIEWED_DETECTIONS: Final = "reviewed_dets.csv"
#: review.csv rows must name the detection they were made on (coordinates are written with 3 decimals)
_SAME_POINT_MM: Final = 0.01


class ReviewConflict(LymphcadError):
    """A decision that cannot apply to the case's current state (e.g. undo with nothing to undo)."""


@dataclass(frozen=True)
class ReviewSettings:
    """How a review session was launched."""

    cohort_dir: Path
    detections: Path | None
    out_dir: Path
    reader: str = "reader"
    threshold: float = 0.5
    max_voxels: int = MAX_VOXELS
    #: folder holding one DICOM series folder per case (named by case id): export adds a DICOM SR per case
    dicom_dir: Path | None = None


class ReviewService:
    """One review session: reads the cohort and detections once; every decision goes to the review log."""

    def __init__(self, settings: ReviewSettings) -> None:
        self.settings = settings
        self.cohort: Cohort = open_cohort(settings.cohort_dir)
        cases = self.cohort.info.cases
        self.table = (
            DetectionTable.from_detections([])
            if settings.detections is None
            else read_detections(settings.detections, known_cases=cases)
        )
        self.findings = rank_findings(self.table)
        out = settings.out_dir
        if (
            settings.detections is not None
            and (out / REVIEWED_DETECTIONS).resolve() == settings.detections.resolve()
        ):
            raise InputError(
                "the review output would overwrite the detections being reviewed", settings.detections
            )
        self.store = ReviewStore(out / REVIEW_LOG, known_cases=cases)
        self._check_log_matches()
        self._display: dict[str, tuple[Geometry, int]] = {
            c: display_geometry(self.cohort.geometries[c], max_voxels=settings.max_voxels) for c in cases
        }
        self.volumes = VolumeCache(self._load_volume)
        self._export_lock = threading.Lock()

    def prefetch_first(self) -> None:
        """Start reading the first case still to review (a launch's first view does not wait for it)."""
        todo = [c for c in self.cases if self.summary(c).status != "done"]
        if todo or self.cases:
            self.volumes.prefetch((todo or self.cases)[0])

    # -- reading ----------------------------------------------------------------------------------
    @property
    def cases(self) -> list[str]:
        """Case ids in canonical order."""
        return self.cohort.cases

    def has_case(self, case_id: str) -> bool:
        """Whether ``case_id`` names a case of the cohort (the only ids any route accepts)."""
        return case_id in self._display

    def _load_volume(self, case_id: str) -> DisplayVolume:
        return make_display_volume(self.cohort.read_image(case_id), max_voxels=self.settings.max_voxels)

    def _check_log_matches(self) -> None:
        for row in self.store.rows():
            if row.finding_id[0] != "d":
                continue
            found = {f.finding_id: f for f in self.findings.get(row.case_id, ())}.get(row.finding_id)
            far = (
                found is None
                or max(abs(a - b) for a, b in zip(found.center_xyz, row.center_xyz, strict=True))
                > _SAME_POINT_MM
            )
            if far:
                raise InputError(
                    f"{row.case_id} {row.finding_id} does not match the detections under review "
                    "(the review log was made with another detections CSV; choose another --out)",
                    self.store.path,
                )

    def _to_zyx(self, case_id: str, xyz: tuple[float, float, float]) -> tuple[float, float, float]:
        z, y, x = self._display[case_id][0].world_to_zyx(xyz)
        return (float(z), float(y), float(x))

    def _decisions(self, case_id: str) -> dict[str, FindingDecision]:
        return reviewed(self.store.rows(case_id))

    def summary(self, case_id: str) -> CaseSummary:
        """The case list row of one case."""
        decisions = self._decisions(case_id)
        found = self.findings.get(case_id, ())
        above = [f for f in found if f.probability >= self.settings.threshold]
        n_reviewed = sum(f.finding_id in decisions for f in above)
        n_added = sum(
            1 for d in decisions.values() if d.finding_id[0] == "a" and d.decision is not Action.REJECT
        )
        status: Status = "new" if not decisions else ("done" if n_reviewed == len(above) else "in progress")
        return CaseSummary(
            case_id=case_id,
            region=self.cohort.region_of(case_id),
            n_detections=len(found),
            n_above=len(above),
            n_truth=len(self.cohort.annotations_for(case_id)),
            n_reviewed=n_reviewed,
            n_added=n_added,
            status=status,
        )

    def cohort_out(self) -> CohortOut:
        """The cohort page: terms of use, settings, case list."""
        info = self.cohort.info
        return CohortOut(
            name=info.name,
            source=info.source,
            license=info.license,
            citation=list(info.citation),
            threshold=self.settings.threshold,
            reader=self.settings.reader,
            detections=None if self.settings.detections is None else self.settings.detections.name,
            review_log=str(self.store.path),
            cases=[self.summary(c) for c in self.cases],
        )

    def _finding_out(self, case_id: str, f: Finding, d: FindingDecision | None) -> FindingOut:
        return FindingOut(
            finding_id=f.finding_id,
            kind="detection",
            center_xyz=f.center_xyz,
            center_zyx=self._to_zyx(case_id, f.center_xyz),
            probability=f.probability,
            diameter_mm=f.diameter_mm,
            decision=None if d is None else d.decision.value,  # type: ignore[arg-type]
            reader="" if d is None else d.reader,
            time="" if d is None else d.time,
        )

    def state(self, case_id: str) -> CaseState:
        """Findings (detections by rank, then added ones) with their standing decisions."""
        decisions = self._decisions(case_id)
        out = [
            self._finding_out(case_id, f, decisions.get(f.finding_id)) for f in self.findings.get(case_id, ())
        ]
        added = sorted(
            (d for d in decisions.values() if d.finding_id[0] == "a"), key=lambda d: int(d.finding_id[1:])
        )
        for d in added:
            out.append(
                FindingOut(
                    finding_id=d.finding_id,
                    kind="added",
                    center_xyz=d.center_xyz,
                    center_zyx=self._to_zyx(case_id, d.center_xyz),
                    probability=None,
                    diameter_mm=d.diameter_mm,
                    decision=d.decision.value,  # type: ignore[arg-type]
                    reader=d.reader,
                    time=d.time,
                )
            )
        return CaseState(case_id=case_id, revision=self.store.revision(case_id), findings=out)

    def case_out(self, case_id: str) -> CaseOut:
        """What the viewer needs before the voxels arrive."""
        geom, factor = self._display[case_id]
        state = self.state(case_id)
        truth = [self._truth_out(case_id, a) for a in self.cohort.annotations_for(case_id)]
        notice = None
        if factor > 1:
            notice = (
                f"Large volume: shown as the mean of every {factor} slices ({geom.spacing_zyx[0]:.2f} mm)."
            )
        return CaseOut(
            case_id=case_id,
            revision=state.revision,
            findings=state.findings,
            region=self.cohort.region_of(case_id),
            shape_zyx=geom.shape_zyx,
            spacing_zyx=geom.spacing_zyx,
            downsample_z=factor,
            notice=notice,
            truth=truth,
        )

    def _truth_out(self, case_id: str, a: Annotation) -> TruthOut:
        return TruthOut(
            node_id=a.node_id,
            center_xyz=a.center_xyz,
            center_zyx=self._to_zyx(case_id, a.center_xyz),
            short_axis_mm=a.short_axis_mm,
            long_axis_mm=a.long_axis_mm,
        )

    # -- deciding ---------------------------------------------------------------------------------
    def decide(self, case_id: str, body: DecisionIn) -> CaseState:
        """Record one decision (on disk before this returns) and return the case's new state."""
        action = Action(body.action)
        reader = self.settings.reader
        if action is Action.ADD:
            if body.center_zyx is None:
                raise ReviewConflict("add needs center_zyx")
            geom = self._display[case_id][0]
            if not geom.contains_world(geom.zyx_to_world(body.center_zyx)):
                raise ReviewConflict("the added finding lies outside the image")
            xyz = geom.zyx_to_world(body.center_zyx)
            self.store.record(
                case_id,
                None,
                action,
                (float(xyz[0]), float(xyz[1]), float(xyz[2])),
                diameter_mm=body.diameter_mm,
                probability=None,
                reader=reader,
            )
            return self.state(case_id)
        fid = body.finding_id
        if fid is None:
            raise ReviewConflict(f"{action.value} needs finding_id")
        decisions = self._decisions(case_id)
        if fid[0] == "d":
            found = {f.finding_id: f for f in self.findings.get(case_id, ())}.get(fid)
            if found is None:
                raise ReviewConflict(f"{case_id} has no finding {fid}")
            center, diam, prob = found.center_xyz, found.diameter_mm, found.probability
        else:
            added = decisions.get(fid)
            if added is None:
                raise ReviewConflict(f"{case_id} has no added finding {fid}")
            center, diam, prob = added.center_xyz, added.diameter_mm, None
        if action is Action.UNDO and fid not in decisions:
            raise ReviewConflict(f"{fid} has no decision to undo")
        self.store.record(case_id, fid, action, center, diameter_mm=diam, probability=prob, reader=reader)
        return self.state(case_id)

    # -- export -----------------------------------------------------------------------------------
    def export(self) -> ExportOut:
        """Write the reviewed detections (accepted + added, formats.md §3) beside the review log."""
        with self._export_lock:
            rows: list[Detection] = []
            n_acc = n_add = n_rej = 0
            for case_id in self.cases:
                decisions = self._decisions(case_id)
                for f in self.findings.get(case_id, ()):
                    d = decisions.get(f.finding_id)
                    if d is not None and d.decision is Action.ACCEPT:
                        rows.append(Detection(case_id, f.center_xyz, f.probability, f.diameter_mm))
                        n_acc += 1
                    elif d is not None and d.decision is Action.REJECT:
                        n_rej += 1
                for d in decisions.values():
                    if d.finding_id[0] == "a" and d.decision is not Action.REJECT:
                        rows.append(Detection(case_id, d.center_xyz, 1.0, d.diameter_mm))
                        n_add += 1
            target = self.settings.out_dir / REVIEWED_DETECTIONS
            write_detections(target, rows)
            inputs = {str(self.store.path): file_sha256(self.store.path)} if self.store.path.is_file() else {}
            if self.settings.detections is not None:
                inputs[str(self.settings.detections)] = file_sha256(self.settings.detections)
            info = self.cohort.info
            prov = write_provenance(
                target,
                model_name=None,
                model_sha256=None,
                settings={"review": {"reader": self.settings.reader, "threshold": self.settings.threshold}},
                inputs=inputs,
                license=info.license,
                citation=list(info.citation),
            )
            sr_files, sr_note = self._export_sr(rows)
            return ExportOut(
                files=[str(target), str(prov), str(self.store.path), *map(str, sr_files)],
                n_accepted=n_acc,
                n_added=n_add,
                n_rejected=n_rej,
                sr=sr_note,
            )

    def _export_sr(self, rows: list[Detection]) -> tuple[list[Path], str]:
        """A DICOM SR (TID 1500) of each case's accepted and added findings, for cases with a DICOM folder."""
        folder = self.settings.dicom_dir
        if folder is None:
            return [], "no DICOM SR: the cases' DICOM series were not given (serve --dicom DIR)"
        # highdicom is heavy: loaded only when an SR is written
        from lymphcad.dicomout.export import build_results, guard_outputs, write_results
        from lymphcad.dicomout.findings import AlgorithmInfo
        from lymphcad.dicomout.source import read_source_series

        prov = None if self.settings.detections is None else read_provenance(self.settings.detections)
        model = (prov or {}).get("model") or {}
        algorithm = AlgorithmInfo(
            model_name=str(model.get("name") or "unknown"), model_sha256=str(model.get("sha256") or "unknown")
        )
        written: list[Path] = []
        for case_id in self.cases:
            case_rows = [d for d in rows if d.case_id == case_id]
            series = folder / case_id
            if not case_rows or not series.is_dir():
                continue
            source = read_source_series(series)
            geom = self.cohort.geometries[case_id]
            if len(source.slices) != geom.shape_zyx[0]:
                raise InputError(
                    f"has {len(source.slices)} slices but the cohort's image of {case_id} has {geom.shape_zyx[0]}: "
                    "not the series the case was made from",
                    series,
                )
            target = self.settings.out_dir / "sr" / f"{case_id}_reviewed_sr.dcm"
            guard_outputs(source, target)
            results = build_results(source, case_rows, algorithm, threshold=0.0, with_seg=False)
            written.extend(write_results(results, sr_path=target, seg_path=None))
        return written, f"DICOM SR of {len(written)} case(s) in {self.settings.out_dir / 'sr'}"
