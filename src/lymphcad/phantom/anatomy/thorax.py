"""The thorax: lungs, mediastinal envelope, diaphragm, heart, great vessels, airways, oesophagus, azygos
system, thymus, pericardial recess and the pulmonary vessel trees (its node mimics are recorded)."""

from __future__ import annotations

import numpy as np

from lymphcad.phantom.anatomy.builder import AnatomyBuilder, dome_z
from lymphcad.phantom.canvas import rotation_from_axis, smooth_path
from lymphcad.phantom.config import Z_DOME
from lymphcad.phantom.tissue import Tissue


class _Slab:
    """Points Box covering whole slices z0..z1 (duck-typed for Canvas.paint)."""

    def __init__(self, z0: int, z1: int, shape: tuple[int, int, int]) -> None:
        self.z0, self.z1, self.y0, self.y1, self.x0, self.x1 = (
            z0,
            z1,
            0,
            shape[1],
            0,
            shape[2],
        )

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return (slice(self.z0, self.z1), slice(None), slice(None))

    @property
    def empty(self) -> bool:
        return self.z1 <= self.z0


def paint_thorax(builder: AnatomyBuilder) -> None:
    """Everything above the diaphragm except the body wall and skeleton (see the module docstring)."""
    canvas, hu, rng = builder.canvas, builder.hu, builder.rng
    if not builder.in_z(Z_DOME - 60, 250):
        return
    body = builder.params.body
    inset = body.skin_mm + body.subcut_fat_mm + body.muscle_mm + 3.0
    # lungs: body interior above the dome (reuses the body's 2D distance maps)
    box = canvas.box([-400, -400, Z_DOME - 70], [400, 400, 400])
    if not box.empty:
        x2 = canvas.xs[None, :]
        y2 = canvas.ys[:, None]
        dome2 = dome_z(x2, y2, builder.sx, builder.dome_shift).astype(np.float32)
        for k in range(box.z0, box.z1):
            zk = canvas.zs[k]
            if zk < float(dome2.min()) - 2:
                continue
            sdf = np.maximum(builder.base2d[builder.base_index[k]] + np.float32(inset), dome2 - zk)
            canvas.paint(
                _Slab(k, k + 1, canvas.shape),
                sdf[None],
                hu["lung"],
                Tissue.LUNG,
                tex_sd=25,
                allowed=(Tissue.FAT_VISC,),
            )
    # mediastinal envelope (fat) carved out of the lungs
    zk = [200, 90, 40, 0, -40, -90, -140]
    xk = [0, 0, 4, 6, 14, 18, 18]
    yk = [-10, -20, -25, -25, -25, -25, -25]
    ak = [26, 30, 44, 48, 62, 70, 66]
    bk = [48, 62, 72, 74, 76, 76, 76]
    builder.ztube(None, zk, xk, yk, ak, bk, hu["fat"], Tissue.FAT_VISC, tex_sd=10, allowed=(Tissue.LUNG,))
    builder.anatomy.med_env = (
        np.asarray(zk, float),
        np.asarray(xk, float) * builder.sx,
        np.asarray(yk, float) * builder.sy,
        np.asarray(ak, float) * builder.sx,
        np.asarray(bk, float) * builder.sy,
    )
    # diaphragm muscle band
    box = canvas.box([-400, -400, Z_DOME - 80], [400, 400, Z_DOME + 25])
    if not box.empty:
        x, y, z = canvas.coords(box)
        dz = np.abs(z - dome_z(x, y, builder.sx, builder.dome_shift)) - 3.0
        canvas.paint(box, dz, hu["muscle"], Tissue.MUSCLE, tex_sd=8, allowed=(Tissue.LUNG, Tissue.FAT_VISC))
    # heart (clipped above the dome) with epicardial fat
    rot = rotation_from_axis(np.array([0.75, -0.45, -0.45]), 0.3)
    c = builder.scaled((20, -28, -92))[0]
    for half, val, tis, tex in (
        ((66, 58, 58), hu["fat"], Tissue.FAT_VISC, 10),
        ((58, 50, 50), hu["myocardium"], Tissue.MYOCARDIUM, 10),
        ((45, 36, 38), hu["heart_blood"], Tissue.HEART_BLOOD, 12),
    ):
        b, sdf = canvas.ellipsoid_sdf(c, half, rot)
        if sdf is not None:
            x, y, z = canvas.coords(b)
            sdf = np.maximum(sdf, dome_z(x, y, builder.sx, builder.dome_shift) + 2 - z)
            canvas.paint(b, sdf, val, tis, tex_sd=tex)
    # left atrium
    canvas.ellipsoid(
        builder.scaled((6, 14, -58))[0], (33, 16, 20), hu["heart_blood"], Tissue.HEART_BLOOD, tex_sd=12
    )
    # pulmonary veins into the LA
    for s in (-1, 1):
        for dz in (8.0, -12.0):
            builder.tube(
                None,
                builder.scaled((s * 68, 8, -48 + dz), (s * 45, 14, -54 + dz / 2), (s * 24, 14, -58)),
                6.0,
                hu["heart_blood"],
                Tissue.VEIN,
            )
    # aorta: root, ascending, arch, descending, abdominal, iliacs
    builder.ztube(
        "asc_aorta",
        [-72, -30, 32],
        [-10, -16, -18],
        [-36, -38, -36],
        15.0,
        15.0,
        hu["artery"],
        Tissue.ARTERY,
        tex_sd=10,
    )
    arch = builder.scaled(
        (-18, -36, 30),
        (-12, -40, 42),
        (2, -40, 50),
        (20, -26, 50),
        (28, -4, 44),
        (30, 14, 32),
        (30, 17, 20),
    )
    builder.tube("arch", arch, 13.0, hu["artery"], Tissue.ARTERY, jitter=0.5, tex_sd=10)
    builder.ztube(
        "desc_aorta",
        [22, -60, -118, -150],
        [30, 28, 22, 10],
        [17, 16, 12, 5],
        12.0,
        12.0,
        hu["artery"],
        Tissue.ARTERY,
        tex_sd=10,
    )
    # arch branches
    builder.tube(
        "bct", builder.scaled((0, -40, 48), (-8, -32, 100), (-22, -24, 170)), 6.5, hu["artery"], Tissue.ARTERY
    )
    builder.tube(
        "lcca",
        builder.scaled((12, -34, 52), (16, -24, 110), (20, -18, 170)),
        4.5,
        hu["artery"],
        Tissue.ARTERY,
    )
    builder.tube(
        "lsa",
        builder.scaled((24, -14, 50), (34, -6, 100), (60, 0, 135), (90, 5, 150)),
        5.0,
        hu["artery"],
        Tissue.ARTERY,
    )
    # SVC and brachiocephalic veins
    dense = builder.params.dense_venous
    svc_hu = float(rng.uniform(400, 1200)) if dense else hu["svc"]
    builder.ztube(
        "svc", [-48, 0, 56], [-44, -44, -42], [-26, -24, -24], 10.0, 9.0, hu["svc"], Tissue.VEIN, tex_sd=15
    )
    builder.tube(
        "rbcv",
        builder.scaled((-42, -24, 54), (-44, -20, 110), (-55, -10, 170)),
        7.0,
        hu["svc"],
        Tissue.VEIN,
        tex_sd=15,
    )
    builder.tube(
        "lbcv",
        builder.scaled((-40, -30, 56), (-12, -48, 64), (22, -44, 72), (50, -22, 88), (68, -6, 120)),
        6.0,
        svc_hu,
        Tissue.VEIN,
        tex_sd=20,
    )
    # pulmonary trunk and arteries
    builder.tube(
        "pa_trunk",
        builder.scaled((8, -48, -55), (12, -34, -20), (12, -24, -8)),
        13.0,
        hu["pulm_artery"],
        Tissue.ARTERY,
        jitter=0.5,
        tex_sd=10,
    )
    builder.tube(
        "lpa",
        builder.scaled((12, -24, -8), (30, -14, -2), (50, -4, -8), (68, 0, -22)),
        10.0,
        hu["pulm_artery"],
        Tissue.ARTERY,
        jitter=0.5,
    )
    builder.tube(
        "rpa",
        builder.scaled((8, -24, -10), (-12, -22, -15), (-36, -18, -18), (-62, -8, -26)),
        9.5,
        hu["pulm_artery"],
        Tissue.ARTERY,
        jitter=0.5,
    )
    # trachea and main bronchi (wall + air)
    builder.ztube(
        "trachea",
        [0, 80, 200],
        [0, 0, 0],
        [-10, -14, -16],
        11.0,
        10.5,
        hu["airway_wall"],
        Tissue.AIRWAY_WALL,
        tex_sd=8,
    )
    builder.ztube(
        None, [0, 80, 200], [0, 0, 0], [-10, -14, -16], 9.0, 8.5, -1000.0, Tissue.AIRWAY_LUMEN, tex_sd=3
    )
    rb = builder.scaled((0, -10, 2), (-28, 0, -16), (-58, 8, -32))
    lb = builder.scaled((0, -10, 2), (30, -2, -24), (58, 6, -44))
    builder.tube("r_bronchus", rb, 8.5, hu["airway_wall"], Tissue.AIRWAY_WALL, jitter=0.3)
    builder.tube("l_bronchus", lb, 7.5, hu["airway_wall"], Tissue.AIRWAY_WALL, jitter=0.3)
    builder.canvas.tube(smooth_path(rng, rb, 6), 6.5, -1000.0, Tissue.AIRWAY_LUMEN)
    builder.canvas.tube(smooth_path(rng, lb, 6), 5.5, -1000.0, Tissue.AIRWAY_LUMEN)
    # esophagus (collapsed 70 %, air 20 %, fluid 10 %)
    ezk, exk, eyk = [200, 40, 0, -60, -118, -135], [4, 6, 8, 10, 22, 36], [10, 10, 10, 10, 2, -8]
    builder.ztube(
        "esophagus",
        ezk,
        exk,
        eyk,
        [10, 11, 11, 11, 10, 10],
        [7, 7, 7, 7, 7, 7],
        hu["esophagus"],
        Tissue.ESOPHAGUS,
        tex_sd=8,
    )
    state = rng.choice(["collapsed", "air", "fluid"], p=[0.7, 0.2, 0.1])
    if state != "collapsed":
        builder.ztube(
            None,
            ezk,
            exk,
            eyk,
            4.0,
            2.5,
            -1000.0 if state == "air" else hu["fluid"],
            Tissue.AIRWAY_LUMEN if state == "air" else Tissue.FLUID,
            allowed=(Tissue.ESOPHAGUS,),
        )
    builder.mimic("esophagus", builder.scaled((8, 10, -20))[0], 18)
    # azygos and hemiazygos (poorly enhanced: key mimics at 4R/7)
    builder.ztube(
        "azygos",
        [-230, -120, -30, 12],
        [-14, -14, -14, -16],
        [22, 20, 19, 18],
        4.2,
        4.2,
        hu["azygos"],
        Tissue.VEIN_POOR,
        tex_sd=12,
    )
    builder.tube(
        "azygos_arch",
        builder.scaled((-16, 18, 10), (-24, 6, 20), (-34, -10, 24), (-42, -20, 20)),
        4.5,
        hu["azygos"],
        Tissue.VEIN_POOR,
    )
    builder.ztube(
        "hemiazygos",
        [-230, -140, -70],
        [16, 16, 14],
        [26, 26, 26],
        3.0,
        3.0,
        hu["azygos"],
        Tissue.VEIN_POOR,
        tex_sd=12,
    )
    builder.mimic("azygos_arch", builder.scaled((-30, -4, 22))[0], 9)
    for za in np.arange(-200.0, 20.0, 40.0):
        builder.mimic("azygos", builder.scaled((-14, 20, float(za)))[0], 8.4)
    # internal mammary vessels (tiny)
    for s in (-1, 1):
        builder.ztube(None, [-100, 80], [s * 26, s * 26], [-84, -84], 2.0, 2.0, hu["artery"], Tissue.ARTERY)
    # thymic remnant (fatty) and pericardial superior recess
    builder.ellipsoid((0, -68, 30), (24, 8, 32), hu["thymus"], Tissue.THYMUS, tex_sd=20)
    if builder.params.pericardial_recess:
        c = builder.scaled((-6, -20, 8))[0]
        builder.canvas.ellipsoid(
            c,
            (11, 4, 9),
            hu["fluid"],
            Tissue.FLUID,
            rotation_from_axis(np.array([1.0, 0.3, 0.0])),
            allowed=(Tissue.FAT_VISC,),
        )
        builder.mimic("pericardial_recess", c, 12)
    # pulmonary vessel trees inside the lungs
    for s in (-1, 1):
        hil = builder.scaled((s * 58, 0, -15))[0]
        for _ in range(builder.params.n_lung_vessels):
            d = np.array([s * rng.uniform(0.3, 1.0), rng.uniform(-0.8, 0.8), rng.uniform(-0.9, 0.9)])
            d /= np.linalg.norm(d)
            length = rng.uniform(60, 140)
            kn = np.stack([hil + d * t + rng.normal(0, 6, 3) * (t > 0) for t in np.linspace(0, length, 5)])
            r0 = rng.uniform(2.5, 4.5)
            pts = smooth_path(rng, kn, 5)
            builder.canvas.tube(
                pts,
                np.linspace(r0, 0.8, len(pts)),
                hu["lung_vessel"],
                Tissue.LUNG_VESSEL,
                allowed=(Tissue.LUNG, Tissue.LUNG_VESSEL),
            )
