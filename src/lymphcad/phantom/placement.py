"""Where each node goes and how it is written: node placement at the stations of a real CT background.

Per case (:func:`insert_nodes`), in two passes over the stations of the chosen region (by weight):

1. **In fat** (as deep as the node): a :class:`NodeSpec` from the node model, a centre inside the station where
   node-hosting tissue (visceral fat, thin septa) is as deep as the node's short half-axis, the short axis along
   the depth gradient (so the node touches what bounds the fat). The interior (coverage ≥ 0.5) must lie in
   hosting tissue only, ≥ :data:`MIN_FAT_SHARE` fat, a voxel from other nodes. These nodes are then written,
   each by its own image-formation model (:mod:`lymphcad.phantom.formation`).
2. **By mass effect**, only when the first pass left the case short (fat-poor mediastina, thin patients;
   :func:`lymphcad.phantom.pushing.push_one`): a seed voxel of fat-like hosting tissue, however thin; the node's
   neighbours — vessels, oesophagus, lung boundary, organs — are pushed outward by an incompressible radial
   displacement (:mod:`lymphcad.phantom.masseffect`) so the node occupies its own space: it still overlaps only
   hosting tissue (the stretched seed), the displaced anatomy keeps its volume, and bone, the chest wall, the
   airway and other nodes do not move. Conglomerates are placed as their main node here. Each node is written
   right after its push (later pushes move earlier nodes).

Backgrounds where the first pass suffices come out exactly as before the second pass existed.

**Every drawn node keeps its size** (``keep_size``, the default): a node that finds no room at its station
is tried at the region's other stations (by weight), then by mass effect at all of them, before it is given
up and another node drawn. Redrawing at the first failure (``keep_size=False``, how cohorts were drawn up to
v8's training data) placed what fits: on the fat-poor abdomen of CRLM-CT-1006 the placed positives had a
median short axis of 9.7 mm, none ≥ 15 mm, against the collection's abdominal marks' 12.6 mm
(``benchmarks/bench_insert_sizes.py``). Keeping the size moves some nodes to roomier stations instead:
the collection documents sizes per region, not per station.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.errors import InputError, UsageError
from lymphcad.geometry import CTVolume, hu_to_int16
from lymphcad.phantom.analysis import BackgroundAnalysis, analyse_background
from lymphcad.phantom.background import CLASS_NAMES, NODE_HOST, STATIONS, StationSpec, Tissue
from lymphcad.phantom.formation import (
    form_additive,
    form_blend,
    local_noise_sd,
)
from lymphcad.phantom.inserted import InsertedNode, InsertionResult
from lymphcad.phantom.nodemodel import (
    Formation,
    NodeGeometry,
    NodeSpec,
    node_geometry,
    render_node,
    sample_node_spec,
)
from lymphcad.phantom.nodes import measure_mask
from lymphcad.phantom.pose import POSITION_TRIES, PlacedNode, orientation
from lymphcad.phantom.pushing import (
    PUSH_DRAWS_PER_NODE,
    PUSH_MAX_FAILED_DRAWS,
    PushCanvas,
    fatty_seeds,
    noise_around,
    push_one,
    rigid_mask,
)
from lymphcad.phantom.texture import TexturePatch, TextureSource, write_texture_node
from lymphcad.phantom.truthrule import TruthClass, rule_for

REGION_CHOICES: Final = ("mediastinal", "abdominal", "auto")
#: ``both`` = additive + blend (as before texture existed); ``all`` = every model; or a comma-separated list
FORMATION_CHOICES: Final = ("additive", "blend", "texture", "both", "all")
#: drawn nodes per requested node
DRAWS_PER_NODE: Final = 8
#: consecutive drawn nodes that found no room before the stations count as full
MAX_FAILED_DRAWS: Final = 24
#: the share of a node's interior that must be visceral fat (the rest: thin septa / vessel walls)
MIN_FAT_SHARE: Final = 0.6
#: a centre's hosting-tissue depth may fall short of the short half-axis by this much (mm): partial volume
DEPTH_TOL_MM: Final = 1.0


class PlacementError(InputError):
    """The background has no room for the asked minimum number of nodes."""


def parse_formations(formation: str) -> tuple[Formation, ...]:
    """``additive`` | ``blend`` | ``texture`` | ``both`` (additive + blend) | ``all`` | a comma-separated list
    (``additive,texture``) → the image-formation models a node is drawn from, in the enum's order (so
    ``blend,additive`` draws exactly as ``both``)."""
    if formation == "both":
        return (Formation.ADDITIVE, Formation.BLEND)
    if formation == "all":
        return tuple(Formation)
    try:
        got = {Formation(name.strip()) for name in formation.split(",")}
    except ValueError:
        raise UsageError(
            f"--formation must be one of {', '.join(FORMATION_CHOICES)} or a comma-separated list of "
            f"{', '.join(f.value for f in Formation)} (got {formation!r})"
        ) from None
    return tuple(f for f in Formation if f in got)


def _stations_for(an: BackgroundAnalysis, region: str) -> list[StationSpec]:
    reg = an.region if region == "auto" else region
    return [s for s in STATIONS if s.region == reg and s.name in an.stations]


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
    texture: TextureSource | None = None,
    keep_size: bool = True,
) -> InsertionResult:
    """Insert up to ``n_nodes`` nodes at the stations of ``region`` (``auto``: the background's own region):
    in fat first, then (``mass_effect``) by pushing neighbours aside where fat is too thin (module docstring).

    ``texture`` (the texture model's sources in this background, :meth:`TextureSource.build`) is built here
    when the texture model is among ``formations`` and it is not given (a cohort builds it once).
    ``keep_size``: a drawn node that finds no room is tried at every station, in fat and then by mass effect,
    before another is drawn (module docstring); ``False`` redraws at once, as cohorts before v9 were drawn.

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
    placed: list[PlacedNode] = []
    pending: list[tuple[NodeSpec, StationSpec]] = []  # drawn nodes waiting for the mass-effect pass
    weights = np.array([s.weight for s in sts], dtype=float)
    weights /= max(weights.sum(), 1e-12)
    vox = {s.name: an.station_voxels(s.name) for s in sts}
    if sts:
        depth_at = {s.name: an.depth_mm[tuple(vox[s.name].T)] for s in sts}
        draws = failed = 0
        while (
            len(placed) + len(pending) < n_nodes
            and draws < DRAWS_PER_NODE * max(1, n_nodes)
            and failed < MAX_FAILED_DRAWS
        ):
            draws += 1
            st = sts[int(rng.choice(len(sts), p=weights))]
            spec = sample_node_spec(rng, st.region, formations, p_positive=p_positive)
            got = _place_one(an, spec, st, vox[st.name], depth_at[st.name], shape, sp, occupied, rng)
            if got is None and keep_size:
                for other in _other_stations(st, sts, weights, rng):
                    got = _place_one(
                        an, spec, other, vox[other.name], depth_at[other.name], shape, sp, occupied, rng
                    )
                    if got is not None:
                        st = other
                        break
                else:
                    pending.append((spec, st))  # its size is kept for the mass-effect pass
                    continue
            if got is None:
                failed += 1
                continue
            failed = 0
            rendered, inside, fat_share = got
            nid = len(placed) + 1
            all_nodes[rendered.box][inside] = nid
            occupied[rendered.box] |= inside
            placed.append(PlacedNode(spec, rendered, st, inside, fat_share, box=rendered.box))
    if not mass_effect:
        pending = []
    # image formation, node by node, each by its own model
    hu0 = vol.array.astype(np.float32)
    out = hu0.copy()
    source = texture
    if source is None and Formation.TEXTURE in formations:
        source = TextureSource.build(hu0, an.tissue)
    noise_sd: list[float] = []
    patches: list[TexturePatch | None] = []
    for p in placed:
        sd, patch = _form(out, hu0, an.tissue, an.hu_smooth, an, p, sp, source)
        noise_sd.append(sd)
        patches.append(patch)
    tissue = an.tissue
    if mass_effect and sts and len(placed) < n_nodes:
        cv = PushCanvas(
            hu0.copy(),
            out,
            an.tissue.copy(),
            an.hu_smooth.copy(),
            an.depth_mm.copy(),
            all_nodes,
            rigid_mask(an, sp),
            fatty_seeds(hu0, an.tissue),
            np.zeros(shape, bool),
        )
        draws = failed = 0
        budget = PUSH_DRAWS_PER_NODE * max(1, n_nodes - len(placed))
        while len(placed) < n_nodes and draws < budget and failed < PUSH_MAX_FAILED_DRAWS:
            draws += 1
            if pending:
                spec, st = pending.pop(0)
            else:
                st = sts[int(rng.choice(len(sts), p=weights))]
                spec = sample_node_spec(rng, st.region, formations, p_positive=p_positive)
            if spec.members > 1:
                spec = replace(spec, members=1)
            ok = push_one(cv, spec, st, vox[st.name], shape, sp, placed, rng, an.noise)
            if not ok and keep_size:
                for other in _other_stations(st, sts, weights, rng):
                    if push_one(cv, spec, other, vox[other.name], shape, sp, placed, rng, an.noise):
                        ok = True
                        break
            if not ok:
                failed += 1
                continue
            failed = 0
            sd, patch = _form(cv.image, cv.anatomy, cv.tissue, cv.smooth, an, placed[-1], sp, source)
            noise_sd.append(sd)
            patches.append(patch)
        out, all_nodes, tissue = cv.image, cv.all_nodes, cv.tissue
    image = np.array(vol.array, dtype=np.int16, copy=True)
    changed = out != hu0
    image[changed] = hu_to_int16(np.clip(out[changed], -1024, 3071))
    return _measure(image, all_nodes, tissue, placed, noise_sd, patches, vol, reg, n_nodes)


def _other_stations(
    first: StationSpec, sts: list[StationSpec], weights: NDArray[np.float64], rng: np.random.Generator
) -> list[StationSpec]:
    """The stations of ``first``'s region other than ``first``, in a weighted random order (no repeats)."""
    idx = [k for k, s in enumerate(sts) if s is not first and s.region == first.region]
    if not idx:
        return []
    w = weights[idx]
    w = w / w.sum() if w.sum() > 0 else np.full(len(idx), 1.0 / len(idx))
    order = rng.choice(len(idx), size=len(idx), replace=False, p=w)
    return [sts[idx[int(k)]] for k in order]


def _form(
    out: NDArray[np.float32],
    anatomy: NDArray[np.float32],
    tissue: NDArray[np.uint8],
    smooth: NDArray[np.float32],
    an: BackgroundAnalysis,
    p: PlacedNode,
    sp: tuple[float, float, float],
    source: TextureSource | None,
) -> tuple[float, TexturePatch | None]:
    """Write one node into ``out`` by its own image-formation model; the local noise SD it measured and, for
    the texture model, where its texture came from (``source``: the background before any node)."""
    spec, rendered, inside = p.spec, p.rendered, p.inside
    box = rendered.box
    sigma = (
        local_noise_sd(anatomy, tissue, box, inside, an.noise)
        if p.push is None
        else noise_around(anatomy, tissue, box, an.noise)
    )
    patch: TexturePatch | None = None
    if spec.formation is Formation.ADDITIVE:
        out[box] = form_additive(out[box], smooth[box], rendered.coverage, rendered.content, spec.edge_mm, sp)
    elif spec.formation is Formation.TEXTURE:
        assert source is not None, "texture formation needs the background's texture source"
        out[box], patch = write_texture_node(
            out[box],
            rendered.coverage,
            rendered.content,
            spec.edge_mm,
            sp,
            sigma,
            source,
            box[0].start,
            spec.seed + 3,
            an.noise,
        )
    else:
        nrng = np.random.default_rng(spec.seed + 2)
        cs = rendered.coverage.shape
        noise = an.noise.synthesize(nrng, (int(cs[0]), int(cs[1]), int(cs[2])), sp)
        out[box] = form_blend(out[box], rendered.coverage, rendered.content, spec.edge_mm, sp, noise, sigma)
    return float(np.mean(sigma[inside.any(axis=(1, 2))])), patch


def _measure(
    image: NDArray[np.int16],
    all_nodes: NDArray[np.uint16],
    tissue: NDArray[np.uint8],
    placed: list[PlacedNode],
    noise_sd: list[float],
    patches: list[TexturePatch | None],
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
        cz, cy, cx = np.asarray(meas.centroid_zyx) + off
        ci = tuple(round(v) for v in (cz, cy, cx))
        if all_nodes[ci] != idx:  # centroid outside a bean-shaped mask: nearest voxel inside
            zz, yy, xx = np.nonzero(inside)
            q = int(np.argmin((zz + off[0] - cz) ** 2 + (yy + off[1] - cy) ** 2 + (xx + off[2] - cx) ** 2))
            cz, cy, cx = zz[q] + off[0], yy[q] + off[1], xx[q] + off[2]
        truth = rule_for(p.station.region).classify(float(meas.sad_mm))
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
                float(meas.sad_mm),
                float(meas.lad_mm),
                float(meas.volume_mm3),
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
                patches[idx - 1],
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
        rot = orientation(an.depth_mm, k, j, i, sp, rng)
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
