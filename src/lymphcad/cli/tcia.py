"""Commands for the TCIA collection and for splits: ``fetch``, ``prepare``, ``split``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from lymphcad.cli._common import app, console, err_console, progress
from lymphcad.cli._guards import check_input, check_output_dir, check_output_file
from lymphcad.errors import UsageError


def _split_ids(values: list[str]) -> list[str]:
    """Ids given as repeated options and/or comma-separated lists."""
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


class _FetchBar:
    """Progress of a fetch: series done / total, MB, MB/s and ETA (on stderr)."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.task: TaskID | None = None
        self.n_series = 0
        self.done = 0
        self.lock = threading.Lock()

    def start(self, n_series: int, total_bytes: int) -> None:
        self.n_series = n_series
        self.task = self.bar.add_task(self._label(), total=max(total_bytes, 1))

    def _label(self) -> str:
        return f"series {self.done}/{self.n_series}"

    def bytes(self, n: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, n)

    def series_done(self, record: Any, status: str) -> None:
        with self.lock:
            self.done += 1
            if self.task is not None:
                self.bar.update(self.task, description=self._label())

    def message(self, text: str) -> None:
        self.bar.console.print(text, markup=False, highlight=False)


@app.command("fetch")
def fetch_cmd(
    collection: str = typer.Option("CT Lymph Nodes", "--collection", help="NBIA collection name."),
    out: Path = typer.Option(..., "--out", help="Raw download folder (created; resumable)."),
    patients: list[str] = typer.Option(
        [], "--patients", help="Only these patient ids (repeat the option or separate with commas)."
    ),
    manifest: Path | None = typer.Option(None, "--manifest", help="A .tcia manifest: only its series."),
    modality: list[str] = typer.Option(
        [], "--modality", help="Only these modalities, e.g. CT (default: all, CT and SEG)."
    ),
    workers: int = typer.Option(4, "--workers", min=1, max=32, help="Parallel series downloads."),
    api_url: str | None = typer.Option(
        None, "--api-url", help="NBIA REST base URL (default: the public v4 API)."
    ),
    no_annotations: bool = typer.Option(
        False, "--no-annotations", help="Skip the three annotation archives."
    ),
    annotations_url: str | None = typer.Option(
        None,
        "--annotations-url",
        help="Base URL of the annotation zips (default: TCIA's wp-content/uploads).",
    ),
    no_md5: bool = typer.Option(False, "--no-md5", help="Use getImage instead of getImageWithMD5Hash."),
) -> None:
    """Download a TCIA collection via the NBIA REST API (verified, resumable), plus its annotation archives."""
    from lymphcad.tcia.api import DEFAULT_API_URL
    from lymphcad.tcia.fetch import FetchOptions, fetch

    if manifest is not None and not manifest.is_file():
        raise UsageError(f"--manifest {manifest}: no such file")
    check_output_dir(out, "--out", inputs=[] if manifest is None else [manifest])
    opts = FetchOptions(
        out=out,
        collection=collection,
        patients=_split_ids(patients),
        manifest=manifest,
        modalities=_split_ids(modality),
        workers=workers,
        api_url=api_url or DEFAULT_API_URL,
        annotations=not no_annotations,
        annotations_url=annotations_url,
        md5=not no_md5,
    )
    err_console.print(_licence_banner(collection), markup=False, highlight=False)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        disable=_progress_disabled(),
    )
    with bar:
        result = fetch(opts, progress=_FetchBar(bar))
    layouts = ", ".join(f"{k}: {v}" for k, v in sorted(result.md5_layouts.items())) or "none downloaded"
    console.print(
        f"{len(result.downloaded)} series downloaded, {len(result.skipped)} already complete, "
        f"{result.bytes / 1e6:.1f} MB; MD5 layout seen: {layouts}"
    )
    for name, entry in result.archives.items():
        check = {True: "SHA-256 verified", None: "no published SHA-256 (recorded)"}.get(
            entry.get("sha256_verified"), ""
        )
        console.print(f"{name}.zip: {entry.get('status')} ({check})")
    console.print(f"written to {out} (metadata.csv, fetch-manifest.json, LICENSE_AND_CITATION.txt)")


def _progress_disabled() -> bool:
    import os

    return os.environ.get("LYMPHCAD_NO_PROGRESS") == "1"


def _licence_banner(collection: str) -> str:
    from lymphcad.tcia.fetch import licence_text

    return "Before downloading, note the terms of use:\n" + licence_text(collection) + "\n"


