"""Foundation commands: ``info``, ``convert`` and ``import``."""

from __future__ import annotations

from pathlib import Path

import typer

from lymphcad.cli._common import app, console, err_console, progress
from lymphcad.cli._guards import check_input, check_output_dir, check_output_file
from lymphcad.errors import InputError, UsageError


@app.command("info")
def info_cmd(
    path: Path = typer.Argument(..., help="A DICOM folder or file, a NIfTI file, or a cohort folder."),
    series: str | None = typer.Option(
        None, "--series", help="SeriesInstanceUID when a folder holds several CT series."
    ),
) -> None:
    """Summarise a CT (size, spacing, orientation, modality, HU range, gaps) or a cohort. Never shows PHI."""
    from lymphcad.summary import describe

    if not path.exists():
        raise InputError("no such file or folder", path)
    for key, value in describe(path, series_uid=series):
        console.print(f"[bold]{key}[/bold]: {value}")


@app.command("convert")
def convert_cmd(
    dicom_dir: Path = typer.Argument(
        ..., help="Folder with one CT series (or several: choose with --series)."
    ),
    out: Path = typer.Argument(..., help="Output NIfTI file (.nii.gz)."),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to convert."),
    allow_gaps: bool = typer.Option(
        False, "--allow-gaps", help="Resample missing slices / uneven spacing to a uniform grid (warns)."
    ),
) -> None:
    """Convert a DICOM CT series to an int16 NIfTI file (LPS geometry kept exactly)."""
    from lymphcad.io.nifti import write_ct
    from lymphcad.io.reader import read_ct

    check_input(dicom_dir, "the DICOM input")
    check_output_file(out, "OUT", suffixes=(".nii.gz", ".nii"), inputs=[dicom_dir])
    volume = read_ct(dicom_dir, series_uid=series, allow_gaps=allow_gaps)
    write_ct(out, volume)
    z, y, x = volume.shape_zyx
    console.print(f"wrote {out} ({x}×{y}×{z}, orientation {volume.geometry.orientation_codes()})")


@app.command("import")
def import_cmd(
    inputs: list[Path] = typer.Argument(..., help="DICOM folders and/or NIfTI files, one case each."),
    out: Path = typer.Option(..., "--out", help="Cohort folder to create or extend."),
    nodes: Path | None = typer.Option(
        None, "--nodes", help="CSV of node centres in the annotations.csv columns (case ids as printed)."
    ),
    region: str | None = typer.Option(None, "--region", help="mediastinal | abdominal | both (all cases)."),
    name: str | None = typer.Option(None, "--name", help="Cohort name (default: the folder name)."),
    license: str = typer.Option("as stated by the data owner", "--license", help="Licence of the images."),
    citation: list[str] = typer.Option([], "--citation", help="Citation to carry with results (repeatable)."),
) -> None:
    """Make a cohort from your own DICOM folders or NIfTI files (case ids come from file/folder names)."""
    from lymphcad.importer import import_cases

    if region is not None and region not in ("mediastinal", "abdominal", "both"):
        raise UsageError(f"--region must be mediastinal, abdominal or both, not {region!r}")
    for p in inputs:
        check_input(p)
    if nodes is not None:
        check_input(nodes, "--nodes")
    check_output_dir(out, "--out", inputs=[*inputs, *([] if nodes is None else [nodes])])
    with progress() as bar:
        task = bar.add_task("import", total=len(inputs))
        info = import_cases(
            inputs,
            out,
            nodes_csv=nodes,
            region=region,
            name=name,
            license=license,
            citation=list(citation),
            on_case=lambda _case: bar.advance(task),
        )
    err_console.print(f"cohort {out}: {len(info.cases)} case(s)")
