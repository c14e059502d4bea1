"""User-facing errors: one line that names the file (and row) and the problem.

The CLI prints ``str(error)`` and exits 1; no traceback unless ``--debug``.
"""

from __future__ import annotations

from pathlib import Path


class LymphcadError(Exception):
    """An error caused by the input or the environment, not by a bug in lymphcad."""

    def __init__(self, problem: str, path: str | Path | None = None, line: int | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        return f"{where}{self.problem}"


class InputError(LymphcadError):
    """Bad input data: unreadable file, wrong header, values out of range."""


class UsageError(LymphcadError):
    """Bad command-line usage (exit code 2)."""


class InputWarning(UserWarning):
    """Input that can be read but may give wrong results (NaN voxels, no orientation, not HU, ...).

    Raised with :func:`warnings.warn`; the CLI prints it as one line, ``warning: <file>: <problem>``.
    """
