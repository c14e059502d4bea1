"""Strata of an evaluation: pooled, per region, per node size. Pure selection of cases, nodes and boxes.

* **pooled**: every case and node.
* **region** (``mediastinal``, ``abdominal``): the cases whose ``case_regions`` entry is that region or
  ``both``; FP per volume over those cases. A node belongs to its own ``region`` (or, when that is empty,
  to its case's). Hits on nodes of the other region (only possible in ``both`` cases) are left out:
  neither TP nor FP. AP: the instances of those cases; instances linked to a node of the other region are
  ignored boxes.
* **size** (short axis ``<10``, ``10-15``, ``15-20``, ``>=20`` mm; lower bound inclusive): all cases, so
  FP per volume is the pooled one; the nodes of known short axis in the bin. Hits on other nodes are
  left out. AP: the instances linked (``label_id``) to a node in the bin; all others are ignored boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lymphcad.cohort import REGIONS
from lymphcad.evaluate.matching import CaseTruth
from lymphcad.evaluate.settings import SIZE_BINS

BoolArray = NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class Stratum:
    """A selection: which cases (C,), which nodes of each case, which instances of each case count in AP."""

    name: str
    cases: BoolArray
    nodes: tuple[BoolArray, ...]
    instance_ignore: tuple[BoolArray, ...]


def _node_region(truth: CaseTruth) -> list[str]:
    return [r or truth.region for r in truth.node_regions]


def _instance_node_mask(truth: CaseTruth, node_sel: BoolArray) -> BoolArray:
    """Instances linked to a selected node."""
    linked = set(truth.node_label_ids[node_sel & (truth.node_label_ids > 0)].tolist())
    return np.array([i in linked for i in truth.instance_ids.tolist()], dtype=bool)


def pooled(truths: Sequence[CaseTruth]) -> Stratum:
    """Every case and node."""
    return Stratum(
        "pooled",
        np.ones(len(truths), dtype=bool),
        tuple(np.ones(t.n_nodes, dtype=bool) for t in truths),
        tuple(np.zeros(t.instance_ids.shape[0], dtype=bool) for t in truths),
    )


def by_region(truths: Sequence[CaseTruth], region: str) -> Stratum:
    """The cases of ``region`` (or ``both``) and the nodes of that region."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}")
    cases = np.array([t.region in (region, "both") for t in truths], dtype=bool)
    nodes = []
    ignore = []
    for t in truths:
        regions = _node_region(t)
        sel = np.array([r in (region, "both") for r in regions], dtype=bool).reshape(-1)
        nodes.append(sel)
        other = np.array([r not in (region, "both") for r in regions], dtype=bool).reshape(-1)
        ignore.append(_instance_node_mask(t, other))
    return Stratum(region, cases, tuple(nodes), tuple(ignore))


def by_size(truths: Sequence[CaseTruth], key: str) -> Stratum:
    """All cases; the nodes whose short axis falls in the bin ``key`` (one of ``SIZE_BINS``)."""
    bins = {k: (lo, hi) for k, lo, hi in SIZE_BINS}
    lo, hi = bins[key]
    nodes = []
    ignore = []
    for t in truths:
        s = t.node_short_mm
        sel = ~np.isnan(s) & (s >= lo) & (s < hi)
        nodes.append(sel)
        ignore.append(~_instance_node_mask(t, sel))
    return Stratum(key, np.ones(len(truths), dtype=bool), tuple(nodes), tuple(ignore))


def all_strata(truths: Sequence[CaseTruth]) -> tuple[Stratum, list[Stratum], list[Stratum]]:
    """(pooled, [mediastinal, abdominal], [size bins in order])."""
    return (
        pooled(truths),
        [by_region(truths, r) for r in REGIONS],
        [by_size(truths, k) for k, _, _ in SIZE_BINS],
    )
