"""What ``detect`` runs on: a CT file, a DICOM folder, a cohort folder (formats.md §2), or a list file.

A list file (``.txt``) names one CT file or DICOM folder per line (relative paths start at the list's
folder; ``#`` starts a comment). Each input becomes one case whose id comes from its file name. This module
imports no torch, so the command line checks its arguments before the slow imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from lymphcad.cohort import open_cohort
from lymphcad.errors import InputError, UsageError
from lymphcad.importer import case_id_for

LIST_SUFFIXES: Final = (".txt", ".lst")


@dataclass(frozen=True)
class DetectInput:
    """One CT to run: its case id, where it is, its name in the provenance's ``inputs``, how errors name it,
    and the DICOM reading options (``--series``, ``--allow-gaps``)."""

    case_id: str
    path: str
    label: str
    where: str
    series: str | None = None
    allow_gaps: bool = False


@dataclass(frozen=True)
class InputSet:
    """The CTs of one ``detect`` call plus the licence and citations that travel with them."""

    items: tuple[DetectInput, ...]
    license: str | None = None
    citation: tuple[str, ...] = ()
    #: content hashes known in advance (a cohort's dataset.json): a cheap, exact input identity
    content_hashes: dict[str, str] = field(default_factory=dict)
    #: True for a cohort or a list (several cases): keep going after a failing case by default
    multi: bool = False
    #: True for a list file (its entries are checked when they run)
    listed: bool = False
    #: the cohort's ``source`` (dataset.json), None for CT files
    source: str | None = None


def _read_list(path: Path) -> list[Path]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the list of inputs ({exc})", path) from exc
    out = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        p = Path(line)
        p = p if p.is_absolute() else path.parent / p
        if not p.exists():
            raise InputError(f"listed input {line!r} does not exist", path, n)
        out.append(p)
    if not out:
        raise InputError("the list names no input", path)
    return out


def collect_inputs(path: Path, *, series: str | None = None, allow_gaps: bool = False) -> InputSet:
    """The CTs that ``detect PATH`` runs on (see the module docstring)."""
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_dir() and (path / "dataset.json").is_file():
        if series is not None or allow_gaps:
            raise UsageError("--series and --allow-gaps apply to a DICOM folder, not to a cohort", path)
        cohort = open_cohort(path, check_headers=False)  # a broken image fails its case only
        items = tuple(
            DetectInput(c, str(cohort.image_path(c)), f"{path}#{c}", f"{path} (case {c})")
            for c in cohort.cases
        )
        return InputSet(
            items,
            cohort.info.license,
            tuple(cohort.info.citation),
            dict(cohort.info.content_hashes or {}),
            multi=True,
            source=cohort.info.source,
        )
    if path.is_file() and path.name.lower().endswith(LIST_SUFFIXES):
        if series is not None:
            raise UsageError("--series applies to one DICOM folder, not to a list of inputs", path)
        items = tuple(
            DetectInput(case_id_for(p), str(p), str(p), str(p), allow_gaps=allow_gaps)
            for p in _read_list(path)
        )
        seen: dict[str, str] = {}
        for it in items:
            if it.case_id in seen:
                raise InputError(
                    f"{seen[it.case_id]} and {it.path} both map to case id {it.case_id!r}; rename one", path
                )
            seen[it.case_id] = it.path
        return InputSet(items, multi=True, listed=True)
    item = DetectInput(case_id_for(path), str(path), str(path), str(path), series, allow_gaps)
    return InputSet((item,))
