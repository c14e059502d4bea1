"""Lymph nodes: samplers (spec §4.1), stations and anchors (§4.2), placement (§6.4), internals (§6.5),
and RECIST measurement from the voxel mask (§6.7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from lymphcad.cohort import Annotation
from lymphcad.phantom.anatomy import Anatomy
from lymphcad.phantom.canvas import Canvas
from lymphcad.phantom.tissue import NODE_HOST, SOFT_TISSUE, T
from lymphcad.phantom.truthrule import SIZES, rule_for

# -- samplers -------------------------------------------------------------------------------------
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
COUNT_PARAMS: Final = {"mediastinal": (3.3, 2.0), "abdominal": (5.9, 1.5)}


def sample_enlarged_count(rng: np.random.Generator, region: str) -> int:
    """1 + NegBin(mean, k): MED mean 4.3, ABD mean 6.9 (spec §4.1)."""
    mean, k = COUNT_PARAMS[region]
    return 1 + int(rng.negative_binomial(k, k / (k + mean)))


def enlarged_threshold(region: str) -> float:
    """Measured short axis (mm) from which a node of ``region`` is ground truth (the collection's rule)."""
    return rule_for(region).positive_min_mm


def _abd_cdf(x: float) -> float:
    d = SIZES["abdominal"]
    return float(np.interp(x, d.sad_mm, d.levels))


def sample_enlarged_sad(
    rng: np.random.Generator, share_10_12: float = 0.2, region: str = "mediastinal"
) -> float:
    """An enlarged (ground-truth) short axis, steered by the difficulty's share of the smallest ones.

    Mediastinal: 10 mm + Gamma(1.5, 4 mm), cap 45 mm; ``share_10_12`` sets the share of 10–12 mm nodes.
    Abdominal: the marked abdominal SAD distribution of the collection (``truthrule.SIZES``) above its
    positive threshold t = 7.5 mm, cap 45 mm; ``share_10_12`` sets the share of t … t + 2 mm nodes the same way.
    """
    if region == "abdominal":
        t = enlarged_threshold(region)
        lo, lo2 = _abd_cdf(t), _abd_cdf(t + 2.0)
        base = (lo2 - lo) / (1.0 - lo)  # share of t … t + 2 mm under the marks (≈ 0.13)
        if share_10_12 > base and rng.random() < (share_10_12 - base) / (1 - base):
            return float(rng.uniform(t, t + 2.0))
        while True:
            s = SIZES["abdominal"].sample(rng, lo=t, hi=45.0)
            if s < t + 2.0 and share_10_12 < base and rng.random() > share_10_12 / base:
                continue
            return s
    base = 0.2  # share of 10–12 mm under the default Gamma (P(Gamma(1.5, 4) < 2) ≈ 0.199)
    if share_10_12 > base and rng.random() < (share_10_12 - base) / (1 - base):
        return float(rng.uniform(10.0, 12.0))
    while True:
        s = 10.0 + float(rng.gamma(1.5, 4.0))
        if s > 45.0:
            continue
        if s < 12.0 and share_10_12 < base and rng.random() > share_10_12 / base:
            continue
        return s


def sample_small_sad(rng: np.random.Generator, region: str = "mediastinal") -> float:
    """Lognormal, median 5 mm, σlog 0.35, clipped to 2.5 mm … just below the region's enlarged threshold."""
    return float(np.clip(5.0 * np.exp(0.35 * rng.normal()), 2.5, enlarged_threshold(region) - 0.1))


def sample_ratio(rng: np.random.Generator, enlarged: bool) -> float:
    """In-plane long/short ratio: enlarged 1 + Gamma(2, 0.12); small 1.3 + Gamma(2, 0.2)."""
    return float(1.0 + rng.gamma(2.0, 0.12)) if enlarged else float(1.3 + rng.gamma(2.0, 0.2))


def sample_type(rng: np.random.Generator, enlarged: bool, probs: dict[str, float]) -> str:
    if not enlarged:
        return "solid" if rng.random() < 0.5 else "fatty_hilum"
    names = sorted(probs)
    pr = np.array([max(0.0, probs[n]) for n in names])
    return str(names[int(rng.choice(len(names), p=pr / pr.sum()))])


# -- stations -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Station:
    name: str
    region: str
    weight: float
    anchors: tuple[str, ...]
    direction: tuple[float, float, float]
    zrange: tuple[float, float] | None = None
    mirror_x: bool = False  # the direction's x sign is drawn per node (left or right of the anchor)


STATIONS: Final = (
    Station("4R", "mediastinal", 0.22, ("trachea", "svc"), (-1.0, -0.3, 0.0), (2, 45)),
    Station("7", "mediastinal", 0.20, ("esophagus",), (-0.2, -1.0, 0.0), (-38, -6)),
    Station("4L", "mediastinal", 0.10, ("trachea",), (1.0, -0.1, 0.0), (2, 35)),
    Station("10R", "mediastinal", 0.10, ("r_bronchus", "rpa"), (0.0, -0.6, 0.8), None),
    Station("10L", "mediastinal", 0.08, ("l_bronchus", "lpa"), (0.0, 0.6, -0.8), None),
    Station("2R", "mediastinal", 0.07, ("trachea",), (-1.0, -0.4, 0.0), (45, 100)),
    Station("2L", "mediastinal", 0.03, ("trachea",), (1.0, -0.3, 0.0), (45, 100)),
    Station("5", "mediastinal", 0.06, ("lpa",), (0.5, 0.0, 1.0), None),
    Station("6", "mediastinal", 0.04, ("asc_aorta", "arch"), (0.6, -1.0, 0.0), (10, 55)),
    Station("3a", "mediastinal", 0.05, ("svc", "asc_aorta"), (0.0, -1.0, 0.0), (0, 50)),
    Station("8", "mediastinal", 0.04, ("esophagus", "desc_aorta"), (-1.0, 0.2, 0.0), (-100, -40)),
    Station("3p", "mediastinal", 0.01, ("trachea",), (-0.8, 1.0, 0.0), (10, 60)),
    Station("para_aortic_l", "abdominal", 0.20, ("abd_aorta",), (1.0, 0.0, 0.0), (-296, -235)),
    Station("aortocaval", "abdominal", 0.12, ("abd_aorta", "ivc_infra"), (-1.0, -0.2, 0.0), (-296, -225)),
    Station("mesenteric", "abdominal", 0.15, ("mesenteric", "smv", "sma"), (0.0, 0.0, 0.0), None),
    Station("portocaval", "abdominal", 0.10, ("portal",), (0.0, 1.0, 0.0), (-225, -175)),
    Station("paracaval", "abdominal", 0.08, ("ivc_infra", "ivc_supra"), (-1.0, 0.5, 0.0), (-300, -225)),
    Station("common_iliac", "abdominal", 0.08, ("iliac_a_l", "iliac_a_r"), (0.0, 0.0, 0.0), (-365, -300)),
    Station("external_iliac", "abdominal", 0.05, ("iliac_a_l", "iliac_a_r"), (0.0, 0.0, 0.0), (-470, -370)),
    Station("celiac", "abdominal", 0.06, ("celiac",), (0.0, 0.0, 0.0), None),
    Station("gastrohepatic", "abdominal", 0.05, ("portal", "celiac"), (0.0, -1.0, 0.3), (-200, -170)),
    Station("peripancreatic", "abdominal", 0.06, ("pancreas", "splenic_v"), (0.0, 0.0, 0.0), None),
    # behind the crura, beside (not into) the spine: posterolateral of the aorta, either side
    Station(
        "retrocrural", "abdominal", 0.05, ("desc_aorta", "abd_aorta"), (0.9, 0.7, 0.0), (-175, -120), True
    ),
)


@dataclass
class Node:
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
    rot: NDArray[np.float64]
    molded: bool = False
    measured: dict[str, Any] = field(default_factory=dict)


def _perturb(rng: np.random.Generator, amp: float, hilar: bool) -> Any:
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


def _unit(v: NDArray[np.float64]) -> NDArray[np.float64]:
    return v / (np.linalg.norm(v) + 1e-12)


class NodePlacer:
    """Places nodes beside their anchors in fat, never overlapping other structures (spec §6.4)."""

    def __init__(self, cv: Canvas, an: Anatomy, p: dict[str, Any], rng: np.random.Generator) -> None:
        self.cv, self.an, self.p, self.rng = cv, an, p, rng
        self.node_map = np.zeros(cv.shape, dtype=np.uint16)
        self.nodes: list[Node] = []
        self.np = p["nodes"]
        lo = np.array([cv.xs[0], cv.ys[0], cv.zs[0]], dtype=float)
        hi = np.array([cv.xs[-1], cv.ys[-1], cv.zs[-1]], dtype=float)
        self.lo, self.hi = lo, hi
        self._pert: dict[int, Any] = {}
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
            a = self.an.anchors.get(name)
            if a is None or len(a.pts) < 2:
                continue
            tang = np.gradient(a.pts, axis=0)
            for i in range(len(a.pts)):
                q = a.pts[i]
                if st.zrange is not None and not (st.zrange[0] <= q[2] <= st.zrange[1]):
                    continue
                if np.any(q < self.lo + 12) or np.any(q > self.hi - 12):
                    continue
                out.append((name, q, np.asarray(a.radius[i]), _unit(tang[i])))
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
        d = _unit(_unit(base) + rng.normal(0, spread, 3))
        d = _unit(d - (d @ tang) * tang)  # perpendicular to the anchor
        gap = float(np.clip(rng.exponential(self.np["gap_mean"]), 0.0, 10.0))
        # axes: short along d (flattened against the anchor), long along the tangent ±20°
        t = _unit(tang + rng.normal(0, 0.35, 3) - (tang @ d) * d)
        third = np.cross(d, t)
        comp = 1.0 + 0.6 * self.np["perturb_amp"]
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
            from scipy import ndimage

            cv = self.cv
            stride = (
                max(1, round(2.0 / cv.spacing[0])),
                max(1, round(2.0 / cv.spacing[1])),
                max(1, round(2.0 / cv.spacing[2])),
            )
            host = self._host[cv.tissue[:: stride[0], :: stride[1], :: stride[2]]]
            host[0, :, :] = host[-1, :, :] = False
            sampling = tuple(float(a * b) for a, b in zip(cv.spacing, stride, strict=True))
            edt = ndimage.distance_transform_edt(host, sampling=sampling).astype(np.float32)
            self._room_cache = (edt, stride)
        return self._room_cache

    def _coarse_box(
        self, c: NDArray[np.float64], r: float
    ) -> tuple[tuple[slice, slice, slice], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """Slices of the room grid within ``r`` mm of world point ``c`` and the world x, y, z of its voxels."""
        cv = self.cv
        st = self._room()[1]
        axes = (cv.zs[:: st[0]], cv.ys[:: st[1]], cv.xs[:: st[2]])
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
        comp = 1.0 + 0.6 * self.np["perturb_amp"]
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
        gap = float(np.clip(rng.exponential(self.np["gap_mean"]), 0.0, 10.0))
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
        d = _unit(g) if np.linalg.norm(g) > 1e-6 else _unit(rng.normal(0, 1, 3))
        t = tang + rng.normal(0, 0.2, 3)
        t = t - (t @ d) * d
        if np.linalg.norm(t) < 1e-3:
            t = rng.normal(0, 1, 3)
            t = t - (t @ d) * d
        t = _unit(t)
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
        cv = self.cv
        i = round((float(w[0]) - float(cv.xs[0])) / cv.spacing[2])
        j = round((float(w[1]) - float(cv.ys[0])) / cv.spacing[1])
        k = round((float(w[2]) - float(cv.zs[0])) / cv.spacing[0])
        if not (0 <= k < cv.shape[0] and 0 <= j < cv.shape[1] and 0 <= i < cv.shape[2]):
            return -1
        return int(cv.tissue[k, j, i])

    def soft_contact(
        self, centre: NDArray[np.float64], half: tuple[float, float, float], rot: NDArray[np.float64]
    ) -> list[tuple[NDArray[np.float64], float]]:
        """(centre, gap) poses that make the node touch the nearest soft-tissue structure within 15 mm of its surface.

        Probes 8 in-plane and 2 cranio-caudal directions of the node frame through host fat; the first
        non-fat voxel ends a probe, and only soft tissue (muscle, esophagus, crus, collapsed bowel, poorly
        enhanced vein, ...) counts. Returns the shifted poses (touching, then 1 mm off), nearest first;
        empty when nothing soft is in reach.
        """
        step = 0.5 * min(self.cv.spacing)
        dirs = []
        for a, b in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)):
            dirs.append(_unit(a * rot[:, 0] + b * rot[:, 1]))
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

    def _fit(self, node: Node, check: bool) -> tuple[Any, Any, Any, Any] | None:
        """(box, sdf, coverage, mask) of the node when it lies inside the volume (2 voxels from the border) and,
        with ``check``, covers only host fat; None otherwise."""
        cv = self.cv
        b, sdf = cv.ellipsoid_sdf(
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
            or b.z1 == cv.shape[0]
            or b.y1 == cv.shape[1]
            or b.x1 == cv.shape[2]
        ):
            return None  # keep 2 voxels away from the border
        a = cv.coverage(sdf)
        inside = a >= 0.5
        if not inside.any():
            return None
        if check and not np.all(self._host[cv.tissue[b.slices][inside]]):
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
        cv = self.cv
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
            sad_m = measure_mask(fit[3], cv.spacing)["sad_mm"]
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
                fit, sad_m = new, measure_mask(new[3], cv.spacing)["sad_mm"]
                if node.drawn_enlarged and sad_m < thr:  # shrunk too far: keep the size before
                    node.half_axes, fit, sad_m = prev
                    break
                node.molded = node.molded or not node.drawn_enlarged
            if (sad_m < thr) if node.drawn_enlarged else (sad_m >= thr):
                return False  # measures in the other class: place it elsewhere (§6.11.3)
        b, sdf, a, inside = fit
        self._render(node, b, sdf, a, inside)
        return True

    def _precheck(self, node: Node) -> bool:
        """Cheap rejection: the centre and 14 points at 85 % of the axes must be host fat."""
        cv = self.cv
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
        ix = np.round((w[:, 0] - cv.xs[0]) / cv.spacing[2]).astype(int)
        iy = np.round((w[:, 1] - cv.ys[0]) / cv.spacing[1]).astype(int)
        iz = np.round((w[:, 2] - cv.zs[0]) / cv.spacing[0]).astype(int)
        if (
            ix.min() < 1
            or iy.min() < 1
            or iz.min() < 1
            or ix.max() >= cv.shape[2] - 1
            or iy.max() >= cv.shape[1] - 1
            or iz.max() >= cv.shape[0] - 1
        ):
            return False
        t = cv.tissue[iz, iy, ix]
        return bool(np.all((t == T.FAT_VISC) | (t == T.STRANDING)))

    def _render(self, node: Node, b: Any, sdf: Any, a: Any, inside: Any) -> None:
        cv, rng = self.cv, self.rng
        sl = b.slices
        tis_id = T.NODE if node.drawn_enlarged else T.NODE_SMALL
        if rng.random() < self.np["stranding_p"]:
            halo = cv.coverage(sdf - rng.uniform(1.0, 3.0))
            halo_m = np.isin(cv.tissue[sl], np.asarray((T.FAT_VISC,), dtype=np.uint8))
            cur = cv.hu[sl]
            hv = np.float32(self.p["hu"]["stranding"])
            h = halo * halo_m
            cur += h * (hv - cur)
            cv.tissue[sl][(h >= 0.5) & ~inside] = T.STRANDING
        tex = self.np["texture_sd"]
        host = np.isin(cv.tissue[sl], np.asarray(NODE_HOST, dtype=np.uint8))
        cv.paint(b, sdf, node.hu, tis_id, tex_sd=tex, tex_flip=int(node.node_index) % 4, mask=host | inside)
        self.node_map[sl][inside] = node.node_index
        own = self.node_map[sl] == node.node_index
        kind = node.internal
        c, half, rot = node.center, node.half_axes, node.rot
        if kind == "necrotic":
            core = tuple(h * rng.uniform(0.4, 0.6) for h in half)
            bb, s2 = cv.ellipsoid_sdf(c + rng.normal(0, 0.5, 3), core, rot)
            if s2 is not None and s2.shape == own.shape:
                cv.paint(bb, s2, float(rng.uniform(5, 35)), tis_id, tex_sd=8, mask=own)
        elif kind == "fatty_hilum":
            off = rot[:, 1] * half[1] * 0.75 * (1 if rng.random() < 0.5 else -1)
            hh = (half[0] * 0.45, half[1] * 0.4, half[2] * 0.5)
            bb, s2 = cv.ellipsoid_sdf(c + off, hh, rot)
            if s2 is not None:
                m = self._crop(bb, b, own)
                if m is not None:
                    cv.paint(bb, s2, float(rng.uniform(-100, -40)), tis_id, tex_sd=10, mask=m)
        elif kind == "calcified":
            for _ in range(int(rng.integers(1, 4))):
                off = rot @ (rng.uniform(-0.5, 0.5, 3) * np.asarray(half))
                r = float(rng.uniform(0.8, 1.6))
                bb, s2 = cv.ellipsoid_sdf(c + off, (r, r, r))
                if s2 is not None:
                    m = self._crop(bb, b, own)
                    if m is not None:
                        cv.paint(bb, s2, float(rng.uniform(250, 800)), tis_id, mask=m)

    @staticmethod
    def _crop(inner: Any, outer: Any, own: Any) -> Any:
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
            sample_enlarged_sad(rng, self.np["share_10_12"], region)
            if enlarged
            else sample_small_sad(rng, region)
        )
        ratio = sample_ratio(rng, enlarged)
        cc = float(rng.uniform(1.0, 2.0))
        if cc < ratio:
            cc = ratio  # keep the cranio-caudal axis the longest
        kind = sample_type(rng, enlarged, self.np["type_probs"])
        hu = self.p["hu"]["ln_mean"] + float(rng.normal(0, self.np["ln_offset_sd"]))
        if kind == "hyper":
            hu = float(rng.uniform(95, 135))
        idx = len(self.nodes) + 1
        amp = self.np["perturb_amp"] * (1.0 if enlarged else 0.6)
        self._pert[idx] = _perturb(rng, amp, rng.random() < 0.2)
        # molding never takes an enlarged node below the threshold (a measured check in try_place backs this)
        floor = min(1.0, max(0.7, (enlarged_threshold(region) + 0.6) / sad)) if enlarged else 0.7
        contact = allow_contact and seed_node is None and rng.random() < self.np.get("soft_contact_p", 0.0)
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
        rng, npar = self.rng, self.np
        other = "abdominal" if case_region == "mediastinal" else "mediastinal"
        counts = {
            case_region: sample_enlarged_count(rng, case_region),
            other: sample_enlarged_count(rng, other),
        }
        self.drawn_counts = dict(counts)
        cluster_p = npar["cluster_p_med"] if case_region == "mediastinal" else npar["cluster_p_abd"]
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
                            station=next(s for s in STATIONS if s.name == seed.station),
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
        for _ in range(npar["n_small"]):
            region = case_region if rng.random() < 0.7 else other
            self.place_one(region, False)


