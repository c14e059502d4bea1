"""Objects shared by the CLI modules: the app, consoles, progress bars and the --debug flag."""

from __future__ import annotations

import os
from dataclasses import dataclass

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


@dataclass
class _State:
    debug: bool = False


state = _State()


def progress(*, transient: bool = False) -> Progress:
    """A rich progress bar with count, elapsed time and ETA (plain when not a terminal or TERM=dumb)."""
    disable = os.environ.get("LYMPHCAD_NO_PROGRESS") == "1"
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
        disable=disable,
    )
