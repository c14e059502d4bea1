"""Evaluating a cohort: matching once, then FROC/CPM, bootstrap CIs and AP per stratum.

:func:`evaluate_cohort` is what the CLI, training validation and the demo call with in-memory detections;
:func:`evaluate_truth` does the same from already loaded ground truth (the benchmark's entry point).
Writing eval.json and matches.csv (formats.md §4) is :func:`write_outputs`; drawing is in ``lymphcad.report``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from lymphcad import atomic
from lymphcad.boxes import cube_boxes
from lymphcad.cohort import FORMAT_VERSION, Cohort, IgnorePoint
from lymphcad.errors import InputError
from lymphcad.evaluate.ap import average_precision
from lymphcad.evaluate.bootstrap import bootstrap_sensitivities
from lymphcad.evaluate.froc import FrocCurve, froc_curve, sensitivity_at
from lymphcad.evaluate.matching import CaseMatch, CaseTruth, Outcome, match_case
from lymphcad.evaluate.settings import (
    AP_IOUS,
    CPM_RATES,
    FP_RATE_KEYS,
    FP_RATES,
    DuplicatePolicy,
    EvalSettings,
)
from lymphcad.evaluate.strata import Stratum, all_strata
from lymphcad.evaluate.truth import load_truth
from lymphcad.io.detections import DetectionTable
from lymphcad.measure.agreement import calibration_block, size_agreement

FloatArray = NDArray[np.float64]

#: FP rates at which the bootstrap band is drawn (log-spaced 1/8 … 8).
BAND_RATES: Final = np.geomspace(0.125, 8.0, 49)
MATCHES_COLUMNS: Final = (
    "seriesuid",
    "coordX",
    "coordY",
    "coordZ",
    "probability",
    "diameter_mm",
    "outcome",
    "counts_as",
    "node_id",
    "distance_mm",
    # the detection's measurement (formats.md 1.2 columns) and the matched node's true size
    "short_axis_mm",
    "long_axis_mm",
    "volume_ml",
    "location",
    "node_short_axis_mm",
    "node_long_axis_mm",
)
_CPM_IDX: Final = [FP_RATES.index(r) for r in CPM_RATES]


@dataclass(frozen=True, eq=False)
class StratumResult:
    """The numbers of one stratum (one block of eval.json) plus the curve and band for plotting.

    ``sensitivity_at_fp`` (R,) follows ``FP_RATES``; NaN where the stratum has no node. ``band_lo/hi``
    are the bootstrap 2.5 / 97.5 percentiles at ``BAND_RATES`` (None without bootstrap).
    """

    name: str
    n_cases: int
    n_nodes: int
    n_detections: int
    curve: FrocCurve | None
    sensitivity_at_fp: FloatArray
    cpm: float
    cpm_ci95: tuple[float, float] | None
    ap: tuple[float | None, ...]
    band_lo: FloatArray | None = None
    band_hi: FloatArray | None = None

    def to_json(self) -> dict[str, Any]:
        """The block as in eval.json (NaN written as null)."""
        return {
            "n_cases": self.n_cases,
            "n_nodes": self.n_nodes,
            "n_detections": self.n_detections,
            "sensitivity_at_fp": {
                k: _num(v) for k, v in zip(FP_RATE_KEYS, self.sensitivity_at_fp, strict=True)
            },
            "cpm": _num(self.cpm),
            "cpm_ci95": None if self.cpm_ci95 is None else [_num(self.cpm_ci95[0]), _num(self.cpm_ci95[1])],
            "max_fp_per_volume": None if self.curve is None else self.curve.max_fp_per_volume,
            "ap_iou_0.1": self.ap[0],
            "ap_iou_0.5": self.ap[1],
        }


@dataclass(frozen=True, eq=False)
class MatchedCohort:
    """Matching of every case once: the truths, per-case detections (row indices) and match results."""

    truths: tuple[CaseTruth, ...]
    rows: tuple[NDArray[np.int64], ...]
    matches: tuple[CaseMatch, ...]


@dataclass(frozen=True, eq=False)
class EvalResult:
    """A whole evaluation: settings, citations, every stratum and the per-detection matches."""

    settings: EvalSettings
    citation: tuple[str, ...]
    source: str
    pooled: StratumResult
    regions: dict[str, StratumResult]
    by_size: dict[str, StratumResult]
    detections: DetectionTable
    matched: MatchedCohort

    def to_json(self, *, matches_name: str = "matches.csv") -> dict[str, Any]:
        """eval.json (formats.md §4), keys exactly as specified."""
        out: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "rule": {
                **self.settings.to_json(),
                "eval_regions_cases": sum(t.eval_region_zyx is not None for t in self.matched.truths),
                "ignore_points": sum(int(t.ignore_radii_mm.size) for t in self.matched.truths),
                "label_masks_cases": sum(t.labels_zyx is not None for t in self.matched.truths),
            },
            "citation": list(self.citation),
            "pooled": self.pooled.to_json(),
        }
        for name, block in self.regions.items():
            out[name] = block.to_json()
        out["by_size"] = {k: v.to_json() for k, v in self.by_size.items()}
        out["matches"] = matches_name
        out["size_agreement"] = self.size_agreement_json()
        probs, hits = self.hit_labels()
        out["calibration"] = calibration_block(probs, hits)
        return out

    def _true_positives(self) -> tuple[NDArray[np.int64], FloatArray, FloatArray]:
        """Detection rows of the true positives and their nodes' true short and long axes (NaN unknown)."""
        rows: list[int] = []
        short: list[float] = []
        long: list[float] = []
        for t, r, m in zip(self.matched.truths, self.matched.rows, self.matched.matches, strict=True):
            for li in np.flatnonzero(m.outcome == Outcome.TP).tolist():
                ni = int(m.node_index[li])
                rows.append(int(r[li]))
                short.append(float(t.node_short_mm[ni]))
                long.append(float(t.node_long_mm[ni]))
        return np.asarray(rows, dtype=np.int64), np.asarray(short), np.asarray(long)

    def hit_labels(self) -> tuple[FloatArray, FloatArray]:
        """Probabilities and 0/1 labels (hits a node: tp or duplicate) of the detections that count (not
        ignored, not outside the evaluation region): the calibration target."""
        probs, hits = [], []
        for r, m in zip(self.matched.rows, self.matched.matches, strict=True):
            keep = (m.outcome != Outcome.IGNORED) & (m.outcome != Outcome.OUTSIDE_REGION)
            probs.append(self.detections.probabilities[r[keep]])
            hits.append(
                ((m.outcome == Outcome.TP) | (m.outcome == Outcome.DUPLICATE))[keep].astype(np.float64)
            )
        if not probs:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(probs), np.concatenate(hits)

    def size_agreement_json(self) -> dict[str, Any] | None:
        """Measured vs true short and long axis over the true-positive detections (None without sizes)."""
        det = self.detections
        assert det.short_axis_mm is not None and det.long_axis_mm is not None
        rows, true_short, true_long = self._true_positives()
        if not np.isfinite(det.short_axis_mm[rows]).any():
            return None
        return {
            "what": "measured minus true size over true-positive detections with both values (mm)",
            "short_axis": size_agreement(det.short_axis_mm[rows], true_short).to_json(),
            "long_axis": size_agreement(det.long_axis_mm[rows], true_long).to_json(),
        }

    def match_rows(self) -> list[list[str]]:
        """matches.csv rows (without header): cases in canonical order, then score descending."""
        det = self.detections
        out = []
        for truth, rows, m in zip(self.matched.truths, self.matched.rows, self.matched.matches, strict=True):
            local = np.lexsort((np.arange(rows.size), -det.probabilities[rows]))
            for li in local.tolist():
                r = int(rows[li])
                code = Outcome(int(m.outcome[li]))
                if code == Outcome.TP:
                    counts = "tp"
                elif code == Outcome.FP or (
                    code == Outcome.DUPLICATE and self.settings.duplicates == DuplicatePolicy.FP
                ):
                    counts = "fp"
                else:
                    counts = "none"
                ni = int(m.node_index[li])
                diam = det.diameters_mm[r]
                assert det.short_axis_mm is not None and det.long_axis_mm is not None
                assert det.volume_ml is not None and det.locations is not None
                node_short = np.nan if ni < 0 else float(truth.node_short_mm[ni])
                node_long = np.nan if ni < 0 else float(truth.node_long_mm[ni])
                out.append(
                    [
                        truth.case_id,
                        *(f"{v:.3f}" for v in det.centers_xyz[r]),
                        f"{det.probabilities[r]:.6f}",
                        "" if np.isnan(diam) else f"{diam:.2f}",
                        code.word,
                        counts,
                        "" if ni < 0 else str(int(truth.node_ids[ni])),
                        "" if ni < 0 else f"{m.distance_mm[li]:.3f}",
                        _cell(det.short_axis_mm[r], 2),
                        _cell(det.long_axis_mm[r], 2),
                        _cell(det.volume_ml[r], 3),
                        str(det.locations[r]),
                        _cell(node_short, 2),
                        _cell(node_long, 2),
                    ]
                )
        return out


