"""The phantom's lymph nodes.

* :mod:`.draws`: the case's node parameters (:class:`NodeParams`) and the per-node samplers (spec §4.1);
* :mod:`.stations`: stations and their anchors (§4.2);
* :mod:`.shape`: one node's record, outline perturbation and painting with its internals (§6.5);
* :mod:`.placer`: placement beside the anchors in fat (§6.4);
* :mod:`.measure`: RECIST measurement from the voxel mask (§6.7).
"""

from lymphcad.phantom.nodes.draws import (
    NodeParams,
    enlarged_threshold,
    sample_enlarged_count,
    sample_enlarged_sad,
    sample_ratio,
    sample_small_sad,
    sample_type,
)
from lymphcad.phantom.nodes.measure import MaskMeasurement, measure_mask, record_annotation
from lymphcad.phantom.nodes.placer import NodePlacer
from lymphcad.phantom.nodes.shape import Node
from lymphcad.phantom.nodes.stations import STATIONS, Station

__all__ = [
    "STATIONS",
    "MaskMeasurement",
    "Node",
    "NodeParams",
    "NodePlacer",
    "Station",
    "enlarged_threshold",
    "measure_mask",
    "record_annotation",
    "sample_enlarged_count",
    "sample_enlarged_sad",
    "sample_ratio",
    "sample_small_sad",
    "sample_type",
]
