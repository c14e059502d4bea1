"""Loading a cohort's ground truth for evaluation (annotations, masks, ignore points, instance boxes)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from numpy.typing import NDArray

from lymphcad.boxes import EMPTY_BOXES, instance_boxes, nndet_instance_boxes
from lymphcad.cohort import Annotation, Cohort, IgnorePoint
from lymphcad.errors import InputError
from lymphcad.evaluate.matching import CaseTruth
from lymphcad.geometry import Geometry


def case_truth(
    case_id: str,
    *,
    region: str,
    annotations: Sequence[Annotation],
    geometry: Geometry | None = None,
    labels_zyx: NDArray[np.integer] | None = None,
    eval_region_zyx: NDArray[np.integer] | None = None,
    ignore: Sequence[IgnorePoint] = (),
) -> CaseTruth:
    """Build one case's :class:`CaseTruth` from in-memory parts (instance boxes are computed here)."""
    nodes = sorted((a for a in annotations if a.case_id == case_id), key=lambda a: a.node_id)
    ign = [p for p in ignore if p.case_id == case_id]
    for name, arr in (("labels", labels_zyx), ("eval region", eval_region_zyx)):
        if arr is not None and (geometry is None or tuple(arr.shape) != geometry.shape_zyx):
            raise ValueError(f"{name} of case {case_id!r} needs a geometry of the same shape")
    if labels_zyx is not None and geometry is not None:
        ids, boxes = instance_boxes(labels_zyx, geometry)
        _, boxes_nndet = nndet_instance_boxes(labels_zyx, geometry, ids=ids)
    else:
        ids, boxes, boxes_nndet = np.zeros(0, np.int64), EMPTY_BOXES.copy(), EMPTY_BOXES.copy()
    nan = float("nan")
    return CaseTruth(
        case_id=case_id,
        region=region,
        geometry=geometry,
        node_ids=np.array([a.node_id for a in nodes], dtype=np.int64),
        node_centers_xyz=np.array([a.center_xyz for a in nodes], dtype=np.float64).reshape(-1, 3),
        node_short_mm=np.array(
            [nan if a.short_axis_mm is None else a.short_axis_mm for a in nodes], dtype=np.float64
        ),
        node_long_mm=np.array(
            [nan if a.long_axis_mm is None else a.long_axis_mm for a in nodes], dtype=np.float64
        ),
        node_label_ids=np.array([a.label_id or 0 for a in nodes], dtype=np.int64),
        node_regions=tuple(a.region or "" for a in nodes),
        labels_zyx=labels_zyx,
        eval_region_zyx=eval_region_zyx,
        ignore_centers_xyz=np.array([p.center_xyz for p in ign], dtype=np.float64).reshape(-1, 3),
        ignore_radii_mm=np.array([p.radius_mm for p in ign], dtype=np.float64),
        instance_ids=ids,
        instance_boxes=boxes,
        instance_boxes_nndet=boxes_nndet,
    )


def load_truth(
    cohort: Cohort,
    *,
    ignore: Sequence[IgnorePoint] | None = None,
    cases: Collection[str] | None = None,
) -> list[CaseTruth]:
    """Read every case's masks and build its :class:`CaseTruth`, in canonical case order.

    ``ignore`` replaces the cohort's ignore.csv (``--ignore FILE``); by default the cohort's own is used.
    ``cases`` keeps only these cases (e.g. a validation fold); by default all of the cohort's.
    """
    points = cohort.ignore if ignore is None else list(ignore)
    wanted = None if cases is None else set(cases)
    out = []
    for case in cohort.cases:
        if wanted is not None and case not in wanted:
            continue
        label = cohort.read_label(case)
        region_mask = cohort.read_eval_region(case)
        geometry = cohort.geometries.get(case)
        if label is not None:
            geometry = label.geometry
        elif region_mask is not None:
            geometry = region_mask.geometry
        truth = case_truth(
            case,
            region=cohort.region_of(case),
            annotations=cohort.annotations_for(case),
            geometry=geometry,
            labels_zyx=None if label is None else label.array,
            eval_region_zyx=None if region_mask is None else region_mask.array,
            ignore=points,
        )
        if label is not None:
            present = set(truth.instance_ids.tolist())
            for nid, lid in zip(truth.node_ids.tolist(), truth.node_label_ids.tolist(), strict=True):
                if lid and lid not in present:
                    raise InputError(
                        f"node {case}/{nid} has label_id {lid}, but labels/{case}.nii.gz has no such instance",
                        cohort.root / "annotations.csv",
                    )
        out.append(truth)
    return out