def _cell(value: float, digits: int) -> str:
    return "" if not math.isfinite(value) else f"{value:.{digits}f}"


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


# -- computing ----------------------------------------------------------------------------------------
def check_detections(detections: DetectionTable, known_cases: Sequence[str]) -> None:
    """Reject in-memory detections with unknown case ids or invalid values (naming the row, 0-based)."""
    known = set(known_cases)
    for i, case in enumerate(detections.case_ids.tolist()):
        if case not in known:
            raise InputError(f"detection row {i}: unknown case id {case!r} (not in the cohort)")
    bad = (
        ~np.isfinite(detections.probabilities)
        | (detections.probabilities < 0)
        | (detections.probabilities > 1)
    )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"detection row {i}: probability {detections.probabilities[i]} is not in [0, 1]")
    bad = ~np.all(np.isfinite(detections.centers_xyz), axis=1)
    if bad.any():
        raise InputError(f"detection row {int(np.flatnonzero(bad)[0])}: coordinates are not finite")


def match_cohort(
    truths: Sequence[CaseTruth], detections: DetectionTable, settings: EvalSettings
) -> MatchedCohort:
    """Match every case once (detections grouped by case id)."""
    check_detections(detections, [t.case_id for t in truths])
    order = np.argsort(detections.case_ids, kind="stable")
    sorted_ids = detections.case_ids[order]
    rows_by_case = []
    matches = []
    for t in truths:
        lo = np.searchsorted(sorted_ids, t.case_id, side="left")
        hi = np.searchsorted(sorted_ids, t.case_id, side="right")
        rows = np.asarray(order[lo:hi], dtype=np.int64)
        rows_by_case.append(rows)
        matches.append(
            match_case(
                t,
                detections.centers_xyz[rows],
                detections.probabilities[rows],
                detections.diameters_mm[rows],
                settings,
            )
        )
    return MatchedCohort(tuple(truths), tuple(rows_by_case), tuple(matches))


