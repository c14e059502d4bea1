"""Objects shared by the CLI modules: the app, consoles, progress bars and the --debug flag."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import typer
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from lymphcad.batch.engine import BatchProgress

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


def print_full_width(renderable: RenderableType) -> None:
    """Print a table on stdout whole: when stdout is not a terminal (a log, a pipe) rich would squeeze it
    to 80 columns and cut cells ("0.53–0.…"); there the line is as wide as the table needs."""
    if console.is_terminal:
        console.print(renderable)
        return
    width = Measurement.get(console, console.options, renderable).maximum
    console.print(renderable, width=max(console.width, width), soft_wrap=False)


@contextlib.contextmanager
def batch_progress(name: str) -> Iterator[Callable[[BatchProgress], None]]:
    """A progress bar for a batch: cases done of total, failed, throughput (cases/min), elapsed, ETA."""
    with progress() as bar:
        task = bar.add_task(name, total=None)

        def update(p: BatchProgress) -> None:
            extra = f", {p.skipped} earlier" if p.skipped else ""
            failed = f", [red]{p.failed} failed[/red]" if p.failed else ""
            bar.update(
                task,
                completed=p.done + p.skipped + p.failed,
                total=p.total,
                description=f"{name}: {p.done} done{extra}{failed}, {p.per_minute:.1f} case(s)/min",
            )

        yield update