@app.command("prepare")
def prepare_cmd(
    raw: Path = typer.Argument(..., help="The fetched/downloaded DICOM folder (any layout of spec §2)."),
    annotations: Path = typer.Option(..., "--annotations", help="MED_ABD_LYMPH_ANNOTATIONS zip or folder."),
    out: Path = typer.Option(..., "--out", help="Cohort folder to write (resumable)."),
    masks: Path | None = typer.Option(None, "--masks", help="MED_ABD_LYMPH_MASKS zip or folder."),
    candidates: Path | None = typer.Option(
        None, "--candidates", help="MED_ABD_LYMPH_CANDIDATES zip or folder."
    ),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Patients converted in parallel."),
    patients: list[str] = typer.Option(
        [], "--patients", help="Only these patient ids (repeat the option or separate with commas)."
    ),
    deflate_threads: int | None = typer.Option(
        None,
        "--deflate-threads",
        min=1,
        max=64,
        help="Threads per worker that gzip the images (default: the CPUs divided among the workers).",
    ),
    ray: str | None = typer.Option(
        None,
        "--ray",
        help="Convert on Ray: alone (or 'local') starts and stops a local Ray; 'auto' or HOST:PORT joins a cluster.",
    ),
    retries: int = typer.Option(1, "--retries", min=0, max=100, help="Extra attempts for a failing patient."),
    allow_gaps: bool = typer.Option(
        False,
        "--allow-gaps",
        help="Resample a series with missing slices or uneven spacing to uniform spacing (with a warning; "
        "gaps up to 10 mm or two slice steps).",
    ),
) -> None:
    """Turn a CT Lymph Nodes download + annotation archives into a cohort (docs/formats.md)."""
    from lymphcad.tcia.prepare import PrepareOptions, prepare

    for p, name in (
        (raw, "RAW"),
        (annotations, "--annotations"),
        (masks, "--masks"),
        (candidates, "--candidates"),
    ):
        if p is not None and not p.exists():
            raise UsageError(f"{name} {p}: no such file or folder")
    check_output_dir(out, "--out", inputs=[p for p in (raw, annotations, masks, candidates) if p is not None])
    opts = PrepareOptions(
        raw=raw,
        annotations=annotations,
        out=out,
        masks=masks,
        candidates=candidates,
        workers=workers,
        patients=_split_ids(patients),
        deflate_threads=deflate_threads,
        ray=None if ray is None else ("" if ray == "local" else ray),
        retries=retries,
        allow_gaps=allow_gaps,
    )
    with progress() as bar:
        task = bar.add_task("prepare", total=None)

        def on_case(case_id: str, status: str, total: int) -> None:
            bar.update(task, total=total)
            bar.advance(task)
            if status not in ("converted", "skipped"):
                bar.console.print(f"{case_id}: {status}", markup=False, highlight=False)

        report = prepare(opts, on_case=on_case)
    for line in report.summary_lines():
        console.print(line, markup=False, highlight=False)


@app.command("split")
def split_cmd(
    cohort: Path = typer.Argument(..., help="Cohort folder (dataset.json is read; splits.json is written)."),
    scheme: str = typer.Option("kfold", "--scheme", help="kfold (stratified by region) | nih-cv | nndet."),
    folds: int = typer.Option(5, "--folds", help="Number of folds (kfold, nih-cv)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (kfold, nih-cv)."),
    test_fraction: float = typer.Option(
        0.0, "--test-fraction", help="Held-out test fraction per region (kfold)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Where to write (default COHORT/splits.json)."),
) -> None:
    """Patient-level splits → splits.json (docs/formats.md); identical volumes always share a fold."""
    from lymphcad.splits import SCHEMES, split_cohort

    if scheme not in SCHEMES:
        raise UsageError(f"--scheme must be one of {', '.join(SCHEMES)}, not {scheme!r}")
    if scheme == "nndet" and (folds != 5 or seed != 0 or test_fraction):
        err_console.print(
            "note: scheme nndet ignores --folds/--seed/--test-fraction (nnDetection's fixed settings)"
        )
    check_input(cohort, "COHORT")
    check_output_file(
        cohort / "splits.json" if out is None else out,
        "--out",
        suffixes=(".json",),
        inputs=[cohort],
        may_write=("splits.json",),
    )
    target, splits = split_cohort(
        cohort, scheme=scheme, folds=folds, seed=seed, test_fraction=test_fraction, out=out
    )
    for w in splits.warnings:
        err_console.print(f"warning: {w}", markup=False, highlight=False)
    sizes = ", ".join(str(len(f["val"])) for f in splits.folds)
    console.print(
        f"wrote {target}: scheme {splits.scheme}, test {len(splits.test)}, {len(splits.folds)} folds (val sizes {sizes})"
    )
