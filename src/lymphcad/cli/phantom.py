"""Phantom commands: ``phantom`` (synthetic cohort), ``insert`` (nodes into a real CT) and ``show`` (pictures)."""

from __future__ import annotations

from pathlib import Path

import typer

from lymphcad.cli._common import app, console, progress
from lymphcad.cli._guards import check_input, check_output_dir, check_output_file
from lymphcad.errors import InputError, UsageError


@app.command("phantom")
def phantom_cmd(
    out: Path = typer.Option(..., "--out", help="Output cohort folder (resumable: finished cases are kept)."),
    cases: int = typer.Option(10, "--cases", help="Number of cases."),
    region: str = typer.Option("both", "--region", help="mediastinal | abdominal | both (alternating)."),
    seed: int = typer.Option(0, "--seed", help="Random seed (output is byte-identical per seed)."),
    difficulty: float = typer.Option(0.5, "--difficulty", help="0 easy … 0.5 TCIA-like … 1 hard."),
    preset: str = typer.Option(
        "bench", "--preset", help="tiny (64×128×128) | bench (512²×240–320) | full (512²×500–700)."
    ),
    annotation_fraction: float = typer.Option(
        1.0,
        "--annotation-fraction",
        help="Share of enlarged nodes listed as ground truth (TCIA-like sparse marks: ~0.5).",
    ),
    workers: int = typer.Option(1, "--workers", help="Parallel processes (output identical to 1)."),
) -> None:
    """Write a synthetic CT lymph-node cohort (images, labels, annotations, eval_regions, full truth in extra/)."""
    from lymphcad.phantom import generate_cohort

    if region not in ("mediastinal", "abdominal", "both"):
        raise UsageError("--region must be mediastinal, abdominal or both")
    check_output_dir(out, "--out")
    with progress() as bar:
        task = bar.add_task("phantom", total=cases)

        def cb(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        info = generate_cohort(
            out,
            cases,
            region,
            seed,
            difficulty,
            preset,
            annotation_fraction=annotation_fraction,
            workers=workers,
            progress=cb,
        )
    console.print(f"wrote {len(info.cases)} cases to {out}")


@app.command("insert")
def insert_cmd(
    background: Path = typer.Option(
        ..., "--background", help="Real CT: a NIfTI file or a DICOM folder (never a holdout/ file)."
    ),
    out: Path = typer.Option(..., "--out", help="Output cohort folder."),
    cases: int = typer.Option(
        1, "--cases", help="Number of cases (each a copy of the background with its own nodes)."
    ),
    nodes: tuple[int, int] = typer.Option(
        (3, 6), "--nodes", help="MIN MAX nodes per case (fails when MIN do not fit)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed (output identical per seed)."),
    region: str = typer.Option(
        "auto", "--region", help="mediastinal | abdominal | auto (the background's own region) stations."
    ),
    formation: str = typer.Option(
        "both",
        "--formation",
        help="Image formation, drawn per node: additive | blend | texture | both (= additive + blend) | all, "
        "or a comma-separated list (additive,texture).",
    ),
    p_positive: float = typer.Option(
        0.8,
        "--p-positive",
        help="Share of nodes drawn at ground-truth size (the rest: ignored/negative sizes).",
    ),
    keep_size: bool = typer.Option(
        True,
        "--keep-size/--redraw-unplaced",
        help="A node that finds no room is tried at every station before another is drawn, so the placed "
        "sizes follow the collection's; --redraw-unplaced redraws at once (cohorts drawn before this option).",
    ),
) -> None:
    """Insert synthetic lymph nodes at nodal stations of a real CT (displacing fat; never into lumen, bone,
    lung, airway, oesophagus or organs); prints per case how many nodes were placed and annotated."""
    from lymphcad.phantom.insert import CaseSummary, insert_cohort, parse_formations

    if cases < 1:
        raise UsageError(f"--cases must be at least 1 (got {cases})")
    if not background.exists():
        raise InputError("no such file or folder", background)
    if nodes[0] < 0 or nodes[1] < nodes[0]:
        raise UsageError("--nodes MIN MAX needs 0 <= MIN <= MAX")
    if not 0.0 <= p_positive <= 1.0:
        raise UsageError("--p-positive must lie in [0, 1]")
    parse_formations(formation)  # a bad --formation fails before any work
    check_output_dir(out, "--out", inputs=[background])
    with progress() as bar:
        task = bar.add_task("insert", total=cases)

        def cb(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def case_line(s: CaseSummary) -> None:
            console.print(s.line(), soft_wrap=True, markup=False)

        info = insert_cohort(
            background,
            out,
            cases,
            nodes,
            seed,
            region=region,
            formation=formation,
            p_positive=p_positive,
            keep_size=keep_size,
            progress=cb,
            on_case=case_line,
        )
    console.print(f"wrote {len(info.cases)} cases to {out}")


@app.command("show")
def show_cmd(
    cohort: Path = typer.Argument(..., help="Cohort folder."),
    out: Path = typer.Option(..., "--out", help="Output PNG."),
    case: str | None = typer.Option(None, "--case", help="Case id (default: the first case with nodes)."),
    dets: Path | None = typer.Option(None, "--dets", help="Detections CSV (LUNA style) to overlay."),
    max_nodes: int = typer.Option(4, "--max-nodes", help="Nodes to show (one row each)."),
) -> None:
    """Draw axial and coronal slices through nodes with ground-truth outlines (radiological convention)."""
    from lymphcad.report.show import show_cohort

    check_input(cohort, "COHORT")
    inputs = [cohort, *([] if dets is None else [check_input(dets, "--dets")])]
    check_output_file(out, "--out", suffixes=(".png",), inputs=inputs)
    path = show_cohort(cohort, out, case_id=case, dets=dets, max_nodes=max_nodes)
    if dets is not None:
        _print_findings(cohort, dets, case)
    console.print(f"wrote {path}")


def _print_findings(cohort: Path, dets: Path, case: str | None) -> None:
    """The shown case's detections, most probable first, each with its size, volume and station."""
    from lymphcad.cohort import open_cohort
    from lymphcad.io.detections import read_detections
    from lymphcad.measure.run import finding_text
    from lymphcad.report.show import pick_case

    cid = pick_case(open_cohort(cohort, check_headers=False), case)
    rows = sorted((d for d in read_detections(dets).rows() if d.case_id == cid), key=lambda d: -d.probability)
    console.print(f"{cid}: {len(rows)} detection(s)", markup=False)
    for n, d in enumerate(rows, start=1):
        x, y, z = d.center_xyz
        console.print(f"  {finding_text(d, n)} · at ({x:.1f}, {y:.1f}, {z:.1f}) mm LPS", markup=False)
