"""The node model of insertion: a wide, documented variety of lymph-node shapes and contents.

One :class:`NodeSpec` (frozen) holds everything drawn for a node; :func:`sample_node_spec` draws it and
:func:`render_node` turns it into a sub-voxel coverage and a content image (HU before noise) on a grid.

Distributions (per node):

* short axis (SAD): ground-truth-sized nodes (share ``p_positive``, default 0.8) from the region's marked
  SAD distribution of the collection (:data:`lymphcad.phantom.truthrule.SIZES`, capped at 35 mm); the rest
  uniform between 5 mm and the region's positive threshold (ignored and negative sizes);
* in-plane aspect LAD/SAD: 1 + Gamma(2, 0.11) (median ≈ 1.19; the abdominal marks give 1.22, 5–95 %
  1.02–1.46), ≤ 2.5; cranio-caudal extent uniform between the in-plane long axis and 2 × SAD;
* margins: lobulation (40 % smooth; else amplitude U(0.04, 0.18) of low-order cosines) and irregular
  margins (40 %: amplitude U(0.02, 0.06) at higher order);
* conglomerates: 15 % of ground-truth-sized nodes are 2–4 touching nodes (one record, one mask);
* content: solid 62 %, fatty hilum 14 % (eccentric fat notch, −100…−40 HU), central necrosis / low density
  16 % (core 30–60 % of the axes at 0–30 HU), calcification 8 % (1–3 foci of 1–2 mm, 250–800 HU); node HU
  N(50, 15) clipped to 10–100; texture SD U(0, 10) HU with 2–4 mm correlation (coarser than the noise);
* edge sharpness: Gaussian edge σ U(0.3, 1.5) mm in-plane.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.phantom.truthrule import SAD_CAP_MM, SAD_MIN_MM, SIZES, rule_for


class Formation(enum.Enum):
    """How a node is written into the background image (see :mod:`lymphcad.phantom.formation`)."""

    ADDITIVE = "additive"
    BLEND = "blend"
    TEXTURE = "texture"  # real tissue texture of the same CT (:mod:`lymphcad.phantom.texture`)


class Content(enum.Enum):
    """Internal content type of a node."""

    SOLID = "solid"
    FATTY_HILUM = "fatty_hilum"
    NECROTIC = "necrotic"
    CALCIFIED = "calcified"


CONTENT_P: Final = {
    Content.SOLID: 0.62,
    Content.FATTY_HILUM: 0.14,
    Content.NECROTIC: 0.16,
    Content.CALCIFIED: 0.08,
}
#: share of nodes drawn at ground-truth size (the rest: ignored or negative sizes)
P_POSITIVE: Final = 0.8
P_CONGLOMERATE: Final = 0.15


@dataclass(frozen=True)
class NodeSpec:
    """Every drawn parameter of one node (sizes in mm, HU in Hounsfield units)."""

    region: str
    sad_mm: float
    aspect: float  # in-plane long / short
    cc_ratio: float  # cranio-caudal extent / short axis
    lobulation: float  # amplitude of low-order surface modulation (fraction of the radius)
    irregularity: float  # amplitude of higher-order margin roughness
    members: int  # 1 = single node, 2–4 = conglomerate
    content: Content
    hu: float
    edge_mm: float
    texture_sd: float
    texture_mm: float
    formation: Formation
    seed: int  # seeds the node's own shape/texture generator (render is deterministic per spec)

    def to_row(self) -> dict[str, str]:
        """The spec as strings for the node table."""
        return {
            "drawn_sad_mm": f"{self.sad_mm:.3f}",
            "aspect": f"{self.aspect:.3f}",
            "cc_ratio": f"{self.cc_ratio:.3f}",
            "lobulation": f"{self.lobulation:.3f}",
            "irregularity": f"{self.irregularity:.3f}",
            "members": str(self.members),
            "internal_type": self.content.value,
            "target_hu": f"{self.hu:.1f}",
            "edge_mm": f"{self.edge_mm:.2f}",
            "texture_sd": f"{self.texture_sd:.2f}",
            "texture_mm": f"{self.texture_mm:.2f}",
            "formation": self.formation.value,
        }


def sample_sad(rng: np.random.Generator, region: str, positive: bool) -> float:
    """A short axis: from the region's marked distribution when ``positive``, else below its threshold."""
    rule = rule_for(region)
    if positive:
        return SIZES[region].sample(rng, lo=rule.positive_min_mm, hi=SAD_CAP_MM)
    return float(rng.uniform(SAD_MIN_MM, rule.positive_min_mm))


