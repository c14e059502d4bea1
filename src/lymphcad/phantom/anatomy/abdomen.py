"""The abdomen and pelvis: organs, vessels, bowel loops and the mesenteric vessels (node mimics recorded)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lymphcad.phantom.anatomy.builder import AnatomyBuilder, Anchor, DeferredVessel, Points, dome_z
from lymphcad.phantom.canvas import rotation_from_axis, smooth_path
from lymphcad.phantom.config import Z_DOME
from lymphcad.phantom.tissue import Tissue


def paint_abdomen(builder: AnatomyBuilder) -> None:
    """Liver, spleen, stomach, gallbladder, kidneys, pancreas, adrenals, aorta and iliac arteries, IVC and
    iliac veins, portal system, ureters and gonadal veins, bladder; then the bowel and mesenteric vessels."""
    canvas, hu = builder.canvas, builder.hu
    if not builder.in_z(-520, Z_DOME + 40):
        return
    lag = builder.params.venous_lag
    # liver under the right dome
    c = builder.scaled((-52, -6, -168))[0]
    b, sdf = canvas.ellipsoid_sdf(c, (92, 82, 72), rotation_from_axis(np.array([1.0, 0.15, -0.25]), 0.2))
    if sdf is not None:
        x, y, z = canvas.coords(b)
        sdf = np.maximum(sdf, z - dome_z(x, y, builder.sx, builder.dome_shift) + 3.5)
        # left-lobe tip crosses the midline a little; curved medial border (no straight cut)
        sdf = np.maximum(sdf, x - np.float32(14 * builder.sx) + np.float32(0.004) * (y + np.float32(20)) ** 2)
        canvas.paint(b, sdf, hu["liver"], Tissue.LIVER, tex_sd=8, tex_flip=2, allowed=(Tissue.FAT_VISC,))
    # spleen
    canvas.ellipsoid(
        builder.scaled((96, 42, -160))[0],
        (26, 52, 44),
        hu["spleen"],
        Tissue.SPLEEN,
        rotation_from_axis(np.array([0.6, 0.8, 0.1])),
        tex_sd=8,
        allowed=(Tissue.FAT_VISC, Tissue.MUSCLE),
    )
    # stomach: wall then content
    sc = builder.scaled((52, -28, -160))[0]
    rot = rotation_from_axis(np.array([0.5, -0.3, -0.8]), 0.4)
    canvas.ellipsoid(
        sc, (52, 40, 34), hu["bowel_wall"], Tissue.STOMACH, rot, tex_sd=10, allowed=(Tissue.FAT_VISC,)
    )
    oral = builder.params.oral_contrast
    content = {
        "positive": hu["bowel_positive"],
        "neutral": hu["bowel_fluid"],
        "none": hu["bowel_fluid"] + 10,
    }[oral]
    canvas.ellipsoid(
        sc, (47, 35, 29), content, Tissue.BOWEL_CONTENT, rot, tex_sd=10, allowed=(Tissue.STOMACH,)
    )
    canvas.ellipsoid(
        sc + np.array([0, -22, 12]),
        (35, 14, 18),
        -1000.0,
        Tissue.BOWEL_CONTENT,
        allowed=(Tissue.BOWEL_CONTENT,),
    )
    # gallbladder
    canvas.ellipsoid(builder.scaled((-58, -52, -205))[0], (14, 13, 32), hu["fluid"], Tissue.FLUID, tex_sd=4)
    # kidneys with sinus fat and pelvis
    for s, zc in ((1, -238.0), (-1, -252.0)):
        kc = builder.scaled((s * 74, 32, zc))[0]
        krot = rotation_from_axis(np.array([-s * 0.15, 0.2, 1.0]), s * 0.5)
        canvas.ellipsoid(
            kc,
            (58, 27, 22),
            hu["kidney_cortex"],
            Tissue.KIDNEY,
            krot,
            tex_sd=15,
            allowed=(Tissue.FAT_VISC, Tissue.MUSCLE),
        )
        canvas.ellipsoid(
            kc, (50, 19, 15), hu["kidney_medulla"], Tissue.KIDNEY, krot, tex_sd=15, allowed=(Tissue.KIDNEY,)
        )
        hc = kc + np.array([-s * 16, -6, 0])
        canvas.ellipsoid(hc, (13, 9, 22), hu["fat"], Tissue.KIDNEY, allowed=(Tissue.KIDNEY,))
        canvas.ellipsoid(hc, (8, 5, 12), hu["urine"], Tissue.URETER, allowed=(Tissue.KIDNEY,))
    # pancreas (head to tail)
    pan = builder.scaled((-24, -16, -238), (-4, -22, -224), (28, -16, -214), (56, 0, -206), (80, 18, -196))
    builder.tube(
        "pancreas",
        pan,
        np.array([15.0, 11, 11, 10, 9]),
        hu["pancreas"],
        Tissue.PANCREAS,
        tex_sd=12,
        allowed=(Tissue.FAT_VISC,),
    )
    # adrenals (inverted Y)
    for s in (1, -1):
        top = builder.scaled((s * 34, 10, -182))[0]
        for leg in (builder.scaled((s * 42, 26, -206))[0], builder.scaled((s * 30, 28, -208))[0]):
            builder.canvas.tube(
                np.stack([top, leg]), 2.6, hu["adrenal"], Tissue.ADRENAL, allowed=(Tissue.FAT_VISC,)
            )
        builder.mimic("adrenal", top, 6)
    # abdominal aorta and iliac arteries
    builder.ztube(
        "abd_aorta",
        [-150, -200, -250, -296],
        [10, 9, 8, 6],
        [5, 4, 3, 2],
        10.5,
        10.5,
        hu["artery"],
        Tissue.ARTERY,
        tex_sd=10,
    )
    for s in (-1, 1):
        builder.tube(
            f"iliac_a_{'l' if s > 0 else 'r'}",
            builder.scaled(
                (6, 2, -292),
                (s * 30, 8, -330),
                (s * 48, 12, -360),
                (s * 66, -6, -420),
                (s * 76, -18, -470),
            ),
            np.array([7.0, 6.5, 6.0, 5.0, 4.5]),
            hu["artery"],
            Tissue.ARTERY,
        )
        builder.tube(
            None, builder.scaled((s * 48, 12, -360), (s * 42, 40, -400)), 3.5, hu["artery"], Tissue.ARTERY
        )
    # IVC (suprarenal, infrarenal with venous lag) and iliac veins
    ivc_mix = builder.params.ivc_mixing
    builder.ztube(
        "ivc_supra",
        [-100, -160, -245],
        [-24, -24, -25],
        [16, 10, 8],
        12.0,
        10.0,
        hu["ivc_supra"],
        Tissue.VEIN,
        tex_sd=15,
    )
    mixf = None
    b, sdf = canvas.ztube_sdf(
        np.array([-245.0, -300.0]),
        np.array([-25.0, -22.0]) * builder.sx,
        np.array([8.0, 10.0]) * builder.sy,
        np.array([12.0, 11.0]),
        np.array([10.0, 9.0]),
    )
    if sdf is not None:
        if ivc_mix:
            x, y, z = canvas.coords(b)
            mixf = np.float32(40.0) * np.sin(x / 3.0 + z / 9.0 + y / 5.0)
        canvas.paint(b, sdf, hu["ivc_infra"], Tissue.VEIN, tex_sd=20, hu_field=mixf)
    builder.anatomy.anchors["ivc_infra"] = Anchor(
        builder.scaled((-25, 8, -245), (-24, 9, -270), (-22, 10, -300)), np.full(3, 11.0)
    )
    for s in (-1, 1):
        builder.tube(
            f"iliac_v_{'l' if s > 0 else 'r'}",
            builder.scaled(
                (-18, 12, -298),
                (s * 34, 20, -340),
                (s * 48, 24, -368),
                (s * 62, 4, -425),
                (s * 70, -8, -470),
            ),
            np.array([8.0, 7.5, 7.0, 6.0, 5.5]),
            hu["ivc_infra"],
            Tissue.VEIN,
            tex_sd=15,
        )
    # portal vein, SMV, splenic vein, hepatic veins
    builder.tube(
        "portal",
        builder.scaled((0, -6, -224), (-24, -6, -202), (-44, -6, -182), (-70, -12, -170)),
        np.array([7.0, 7, 6.5, 5]),
        hu["portal"],
        Tissue.VEIN,
        tex_sd=10,
    )
    builder.tube(
        "smv",
        builder.scaled((0, -6, -224), (-6, -20, -250), (-10, -30, -290), (-14, -36, -325)),
        np.array([6.0, 5.5, 5, 4]),
        hu["portal"],
        Tissue.VEIN,
        tex_sd=10,
    )
    builder.tube(
        "splenic_v",
        builder.scaled((0, -6, -224), (30, 0, -214), (58, 14, -202), (82, 28, -182)),
        4.2,
        hu["portal"],
        Tissue.VEIN,
        tex_sd=10,
    )
    for k in ((-90, -20, -140), (-50, -50, -135), (0, -42, -128)):
        builder.tube(
            None,
            builder.scaled((-24, 14, -128), k),
            np.array([5.0, 2.0]),
            hu["ivc_supra"],
            Tissue.VEIN,
            allowed=(Tissue.LIVER,),
        )
    # SMA, celiac, renal vessels
    builder.tube(
        "sma",
        builder.scaled((8, -6, -204), (8, -22, -218), (6, -28, -250), (2, -32, -300)),
        3.6,
        hu["artery"],
        Tissue.ARTERY,
    )
    builder.tube(
        "celiac",
        builder.scaled((8, -6, -188), (8, -20, -190), (-30, -16, -188)),
        3.3,
        hu["artery"],
        Tissue.ARTERY,
    )
    builder.tube(
        None, builder.scaled((8, -20, -190), (40, 0, -192), (80, 20, -185)), 2.6, hu["artery"], Tissue.ARTERY
    )
    builder.tube(
        "l_renal_v",
        builder.scaled((52, 22, -240), (26, -4, -236), (8, -13, -234), (-22, 6, -238)),
        5.0,
        hu["ivc_supra"] * (0.6 + 0.4 * lag),
        Tissue.VEIN,
    )
    builder.tube(
        "r_renal_v", builder.scaled((-54, 24, -254), (-28, 10, -248)), 5.0, hu["ivc_supra"], Tissue.VEIN
    )
    for s in (-1, 1):
        builder.tube(
            None,
            builder.scaled((8, 5, -226), (s * 30, 16, -236), (s * 54, 26, -246)),
            3.0,
            hu["artery"],
            Tissue.ARTERY,
        )
    # crura hugging the aorta (T10–L2)
    for s in (-1, 1):
        builder.ztube(
            f"crus_{'l' if s > 0 else 'r'}",
            [-125, -170, -230],
            [9 + s * 15, 9 + s * 16, 8 + s * 15],
            [0, 6, 8],
            [4.5, 5, 4],
            [11, 10, 8],
            hu["crus"],
            Tissue.CRUS,
            tex_sd=8,
            allowed=(Tissue.FAT_VISC,),
        )
        builder.mimic("crus", builder.scaled((9 + s * 16, 6, -180))[0], 10)
    # psoas and quadratus lumborum
    for s in (-1, 1):
        builder.ztube(
            f"psoas_{'l' if s > 0 else 'r'}",
            [-195, -250, -310, -370, -420],
            [s * 30, s * 36, s * 44, s * 52, s * 58],
            [33, 30, 24, 14, 5],
            [5, 11, 16, 19, 17],
            [5, 11, 15, 17, 15],
            hu["muscle"],
            Tissue.MUSCLE,
            tex_sd=8,
            allowed=(Tissue.FAT_VISC,),
        )
        builder.ztube(
            None,
            [-215, -330],
            [s * 66, s * 70],
            [62, 60],
            13.0,
            10.0,
            hu["muscle"],
            Tissue.MUSCLE,
            tex_sd=8,
            allowed=(Tissue.FAT_VISC,),
        )
    # ureters and gonadal veins (thin tubes beside the psoas)
    for s in (-1, 1):
        u = builder.tube(
            f"ureter_{'l' if s > 0 else 'r'}",
            builder.scaled(
                (s * 50, 24, -252),
                (s * 40, 12, -300),
                (s * 44, 6, -360),
                (s * 52, 0, -400),
                (s * 22, -28, -438),
            ),
            2.6,
            hu["ureter"],
            Tissue.URETER,
            allowed=(Tissue.FAT_VISC,),
        )
        builder.mimic("ureter", u[len(u) // 2], 5)
        g = builder.tube(
            None,
            builder.scaled(
                (s * 34, 8, -240 if s > 0 else -250),
                (s * 36, -2, -300),
                (s * 44, -6, -360),
                (s * 56, -10, -420),
            ),
            2.0,
            hu["small_vein"],
            Tissue.VEIN_POOR,
            allowed=(Tissue.FAT_VISC,),
        )
        builder.mimic("gonadal_vein", g[len(g) // 3], 4)
    # bladder
    canvas.ellipsoid(
        builder.scaled((0, -44, -445))[0],
        (40, 32, 30),
        hu["muscle"],
        Tissue.BLADDER,
        tex_sd=6,
        allowed=(Tissue.FAT_VISC,),
    )
    canvas.ellipsoid(
        builder.scaled((0, -44, -445))[0],
        (36, 28, 26),
        hu["urine"],
        Tissue.BLADDER,
        tex_sd=4,
        allowed=(Tissue.BLADDER,),
    )
    # pelvic bones
    for s in (-1, 1):
        rot = rotation_from_axis(np.array([s * 0.45, 0.9, 0.0]), 0.0)
        for half, val, tis in (
            ((46, 8, 34), hu["cortical_bone"], Tissue.BONE_CORTEX),
            ((42, 4.5, 30), hu["trabecular_bone"], Tissue.BONE_TRAB),
        ):
            canvas.ellipsoid(builder.scaled((s * 96, 34, -395))[0], half, val, tis, rot, tex_sd=40)
        for r, val, tis in (
            (23.0, hu["cortical_bone"], Tissue.BONE_CORTEX),
            (20.5, hu["trabecular_bone"], Tissue.BONE_TRAB),
        ):
            canvas.ellipsoid(builder.scaled((s * 84, 4, -476))[0], (r, r, r), val, tis, tex_sd=40)
    srot = rotation_from_axis(np.array([0.0, 0.5, 1.0]))
    canvas.ellipsoid(
        builder.scaled((0, 52, -392))[0],
        (48, 40, 16),
        hu["cortical_bone"],
        Tissue.BONE_CORTEX,
        srot,
        tex_sd=40,
    )
    canvas.ellipsoid(
        builder.scaled((0, 52, -392))[0],
        (44, 36, 12),
        hu["trabecular_bone"],
        Tissue.BONE_TRAB,
        srot,
        tex_sd=40,
    )
    paint_bowel(builder)
    paint_mesenteric_vessels(builder)


def paint_bowel(builder: AnatomyBuilder) -> None:
    """Duodenum, small-bowel loops and colon: collapsed or filled (oral contrast, fluid, air, stool)."""
    canvas, hu, rng, params = builder.canvas, builder.hu, builder.rng, builder.params
    oral = params.oral_contrast
    collapsed_f = params.collapsed_bowel_fraction

    def content_hu() -> tuple[float, int]:
        r = rng.random()
        if r < 0.1:
            return -1000.0, Tissue.BOWEL_CONTENT
        if oral == "positive" and rng.random() < 0.75:
            return hu["bowel_positive"] * rng.uniform(0.6, 1.1), Tissue.BOWEL_CONTENT
        return hu["bowel_fluid"], Tissue.BOWEL_CONTENT

    allowed = (Tissue.FAT_VISC,)
    # duodenal C-loop around the pancreatic head
    duo = builder.scaled(
        (-22, -34, -204),
        (-46, -18, -220),
        (-48, -8, -252),
        (-28, -10, -268),
        (4, -6, -268),
        (26, -14, -258),
    )
    _paint_loop(builder, duo, rng.uniform(8, 11), collapsed_f, content_hu, allowed)
    # colon frame with stool
    colon = builder.scaled(
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
    if builder.in_z(float(pts[:, 2].min()), float(pts[:, 2].max())):
        r = rng.uniform(19, 25)
        canvas.tube(pts, r + 2.0, hu["bowel_wall"], Tissue.BOWEL_WALL, tex_sd=10, allowed=allowed)
        stool = np.float32(hu["stool"])
        for i in range(len(pts) - 1):
            b, sdf = canvas.segment_sdf(pts[i], pts[i + 1], r, r)
            if sdf is None or canvas.texture is None:
                continue
            t1 = canvas._tex(b.slices, 3)
            t2 = canvas._tex(b.slices, 1)
            # mottled stool: soft-tissue/fat mix with gas pockets where a second field is high
            mott = np.float32(70.0) * t1 + np.where(t2 > 1.6, np.float32(-750.0), np.float32(0.0))
            canvas.paint(b, sdf, float(stool), Tissue.STOOL, hu_field=mott, allowed=(Tissue.BOWEL_WALL,))
    # small bowel loops: self-avoiding-ish random walks in the central / anterior abdomen
    n = params.n_small_bowel
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
        w[:, 0] *= builder.sx
        w[:, 1] *= builder.sy
        _paint_loop(builder, w, rng.uniform(8, 14), collapsed_f, content_hu, allowed)


def _paint_loop(
    builder: AnatomyBuilder,
    knots: Points,
    r: float,
    collapsed_f: float,
    content_hu: Any,
    allowed: tuple[int, ...],
) -> None:
    """One bowel loop through ``knots``: wall, then collapsed wall or content from ``content_hu()``."""
    canvas, hu, rng = builder.canvas, builder.hu, builder.rng
    pts = smooth_path(rng, knots, n=3)
    if not builder.in_z(float(pts[:, 2].min()), float(pts[:, 2].max())):
        return
    if rng.random() < collapsed_f:
        rc = r * rng.uniform(0.45, 0.75)
        canvas.tube(
            pts, rc, hu["bowel_collapsed"], Tissue.BOWEL_COLLAPSED, tex_sd=15, tex_flip=3, allowed=allowed
        )
        for i in range(0, len(pts), 6):
            builder.mimic("collapsed_bowel", pts[i], 2 * rc)
    else:
        val, tis = content_hu()
        canvas.tube(pts, r, hu["bowel_wall"], Tissue.BOWEL_WALL, tex_sd=12, allowed=allowed)
        canvas.tube(pts, r - rng.uniform(1.8, 3.0), val, tis, tex_sd=8, allowed=(Tissue.BOWEL_WALL,))


def paint_mesenteric_vessels(builder: AnatomyBuilder) -> None:
    """Branches of SMV/SMA fanning into the mesentery; veins poorly enhanced (node mimics)."""
    hu, rng = builder.hu, builder.rng
    smv = builder.anatomy.anchors.get("smv")
    if smv is None:
        return
    n = builder.params.n_mesenteric_veins
    pts_all = []
    for i in range(n):
        start = smv.pts[int(rng.integers(len(smv.pts) // 4, len(smv.pts)))] + np.array(
            [rng.uniform(-4, 8), 0, 0]
        )
        d = np.array([rng.uniform(-0.9, 1.0), rng.uniform(-0.7, 0.2), rng.uniform(-0.8, 0.1)])
        d /= np.linalg.norm(d)
        length = rng.uniform(40, 100)
        k = np.stack([start + d * t + rng.normal(0, 5, 3) * (t > 0) for t in np.linspace(0, length, 5)])
        r0 = rng.uniform(2.0, 3.4)
        pts = smooth_path(rng, k, 4)
        vein = i % 3 != 2
        val = hu["small_vein"] if vein else hu["artery"] * 0.9
        builder.anatomy.deferred.append(
            DeferredVessel(
                pts, np.linspace(r0, 1.2, len(pts)), val, Tissue.VEIN_POOR if vein else Tissue.ARTERY, 12.0
            )
        )
        if vein:
            builder.mimic("mesenteric_vein", pts[len(pts) // 3], 2 * r0)
        pts_all.append(pts)
    if pts_all:
        allp = np.concatenate(pts_all)
        builder.anatomy.anchors["mesenteric"] = Anchor(allp, np.full(len(allp), 2.5))
