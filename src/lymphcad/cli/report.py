"""``lymphcad report``: one self-contained HTML file of a run (FROC, published results, case crops, terms)."""

from __future__ import annotations

from pathlib import Path

import typer

from lymphcad.cli._common import app, err_console, progress
from lymphcad.cli._guards import check_input, check_output_file


@app.command("report")
def report_cmd(
    cohort: Path = typer.Argument(..., help="Cohort folder the detections were made on."),
    dets: Path = typer.Option(..., "--dets", help="Detections CSV (formats.md §3)."),
    out: Path = typer.Option(..., "--out", help="HTML file to write (self-contained)."),
    eval_json: Path | None = typer.Option(
        None, "--eval", help="eval.json of these detections: its matching rule is used and checked."
    ),
    threshold: float = typer.Option(
        0.5, "--threshold", min=0.0, max=1.0, help="Detections at or above this get a case panel."
    ),
) -> None:
    """Write one HTML file: FROC and table vs published results, crops of every finding, model card, citations."""
    from lymphcad.cohort import read_dataset_json
    from lymphcad.report.html import build_report

    inputs = [check_input(cohort, "cohort"), check_input(dets, "--dets")]
    if eval_json is not None:
        inputs.append(check_input(eval_json, "--eval"))
    check_output_file(out, "--out", suffixes=(".html", ".htm"), inputs=inputs)
    n_cases = len(read_dataset_json(cohort).cases)
    with progress() as bar:
        task = bar.add_task("report", total=n_cases)
        path = build_report(
            cohort, dets, out, eval_path=eval_json, threshold=threshold, on_case=lambda _c: bar.advance(task)
        )
    err_console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained)")