def _ap_inputs(
    matched: MatchedCohort, detections: DetectionTable, stratum: Stratum, settings: EvalSettings
) -> tuple[list[FloatArray], list[FloatArray], list[FloatArray], list[NDArray[np.bool_]]]:
    """Per volume with a label mask: detection cubes/scores (evaluated, with a diameter) and GT boxes/ignore."""
    pb, ps, gb, gi = [], [], [], []
    for ci, (t, rows, m) in enumerate(zip(matched.truths, matched.rows, matched.matches, strict=True)):
        if not stratum.cases[ci] or t.labels_zyx is None:
            continue
        keep = (
            (m.outcome != Outcome.OUTSIDE_REGION)
            & (m.outcome != Outcome.IGNORED)
            & ~np.isnan(detections.diameters_mm[rows])
        )
        r = rows[keep]
        pb.append(cube_boxes(detections.centers_xyz[r], detections.diameters_mm[r]))
        ps.append(detections.probabilities[r])
        gb.append(t.instance_boxes_nndet if settings.nndet_boxes else t.instance_boxes)
        gi.append(stratum.instance_ignore[ci])
    return pb, ps, gb, gi


def evaluate_stratum(
    matched: MatchedCohort,
    detections: DetectionTable,
    stratum: Stratum,
    settings: EvalSettings,
    *,
    with_ap: bool = True,
) -> StratumResult:
    """FROC point estimates, bootstrap CI and AP of one stratum."""
    case_idx = np.flatnonzero(stratum.cases)
    n_det = int(sum(matched.rows[i].size for i in case_idx))
    tp_lists = []
    fp_lists = []
    n_nodes_case = []
    for i in case_idx.tolist():
        best = matched.matches[i].node_best[stratum.nodes[i]]
        tp_lists.append(best[np.isfinite(best)])
        fp_lists.append(matched.matches[i].fp_scores)
        n_nodes_case.append(int(np.count_nonzero(stratum.nodes[i])))
    n_nodes = int(sum(n_nodes_case))
    ap: tuple[float | None, ...] = (None,) * len(AP_IOUS)
    # AP needs boxes: with no diameter_mm anywhere it is undefined (None, "n/a"), not 0
    if with_ap and bool(np.isfinite(detections.diameters_mm).any()):
        pb, ps, gb, gi = _ap_inputs(matched, detections, stratum, settings)
        if pb:
            ap = tuple(
                average_precision(
                    pb,
                    ps,
                    gb,
                    gt_ignore=gi,
                    iou_thresholds=AP_IOUS,
                    max_detections=settings.ap_max_detections,
                )
            )
    if case_idx.size == 0:
        nan = np.full(len(FP_RATES), np.nan)
        return StratumResult(stratum.name, 0, 0, 0, None, nan, float("nan"), None, ap)
    curve = froc_curve(
        np.concatenate(tp_lists), np.concatenate(fp_lists), n_nodes=n_nodes, n_cases=int(case_idx.size)
    )
    sens = sensitivity_at(curve, FP_RATES)
    cpm_value = float(np.mean(sens[_CPM_IDX]))
    ci: tuple[float, float] | None = None
    band_lo = band_hi = None
    if settings.bootstrap > 0 and n_nodes > 0:
        rates = np.concatenate([np.asarray(FP_RATES), BAND_RATES])
        samples = bootstrap_sensitivities(
            tp_lists, fp_lists, n_nodes_case, rates, n_resamples=settings.bootstrap, seed=settings.seed
        )
        cpm_samples = samples[:, _CPM_IDX].mean(axis=1)
        if np.isfinite(cpm_samples).any():
            lo, hi = np.nanpercentile(cpm_samples, [2.5, 97.5])
            ci = (float(lo), float(hi))
            band = samples[:, len(FP_RATES) :]
            band_lo, band_hi = np.nanpercentile(band, [2.5, 97.5], axis=0)
    return StratumResult(
        stratum.name, int(case_idx.size), n_nodes, n_det, curve, sens, cpm_value, ci, ap, band_lo, band_hi
    )


