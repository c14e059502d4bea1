"""The ``lymphcad`` command line (typer + rich). Thin: it validates arguments and calls library functions.

Exit codes: 0 ok, 1 failure (one line naming the file and the problem), 2 usage, 130 interrupted (Ctrl-C).
Each command group lives in its own module and registers itself on :data:`app` when imported.
"""

from __future__ import annotations

import importlib
import sys
import traceback
import warnings
from typing import Final, TextIO

import typer

from lymphcad import __version__
from lymphcad.cli._common import app, err_console, state
from lymphcad.errors import LymphcadError, UsageError

#: Exit code of a run stopped by Ctrl-C (SIGINT), as shells report 128 + SIGINT.
EXIT_INTERRUPTED: Final = 130

#: Modules that add commands to ``app`` (each adds its commands when imported).
COMMAND_MODULES: Final = (
    "lymphcad.cli.core",
    "lymphcad.cli.phantom",
    "lymphcad.cli.tcia",
    "lymphcad.cli.evaluate",
    "lymphcad.cli.detect",
    "lymphcad.cli.serve",
    "lymphcad.cli.report",
    "lymphcad.cli.pacs",
    "lymphcad.cli.measure",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lymphcad {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """lymphcad: lymph node detection in contrast-enhanced CT (TCIA CT Lymph Nodes)."""
    state.debug = debug


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name)


#: options whose value may be left out (click cannot say so): the value they then take
OPTIONAL_VALUES: Final = {"--ray": "local"}


def _fill_optional_values(args: list[str]) -> list[str]:
    """``--ray`` given last or followed by another option means ``--ray local``."""
    out: list[str] = []
    for i, a in enumerate(args):
        out.append(a)
        if a in OPTIONAL_VALUES and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append(OPTIONAL_VALUES[a])
    return out


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app and map errors to exit codes (see the module notes)."""
    args = _fill_optional_values(sys.argv[1:] if argv is None else argv)
    _shown.clear()
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _run(args)


#: warning lines already printed in this run (the same fact found twice is said once)
_shown: set[str] = set()


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print a Python warning as one line, ``warning: <text>``, without the source location."""
    text = " ".join(str(message).split())
    if text in _shown:
        return
    _shown.add(text)
    err_console.print(f"warning: {text}", markup=False, highlight=False, soft_wrap=True)


def _run(args: list[str]) -> int:
    try:
        _load_commands()
        code = app(args=args, standalone_mode=False)
    except UsageError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except LymphcadError as exc:
        if state.debug:
            traceback.print_exc()
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 1
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 1
    except KeyboardInterrupt:
        return _interrupted()
    except typer.TyperException as exc:  # bad usage: unknown option, missing argument, ...
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(f"error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
        return int(exc.exit_code)
    except Exception as exc:  # a bug: short message unless --debug
        if state.debug:
            traceback.print_exc()
        else:
            err_console.print(
                f"error: {exc.__class__.__name__}: {exc} (run with --debug for the traceback)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        return 1
    # typer turns Ctrl-C into exit code 130 and returns (not raises) a command's exit code
    code = int(code) if isinstance(code, int) else 0
    if code == EXIT_INTERRUPTED:
        return _interrupted()
    return code


def _interrupted() -> int:
    err_console.print("interrupted", markup=False, highlight=False)
    return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