def sample_node_spec(
    rng: np.random.Generator,
    region: str,
    formations: tuple[Formation, ...],
    *,
    p_positive: float = P_POSITIVE,
    sad_mm: float | None = None,
) -> NodeSpec:
    """Draw one node (distributions in the module docstring); ``formations`` are chosen from uniformly."""
    positive = bool(rng.random() < p_positive)
    sad = sample_sad(rng, region, positive) if sad_mm is None else float(sad_mm)
    aspect = float(min(2.5, 1.0 + rng.gamma(2.0, 0.11)))
    cc = float(rng.uniform(aspect, max(aspect, 2.0) + 1e-6))
    lob = 0.0 if rng.random() < 0.4 else float(rng.uniform(0.04, 0.18))
    irr = 0.0 if rng.random() < 0.6 else float(rng.uniform(0.02, 0.06))
    members = int(rng.integers(2, 5)) if positive and rng.random() < P_CONGLOMERATE else 1
    kinds = list(CONTENT_P)
    content = kinds[int(rng.choice(len(kinds), p=np.array([CONTENT_P[k] for k in kinds])))]
    hu = float(np.clip(rng.normal(50.0, 15.0), 10.0, 100.0))
    edge = float(rng.uniform(0.3, 1.5))
    tex_sd = float(rng.uniform(0.0, 10.0))
    tex_mm = float(rng.uniform(2.0, 4.0))
    formation = formations[int(rng.integers(len(formations)))]
    return NodeSpec(
        region,
        sad,
        aspect,
        cc,
        lob,
        irr,
        members,
        content,
        hu,
        edge,
        tex_sd,
        tex_mm,
        formation,
        int(rng.integers(2**31)),
    )


def random_rotation(rng: np.random.Generator) -> NDArray[np.float64]:
    """Columns: short, in-plane long, cranio-caudal axis (x, y, z); the long 3D axis roughly along z."""
    a = rng.normal(0, 1, 3) * np.array([0.35, 0.35, 1.0])
    a /= np.linalg.norm(a)
    b = np.cross(a, np.array([1.0, 0.0, 0.0]))
    if np.linalg.norm(b) < 1e-6:
        b = np.cross(a, np.array([0.0, 1.0, 0.0]))
    b /= np.linalg.norm(b)
    c = np.cross(a, b)
    th = rng.uniform(0, np.pi)
    b2, c2 = np.cos(th) * b + np.sin(th) * c, -np.sin(th) * b + np.cos(th) * c
    return np.stack([b2, c2, a], axis=1)


Surface = Callable[[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]], NDArray[np.float32]]


