"""Anatomy builders (spec §6.2–6.3): one chest-abdomen-pelvis body in a common frame.

Frame: LPS axes, mm; x = 0 midline, y = 0 body centre, z = 0 carina (see
:mod:`~lymphcad.phantom.anatomy.builder`). Each region painter draws into the canvas in priority order and
records anchors (centrelines used to place nodes by station) and mimics (blob-like confounders, written to
``extra/<case>_mimics.csv``):

* :mod:`~lymphcad.phantom.anatomy.builder` — the frame, the typed records (case parameters, anchors,
  deferred vessels, the result) and the painting helpers the regions share;
* :mod:`~lymphcad.phantom.anatomy.body_wall` — body wall and skeleton;
* :mod:`~lymphcad.phantom.anatomy.thorax` — lungs, heart, great vessels, airways, oesophagus, azygos;
* :mod:`~lymphcad.phantom.anatomy.abdomen` — organs, vessels, bowel, mesentery;
* :mod:`~lymphcad.phantom.anatomy.small_vessels` — small vessels through the fat, painted after the nodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lymphcad.phantom.anatomy.abdomen import paint_abdomen
from lymphcad.phantom.anatomy.body_wall import paint_body_wall, paint_skeleton
from lymphcad.phantom.anatomy.builder import (
    Anatomy,
    AnatomyBuilder,
    AnatomyParams,
    Anchor,
    DeferredVessel,
    Mimic,
    dome_z,
)
from lymphcad.phantom.anatomy.small_vessels import paint_deferred, paint_small_vessels
from lymphcad.phantom.anatomy.thorax import paint_thorax
from lymphcad.phantom.canvas import Canvas

__all__ = [
    "Anatomy",
    "AnatomyParams",
    "Anchor",
    "DeferredVessel",
    "Mimic",
    "build_anatomy",
    "dome_z",
    "paint_deferred",
]


def build_anatomy(canvas: Canvas, params: Mapping[str, Any], rng: np.random.Generator) -> Anatomy:
    """Paint the whole body into ``canvas`` (priority order) and return anchors and mimics.

    ``params`` is the case's parameter dict (:func:`~lymphcad.phantom.config.sample_case_params`).
    """
    builder = AnatomyBuilder(canvas, AnatomyParams.from_case(params), rng)
    paint_body_wall(builder)
    paint_thorax(builder)
    paint_abdomen(builder)
    paint_skeleton(builder)
    paint_small_vessels(builder)
    builder.anatomy.dome_params = (builder.sx, builder.dome_shift)
    return builder.anatomy
