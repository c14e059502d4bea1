"""A node's pose at a station, shared by both placements (in fat, by mass effect): its orientation along the
hosting-depth gradient, the working record of a node being placed, the hosting-class lookup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from lymphcad.phantom.background import NODE_HOST, StationSpec
from lymphcad.phantom.masseffect import Push
from lymphcad.phantom.nodemodel import NodeSpec, RenderedNode, random_rotation

#: positions tried for one drawn node before another is drawn
POSITION_TRIES: Final = 30
#: tissue class (uint8) → may host a node
HOST = np.zeros(256, bool)
HOST[[int(t) for t in NODE_HOST]] = True


def orientation(
    depth: NDArray[np.float32],
    k: int,
    j: int,
    i: int,
    sp: tuple[float, float, float],
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Short axis along the hosting-depth gradient (towards the nearest wall), long axis near cranio-caudal."""
    g = np.zeros(3)  # (x, y, z)
    idx = (k, j, i)
    for a_w, a_arr in ((0, 2), (1, 1), (2, 0)):
        lo = list(idx)
        hi = list(idx)
        lo[a_arr] = max(0, idx[a_arr] - 1)
        hi[a_arr] = min(depth.shape[a_arr] - 1, idx[a_arr] + 1)
        if hi[a_arr] > lo[a_arr]:
            g[a_w] = float(depth[tuple(hi)] - depth[tuple(lo)]) / ((hi[a_arr] - lo[a_arr]) * sp[a_arr])
    if np.linalg.norm(g) < 1e-3:
        return random_rotation(rng)
    d = g / np.linalg.norm(g)
    t = np.array([0.0, 0.0, 1.0]) + rng.normal(0, 0.3, 3)
    t = t - (t @ d) * d
    if np.linalg.norm(t) < 1e-3:
        return random_rotation(rng)
    t /= np.linalg.norm(t)
    third = np.cross(d, t)
    return np.stack([d, third, t], axis=1)


@dataclass
class PlacedNode:
    """A node on its way into the case: drawn, posed, rendered; ``box`` None once a push moved it."""

    spec: NodeSpec
    rendered: RenderedNode
    station: StationSpec
    inside: NDArray[np.bool_]
    fat_share: float
    push: Push | None = None
    box: tuple[slice, slice, slice] | None = None
