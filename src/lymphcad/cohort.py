"""Cohorts on disk (formats.md §2): dataset.json, images/, labels/, annotations.csv, eval_regions/, ignore.csv.

Everything that writes a cohort (phantom, insert, prepare, import) goes through :class:`CohortWriter`;
everything that reads one (detect, evaluate, train, info) goes through :func:`open_cohort`, which
validates the folder and reports problems as one line naming the file (and row) and the problem.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import numpy as np
from numpy.typing import NDArray

from lymphcad import atomic
from lymphcad.errors import InputError, UsageError
from lymphcad.geometry import CTVolume, Geometry
from lymphcad.io.checks import check_text_file
from lymphcad.io.detections import parse_number
from lymphcad.io.nifti import header_geometry, read_nifti, read_nifti_array, write_ct, write_nifti

FORMAT_VERSION: Final = "1.1"
REGIONS: Final = ("mediastinal", "abdominal")
CASE_REGIONS: Final = ("mediastinal", "abdominal", "both")
ANNOTATION_COLUMNS: Final = (
    "case_id",
    "node_id",
    "coordX",
    "coordY",
    "coordZ",
    "short_axis_mm",
    "long_axis_mm",
    "region",
    "label_id",
)
IGNORE_COLUMNS: Final = ("case_id", "coordX", "coordY", "coordZ", "radius_mm")
_DATASET_KEYS: Final = (
    "format_version",
    "name",
    "description",
    "cases",
    "case_regions",
    "license",
    "citation",
    "source",
    "content_hashes",
)
_CASE_ID_RE: Final = re.compile(r"^[A-Za-z0-9_.\-]+$")
#: an annotation may sit at most this far (in voxels) outside the outermost voxel centres
_OUTSIDE_TOLERANCE_VOX: Final = 0.5


def check_case_id(case_id: str, *, where: str | Path | None = None, line: int | None = None) -> str:
    """Return ``case_id`` if it uses only letters, digits, ``_``, ``-`` and ``.``; else raise InputError."""
    if not case_id or not _CASE_ID_RE.match(case_id) or case_id in (".", ".."):
        raise InputError(f"invalid case id {case_id!r} (letters, digits, _ - . only)", where, line)
    return case_id


def voxel_hash(array: NDArray[Any]) -> str:
    """sha256 of an int16 voxel array in C order (z, y, x), little-endian: the cohort's content hash."""
    data = np.ascontiguousarray(array, dtype="<i2")
    return hashlib.sha256(data.data.cast("B")).hexdigest()  # hashes the buffer: no copy of the voxels


@dataclass(frozen=True)
class Annotation:
    """One ground-truth node (a row of annotations.csv). Centre in world LPS mm."""

    case_id: str
    node_id: int
    center_xyz: tuple[float, float, float]
    short_axis_mm: float | None = None
    long_axis_mm: float | None = None
    region: str | None = None
    label_id: int | None = None


@dataclass(frozen=True)
class IgnorePoint:
    """A finding whose hits count neither as TP nor FP (a row of ignore.csv)."""

    case_id: str
    center_xyz: tuple[float, float, float]
    radius_mm: float


