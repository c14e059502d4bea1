"""Matching detections to ground-truth nodes, one case at a time (formats.md §4). Pure functions.

Rules:

* ``mask``: the detection point, rounded to the nearest voxel of the label grid, lies inside the node's
  instance (its ``label_id``); nodes without an instance (or cases without a label mask) fall back to
  ``radius``. A point outside the volume lies in no instance (indices never wrap).
* ``radius``: distance to the node centre ≤ R (a fixed R, or auto = max(5 mm, short/2, else long/2)).
* ``mask-or-radius``: either.

A detection may hit several nodes. Each node keeps its highest-scoring hit (ties: the detection first in
the canonical order score ↓, x, y, z, diameter, so results do not depend on row order). A detection that
is the kept hit of some node is ``tp``; one that hits nodes but is kept by none is ``duplicate`` (counted
as FP under ``--duplicates fp``, else neither); one that hits no node but lies within an ignore point's
radius is ``ignored``; the rest are ``fp``. Detections outside the evaluation region (when the case has
one) are ``outside_region`` and take no part at all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from lymphcad.evaluate.settings import AUTO_RADIUS_MIN_MM, DuplicatePolicy, EvalSettings, MatchRule
from lymphcad.geometry import Geometry

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


class Outcome(enum.IntEnum):
    """A detection's outcome; the names are the words written to matches.csv."""

    TP = 0
    FP = 1
    DUPLICATE = 2
    IGNORED = 3
    OUTSIDE_REGION = 4

    @property
    def word(self) -> str:
        """The spelling in matches.csv (``tp``, ``fp``, ``duplicate``, ``ignored``, ``outside_region``)."""
        return self.name.lower()


OUTCOME_WORDS: Final = tuple(o.word for o in Outcome)


@dataclass(frozen=True, eq=False)
class CaseTruth:
    """Everything about one case that matching and AP need, already loaded.

    Attributes:
        case_id: the case.
        region: the case's region from dataset.json (``mediastinal``, ``abdominal`` or ``both``).
        geometry: the image grid (None only when neither labels nor eval region is present).
        node_ids: (N,) node ids.
        node_centers_xyz: (N, 3) node centres, world LPS mm.
        node_short_mm, node_long_mm: (N,) axes in mm, NaN where unknown.
        node_label_ids: (N,) instance id of each node in ``labels``, 0 where none.
        node_regions: (N,) node regions (``""`` where unknown).
        labels_zyx: the instance mask (z, y, x) or None.
        eval_region_zyx: the evaluation-region mask (z, y, x) or None.
        ignore_centers_xyz: (K, 3) ignore points, world LPS mm; ignore_radii_mm: (K,).
        instance_ids: (M,) instance ids present in ``labels`` (empty without labels).
        instance_boxes: (M, 6) world boxes of those instances (full voxel size).
        instance_boxes_nndet: (M, 6) nnDetection's padded voxel boxes of those instances.
    """

    case_id: str
    region: str
    geometry: Geometry | None
    node_ids: IntArray
    node_centers_xyz: FloatArray
    node_short_mm: FloatArray
    node_long_mm: FloatArray
    node_label_ids: IntArray
    node_regions: tuple[str, ...]
    labels_zyx: NDArray[np.integer] | None
    eval_region_zyx: NDArray[np.integer] | None
    ignore_centers_xyz: FloatArray
    ignore_radii_mm: FloatArray
    instance_ids: IntArray
    instance_boxes: FloatArray
    instance_boxes_nndet: FloatArray

    @property
    def n_nodes(self) -> int:
        """Number of annotated nodes."""
        return int(self.node_ids.shape[0])


@dataclass(frozen=True, eq=False)
class CaseMatch:
    """Matching result of one case; per-detection arrays are in the caller's row order.

    Attributes:
        outcome: (D,) :class:`Outcome` codes.
        node_index: (D,) index into the case's nodes of the matched (tp) or hit (duplicate) node, -1 otherwise.
        distance_mm: (D,) distance to that node's centre, NaN otherwise.
        node_best: (N,) score of each node's kept hit, -inf where missed.
        fp_scores: scores of the detections counted as false positives (fp, plus duplicates under
            ``--duplicates fp``), descending.
    """

    outcome: NDArray[np.int8]
    node_index: IntArray
    distance_mm: FloatArray
    node_best: FloatArray
    fp_scores: FloatArray


def node_radii(truth: CaseTruth, radius_mm: float | None) -> FloatArray:
    """Hit radius per node: the fixed radius, or auto = max(5 mm, short/2, else long/2)."""
    n = truth.n_nodes
    if radius_mm is not None:
        return np.full(n, float(radius_mm))
    half = np.where(np.isnan(truth.node_short_mm), truth.node_long_mm, truth.node_short_mm) / 2.0
    return np.asarray(np.fmax(half, AUTO_RADIUS_MIN_MM), dtype=np.float64)  # fmax ignores NaN


def _mask_values(mask_zyx: NDArray[np.integer], geometry: Geometry, centers_xyz: FloatArray) -> IntArray:
    """Mask value at the nearest voxel of each point; 0 outside the volume (no wrap-around)."""
    if centers_xyz.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    vox = geometry.world_to_voxel_zyx(centers_xyz)
    inside = np.all((vox >= 0) & (vox < np.asarray(mask_zyx.shape)[None, :]), axis=1)
    out = np.zeros(centers_xyz.shape[0], dtype=np.int64)
    v = vox[inside]
    out[inside] = mask_zyx[v[:, 0], v[:, 1], v[:, 2]]
    return out