def _surface(rng: np.random.Generator, lob: float, irr: float) -> Surface:
    """Radial modulation r(u) − 1 of a unit direction u: low-order lobes plus higher-order roughness."""
    n_lo, n_hi = 4, 8
    d = rng.normal(0, 1, (n_lo + n_hi, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    freq = np.concatenate([rng.uniform(1.0, 2.6, n_lo), rng.uniform(4.0, 8.0, n_hi)])
    phase = rng.uniform(0, 2 * np.pi, n_lo + n_hi)
    w = np.concatenate(
        [
            rng.normal(0, 1, n_lo) * lob / np.sqrt(n_lo) * 1.2,
            rng.normal(0, 1, n_hi) * irr / np.sqrt(n_hi) * 1.2,
        ]
    ).astype(np.float32)

    def f(u: NDArray[np.float32], v: NDArray[np.float32], s: NDArray[np.float32]) -> NDArray[np.float32]:
        out = np.zeros(np.broadcast_shapes(u.shape, v.shape, s.shape), np.float32)
        for k in range(len(w)):
            if w[k] != 0:
                out += w[k] * np.cos(
                    np.float32(freq[k]) * (u * d[k, 0] + v * d[k, 1] + s * d[k, 2]) + np.float32(phase[k])
                )
        return out

    return f


@dataclass(frozen=True)
class NodeGeometry:
    """Where a node sits: centre (grid mm, z y x = index × spacing) and its rotation (x, y, z columns)."""

    centre_zyx_mm: tuple[float, float, float]
    rot: NDArray[np.float64]
    members: tuple[
        tuple[tuple[float, float, float], tuple[float, float, float]], ...
    ]  # (offset xyz, half axes)


def node_geometry(
    spec: NodeSpec, centre_zyx_mm: NDArray[np.float64], rot: NDArray[np.float64]
) -> NodeGeometry:
    """The member ellipsoids of a node: one, or 2–4 touching ones of a conglomerate along its long axes."""
    rng = np.random.default_rng(spec.seed)
    half = (spec.sad_mm / 2.0, spec.aspect * spec.sad_mm / 2.0, spec.cc_ratio * spec.sad_mm / 2.0)
    members = [((0.0, 0.0, 0.0), half)]
    for _ in range(spec.members - 1):
        s = float(rng.uniform(0.55, 0.9))
        h2 = (half[0] * s, half[1] * s, half[2] * s)
        ax = 1 if rng.random() < 0.5 else 2
        sgn = 1.0 if rng.random() < 0.5 else -1.0
        base = members[int(rng.integers(len(members)))]
        off = list(base[0])
        off[ax] += sgn * (base[1][ax] + h2[ax]) * 0.8
        off[0] += float(rng.normal(0, 0.15)) * half[0]
        members.append(((off[0], off[1], off[2]), h2))
    c = tuple(float(v) for v in centre_zyx_mm)
    return NodeGeometry((c[0], c[1], c[2]), rot, tuple(members))


def _ellipsoid_cov(
    px: NDArray[np.float32],
    py: NDArray[np.float32],
    pz: NDArray[np.float32],
    rot: NDArray[np.float64],
    off: tuple[float, float, float],
    half: tuple[float, float, float],
    h: float,
    surf: Surface | None,
) -> NDArray[np.float32]:
    """Coverage clip(0.5 − sdf/h) of one (modulated) ellipsoid; p* are offsets from the node centre (x, y, z)."""
    r = rot.astype(np.float32)
    u = px * r[0, 0] + py * r[1, 0] + pz * r[2, 0] - np.float32(off[0])
    v = px * r[0, 1] + py * r[1, 1] + pz * r[2, 1] - np.float32(off[1])
    w = px * r[0, 2] + py * r[1, 2] + pz * r[2, 2] - np.float32(off[2])
    ax = np.asarray(half, np.float32)
    q = np.sqrt((u / ax[0]) ** 2 + (v / ax[1]) ** 2 + (w / ax[2]) ** 2) + np.float32(1e-6)
    g = np.sqrt((u / ax[0] ** 2) ** 2 + (v / ax[1] ** 2) ** 2 + (w / ax[2] ** 2) ** 2) / q + np.float32(1e-6)
    if surf is not None:
        q = q / (np.float32(1.0) + surf(u / q / ax[0], v / q / ax[1], w / q / ax[2]))
    sdf = (q - 1.0) / g
    return np.asarray(np.clip(0.5 - sdf / np.float32(h), 0.0, 1.0), np.float32)


@dataclass(frozen=True)
class RenderedNode:
    """A node on the grid: its box, sub-voxel coverage (0–1) and content HU (before noise), in the box."""

    box: tuple[slice, slice, slice]
    coverage: NDArray[np.float32]
    content: NDArray[np.float32]


def node_box(
    geo: NodeGeometry, shape: tuple[int, int, int], spacing_zyx: tuple[float, float, float], pad_mm: float
) -> tuple[slice, slice, slice] | None:
    """The grid box holding the node plus ``pad_mm``; None when it reaches outside the grid."""
    ext = np.zeros(3)
    for off, half in geo.members:
        o = geo.rot @ np.asarray(off)
        ext = np.maximum(ext, np.abs(o) + np.abs(geo.rot) @ np.asarray(half) * 1.35)
    c = np.asarray(geo.centre_zyx_mm)
    reach_zyx = np.array([ext[2], ext[1], ext[0]]) + pad_mm
    sp = np.asarray(spacing_zyx)
    lo = np.floor((c - reach_zyx) / sp).astype(int) - 1
    hi = np.ceil((c + reach_zyx) / sp).astype(int) + 2
    if np.any(lo < 0) or np.any(hi > np.asarray(shape)):
        return None
    return (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))


def render_node(
    spec: NodeSpec,
    geo: NodeGeometry,
    shape: tuple[int, int, int],
    spacing_zyx: tuple[float, float, float],
    *,
    sub_z: int = 5,
    pad_mm: float = 4.0,
) -> RenderedNode | None:
    """Coverage (in-plane coverage averaged over ``sub_z`` sub-slices: the slice profile) and content HU."""
    box = node_box(geo, shape, spacing_zyx, pad_mm)
    if box is None:
        return None
    rng = np.random.default_rng(spec.seed + 1)
    surf = (
        _surface(rng, spec.lobulation, spec.irregularity) if (spec.lobulation or spec.irregularity) else None
    )
    dz, dy, dx = spacing_zyx
    c = geo.centre_zyx_mm
    z = (np.arange(box[0].start, box[0].stop) * dz - c[0]).astype(np.float32)
    y = (np.arange(box[1].start, box[1].stop) * dy - c[1]).astype(np.float32)
    x = (np.arange(box[2].start, box[2].stop) * dx - c[2]).astype(np.float32)
    off = (((np.arange(sub_z) + 0.5) / sub_z - 0.5) * dz).astype(np.float32)
    pz = (z[:, None, None, None] + off[None, None, None, :]).astype(np.float32)
    py = y[None, :, None, None]
    px = x[None, None, :, None]
    h = 0.5 * (dx + dy)
    cov = np.zeros((len(z), len(y), len(x), sub_z), np.float32)
    for m_off, half in geo.members:
        np.maximum(cov, _ellipsoid_cov(px, py, pz, geo.rot, m_off, half, h, surf), out=cov)
    covm = cov.mean(axis=3)
    # content: node HU + correlated texture, then the internal structure
    content = np.full(covm.shape, spec.hu, np.float32)
    if spec.texture_sd > 0:
        t = ndimage.gaussian_filter(
            rng.standard_normal(covm.shape).astype(np.float32),
            (max(0.3, spec.texture_mm / dz), spec.texture_mm / dy, spec.texture_mm / dx),
        )
        content += t * np.float32(spec.texture_sd / (float(t.std()) + 1e-6))
    half0 = geo.members[0][1]
    if spec.content is Content.NECROTIC:
        f = float(rng.uniform(0.3, 0.6))
        core_half = (half0[0] * f, half0[1] * f, half0[2] * f)
        core = _ellipsoid_cov(px, py, pz, geo.rot, (0.0, 0.0, 0.0), core_half, h, None).mean(axis=3)
        content += (np.float32(rng.uniform(0.0, 30.0)) - np.float32(spec.hu)) * core
    elif spec.content is Content.FATTY_HILUM:
        sgn = 1.0 if rng.random() < 0.5 else -1.0
        off_h = (0.0, sgn * half0[1] * 0.75, 0.0)
        hh = (half0[0] * 0.45, half0[1] * 0.4, half0[2] * 0.5)
        hil = _ellipsoid_cov(px, py, pz, geo.rot, off_h, hh, h, None).mean(axis=3)
        content += (np.float32(rng.uniform(-100.0, -40.0)) - content) * hil
    elif spec.content is Content.CALCIFIED:
        for _ in range(int(rng.integers(1, 4))):
            o = tuple(float(v) for v in rng.uniform(-0.45, 0.45, 3) * np.asarray(half0))
            r = float(rng.uniform(0.5, 1.0))
            cal = _ellipsoid_cov(px, py, pz, geo.rot, o, (r, r, r), h, None).mean(axis=3)  # type: ignore[arg-type]
            content += (np.float32(rng.uniform(250.0, 800.0)) - content) * cal
    return RenderedNode(box, covm, content)
