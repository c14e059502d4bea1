"""lymphcad.evaluate on hand-computed cohorts: every matching rule, both duplicate policies, eval_regions,
ignore points, strata, AP and the bootstrap. Expected numbers are worked out in the comments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluate_fixtures import MASK_DETS, dets, world, write_mask_cohort
from lymphcad.cohort import Annotation, IgnorePoint, open_cohort
from lymphcad.errors import InputError
from lymphcad.evaluate import EvalSettings, evaluate_cohort, evaluate_truth
from lymphcad.evaluate.ap import average_precision
from lymphcad.evaluate.bootstrap import bootstrap_sensitivities, resample_counts
from lymphcad.evaluate.froc import froc_curve, sensitivity_at
from lymphcad.evaluate.settings import FP_RATES
from lymphcad.evaluate.truth import case_truth
from lymphcad.io.detections import DetectionTable


def sens_dict(block: dict[str, object]) -> dict[str, float]:
    return block["sensitivity_at_fp"]  # type: ignore[return-value]


# -- a radius-only cohort in memory ---------------------------------------------------------------------
def radius_truths() -> list:
    """Case A: n1 at 0 (short 10 → auto R 5), n2 at x=30 (short 16 → R 8). Case B: n1 at 0 (short 24 → R 12)."""
    anns = [
        Annotation("A", 1, (0.0, 0.0, 0.0), 10.0, None, "mediastinal"),
        Annotation("A", 2, (30.0, 0.0, 0.0), 16.0, None, "mediastinal"),
        Annotation("B", 1, (0.0, 0.0, 0.0), 24.0, None, "abdominal"),
    ]
    return [
        case_truth("A", region="mediastinal", annotations=anns),
        case_truth("B", region="abdominal", annotations=anns),
    ]


RADIUS_DETS = [
    ("A", (1.0, 0.0, 0.0), 0.9, 6.0),  # n1 (tp)
    ("A", (0.0, 2.0, 0.0), 0.8, 6.0),  # n1 again (duplicate)
    ("A", (50.0, 0.0, 0.0), 0.7, 6.0),  # fp
    ("A", (36.0, 0.0, 0.0), 0.6, 6.0),  # n2 at 6 mm (tp with auto R 8; fp with R 5)
    ("B", (100.0, 0.0, 0.0), 0.95, 6.0),  # fp
    ("B", (0.0, 0.0, 11.0), 0.5, 6.0),  # n1 at 11 mm (tp with auto R 12; fp with R 5)
]


def test_radius_auto_duplicates_ignore() -> None:
    # TP scores 0.9, 0.6, 0.5 of 3 nodes; FP 0.95, 0.7 over 2 cases. Curve:
    # (0,0) (0.5,0) (0.5,1/3) (1,1/3) (1,2/3) (1,1) → 0, 0, 1/3 (upper value at the jump), then 1.
    res = evaluate_truth(
        radius_truths(), dets(RADIUS_DETS), EvalSettings(match="radius", bootstrap=0)
    ).to_json()
    p = res["pooled"]
    assert list(sens_dict(p).values()) == pytest.approx([0, 0, 1 / 3, 1, 1, 1, 1, 1, 1])
    assert p["cpm"] == pytest.approx(13 / 21)
    assert p["max_fp_per_volume"] == pytest.approx(1.0)
    assert (p["n_cases"], p["n_nodes"], p["n_detections"]) == (2, 3, 6)
    assert p["cpm_ci95"] is None


def test_radius_auto_duplicates_fp() -> None:
    # FP 0.95, 0.8 (the duplicate), 0.7: (0.5,0) (0.5,1/3) (1,1/3) (1.5,1/3) (1.5,2/3) (1.5,1)
    # → 0, 0, 1/3, 1/3, 1, 1, 1, 1, 1; CPM = (2/3 + 3) / 7 = 11/21
    settings = EvalSettings(match="radius", duplicates="fp", bootstrap=0)
    p = evaluate_truth(radius_truths(), dets(RADIUS_DETS), settings).to_json()["pooled"]
    assert list(sens_dict(p).values()) == pytest.approx([0, 0, 1 / 3, 1 / 3, 1, 1, 1, 1, 1])
    assert p["cpm"] == pytest.approx(11 / 21)
    assert p["max_fp_per_volume"] == pytest.approx(1.5)


def test_fixed_radius() -> None:
    # R = 5 mm: only n1 of A is hit (0.9); FP 0.95, 0.7, 0.6, 0.5 → sens 1/3 from 0.5 FP/vol on; CPM 5/21
    settings = EvalSettings(match="radius", radius_mm=5.0, bootstrap=0)
    p = evaluate_truth(radius_truths(), dets(RADIUS_DETS), settings).to_json()["pooled"]
    assert list(sens_dict(p).values()) == pytest.approx(
        [0, 0, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 1 / 3]
    )
    assert p["cpm"] == pytest.approx(5 / 21)
    assert p["max_fp_per_volume"] == pytest.approx(2.0)


def test_empty_detections_give_sensitivity_zero() -> None:
    p = evaluate_truth(radius_truths(), dets([]), EvalSettings(bootstrap=10)).to_json()["pooled"]
    assert list(sens_dict(p).values()) == [0.0] * len(FP_RATES)
    assert p["cpm"] == 0.0 and p["max_fp_per_volume"] == 0.0 and p["n_detections"] == 0


def test_unknown_case_and_bad_probability_name_the_row() -> None:
    with pytest.raises(InputError, match="row 1: unknown case id 'Z'"):
        evaluate_truth(radius_truths(), dets([RADIUS_DETS[0], ("Z", (0, 0, 0), 0.5, None)]), EvalSettings())
    bad = DetectionTable(np.array(["A", "A"]), np.zeros((2, 3)), np.array([0.5, np.nan]), np.full(2, np.nan))
    with pytest.raises(InputError, match="row 1: probability nan"):
        evaluate_truth(radius_truths(), bad, EvalSettings())


@pytest.mark.parametrize(
    ("match", "duplicates", "expected", "cpm"),
    [
        # mask: A tp .9, C tp .7 (fallback), FP B .8 and D .85 → (0,.5) (.5,.5) (1,.5) (1,1)
        ("mask", "ignore", [0.5, 0.5, 0.5, 1, 1, 1, 1, 1, 1], 11 / 14),
        # radius: A fp .9, D fp .85, B tp .8, C tp .7 → (.5,0) (1,0) (1,.5) (1,1)
        ("radius", "ignore", [0, 0, 0, 1, 1, 1, 1, 1, 1], 4 / 7),
        # either: A tp, B duplicate (ignored), C tp, D fp → (0,.5) (.5,.5) (.5,1)
        ("mask-or-radius", "ignore", [0.5, 0.5, 1, 1, 1, 1, 1, 1, 1], 6 / 7),
        # either, duplicates as FP: B is an FP at .8 → same curve as mask
        ("mask-or-radius", "fp", [0.5, 0.5, 0.5, 1, 1, 1, 1, 1, 1], 11 / 14),
    ],
)
def test_mask_rules(tmp_path: Path, match: str, duplicates: str, expected: list[float], cpm: float) -> None:
    write_mask_cohort(tmp_path)
    res = evaluate_cohort(
        open_cohort(tmp_path), dets(MASK_DETS), EvalSettings(match=match, duplicates=duplicates, bootstrap=0)
    ).to_json()
    assert list(sens_dict(res["pooled"]).values()) == pytest.approx(expected)
    assert res["pooled"]["cpm"] == pytest.approx(cpm)
    assert res["rule"]["match"] == match and res["rule"]["duplicates"] == duplicates


def test_regions_and_sizes(tmp_path: Path) -> None:
    write_mask_cohort(tmp_path)
    res = evaluate_cohort(
        open_cohort(tmp_path), dets(MASK_DETS), EvalSettings(match="mask", bootstrap=0)
    ).to_json()
    # mediastinal: case M only, TP .9, FP .8 → 1 everywhere
    assert res["mediastinal"]["cpm"] == pytest.approx(1.0)
    assert res["mediastinal"]["n_cases"] == 1 and res["mediastinal"]["max_fp_per_volume"] == pytest.approx(
        1.0
    )
    # abdominal: case N only, FP .85, TP .7 → (1,0) (1,1): 0 below 1 FP/vol
    assert list(sens_dict(res["abdominal"]).values()) == pytest.approx([0, 0, 0, 1, 1, 1, 1, 1, 1])
    # size <10: node M/1 only, FP over both cases (.85, .8), the hit on N/1 left out → 1 everywhere
    assert res["by_size"]["<10"]["cpm"] == pytest.approx(1.0)
    assert res["by_size"]["<10"]["n_cases"] == 2 and res["by_size"]["<10"]["n_nodes"] == 1
    # size 10-15: node N/1, TP .7 after FP .85, .8 → (.5,0) (1,0) (1,1)
    assert list(sens_dict(res["by_size"]["10-15"]).values()) == pytest.approx([0, 0, 0, 1, 1, 1, 1, 1, 1])
    assert res["by_size"]["15-20"]["n_nodes"] == 0 and res["by_size"]["15-20"]["cpm"] is None
    assert res["by_size"][">=20"]["sensitivity_at_fp"]["1"] is None


def test_eval_region_and_ignore(tmp_path: Path) -> None:
    # D is dropped (outside the region) or ignored: mask rule, FP only B .8 → (0,.5) (.5,.5) (.5,1)
    for kw, word in (({"eval_region": True}, "outside_region"), ({"ignore": True}, "ignored")):
        root = tmp_path / word
        write_mask_cohort(root, **kw)
        result = evaluate_cohort(open_cohort(root), dets(MASK_DETS), EvalSettings(match="mask", bootstrap=0))
        assert result.pooled.cpm == pytest.approx(6 / 7)
        outcomes = {row[4]: row[6] for row in result.match_rows()}
        assert outcomes == {"0.900000": "tp", "0.800000": "fp", "0.700000": "tp", "0.850000": word}


def test_ignore_override(tmp_path: Path) -> None:
    write_mask_cohort(tmp_path)
    points = [IgnorePoint("N", world((6, 12, 30)), 3.0)]
    result = evaluate_cohort(
        open_cohort(tmp_path), dets(MASK_DETS), EvalSettings(match="mask", bootstrap=0), ignore=points
    )
    assert result.pooled.cpm == pytest.approx(6 / 7)


def test_matches_rows(tmp_path: Path) -> None:
    write_mask_cohort(tmp_path)
    result = evaluate_cohort(
        open_cohort(tmp_path), dets(MASK_DETS), EvalSettings(match="mask-or-radius", bootstrap=0)
    )
    rows = result.match_rows()
    assert [r[0] for r in rows] == ["M", "M", "N", "N"]
    assert [(r[6], r[7], r[8]) for r in rows] == [
        ("tp", "tp", "1"),
        ("duplicate", "none", "1"),
        ("fp", "fp", ""),
        ("tp", "tp", "1"),
    ]
    assert float(rows[0][9]) == pytest.approx(6.3, abs=1e-3)
    assert float(rows[1][9]) == pytest.approx(4.0, abs=1e-3)


def test_out_of_volume_point_does_not_wrap(tmp_path: Path) -> None:
    write_mask_cohort(tmp_path)
    # x index -27 lies outside the volume; numpy would wrap it to x = 5, inside the rod
    outside = world((5, 10, -27))
    result = evaluate_cohort(
        open_cohort(tmp_path), dets([("M", outside, 0.9, None)]), EvalSettings(match="mask", bootstrap=0)
    )
    assert result.match_rows()[0][6] == "fp"


# -- AP by hand -------------------------------------------------------------------------------------------
def test_ap_hand_values() -> None:
    gt = [np.array([[0, 0, 0, 10, 10, 10], [20, 20, 20, 30, 30, 30]], float)]
    pred = [np.array([[0, 0, 0, 10, 10, 10], [5, 0, 0, 15, 10, 10], [25, 20, 20, 35, 30, 30]], float)]
    scores = [np.array([0.9, 0.8, 0.7])]
    ap01, ap05 = average_precision(pred, scores, gt, iou_thresholds=(0.1, 0.5))
    # IoU 0.1: tp, fp (gt taken), tp → recall .5 .5 1, precision 1 .5 .667 → 51 points at 1, 50 at 2/3
    assert ap01 == pytest.approx((51 + 50 * 2 / 3) / 101)
    # IoU 0.5: only the first → 51 recall points at precision 1
    assert ap05 == pytest.approx(51 / 101)
    # an ignored gt: the third detection matches it and counts neither way
    ap = average_precision(pred, scores, gt, gt_ignore=[np.array([False, True])], iou_thresholds=(0.1,))
    assert ap == [pytest.approx(1.0)]
    assert average_precision([np.zeros((0, 6))], [np.zeros(0)], [np.zeros((0, 6))]) == [None, None]
    # per-volume cap: only the best detection survives
    assert average_precision(pred, scores, gt, iou_thresholds=(0.1,), max_detections=1) == [
        pytest.approx(51 / 101)
    ]


def test_ap_in_cohort(tmp_path: Path) -> None:
    write_mask_cohort(tmp_path)
    rod = [("M", world((5, 10.5, 15)), 0.9, 10.0)]
    res = evaluate_cohort(open_cohort(tmp_path), dets(rod), EvalSettings(bootstrap=0)).to_json()
    # the rod's box is 14.7 × 1.6 × 2 mm; a 10 mm cube at its centre: IoU = (10·1.6·2) / (14.7·1.6·2 + 1000 − 32)
    iou = 32.0 / (14.7 * 1.6 * 2 + 1000 - 32)
    assert iou < 0.1
    assert res["pooled"]["ap_iou_0.1"] == 0.0
    big = [("M", world((5, 10.5, 15)), 0.9, 3.0)]
    # a 3 mm cube: inter 3·1.6·2 = 9.6, union 47.04 + 27 − 9.6 → IoU 0.148 ≥ 0.1
    res = evaluate_cohort(open_cohort(tmp_path), dets(big), EvalSettings(bootstrap=0)).to_json()
    assert res["pooled"]["ap_iou_0.1"] == pytest.approx(1.0)
    assert res["pooled"]["ap_iou_0.5"] == 0.0
    assert res["abdominal"]["ap_iou_0.1"] is None  # case N has no instance


# -- curve and bootstrap ------------------------------------------------------------------------------------
def test_curve_exact_jump_and_clamp() -> None:
    curve = froc_curve([0.9, 0.5], [0.7], n_nodes=4, n_cases=2)
    np.testing.assert_allclose(curve.fps, [0, 0, 0.5, 0.5])
    np.testing.assert_allclose(curve.sensitivity, [0, 0.25, 0.25, 0.5])
    np.testing.assert_allclose(sensitivity_at(curve, [0.25, 0.5, 8]), [0.25, 0.5, 0.5])


@pytest.mark.parametrize("levels", [None, 7])
def test_bootstrap_with_all_ones_equals_point_estimate(levels: int | None) -> None:
    rng = np.random.default_rng(0)
    tp = [rng.uniform(0, 1, k) for k in (3, 0, 5, 2)]
    fp = [rng.uniform(0, 1, k) for k in (40, 10, 0, 25)]
    if levels:  # many ties between and among TP and FP scores
        tp = [np.round(t * levels) / levels for t in tp]
        fp = [np.round(f * levels) / levels for f in fp]
    n_nodes = [4, 1, 5, 2]
    curve = froc_curve(np.concatenate(tp), np.concatenate(fp), n_nodes=12, n_cases=4)
    rates = np.array([0.1, 0.125, 0.25, 0.5, 0.75, 1.0, 2.0, 3.3, 8.0, 30.0])
    got = bootstrap_sensitivities(
        tp, fp, n_nodes, rates, n_resamples=0, seed=0, counts=np.ones((3, 4), np.int64)
    )
    np.testing.assert_allclose(
        got, np.broadcast_to(sensitivity_at(curve, rates), (3, rates.size)), atol=1e-12
    )
    # one resample = cases drawn with multiplicity = the curve of the duplicated lists
    counts = np.array([[2, 0, 1, 1]])
    dup = froc_curve(
        np.concatenate([tp[0], tp[0], tp[2], tp[3]]),
        np.concatenate([fp[0], fp[0], fp[2], fp[3]]),
        n_nodes=15,
        n_cases=4,
    )
    got = bootstrap_sensitivities(tp, fp, n_nodes, rates, n_resamples=0, seed=0, counts=counts)
    np.testing.assert_allclose(got[0], sensitivity_at(dup, rates), atol=1e-12)


def test_bootstrap_is_seeded_and_ci_brackets_cpm() -> None:
    counts_a = resample_counts(5, 20, seed=7)
    assert counts_a.shape == (20, 5) and (counts_a.sum(axis=1) == 5).all()
    np.testing.assert_array_equal(counts_a, resample_counts(5, 20, seed=7))
    truths = radius_truths()
    r1 = evaluate_truth(
        truths, dets(RADIUS_DETS), EvalSettings(match="radius", bootstrap=200, seed=3)
    ).to_json()
    r2 = evaluate_truth(
        truths, dets(RADIUS_DETS), EvalSettings(match="radius", bootstrap=200, seed=3)
    ).to_json()
    assert r1 == r2
    lo, hi = r1["pooled"]["cpm_ci95"]
    assert lo <= r1["pooled"]["cpm"] <= hi


def test_published_points_are_those_of_literature_md(shared_dir: Path) -> None:
    from lymphcad.evaluate.literature import OPERATING_POINTS, PUBLISHED_AP, PUBLISHED_LABEL

    text = (shared_dir / "docs" / "literature.md").read_text(encoding="utf-8")
    for p in OPERATING_POINTS:
        pct = p.sensitivity * 100
        assert f"{pct:.1f} %" in text or f"{pct:.0f} %" in text, p
        assert f"{p.fp_per_volume:g}" in text, p
    for a in PUBLISHED_AP:
        assert f"{a.ap:.3f}" in text, a
    assert "real" in PUBLISHED_LABEL and "CT Lymph Nodes" in PUBLISHED_LABEL