# -- measurement ----------------------------------------------------------------------------------
def _feret(pts: NDArray[np.float64], sp: float) -> tuple[float, float]:
    """(LAD, SAD) of a 2D point set (pixel centres in mm): longest diameter and its perpendicular width."""
    if len(pts) == 1:
        return sp, sp
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    v = pts[j] - pts[i]
    lad = float(np.sqrt(d2[i, j]))
    if lad == 0:
        return sp, sp
    n = np.array([-v[1], v[0]]) / lad
    proj = pts @ n
    return lad + sp, float(proj.max() - proj.min()) + sp


def measure_mask(mask: NDArray[np.bool_], spacing_zyx: tuple[float, float, float]) -> dict[str, Any]:
    """RECIST measurement of one node mask (z, y, x): LAD on the axial slice where it is longest, SAD ⟂ it."""
    from scipy import ndimage

    dz, dy, dx = spacing_zyx
    zz, yy, xx = np.nonzero(mask)
    best = (-1.0, 0.0, -1)
    for k in np.unique(zz):
        sl = mask[k]
        edge = sl & ~ndimage.binary_erosion(sl)
        ys, xs = np.nonzero(edge)
        pts = np.stack([xs * dx, ys * dy], axis=1).astype(float)
        lad, sad = _feret(pts, 0.5 * (dx + dy))
        if lad > best[0]:
            best = (lad, sad, int(k))
    lad, sad, kbest = best
    sel = zz == kbest
    reader = (float(np.mean(xx[sel])), float(np.mean(yy[sel])), float(kbest))
    coords = np.stack([xx * dx, yy * dy, zz * dz], axis=1).astype(float)
    cov = np.cov(coords.T) if len(coords) > 3 else np.eye(3)
    ev = np.sort(np.linalg.eigvalsh(cov))[::-1]
    axes3d = [float(2 * np.sqrt(max(5 * e, 0.0))) for e in ev]
    return {
        "lad_mm": float(lad),
        "sad_mm": float(sad),
        "recist_slice": kbest,
        "reader_ijk": reader,
        "centroid_zyx": (float(zz.mean()), float(yy.mean()), float(xx.mean())),
        "axes3d_mm": axes3d,
        "volume_mm3": float(mask.sum() * dx * dy * dz),
        "n_vox": int(mask.sum()),
    }


def record_annotation(case_id: str, rec: dict[str, Any]) -> Annotation:
    """An annotations.csv row for a placed node record (id, xyz, sad, lad, region); label_id = node id."""
    return Annotation(
        case_id,
        rec["id"],
        tuple(rec["xyz"]),
        round(rec["sad"], 3),
        round(rec["lad"], 3),
        rec["region"],
        rec["id"],
    )
