"""The collection's three annotation archives (spec §3) and safe ZIP extraction.

Each archive may be given as the TCIA zip or as the folder it was extracted to (any nesting: the zip holds a
top folder of its own name, so an extracted copy often reads ``X/X/<PID>/…``). Files are found by name,
never by depth:

* centroids: ``<PID>_lymphnodes_indices.txt``, ``<PID>_lymphnodes_physicalPoints.txt``,
  ``<PID>_lymphnodes_sizes.txt`` (one node per line, space-separated, no header);
* candidates: ``<PID>_posCADe_physicalPoints.txt``, ``<PID>_negCADe_physicalPoints.txt``;
* masks: ``<PID>_mask.nii.gz``.

Files the loader does not know (``.mps`` twins, READMEs) are counted and ignored.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Final

import numpy as np
from numpy.typing import NDArray

from lymphcad.errors import InputError
from lymphcad.hashing import file_sha256

BASE_URL: Final = "https://www.cancerimagingarchive.net/wp-content/uploads/"
MASKS_NAME: Final = "MED_ABD_LYMPH_MASKS"
ANNOTATIONS_NAME: Final = "MED_ABD_LYMPH_ANNOTATIONS"
CANDIDATES_NAME: Final = "MED_ABD_LYMPH_CANDIDATES"


@dataclass(frozen=True)
class ArchiveSpec:
    """Where an archive is published and, when known, its SHA-256 (spec §3)."""

    name: str
    url: str
    sha256: str | None
    url_verified: bool


ARCHIVES: Final = (
    ArchiveSpec(
        MASKS_NAME,
        BASE_URL + f"{MASKS_NAME}.zip",
        "ace3475c21f04c3f3a01e7fa5181fcbcf4a98cc78ea945e058f1b001d25d6745",
        True,
    ),
    # [U] in the spec: same prefix assumed, no published checksum
    ArchiveSpec(ANNOTATIONS_NAME, BASE_URL + f"{ANNOTATIONS_NAME}.zip", None, False),
    ArchiveSpec(CANDIDATES_NAME, BASE_URL + f"{CANDIDATES_NAME}.zip", None, False),
)

_PID: Final = r"(?P<pid>(?:MED|ABD)_LYMPH_\d+|[A-Za-z0-9][A-Za-z0-9_.\-]*?)"
CENTROID_RE: Final = re.compile(_PID + r"_lymphnodes_(?P<kind>indices|physicalPoints|sizes)\.txt$")
CANDIDATE_RE: Final = re.compile(_PID + r"_(?P<kind>pos|neg)CADe_physicalPoints\.txt$")
MASK_RE: Final = re.compile(_PID + r"_mask\.nii(\.gz)?$")


class ZipSlipError(InputError):
    """A zip entry would land outside the extraction folder (absolute path, drive letter or ``..``)."""


# -- safe zip handling -----------------------------------------------------------------------------------
def safe_member_path(name: str, where: str | Path | None = None) -> PurePosixPath:
    """The relative path of a zip entry, or ZipSlipError for absolute paths, drive letters and ``..``."""
    norm = name.replace("\\", "/")
    p = PurePosixPath(norm)
    if (
        not norm
        or norm.startswith("/")
        or re.match(r"^[A-Za-z]:", norm)
        or any(part == ".." for part in p.parts)
        or "\x00" in norm
    ):
        raise ZipSlipError(f"unsafe zip entry {name!r} refused (absolute path or '..')", where)
    parts = [part for part in p.parts if part not in ("", ".")]
    if not parts:
        raise ZipSlipError(f"empty zip entry name {name!r} refused", where)
    return PurePosixPath(*parts)


def check_zip_members(zf: zipfile.ZipFile, where: str | Path | None = None) -> list[zipfile.ZipInfo]:
    """All file entries (directories dropped), each checked with :func:`safe_member_path`; symlinks refused."""
    out = []
    for info in zf.infolist():
        safe_member_path(info.filename, where)
        mode = (info.external_attr >> 16) & 0o170000
        if mode == stat.S_IFLNK:
            raise ZipSlipError(f"symbolic link in zip entry {info.filename!r} refused", where)
        if not info.is_dir():
            out.append(info)
    return out


def extract_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest_root: Path, *, hasher: str | None = None
) -> str | None:
    """Extract one checked entry below ``dest_root``; returns its hex digest when ``hasher`` is given."""
    rel = safe_member_path(info.filename)
    target = dest_root.joinpath(*rel.parts)
    root = dest_root.resolve()
    if not str(target.resolve()).startswith(str(root) + os.sep):
        raise ZipSlipError(f"zip entry {info.filename!r} resolves outside the target folder", dest_root)
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.new(hasher) if hasher else None
    with zf.open(info) as src, open(target, "wb") as dst:
        while block := src.read(1 << 20):
            dst.write(block)
            if h is not None:
                h.update(block)
    return None if h is None else h.hexdigest()


def extract_zip(zip_path: str | Path, dest: str | Path) -> list[Path]:
    """Safely extract a whole zip into ``dest`` (a temp folder + rename: ``dest`` appears complete or not at all)."""
    from lymphcad.atomic import atomic_dir

    zip_path, dest = Path(zip_path), Path(dest)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"not a readable zip ({exc})", zip_path) from exc
    with zf, atomic_dir(dest) as tmp:
        members = check_zip_members(zf, zip_path)
        for info in members:
            extract_member(zf, info, tmp)
    return [dest.joinpath(*safe_member_path(i.filename).parts) for i in members]


# -- archive or folder, read the same way --------------------------------------------------------------
@dataclass
class Source:
    """An annotation archive given as a zip or a folder: lists entries by base name, opens them as bytes."""

    path: Path
    entries: dict[str, str] = field(default_factory=dict)  # base name -> member name / relative path
    duplicates: list[str] = field(default_factory=list)
    _zip: zipfile.ZipFile | None = None

    @classmethod
    def open(cls, path: str | Path) -> Source:
        """Index a zip or folder (zip entries are checked for zip-slip)."""
        path = Path(path)
        src = cls(path)
        if path.is_dir():
            names = [
                str(p.relative_to(path))
                for p in sorted(path.rglob("*"))
                if p.is_file() and not p.name.startswith("._")
            ]
        elif path.is_file():
            try:
                src._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as exc:
                raise InputError(f"not a zip file or folder ({exc})", path) from exc
            names = [i.filename for i in check_zip_members(src._zip, path)]
            names = [n for n in names if not PurePosixPath(n.replace("\\", "/")).name.startswith("._")]
        else:
            raise InputError("no such archive or folder", path)
        for name in names:
            base = PurePosixPath(name.replace("\\", "/")).name
            if base in src.entries:
                src.duplicates.append(name)
                continue
            src.entries[base] = name
        return src

    def close(self) -> None:
        """Close the underlying zip, if any."""
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_bytes(self, base: str) -> bytes:
        """Contents of the entry with this base name."""
        name = self.entries[base]
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    @contextmanager
    def local_file(self, base: str, tmp_dir: Path) -> Iterator[Path]:
        """A filesystem path for the entry (the file itself for a folder, a temporary copy for a zip)."""
        name = self.entries[base]
        if self._zip is None:
            yield self.path / name
            return
        tmp_dir.mkdir(parents=True, exist_ok=True)
        target = tmp_dir / f".{os.getpid()}.{base}"
        with self._zip.open(name) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        try:
            yield target
        finally:
            target.unlink(missing_ok=True)

    def where(self, base: str) -> str:
        """A human-readable location of an entry (for messages)."""
        return (
            f"{self.path}!{self.entries[base]}"
            if self._zip is not None
            else str(self.path / self.entries[base])
        )

    def match(self, pattern: re.Pattern[str]) -> Iterator[tuple[re.Match[str], str]]:
        """(match, base name) for every entry whose base name matches ``pattern``."""
        for base in sorted(self.entries):
            m = pattern.match(base)
            if m:
                yield m, base


# -- text files --------------------------------------------------------------------------------------------
def parse_numbers(text: str, *, where: str, min_cols: int, max_cols: int) -> list[list[float]]:
    """Rows of whitespace-separated numbers (no header). Blank lines are skipped."""
    rows: list[list[float]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.replace(",", " ").split()
        if not parts:
            continue
        if not min_cols <= len(parts) <= max_cols:
            raise InputError(f"expected {min_cols}-{max_cols} numbers, found {len(parts)}", where, n)
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise InputError(f"not a number in {line.strip()[:60]!r}", where, n) from None
        if not all(np.isfinite(values)):
            raise InputError("non-finite number", where, n)
        rows.append(values)
    return rows


def _decode(data: bytes) -> str:
    return data.decode("utf-8-sig", errors="replace")


@dataclass
class PatientCentroids:
    """One patient's radiologist centroids: (N, 3) indices and points (x, y, z), and sizes per node."""

    patient_id: str
    indices: NDArray[np.float64] | None
    points: NDArray[np.float64] | None
    sizes: list[list[float]] | None
    where: dict[str, str] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        """Number of nodes (lines)."""
        for arr in (self.points, self.indices):
            if arr is not None:
                return int(arr.shape[0])
        return len(self.sizes or [])


