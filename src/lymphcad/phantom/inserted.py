"""What insertion produced: one record per inserted node (a row of extra/<case>_nodes.csv, its annotation
or ignore point), the result of one case and the one-line summary printed per case."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

from lymphcad.cohort import Annotation, IgnorePoint
from lymphcad.phantom.nodemodel import NodeSpec
from lymphcad.phantom.texture import TexturePatch
from lymphcad.phantom.truthrule import TruthClass, ignore_radius_mm

#: columns of extra/<case>_nodes.csv (the full truth, read by the detector's ``--truth extra``)
INSERT_NODE_COLUMNS: Final = (
    "case_id",
    "id",
    "gt_node_id",
    "coordX",
    "coordY",
    "coordZ",
    "short_axis_mm",
    "long_axis_mm",
    "volume_mm3",
    "region",
    "station",
    "truth",
    "enlarged",
    "annotated",
    "internal_type",
    "formation",
    "drawn_sad_mm",
    "aspect",
    "cc_ratio",
    "lobulation",
    "irregularity",
    "members",
    "target_hu",
    "edge_mm",
    "texture_sd",
    "texture_mm",
    "mean_hu",
    "noise_sd_local",
    "nearest",
    "fat_share",
    "placement",
    "push_mm",
)


@dataclass(frozen=True)
class InsertedNode:
    """One inserted node: a row of extra/<case>_nodes.csv (world LPS mm; sizes measured RECIST-style)."""

    id: int
    gt_node_id: int  # 1..n for ground-truth (positive) nodes, 0 otherwise
    xyz: tuple[float, float, float]
    sad_mm: float
    lad_mm: float
    volume_mm3: float
    region: str
    station: str
    truth: TruthClass
    spec: NodeSpec
    mean_hu: float
    noise_sd_local: float
    nearest: str  # the commonest non-fat class around the node (what it touches)
    fat_share: float  # share of the node's interior (its seed, under mass effect) that displaced visceral fat
    placement: str = (
        "fat"  # ``fat``: in hosting tissue as deep as the node; ``mass_effect``: neighbours pushed
    )
    push_mm: float = 0.0  # how far the node pushed its neighbours at its surface (mm; 0 in deep fat)
    texture_source: TexturePatch | None = (
        None  # texture model only: where its texture came from (not written)
    )

    @property
    def positive(self) -> bool:
        return self.truth is TruthClass.POSITIVE

    def row(self, case_id: str) -> list[str]:
        """The node-table row (columns :data:`INSERT_NODE_COLUMNS`)."""
        sp = self.spec.to_row()
        return [
            case_id,
            str(self.id),
            str(self.gt_node_id),
            *(f"{v:.4f}" for v in self.xyz),
            f"{self.sad_mm:.3f}",
            f"{self.lad_mm:.3f}",
            f"{self.volume_mm3:.1f}",
            self.region,
            self.station,
            self.truth.value,
            str(int(self.positive)),
            str(int(self.positive)),
            sp["internal_type"],
            sp["formation"],
            sp["drawn_sad_mm"],
            sp["aspect"],
            sp["cc_ratio"],
            sp["lobulation"],
            sp["irregularity"],
            sp["members"],
            sp["target_hu"],
            sp["edge_mm"],
            sp["texture_sd"],
            sp["texture_mm"],
            f"{self.mean_hu:.1f}",
            f"{self.noise_sd_local:.2f}",
            self.nearest,
            f"{self.fat_share:.3f}",
            self.placement,
            f"{self.push_mm:.2f}",
        ]

    def annotation(self, case_id: str) -> Annotation:
        """The annotations.csv row of a ground-truth node (label_id = node_id = gt id)."""
        return Annotation(
            case_id,
            self.gt_node_id,
            self.xyz,
            round(self.sad_mm, 3),
            round(self.lad_mm, 3),
            self.region,
            self.gt_node_id,
        )

    def ignore_point(self, case_id: str) -> IgnorePoint:
        """An ignore.csv row covering the node."""
        return IgnorePoint(case_id, self.xyz, ignore_radius_mm(round(self.sad_mm, 3), round(self.lad_mm, 3)))


@dataclass(frozen=True)
class InsertionResult:
    """One case: the image, all-node instance map (ids = ``InsertedNode.id``), ground-truth labels, nodes and the
    tissue map of the pushed anatomy."""

    image: NDArray[np.int16]
    all_nodes: NDArray[np.uint16]
    labels: NDArray[np.uint16]
    nodes: tuple[InsertedNode, ...]
    region: str
    requested: int
    tissue: NDArray[np.uint8] | None = None  # the tissue map as the anatomy lies after mass-effect pushes

    @property
    def by_station(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.station] = out.get(n.station, 0) + 1
        return dict(sorted(out.items()))


@dataclass(frozen=True)
class CaseSummary:
    """What one case got: placed, annotated (positive), ignored and negative nodes, per station."""

    case_id: str
    requested: int
    placed: int
    annotated: int
    ignored: int
    negative: int
    by_station: dict[str, int] = field(default_factory=dict)
    pushed: int = 0  # nodes placed by mass effect (neighbours displaced)

    def line(self) -> str:
        st = ", ".join(f"{k} {v}" for k, v in self.by_station.items()) or "none"
        me = f", {self.pushed} by mass effect" if self.pushed else ""
        return (
            f"{self.case_id}: placed {self.placed} of {self.requested} nodes{me}, {self.annotated} annotated "
            f"(ground truth), {self.ignored} ignored, {self.negative} negative; stations: {st}"
        )
