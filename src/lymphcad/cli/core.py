"""Foundation commands: ``info``, ``convert`` and ``import``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from lymphcad.cli._common import app, console, err_console, progress
from lymphcad.cli._guards import check_input, check_output_dir, check_output_file
from lymphcad.errors import InputError, UsageError


@app.command("info")
def info_cmd(
    path: Path = typer.Argument(
        ..., help="A DICOM folder or file, a NIfTI/NRRD/MetaImage file, or a cohort folder (docs/formats.md)."
    ),
    series: str | None = typer.Option(
        None, "--series", help="SeriesInstanceUID when a folder holds several CT series."
    ),
) -> None:
    """Summarise a CT (size, spacing, orientation, modality, HU range, gaps) or a cohort (docs/formats.md).

    Never shows PHI.

    Exits 1 when the CT cannot be read as one 3D volume (the last line says why and names the file).
    """
    from lymphcad.summary import READABLE, describe

    if not path.exists():
        raise InputError("no such file or folder", path)
    facts = describe(path, series_uid=series)
    for key, value in facts:
        console.print(Text.assemble((key, "bold"), ": ", value), soft_wrap=True)
    unusable = [v for k, v in facts if k == READABLE and v.startswith("no: ")]
    if unusable:
        raise InputError(f"not readable as one 3D CT ({unusable[0][4:]})")


@app.command("convert")
def convert_cmd(
    dicom_dir: Path = typer.Argument(
        ...,
        help="A DICOM folder (several series: choose with --series) or file, or an NRRD/MetaImage file.",
    ),
    out: Path = typer.Argument(..., help="Output NIfTI file (.nii.gz)."),
    series: str | None = typer.Option(None, "--series", help="SeriesInstanceUID to convert."),
    allow_gaps: bool = typer.Option(
        False,
        "--allow-gaps",
        help="Resample missing slices / uneven spacing to a uniform grid (gaps up to 10 mm or two slices; warns).",
    ),
) -> None:
    """Convert a DICOM CT series (or an NRRD/MetaImage CT) to an int16 NIfTI file (LPS geometry kept exactly)."""
    from lymphcad.io.nifti import write_ct
    from lymphcad.io.reader import read_ct_input

    check_input(dicom_dir, "the CT input")
    check_output_file(out, "OUT", suffixes=(".nii.gz", ".nii"), inputs=[dicom_dir])
    volume = read_ct_input(dicom_dir, series_uid=series, allow_gaps=allow_gaps)
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
    series: str | None = typer.Option(
        None, "--series", help="SeriesInstanceUID to import when a DICOM folder holds several CT series."
    ),
    allow_gaps: bool = typer.Option(
        False,
        "--allow-gaps",
        help="DICOM: resample missing slices / uneven spacing (small gaps only; warns).",
    ),
) -> None:
    """Make a cohort (docs/formats.md) from your own CT: DICOM folders, NIfTI, NRRD or MetaImage files.

    Case ids come from the file/folder names and are printed; every input is checked before anything is
    written, and a different scan whose name maps to an existing case id is refused.
    """
    from lymphcad.importer import case_id_for, import_cases

    if region is not None and region not in ("mediastinal", "abdominal", "both"):
        raise UsageError(f"--region must be mediastinal, abdominal or both, not {region!r}")
    for p in inputs:
        check_input(p)
    if nodes is not None:
        check_input(nodes, "--nodes")
    check_output_dir(out, "--out", inputs=[*inputs, *([] if nodes is None else [nodes])])
    with progress() as bar:
        task = bar.add_task("import: check", total=2 * len(inputs))

        def checked(_case: str) -> None:
            bar.advance(task)

        def written(_case: str) -> None:
            bar.update(task, description="import: write", advance=1)

        info = import_cases(
            inputs,
            out,
            nodes_csv=nodes,
            region=region,
            name=name,
            license=license,
            citation=list(citation),
            series_uid=series,
            allow_gaps=allow_gaps,
            on_case=written,
            on_checked=checked,
        )
    for path in inputs:
        console.print(f"{case_id_for(path)}: {path}", markup=False, highlight=False, soft_wrap=True)
    err_console.print(f"cohort {out}: {len(info.cases)} case(s) (case ids above: first column)")
