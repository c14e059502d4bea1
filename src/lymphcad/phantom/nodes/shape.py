"""One placed node: its record (:class:`Node`), the random perturbation of its outline, and how it is
painted into the canvas with its internals (spec §6.5: necrotic core, fatty hilum, calcifications, stranding)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lymphcad.phantom.canvas import Box, Canvas
from lymphcad.phantom.nodes.draws import NodeParams
from lymphcad.phantom.tissue import NODE_HOST, T

#: a node outline's perturbation: signed distance offset (fraction of the axes) at unit-sphere coordinates u, v, s
Perturbation = Callable[[Any, Any, Any], Any]


@dataclass
class Node:
    """A node being placed (centre, axes and rotation change while it is fitted; frame mm)."""

    node_index: int  # 1-based id in the all-nodes mask
    station: str
    region: str
    drawn_sad: float
    drawn_enlarged: bool
    internal: str
    cluster_id: int
    hu: float
    anchor: str
    gap: float
    center: NDArray[np.float64]
    half_axes: tuple[float, float, float]
    #: columns: short axis, in-plane long axis, cranio-caudal axis (frame directions)
    rot: NDArray[np.float64]
    molded: bool = False


def perturbation(rng: np.random.Generator, amp: float, hilar: bool) -> Perturbation:
    """Four random low-order cosines of total amplitude ``amp``, with a hilar dent when ``hilar``."""
    dirs = rng.normal(0, 1, (4, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freq = rng.uniform(1.0, 2.6, 4)
    phase = rng.uniform(0, 2 * np.pi, 4)
    w = rng.normal(0, 1, 4)
    w = w / np.sqrt((w**2).sum()) * amp * 1.2
    hd = rng.normal(0, 1, 3)
    hd /= np.linalg.norm(hd)
    depth = rng.uniform(0.10, 0.25) if hilar else 0.0

    def f(u: Any, v: Any, s: Any) -> Any:
        out = 0.0
        for k in range(4):
            out = out + np.float32(w[k]) * np.cos(
                np.float32(freq[k]) * (u * dirs[k, 0] + v * dirs[k, 1] + s * dirs[k, 2])
                + np.float32(phase[k])
            )
        if depth > 0:
            dd = (u - hd[0]) ** 2 + (v - hd[1]) ** 2 + (s - hd[2]) ** 2
            out = out - np.float32(depth) * np.exp(-dd / np.float32(0.25))
        return out

    return f


def unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    """``v`` scaled to length 1 (a zero vector stays zero)."""
    return v / (np.linalg.norm(v) + 1e-12)


def render_node(
    canvas: Canvas,
    node_map: NDArray[np.uint16],
    node: Node,
    b: Box,
    sdf: Any,
    inside: NDArray[np.bool_],
    params: NodeParams,
    rng: np.random.Generator,
) -> None:
    """Paint a fitted node (box ``b``, signed distance ``sdf``, covered voxels ``inside``) into the canvas and
    the node map: optional stranding halo, the node itself over host fat, then its internal type."""
    sl = b.slices
    tis_id = T.NODE if node.drawn_enlarged else T.NODE_SMALL
    if rng.random() < params.stranding_p:
        halo = canvas.coverage(sdf - rng.uniform(1.0, 3.0))
        halo_m = np.isin(canvas.tissue[sl], np.asarray((T.FAT_VISC,), dtype=np.uint8))
        cur = canvas.hu[sl]
        hv = np.float32(params.stranding_hu)
        h = halo * halo_m
        cur += h * (hv - cur)
        canvas.tissue[sl][(h >= 0.5) & ~inside] = T.STRANDING
    tex = params.texture_sd
    host = np.isin(canvas.tissue[sl], np.asarray(NODE_HOST, dtype=np.uint8))
    canvas.paint(b, sdf, node.hu, tis_id, tex_sd=tex, tex_flip=int(node.node_index) % 4, mask=host | inside)
    node_map[sl][inside] = node.node_index
    own = node_map[sl] == node.node_index
    kind = node.internal
    c, half, rot = node.center, node.half_axes, node.rot
    if kind == "necrotic":
        core = tuple(h * rng.uniform(0.4, 0.6) for h in half)
        bb, s2 = canvas.ellipsoid_sdf(c + rng.normal(0, 0.5, 3), core, rot)
        if s2 is not None and s2.shape == own.shape:
            canvas.paint(bb, s2, float(rng.uniform(5, 35)), tis_id, tex_sd=8, mask=own)
    elif kind == "fatty_hilum":
        off = rot[:, 1] * half[1] * 0.75 * (1 if rng.random() < 0.5 else -1)
        hh = (half[0] * 0.45, half[1] * 0.4, half[2] * 0.5)
        bb, s2 = canvas.ellipsoid_sdf(c + off, hh, rot)
        if s2 is not None:
            m = _crop(bb, b, own)
            if m is not None:
                canvas.paint(bb, s2, float(rng.uniform(-100, -40)), tis_id, tex_sd=10, mask=m)
    elif kind == "calcified":
        for _ in range(int(rng.integers(1, 4))):
            off = rot @ (rng.uniform(-0.5, 0.5, 3) * np.asarray(half))
            r = float(rng.uniform(0.8, 1.6))
            bb, s2 = canvas.ellipsoid_sdf(c + off, (r, r, r))
            if s2 is not None:
                m = _crop(bb, b, own)
                if m is not None:
                    canvas.paint(bb, s2, float(rng.uniform(250, 800)), tis_id, mask=m)


def _crop(inner: Box, outer: Box, own: NDArray[np.bool_]) -> NDArray[np.bool_] | None:
    """``own`` (a mask over ``outer``) cut to ``inner``; None when ``inner`` is empty or not inside ``outer``."""
    if inner.empty:
        return None
    if (
        inner.z0 < outer.z0
        or inner.y0 < outer.y0
        or inner.x0 < outer.x0
        or inner.z1 > outer.z1
        or inner.y1 > outer.y1
        or inner.x1 > outer.x1
    ):
        return None
    return own[
        inner.z0 - outer.z0 : inner.z1 - outer.z0,
        inner.y0 - outer.y0 : inner.y1 - outer.y0,
        inner.x0 - outer.x0 : inner.x1 - outer.x0,
    ]
