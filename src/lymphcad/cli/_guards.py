"""Checks every command runs on its output locations *before* any work: nothing may overwrite an input.

An output is refused (exit 2, one line naming the file) when it is one of the command's inputs, lies inside
an input folder where a file already exists, or is one of a cohort's managed files (dataset.json, images/,
annotations.csv, ... — see docs/formats.md) that the command does not itself maintain; when its name lacks
the required extension; when two outputs of one run share a name; or (exit 1) when its folder cannot be
written. New commands call :func:`check_output_file` / :func:`check_output_dir` for each output.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Final

from lymphcad.errors import InputError, UsageError

#: Files a cohort folder owns (docs/formats.md "A cohort on disk").
COHORT_FILES: Final = ("dataset.json", "annotations.csv", "ignore.csv", "splits.json")
#: Folders a cohort folder owns.
COHORT_DIRS: Final = ("images", "labels", "eval_regions", "extra")


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _same_file(a: Path, b: Path) -> bool:
    if _resolved(a) == _resolved(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _is_within(path: Path, folder: Path) -> bool:
    try:
        _resolved(path).relative_to(_resolved(folder))
    except ValueError:
        return False
    return True


def cohort_root_of(path: Path) -> Path | None:
    """The cohort folder (one holding dataset.json) that ``path`` lies in or is, if any."""
    for folder in (_resolved(path), *_resolved(path).parents):
        if (folder / "dataset.json").is_file():
            return folder
    return None


def managed_part(path: Path) -> tuple[Path, str] | None:
    """(cohort root, relative name) when ``path`` is a file or folder a cohort manages, else None."""
    full = _resolved(path)
    for root in full.parents:
        if not (root / "dataset.json").is_file():
            continue
        rel = full.relative_to(root)
        top = rel.parts[0]
        if (len(rel.parts) == 1 and top in COHORT_FILES) or top in COHORT_DIRS:
            return root, rel.as_posix()
    return None


def has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    """Whether the file name ends in one of ``suffixes`` (case-insensitive; ``.nii.gz`` works)."""
    name = path.name.lower()
    return any(name.endswith(s.lower()) and len(name) > len(s) for s in suffixes)


def check_writable_location(path: Path, option: str) -> None:
    """The nearest existing folder above ``path`` can be written (so the run will not fail at the end)."""
    if path.is_dir():
        raise UsageError(f"{option} is a folder, expected a file name", path)
    for parent in _resolved(path).parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"cannot write {option}: {parent} is a file, not a folder", path)
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"cannot write {option}: no write permission in {parent}", path)
            return


def check_output_file(
    path: Path,
    option: str,
    *,
    suffixes: Sequence[str],
    inputs: Iterable[Path] = (),
    may_write: Collection[str] = (),
) -> Path:
    """Refuse an output file that would destroy an input or a cohort's managed file; returns ``path``.

    ``suffixes`` are the accepted endings (e.g. ``(".csv",)``); ``inputs`` are the command's input files and
    folders; ``may_write`` names cohort files the command owns (``split`` writes ``splits.json``).
    """
    if not has_suffix(path, suffixes):
        raise UsageError(f"{option} must end in {' or '.join(suffixes)}", path)
    for src in inputs:
        if _same_file(path, src):
            raise UsageError(f"{option} is an input of this command and would be overwritten", path)
        in_plain_folder = src.is_dir() and not (src / "dataset.json").is_file()  # e.g. a DICOM folder
        if in_plain_folder and _is_within(path, src) and path.exists():
            raise UsageError(
                f"{option} would overwrite a file inside the input folder {src}; choose another name", path
            )
    managed = managed_part(path)
    if managed is not None and managed[1] not in may_write:
        root, rel = managed
        raise UsageError(
            f"{option} would overwrite {rel}, a file of the cohort {root} (docs/formats.md); "
            "write it outside images/, labels/, eval_regions/, extra/ and the cohort's own files",
            path,
        )
    check_writable_location(path, option)
    return path


def check_output_dir(path: Path, option: str, *, inputs: Iterable[Path] = ()) -> Path:
    """Refuse an output folder (a cohort to create or extend) that is, holds or lies inside an input."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} must be a folder, but a file of that name exists", path)
    for src in inputs:
        if _same_file(path, src):
            raise UsageError(f"{option} is an input of this command and would be overwritten", path)
        if src.is_dir() and _is_within(path, src):
            raise UsageError(f"{option} lies inside the input folder {src}; choose a folder elsewhere", path)
        if _is_within(src, path):
            top = _resolved(src).relative_to(_resolved(path)).parts[0]
            if top in COHORT_DIRS or top in COHORT_FILES:
                raise UsageError(
                    f"{option} holds the input {src}, which writing the cohort could overwrite", path
                )
    for parent in (_resolved(path), *_resolved(path).parents):
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"cannot write {option}: {parent} is a file, not a folder", path)
            if not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"cannot write {option}: no write permission in {parent}", path)
            break
    return path


def check_distinct(outputs: Mapping[str, Path]) -> None:
    """Two outputs of one run must not share a file (e.g. ``--json`` and the provenance file)."""
    seen: dict[Path, str] = {}
    for option, path in outputs.items():
        key = _resolved(path)
        if key in seen:
            raise UsageError(f"{seen[key]} and {option} would both write this file", path)
        seen[key] = option


def check_input(path: Path, what: str = "input") -> Path:
    """An input that must exist (one line naming it otherwise)."""
    if not path.exists():
        raise InputError(f"no such file or folder ({what})", path)
    return path


def provenance_path(csv_path: Path) -> Path:
    """Where the provenance of a detections CSV goes: ``dets.csv`` → ``dets.csv.json``."""
    return Path(str(csv_path) + ".json")


def check_detections_output(
    out: Path, *, inputs: Iterable[Path], json_form: bool, option: str = "--out"
) -> dict[str, Path]:
    """Check a detections CSV output, its provenance file and (``--json``) its JSON form; returns them by option."""
    outputs = {option: out, "the provenance file": provenance_path(out)}
    if json_form:
        outputs["--json"] = out.with_suffix(".json")
    inputs = list(inputs)
    check_output_file(out, option, suffixes=(".csv",), inputs=inputs)
    for name, path in outputs.items():
        if name != option:
            check_output_file(path, f"{option} ({name})", suffixes=(".json",), inputs=inputs)
    check_distinct(outputs)
    return outputs


_DEVICE = re.compile(r"cpu|cuda|auto|cuda:\d+")


def check_device_name(device: str | None, option: str = "--device") -> None:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (checked without importing torch)."""
    if device is not None and not _DEVICE.fullmatch(device):
        raise UsageError(f"{option} must be cpu, cuda, cuda:N or auto, not {device!r}")
