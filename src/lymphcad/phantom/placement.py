"""Where each node goes and how it is written: node placement at the stations of a real CT background.

Per case (:func:`insert_nodes`), in two passes over the stations of the chosen region (by weight):

1. **In fat** (as deep as the node): a :class:`NodeSpec` from the node model, a centre inside the station where
   node-hosting tissue (visceral fat, thin septa) is as deep as the node's short half-axis, the short axis along
   the depth gradient (so the node touches what bounds the fat). The interior (coverage ≥ 0.5) must lie in
   hosting tissue only, ≥ :data:`MIN_FAT_SHARE` fat, a voxel from other nodes. These nodes are then written,
   each by its own image-formation model (:mod:`lymphcad.phantom.formation`).
2. **By mass effect**, only when the first pass left the case short (fat-poor mediastina, thin patients):
   a centre in hosting tissue as thin as :data:`RHO0_MIN` × the node's half-axes; the node's neighbours —
   vessels, airway, oesophagus, lung boundary, organs — are pushed outward by an incompressible radial
   displacement (:mod:`lymphcad.phantom.masseffect`) so the node occupies its own space: it still overlaps
   only hosting tissue (the stretched seed), the displaced anatomy keeps its volume, and no bone, body edge or
   other node may lie within :data:`~lymphcad.phantom.masseffect.RHO_RIGID` of it. Conglomerates are placed
   as their main node here. Each node is written right after its push (later pushes move earlier nodes).

Backgrounds where the first pass suffices come out exactly as before the second pass existed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.errors import InputError, UsageError
from lymphcad.geometry import CTVolume, hu_to_int16
from lymphcad.phantom.analysis import BackgroundAnalysis, analyse_background
from lymphcad.phantom.background import CLASS_NAMES, NODE_HOST, STATIONS, StationSpec, Tissue, mediastinum
from lymphcad.phantom.formation import (
    NoiseModel,
    form_additive,
    form_blend,
    highpass,
    homogeneous,
    local_noise_sd,
    robust_sd,
)
from lymphcad.phantom.inserted import InsertedNode, InsertionResult
from lymphcad.phantom.masseffect import (
    FIXED_RAMP_MM,
    RHO_RIGID,
    ZONE_MARGIN,
    Push,
    warp_image,
    warp_labels,
    warp_smooth,
)
from lymphcad.phantom.nodemodel import (
    Formation,
    NodeGeometry,
    NodeSpec,
    RenderedNode,
    node_box,
    node_geometry,
    random_rotation,
    render_node,
    sample_node_spec,
)
from lymphcad.phantom.nodes import measure_mask
from lymphcad.phantom.truthrule import TruthClass, rule_for

REGION_CHOICES: Final = ("mediastinal", "abdominal", "auto")
FORMATION_CHOICES: Final = ("additive", "blend", "both")
#: positions tried for one drawn node before another is drawn, and drawn nodes per requested node
POSITION_TRIES: Final = 30
DRAWS_PER_NODE: Final = 8
#: consecutive drawn nodes that found no room before the stations count as full
MAX_FAILED_DRAWS: Final = 24
#: the share of a node's interior that must be visceral fat (the rest: thin septa / vessel walls)
MIN_FAT_SHARE: Final = 0.6
#: a centre's hosting-tissue depth may fall short of the short half-axis by this much (mm): partial volume
DEPTH_TOL_MM: Final = 1.0
#: mass effect: drawn nodes per missing node, and consecutive failures before the stations count as full
PUSH_DRAWS_PER_NODE: Final = 16
PUSH_MAX_FAILED_DRAWS: Final = 48
#: mass effect: the seed of hosting tissue must reach this share of the node's half-axes (normalised radius)
RHO0_MIN: Final = 0.02
#: a mass-effect seed's local mean stays below this (HU): fat, or a fat plane thinner than a voxel
SEED_MAX_HU: Final = -10.0
#: the most a pushed node's rim leans from the hosting tissue's mean towards the surrounding soft tissue
RIM_SOFT_MAX: Final = 0.8
#: classes that never move under a push: bone, the body's edge, the cartilage-ringed airway
RIGID: Final = (int(Tissue.BONE), int(Tissue.OUTSIDE), int(Tissue.AIRWAY))
#: radius (mm) about the vertebral body's centre that counts as bone (its marrow may read as soft tissue or
#: lumen-bright, its cortex is not always above the bone threshold)
VERTEBRA_MM: Final = 17.0
#: within this depth (mm) below the body's surface bone-bright voxels are bone (the chest wall)
WALL_MM: Final = 35.0
#: within this radius (mm) of the vertebral body's centre bone-bright voxels are bone (ribs' heads, posterior arch)
SPINE_ZONE_MM: Final = 45.0
_HOST = np.zeros(256, bool)
_HOST[[int(t) for t in NODE_HOST]] = True


class PlacementError(InputError):
    """The background has no room for the asked minimum number of nodes."""


def parse_formations(formation: str) -> tuple[Formation, ...]:
    """``additive`` | ``blend`` | ``both`` → the image-formation models a node is drawn from."""
    if formation == "both":
        return (Formation.ADDITIVE, Formation.BLEND)
    try:
        return (Formation(formation),)
    except ValueError:
        raise UsageError(
            f"--formation must be one of {', '.join(FORMATION_CHOICES)} (got {formation!r})"
        ) from None


def _stations_for(an: BackgroundAnalysis, region: str) -> list[StationSpec]:
    reg = an.region if region == "auto" else region
    return [s for s in STATIONS if s.region == reg and s.name in an.stations]


def _orientation(
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
class _Placed:
    """A node on its way into the case: drawn, posed, rendered; ``box`` None once a push moved it."""

    spec: NodeSpec
    rendered: RenderedNode
    station: StationSpec
    inside: NDArray[np.bool_]
    fat_share: float
    push: Push | None = None
    box: tuple[slice, slice, slice] | None = None


@dataclass
class _Canvas:
    """The case's working arrays while nodes are pushed in: the anatomy (background, pushed), the image (with
    the nodes written), its tissue map, smooth reference and hosting depth, the node map."""

    anatomy: NDArray[np.float32]
    image: NDArray[np.float32]
    tissue: NDArray[np.uint8]
    smooth: NDArray[np.float32]
    depth: NDArray[np.float32]
    all_nodes: NDArray[np.uint16]
    rigid: NDArray[np.bool_]  # what never moves: bone, the body's edge, the vertebral bodies
    fatty: NDArray[np.bool_]  # hosting tissue with a fat-like local mean: where a node's seed may lie
    made: NDArray[np.bool_]  # the pushed nodes' zones (filled, not real fat)


def insert_nodes(
    vol: CTVolume,
    n_nodes: int,
    rng: np.random.Generator,
    *,
    region: str = "auto",
    formations: tuple[Formation, ...] = (Formation.ADDITIVE, Formation.BLEND),
    analysis: BackgroundAnalysis | None = None,
    p_positive: float = 0.8,
    mass_effect: bool = True,
) -> InsertionResult:
    """Insert up to ``n_nodes`` nodes at the stations of ``region`` (``auto``: the background's own region):
    in fat first, then (``mass_effect``) by pushing neighbours aside where fat is too thin (module docstring).

    Returns fewer nodes when the stations have no more room; :func:`lymphcad.phantom.insert.insert_cohort` turns
    a shortfall below the asked minimum into a :class:`PlacementError`.
    """
    if region not in REGION_CHOICES:
        raise UsageError(f"--region must be one of {', '.join(REGION_CHOICES)} (got {region!r})")
    an = analyse_background(vol) if analysis is None else analysis
    geom = vol.geometry
    sp = geom.spacing_zyx
    shape: tuple[int, int, int] = (int(vol.array.shape[0]), int(vol.array.shape[1]), int(vol.array.shape[2]))
    sts = _stations_for(an, region)
    reg = an.region if region == "auto" else region
    occupied = np.zeros(shape, bool)
    all_nodes = np.zeros(shape, np.uint16)
    placed: list[_Placed] = []
    weights = np.array([s.weight for s in sts], dtype=float)
    weights /= max(weights.sum(), 1e-12)
    vox = {s.name: an.station_voxels(s.name) for s in sts}
    if sts:
        depth_at = {s.name: an.depth_mm[tuple(vox[s.name].T)] for s in sts}
        draws = failed = 0
        while (
            len(placed) < n_nodes and draws < DRAWS_PER_NODE * max(1, n_nodes) and failed < MAX_FAILED_DRAWS
        ):
            draws += 1
            st = sts[int(rng.choice(len(sts), p=weights))]
            spec = sample_node_spec(rng, st.region, formations, p_positive=p_positive)
            got = _place_one(an, spec, st, vox[st.name], depth_at[st.name], shape, sp, occupied, rng)
            if got is None:
                failed += 1
                continue
            failed = 0
            rendered, inside, fat_share = got
            nid = len(placed) + 1
            all_nodes[rendered.box][inside] = nid
            occupied[rendered.box] |= inside
            placed.append(_Placed(spec, rendered, st, inside, fat_share, box=rendered.box))
    # image formation, node by node, each by its own model
    hu0 = vol.array.astype(np.float32)
    out = hu0.copy()
    noise_sd: list[float] = []
    for p in placed:
        noise_sd.append(_form(out, hu0, an.tissue, an.hu_smooth, an, p, sp))
    tissue = an.tissue
    if mass_effect and sts and len(placed) < n_nodes:
        cv = _Canvas(
            hu0.copy(),
            out,
            an.tissue.copy(),
            an.hu_smooth.copy(),
            an.depth_mm.copy(),
            all_nodes,
            _rigid(an, sp),
            _fatty(hu0, an.tissue),
            np.zeros(shape, bool),
        )
        draws = failed = 0
        budget = PUSH_DRAWS_PER_NODE * max(1, n_nodes - len(placed))
        while len(placed) < n_nodes and draws < budget and failed < PUSH_MAX_FAILED_DRAWS:
            draws += 1
            st = sts[int(rng.choice(len(sts), p=weights))]
            spec = sample_node_spec(rng, st.region, formations, p_positive=p_positive)
            if spec.members > 1:
                spec = replace(spec, members=1)
            if not _push_one(cv, spec, st, vox[st.name], shape, sp, placed, rng, an.noise):
                failed += 1
                continue
            failed = 0
            noise_sd.append(_form(cv.image, cv.anatomy, cv.tissue, cv.smooth, an, placed[-1], sp))
        out, all_nodes, tissue = cv.image, cv.all_nodes, cv.tissue
    image = np.array(vol.array, dtype=np.int16, copy=True)
    changed = out != hu0
    image[changed] = hu_to_int16(np.clip(out[changed], -1024, 3071))
    return _measure(image, all_nodes, tissue, placed, noise_sd, vol, reg, n_nodes)


def _form(
    out: NDArray[np.float32],
    anatomy: NDArray[np.float32],
    tissue: NDArray[np.uint8],
    smooth: NDArray[np.float32],
    an: BackgroundAnalysis,
    p: _Placed,
    sp: tuple[float, float, float],
) -> float:
    """Write one node into ``out`` by its own image-formation model; the local noise SD it measured."""
    spec, rendered, inside = p.spec, p.rendered, p.inside
    box = rendered.box
    sigma = (
        local_noise_sd(anatomy, tissue, box, inside, an.noise)
        if p.push is None
        else _noise_around(anatomy, tissue, box, an.noise)
    )
    if spec.formation is Formation.ADDITIVE:
        out[box] = form_additive(out[box], smooth[box], rendered.coverage, rendered.content, spec.edge_mm, sp)
    else:
        nrng = np.random.default_rng(spec.seed + 2)
        cs = rendered.coverage.shape
        noise = an.noise.synthesize(nrng, (int(cs[0]), int(cs[1]), int(cs[2])), sp)
        out[box] = form_blend(out[box], rendered.coverage, rendered.content, spec.edge_mm, sp, noise, sigma)
    return float(np.mean(sigma[inside.any(axis=(1, 2))]))


def _measure(
    image: NDArray[np.int16],
    all_nodes: NDArray[np.uint16],
    tissue: NDArray[np.uint8],
    placed: list[_Placed],
    noise_sd: list[float],
    vol: CTVolume,
    reg: str,
    n_nodes: int,
) -> InsertionResult:
    """Measure the nodes as placed (pushed ones from the node map), classify them by the region's rule and
    number the ground truth."""
    geom = vol.geometry
    sp = geom.spacing_zyx
    shape = image.shape
    nodes: list[InsertedNode] = []
    labels = np.zeros(shape, np.uint16)
    objs = ndimage.find_objects(all_nodes) if any(p.box is None for p in placed) else []
    n_gt = 0
    for idx, p in enumerate(placed, start=1):
        if p.box is not None:
            box, inside = p.box, p.inside
        else:  # moved by a push: its mask as it lies now, with a margin for the ring around it
            sl = objs[idx - 1]
            assert sl is not None
            box = tuple(
                slice(max(0, s.start - 3), min(n, s.stop + 3)) for s, n in zip(sl, shape, strict=True)
            )  # type: ignore[assignment]
            inside = all_nodes[box] == idx
        meas = measure_mask(inside, sp)
        off = np.array([s.start for s in box], dtype=float)
        cz, cy, cx = np.asarray(meas["centroid_zyx"]) + off
        ci = tuple(round(v) for v in (cz, cy, cx))
        if all_nodes[ci] != idx:  # centroid outside a bean-shaped mask: nearest voxel inside
            zz, yy, xx = np.nonzero(inside)
            q = int(np.argmin((zz + off[0] - cz) ** 2 + (yy + off[1] - cy) ** 2 + (xx + off[2] - cx) ** 2))
            cz, cy, cx = zz[q] + off[0], yy[q] + off[1], xx[q] + off[2]
        truth = rule_for(p.station.region).classify(float(meas["sad_mm"]))
        gt = 0
        if truth is TruthClass.POSITIVE:
            n_gt += 1
            gt = n_gt
            labels[box][inside] = gt
        ring = ndimage.binary_dilation(inside, iterations=2) & ~inside
        around = tissue[box][ring]
        around = around[(around != Tissue.FAT_VISC) & (around != Tissue.SOFT_THIN)]
        nearest = CLASS_NAMES[int(np.bincount(around).argmax())].split(" ")[0] if around.size else "fat"
        w = geom.zyx_to_world([cz, cy, cx])
        nodes.append(
            InsertedNode(
                idx,
                gt,
                (float(w[0]), float(w[1]), float(w[2])),
                float(meas["sad_mm"]),
                float(meas["lad_mm"]),
                float(meas["volume_mm3"]),
                p.station.region,
                p.station.name,
                truth,
                p.spec,
                float(image[box][inside].mean()),
                noise_sd[idx - 1],
                nearest,
                p.fat_share,
                "fat" if p.push is None else "mass_effect",
                0.0 if p.push is None else p.push.push_mm,
            )
        )
    return InsertionResult(image, all_nodes, labels, tuple(nodes), reg, n_nodes, tissue)


def _place_one(
    an: BackgroundAnalysis,
    spec: NodeSpec,
    st: StationSpec,
    vox: NDArray[np.intp],
    depth_at: NDArray[np.float32],
    shape: tuple[int, int, int],
    sp: tuple[float, float, float],
    occupied: NDArray[np.bool_],
    rng: np.random.Generator,
) -> tuple[Any, NDArray[np.bool_], float] | None:
    """Find a pose for one drawn node at a station; (rendered node, interior mask, fat share) or None."""
    need = 0.5 * spec.sad_mm - DEPTH_TOL_MM
    ok = np.flatnonzero(depth_at >= need)
    if ok.size == 0:
        return None
    # prefer snug poses (the node touches what bounds the fat), as nodes sit against vessels and airways
    slack = depth_at[ok] - need
    w = 1.0 / (1.0 + slack)
    w /= w.sum()
    host = np.zeros(256, bool)
    host[list(int(t) for t in NODE_HOST)] = True
    for _ in range(POSITION_TRIES):
        k, j, i = (int(v) for v in vox[ok[int(rng.choice(ok.size, p=w))]])
        rot = _orientation(an.depth_mm, k, j, i, sp, rng)
        centre = np.array([k * sp[0], j * sp[1], i * sp[2]]) + rng.uniform(-0.3, 0.3, 3) * np.asarray(sp)
        geo = node_geometry(spec, centre, rot)
        if not _precheck(geo, an.tissue, sp, host):
            continue
        rendered = render_node(spec, geo, shape, sp)
        if rendered is None:
            continue
        inside = rendered.coverage >= 0.5
        if inside.sum() < 4:
            continue
        box = rendered.box
        if any(b.start == 0 or b.stop == n for b, n in zip(box, shape, strict=True)):
            continue
        t = an.tissue[box][inside]
        if not host[t].all():
            continue
        fat_share = float((t == Tissue.FAT_VISC).mean())
        if fat_share < MIN_FAT_SHARE:
            continue
        if ndimage.binary_dilation(occupied[box], iterations=1)[inside].any():
            continue
        return rendered, inside, fat_share
    return None


def _precheck(
    geo: NodeGeometry, tissue: NDArray[np.uint8], sp: tuple[float, float, float], host: NDArray[np.bool_]
) -> bool:
    """Cheap rejection before rendering: each member's centre and 14 points at 80 % of its axes must be
    node-hosting tissue."""
    pts = [np.zeros(3)]
    for ax in range(3):
        for sg in (-1.0, 1.0):
            e = np.zeros(3)
            e[ax] = sg * 0.8
            pts.append(e)
    for sx in (-1, 1):
        for sy in (-1, 1):
            for sz in (-1, 1):
                pts.append(0.46 * np.array([sx, sy, sz], dtype=float))
    unit = np.asarray(pts)
    c = np.asarray(geo.centre_zyx_mm)
    for off, half in geo.members:
        local = unit * np.asarray(half) + np.asarray(off)  # (x, y, z) in the node frame
        w = local @ geo.rot.T  # world-axis offsets (x, y, z) in mm
        idx = np.round((c[None, :] + w[:, ::-1]) / np.asarray(sp)).astype(int)
        if np.any(idx < 0) or np.any(idx >= np.asarray(tissue.shape)):
            return False
        if not host[tissue[idx[:, 0], idx[:, 1], idx[:, 2]]].all():
            return False
    return True


def _union(a: tuple[slice, slice, slice], b: tuple[slice, slice, slice]) -> tuple[slice, slice, slice]:
    return (
        slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)),
        slice(min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)),
        slice(min(a[2].start, b[2].start), max(a[2].stop, b[2].stop)),
    )


def _overlaps(a: tuple[slice, slice, slice], b: tuple[slice, slice, slice]) -> bool:
    return all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b, strict=True))


def _push_one(
    cv: _Canvas,
    spec: NodeSpec,
    st: StationSpec,
    vox: NDArray[np.intp],
    shape: tuple[int, int, int],
    sp: tuple[float, float, float],
    placed: list[_Placed],
    rng: np.random.Generator,
    noise_model: NoiseModel,
) -> bool:
    """Place one node by mass effect: on success the canvas is pushed and the node appended to ``placed``."""
    here = tuple(vox.T)
    d_at = cv.depth[here]
    half_min = 0.5 * spec.sad_mm
    # a node grows in fat: its seed is hosting tissue with a fat-like local mean (a fat plane, partial volume
    # included; soft tissue of septa alone may be a speck inside an organ)
    ok = np.flatnonzero(cv.fatty[here] & (d_at >= RHO0_MIN * half_min) & (cv.all_nodes[here] == 0))
    if ok.size == 0:
        return False
    # prefer the roomier seeds: the less a node must push, the less its neighbours deform
    w = d_at[ok].astype(np.float64) ** 2
    w /= w.sum()
    # the zone reaches past the lobulated surface by a margin of stretched fat (a thin fat rim, or none)
    rho_node = 1.0 + spec.lobulation + spec.irregularity + float(rng.uniform(*ZONE_MARGIN))
    for _ in range(POSITION_TRIES):
        k, j, i = (int(v) for v in vox[ok[int(rng.choice(ok.size, p=w))]])
        rot = _orientation(cv.depth, k, j, i, sp, rng)
        centre = np.array([k * sp[0], j * sp[1], i * sp[2]]) + rng.uniform(-0.3, 0.3, 3) * np.asarray(sp)
        geo = node_geometry(spec, centre, rot)
        half = geo.members[0][1]
        trial = Push(geo.centre_zyx_mm, rot, half, rho_node, rho_node)
        wbox = trial.box(shape, sp)
        nbox = node_box(geo, shape, sp, 4.0)
        if nbox is None:
            continue
        box = _union(wbox, nbox)
        rho, _ = trial.normalised_radius(box, sp)
        t = cv.tissue[box]
        non_host = ~_HOST[t]
        # the seed: hosting tissue up to the nearest cell of a voxel that cannot host a node (its centre's
        # radius less the half-cell), so that no point of the seed samples such a voxel
        if non_host.any():
            g = np.gradient(rho, *sp)
            cell = rho - 0.5 * sum(np.abs(ga) * s for ga, s in zip(g, sp, strict=True))
            rho0 = min(rho_node, float(cell[non_host].min()))
        else:
            rho0 = rho_node
        if rho0 < RHO0_MIN:
            continue
        near = (rho < RHO_RIGID) | (rho < rho_node + FIXED_RAMP_MM / min(half))
        fixed = cv.rigid[box]
        # the airway does not move either, but a node may sit against its wall (paratracheal, subcarinal): it
        # only has to stay a voxel clear of the node's zone
        airway = t == Tissue.AIRWAY
        if (fixed & ~airway)[near].any() or (cv.all_nodes[box][near] > 0).any():
            continue
        if airway[rho < rho_node + max(sp[1], sp[2]) / min(half)].any():
            continue
        push = Push(geo.centre_zyx_mm, rot, half, rho0, rho_node)
        coords, moved = push.source_coords(box, sp, fixed)
        tis = warp_labels(t, coords, moved)
        rendered = render_node(spec, geo, shape, sp)
        if rendered is None:
            continue
        inside = rendered.coverage >= 0.5
        if inside.sum() < 4:
            continue
        rel = tuple(
            slice(r.start - b.start, r.stop - b.start) for r, b in zip(rendered.box, box, strict=True)
        )
        zone_rel = (rho < rho_node)[rel]
        if not (_HOST[tis[rel][inside]] | zone_rel[inside]).all():
            continue
        nodes_w = warp_labels(cv.all_nodes[box], coords, moved)
        if ndimage.binary_dilation(nodes_w[rel] > 0, iterations=1)[inside].any():
            continue
        seed = t[rho < rho0]
        if seed.size == 0:
            seed = t[
                tuple(
                    min(max(v - b.start, 0), b.stop - b.start - 1)
                    for v, b in zip((k, j, i), box, strict=True)
                )
            ]
        fat_share = float(np.mean(np.asarray(seed) == Tissue.FAT_VISC))
        # commit: push the anatomy, the image (with earlier nodes) and the maps. The node's zone is the stretched
        # seed: hosting tissue (its partial-volume rim included), the local mean of hosting tissue plus the scan's
        # own noise (interpolating the few seed voxels would smear the neighbours' edges into it)
        zone = rho < rho_node
        # the noise level at the node (per slice of its own box, as the blend model measures it), before the push
        node_sd = _noise_around(cv.anatomy, cv.tissue, rendered.box, noise_model)
        sigma = np.full(zone.shape[0], float(np.mean(node_sd)), np.float32)
        sigma[rel[0]] = node_sd
        tis[zone & ~_HOST[tis]] = Tissue.SOFT_THIN
        cv.tissue[box] = tis
        cv.all_nodes[box] = nodes_w
        cv.smooth[box] = warp_smooth(cv.smooth[box], coords, moved)
        nz_, ny_, nx_ = (int(v) for v in zone.shape)
        # under the node the fill is the hosting tissue's mean (what the additive model expects); in the rim
        # between the node and its zone's edge it leans, by a share drawn per node, towards the surrounding soft
        # tissue: a thin fat plane around the node, or none (compressed fascia), not always a dark ring
        soft = t == Tissue.SOFT
        soft_hu = float(np.median(cv.anatomy[box][soft])) if soft.sum() >= 50 else float(spec.hu)
        cov = np.zeros(zone.shape, np.float32)
        cov[rel] = rendered.coverage
        lean = float(rng.uniform(0.0, RIM_SOFT_MAX)) * (1.0 - cov)
        base = cv.smooth[box]
        fill = (
            base
            + lean * (np.float32(soft_hu) - base)
            + sigma[:, None, None]
            * noise_model.synthesize(np.random.default_rng(spec.seed + 3), (nz_, ny_, nx_), sp)
        )
        for arr in (cv.anatomy, cv.image):
            warped = warp_image(arr[box], coords, moved)
            warped[zone] = fill[zone]
            arr[box] = warped
        _update_depth(cv, box, sp)
        # a node's zone is made-up fat: no seed for the next node (nodes would cluster on each other's rims)
        cv.made[box] = warp_labels(cv.made[box], coords, moved) | zone
        cv.fatty[box] = _fatty(cv.anatomy[box], cv.tissue[box]) & ~cv.made[box]
        for p in placed:
            if p.box is not None and _overlaps(p.box, box):
                p.box = None  # moved: measured from the node map
        nid = len(placed) + 1
        cv.all_nodes[rendered.box][inside] = nid
        placed.append(_Placed(spec, rendered, st, inside, fat_share, push, rendered.box))
        return True
    return False


def _rigid(an: BackgroundAnalysis, sp: tuple[float, float, float]) -> NDArray[np.bool_]:
    """Voxels a push may not move: bone, outside the body, the airway and a disk about each slice's vertebral body.

    Bone-bright voxels inside the lungs' hull away from the spine (more than :data:`SPINE_ZONE_MM` from the
    vertebral body's centre) and from the chest wall (deeper than :data:`WALL_MM`): no bone there but the
    spine's and the chest wall's; they are dense contrast in a vessel — a CTA's superior vena cava, aorta or
    pulmonary arteries pass the bone test — and move like lumen. Without a spine in a
    slice, all its bone stays fixed."""
    out = np.isin(an.tissue, np.asarray(RIGID, np.uint8)) & (an.tissue != Tissue.BONE)
    bone = an.tissue == Tissue.BONE
    _, dy, dx = sp
    ny, nx = an.tissue.shape[1:]
    jj = np.arange(ny, dtype=np.float64)[:, None]
    ii = np.arange(nx, dtype=np.float64)[None, :]
    inner = mediastinum(an.tissue, an.landmarks)
    for k, (j, i) in enumerate(_spine_track(an.landmarks.spine_ji, sp)):
        # the chest wall (sternum, ribs, costal cartilage) lies within WALL_MM of the body's surface (of the
        # image's edge, for a crop without skin in the slice); its thin cortex may read as lumen-bright only
        body = an.tissue[k] != Tissue.OUTSIDE
        if body.all():
            body[0], body[-1], body[:, 0], body[:, -1] = False, False, False, False
        deep = ndimage.distance_transform_edt(body, sampling=(dy, dx)) > WALL_MM
        out[k] |= (an.tissue[k] == Tissue.VESSEL) & ~deep
        if np.isfinite(j) and np.isfinite(i):
            d2 = ((jj - j) * dy) ** 2 + ((ii - i) * dx) ** 2
            bone[k] &= ~(inner[k] & deep & (d2 > SPINE_ZONE_MM**2))
            out[k] |= d2 <= VERTEBRA_MM**2
    return np.asarray(out | bone, bool)


def _spine_track(spine_ji: NDArray[np.float64], sp: tuple[float, float, float]) -> NDArray[np.float64]:
    """The vertebral-body centres (j, i) per slice, each replaced by the running median of its ±20 mm when it
    strays more than 15 mm from it (a CTA's bone-bright aorta can pass for the spine in a slice)."""
    dz, dy, dx = sp
    h = max(1, round(20.0 / dz))
    out = spine_ji.copy()
    for k in range(spine_ji.shape[0]):
        win = spine_ji[max(0, k - h) : k + h + 1]
        win = win[np.isfinite(win[:, 0])]
        if win.shape[0] < 3:
            continue
        mj, mi = np.median(win[:, 0]), np.median(win[:, 1])
        j, i = spine_ji[k]
        if not np.isfinite(j) or ((j - mj) * dy) ** 2 + ((i - mi) * dx) ** 2 > 15.0**2:
            out[k] = (mj, mi)
    return out


def _fatty(hu: NDArray[np.float32], tissue: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Hosting tissue whose in-plane local mean (σ 1 voxel) is below :data:`SEED_MAX_HU`."""
    m = ndimage.gaussian_filter(hu, (0.0, 1.0, 1.0))
    return np.asarray(_HOST[tissue] & (m < SEED_MAX_HU), bool)


def _noise_around(
    hu: NDArray[np.float32], tissue: NDArray[np.uint8], box: tuple[slice, slice, slice], model: NoiseModel
) -> NDArray[np.float32]:
    """Noise SD (HU) per slice of a node's box from the homogeneous fat and soft tissue in it and 10 voxels
    around (in-plane): a fat-poor mediastinum has too little fat of its own to measure it in."""
    pad = 10
    ny, nx = tissue.shape[1:]
    ebox = (
        box[0],
        slice(max(0, box[1].start - pad), min(ny, box[1].stop + pad)),
        slice(max(0, box[2].start - pad), min(nx, box[2].stop + pad)),
    )
    hp = highpass(hu[ebox])
    hom = homogeneous(tissue[ebox])
    pool = hp[hom]
    whole = robust_sd(pool) / model.hp_gain if pool.size >= 50 else model.sd
    out = np.full(hp.shape[0], whole, np.float32)
    for k in range(hp.shape[0]):
        v = hp[k][hom[k]]
        if v.size >= 150:
            out[k] = robust_sd(v) / model.hp_gain
    return out


def _update_depth(cv: _Canvas, box: tuple[slice, slice, slice], sp: tuple[float, float, float]) -> None:
    """Recompute the hosting depth in a pushed box (from hosting tissue within 10 mm around it)."""
    pad = [max(1, round(10.0 / s)) for s in sp]
    shape = cv.tissue.shape
    ebox = tuple(
        slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(box, pad, shape, strict=True)
    )
    host = _HOST[cv.tissue[ebox]]
    if ebox[0].start == 0:
        host[0] = False
    if ebox[0].stop == shape[0]:
        host[-1] = False
    d = np.asarray(ndimage.distance_transform_edt(host, sampling=sp), np.float32)
    inner = tuple(slice(b.start - e.start, b.stop - e.start) for b, e in zip(box, ebox, strict=True))
    cv.depth[box] = d[inner]
