"""Bootstrap of the pooled FROC curve over cases, vectorised (no rematching).

Each case contributes fixed lists (the scores of its hit nodes, its FP scores, its node count). A resample
draws case indices with replacement; its curve is the pooled curve of the drawn cases with multiplicity.
All scores are sorted once; a resample only reweights them by how often their case was drawn. Reading the
curve at a rate needs only the first FP event whose weighted count passes the rate and the points just
before and through its score group, so a block of resamples costs one cumulative sum over the FP events,
a small one over the TP events, and one ``searchsorted`` over all rows at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

#: resamples processed together (bounds memory to about ``_BLOCK × n_scores × 8`` bytes per array)
_BLOCK = 64


def resample_counts(n_cases: int, n_resamples: int, seed: int) -> NDArray[np.int64]:
    """(B, C) how often each case (canonical order) is drawn in each resample; seeded."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_cases, size=(n_resamples, n_cases))
    flat = idx + (np.arange(n_resamples) * n_cases)[:, None]
    return np.bincount(flat.ravel(), minlength=n_resamples * n_cases).reshape(n_resamples, n_cases)


def bootstrap_sensitivities(
    case_tp_scores: Sequence[ArrayLike],
    case_fp_scores: Sequence[ArrayLike],
    case_n_nodes: ArrayLike,
    rates: Sequence[float] | FloatArray,
    *,
    n_resamples: int,
    seed: int,
    counts: NDArray[np.int64] | None = None,
) -> FloatArray:
    """Sensitivity at each rate for each bootstrap resample over cases → (B, R); NaN where a resample has no node.

    Args:
        case_tp_scores: per case (canonical order), the scores of its hit nodes' kept hits.
        case_fp_scores: per case, the scores of its detections counted as FP.
        case_n_nodes: (C,) annotated nodes per case (hit or missed).
        rates: FP-per-volume rates to read.
        n_resamples, seed: number of resamples and the seed (ignored when ``counts`` is given).
        counts: (B, C) explicit draw counts instead of random ones (e.g. all ones = the point estimate).
    """
    n_cases = len(case_tp_scores)
    if len(case_fp_scores) != n_cases:
        raise ValueError("case_tp_scores and case_fp_scores differ in length")
    n_nodes = np.asarray(case_n_nodes, dtype=np.float64).reshape(-1)
    rates_arr = np.asarray(rates, dtype=np.float64).reshape(-1)
    if counts is None:
        counts = resample_counts(n_cases, n_resamples, seed)
    n_b = counts.shape[0]
    tp_list = [np.asarray(s, dtype=np.float64).reshape(-1) for s in case_tp_scores]
    fp_list = [np.asarray(s, dtype=np.float64).reshape(-1) for s in case_fp_scores]
    tp_s, tp_c = _sorted_events(tp_list)
    fp_s, fp_c = _sorted_events(fp_list)
    # Static structure of the pooled curve (points at the ends of runs of equal scores), seen from each FP
    # event f (descending order): FP / TP events in the score groups strictly before f's group, and through it.
    fp_before = np.searchsorted(-fp_s, -fp_s, side="left")  # FP events with a higher score
    fp_through = np.searchsorted(-fp_s, -fp_s, side="right")
    tp_before = np.searchsorted(-tp_s, -fp_s, side="left")
    tp_through = np.searchsorted(-tp_s, -fp_s, side="right")
    queries = rates_arr * n_cases  # compare weighted FP counts, not FP rates
    out = np.empty((n_b, rates_arr.size))
    for start in range(0, n_b, _BLOCK):
        c = counts[start : start + _BLOCK]
        nb = c.shape[0]
        nodes = c.astype(np.float64) @ n_nodes
        cum_tp = np.concatenate([np.zeros((nb, 1)), np.cumsum(c[:, tp_c], axis=1, dtype=np.float64)], axis=1)
        cum_fp = np.concatenate(
            [np.zeros((nb, 1), np.int64), np.cumsum(c[:, fp_c], axis=1, dtype=np.int64)], axis=1
        )
        rows = np.arange(nb)[:, None]
        if fp_s.size == 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                out[start : start + nb] = (
                    np.broadcast_to(cum_tp[:, -1:], (nb, rates_arr.size)) / nodes[:, None]
                )
            continue
        # first FP event whose weighted count exceeds the query, per row (one searchsorted for all rows)
        span = int(cum_fp[:, -1].max()) + 1 + int(np.ceil(queries.max()))
        flat = (cum_fp[:, 1:] + rows * span).ravel()
        f = np.searchsorted(flat, (queries[None, :] + rows * span).ravel(), side="right").reshape(nb, -1)
        f -= rows * fp_s.size
        past = f >= fp_s.size  # the query lies beyond the last point: clamp
        fc = np.minimum(f, fp_s.size - 1)
        x0 = cum_fp[rows, fp_before[fc]].astype(np.float64)
        x1 = cum_fp[rows, fp_through[fc]].astype(np.float64)
        y0 = cum_tp[rows, tp_before[fc]]
        y1 = cum_tp[rows, tp_through[fc]]
        with np.errstate(divide="ignore", invalid="ignore"):
            mid = y0 + (queries[None, :] - x0) * (y1 - y0) / (x1 - x0)
        val = np.where(past, cum_tp[:, -1:], mid)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[start : start + nb] = val / nodes[:, None]
    return out


def _sorted_events(per_case: list[FloatArray]) -> tuple[FloatArray, NDArray[np.int64]]:
    """All scores, descending (stable), and the case index of each."""
    if not per_case:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    scores = np.concatenate(per_case)
    cases = np.repeat(np.arange(len(per_case)), [s.size for s in per_case]).astype(np.int64)
    order = np.argsort(-scores, kind="stable")
    return scores[order], cases[order]
