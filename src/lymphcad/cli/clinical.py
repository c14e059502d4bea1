"""The clinical side of ``detect``: DICOM SR/SEG outputs and DICOMweb input/output.

``detect`` calls three things: :func:`clinical_options` (checks every clinical option before any work),
:meth:`ClinicalRun.fetch` (pulls the chosen series over WADO-RS into a temporary folder) and
:meth:`ClinicalRun.finish` (builds the SR/SEG, checks them in memory, writes them, then stores them).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lymphcad.cli._common import err_console, progress
from lymphcad.cli._guards import check_distinct, check_input, check_output_file
from lymphcad.errors import InputError, UsageError

if TYPE_CHECKING:  # highdicom and dicomweb-client take seconds to import: only when a run uses them
    from lymphcad.io.detections import Detection
    from lymphcad.pacs.client import Pacs


def _say(message: str) -> None:
    err_console.print(message, markup=False, highlight=False, soft_wrap=True)


@dataclass
class ClinicalRun:
    """The clinical options of one ``detect`` run, checked; holds the temporary download folder."""

    input: Path | None
    sr: Path | None = None
    seg: Path | None = None
    sr_threshold: float = 0.0
    pacs: Pacs | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    store: bool = False
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def inputs(self) -> list[Path]:
        """Local inputs (for the output-overwrite checks)."""
        return [] if self.input is None else [self.input]

    @property
    def wants_dicom(self) -> bool:
        return self.sr is not None or self.seg is not None or self.store

    def fetch(self) -> Path:
        """The local input: the DICOM folder pulled from the PACS (``--dicomweb``) or the given INPUT."""
        if self.pacs is None:
            assert self.input is not None
            return self.input
        assert self.study_uid is not None
        choice = self.pacs.choose_series(self.study_uid, self.series_uid)
        row = choice.series
        _say(
            f"DICOMweb: series {row.series_uid} ({row.n_instances or '?'} images"
            f"{', ' + repr(row.description) if row.description else ''}): {choice.reason}"
        )
        self._tmp = tempfile.TemporaryDirectory(prefix="lymphcad-dicomweb-")
        folder = Path(self._tmp.name) / row.series_uid  # the case id is the series UID
        with progress(transient=True) as bar:
            task = bar.add_task("retrieve (WADO-RS)", total=row.n_instances)
            self.pacs.retrieve_series(
                self.study_uid, choice, folder, progress=lambda n: bar.update(task, completed=n)
            )
        self.series_uid = row.series_uid
        self.input = folder
        return folder

    def finish(
        self,
        detections: Sequence[Detection],
        *,
        model_name: str,
        model_sha256: str,
        masks_dir: Path | None = None,
    ) -> None:
        """Build, check, write and (``--store``) store the SR and SEG; then drop the download folder.

        ``masks_dir`` (``detect --masks``): the SEG takes each detection's mask from ``<case>.nii.gz`` there.
        """
        from lymphcad.dicomout.export import build_results, guard_outputs, write_results
        from lymphcad.dicomout.findings import AlgorithmInfo
        from lymphcad.dicomout.masks import masks_for_detections
        from lymphcad.dicomout.source import read_source_series

        try:
            if not self.wants_dicom:
                return
            assert self.input is not None
            source = read_source_series(self.input, series_uid=self.series_uid)
            guard_outputs(source, self.sr, self.seg)
            label_file = None
            if masks_dir is not None and detections:
                label_file = masks_dir / f"{detections[0].case_id}.nii.gz"
            masks = (
                masks_for_detections(label_file, detections) if label_file and label_file.is_file() else None
            )
            results = build_results(
                source,
                detections,
                AlgorithmInfo(model_name=model_name, model_sha256=model_sha256),
                threshold=self.sr_threshold,
                with_seg=self.seg is not None or self.store,
                masks=masks,
            )
            written = write_results(results, sr_path=self.sr, seg_path=self.seg)
            n = len(results.findings)
            _say(
                f"DICOM: {n} finding(s) with probability >= {self.sr_threshold:g}"
                + (f" → {', '.join(str(p) for p in written)}" if written else "")
                + ("" if results.seg is not None or self.seg is None else "; no finding, so no SEG written")
                + ("" if masks is None or results.seg is None else "; SEG from the detector's masks")
            )
            if self.store:
                assert self.pacs is not None and self.study_uid is not None
                objects = [results.sr] + ([results.seg] if results.seg is not None else [])
                stored = self.pacs.store(objects, source.study_uid)
                _say(f"DICOMweb: stored {stored.stored} object(s) (STOW-RS) in study {source.study_uid}")
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None


def clinical_options(
    input: Path | None,
    *,
    out: Path,
    sr: Path | None,
    seg: Path | None,
    sr_threshold: float,
    dicomweb: str | None,
    study: str | None,
    series: str | None,
    store: bool,
    user: str | None,
    password_file: Path | None,
    token_file: Path | None,
) -> ClinicalRun:
    """Check the clinical options of ``detect`` before any work (no network yet)."""
    if not 0.0 <= sr_threshold <= 1.0:
        raise UsageError(f"--sr-threshold must lie in [0, 1], got {sr_threshold}")
    if dicomweb is None:
        if input is None:
            raise UsageError(
                "give an INPUT (NIfTI file, DICOM folder or cohort) or --dicomweb URL --study UID"
            )
        web_only = {
            "--study": study,
            "--store": store or None,
            "--user": user,
            "--password-file": password_file,
            "--token-file": token_file,
        }
        extra = [option for option, value in web_only.items() if value is not None]
        if extra:
            raise UsageError(f"{', '.join(extra)} need(s) --dicomweb")
        check_input(input)
        if (sr is not None or seg is not None) and not input.is_dir():
            raise InputError(
                "--sr/--seg need a DICOM folder as input: a file (NIfTI, NRRD, MetaImage) has no source "
                "DICOM instances for the SR/SEG to reference",
                input,
            )
        if (sr is not None or seg is not None) and (input / "dataset.json").is_file():
            raise UsageError("--sr/--seg work on one DICOM series, not on a cohort", input)
        run = ClinicalRun(input=input, sr=sr, seg=seg, sr_threshold=sr_threshold, series_uid=series)
    else:
        if input is not None:
            raise UsageError("give either an INPUT or --dicomweb, not both")
        if study is None:
            raise UsageError("--dicomweb needs --study UID (list studies with: lymphcad pacs ls URL)")
        from lymphcad.pacs.auth import credentials
        from lymphcad.pacs.client import Pacs

        auth = credentials(user, password_file, token_file)
        run = ClinicalRun(
            input=None,
            sr=sr,
            seg=seg,
            sr_threshold=sr_threshold,
            pacs=Pacs(dicomweb, auth),
            study_uid=study,
            series_uid=series,
            store=store,
        )
    outputs = {"--out": out}
    for option, path in (("--sr", sr), ("--seg", seg)):
        if path is not None:
            check_output_file(path, option, suffixes=(".dcm",), inputs=run.inputs)
            outputs[option] = path
    check_distinct(outputs)
    return run
