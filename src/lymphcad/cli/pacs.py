"""``lymphcad pacs ls``: list the studies of a DICOMweb server, or the series of one study (QIDO-RS).

Only UIDs, modalities, counts and descriptions are shown: never patient names, ids or dates.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from lymphcad.cli._common import app, console

pacs_app = typer.Typer(
    no_args_is_help=True, help="Talk to a PACS over DICOMweb (QIDO-RS / WADO-RS / STOW-RS)."
)
app.add_typer(pacs_app, name="pacs")


@pacs_app.command("ls")
def ls_cmd(
    url: str = typer.Argument(..., help="DICOMweb base URL, e.g. http://127.0.0.1:8042/dicom-web"),
    study: str | None = typer.Option(
        None, "--study", help="List this study's series instead of all studies."
    ),
    user: str | None = typer.Option(None, "--user", help="User name for HTTP basic auth."),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="File whose first line is the password (never on the command line)."
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="File whose first line is a bearer token."
    ),
) -> None:
    """List studies (UID, modalities, series and image counts) or, with --study, that study's series."""
    from lymphcad.pacs.auth import credentials
    from lymphcad.pacs.client import Pacs

    pacs = Pacs(url, credentials(user, password_file, token_file))
    if study is None:
        studies = pacs.studies()
        table = Table("study UID", "modalities", "series", "images", "description", title=pacs.where)
        for s in studies:
            table.add_row(
                s.study_uid,
                "/".join(s.modalities),
                "" if s.n_series is None else str(s.n_series),
                "" if s.n_instances is None else str(s.n_instances),
                s.description,
            )
        console.print(table)
        console.print(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'}")
        return
    series = pacs.series(study)
    table = Table("series UID", "modality", "number", "images", "description", title=f"study {study}")
    for r in series:
        table.add_row(
            r.series_uid,
            r.modality,
            "" if r.number is None else str(r.number),
            "" if r.n_instances is None else str(r.n_instances),
            r.description,
        )
    console.print(table)
    console.print(f"{len(series)} series")
