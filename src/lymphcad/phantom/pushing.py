"""Placing a node by mass effect (the second pass of :func:`lymphcad.phantom.placement.insert_nodes`): seeds in
fat-like hosting tissue, what a push may not move (bone, the chest wall, the airway, the vertebral body), and the
push applied to the case's working arrays (:class:`PushCanvas`), with the node's zone filled. The displacement
field itself is :mod:`lymphcad.phantom.masseffect`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.phantom.analysis import BackgroundAnalysis
from lymphcad.phantom.background import StationSpec, Tissue, mediastinum
from lymphcad.phantom.formation import NoiseModel, highpass, homogeneous, robust_sd
from lymphcad.phantom.masseffect import (
    FIXED_RAMP_MM,
    RHO_RIGID,
    ZONE_MARGIN,
    Push,
    warp_image,
    warp_labels,
    warp_smooth,
)
from lymphcad.phantom.nodemodel import NodeSpec, node_box, node_geometry, render_node
from lymphcad.phantom.pose import HOST, POSITION_TRIES, PlacedNode, orientation

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


@dataclass
class PushCanvas:
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


def union_box(a: tuple[slice, slice, slice], b: tuple[slice, slice, slice]) -> tuple[slice, slice, slice]:
    return (
        slice(min(a[0].start, b[0].start), max(a[0].stop, b[0].stop)),
        slice(min(a[1].start, b[1].start), max(a[1].stop, b[1].stop)),
        slice(min(a[2].start, b[2].start), max(a[2].stop, b[2].stop)),
    )


def boxes_overlap(a: tuple[slice, slice, slice], b: tuple[slice, slice, slice]) -> bool:
    return all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b, strict=True))


def push_one(
    cv: PushCanvas,
    spec: NodeSpec,
    st: StationSpec,
    vox: NDArray[np.intp],
    shape: tuple[int, int, int],
    sp: tuple[float, float, float],
    placed: list[PlacedNode],
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
        rot = orientation(cv.depth, k, j, i, sp, rng)
        centre = np.array([k * sp[0], j * sp[1], i * sp[2]]) + rng.uniform(-0.3, 0.3, 3) * np.asarray(sp)
        geo = node_geometry(spec, centre, rot)
        half = geo.members[0][1]
        trial = Push(geo.centre_zyx_mm, rot, half, rho_node, rho_node)
        wbox = trial.box(shape, sp)
        nbox = node_box(geo, shape, sp, 4.0)
        if nbox is None:
            continue
        box = union_box(wbox, nbox)
        rho, _ = trial.normalised_radius(box, sp)
        t = cv.tissue[box]
        non_host = ~HOST[t]
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
        if not (HOST[tis[rel][inside]] | zone_rel[inside]).all():
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
        node_sd = noise_around(cv.anatomy, cv.tissue, rendered.box, noise_model)
        sigma = np.full(zone.shape[0], float(np.mean(node_sd)), np.float32)
        sigma[rel[0]] = node_sd
        tis[zone & ~HOST[tis]] = Tissue.SOFT_THIN
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
        update_depth(cv, box, sp)
        # a node's zone is made-up fat: no seed for the next node (nodes would cluster on each other's rims)
        cv.made[box] = warp_labels(cv.made[box], coords, moved) | zone
        cv.fatty[box] = fatty_seeds(cv.anatomy[box], cv.tissue[box]) & ~cv.made[box]
        for p in placed:
            if p.box is not None and boxes_overlap(p.box, box):
                p.box = None  # moved: measured from the node map
        nid = len(placed) + 1
        cv.all_nodes[rendered.box][inside] = nid
        placed.append(PlacedNode(spec, rendered, st, inside, fat_share, push, rendered.box))
        return True
    return False


def rigid_mask(an: BackgroundAnalysis, sp: tuple[float, float, float]) -> NDArray[np.bool_]:
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
    for k, (j, i) in enumerate(spine_track(an.landmarks.spine_ji, sp)):
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


def spine_track(spine_ji: NDArray[np.float64], sp: tuple[float, float, float]) -> NDArray[np.float64]:
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


def fatty_seeds(hu: NDArray[np.float32], tissue: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Hosting tissue whose in-plane local mean (σ 1 voxel) is below :data:`SEED_MAX_HU`."""
    m = ndimage.gaussian_filter(hu, (0.0, 1.0, 1.0))
    return np.asarray(HOST[tissue] & (m < SEED_MAX_HU), bool)


def noise_around(
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


def update_depth(cv: PushCanvas, box: tuple[slice, slice, slice], sp: tuple[float, float, float]) -> None:
    """Recompute the hosting depth in a pushed box (from hosting tissue within 10 mm around it)."""
    pad = [max(1, round(10.0 / s)) for s in sp]
    shape = cv.tissue.shape
    ebox = tuple(
        slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(box, pad, shape, strict=True)
    )
    host = HOST[cv.tissue[ebox]]
    if ebox[0].start == 0:
        host[0] = False
    if ebox[0].stop == shape[0]:
        host[-1] = False
    d = np.asarray(ndimage.distance_transform_edt(host, sampling=sp), np.float32)
    inner = tuple(slice(b.start - e.start, b.stop - e.start) for b, e in zip(box, ebox, strict=True))
    cv.depth[box] = d[inner]