@dataclass
class DatasetInfo:
    """The contents of dataset.json. Unknown keys are kept in ``extra`` and written back."""

    name: str
    description: str
    cases: list[str]
    case_regions: dict[str, str]
    license: str
    citation: list[str]
    source: str
    format_version: str = FORMAT_VERSION
    content_hashes: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form with cases sorted (canonical order)."""
        out: dict[str, Any] = {
            "format_version": self.format_version,
            "name": self.name,
            "description": self.description,
            "cases": sorted(self.cases),
            "case_regions": {c: self.case_regions[c] for c in sorted(self.case_regions)},
            "license": self.license,
            "citation": list(self.citation),
            "source": self.source,
        }
        if self.content_hashes is not None:
            out["content_hashes"] = {c: self.content_hashes[c] for c in sorted(self.content_hashes)}
        for key, value in self.extra.items():
            if key not in out:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, data: Any, path: str | Path) -> DatasetInfo:
        """Parse and validate dataset.json contents."""
        if not isinstance(data, dict):
            raise InputError("dataset.json must hold a JSON object", path)
        for key in ("format_version", "name", "cases", "case_regions", "license", "citation", "source"):
            if key not in data:
                raise InputError(f"missing key {key!r}", path)
        version = str(data["format_version"])
        if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
            raise InputError(f"format_version {version!r} is not supported (expected {FORMAT_VERSION})", path)
        cases = data["cases"]
        if not isinstance(cases, list) or not all(isinstance(c, str) for c in cases):
            raise InputError("'cases' must be a list of case id strings", path)
        for c in cases:
            check_case_id(c, where=path)
        if len(set(cases)) != len(cases):
            raise InputError("'cases' lists a case twice", path)
        regions = data["case_regions"]
        if not isinstance(regions, dict):
            raise InputError("'case_regions' must map case id to region", path)
        for c in cases:
            if c not in regions:
                raise InputError(f"case_regions has no entry for case {c!r}", path)
            if regions[c] not in CASE_REGIONS:
                raise InputError(f"case_regions[{c!r}] = {regions[c]!r} is not one of {CASE_REGIONS}", path)
        unknown = set(regions) - set(cases)
        if unknown:
            raise InputError(f"case_regions names unknown cases {sorted(unknown)[:3]}", path)
        citation = data["citation"]
        if isinstance(citation, str):
            citation = [citation]
        if not isinstance(citation, list):
            raise InputError("'citation' must be a list of strings", path)
        return cls(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            cases=list(cases),
            case_regions={c: str(regions[c]) for c in cases},
            license=str(data["license"]),
            citation=[str(c) for c in citation],
            source=str(data["source"]),
            format_version=version,
            content_hashes=data.get("content_hashes"),
            extra={k: v for k, v in data.items() if k not in _DATASET_KEYS},
        )


# -- annotations.csv and ignore.csv -------------------------------------------------------------------
def _fmt_float(value: float | None, digits: int = 4) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}".rstrip("0").rstrip(".") if math.isfinite(value) else ""


def write_annotations(path: str | Path, rows: Iterable[Annotation]) -> None:
    """Write annotations.csv atomically, sorted by (case_id, node_id)."""
    ordered = sorted(rows, key=lambda a: (a.case_id, a.node_id))
    atomic.write_csv(
        path,
        ANNOTATION_COLUMNS,
        (
            [
                a.case_id,
                a.node_id,
                *(_fmt_float(v) for v in a.center_xyz),
                _fmt_float(a.short_axis_mm, 3),
                _fmt_float(a.long_axis_mm, 3),
                a.region or "",
                "" if a.label_id is None else a.label_id,
            ]
            for a in ordered
        ),
    )


def _read_csv_rows(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV with a required header; returns (line number, row) pairs."""
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", path) from exc
    check_text_file(path)
    with fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise InputError(
                f"missing column(s) {', '.join(missing)} (header is {','.join(header)})", path, 1
            )
        return [(i + 2, row) for i, row in enumerate(reader)]


def _parse_float(
    text: str | None, name: str, path: Path, line: int, *, optional: bool = False
) -> float | None:
    text = (text or "").strip()
    if not text:
        if optional:
            return None
        raise InputError(f"{name} is empty", path, line)
    return parse_number(text, name, path, line)


def _parse_int(text: str | None, name: str, path: Path, line: int, *, optional: bool = False) -> int | None:
    text = (text or "").strip()
    if not text:
        if optional:
            return None
        raise InputError(f"{name} is empty", path, line)
    try:
        return int(text)
    except ValueError:
        raise InputError(f"{name} {text!r} is not an integer", path, line) from None


def read_annotations(path: str | Path, *, known_cases: Iterable[str] | None = None) -> list[Annotation]:
    """Read annotations.csv; each problem raises InputError naming the file and line."""
    path = Path(path)
    known = None if known_cases is None else set(known_cases)
    out: list[Annotation] = []
    seen: set[tuple[str, int]] = set()
    for line, row in _read_csv_rows(path, ANNOTATION_COLUMNS):
        case_id = check_case_id((row["case_id"] or "").strip(), where=path, line=line)
        if known is not None and case_id not in known:
            raise InputError(f"unknown case id {case_id!r} (not in dataset.json)", path, line)
        node_id = _parse_int(row["node_id"], "node_id", path, line)
        assert node_id is not None
        if node_id < 1:
            raise InputError(f"node_id {node_id} must be >= 1", path, line)
        if (case_id, node_id) in seen:
            raise InputError(f"duplicate node {case_id}/{node_id}", path, line)
        seen.add((case_id, node_id))
        xyz = tuple(_parse_float(row[c], c, path, line) for c in ("coordX", "coordY", "coordZ"))
        short = _parse_float(row["short_axis_mm"], "short_axis_mm", path, line, optional=True)
        long_ = _parse_float(row["long_axis_mm"], "long_axis_mm", path, line, optional=True)
        for name, v in (("short_axis_mm", short), ("long_axis_mm", long_)):
            if v is not None and v <= 0:
                raise InputError(f"{name} {v} must be positive", path, line)
        region = (row["region"] or "").strip() or None
        if region is not None and region not in REGIONS:
            raise InputError(f"region {region!r} is not one of {REGIONS}", path, line)
        label_id = _parse_int(row["label_id"], "label_id", path, line, optional=True)
        if label_id is not None and label_id < 1:
            raise InputError(f"label_id {label_id} must be >= 1", path, line)
        out.append(Annotation(case_id, node_id, xyz, short, long_, region, label_id))  # type: ignore[arg-type]
    return out


