"""Box AP, COCO style (formats.md §4): greedy matching by score per volume, 101-point interpolated precision.

Per volume: the ``max_detections`` highest-scoring boxes (stable sort), each in turn matched to the
not-yet-matched ground-truth box of highest IoU ≥ threshold (ties: the later box), preferring boxes that
are not ignored; a detection matched to an ignored box counts neither as TP nor FP (COCO's area ranges,
used here for the size strata). Pooled over volumes: precision made monotone from the right and read at
the 101 recall points 0, 0.01, …, 1 (nearest point at or beyond; 0 where the recall is never reached).
Arithmetic is float64, as in pycocotools (MONAI's copy rounds cumulative counts to float32).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from lymphcad.boxes import as_boxes, box_iou

FloatArray = NDArray[np.float64]
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def match_volume(
    pred_boxes: FloatArray,
    pred_scores: FloatArray,
    gt_boxes: FloatArray,
    gt_ignore: NDArray[np.bool_],
    iou_thresholds: Sequence[float],
    max_detections: int,
) -> tuple[FloatArray, NDArray[np.bool_], NDArray[np.bool_]]:
    """Greedy matching in one volume.

    Returns:
        ``(scores, matched, ignored)``: scores (D',) of the kept detections in descending order, and
        (T, D') booleans: matched to some box / matched to an ignored box, per IoU threshold.
    """
    order = np.argsort(-pred_scores, kind="mergesort")[:max_detections]
    boxes, scores = as_boxes(pred_boxes)[order], pred_scores[order]
    g_order = np.argsort(gt_ignore, kind="mergesort")
    gts, g_ign = as_boxes(gt_boxes)[g_order], np.asarray(gt_ignore, dtype=bool)[g_order]
    n_t, n_d, n_g = len(iou_thresholds), boxes.shape[0], gts.shape[0]
    matched = np.zeros((n_t, n_d), dtype=bool)
    ignored = np.zeros((n_t, n_d), dtype=bool)
    if n_d == 0 or n_g == 0:
        return scores, matched, ignored
    ious = box_iou(boxes, gts)
    last_first = np.arange(n_g)[::-1]
    for ti, t in enumerate(iou_thresholds):
        floor = min(float(t), 1.0 - 1e-10)
        taken = np.zeros(n_g, dtype=bool)
        for di in np.flatnonzero(ious.max(axis=1) >= floor).tolist():  # others can match nothing
            ok = (~taken) & (ious[di] >= floor)
            if not ok.any():
                continue
            regular = ok & ~g_ign
            cand = regular if regular.any() else ok
            vals = np.where(cand, ious[di], -np.inf)[
                last_first
            ]  # reversed: argmax picks the later box on ties
            m = int(last_first[int(np.argmax(vals))])
            taken[m] = True
            matched[ti, di] = True
            ignored[ti, di] = bool(g_ign[m])
    return scores, matched, ignored


def average_precision(
    pred_boxes: Sequence[FloatArray],
    pred_scores: Sequence[FloatArray],
    gt_boxes: Sequence[FloatArray],
    *,
    gt_ignore: Sequence[NDArray[np.bool_]] | None = None,
    iou_thresholds: Sequence[float] = (0.1, 0.5),
    max_detections: int = 100,
) -> list[float | None]:
    """COCO AP per IoU threshold over a list of volumes; None where there is no (non-ignored) ground truth.

    Args:
        pred_boxes: per volume, (D, 6) world boxes ``[x0, y0, z0, x1, y1, z1]``.
        pred_scores: per volume, (D,) scores.
        gt_boxes: per volume, (G, 6) ground-truth boxes.
        gt_ignore: per volume, (G,) True for boxes that count neither way (default none).
        iou_thresholds: IoU thresholds (a match needs IoU ≥ threshold).
        max_detections: per-volume cap (highest scores kept).
    """
    n_t = len(iou_thresholds)
    ignores = gt_ignore if gt_ignore is not None else [np.zeros(as_boxes(g).shape[0], bool) for g in gt_boxes]
    all_scores, all_matched, all_ignored = [], [], []
    n_gt = 0
    for pb, ps, gb, gi in zip(pred_boxes, pred_scores, gt_boxes, ignores, strict=True):
        gi = np.asarray(gi, dtype=bool).reshape(-1)
        n_gt += int(np.count_nonzero(~gi))
        s, m, ig = match_volume(
            as_boxes(pb),
            np.asarray(ps, dtype=np.float64).reshape(-1),
            as_boxes(gb),
            gi,
            iou_thresholds,
            max_detections,
        )
        all_scores.append(s)
        all_matched.append(m)
        all_ignored.append(ig)
    if n_gt == 0:
        return [None] * n_t
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    matched = np.concatenate(all_matched, axis=1)[:, order] if all_matched else np.zeros((n_t, 0), bool)
    ignored = np.concatenate(all_ignored, axis=1)[:, order] if all_ignored else np.zeros((n_t, 0), bool)
    out: list[float | None] = []
    for ti in range(n_t):
        tp = np.cumsum(matched[ti] & ~ignored[ti]).astype(np.float64)
        fp = np.cumsum(~matched[ti] & ~ignored[ti]).astype(np.float64)
        if tp.size == 0:
            out.append(0.0)
            continue
        recall = tp / n_gt
        precision = tp / (tp + fp + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        reached = idx < recall.size
        values = np.where(reached, precision[np.minimum(idx, recall.size - 1)], 0.0)
        out.append(float(np.mean(values)))
    return out