def evaluate_truth(
    truths: Sequence[CaseTruth],
    detections: DetectionTable,
    settings: EvalSettings,
    *,
    citation: Sequence[str] = (),
    source: str = "",
) -> EvalResult:
    """Evaluate detections against loaded ground truth (canonical case order expected)."""
    truths = sorted(truths, key=lambda t: t.case_id)
    matched = match_cohort(truths, detections, settings)
    pooled_s, region_s, size_s = all_strata(truths)
    return EvalResult(
        settings=settings,
        citation=tuple(citation),
        source=source,
        pooled=evaluate_stratum(matched, detections, pooled_s, settings),
        regions={s.name: evaluate_stratum(matched, detections, s, settings) for s in region_s},
        by_size={s.name: evaluate_stratum(matched, detections, s, settings) for s in size_s},
        detections=detections,
        matched=matched,
    )


def evaluate_cohort(
    cohort: Cohort,
    detections: DetectionTable,
    settings: EvalSettings | None = None,
    *,
    ignore: Sequence[IgnorePoint] | None = None,
) -> EvalResult:
    """Evaluate in-memory detections on a cohort (reads its masks). ``ignore`` replaces ignore.csv."""
    settings = settings or EvalSettings()
    truths = load_truth(cohort, ignore=ignore)
    return evaluate_truth(
        truths, detections, settings, citation=cohort.info.citation, source=cohort.info.source
    )


# -- writing ------------------------------------------------------------------------------------------
def write_outputs(result: EvalResult, eval_json: str | Path) -> tuple[Path, Path]:
    """Write eval.json and matches.csv beside it, each atomically. Returns both paths."""
    eval_json = Path(eval_json)
    matches = eval_json.parent / "matches.csv"
    atomic.write_csv(matches, MATCHES_COLUMNS, result.match_rows())
    atomic.write_json(eval_json, result.to_json(matches_name=matches.name))
    return eval_json, matches
