"""Properties of the evaluation (hypothesis): perfect detections, a low-scored extra detection, row order and
case names, monotone curves."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lymphcad.cohort import Annotation
from lymphcad.evaluate import EvalSettings, evaluate_truth
from lymphcad.evaluate.matching import CaseTruth
from lymphcad.evaluate.settings import FP_RATE_KEYS, FP_RATES
from lymphcad.evaluate.truth import case_truth
from lymphcad.io.detections import DetectionTable

coord = st.floats(-60.0, 60.0, allow_nan=False)
point = st.tuples(coord, coord, coord)
score = st.integers(1, 999).map(lambda k: k / 1000)


@st.composite
def cohorts(draw: Any) -> tuple[list[CaseTruth], DetectionTable, EvalSettings]:
    n_cases = draw(st.integers(1, 4))
    truths = []
    case_ids, centers, probs, diam = [], [], [], []
    regions = ("mediastinal", "abdominal", "both")
    for c in range(n_cases):
        case = f"c{c}"
        nodes = draw(st.lists(point, max_size=4))
        anns = [
            Annotation(
                case, i + 1, xyz, draw(st.none() | st.floats(3, 30)), None, draw(st.sampled_from(regions[:2]))
            )
            for i, xyz in enumerate(nodes)
        ]
        truths.append(case_truth(case, region=draw(st.sampled_from(regions)), annotations=anns))
        for _ in range(draw(st.integers(0, 8))):
            if nodes and draw(st.booleans()):
                base = np.asarray(draw(st.sampled_from(nodes)))
                xyz = tuple(base + np.asarray(draw(st.tuples(*[st.floats(-6, 6)] * 3))))
            else:
                xyz = draw(point)
            case_ids.append(case)
            centers.append(xyz)
            probs.append(draw(score))
            diam.append(draw(st.floats(2, 20)))
    table = DetectionTable(
        np.array(case_ids, dtype=np.str_),
        np.array(centers, dtype=np.float64).reshape(-1, 3),
        np.array(probs, dtype=np.float64),
        np.array(diam, dtype=np.float64),
    )
    rule = EvalSettings(
        match="radius",
        radius_mm=draw(st.none() | st.floats(2, 15)),
        duplicates=draw(st.sampled_from(["ignore", "fp"])),
        bootstrap=0,
    )
    return truths, table, rule


def point_estimates(res: dict[str, Any]) -> dict[str, Any]:
    blocks = {
        "pooled": res["pooled"],
        "mediastinal": res["mediastinal"],
        "abdominal": res["abdominal"],
        **res["by_size"],
    }
    return {k: {kk: vv for kk, vv in v.items() if kk != "cpm_ci95"} for k, v in blocks.items()}


PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(cohorts(), st.randoms(use_true_random=False))
def test_perfect_detections_have_sensitivity_one(data: Any, rnd: Any) -> None:
    truths, _, rule = data
    # one detection at every node centre. Under --duplicates fp, a detection at a node that lies within the
    # radius of another (already hit) node is a duplicate and so, by design, an FP: "perfect" is judged
    # under the LUNA policy, where duplicates are neither TP nor FP.
    rule = dataclasses.replace(rule, duplicates="ignore")
    rows = [(t.case_id, tuple(xyz), rnd.randint(1, 999) / 1000) for t in truths for xyz in t.node_centers_xyz]
    if not rows:
        return
    table = DetectionTable(
        np.array([r[0] for r in rows], dtype=np.str_),
        np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 3),
        np.array([r[2] for r in rows]),
        np.full(len(rows), 10.0),
    )
    p = evaluate_truth(truths, table, rule).to_json()["pooled"]
    assert all(p["sensitivity_at_fp"][k] == 1.0 for k in FP_RATE_KEYS)
    assert p["cpm"] == 1.0


@PROPS
@given(cohorts(), st.data())
def test_low_scored_extra_detection_keeps_reached_points(data: Any, draw: Any) -> None:
    truths, table, rule = data
    before = evaluate_truth(truths, table, rule).pooled
    case = draw.draw(st.sampled_from([t.case_id for t in truths]))
    xyz = draw.draw(point)
    low = (table.probabilities.min() / 2) if len(table) else 0.0005
    extra = DetectionTable(
        np.append(table.case_ids, case),
        np.vstack([table.centers_xyz, [xyz]]),
        np.append(table.probabilities, low),
        np.append(table.diameters_mm, 5.0),
    )
    after = evaluate_truth(truths, extra, rule).pooled
    if before.n_nodes == 0:
        return
    assert before.curve is not None
    reached = np.asarray(FP_RATES) < before.curve.max_fp_per_volume
    np.testing.assert_array_equal(after.sensitivity_at_fp[reached], before.sensitivity_at_fp[reached])
    assert np.all(after.sensitivity_at_fp >= before.sensitivity_at_fp)


@PROPS
@given(cohorts(), st.randoms(use_true_random=False))
def test_row_order_and_case_names_do_not_matter(data: Any, rnd: Any) -> None:
    truths, table, rule = data
    ref = point_estimates(evaluate_truth(truths, table, rule).to_json())
    perm = np.arange(len(table))
    rnd.shuffle(perm)
    shuffled = DetectionTable(
        table.case_ids[perm], table.centers_xyz[perm], table.probabilities[perm], table.diameters_mm[perm]
    )
    assert point_estimates(evaluate_truth(truths, shuffled, rule).to_json()) == ref
    # rename: reverse the canonical order of the cases
    names = {t.case_id: f"z{99 - i}" for i, t in enumerate(truths)}
    renamed_truths = [
        CaseTruth(**{**{f: getattr(t, f) for f in t.__dataclass_fields__}, "case_id": names[t.case_id]})
        for t in truths
    ]
    renamed = DetectionTable(
        np.array([names[c] for c in table.case_ids.tolist()], dtype=np.str_),
        table.centers_xyz,
        table.probabilities,
        table.diameters_mm,
    )
    assert point_estimates(evaluate_truth(renamed_truths, renamed, rule).to_json()) == ref


@PROPS
@given(cohorts())
def test_curves_are_monotone(data: Any) -> None:
    truths, table, rule = data
    res = evaluate_truth(truths, table, rule)
    for block in (res.pooled, *res.regions.values(), *res.by_size.values()):
        if block.curve is None or block.n_nodes == 0:
            continue
        assert np.all(np.diff(block.curve.fps) >= 0)
        assert np.all(np.diff(block.curve.sensitivity) >= 0)
        assert np.all(np.diff(block.sensitivity_at_fp) >= 0)
        assert block.sensitivity_at_fp.min() >= 0.0 and block.sensitivity_at_fp.max() <= 1.0