def write_ignore(path: str | Path, rows: Iterable[IgnorePoint]) -> None:
    """Write ignore.csv atomically."""
    ordered = sorted(rows, key=lambda p: (p.case_id, p.center_xyz))
    atomic.write_csv(
        path,
        IGNORE_COLUMNS,
        ([p.case_id, *(_fmt_float(v) for v in p.center_xyz), _fmt_float(p.radius_mm, 3)] for p in ordered),
    )


def read_ignore(path: str | Path, *, known_cases: Iterable[str] | None = None) -> list[IgnorePoint]:
    """Read ignore.csv (case_id, coordX, coordY, coordZ, radius_mm)."""
    path = Path(path)
    known = None if known_cases is None else set(known_cases)
    out = []
    for line, row in _read_csv_rows(path, IGNORE_COLUMNS):
        case_id = check_case_id((row["case_id"] or "").strip(), where=path, line=line)
        if known is not None and case_id not in known:
            raise InputError(f"unknown case id {case_id!r} (not in dataset.json)", path, line)
        xyz = tuple(_parse_float(row[c], c, path, line) for c in ("coordX", "coordY", "coordZ"))
        radius = _parse_float(row["radius_mm"], "radius_mm", path, line)
        assert radius is not None
        if radius <= 0:
            raise InputError(f"radius_mm {radius} must be positive", path, line)
        out.append(IgnorePoint(case_id, xyz, radius))  # type: ignore[arg-type]
    return out


# -- reading a cohort ---------------------------------------------------------------------------------
class Mask(NamedTuple):
    """A mask read from a cohort (labels/ or eval_regions/) with the geometry of its file."""

    array: NDArray[Any]  # (z, y, x)
    geometry: Geometry


#: the per-region ground-truth class of a node (``lymphcad.phantom.truthrule``)
TruthClass = Literal["positive", "ignore", "negative"]
_TRUTH_CLASSES: Final[dict[str, TruthClass]] = {
    "positive": "positive",
    "ignore": "ignore",
    "negative": "negative",
}


@dataclass(frozen=True)
class FullTruthNode:
    """One node of a case's full truth (``extra/<case>_nodes.csv``, written by ``phantom`` and ``insert``):
    every node, enlarged or not, unlike annotations.csv which lists the marked enlarged ones."""

    center_xyz: tuple[float, float, float]  # world LPS mm
    short_axis_mm: float | None
    long_axis_mm: float | None
    #: the writer's verdict (short axis measured on the voxel mask ≥ 10 mm), None when the column is empty
    enlarged: bool | None
    #: the per-region ground-truth class (``truth`` column of insert cohorts), None when absent
    truth: TruthClass | None = None


class TruthMode(StrEnum):
    """Which truth of a cohort a training run learns from."""

    #: annotations.csv (what the radiologists marked; the collection's own labels)
    LABELS = "labels"
    #: the full truth ``extra/<case>_nodes.csv`` (every node, enlarged or not: phantom and insert cohorts)
    EXTRA = "extra"

    @classmethod
    def parse(cls, value: str | TruthMode) -> TruthMode:
        """The mode named by ``value``; UsageError naming the choices otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise UsageError(f"--truth must be 'labels' or 'extra', got {value!r}") from None


#: columns of extra/<case>_nodes.csv that the full truth is read from (the writers add more)
FULL_TRUTH_COLUMNS: Final = ("coordX", "coordY", "coordZ", "short_axis_mm", "long_axis_mm", "enlarged")


def _truth_class(text: str | None) -> TruthClass | None:
    """The ``truth`` column's class, None when empty (or a value no writer produces)."""
    return _TRUTH_CLASSES.get((text or "").strip())


