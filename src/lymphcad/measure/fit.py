"""Fitting a calibration from a cohort, its detections and a validation fold (what ``lymphcad calibrate``
runs; the training loop may call :func:`fit_on_fold` at its end). Independent of how the model was trained:
it needs only raw-score detections of cases the model did not train on and their ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lymphcad.cohort import Cohort
from lymphcad.errors import InputError
from lymphcad.evaluate.run import EvalResult, evaluate_truth
from lymphcad.evaluate.settings import EvalSettings
from lymphcad.evaluate.truth import case_truth
from lymphcad.io.detections import DetectionTable, read_provenance
from lymphcad.measure.calibration import (
    Calibration,
    expected_calibration_error,
    fit_isotonic,
    fit_temperature,
)
from lymphcad.splits import read_splits


@dataclass(frozen=True)
class FitResult:
    """A fitted calibration and its effect on the fitting set (ECE before / after, 10 bins)."""

    calibration: Calibration
    cases: tuple[str, ...]
    ece_raw: float
    ece_calibrated: float


def fold_cases(cohort: Cohort, split: Path | None, fold: int) -> list[str]:
    """The validation cases of ``fold`` in ``split`` (all the cohort's cases without a split)."""
    if split is None:
        return list(cohort.cases)
    data = read_splits(split, cohort.cases)
    folds = data["folds"]
    if not 0 <= fold < len(folds):
        raise InputError(f"fold {fold} does not exist (the split has {len(folds)})", split)
    val = sorted(folds[fold]["val"])
    if not val:
        raise InputError(f"fold {fold} has no validation cases", split)
    return val


def check_raw(detections_csv: Path) -> None:
    """Refuse detections whose provenance says they are already calibrated (fit on raw scores only)."""
    prov = read_provenance(detections_csv)
    how = ((prov or {}).get("settings") or {}).get("measurement", {}).get("probability", "")
    if isinstance(how, str) and how.startswith("calibrated"):
        raise InputError(
            "these detections carry calibrated probabilities; fit on raw scores (detect --raw-scores)",
            detections_csv,
        )


def evaluate_cases(
    cohort: Cohort, detections: DetectionTable, cases: Sequence[str], settings: EvalSettings | None = None
) -> EvalResult:
    """Match the detections of ``cases`` to their ground truth (the other cases' rows are dropped)."""
    wanted = set(cases)
    keep = np.array([c in wanted for c in detections.case_ids.tolist()], dtype=bool)
    sub = DetectionTable(
        detections.case_ids[keep],
        detections.centers_xyz[keep],
        detections.probabilities[keep],
        detections.diameters_mm[keep],
    )
    truths = []
    for case in sorted(wanted):
        label = cohort.read_label(case)
        region = cohort.read_eval_region(case)
        geometry = label[1] if label is not None else region[1] if region is not None else None
        truths.append(
            case_truth(
                case,
                region=cohort.region_of(case),
                annotations=cohort.annotations_for(case),
                geometry=geometry,
                labels_zyx=None if label is None else label[0],
                eval_region_zyx=None if region is None else region[0],
                ignore=cohort.ignore,
            )
        )
    return evaluate_truth(truths, sub, settings or EvalSettings(bootstrap=0))


def fit_on_fold(
    cohort: Cohort,
    detections: DetectionTable,
    *,
    cases: Sequence[str],
    method: str = "isotonic",
    source: str = "",
) -> FitResult:
    """Fit a calibration to the raw scores of ``cases``' detections (hit a node = 1, false positive = 0)."""
    result = evaluate_cases(cohort, detections, cases)
    probs, hits = result.hit_labels()
    if method == "isotonic":
        cal = fit_isotonic(probs, hits, source=source)
    elif method == "temperature":
        cal = fit_temperature(probs, hits, source=source)
    else:
        raise ValueError(f"unknown calibration method {method!r} (isotonic or temperature)")
    return FitResult(
        cal,
        tuple(sorted(cases)),
        expected_calibration_error(probs, hits),
        expected_calibration_error(cal.apply(probs), hits),
    )
