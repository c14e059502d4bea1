"""Detections CSV (formats.md §3): ``seriesuid,coordX,coordY,coordZ,probability,diameter_mm`` + provenance.

``seriesuid`` is the case id; coordinates are world LPS mm; probability in [0, 1]; diameter may be empty.
The optional 1.2 columns ``short_axis_mm,long_axis_mm,volume_ml,location,i,j,k`` (RECIST size, volume,
region:station and the voxel index in the input image) follow in that order when any detection has one;
files without them (six columns) read as before, with the new fields unknown.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from lymphcad import __version__, atomic
from lymphcad.errors import InputError
from lymphcad.io.checks import check_text_file

DETECTION_COLUMNS: Final = ("seriesuid", "coordX", "coordY", "coordZ", "probability", "diameter_mm")
#: the optional columns of formats.md 1.2, in their order after the six above
MEASUREMENT_COLUMNS: Final = ("short_axis_mm", "long_axis_mm", "volume_ml", "location", "i", "j", "k")


@dataclass(frozen=True)
class Detection:
    """One detection: case id, centre in world LPS mm, probability, optional diameter in mm.

    The optional measurement (formats.md 1.2): RECIST short and long axis in mm, volume in ml, location
    (``mediastinal:4R``, ``abdominal:paraaortic``, …) and the voxel index (i, j, k) of the centre in the input
    image. None where unknown.
    """

    case_id: str
    center_xyz: tuple[float, float, float]
    probability: float
    diameter_mm: float | None = None
    short_axis_mm: float | None = None
    long_axis_mm: float | None = None
    volume_ml: float | None = None
    location: str | None = None
    ijk: tuple[int, int, int] | None = None

    @property
    def measured(self) -> bool:
        """True when any of the 1.2 measurement fields is known."""
        return any(
            v is not None
            for v in (self.short_axis_mm, self.long_axis_mm, self.volume_ml, self.location, self.ijk)
        )


def _nan_if_none(values: Iterable[float | None]) -> NDArray[np.float64]:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


@dataclass(frozen=True)
class DetectionTable:
    """Detections as columns (fast for evaluation): N rows."""

    case_ids: NDArray[np.str_]
    centers_xyz: NDArray[np.float64]  # (N, 3)
    probabilities: NDArray[np.float64]  # (N,)
    diameters_mm: NDArray[np.float64]  # (N,), NaN where unknown
    #: optional 1.2 measurement columns; None = all unknown (filled with NaN / "" / -1 on construction)
    short_axis_mm: NDArray[np.float64] | None = None  # (N,)
    long_axis_mm: NDArray[np.float64] | None = None  # (N,)
    volume_ml: NDArray[np.float64] | None = None  # (N,)
    locations: NDArray[np.str_] | None = None  # (N,), "" where unknown
    ijk: NDArray[np.int64] | None = None  # (N, 3), -1 rows where unknown

    def __post_init__(self) -> None:
        n = len(self)
        for name in ("short_axis_mm", "long_axis_mm", "volume_ml"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(n, np.nan))
        if self.locations is None:
            object.__setattr__(self, "locations", np.full(n, "", dtype=np.str_))
        if self.ijk is None:
            object.__setattr__(self, "ijk", np.full((n, 3), -1, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])

    @classmethod
    def from_detections(cls, dets: Iterable[Detection]) -> DetectionTable:
        """Build from Detection rows."""
        rows = list(dets)
        return cls(
            np.array([d.case_id for d in rows], dtype=np.str_),
            np.array([d.center_xyz for d in rows], dtype=np.float64).reshape(-1, 3),
            np.array([d.probability for d in rows], dtype=np.float64),
            _nan_if_none(d.diameter_mm for d in rows),
            _nan_if_none(d.short_axis_mm for d in rows),
            _nan_if_none(d.long_axis_mm for d in rows),
            _nan_if_none(d.volume_ml for d in rows),
            np.array([d.location or "" for d in rows], dtype=np.str_),
            np.array([d.ijk or (-1, -1, -1) for d in rows], dtype=np.int64).reshape(-1, 3),
        )

    def rows(self) -> list[Detection]:
        """Back to Detection rows."""
        assert self.short_axis_mm is not None and self.long_axis_mm is not None and self.volume_ml is not None
        assert self.locations is not None and self.ijk is not None
        out = []
        for i in range(len(self)):
            ijk = self.ijk[i]
            out.append(
                Detection(
                    str(self.case_ids[i]),
                    (
                        float(self.centers_xyz[i, 0]),
                        float(self.centers_xyz[i, 1]),
                        float(self.centers_xyz[i, 2]),
                    ),
                    float(self.probabilities[i]),
                    _none_if_nan(self.diameters_mm[i]),
                    _none_if_nan(self.short_axis_mm[i]),
                    _none_if_nan(self.long_axis_mm[i]),
                    _none_if_nan(self.volume_ml[i]),
                    str(self.locations[i]) or None,
                    None if ijk[0] < 0 else (int(ijk[0]), int(ijk[1]), int(ijk[2])),
                )
            )
        return out


def parse_number(text: str | None, name: str, path: Path, line: int) -> float:
    """A finite float from a CSV cell, else InputError naming the column, file and line."""
    text = (text or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{name} {text!r} is not a number", path, line) from None
    if not math.isfinite(value):
        raise InputError(f"{name} {text!r} is not finite", path, line)
    return value


def read_detections(path: str | Path, *, known_cases: Iterable[str] | None = None) -> DetectionTable:
    """Read a detections CSV; a bad row raises InputError naming the file and line. Empty file = no rows."""
    path = Path(path)
    known = None if known_cases is None else set(known_cases)
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read detections ({exc.strerror})", path) from exc
    check_text_file(path, "detections CSV")
    dets: list[Detection] = []
    with fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames
        if header is None:
            return DetectionTable.from_detections([])
        missing = [c for c in DETECTION_COLUMNS if c != "diameter_mm" and c not in header]
        if missing:
            raise InputError(
                f"missing column(s) {', '.join(missing)} (header is {','.join(header)})", path, 1
            )
        for i, row in enumerate(reader):
            line = i + 2
            case_id = (row["seriesuid"] or "").strip()
            if not case_id:
                raise InputError("seriesuid is empty", path, line)
            if known is not None and case_id not in known:
                raise InputError(f"unknown case id {case_id!r} (not in the cohort)", path, line)
            xyz = (
                parse_number(row["coordX"], "coordX", path, line),
                parse_number(row["coordY"], "coordY", path, line),
                parse_number(row["coordZ"], "coordZ", path, line),
            )
            prob = parse_number(row["probability"], "probability", path, line)
            if not 0.0 <= prob <= 1.0:
                raise InputError(f"probability {prob} is outside [0, 1]", path, line)
            diam = _optional_positive(row, "diameter_mm", path, line)
            short = _optional_positive(row, "short_axis_mm", path, line)
            long = _optional_positive(row, "long_axis_mm", path, line)
            volume = _optional_positive(row, "volume_ml", path, line)
            location = (row.get("location") or "").strip() or None
            dets.append(
                Detection(case_id, xyz, prob, diam, short, long, volume, location, _read_ijk(row, path, line))
            )
    return DetectionTable.from_detections(dets)


def _optional_positive(row: dict[str, str | None], name: str, path: Path, line: int) -> float | None:
    """An optional positive number column: None when absent or empty."""
    text = (row.get(name) or "").strip()
    if not text:
        return None
    value = parse_number(text, name, path, line)
    if value <= 0:
        raise InputError(f"{name} {value} must be positive", path, line)
    return value


def _read_ijk(row: dict[str, str | None], path: Path, line: int) -> tuple[int, int, int] | None:
    """The optional voxel index (i, j, k): all three or none, non-negative integers."""
    texts = [(row.get(c) or "").strip() for c in ("i", "j", "k")]
    if not any(texts):
        return None
    if not all(texts):
        raise InputError("i, j, k must be given together", path, line)
    values = []
    for name, text in zip(("i", "j", "k"), texts, strict=True):
        v = parse_number(text, name, path, line)
        if v < 0 or v != int(v):
            raise InputError(f"{name} {text!r} is not a voxel index (a non-negative integer)", path, line)
        values.append(int(v))
    return (values[0], values[1], values[2])


def _cell(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def write_detections(
    path: str | Path, detections: Iterable[Detection], *, measurements: bool | None = None
) -> None:
    """Write a detections CSV atomically (sorted by case, then descending probability).

    ``measurements``: write the 1.2 columns (None = when any detection has a measurement field).
    """
    rows = sorted(detections, key=lambda d: (d.case_id, -d.probability, d.center_xyz))
    extra = any(d.measured for d in rows) if measurements is None else measurements

    def cells(d: Detection) -> list[str]:
        out = [
            d.case_id,
            *(f"{v:.3f}" for v in d.center_xyz),
            f"{d.probability:.6f}",
            _cell(d.diameter_mm, 2),
        ]
        if extra:
            out += [
                _cell(d.short_axis_mm, 2),
                _cell(d.long_axis_mm, 2),
                _cell(d.volume_ml, 3),
                d.location or "",
            ]
            out += ["", "", ""] if d.ijk is None else [str(v) for v in d.ijk]
        return out

    atomic.write_csv(
        path, DETECTION_COLUMNS + (MEASUREMENT_COLUMNS if extra else ()), (cells(d) for d in rows)
    )


def write_detections_json(path: str | Path, detections: Iterable[Detection]) -> None:
    """The JSON form of the detections (beside the CSV, never instead of it)."""
    rows = sorted(detections, key=lambda d: (d.case_id, -d.probability))
    atomic.write_json(
        path,
        [
            {
                "seriesuid": d.case_id,
                "center_xyz_lps_mm": list(d.center_xyz),
                "probability": d.probability,
                "diameter_mm": d.diameter_mm,
                "short_axis_mm": d.short_axis_mm,
                "long_axis_mm": d.long_axis_mm,
                "volume_ml": d.volume_ml,
                "location": d.location,
                "ijk": None if d.ijk is None else list(d.ijk),
            }
            for d in rows
        ],
    )


def write_provenance(
    csv_path: str | Path,
    *,
    model_name: str | None,
    model_sha256: str | None,
    settings: dict[str, Any],
    inputs: dict[str, str],
    license: str | None,
    citation: list[str],
) -> Path:
    """Write ``<csv>.json`` beside a detections CSV: version, model, settings, inputs + hashes, time, citations.

    ``inputs`` maps each input path to its content hash.
    """
    target = Path(str(csv_path) + ".json")
    atomic.write_json(
        target,
        {
            "lymphcad_version": __version__,
            "model": {"name": model_name, "sha256": model_sha256},
            "settings": settings,
            "inputs": inputs,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "license": license,
            "citation": citation,
        },
    )
    return target


def read_provenance(csv_path: str | Path) -> dict[str, Any] | None:
    """The provenance beside a detections CSV, or None when absent."""
    p = Path(str(csv_path) + ".json")
    if not p.is_file():
        return None
    data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    return data
