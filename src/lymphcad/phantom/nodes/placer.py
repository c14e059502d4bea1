"""Node placement (spec §6.4): every node of a case beside its station's anchors in fat, never overlapping
another structure, retried on other sides, in deeper fat or at other stations before it is molded or dropped."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.phantom.anatomy import Anatomy
from lymphcad.phantom.canvas import Box, Canvas
from lymphcad.phantom.nodes.draws import (
    NodeParams,
    enlarged_threshold,
    sample_enlarged_count,
    sample_enlarged_sad,
    sample_ratio,
    sample_small_sad,
    sample_type,
)
from lymphcad.phantom.nodes.measure import measure_mask
from lymphcad.phantom.nodes.shape import Node, Perturbation, perturbation, render_node, unit
from lymphcad.phantom.nodes.stations import STATIONS, Station, station_named
from lymphcad.phantom.tissue import NODE_HOST, SOFT_TISSUE, T

#: other stations of the region an enlarged node tries when its drawn station has no room
EXTRA_STATIONS: Final = 2
#: room poses per station of the tour, tried only after every anchor pose of the tour failed
ROOM_TRIES: Final = 12
#: extra fat (mm) a room pose keeps around its short axis beyond the drawn gap: a node placed by fat depth sits
#: in the middle of a fat pad, not wedged between the bowel, psoas and crura that bound it
ROOM_MARGIN: Final = 3.0
#: smallest measured SAD (mm) an enlarged mediastinal node is scaled to when its measurement departs from the
#: drawn SAD (other regions: their enlarged threshold + 0.5 mm)
SAD_FLOOR: Final = 10.5


class NodePlacer:
    """Places nodes beside their anchors in fat, never overlapping other structures (spec §6.4)."""

    def __init__(
        self, canvas: Canvas, anatomy: Anatomy, params: NodeParams, rng: np.random.Generator
    ) -> None:
        self.canvas, self.anatomy, self.params, self.rng = canvas, anatomy, params, rng
        self.node_map = np.zeros(canvas.shape, dtype=np.uint16)
        self.nodes: list[Node] = []
        lo = np.array([canvas.xs[0], canvas.ys[0], canvas.zs[0]], dtype=float)
        hi = np.array([canvas.xs[-1], canvas.ys[-1], canvas.zs[-1]], dtype=float)
        self.lo, self.hi = lo, hi
        self._pert: dict[int, Perturbation] = {}
        self._station_cache: dict[str, list[Any]] = {}
        self._room_cache: tuple[NDArray[np.float32], tuple[int, int, int]] | None = None
        #: drawn nodes that fit nowhere (dropped, never shrunk below the enlarged threshold)
        self.dropped = {"enlarged": 0, "small": 0}
        #: enlarged-node counts drawn per region by :meth:`place_all` (spec §4.1)
        self.drawn_counts: dict[str, int] = {}
        self._soft = np.zeros(256, dtype=bool)
        self._soft[list(SOFT_TISSUE)] = True
        self._host = np.zeros(256, dtype=bool)
        self._host[list(NODE_HOST)] = True

    def station_points(
        self, st: Station
    ) -> list[tuple[str, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]]:
        """Candidate anchor points (name, point, radius, tangent) of a station inside the grid (cached)."""
        cached = self._station_cache.get(st.name)
        if cached is not None:
            return cached
        out = []
        for name in st.anchors:
            a = self.anatomy.anchors.get(name)
            if a is None or len(a.pts) < 2:
                continue
            tang = np.gradient(a.pts, axis=0)
            for i in range(len(a.pts)):
                q = a.pts[i]
                if st.zrange is not None and not (st.zrange[0] <= q[2] <= st.zrange[1]):
                    continue
                if np.any(q < self.lo + 12) or np.any(q > self.hi - 12):
                    continue
                out.append((name, q, np.asarray(a.radius[i]), unit(tang[i])))
        self._station_cache[st.name] = out
        return out

    def available(self, region: str | None) -> tuple[list[Station], NDArray[np.float64]]:
        sts = [s for s in STATIONS if (region is None or s.region == region) and self.station_points(s)]
        w = np.array([s.weight for s in sts], dtype=float)
        return sts, (w / w.sum() if len(w) else w)

    # -- geometry of one node -------------------------------------------------------------------
    def _pose(
        self, st: Station, sad: float, ratio: float, cc: float, spread: float = 0.35
    ) -> tuple[str, NDArray[np.float64], NDArray[np.float64], tuple[float, float, float], float] | None:
        """A pose beside one of the station's anchor points; ``spread`` jitters the station's direction
        (0.35: the textbook side of the anchor; ≥ 1: any side, used when the textbook side is full)."""
        rng = self.rng
        pts = self.station_points(st)
        if not pts:
            return None
        name, q, r_anchor, tang = pts[int(rng.integers(len(pts)))]
        base = np.asarray(st.direction, dtype=float)
        if np.linalg.norm(base) < 1e-6:
            base = rng.normal(0, 1, 3)
        if st.mirror_x and rng.random() < 0.5:
            base = base * np.array([-1.0, 1.0, 1.0])
        d = unit(unit(base) + rng.normal(0, spread, 3))
        d = unit(d - (d @ tang) * tang)  # perpendicular to the anchor
        gap = float(np.clip(rng.exponential(self.params.gap_mean), 0.0, 10.0))
        # axes: short along d (flattened against the anchor), long along the tangent ±20°
        t = unit(tang + rng.normal(0, 0.35, 3) - (tang @ d) * d)
        third = np.cross(d, t)
        comp = 1.0 + 0.6 * self.params.perturb_amp
        half = (sad / 2.0 * comp, ratio * sad / 2.0, cc * sad / 2.0)
        # cc axis (the longest 3D extent) along the tangent, in-plane long axis along `third`
        rot = np.stack([d, third, t], axis=1)
        centre = q + d * (float(r_anchor) + gap + half[0] + 0.5)
        return name, centre, rot, half, gap

    def _room(self) -> tuple[NDArray[np.float32], tuple[int, int, int]]:
        """Depth of host fat (mm to the nearest non-fat voxel) on a ~2 mm grid, and its voxel stride (z, y, x).

        Built once per case; placed nodes lower it conservatively (:meth:`_claim`), and every pose it
        proposes still passes the exact voxel checks of :meth:`try_place`.
        """
        if self._room_cache is None:
            canvas = self.canvas
            stride = (
                max(1, round(2.0 / canvas.spacing[0])),
                max(1, round(2.0 / canvas.spacing[1])),
                max(1, round(2.0 / canvas.spacing[2])),
            )
            host = self._host[canvas.tissue[:: stride[0], :: stride[1], :: stride[2]]]
            host[0, :, :] = host[-1, :, :] = False
            sampling = tuple(float(a * b) for a, b in zip(canvas.spacing, stride, strict=True))
            edt = ndimage.distance_transform_edt(host, sampling=sampling).astype(np.float32)
            self._room_cache = (edt, stride)
        return self._room_cache

    def _coarse_box(
        self, c: NDArray[np.float64], r: float
    ) -> tuple[tuple[slice, slice, slice], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Slices of the room grid within ``r`` mm of world point ``c`` and the world x, y, z of its voxels."""
        canvas = self.canvas
        st = self._room()[1]
        axes = (canvas.zs[:: st[0]], canvas.ys[:: st[1]], canvas.xs[:: st[2]])
        sl = []
        for ax, v in zip(axes, (c[2], c[1], c[0]), strict=True):
            a = int(np.searchsorted(ax, v - r))
            b = int(np.searchsorted(ax, v + r))
            sl.append(slice(a, max(a, b)))
        z, y, x = (np.asarray(axes[i][sl[i]], dtype=float) for i in range(3))
        return (sl[0], sl[1], sl[2]), x, y, z

    def _room_pose(
        self, st: Station, sad: float, ratio: float, cc: float, margin: float = ROOM_MARGIN
    ) -> tuple[str, NDArray[np.float64], NDArray[np.float64], tuple[float, float, float], float] | None:
        """A pose where the station's fat is deep enough for the node (spec §6.4 "retry / mold"): a centre
        drawn among room-grid voxels within reach of an anchor point whose fat depth exceeds the node's
        short half-axis + drawn gap + ``margin`` mm, the short axis along the fat-depth gradient, the long axis
        along the anchor."""
        rng = self.rng
        pts = self.station_points(st)
        if not pts:
            return None
        name, q, r_anchor, tang = pts[int(rng.integers(len(pts)))]
        comp = 1.0 + 0.6 * self.params.perturb_amp
        half0 = sad / 2.0 * comp
        reach = float(r_anchor) + 2.0 * half0 + 12.0
        edt, _ = self._room()
        sl, x, y, z = self._coarse_box(q, reach)
        box = edt[sl]
        if box.size == 0:
            return None
        d2 = (x[None, None, :] - q[0]) ** 2 + (y[None, :, None] - q[1]) ** 2 + (z[:, None, None] - q[2]) ** 2
        # clearance as beside an anchor (Exponential gap, mean from d): room poses must not pack nodes tighter
        # against their neighbours than anchor poses do (the soft-contact share stays set by soft_contact_p)
        gap = float(np.clip(rng.exponential(self.params.gap_mean), 0.0, 10.0))
        ok = (box >= half0 + 0.5 + gap + margin) & (d2 <= reach**2)
        cand = np.flatnonzero(ok)
        if cand.size == 0:
            return None
        k = int(cand[int(rng.integers(cand.size))])
        iz, iy, ix = (int(v) for v in np.unravel_index(k, box.shape))
        centre = np.array([x[ix], y[iy], z[iz]], dtype=float) + rng.uniform(-0.7, 0.7, 3)
        # short axis along the depth gradient (towards the nearest wall), long axes along the anchor
        g = np.zeros(3)
        ijk = (iz, iy, ix)
        for a, coord in enumerate((x, y, z)):
            ax = 2 - a  # box axis (z, y, x) of world axis a (x, y, z)
            lo, hi = max(ijk[ax] - 1, 0), min(ijk[ax] + 1, box.shape[ax] - 1)
            if hi > lo:
                i_lo = tuple(lo if j == ax else ijk[j] for j in range(3))
                i_hi = tuple(hi if j == ax else ijk[j] for j in range(3))
                g[a] = float(box[i_hi] - box[i_lo]) / float(coord[hi] - coord[lo])
        d = unit(g) if np.linalg.norm(g) > 1e-6 else unit(rng.normal(0, 1, 3))
        t = tang + rng.normal(0, 0.2, 3)
        t = t - (t @ d) * d
        if np.linalg.norm(t) < 1e-3:
            t = rng.normal(0, 1, 3)
            t = t - (t @ d) * d
        t = unit(t)
        third = np.cross(d, t)
        half = (half0, ratio * sad / 2.0, cc * sad / 2.0)
        rot = np.stack([d, third, t], axis=1)
        return name, centre, rot, half, gap

    def _claim(self, node: Node) -> None:
        """Lower the room grid around a placed node (depth ≤ distance to its bounding sphere)."""
        if self._room_cache is None:
            return
        edt, _ = self._room_cache
        r = float(max(node.half_axes)) * 1.25
        sl, x, y, z = self._coarse_box(node.center, r + 40.0)
        c = node.center
        dist = np.sqrt(
            (x[None, None, :] - c[0]) ** 2 + (y[None, :, None] - c[1]) ** 2 + (z[:, None, None] - c[2]) ** 2
        )
        np.minimum(edt[sl], np.maximum(dist - r, 0.0).astype(np.float32), out=edt[sl])

    def _tissue_at(self, w: NDArray[np.float64]) -> int:
        canvas = self.canvas
        i = round((float(w[0]) - float(canvas.xs[0])) / canvas.spacing[2])
        j = round((float(w[1]) - float(canvas.ys[0])) / canvas.spacing[1])
        k = round((float(w[2]) - float(canvas.zs[0])) / canvas.spacing[0])
        if not (0 <= k < canvas.shape[0] and 0 <= j < canvas.shape[1] and 0 <= i < canvas.shape[2]):
            return -1
        return int(canvas.tissue[k, j, i])

    def soft_contact(
        self, centre: NDArray[np.float64], half: tuple[float, float, float], rot: NDArray[np.float64]
    ) -> list[tuple[NDArray[np.float64], float]]:
        """(centre, gap) poses that make the node touch the nearest soft-tissue structure within 15 mm of its surface.

        Probes 8 in-plane and 2 cranio-caudal directions of the node frame through host fat; the first
        non-fat voxel ends a probe, and only soft tissue (muscle, esophagus, crus, collapsed bowel, poorly
        enhanced vein, ...) counts. Returns the shifted poses (touching, then 1 mm off), nearest first;
        empty when nothing soft is in reach.
        """
        step = 0.5 * min(self.canvas.spacing)
        dirs = []
        for a, b in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
            dirs.append(unit(a * rot[:, 0] + b * rot[:, 1]))
        dirs += [rot[:, 2], -rot[:, 2]]
        ha = np.asarray(half, dtype=float)
        hits: list[tuple[float, int]] = []
        for n, u in enumerate(dirs):
            surf = 1.0 / float(np.sqrt((((rot.T @ u) / ha) ** 2).sum()))
            t = surf + step
            while t <= surf + 15.0:
                tis = self._tissue_at(centre + t * u)
                if tis < 0:
                    break
                if not self._host[tis]:
                    if self._soft[tis]:
                        hits.append((t - surf, n))
                    break
                t += step
        hits.sort()
        out = []
        for dist, n in hits[:2]:
            for back in (0.6, 1.6):
                if dist > back:
                    out.append((centre + dirs[n] * (dist - back), back - 0.6))
        return out

    def _fit(self, node: Node, check: bool) -> tuple[Box, Any, NDArray[np.float32], NDArray[np.bool_]] | None:
        """(box, sdf, coverage, mask) of the node when it lies inside the volume (2 voxels from the border) and,
        with ``check``, covers only host fat; None otherwise."""
        canvas = self.canvas
        b, sdf = canvas.ellipsoid_sdf(
            node.center, node.half_axes, node.rot, perturb=self._pert.get(node.node_index)
        )
        if sdf is None or b.empty:
            return None
        if sdf.shape != (b.z1 - b.z0, b.y1 - b.y0, b.x1 - b.x0):
            return None  # clipped at the volume border
        if (
            b.z0 == 0
            or b.y0 == 0
            or b.x0 == 0
            or b.z1 == canvas.shape[0]
            or b.y1 == canvas.shape[1]
            or b.x1 == canvas.shape[2]
        ):
            return None  # keep 2 voxels away from the border
        a = canvas.coverage(sdf)
        inside = a >= 0.5
        if not inside.any():
            return None
        if check and not np.all(self._host[canvas.tissue[b.slices][inside]]):
            return None
        return b, sdf, a, inside

    def try_place(self, node: Node, *, check: bool = True) -> bool:
        """Render the node into the node map if it fits (all covered voxels are host fat).

        With ``check``, the measured SAD (§6.7) must agree with the drawn one: an enlarged node is scaled
        (≤ 3 times, only where it still fits) until its RECIST SAD is within 0.3 mm of the drawn SAD (never below
        10.5 mm) and refused when it measures < 10 mm; a sub-threshold node that measures ≥ 10 mm (an in-plane long
        axis seen across on the axial RECIST slice) is shrunk until it measures < 10 mm, so the enlarged counts
        and sizes are those drawn (§4.1, §6.11.4).
        """
        canvas = self.canvas
        if check and not self._precheck(node):
            return False
        fit = self._fit(node, check)
        if fit is None:
            return False
        if check:
            # the measured SAD follows the drawn one: an oblique node measures wider (or a perturbed one narrower)
            # on its axial RECIST slice than its short axis; a small node must measure < 10 mm
            thr = enlarged_threshold(node.region)
            target = (
                max(thr + SAD_FLOOR - 10.0, min(node.drawn_sad, 2.0 * node.half_axes[0]))
                if node.drawn_enlarged
                else thr - 0.6
            )
            sad_m = measure_mask(fit[3], canvas.spacing).sad_mm
            for _ in range(3):
                if (abs(sad_m - target) <= 0.3) if node.drawn_enlarged else (sad_m < thr):
                    break
                prev = (node.half_axes, fit, sad_m)
                f = float(np.clip(target / sad_m, 0.6, 1.3))
                node.half_axes = (node.half_axes[0] * f, node.half_axes[1] * f, node.half_axes[2] * f)
                new = self._fit(node, check)
                if new is None:  # grown into a neighbour: keep the size before
                    node.half_axes, fit, sad_m = prev
                    break
                fit, sad_m = new, measure_mask(new[3], canvas.spacing).sad_mm
                if node.drawn_enlarged and sad_m < thr:  # shrunk too far: keep the size before
                    node.half_axes, fit, sad_m = prev
                    break
                node.molded = node.molded or not node.drawn_enlarged
            if (sad_m < thr) if node.drawn_enlarged else (sad_m >= thr):
                return False  # measures in the other class: place it elsewhere (§6.11.3)
        b, sdf, _, inside = fit
        render_node(canvas, self.node_map, node, b, sdf, inside, self.params, self.rng)
        return True

    def _precheck(self, node: Node) -> bool:
        """Cheap rejection: the centre and 14 points at 85 % of the axes must be host fat."""
        canvas = self.canvas
        pts = [np.zeros(3)]
        for ax in range(3):
            for sg in (-1.0, 1.0):
                e = np.zeros(3)
                e[ax] = sg * 0.85 * node.half_axes[ax]
                pts.append(e)
        for sx in (-1, 1):
            for sy in (-1, 1):
                for sz in (-1, 1):
                    pts.append(0.5 * np.array([sx, sy, sz]) * np.asarray(node.half_axes))
        w = node.center[None, :] + np.asarray(pts) @ node.rot.T
        ix = np.round((w[:, 0] - canvas.xs[0]) / canvas.spacing[2]).astype(int)
        iy = np.round((w[:, 1] - canvas.ys[0]) / canvas.spacing[1]).astype(int)
        iz = np.round((w[:, 2] - canvas.zs[0]) / canvas.spacing[0]).astype(int)
        if (
            ix.min() < 1
            or iy.min() < 1
            or iz.min() < 1
            or ix.max() >= canvas.shape[2] - 1
            or iy.max() >= canvas.shape[1] - 1
            or iz.max() >= canvas.shape[0] - 1
        ):
            return False
        t = canvas.tissue[iz, iy, ix]
        return bool(np.all((t == T.FAT_VISC) | (t == T.STRANDING)))

    # -- high level -----------------------------------------------------------------------------
    def place_one(
        self,
        region: str,
        enlarged: bool,
        cluster_id: int = 0,
        station: Station | None = None,
        seed_node: Node | None = None,
        allow_contact: bool = True,
    ) -> Node | None:
        """Draw one node and place it (spec §6.4); None when it fits nowhere (counted in ``dropped``).

        Where the drawn station is full, an enlarged node keeps its drawn size and shape and looks for room
        first on any side of the station's anchors, then at up to ``EXTRA_STATIONS`` other stations of its
        region (by weight) — a real enlarged node takes the room the fat offers, it does not vanish — and is
        molded (up to 30 % smaller, never below 10 mm SAD) only when all of that fails.
        """
        rng = self.rng
        sts, w = self.available(region)
        if not sts:
            return None
        st = station if station is not None else sts[int(rng.choice(len(sts), p=w))]
        sad = (
            sample_enlarged_sad(rng, self.params.share_10_12, region)
            if enlarged
            else sample_small_sad(rng, region)
        )
        ratio = sample_ratio(rng, enlarged)
        cc = float(rng.uniform(1.0, 2.0))
        if cc < ratio:
            cc = ratio  # keep the cranio-caudal axis the longest
        kind = sample_type(rng, enlarged, self.params.type_probs)
        hu = self.params.ln_mean_hu + float(rng.normal(0, self.params.ln_offset_sd))
        if kind == "hyper":
            hu = float(rng.uniform(95, 135))
        idx = len(self.nodes) + 1
        amp = self.params.perturb_amp * (1.0 if enlarged else 0.6)
        self._pert[idx] = perturbation(rng, amp, rng.random() < 0.2)
        # molding never takes an enlarged node below the threshold (a measured check in try_place backs this)
        floor = min(1.0, max(0.7, (enlarged_threshold(region) + 0.6) / sad)) if enlarged else 0.7
        contact = allow_contact and seed_node is None and rng.random() < self.params.soft_contact_p
        tour = [st]
        if enlarged and seed_node is None and station is None and len(sts) > 1:
            # fall-back stations of the same region, drawn once by weight (fixed draw count: determinism)
            rest = [i for i in range(len(sts)) if sts[i] is not st]
            wr = w[rest] / w[rest].sum()
            k = min(EXTRA_STATIONS, len(rest))
            tour += [sts[rest[int(i)]] for i in rng.choice(len(rest), size=k, replace=False, p=wr)]
        # the plan of tries, (station, kind, scale, spread): anchor poses (textbook side, then any side) at every
        # station of the tour first; room poses only once all of those failed; molding last (§4.2, §6.4)
        plan: list[tuple[Station, str, float, float]] = []
        if enlarged:
            for st_k in tour:
                plan += [(st_k, "anchor", 1.0, 0.35 if a < 16 else 1.5) for a in range(32)]
            if not contact and seed_node is None:
                for st_k in tour:
                    plan += [(st_k, "room", 1.0, 1.5)] * ROOM_TRIES
            if not contact:
                plan += [(tour[-1], "anchor", max(floor, 1.0 - 0.03 * (a + 1)), 1.5) for a in range(12)]
            if not contact and seed_node is None:
                # last resort before a drop: room poses with only the drawn gap as clearance (rarely reached)
                plan += [(st_k, "room_tight", 1.0, 1.5) for st_k in tour for _ in range(ROOM_TRIES)]
        else:
            plan = [(st, "anchor", 1.0, 0.35 if a < 16 else 1.5) for a in range(24)]
        for st_k, how, scale, spread in plan:
            if seed_node is not None:
                # cluster neighbour: along the seed's long axis or sideways, gap 0–1.5 mm
                axis = seed_node.rot[:, 2] if rng.random() < 0.6 else seed_node.rot[:, 1]
                sgn = 1 if rng.random() < 0.5 else -1
                half = (sad / 2 * scale, ratio * sad / 2 * scale, cc * sad / 2 * scale)
                ext_seed = float(np.abs(seed_node.rot.T @ axis) @ np.asarray(seed_node.half_axes))
                ext_new = float(np.abs(seed_node.rot.T @ axis) @ np.asarray(half))
                gap = float(rng.uniform(0.0, 1.5))
                centre = (
                    seed_node.center + sgn * axis * (ext_seed + ext_new + gap + 0.6) + rng.normal(0, 1.0, 3)
                )
                pose = (seed_node.anchor, centre, seed_node.rot, half, gap)
            else:
                if how != "anchor":
                    pose0 = self._room_pose(
                        st_k, sad * scale, ratio, cc, ROOM_MARGIN if how == "room" else 0.0
                    )
                    if pose0 is None:
                        continue
                else:
                    pose0 = self._pose(st_k, sad * scale, ratio, cc, spread)
                    if pose0 is None:
                        continue
                pose = pose0
            name, centre, rot, half, gap = pose
            node = Node(
                idx,
                st_k.name,
                st_k.region,
                sad,
                enlarged,
                kind,
                cluster_id,
                hu,
                name,
                gap,
                centre,
                half,
                rot,
                molded=scale < 1,
            )
            if contact and self._precheck(node):
                # against the nearest soft-tissue neighbour (gap 0, or 1 mm when touching does not fit)
                for c2, g2 in self.soft_contact(centre, half, rot):
                    node.center, node.gap = c2, g2
                    if self.try_place(node):
                        self.nodes.append(node)
                        self._claim(node)
                        return node
                node.center, node.gap = centre, gap
                continue  # keep looking for a pose with soft tissue in reach
            if self.try_place(node):
                self.nodes.append(node)
                self._claim(node)
                return node
        if contact:  # no soft tissue in reach of this station: an ordinary placement
            return self.place_one(region, enlarged, cluster_id, station, None, allow_contact=False)
        self._pert.pop(idx, None)
        self.dropped["enlarged" if enlarged else "small"] += 1
        return None

    def place_all(self, case_region: str) -> None:
        rng, npar = self.rng, self.params
        other = "abdominal" if case_region == "mediastinal" else "mediastinal"
        counts = {
            case_region: sample_enlarged_count(rng, case_region),
            other: sample_enlarged_count(rng, other),
        }
        self.drawn_counts = dict(counts)
        cluster_p = npar.cluster_p_med if case_region == "mediastinal" else npar.cluster_p_abd
        cluster_next = 1
        for region in (case_region, other):
            n = counts[region]
            placed = 0
            want_cluster = rng.random() < cluster_p
            while placed < n:
                if want_cluster:
                    want_cluster = False
                    seed = self.place_one(region, True, cluster_id=cluster_next)
                    if seed is None:
                        placed += 1
                        continue
                    placed += 1
                    # 2–9 nodes, capped at the count still to place (the count of §4.1 includes members)
                    size = min(int(rng.integers(2, 10)), n - placed + 1)
                    members = [seed]
                    for _ in range(size - 1):
                        nb = self.place_one(
                            region,
                            True,
                            cluster_id=cluster_next,
                            station=station_named(seed.station),
                            seed_node=members[int(rng.integers(len(members)))],
                        )
                        if nb is not None:
                            members.append(nb)
                            placed += 1
                    if len(members) == 1:
                        seed.cluster_id = 0
                    cluster_next += 1
                else:
                    self.place_one(region, True)
                    placed += 1
        # sub-threshold nodes, split between regions by their share of stations
        for _ in range(npar.n_small):
            region = case_region if rng.random() < 0.7 else other
            self.place_one(region, False)
