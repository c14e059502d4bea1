"""Detections CSV (formats.md §3): ``seriesuid,coordX,coordY,coordZ,probability,diameter_mm`` + provenance.

``seriesuid`` is the case id; coordinates are world LPS mm; probability in [0, 1]; diameter may be empty.
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


@dataclass(frozen=True)
class Detection:
    """One detection: case id, centre in world LPS mm, probability, optional diameter in mm."""

    case_id: str
    center_xyz: tuple[float, float, float]
    probability: float
    diameter_mm: float | None = None


@dataclass(frozen=True)
class DetectionTable:
    """Detections as columns (fast for evaluation): N rows."""

    case_ids: NDArray[np.str_]
    centers_xyz: NDArray[np.float64]  # (N, 3)
    probabilities: NDArray[np.float64]  # (N,)
    diameters_mm: NDArray[np.float64]  # (N,), NaN where unknown

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
            np.array([np.nan if d.diameter_mm is None else d.diameter_mm for d in rows], dtype=np.float64),
        )

    def rows(self) -> list[Detection]:
        """Back to Detection rows."""
        return [
            Detection(
                str(self.case_ids[i]),
                (float(self.centers_xyz[i, 0]), float(self.centers_xyz[i, 1]), float(self.centers_xyz[i, 2])),
                float(self.probabilities[i]),
                None if np.isnan(self.diameters_mm[i]) else float(self.diameters_mm[i]),
            )
            for i in range(len(self))
        ]


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
            diam_text = (row.get("diameter_mm") or "").strip()
            diam = None
            if diam_text:
                diam = parse_number(diam_text, "diameter_mm", path, line)
                if diam <= 0:
                    raise InputError(f"diameter_mm {diam} must be positive", path, line)
            dets.append(Detection(case_id, xyz, prob, diam))
    return DetectionTable.from_detections(dets)


def write_detections(path: str | Path, detections: Iterable[Detection]) -> None:
    """Write a detections CSV atomically (sorted by case, then descending probability)."""
    rows = sorted(detections, key=lambda d: (d.case_id, -d.probability, d.center_xyz))
    atomic.write_csv(
        path,
        DETECTION_COLUMNS,
        (
            [
                d.case_id,
                *(f"{v:.3f}" for v in d.center_xyz),
                f"{d.probability:.6f}",
                "" if d.diameter_mm is None else f"{d.diameter_mm:.2f}",
            ]
            for d in rows
        ),
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