def read_centroids(source: Source) -> dict[str, PatientCentroids]:
    """All patients' centroid files; line counts of the three files must agree (row i = node i)."""
    found: dict[str, dict[str, str]] = {}
    for m, base in source.match(CENTROID_RE):
        found.setdefault(m["pid"], {})[m["kind"]] = base
    out: dict[str, PatientCentroids] = {}
    for pid, kinds in sorted(found.items()):
        arrays: dict[str, object] = {}
        where = {k: source.where(b) for k, b in kinds.items()}
        for kind, base in kinds.items():
            text = _decode(source.read_bytes(base))
            if kind == "sizes":
                arrays[kind] = parse_numbers(text, where=where[kind], min_cols=1, max_cols=2)
            else:
                rows = parse_numbers(text, where=where[kind], min_cols=3, max_cols=3)
                arrays[kind] = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
        pc = PatientCentroids(
            pid,
            arrays.get("indices"),  # type: ignore[arg-type]
            arrays.get("physicalPoints"),  # type: ignore[arg-type]
            arrays.get("sizes"),  # type: ignore[arg-type]
            where,
        )
        counts = {
            k: (len(v) if isinstance(v, list) else int(v.shape[0]))  # type: ignore[attr-defined]
            for k, v in arrays.items()
        }
        if len(set(counts.values())) > 1:
            raise InputError(
                f"{pid}: the centroid files disagree on the number of nodes ({counts})",
                next(iter(where.values())),
            )
        out[pid] = pc
    return out