def inside_eval_region(truth: CaseTruth, centers_xyz: FloatArray) -> NDArray[np.bool_]:
    """Which points lie inside the case's evaluation region (all, when it has none)."""
    if truth.eval_region_zyx is None or truth.geometry is None:
        return np.ones(centers_xyz.shape[0], dtype=bool)
    return _mask_values(truth.eval_region_zyx, truth.geometry, centers_xyz) > 0


def canonical_order(centers_xyz: FloatArray, scores: FloatArray, diameters_mm: FloatArray) -> IntArray:
    """Row order by score descending, then x, y, z, diameter ascending (independent of input order)."""
    diam = np.where(np.isnan(diameters_mm), np.inf, diameters_mm)
    keys = (diam, centers_xyz[:, 2], centers_xyz[:, 1], centers_xyz[:, 0], -scores)
    return np.asarray(np.lexsort(keys), dtype=np.int64)


def hit_matrix(
    truth: CaseTruth, centers_xyz: FloatArray, settings: EvalSettings
) -> tuple[NDArray[np.bool_], FloatArray]:
    """(D, N) hits of detections on nodes under the rule, and the (D, N) centre distances in mm."""
    d = centers_xyz.shape[0]
    n = truth.n_nodes
    dist = np.sqrt(((centers_xyz[:, None, :] - truth.node_centers_xyz[None, :, :]) ** 2).sum(axis=2)).reshape(
        d, n
    )
    radius_hit = dist <= node_radii(truth, settings.radius_mm)[None, :]
    if settings.match == MatchRule.RADIUS:
        return radius_hit, dist
    has_mask = truth.node_label_ids > 0
    if truth.labels_zyx is None or truth.geometry is None:
        has_mask = np.zeros(n, dtype=bool)
        mask_hit = np.zeros((d, n), dtype=bool)
    else:
        lab = _mask_values(truth.labels_zyx, truth.geometry, centers_xyz)
        mask_hit = (lab[:, None] == truth.node_label_ids[None, :]) & has_mask[None, :]
    if settings.match == MatchRule.MASK:
        return np.where(has_mask[None, :], mask_hit, radius_hit), dist
    return mask_hit | radius_hit, dist


def match_case(
    truth: CaseTruth,
    centers_xyz: FloatArray,
    scores: FloatArray,
    diameters_mm: FloatArray,
    settings: EvalSettings,
) -> CaseMatch:
    """Match one case's detections (D rows: centres (D, 3) world LPS mm, scores (D,), diameters (D,))."""
    centers_xyz = np.asarray(centers_xyz, dtype=np.float64).reshape(-1, 3)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    diameters_mm = np.asarray(diameters_mm, dtype=np.float64).reshape(-1)
    d, n = centers_xyz.shape[0], truth.n_nodes
    outcome = np.full(d, Outcome.FP, dtype=np.int8)
    node_index = np.full(d, -1, dtype=np.int64)
    distance = np.full(d, np.nan)
    node_best = np.full(n, -np.inf)

    inside = inside_eval_region(truth, centers_xyz)
    outcome[~inside] = Outcome.OUTSIDE_REGION
    rows = np.flatnonzero(inside)
    order = rows[canonical_order(centers_xyz[rows], scores[rows], diameters_mm[rows])]
    hits, dist = hit_matrix(truth, centers_xyz[order], settings)  # rows in canonical order

    if n and order.size:
        hit_any_node = hits.any(axis=0)
        first = np.argmax(hits, axis=0)  # highest-scoring hit of each node (canonical order)
        kept_for = np.zeros_like(hits)
        kept_for[first[hit_any_node], np.flatnonzero(hit_any_node)] = True
        node_best[hit_any_node] = scores[order[first[hit_any_node]]]
        is_tp: NDArray[np.bool_] = np.asarray(kept_for.any(axis=1), dtype=bool)
        is_dup = hits.any(axis=1) & ~is_tp
        # the reported node: the closest among those the detection is kept for (tp) or hits (duplicate)
        pick_from = np.where(is_tp[:, None], kept_for, hits)
        closest = np.argmin(np.where(pick_from, dist, np.inf), axis=1)
        matched = is_tp | is_dup
        rows_m = order[matched]
        outcome[order[is_tp]] = Outcome.TP
        outcome[order[is_dup]] = Outcome.DUPLICATE
        node_index[rows_m] = closest[matched]
        distance[rows_m] = dist[np.flatnonzero(matched), closest[matched]]
        unmatched = order[~matched]
    else:
        unmatched = order
    if truth.ignore_centers_xyz.shape[0] and unmatched.size:
        d_ign = np.sqrt(
            ((centers_xyz[unmatched, None, :] - truth.ignore_centers_xyz[None, :, :]) ** 2).sum(axis=2)
        )
        ignored = (d_ign <= truth.ignore_radii_mm[None, :]).any(axis=1)
        outcome[unmatched[ignored]] = Outcome.IGNORED

    counted_fp = outcome == Outcome.FP
    if settings.duplicates == DuplicatePolicy.FP:
        counted_fp |= outcome == Outcome.DUPLICATE
    fp_scores = np.sort(scores[counted_fp])[::-1]
    return CaseMatch(outcome, node_index, distance, node_best, np.ascontiguousarray(fp_scores))
