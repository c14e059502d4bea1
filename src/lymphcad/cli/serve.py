"""``lymphcad serve``: review detections in the browser (a local web app)."""

from __future__ import annotations

from pathlib import Path

import typer

from lymphcad.cli._common import app, console, err_console
from lymphcad.cli._guards import check_detections_output, check_input, check_output_dir
from lymphcad.errors import UsageError


@app.command("serve")
def serve_cmd(
    cohort: Path = typer.Argument(..., help="Cohort folder (dataset.json, images/, annotations.csv, ...)."),
    dets: Path | None = typer.Option(None, "--dets", help="Detections CSV to review (formats.md §3)."),
    out: Path | None = typer.Option(
        None, "--out", help="Folder for review.csv and the export (default: DETS_review/ beside --dets)."
    ),
    dicom: Path | None = typer.Option(
        None,
        "--dicom",
        help="Folder with each case's DICOM series in a folder named by its case id: export also writes "
        "a DICOM SR (TID 1500) of the accepted and added findings per case.",
    ),
    port: int = typer.Option(8765, "--port", min=1, max=65535, help="TCP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (other than loopback: a warning)."),
    reader: str = typer.Option("reader", "--reader", help="Reader name written with every decision."),
    threshold: float = typer.Option(
        0.5, "--threshold", min=0.0, max=1.0, help="Initial probability threshold."
    ),
) -> None:
    """A local page to review detections: three linked panes, keyboard accept/reject/add, export.

    Decisions go to OUT/review.csv on every key press; the export writes OUT/reviewed_dets.csv.
    """
    from lymphcad.serve.service import ReviewService, ReviewSettings

    inputs = [check_input(cohort, "cohort")]
    if dets is not None:
        inputs.append(check_input(dets, "--dets"))
    if dicom is not None:
        inputs.append(check_input(dicom, "--dicom"))
    if out is None:
        out = (dets.parent / f"{dets.stem}_review") if dets is not None else Path("lymphcad_review")
    check_output_dir(out, "--out", inputs=inputs)
    check_detections_output(out / "reviewed_dets.csv", inputs=inputs, json_form=False)
    if not reader.isprintable() or len(reader) > 80:
        raise UsageError("--reader must be one line of at most 80 printable characters")
    settings = ReviewSettings(
        cohort_dir=cohort, detections=dets, out_dir=out, reader=reader, threshold=threshold, dicom_dir=dicom
    )
    service = ReviewService(settings)
    service.prefetch_first()  # reads the first case while the web stack is imported and started
    from lymphcad.serve.server import plan_launch, serve

    launch = plan_launch(host, port)
    if not launch.is_loopback:
        err_console.print(
            f"warning: listening on {host}: other machines can reach this page (no login; the token only "
            "stops cross-site writes). Use the default 127.0.0.1 unless you need this.",
            markup=False,
        )

    def announce(url: str) -> None:
        console.print(f"review page: {url}", markup=False)
        err_console.print(
            f"decisions are saved to {out / 'review.csv'}; Ctrl-C stops the server", markup=False
        )

    if serve(service, launch, announce=announce):
        raise KeyboardInterrupt
