"""``lymphcad pacs ls``: list the studies of a DICOMweb server, or the series of one study (QIDO-RS).

Only UIDs, modalities, counts and descriptions are shown: never patient names, ids or dates.
"""

from __future__ import annotations

from pathlib import Path

import typer

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
    # plain tab-separated lines, never wrapped, so that UIDs can be copied into the next command
    if study is None:
        studies = pacs.studies()
        _line("study_uid", "modalities", "series", "images", "description")
        for s in studies:
            _line(
                s.study_uid, "/".join(s.modalities), _count(s.n_series), _count(s.n_instances), s.description
            )
        console.print(
            f"# {len(studies)} stud{'y' if len(studies) == 1 else 'ies'} on {pacs.where}", soft_wrap=True
        )
        return
    series = pacs.series(study)
    _line("series_uid", "modality", "number", "images", "description")
    for r in series:
        _line(r.series_uid, r.modality, _count(r.number), _count(r.n_instances), r.description)
    console.print(f"# {len(series)} series in study {study}", soft_wrap=True)


def _count(n: int | None) -> str:
    return "" if n is None else str(n)


def _line(*cells: str) -> None:
    typer.echo("\t".join(cells))