@dataclass
class Cohort:
    """A validated cohort folder. Images are read lazily, one case at a time."""

    root: Path
    info: DatasetInfo
    annotations: list[Annotation]
    ignore: list[IgnorePoint]
    geometries: dict[str, Geometry]

    @property
    def cases(self) -> list[str]:
        """Case ids in canonical (sorted) order."""
        return sorted(self.info.cases)

    def image_path(self, case_id: str) -> Path:
        """Path of the case's CT."""
        return self.root / "images" / f"{case_id}.nii.gz"

    def label_path(self, case_id: str) -> Path | None:
        """Path of the case's instance mask, or None when the cohort has none for it."""
        p = self.root / "labels" / f"{case_id}.nii.gz"
        return p if p.exists() else None

    def eval_region_path(self, case_id: str) -> Path | None:
        """Path of the case's evaluation-region mask, or None."""
        p = self.root / "eval_regions" / f"{case_id}.nii.gz"
        return p if p.exists() else None

    def region_of(self, case_id: str) -> str:
        """The case's region from dataset.json (mediastinal, abdominal or both)."""
        return self.info.case_regions[case_id]

    def annotations_for(self, case_id: str) -> list[Annotation]:
        """Ground-truth nodes of one case, by node id."""
        return sorted((a for a in self.annotations if a.case_id == case_id), key=lambda a: a.node_id)

    def ignore_for(self, case_id: str) -> list[IgnorePoint]:
        """Ignore points of one case."""
        return [p for p in self.ignore if p.case_id == case_id]

    def read_image(self, case_id: str) -> CTVolume:
        """Read the case's CT as int16 HU."""
        return read_nifti(self.image_path(case_id))

    def read_mask(self, path: Path, *, dtype: Any) -> Mask:
        """Read a mask aligned with its case's image (checked) and cast to ``dtype``."""
        array, geom = read_nifti_array(path)
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.equal(np.round(array), array)):
            raise InputError("mask holds non-integer values", path)
        if array.min(initial=0) < 0:
            raise InputError("mask holds negative values", path)
        return Mask(array.astype(dtype), geom)

    def read_label(self, case_id: str) -> Mask | None:
        """The instance mask (uint16, 0 = background) and its geometry, or None."""
        p = self.label_path(case_id)
        return None if p is None else self.read_mask(p, dtype=np.uint16)

    def read_eval_region(self, case_id: str) -> Mask | None:
        """The evaluation-region mask (uint8, 1 = ground truth defined) and its geometry, or None."""
        p = self.eval_region_path(case_id)
        return None if p is None else self.read_mask(p, dtype=np.uint8)

    def full_truth_path(self, case_id: str) -> Path | None:
        """Path of the case's full truth ``extra/<case>_nodes.csv``, or None when the cohort has none."""
        p = self.root / "extra" / f"{case_id}_nodes.csv"
        return p if p.is_file() else None

    def read_full_truth(self, case_id: str) -> list[FullTruthNode]:
        """Every node of the case's full truth (InputError naming file and line for a bad row)."""
        path = self.full_truth_path(case_id)
        if path is None:
            raise InputError(f"case {case_id!r} has no full truth file", self.root / "extra")
        nodes = []
        for line, row in _read_csv_rows(path, FULL_TRUTH_COLUMNS[:3]):
            centre = [_parse_float(row.get(c), c, path, line, optional=True) for c in FULL_TRUTH_COLUMNS[:3]]
            if None in centre:
                raise InputError("node row without a centre (coordX/coordY/coordZ)", path, line)
            flag = (row.get("enlarged") or "").strip()
            nodes.append(
                FullTruthNode(
                    (float(centre[0] or 0.0), float(centre[1] or 0.0), float(centre[2] or 0.0)),
                    _parse_float(row.get("short_axis_mm"), "short_axis_mm", path, line, optional=True),
                    _parse_float(row.get("long_axis_mm"), "long_axis_mm", path, line, optional=True),
                    flag == "1" if flag in ("0", "1") else None,
                    _truth_class(row.get("truth")),
                )
            )
        return nodes

    def splits_path(self) -> Path:
        """Where splits.json lives."""
        return self.root / "splits.json"


def read_dataset_json(root: str | Path) -> DatasetInfo:
    """Read and validate COHORT/dataset.json."""
    path = Path(root) / "dataset.json"
    if not path.is_file():
        raise InputError("not a cohort: dataset.json is missing", path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg} at line {exc.lineno})", path) from exc
    return DatasetInfo.from_json(data, path)