def read_candidates(source: Source) -> dict[str, dict[str, NDArray[np.float64]]]:
    """pid -> {"pos": (N, 3), "neg": (M, 3)} physical points (LPS mm) of the NIH candidate generator."""
    out: dict[str, dict[str, NDArray[np.float64]]] = {}
    for m, base in source.match(CANDIDATE_RE):
        rows = parse_numbers(
            _decode(source.read_bytes(base)), where=source.where(base), min_cols=3, max_cols=3
        )
        out.setdefault(m["pid"], {})[m["kind"]] = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    return dict(sorted(out.items()))


def mask_entries(source: Source) -> dict[str, str]:
    """pid -> base name of its ``<PID>_mask.nii.gz``."""
    return {m["pid"]: base for m, base in source.match(MASK_RE)}


def unknown_entries(source: Source, patterns: tuple[re.Pattern[str], ...]) -> list[str]:
    """Entries that match none of ``patterns`` (reported, then ignored)."""
    return [b for b in sorted(source.entries) if not any(p.match(b) for p in patterns)]


def download_archive(
    spec: ArchiveSpec,
    out_dir: Path,
    *,
    get: Callable[[str, Path], int],
    base_url: str | None = None,
) -> tuple[Path, str, bool | None]:
    """Download one archive to ``out_dir/<name>.zip`` (temp file + rename) and check its SHA-256.

    ``get(url, target)`` performs the (retried) transfer. Returns (path, sha256, verified) where verified is
    None when the spec has no checksum for it. A checksum mismatch raises InputError and keeps nothing.
    """
    from lymphcad.atomic import atomic_path

    url = (base_url.rstrip("/") + "/" + f"{spec.name}.zip") if base_url else spec.url
    target = out_dir / f"{spec.name}.zip"
    with atomic_path(target) as tmp:
        get(url, tmp)
        digest = file_sha256(tmp)
        if spec.sha256 is not None and digest != spec.sha256:
            raise InputError(f"SHA-256 mismatch: got {digest}, expected {spec.sha256}; nothing kept", url)
        with zipfile.ZipFile(tmp) as zf:
            check_zip_members(zf, url)
            bad = zf.testzip()
            if bad is not None:
                raise InputError(f"corrupt zip entry {bad!r}; nothing kept", url)
    return target, digest, (None if spec.sha256 is None else True)


def open_text(path: Path) -> IO[str]:
    """Open a text file as UTF-8."""
    return open(path, encoding="utf-8")
