"""Agreement with independent implementations (MONAI, test-only): FROC/CPM and COCO AP on random cohorts.

Quirks of MONAI handled here (shared/docs/literature.md, "FROC conventions"):
* ``compute_froc_curve_data`` skips the lowest value as a threshold. Missed nodes enter ``tp_probs`` as 0.0,
  so normally the skipped value is that 0; when every node is hit it would drop the lowest real score.
  We append one extra 0.0 to ``tp_probs`` (``num_targets`` unchanged), which restores "every detection
  score is a threshold" without changing any count at a positive threshold.
* ``compute_fp_tp_probs_nd`` stores TP scores as float32, so scores are drawn as multiples of 2**-20
  (exact in float32) and strictly positive.
* ``compute_fp_tp_probs_nd`` takes integer voxel indices in the mask's axis order and wraps negatives:
  all detections lie inside the volume.
* MONAI's COCO code rounds cumulative TP/FP counts to float32, so a recall of exactly k/100 can fall just
  below its recall point; the total number of ground-truth boxes is drawn coprime with 10 so no recall
  k/n_gt (0 < k < n_gt) equals a recall point.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lymphcad.cohort import Annotation
from lymphcad.evaluate import EvalSettings, evaluate_truth
from lymphcad.evaluate.ap import average_precision
from lymphcad.evaluate.settings import CPM_RATES, FP_RATE_KEYS, FP_RATES
from lymphcad.evaluate.truth import case_truth
from lymphcad.geometry import Geometry
from lymphcad.io.detections import DetectionTable

froc = pytest.importorskip("monai.metrics.froc")
GEOM = Geometry((10, 14, 12), (2.5, 0.9, 0.8), (-5.0, 12.0, 100.0), np.diag([1.0, -1.0, 1.0]))


def random_cohort(seed: int):  # type: ignore[no-untyped-def]
    """Random instance masks (consecutive ids), nodes = instances, detections at random voxels."""
    rng = np.random.default_rng(seed)
    n_cases = int(rng.integers(1, 7))
    truths, masks = [], []
    case_ids, centers, probs = [], [], []
    n_det_total = int(rng.integers(0, 120))
    pool = rng.choice(np.arange(1, 2**20), size=max(n_det_total, 1), replace=False) / 2**20
    k = 0
    for c in range(n_cases):
        case = f"case{c:02d}"
        mask = np.zeros(GEOM.shape_zyx, np.uint16)
        n_inst = int(rng.integers(0, 5))
        for i in range(1, n_inst + 1):
            z, y, x = (int(rng.integers(0, s - 3)) for s in GEOM.shape_zyx)
            dz, dy, dx = (int(v) for v in rng.integers(1, 4, 3))
            mask[z : z + dz, y : y + dy, x : x + dx] = i  # later blocks may overwrite: relabel below
        present = [i for i in range(1, n_inst + 1) if (mask == i).any()]
        relabel = np.zeros(n_inst + 1, np.uint16)
        relabel[present] = np.arange(1, len(present) + 1)
        mask = relabel[mask]
        anns = []
        for i in range(1, len(present) + 1):
            vox = np.argwhere(mask == i)[0]
            anns.append(Annotation(case, i, tuple(GEOM.zyx_to_world(vox.astype(float))), None, None, None, i))
        truths.append(
            case_truth(case, region="mediastinal", annotations=anns, geometry=GEOM, labels_zyx=mask)
        )
        masks.append(mask)
        n_here = n_det_total // n_cases if c < n_cases - 1 else n_det_total - k
        for _ in range(n_here):
            if len(present) and rng.random() < 0.5:
                inside = np.argwhere(mask > 0)
                vox = inside[int(rng.integers(0, inside.shape[0]))]
            else:
                vox = np.array([int(rng.integers(0, s)) for s in GEOM.shape_zyx])
            case_ids.append(case)
            centers.append(
                GEOM.zyx_to_world(vox.astype(float))
                + rng.uniform(-0.3, 0.3, 3) * np.array(GEOM.spacing_zyx[::-1])
            )
            probs.append(pool[k])
            k += 1
    table = DetectionTable(
        np.array(case_ids, dtype=np.str_),
        np.array(centers, dtype=np.float64).reshape(-1, 3),
        np.array(probs, dtype=np.float64),
        np.full(len(probs), np.nan),
    )
    return truths, masks, table


def monai_froc(masks, table, truths):  # type: ignore[no-untyped-def]
    fps_all, tps_all, n_targets = [], [], 0
    for t, mask in zip(truths, masks, strict=True):
        sel = table.case_ids == t.case_id
        coords = GEOM.world_to_voxel_zyx(table.centers_xyz[sel]).reshape(-1, 3)
        fp, tp, n = froc.compute_fp_tp_probs_nd(table.probabilities[sel], coords, mask)
        fps_all.append(fp)
        tps_all.append(tp)
        n_targets += n
    fp = np.concatenate(fps_all).astype(np.float64)
    tp = np.concatenate([*tps_all, [0.0]]).astype(np.float64)  # the sentinel: see the module docstring
    fps, sens = froc.compute_froc_curve_data(fp, tp, n_targets, len(truths))
    per_rate = [froc.compute_froc_score(fps, sens, (r,)) for r in FP_RATES]
    return per_rate, froc.compute_froc_score(fps, sens, CPM_RATES), n_targets


@pytest.mark.parametrize("seed", range(25))
def test_froc_equals_monai(seed: int) -> None:
    truths, masks, table = random_cohort(seed)
    if sum(t.n_nodes for t in truths) == 0:
        pytest.skip("no node drawn")  # (MONAI divides by zero targets)
    per_rate, cpm, n_targets = monai_froc(masks, table, truths)
    res = evaluate_truth(
        truths, table, EvalSettings(match="mask", duplicates="ignore", bootstrap=0)
    ).to_json()
    p = res["pooled"]
    assert p["n_nodes"] == n_targets
    got = [p["sensitivity_at_fp"][k] for k in FP_RATE_KEYS]
    np.testing.assert_allclose(got, per_rate, atol=1e-6, rtol=0)
    assert p["cpm"] == pytest.approx(cpm, abs=1e-6)


def random_boxes(rng: np.random.Generator, n: int, jitter_of: np.ndarray | None = None) -> np.ndarray:
    if jitter_of is not None and jitter_of.shape[0]:
        base = jitter_of[rng.integers(0, jitter_of.shape[0], n)]
        return (
            base
            + rng.normal(0, 1.5, (n, 6))[:, [0, 1, 2, 0, 1, 2]]
            + np.abs(rng.normal(0, 1.0, (n, 6))) * np.array([-1, -1, -1, 1, 1, 1])
        )
    lo = rng.uniform(0, 60, (n, 3))
    return np.concatenate([lo, lo + rng.uniform(2, 12, (n, 3))], axis=1)


@pytest.mark.parametrize("seed", range(25))
def test_ap_equals_monai_coco(seed: int) -> None:
    from monai.apps.detection.metrics.coco import COCOMetric
    from monai.apps.detection.metrics.matching import matching_batch
    from monai.data.box_utils import box_iou

    rng = np.random.default_rng(1000 + seed)
    n_img = int(rng.integers(1, 6))
    while True:
        n_gt = [int(rng.integers(0, 6)) for _ in range(n_img)]
        if sum(n_gt) and math.gcd(sum(n_gt), 10) == 1:
            break
    gts, preds, scores = [], [], []
    for g in n_gt:
        gt = random_boxes(rng, g)
        n_p = int(rng.integers(0, 130))  # above 100 sometimes: the per-volume cap
        near = random_boxes(rng, n_p // 2, gt) if g else np.zeros((0, 6))
        far = random_boxes(rng, n_p - near.shape[0])
        gts.append(gt)
        preds.append(np.concatenate([near, far]))
        scores.append(rng.choice(np.arange(1, 2**20), n_p, replace=False) / 2**20)
    metric = COCOMetric(classes=["node"], iou_list=[0.1, 0.5], max_detection=[100])
    matched = matching_batch(
        iou_fn=box_iou,
        iou_thresholds=metric.iou_thresholds,
        pred_boxes=preds,
        pred_classes=[np.zeros(p.shape[0], int) for p in preds],
        pred_scores=scores,
        gt_boxes=gts,
        gt_classes=[np.zeros(g.shape[0], int) for g in gts],
        max_detections=100,
    )
    ref = metric(matched)[0]
    ours = average_precision(preds, scores, gts, iou_thresholds=(0.1, 0.5), max_detections=100)
    assert ours[0] == pytest.approx(ref["AP_IoU_0.10_MaxDet_100"], abs=1e-6)
    assert ours[1] == pytest.approx(ref["AP_IoU_0.50_MaxDet_100"], abs=1e-6)