def open_cohort(root: str | Path, *, check_headers: bool = True) -> Cohort:
    """Open and validate a cohort.

    Checks: dataset.json keys; every case has ``images/<case>.nii.gz`` with a readable 3D header;
    labels/ and eval_regions/ files share their image's grid; annotations.csv and ignore.csv rows name
    known cases and lie inside their volume. With ``check_headers=False`` only dataset.json and the CSVs
    are checked (fast; no image is opened).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("cohort folder does not exist", root)
    info = read_dataset_json(root)
    geometries: dict[str, Geometry] = {}
    if check_headers:
        for case in sorted(info.cases):
            img = root / "images" / f"{case}.nii.gz"
            if not img.is_file():
                raise InputError(f"image of case {case!r} is missing", img)
            geom = header_geometry(img)
            geometries[case] = geom
            for sub in ("labels", "eval_regions"):
                mask = root / sub / f"{case}.nii.gz"
                if mask.is_file():
                    diffs = geom.grid_differences(header_geometry(mask), atol_mm=1e-2)
                    if diffs:
                        raise InputError(f"grid differs from images/{case}.nii.gz: {'; '.join(diffs)}", mask)
    ann_path = root / "annotations.csv"
    annotations = read_annotations(ann_path, known_cases=info.cases) if ann_path.is_file() else []
    ign_path = root / "ignore.csv"
    ignore = read_ignore(ign_path, known_cases=info.cases) if ign_path.is_file() else []
    if geometries:
        _check_inside(ann_path, [(a.case_id, a.center_xyz) for a in annotations], geometries)
        _check_inside(ign_path, [(p.case_id, p.center_xyz) for p in ignore], geometries)
    return Cohort(root, info, annotations, ignore, geometries)


def _check_inside(
    path: Path, points: list[tuple[str, tuple[float, float, float]]], geometries: dict[str, Geometry]
) -> None:
    for line, (case_id, xyz) in enumerate(points, start=2):
        geom = geometries[case_id]
        if not geom.contains_world(xyz, margin_vox=_OUTSIDE_TOLERANCE_VOX):
            zyx = geom.world_to_zyx(xyz)
            raise InputError(
                f"point ({xyz[0]:.2f}, {xyz[1]:.2f}, {xyz[2]:.2f}) of case {case_id!r} lies outside its volume "
                f"(voxel z,y,x = {zyx[0]:.1f}, {zyx[1]:.1f}, {zyx[2]:.1f}; shape {geom.shape_zyx})",
                path,
                line,
            )


# -- writing a cohort ---------------------------------------------------------------------------------
class CohortWriter:
    """Writes a cohort case by case; dataset.json and the CSVs are (re)written by :meth:`finish`.

    Each file is written atomically, so an interrupted job leaves only whole files; ``has_case`` lets a
    resumed job skip cases that are already complete.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def image_path(self, case_id: str) -> Path:
        """Where a case's CT goes."""
        return self.root / "images" / f"{check_case_id(case_id)}.nii.gz"

    def has_case(self, case_id: str) -> bool:
        """True when the case's image is already on disk."""
        return self.image_path(case_id).is_file()

    def write_image(self, case_id: str, volume: CTVolume) -> str:
        """Write images/<case>.nii.gz (int16) and return its content hash.

        The hash is computed in a thread while ISA-L deflates the file (both release the GIL).
        """
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as pool:
            digest = pool.submit(voxel_hash, volume.array)
            write_ct(self.image_path(case_id), volume)
            return digest.result()

    def write_label(self, case_id: str, labels: NDArray[Any], geometry: Geometry) -> None:
        """Write labels/<case>.nii.gz as uint16 (0 = background, 1..N instances)."""
        self._write_mask("labels", case_id, labels, geometry, np.uint16)

    def write_eval_region(self, case_id: str, mask: NDArray[Any], geometry: Geometry) -> None:
        """Write eval_regions/<case>.nii.gz as uint8."""
        self._write_mask("eval_regions", case_id, mask, geometry, np.uint8)

    def _write_mask(self, sub: str, case_id: str, mask: NDArray[Any], geometry: Geometry, dtype: Any) -> None:
        if mask.min(initial=0) < 0 or mask.max(initial=0) > np.iinfo(dtype).max:
            raise ValueError(f"{sub} values out of range for {np.dtype(dtype).name}")
        write_nifti(self.root / sub / f"{check_case_id(case_id)}.nii.gz", mask.astype(dtype), geometry)

    def extra_dir(self) -> Path:
        """The cohort's extra/ folder for tool-specific side files (created)."""
        d = self.root / "extra"
        d.mkdir(exist_ok=True)
        return d

    def finish(
        self,
        info: DatasetInfo,
        annotations: Iterable[Annotation],
        ignore: Iterable[IgnorePoint] | None = None,
    ) -> DatasetInfo:
        """Write annotations.csv, ignore.csv (when given) and dataset.json (last, so it marks completion)."""
        write_annotations(self.root / "annotations.csv", annotations)
        if ignore is not None:
            write_ignore(self.root / "ignore.csv", ignore)
        info = replace(info, cases=sorted(info.cases))
        atomic.write_json(self.root / "dataset.json", info.to_json())
        return info
