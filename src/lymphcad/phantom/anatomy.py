"""Anatomy builders (spec §6.2–6.3): one chest-abdomen-pelvis body in a common frame.

Frame: LPS axes, mm; x = 0 midline, y = 0 body centre, z = 0 carina. Positions below are written for a
standard body (inner half-axes 140 × 95 mm) and scaled by the case's habitus; organ sizes are not
scaled, so lean bodies are crowded (thin fat planes), as in real lean patients.
Each builder paints into the canvas in priority order and records anchors (centrelines used to place
nodes by station) and mimics (blob-like confounders, written to ``extra/<case>_mimics.csv``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lymphcad.phantom.canvas import Canvas, rotation_from_axis, smooth_path
from lymphcad.phantom.config import Z_DOME
from lymphcad.phantom.tissue import T

A = NDArray[np.float64]


@dataclass
class Anchor:
    """A centreline (N×3 frame mm) with radii, used to place nodes beside it."""

    pts: A
    radius: A


@dataclass
class Anatomy:
    anchors: dict[str, Anchor] = field(default_factory=dict)
    mimics: list[dict[str, Any]] = field(default_factory=list)
    sx: float = 1.0
    sy: float = 1.0
    y_spine: float = 35.0
    dome_params: tuple[float, float] = (0.0, 0.0)
    #: mediastinal envelope knots (z, x, y, a, b) in frame mm: the evaluation region of MED cases
    med_env: tuple[Any, ...] | None = None
    #: small vessels painted after the nodes (they wind around nodes instead of blocking them)
    deferred: list[tuple[Any, Any, float, int, float]] = field(default_factory=list)


def dome_z(x: Any, y: Any, sx: float = 1.0, shift: float = 0.0) -> Any:
    """Height of the diaphragm dome under (x, y): right side higher, lower laterally and posteriorly."""
    xn = x / sx
    side = np.float32(-8.0) / (1.0 + np.exp(-xn / 10.0))  # left dome ~8 mm lower
    return (
        np.float32(Z_DOME + 5 + shift)
        + side
        - 55.0 * (((np.abs(xn) - 55.0) / 95.0) ** 2 + (y / 100.0) ** 2) * (np.abs(xn) > 55.0)
        - 55.0 * (y / 100.0) ** 2 * (np.abs(xn) <= 55.0)
    )


class Builder:
    def __init__(self, cv: Canvas, p: dict[str, Any], rng: np.random.Generator) -> None:
        self.cv = cv
        self.p = p
        self.hu = p["hu"]
        self.rng = rng
        body = p["body"]
        self.a_in = body["half_lr"] - body["skin_mm"] - body["subcut_fat_mm"] - body["muscle_mm"]
        self.b_in = body["half_ap"] - body["skin_mm"] - body["subcut_fat_mm"] - body["muscle_mm"]
        self.sx = float(np.clip(self.a_in / 140.0, 0.75, 1.3))
        self.sy = float(np.clip(self.b_in / 95.0, 0.75, 1.3))
        self.an = Anatomy(sx=self.sx, sy=self.sy)
        self.dome_shift = float(rng.uniform(-10, 10))
        z = cv.zs
        self.zlo, self.zhi = float(z[0]), float(z[-1])

    # -- helpers ------------------------------------------------------------------------------------
    def P(self, *pts: tuple[float, float, float]) -> A:
        """Scale standard-frame points to this body."""
        arr = np.asarray(pts, dtype=float)
        arr[:, 0] *= self.sx
        arr[:, 1] *= self.sy
        return arr

    def in_z(self, zmin: float, zmax: float) -> bool:
        return zmax >= self.zlo - 30 and zmin <= self.zhi + 30

    def tube(
        self,
        name: str | None,
        knots: A,
        r: float | A,
        hu: float,
        tissue: int,
        *,
        jitter: float = 2.0,
        wall: tuple[float, float, int] | None = None,
        **kw: Any,
    ) -> A:
        """Smooth tube through knots; optional wall (thickness, HU, tissue) painted first; records an anchor."""
        pts = smooth_path(self.rng, knots, n=6, jitter=jitter)
        rr = np.interp(
            np.linspace(0, 1, len(pts)),
            np.linspace(0, 1, len(knots)),
            np.broadcast_to(np.asarray(r, float), (len(knots),)),
        )
        if pts[:, 2].max() < self.zlo - 30 or pts[:, 2].min() > self.zhi + 30:
            return pts
        if wall is not None:
            self.cv.tube(pts, rr + wall[0], wall[1], wall[2], tex_sd=8, tex_flip=1)
        self.cv.tube(pts, rr, hu, tissue, **kw)
        if name:
            self.an.anchors[name] = Anchor(pts, rr + (wall[0] if wall else 0.0))
        return pts

    def mimic(self, kind: str, center: Any, size: float) -> None:
        c = np.asarray(center, dtype=float)
        self.an.mimics.append(
            {"type": kind, "x": float(c[0]), "y": float(c[1]), "z": float(c[2]), "size_mm": float(size)}
        )

    def ztube(
        self,
        name: str | None,
        zk: Sequence[float],
        xk: Sequence[float],
        yk: Sequence[float],
        ak: Any,
        bk: Any,
        hu: float,
        tissue: int,
        scale: bool = True,
        **kw: Any,
    ) -> None:
        xs = np.asarray(xk, float) * (self.sx if scale else 1.0)
        ys = np.asarray(yk, float) * (self.sy if scale else 1.0)
        zs = np.asarray(zk, float)
        a = np.broadcast_to(np.asarray(ak, float), zs.shape)
        b = np.broadcast_to(np.asarray(bk, float), zs.shape)
        if not self.in_z(float(zs.min()), float(zs.max())):
            return
        self.cv.ztube(zs, xs, ys, a, b, hu, tissue, **kw)
        if name:
            order = np.argsort(zs)
            zz = np.linspace(zs.min(), zs.max(), max(2, int((zs.max() - zs.min()) / 5)))
            pts = np.stack(
                [np.interp(zz, zs[order], xs[order]), np.interp(zz, zs[order], ys[order]), zz], axis=1
            )
            rad = 0.5 * (np.interp(zz, zs[order], a[order]) + np.interp(zz, zs[order], b[order]))
            self.an.anchors[name] = Anchor(pts, rad)

    # -- body wall ----------------------------------------------------------------------------------
    def body(self) -> None:
        """Skin, subcutaneous fat, wall muscle and visceral fat as nested superellipse shells.

        The outline varies slowly with z, so its 2D distance map is computed once per distinct
        (half-axis pair) rounded to 0.25 mm and the shells are composited through a lookup (exactly
        the alpha-over of the four layers), which keeps the full-volume cost to a few passes.
        """
        cv, b, hu = self.cv, self.p["body"], self.hu
        zs = cv.zs.astype(np.float64)
        wob = b["z_wobble"]
        ph = self.rng.uniform(0, 2 * np.pi, 2)
        za = (
            1.0
            + wob * np.sin(zs / 90.0 + ph[0])
            + 0.06 * np.clip((zs - 60) / 60, 0, 1)
            - 0.04 * np.clip((-zs - 380) / 60, 0, 1)
        )
        zb = 1.0 + wob * np.sin(zs / 110.0 + ph[1]) - 0.05 * np.clip((zs - 40) / 80, 0, 1)
        a = np.round(b["half_lr"] * za * 4) / 4
        bb = np.round(b["half_ap"] * zb * 4) / 4
        keys = np.stack([a, bb], axis=1)
        uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        inv = inv.ravel()
        e = np.float32(b["exponent"])
        x = cv.xs[None, :]
        y = cv.ys[:, None]
        r = np.sqrt(x * x + y * y)
        offs = np.cumsum([0.0, b["skin_mm"], b["subcut_fat_mm"], b["muscle_mm"]]).astype(np.float32)
        vals = np.array([hu["skin"], hu["fat_subcut"], hu["muscle"], hu["fat"]], dtype=np.float32)
        texs = np.array([4.0, 10.0, 8.0, 10.0], dtype=np.float32)
        tiss = np.array([T.SKIN, T.FAT_SUBCUT, T.MUSCLE, T.FAT_VISC], dtype=np.uint8)
        h = np.float32(cv.h)
        maps_hu = np.empty((len(uniq), *r.shape), np.float32)
        maps_tx = np.empty_like(maps_hu)
        maps_ts = np.empty((len(uniq), *r.shape), np.uint8)
        self.base2d: list[NDArray[np.float32]] = []
        for u, (aa, bv) in enumerate(uniq):
            q = (np.abs(x / np.float32(aa)) ** e + np.abs(y / np.float32(bv)) ** e) ** (1.0 / e) + np.float32(
                1e-6
            )
            base = (r * (1.0 - 1.0 / q)).astype(np.float32)
            self.base2d.append(base)
            v = np.full(r.shape, -1000.0, np.float32)
            tx = np.zeros(r.shape, np.float32)
            ts = np.zeros(r.shape, np.uint8)
            for off, val, tsd, tid in zip(offs, vals, texs, tiss, strict=True):
                al = np.clip(0.5 - (base + off) / h, 0.0, 1.0)
                v += al * (val - v)
                tx += al * (tsd - tx)
                ts[al >= 0.5] = tid
            maps_hu[u], maps_tx[u], maps_ts[u] = v, tx, ts
        self.base_index = inv
        tex = cv.texture
        for k in range(cv.shape[0]):
            u = inv[k]
            if tex is not None:
                np.multiply(maps_tx[u], tex[k], out=cv.hu[k])
                cv.hu[k] += maps_hu[u]
            else:
                cv.hu[k] = maps_hu[u]
            cv.tissue[k] = maps_ts[u]

    # -- spine, ribs, sternum -----------------------------------------------------------------------
    def skeleton(self) -> None:
        hu, rng = self.hu, self.rng
        ysp = 35.0
        self.an.y_spine = ysp * self.sy
        zk = [200.0, 0.0, -130.0, -360.0]
        ak = [19.0, 20.0, 23.0, 25.0]
        bk = [15.0, 16.0, 18.0, 19.0]
        yk = [ysp + 4, ysp, ysp - 2, ysp + 6]
        # paraspinal muscles
        for s in (-1, 1):
            self.ztube(
                None,
                [200, -120, -260, -360],
                [s * 30, s * 30, s * 34, s * 36],
                [78, 78, 76, 80],
                [18, 20, 24, 20],
                [15, 17, 19, 17],
                hu["muscle"],
                T.MUSCLE,
                tex_sd=8,
                tex_flip=3,
            )
        self.ztube("spine", zk, [0, 0, 0, 0], yk, ak, bk, hu["cortical_bone"], T.BONE_CORTEX, tex_sd=60)
        self.ztube(
            None,
            zk,
            [0, 0, 0, 0],
            yk,
            np.asarray(ak) - 2.0,
            np.asarray(bk) - 2.0,
            hu["trabecular_bone"],
            T.BONE_TRAB,
            tex_sd=35,
        )
        # discs every ~28 mm
        zd = float(rng.uniform(-14, 14))
        discs = np.arange(zd - 28 * 20, 220, 28.0 + rng.uniform(-2, 3))
        for z in discs:
            if not self.in_z(z - 5, z + 5) or z < -360:
                continue
            a = float(np.interp(z, zk[::-1], ak[::-1]))
            b = float(np.interp(z, zk[::-1], bk[::-1]))
            y = float(np.interp(z, zk[::-1], yk[::-1]))
            self.ztube(
                None, [z - 4.5, z + 4.5], [0, 0], [y, y], a - 0.3, b - 0.3, hu["disc"], T.DISC, tex_sd=8
            )
        # posterior arch, canal, spinous and transverse processes
        self.ztube(
            None,
            [200, -360],
            [0, 0],
            [ysp + 27, ysp + 27],
            13.0,
            12.0,
            hu["cortical_bone"],
            T.BONE_CORTEX,
            tex_sd=60,
        )
        for z in discs:
            if not self.in_z(z, z + 22):
                continue
            self.ztube(
                None,
                [z + 4, z + 22],
                [0, 0],
                [ysp + 44, ysp + 44],
                4.0,
                11.0,
                hu["cortical_bone"],
                T.BONE_CORTEX,
            )
            for s in (-1, 1):
                self.ztube(
                    None,
                    [z + 8, z + 18],
                    [s * 24, s * 24],
                    [ysp + 24, ysp + 24],
                    11.0,
                    4.5,
                    hu["cortical_bone"],
                    T.BONE_CORTEX,
                )
        self.ztube(None, [200, -360], [0, 0], [ysp + 27, ysp + 27], 8.5, 8.0, hu["csf"], T.CSF, tex_sd=4)
        # ribs (chest and upper abdomen)
        ain, bin_ = 140.0, 95.0
        mus = self.p["body"]["muscle_mm"]
        for zr in np.arange(120.0 + rng.uniform(-6, 6), -180.0, -24.0):
            for s in (-1, 1):
                th = np.linspace(0.35, 2.55 if zr > -90 else 1.9, 10)
                rx = (ain + mus * 0.3) * np.sin(th) * s
                ry = (bin_ + mus * 0.3) * np.cos(th)
                rz = zr - 85.0 * (th - 0.35) / 2.2
                pts = self.P(*[(float(a), float(b), float(c)) for a, b, c in zip(rx, ry, rz, strict=True)])
                if not self.in_z(float(pts[:, 2].min()), float(pts[:, 2].max())):
                    continue
                self.cv.tube(pts, 5.5, hu["cortical_bone"], T.BONE_CORTEX)
                self.cv.tube(pts, 3.8, hu["trabecular_bone"], T.BONE_TRAB)
        # sternum
        self.ztube(None, [-95, 100], [0, 0], [-88, -88], 14.0, 6.0, hu["cortical_bone"], T.BONE_CORTEX)
        self.ztube(
            None, [-95, 100], [0, 0], [-88, -88], 12.0, 4.0, hu["trabecular_bone"], T.BONE_TRAB, tex_sd=30
        )

    # -- chest --------------------------------------------------------------------------------------
    def chest(self) -> None:
        cv, hu, rng = self.cv, self.hu, self.rng
        if not self.in_z(Z_DOME - 60, 250):
            return
        bw = self.p["body"]
        inset = bw["skin_mm"] + bw["subcut_fat_mm"] + bw["muscle_mm"] + 3.0
        # lungs: body interior above the dome (reuses the body's 2D distance maps)
        box = cv.box([-400, -400, Z_DOME - 70], [400, 400, 400])
        if not box.empty:
            x2 = cv.xs[None, :]
            y2 = cv.ys[:, None]
            dome2 = dome_z(x2, y2, self.sx, self.dome_shift).astype(np.float32)
            for k in range(box.z0, box.z1):
                zk = cv.zs[k]
                if zk < float(dome2.min()) - 2:
                    continue
                sdf = np.maximum(self.base2d[self.base_index[k]] + np.float32(inset), dome2 - zk)
                cv.paint(
                    _Slab(k, k + 1, cv.shape), sdf[None], hu["lung"], T.LUNG, tex_sd=25, allowed=(T.FAT_VISC,)
                )
        # mediastinal envelope (fat) carved out of the lungs
        zk = [200, 90, 40, 0, -40, -90, -140]
        xk = [0, 0, 4, 6, 14, 18, 18]
        yk = [-10, -20, -25, -25, -25, -25, -25]
        ak = [26, 30, 44, 48, 62, 70, 66]
        bk = [48, 62, 72, 74, 76, 76, 76]
        self.ztube(None, zk, xk, yk, ak, bk, hu["fat"], T.FAT_VISC, tex_sd=10, allowed=(T.LUNG,))
        self.an.med_env = (
            np.asarray(zk, float),
            np.asarray(xk, float) * self.sx,
            np.asarray(yk, float) * self.sy,
            np.asarray(ak, float) * self.sx,
            np.asarray(bk, float) * self.sy,
        )
        # diaphragm muscle band
        box = cv.box([-400, -400, Z_DOME - 80], [400, 400, Z_DOME + 25])
        if not box.empty:
            x, y, z = cv.coords(box)
            dz = np.abs(z - dome_z(x, y, self.sx, self.dome_shift)) - 3.0
            cv.paint(box, dz, hu["muscle"], T.MUSCLE, tex_sd=8, allowed=(T.LUNG, T.FAT_VISC))
        # heart (clipped above the dome) with epicardial fat
        rot = rotation_from_axis(np.array([0.75, -0.45, -0.45]), 0.3)
        c = self.P((20, -28, -92))[0]
        for half, val, tis, tex in (
            ((66, 58, 58), hu["fat"], T.FAT_VISC, 10),
            ((58, 50, 50), hu["myocardium"], T.MYOCARDIUM, 10),
            ((45, 36, 38), hu["heart_blood"], T.HEART_BLOOD, 12),
        ):
            b, sdf = cv.ellipsoid_sdf(c, half, rot)
            if sdf is not None:
                x, y, z = cv.coords(b)
                sdf = np.maximum(sdf, dome_z(x, y, self.sx, self.dome_shift) + 2 - z)
                cv.paint(b, sdf, val, tis, tex_sd=tex)
        # left atrium
        cv.ellipsoid(self.P((6, 14, -58))[0], (33, 16, 20), hu["heart_blood"], T.HEART_BLOOD, tex_sd=12)
        # pulmonary veins into the LA
        for s in (-1, 1):
            for dz in (8.0, -12.0):
                self.tube(
                    None,
                    self.P((s * 68, 8, -48 + dz), (s * 45, 14, -54 + dz / 2), (s * 24, 14, -58)),
                    6.0,
                    hu["heart_blood"],
                    T.VEIN,
                )
        # aorta: root, ascending, arch, descending, abdominal, iliacs
        self.ztube(
            "asc_aorta",
            [-72, -30, 32],
            [-10, -16, -18],
            [-36, -38, -36],
            15.0,
            15.0,
            hu["artery"],
            T.ARTERY,
            tex_sd=10,
        )
        arch = self.P(
            (-18, -36, 30),
            (-12, -40, 42),
            (2, -40, 50),
            (20, -26, 50),
            (28, -4, 44),
            (30, 14, 32),
            (30, 17, 20),
        )
        self.tube("arch", arch, 13.0, hu["artery"], T.ARTERY, jitter=0.5, tex_sd=10)
        self.ztube(
            "desc_aorta",
            [22, -60, -118, -150],
            [30, 28, 22, 10],
            [17, 16, 12, 5],
            12.0,
            12.0,
            hu["artery"],
            T.ARTERY,
            tex_sd=10,
        )
        # arch branches
        self.tube("bct", self.P((0, -40, 48), (-8, -32, 100), (-22, -24, 170)), 6.5, hu["artery"], T.ARTERY)
        self.tube("lcca", self.P((12, -34, 52), (16, -24, 110), (20, -18, 170)), 4.5, hu["artery"], T.ARTERY)
        self.tube(
            "lsa",
            self.P((24, -14, 50), (34, -6, 100), (60, 0, 135), (90, 5, 150)),
            5.0,
            hu["artery"],
            T.ARTERY,
        )
        # SVC and brachiocephalic veins
        dense = self.p["artifacts"]["dense_venous"]
        svc_hu = float(rng.uniform(400, 1200)) if dense else hu["svc"]
        self.ztube(
            "svc", [-48, 0, 56], [-44, -44, -42], [-26, -24, -24], 10.0, 9.0, hu["svc"], T.VEIN, tex_sd=15
        )
        self.tube(
            "rbcv",
            self.P((-42, -24, 54), (-44, -20, 110), (-55, -10, 170)),
            7.0,
            hu["svc"],
            T.VEIN,
            tex_sd=15,
        )
        self.tube(
            "lbcv",
            self.P((-40, -30, 56), (-12, -48, 64), (22, -44, 72), (50, -22, 88), (68, -6, 120)),
            6.0,
            svc_hu,
            T.VEIN,
            tex_sd=20,
        )
        # pulmonary trunk and arteries
        self.tube(
            "pa_trunk",
            self.P((8, -48, -55), (12, -34, -20), (12, -24, -8)),
            13.0,
            hu["pulm_artery"],
            T.ARTERY,
            jitter=0.5,
            tex_sd=10,
        )
        self.tube(
            "lpa",
            self.P((12, -24, -8), (30, -14, -2), (50, -4, -8), (68, 0, -22)),
            10.0,
            hu["pulm_artery"],
            T.ARTERY,
            jitter=0.5,
        )
        self.tube(
            "rpa",
            self.P((8, -24, -10), (-12, -22, -15), (-36, -18, -18), (-62, -8, -26)),
            9.5,
            hu["pulm_artery"],
            T.ARTERY,
            jitter=0.5,
        )
        # trachea and main bronchi (wall + air)
        self.ztube(
            "trachea",
            [0, 80, 200],
            [0, 0, 0],
            [-10, -14, -16],
            11.0,
            10.5,
            hu["airway_wall"],
            T.AIRWAY_WALL,
            tex_sd=8,
        )
        self.ztube(
            None, [0, 80, 200], [0, 0, 0], [-10, -14, -16], 9.0, 8.5, -1000.0, T.AIRWAY_LUMEN, tex_sd=3
        )
        rb = self.P((0, -10, 2), (-28, 0, -16), (-58, 8, -32))
        lb = self.P((0, -10, 2), (30, -2, -24), (58, 6, -44))
        self.tube("r_bronchus", rb, 8.5, hu["airway_wall"], T.AIRWAY_WALL, jitter=0.3)
        self.tube("l_bronchus", lb, 7.5, hu["airway_wall"], T.AIRWAY_WALL, jitter=0.3)
        self.cv.tube(smooth_path(rng, rb, 6), 6.5, -1000.0, T.AIRWAY_LUMEN)
        self.cv.tube(smooth_path(rng, lb, 6), 5.5, -1000.0, T.AIRWAY_LUMEN)
        # esophagus (collapsed 70 %, air 20 %, fluid 10 %)
        ezk, exk, eyk = [200, 40, 0, -60, -118, -135], [4, 6, 8, 10, 22, 36], [10, 10, 10, 10, 2, -8]
        self.ztube(
            "esophagus",
            ezk,
            exk,
            eyk,
            [10, 11, 11, 11, 10, 10],
            [7, 7, 7, 7, 7, 7],
            hu["esophagus"],
            T.ESOPHAGUS,
            tex_sd=8,
        )
        state = rng.choice(["collapsed", "air", "fluid"], p=[0.7, 0.2, 0.1])
        if state != "collapsed":
            self.ztube(
                None,
                ezk,
                exk,
                eyk,
                4.0,
                2.5,
                -1000.0 if state == "air" else hu["fluid"],
                T.AIRWAY_LUMEN if state == "air" else T.FLUID,
                allowed=(T.ESOPHAGUS,),
            )
        self.mimic("esophagus", self.P((8, 10, -20))[0], 18)
        # azygos and hemiazygos (poorly enhanced: key mimics at 4R/7)
        self.ztube(
            "azygos",
            [-230, -120, -30, 12],
            [-14, -14, -14, -16],
            [22, 20, 19, 18],
            4.2,
            4.2,
            hu["azygos"],
            T.VEIN_POOR,
            tex_sd=12,
        )
        self.tube(
            "azygos_arch",
            self.P((-16, 18, 10), (-24, 6, 20), (-34, -10, 24), (-42, -20, 20)),
            4.5,
            hu["azygos"],
            T.VEIN_POOR,
        )
        self.ztube(
            "hemiazygos",
            [-230, -140, -70],
            [16, 16, 14],
            [26, 26, 26],
            3.0,
            3.0,
            hu["azygos"],
            T.VEIN_POOR,
            tex_sd=12,
        )
        self.mimic("azygos_arch", self.P((-30, -4, 22))[0], 9)
        for za in np.arange(-200.0, 20.0, 40.0):
            self.mimic("azygos", self.P((-14, 20, float(za)))[0], 8.4)
        # internal mammary vessels (tiny)
        for s in (-1, 1):
            self.ztube(None, [-100, 80], [s * 26, s * 26], [-84, -84], 2.0, 2.0, hu["artery"], T.ARTERY)
        # thymic remnant (fatty) and pericardial superior recess
        self.ellipsoid_p((0, -68, 30), (24, 8, 32), hu["thymus"], T.THYMUS, tex_sd=20)
        if self.p["mimics"]["recess"]:
            c = self.P((-6, -20, 8))[0]
            self.cv.ellipsoid(
                c,
                (11, 4, 9),
                hu["fluid"],
                T.FLUID,
                rotation_from_axis(np.array([1.0, 0.3, 0.0])),
                allowed=(T.FAT_VISC,),
            )
            self.mimic("pericardial_recess", c, 12)
        # pulmonary vessel trees inside the lungs
        for s in (-1, 1):
            hil = self.P((s * 58, 0, -15))[0]
            for _ in range(self.p["mimics"]["n_lung_vessels"]):
                d = np.array([s * rng.uniform(0.3, 1.0), rng.uniform(-0.8, 0.8), rng.uniform(-0.9, 0.9)])
                d /= np.linalg.norm(d)
                L = rng.uniform(60, 140)
                kn = np.stack([hil + d * t + rng.normal(0, 6, 3) * (t > 0) for t in np.linspace(0, L, 5)])
                r0 = rng.uniform(2.5, 4.5)
                pts = smooth_path(rng, kn, 5)
                self.cv.tube(
                    pts,
                    np.linspace(r0, 0.8, len(pts)),
                    hu["lung_vessel"],
                    T.LUNG_VESSEL,
                    allowed=(T.LUNG, T.LUNG_VESSEL),
                )

    def ellipsoid_p(
        self,
        c: tuple[float, float, float],
        half: tuple[float, float, float],
        hu: float,
        tis: int,
        rot: A | None = None,
        **kw: Any,
    ) -> None:
        self.cv.ellipsoid(self.P(c)[0], half, hu, tis, rot, **kw)

    # -- abdomen ------------------------------------------------------------------------------------
    def abdomen(self) -> None:
        cv, hu = self.cv, self.hu
        if not self.in_z(-520, Z_DOME + 40):
            return
        lag = self.p["contrast"]["venous_lag"]
        # liver under the right dome
        c = self.P((-52, -6, -168))[0]
        b, sdf = cv.ellipsoid_sdf(c, (92, 82, 72), rotation_from_axis(np.array([1.0, 0.15, -0.25]), 0.2))
        if sdf is not None:
            x, y, z = cv.coords(b)
            sdf = np.maximum(sdf, z - dome_z(x, y, self.sx, self.dome_shift) + 3.5)
            # left-lobe tip crosses the midline a little; curved medial border (no straight cut)
            sdf = np.maximum(
                sdf, x - np.float32(14 * self.sx) + np.float32(0.004) * (y + np.float32(20)) ** 2
            )
            cv.paint(b, sdf, hu["liver"], T.LIVER, tex_sd=8, tex_flip=2, allowed=(T.FAT_VISC,))
        # spleen
        cv.ellipsoid(
            self.P((96, 42, -160))[0],
            (26, 52, 44),
            hu["spleen"],
            T.SPLEEN,
            rotation_from_axis(np.array([0.6, 0.8, 0.1])),
            tex_sd=8,
            allowed=(T.FAT_VISC, T.MUSCLE),
        )
        # stomach: wall then content
        sc = self.P((52, -28, -160))[0]
        rot = rotation_from_axis(np.array([0.5, -0.3, -0.8]), 0.4)
        cv.ellipsoid(sc, (52, 40, 34), hu["bowel_wall"], T.STOMACH, rot, tex_sd=10, allowed=(T.FAT_VISC,))
        oral = self.p["contrast"]["oral"]
        content = {
            "positive": hu["bowel_positive"],
            "neutral": hu["bowel_fluid"],
            "none": hu["bowel_fluid"] + 10,
        }[oral]
        cv.ellipsoid(sc, (47, 35, 29), content, T.BOWEL_CONTENT, rot, tex_sd=10, allowed=(T.STOMACH,))
        cv.ellipsoid(
            sc + np.array([0, -22, 12]), (35, 14, 18), -1000.0, T.BOWEL_CONTENT, allowed=(T.BOWEL_CONTENT,)
        )
        # gallbladder
        cv.ellipsoid(self.P((-58, -52, -205))[0], (14, 13, 32), hu["fluid"], T.FLUID, tex_sd=4)
        # kidneys with sinus fat and pelvis
        for s, zc in ((1, -238.0), (-1, -252.0)):
            kc = self.P((s * 74, 32, zc))[0]
            krot = rotation_from_axis(np.array([-s * 0.15, 0.2, 1.0]), s * 0.5)
            cv.ellipsoid(
                kc,
                (58, 27, 22),
                hu["kidney_cortex"],
                T.KIDNEY,
                krot,
                tex_sd=15,
                allowed=(T.FAT_VISC, T.MUSCLE),
            )
            cv.ellipsoid(
                kc, (50, 19, 15), hu["kidney_medulla"], T.KIDNEY, krot, tex_sd=15, allowed=(T.KIDNEY,)
            )
            hc = kc + np.array([-s * 16, -6, 0])
            cv.ellipsoid(hc, (13, 9, 22), hu["fat"], T.KIDNEY, allowed=(T.KIDNEY,))
            cv.ellipsoid(hc, (8, 5, 12), hu["urine"], T.URETER, allowed=(T.KIDNEY,))
        # pancreas (head to tail)
        pan = self.P((-24, -16, -238), (-4, -22, -224), (28, -16, -214), (56, 0, -206), (80, 18, -196))
        self.tube(
            "pancreas",
            pan,
            np.array([15.0, 11, 11, 10, 9]),
            hu["pancreas"],
            T.PANCREAS,
            tex_sd=12,
            allowed=(T.FAT_VISC,),
        )
        # adrenals (inverted Y)
        for s in (1, -1):
            top = self.P((s * 34, 10, -182))[0]
            for leg in (self.P((s * 42, 26, -206))[0], self.P((s * 30, 28, -208))[0]):
                self.cv.tube(np.stack([top, leg]), 2.6, hu["adrenal"], T.ADRENAL, allowed=(T.FAT_VISC,))
            self.mimic("adrenal", top, 6)
        # abdominal aorta and iliac arteries
        self.ztube(
            "abd_aorta",
            [-150, -200, -250, -296],
            [10, 9, 8, 6],
            [5, 4, 3, 2],
            10.5,
            10.5,
            hu["artery"],
            T.ARTERY,
            tex_sd=10,
        )
        for s in (-1, 1):
            self.tube(
                f"iliac_a_{'l' if s > 0 else 'r'}",
                self.P(
                    (6, 2, -292),
                    (s * 30, 8, -330),
                    (s * 48, 12, -360),
                    (s * 66, -6, -420),
                    (s * 76, -18, -470),
                ),
                np.array([7.0, 6.5, 6.0, 5.0, 4.5]),
                hu["artery"],
                T.ARTERY,
            )
            self.tube(None, self.P((s * 48, 12, -360), (s * 42, 40, -400)), 3.5, hu["artery"], T.ARTERY)
        # IVC (suprarenal, infrarenal with venous lag) and iliac veins
        ivc_mix = self.p["artifacts"]["ivc_mixing"]
        self.ztube(
            "ivc_supra",
            [-100, -160, -245],
            [-24, -24, -25],
            [16, 10, 8],
            12.0,
            10.0,
            hu["ivc_supra"],
            T.VEIN,
            tex_sd=15,
        )
        mixf = None
        b, sdf = cv.ztube_sdf(
            np.array([-245.0, -300.0]),
            np.array([-25.0, -22.0]) * self.sx,
            np.array([8.0, 10.0]) * self.sy,
            np.array([12.0, 11.0]),
            np.array([10.0, 9.0]),
        )
        if sdf is not None:
            if ivc_mix:
                x, y, z = cv.coords(b)
                mixf = np.float32(40.0) * np.sin(x / 3.0 + z / 9.0 + y / 5.0)
            cv.paint(b, sdf, hu["ivc_infra"], T.VEIN, tex_sd=20, hu_field=mixf)
        self.an.anchors["ivc_infra"] = Anchor(
            self.P((-25, 8, -245), (-24, 9, -270), (-22, 10, -300)), np.full(3, 11.0)
        )
        for s in (-1, 1):
            self.tube(
                f"iliac_v_{'l' if s > 0 else 'r'}",
                self.P(
                    (-18, 12, -298),
                    (s * 34, 20, -340),
                    (s * 48, 24, -368),
                    (s * 62, 4, -425),
                    (s * 70, -8, -470),
                ),
                np.array([8.0, 7.5, 7.0, 6.0, 5.5]),
                hu["ivc_infra"],
                T.VEIN,
                tex_sd=15,
            )
        # portal vein, SMV, splenic vein, hepatic veins
        self.tube(
            "portal",
            self.P((0, -6, -224), (-24, -6, -202), (-44, -6, -182), (-70, -12, -170)),
            np.array([7.0, 7, 6.5, 5]),
            hu["portal"],
            T.VEIN,
            tex_sd=10,
        )
        self.tube(
            "smv",
            self.P((0, -6, -224), (-6, -20, -250), (-10, -30, -290), (-14, -36, -325)),
            np.array([6.0, 5.5, 5, 4]),
            hu["portal"],
            T.VEIN,
            tex_sd=10,
        )
        self.tube(
            "splenic_v",
            self.P((0, -6, -224), (30, 0, -214), (58, 14, -202), (82, 28, -182)),
            4.2,
            hu["portal"],
            T.VEIN,
            tex_sd=10,
        )
        for k in ((-90, -20, -140), (-50, -50, -135), (0, -42, -128)):
            self.tube(
                None,
                self.P((-24, 14, -128), k),
                np.array([5.0, 2.0]),
                hu["ivc_supra"],
                T.VEIN,
                allowed=(T.LIVER,),
            )
        # SMA, celiac, renal vessels
        self.tube(
            "sma",
            self.P((8, -6, -204), (8, -22, -218), (6, -28, -250), (2, -32, -300)),
            3.6,
            hu["artery"],
            T.ARTERY,
        )
        self.tube(
            "celiac", self.P((8, -6, -188), (8, -20, -190), (-30, -16, -188)), 3.3, hu["artery"], T.ARTERY
        )
        self.tube(None, self.P((8, -20, -190), (40, 0, -192), (80, 20, -185)), 2.6, hu["artery"], T.ARTERY)
        self.tube(
            "l_renal_v",
            self.P((52, 22, -240), (26, -4, -236), (8, -13, -234), (-22, 6, -238)),
            5.0,
            hu["ivc_supra"] * (0.6 + 0.4 * lag),
            T.VEIN,
        )
        self.tube("r_renal_v", self.P((-54, 24, -254), (-28, 10, -248)), 5.0, hu["ivc_supra"], T.VEIN)
        for s in (-1, 1):
            self.tube(
                None,
                self.P((8, 5, -226), (s * 30, 16, -236), (s * 54, 26, -246)),
                3.0,
                hu["artery"],
                T.ARTERY,
            )
        # crura hugging the aorta (T10–L2)
        for s in (-1, 1):
            self.ztube(
                f"crus_{'l' if s > 0 else 'r'}",
                [-125, -170, -230],
                [9 + s * 15, 9 + s * 16, 8 + s * 15],
                [0, 6, 8],
                [4.5, 5, 4],
                [11, 10, 8],
                hu["crus"],
                T.CRUS,
                tex_sd=8,
                allowed=(T.FAT_VISC,),
            )
            self.mimic("crus", self.P((9 + s * 16, 6, -180))[0], 10)
        # psoas and quadratus lumborum
        for s in (-1, 1):
            self.ztube(
                f"psoas_{'l' if s > 0 else 'r'}",
                [-195, -250, -310, -370, -420],
                [s * 30, s * 36, s * 44, s * 52, s * 58],
                [33, 30, 24, 14, 5],
                [5, 11, 16, 19, 17],
                [5, 11, 15, 17, 15],
                hu["muscle"],
                T.MUSCLE,
                tex_sd=8,
                allowed=(T.FAT_VISC,),
            )
            self.ztube(
                None,
                [-215, -330],
                [s * 66, s * 70],
                [62, 60],
                13.0,
                10.0,
                hu["muscle"],
                T.MUSCLE,
                tex_sd=8,
                allowed=(T.FAT_VISC,),
            )
        # ureters and gonadal veins (thin tubes beside the psoas)
        for s in (-1, 1):
            u = self.tube(
                f"ureter_{'l' if s > 0 else 'r'}",
                self.P(
                    (s * 50, 24, -252),
                    (s * 40, 12, -300),
                    (s * 44, 6, -360),
                    (s * 52, 0, -400),
                    (s * 22, -28, -438),
                ),
                2.6,
                hu["ureter"],
                T.URETER,
                allowed=(T.FAT_VISC,),
            )
            self.mimic("ureter", u[len(u) // 2], 5)
            g = self.tube(
                None,
                self.P(
                    (s * 34, 8, -240 if s > 0 else -250),
                    (s * 36, -2, -300),
                    (s * 44, -6, -360),
                    (s * 56, -10, -420),
                ),
                2.0,
                hu["small_vein"],
                T.VEIN_POOR,
                allowed=(T.FAT_VISC,),
            )
            self.mimic("gonadal_vein", g[len(g) // 3], 4)
        # bladder
        cv.ellipsoid(
            self.P((0, -44, -445))[0], (40, 32, 30), hu["muscle"], T.BLADDER, tex_sd=6, allowed=(T.FAT_VISC,)
        )
        cv.ellipsoid(
            self.P((0, -44, -445))[0], (36, 28, 26), hu["urine"], T.BLADDER, tex_sd=4, allowed=(T.BLADDER,)
        )
        # pelvic bones
        for s in (-1, 1):
            rot = rotation_from_axis(np.array([s * 0.45, 0.9, 0.0]), 0.0)
            for half, val, tis in (
                ((46, 8, 34), hu["cortical_bone"], T.BONE_CORTEX),
                ((42, 4.5, 30), hu["trabecular_bone"], T.BONE_TRAB),
            ):
                cv.ellipsoid(self.P((s * 96, 34, -395))[0], half, val, tis, rot, tex_sd=40)
            for r, val, tis in (
                (23.0, hu["cortical_bone"], T.BONE_CORTEX),
                (20.5, hu["trabecular_bone"], T.BONE_TRAB),
            ):
                cv.ellipsoid(self.P((s * 84, 4, -476))[0], (r, r, r), val, tis, tex_sd=40)
        srot = rotation_from_axis(np.array([0.0, 0.5, 1.0]))
        cv.ellipsoid(
            self.P((0, 52, -392))[0], (48, 40, 16), hu["cortical_bone"], T.BONE_CORTEX, srot, tex_sd=40
        )
        cv.ellipsoid(
            self.P((0, 52, -392))[0], (44, 36, 12), hu["trabecular_bone"], T.BONE_TRAB, srot, tex_sd=40
        )
        self.bowel()
        self.mesenteric_vessels()

    def bowel(self) -> None:
        cv, hu, rng, p = self.cv, self.hu, self.rng, self.p
        oral = p["contrast"]["oral"]
        collapsed_f = p["bowel"]["collapsed_fraction"]

        def content_hu() -> tuple[float, int]:
            r = rng.random()
            if r < 0.1:
                return -1000.0, T.BOWEL_CONTENT
            if oral == "positive" and rng.random() < 0.75:
                return hu["bowel_positive"] * rng.uniform(0.6, 1.1), T.BOWEL_CONTENT
            return hu["bowel_fluid"], T.BOWEL_CONTENT

        allowed = (T.FAT_VISC,)
        # duodenal C-loop around the pancreatic head
        duo = self.P(
            (-22, -34, -204),
            (-46, -18, -220),
            (-48, -8, -252),
            (-28, -10, -268),
            (4, -6, -268),
            (26, -14, -258),
        )
        self.loop(duo, rng.uniform(8, 11), collapsed_f, content_hu, allowed)
        # colon frame with stool
        colon = self.P(
            (-92, -6, -345),
            (-96, -8, -270),
            (-92, -18, -205),
            (-50, -64, -215),
            (10, -70, -222),
            (60, -50, -205),
            (94, 4, -185),
            (96, 12, -250),
            (94, 10, -340),
            (60, -24, -380),
            (10, -6, -398),
            (0, 46, -420),
            (0, 52, -470),
        )
        pts = smooth_path(rng, colon, n=8, jitter=4.0)
        if self.in_z(float(pts[:, 2].min()), float(pts[:, 2].max())):
            r = rng.uniform(19, 25)
            cv.tube(pts, r + 2.0, hu["bowel_wall"], T.BOWEL_WALL, tex_sd=10, allowed=allowed)
            stool = np.float32(hu["stool"])
            for i in range(len(pts) - 1):
                b, sdf = cv.segment_sdf(pts[i], pts[i + 1], r, r)
                if sdf is None or cv.texture is None:
                    continue
                t1 = cv._tex(b.slices, 3)
                t2 = cv._tex(b.slices, 1)
                # mottled stool: soft-tissue/fat mix with gas pockets where a second field is high
                mott = np.float32(70.0) * t1 + np.where(t2 > 1.6, np.float32(-750.0), np.float32(0.0))
                cv.paint(b, sdf, float(stool), T.STOOL, hu_field=mott, allowed=(T.BOWEL_WALL,))
        # small bowel loops: self-avoiding-ish random walks in the central / anterior abdomen
        n = p["bowel"]["n_small_bowel"]
        lo = np.array([-75.0, -92.0, -345.0])
        hi = np.array([80.0, -8.0, -240.0])
        for _ in range(n):
            pos = lo + rng.random(3) * (hi - lo)
            d = rng.normal(0, 1, 3)
            d /= np.linalg.norm(d)
            steps = int(rng.integers(18, 45))
            walk = [pos.copy()]
            for _ in range(steps):
                d = 0.8 * d + 0.2 * rng.normal(0, 1, 3)
                d /= np.linalg.norm(d)
                pos = pos + 5.0 * d
                for k in range(3):  # reflect at the box
                    if pos[k] < lo[k] or pos[k] > hi[k]:
                        d[k] = -d[k]
                        pos[k] = np.clip(pos[k], lo[k], hi[k])
                walk.append(pos.copy())
            w = np.asarray(walk)[::2]
            w[:, 0] *= self.sx
            w[:, 1] *= self.sy
            self.loop(w, rng.uniform(8, 14), collapsed_f, content_hu, allowed)

    def loop(self, knots: A, r: float, collapsed_f: float, content_hu: Any, allowed: tuple[int, ...]) -> None:
        cv, hu, rng = self.cv, self.hu, self.rng
        pts = smooth_path(rng, knots, n=3)
        if not self.in_z(float(pts[:, 2].min()), float(pts[:, 2].max())):
            return
        if rng.random() < collapsed_f:
            rc = r * rng.uniform(0.45, 0.75)
            cv.tube(pts, rc, hu["bowel_collapsed"], T.BOWEL_COLLAPSED, tex_sd=15, tex_flip=3, allowed=allowed)
            for i in range(0, len(pts), 6):
                self.mimic("collapsed_bowel", pts[i], 2 * rc)
        else:
            val, tis = content_hu()
            cv.tube(pts, r, hu["bowel_wall"], T.BOWEL_WALL, tex_sd=12, allowed=allowed)
            cv.tube(pts, r - rng.uniform(1.8, 3.0), val, tis, tex_sd=8, allowed=(T.BOWEL_WALL,))

    def mesenteric_vessels(self) -> None:
        """Branches of SMV/SMA fanning into the mesentery; veins poorly enhanced (node mimics)."""
        hu, rng = self.hu, self.rng
        smv = self.an.anchors.get("smv")
        if smv is None:
            return
        n = self.p["mimics"]["n_mesenteric_veins"]
        pts_all = []
        for i in range(n):
            start = smv.pts[int(rng.integers(len(smv.pts) // 4, len(smv.pts)))] + np.array(
                [rng.uniform(-4, 8), 0, 0]
            )
            d = np.array([rng.uniform(-0.9, 1.0), rng.uniform(-0.7, 0.2), rng.uniform(-0.8, 0.1)])
            d /= np.linalg.norm(d)
            L = rng.uniform(40, 100)
            k = np.stack([start + d * t + rng.normal(0, 5, 3) * (t > 0) for t in np.linspace(0, L, 5)])
            r0 = rng.uniform(2.0, 3.4)
            pts = smooth_path(rng, k, 4)
            vein = i % 3 != 2
            val = hu["small_vein"] if vein else hu["artery"] * 0.9
            self.an.deferred.append(
                (pts, np.linspace(r0, 1.2, len(pts)), val, T.VEIN_POOR if vein else T.ARTERY, 12.0)
            )
            if vein:
                self.mimic("mesenteric_vein", pts[len(pts) // 3], 2 * r0)
            pts_all.append(pts)
        if pts_all:
            allp = np.concatenate(pts_all)
            self.an.anchors["mesenteric"] = Anchor(allp, np.full(len(allp), 2.5))


def clutter(b: Builder) -> None:
    """Small vessels (1.5–3.5 mm radius) winding through visceral fat: the commonest node mimic in
    axial slices (round 3–7 mm sections at 80–170 HU). Veins are poorly enhanced; count ∝ mimic density."""
    hu, rng, p = b.hu, b.rng, b.p
    dens = p["mimics"]["density"]
    boxes = (
        ("med", np.array([-50.0, -80.0, -120.0]), np.array([50.0, 30.0, 100.0]), round(34 * dens), 0.35),
        ("abd", np.array([-95.0, -90.0, -430.0]), np.array([95.0, 45.0, -150.0]), round(40 * dens), 0.6),
    )
    for name, lo, hi, n, vert in boxes:
        if not b.in_z(float(lo[2]), float(hi[2])):
            continue
        for _ in range(n):
            start = lo + rng.random(3) * (hi - lo)
            d = rng.normal(0, 1, 3) * np.array([1.0, 1.0, 1.0 + 3 * vert])
            d /= np.linalg.norm(d)
            L = rng.uniform(30, 110)
            k = np.stack([start + d * t + rng.normal(0, 4, 3) * (t > 0) for t in np.linspace(0, L, 4)])
            k[:, 0] *= b.sx
            k[:, 1] *= b.sy
            if not b.in_z(float(k[:, 2].min()), float(k[:, 2].max())):
                continue
            r = rng.uniform(1.4, 4.0) if rng.random() < 0.8 else rng.uniform(4.0, 7.0)  # sections 3–15 mm
            vein = rng.random() < 0.85
            # spec §5: poorly enhanced vein sections, 60–160 HU at d = 0.5, shifted with the case's venous level
            val = (
                float(np.clip(hu["small_vein"] - 110.0 + rng.uniform(60, 160), 50, 200))
                if vein
                else hu["artery"] * rng.uniform(0.8, 1.0)
            )
            pts = smooth_path(rng, k, 5)
            b.an.deferred.append(
                (
                    pts,
                    np.linspace(r, r * rng.uniform(0.5, 1.0), len(pts)),
                    val,
                    T.VEIN_POOR if vein else T.ARTERY,
                    10.0,
                )
            )
            if vein:
                b.mimic(f"small_vein_{name}", pts[len(pts) // 2], 2 * r)


def paint_deferred(cv: Canvas, an: Anatomy) -> None:
    """Paint the deferred small vessels (only into visceral fat, so they pass around nodes)."""
    for pts, radii, val, tis, tex in an.deferred:
        cv.tube(pts, radii, val, tis, tex_sd=tex, allowed=(T.FAT_VISC,))


class _Slab:
    """A Box covering whole slices z0..z1 (duck-typed for Canvas.paint)."""

    def __init__(self, z0: int, z1: int, shape: tuple[int, int, int]) -> None:
        self.z0, self.z1, self.y0, self.y1, self.x0, self.x1 = z0, z1, 0, shape[1], 0, shape[2]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return (slice(self.z0, self.z1), slice(None), slice(None))

    @property
    def empty(self) -> bool:
        return self.z1 <= self.z0


def build_anatomy(cv: Canvas, p: dict[str, Any], rng: np.random.Generator) -> Anatomy:
    """Paint the whole body into ``cv`` (priority order) and return anchors and mimics."""
    b = Builder(cv, p, rng)
    b.body()
    b.chest()
    b.abdomen()
    b.skeleton()
    clutter(b)
    b.an.dome_params = (b.sx, b.dome_shift)
    return b.an
