"""The body wall (skin, subcutaneous fat, muscle, visceral fat) and the skeleton (spine, ribs, sternum)."""

from __future__ import annotations

import numpy as np

from lymphcad.phantom.anatomy.builder import AnatomyBuilder
from lymphcad.phantom.tissue import Tissue


def paint_body_wall(builder: AnatomyBuilder) -> None:
    """Skin, subcutaneous fat, wall muscle and visceral fat as nested superellipse shells.

    The outline varies slowly with z, so its 2D distance map is computed once per distinct
    (half-axis pair) rounded to 0.25 mm and the shells are composited through a lookup (exactly
    the alpha-over of the four layers), which keeps the full-volume cost to a few passes.
    """
    canvas, body, hu = builder.canvas, builder.params.body, builder.hu
    zs = canvas.zs.astype(np.float64)
    wob = body.z_wobble
    ph = builder.rng.uniform(0, 2 * np.pi, 2)
    za = (
        1.0
        + wob * np.sin(zs / 90.0 + ph[0])
        + 0.06 * np.clip((zs - 60) / 60, 0, 1)
        - 0.04 * np.clip((-zs - 380) / 60, 0, 1)
    )
    zb = 1.0 + wob * np.sin(zs / 110.0 + ph[1]) - 0.05 * np.clip((zs - 40) / 80, 0, 1)
    a = np.round(body.half_lr * za * 4) / 4
    bb = np.round(body.half_ap * zb * 4) / 4
    keys = np.stack([a, bb], axis=1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.ravel()
    e = np.float32(body.exponent)
    x = canvas.xs[None, :]
    y = canvas.ys[:, None]
    r = np.sqrt(x * x + y * y)
    offs = np.cumsum([0.0, body.skin_mm, body.subcut_fat_mm, body.muscle_mm]).astype(np.float32)
    vals = np.array([hu["skin"], hu["fat_subcut"], hu["muscle"], hu["fat"]], dtype=np.float32)
    texs = np.array([4.0, 10.0, 8.0, 10.0], dtype=np.float32)
    tiss = np.array([Tissue.SKIN, Tissue.FAT_SUBCUT, Tissue.MUSCLE, Tissue.FAT_VISC], dtype=np.uint8)
    h = np.float32(canvas.h)
    maps_hu = np.empty((len(uniq), *r.shape), np.float32)
    maps_tx = np.empty_like(maps_hu)
    maps_ts = np.empty((len(uniq), *r.shape), np.uint8)
    builder.base2d = []
    for u, (aa, bv) in enumerate(uniq):
        q = (np.abs(x / np.float32(aa)) ** e + np.abs(y / np.float32(bv)) ** e) ** (1.0 / e) + np.float32(
            1e-6
        )
        base = (r * (1.0 - 1.0 / q)).astype(np.float32)
        builder.base2d.append(base)
        v = np.full(r.shape, -1000.0, np.float32)
        tx = np.zeros(r.shape, np.float32)
        ts = np.zeros(r.shape, np.uint8)
        for off, val, tsd, tid in zip(offs, vals, texs, tiss, strict=True):
            al = np.clip(0.5 - (base + off) / h, 0.0, 1.0)
            v += al * (val - v)
            tx += al * (tsd - tx)
            ts[al >= 0.5] = tid
        maps_hu[u], maps_tx[u], maps_ts[u] = v, tx, ts
    builder.base_index = inv
    tex = canvas.texture
    for k in range(canvas.shape[0]):
        u = inv[k]
        if tex is not None:
            np.multiply(maps_tx[u], tex[k], out=canvas.hu[k])
            canvas.hu[k] += maps_hu[u]
        else:
            canvas.hu[k] = maps_hu[u]
        canvas.tissue[k] = maps_ts[u]


def paint_skeleton(builder: AnatomyBuilder) -> None:
    """Spine (bodies, discs, arches, processes, canal), paraspinal muscles, ribs and sternum."""
    hu, rng = builder.hu, builder.rng
    ysp = 35.0
    builder.anatomy.y_spine = ysp * builder.sy
    zk = [200.0, 0.0, -130.0, -360.0]
    ak = [19.0, 20.0, 23.0, 25.0]
    bk = [15.0, 16.0, 18.0, 19.0]
    yk = [ysp + 4, ysp, ysp - 2, ysp + 6]
    # paraspinal muscles
    for s in (-1, 1):
        builder.ztube(
            None,
            [200, -120, -260, -360],
            [s * 30, s * 30, s * 34, s * 36],
            [78, 78, 76, 80],
            [18, 20, 24, 20],
            [15, 17, 19, 17],
            hu["muscle"],
            Tissue.MUSCLE,
            tex_sd=8,
            tex_flip=3,
        )
    builder.ztube("spine", zk, [0, 0, 0, 0], yk, ak, bk, hu["cortical_bone"], Tissue.BONE_CORTEX, tex_sd=60)
    builder.ztube(
        None,
        zk,
        [0, 0, 0, 0],
        yk,
        np.asarray(ak) - 2.0,
        np.asarray(bk) - 2.0,
        hu["trabecular_bone"],
        Tissue.BONE_TRAB,
        tex_sd=35,
    )
    # discs every ~28 mm
    zd = float(rng.uniform(-14, 14))
    discs = np.arange(zd - 28 * 20, 220, 28.0 + rng.uniform(-2, 3))
    for z in discs:
        if not builder.in_z(z - 5, z + 5) or z < -360:
            continue
        a = float(np.interp(z, zk[::-1], ak[::-1]))
        b = float(np.interp(z, zk[::-1], bk[::-1]))
        y = float(np.interp(z, zk[::-1], yk[::-1]))
        builder.ztube(
            None, [z - 4.5, z + 4.5], [0, 0], [y, y], a - 0.3, b - 0.3, hu["disc"], Tissue.DISC, tex_sd=8
        )
    # posterior arch, canal, spinous and transverse processes
    builder.ztube(
        None,
        [200, -360],
        [0, 0],
        [ysp + 27, ysp + 27],
        13.0,
        12.0,
        hu["cortical_bone"],
        Tissue.BONE_CORTEX,
        tex_sd=60,
    )
    for z in discs:
        if not builder.in_z(z, z + 22):
            continue
        builder.ztube(
            None,
            [z + 4, z + 22],
            [0, 0],
            [ysp + 44, ysp + 44],
            4.0,
            11.0,
            hu["cortical_bone"],
            Tissue.BONE_CORTEX,
        )
        for s in (-1, 1):
            builder.ztube(
                None,
                [z + 8, z + 18],
                [s * 24, s * 24],
                [ysp + 24, ysp + 24],
                11.0,
                4.5,
                hu["cortical_bone"],
                Tissue.BONE_CORTEX,
            )
    builder.ztube(None, [200, -360], [0, 0], [ysp + 27, ysp + 27], 8.5, 8.0, hu["csf"], Tissue.CSF, tex_sd=4)
    # ribs (chest and upper abdomen)
    ain, bin_ = 140.0, 95.0
    mus = builder.params.body.muscle_mm
    for zr in np.arange(120.0 + rng.uniform(-6, 6), -180.0, -24.0):
        for s in (-1, 1):
            th = np.linspace(0.35, 2.55 if zr > -90 else 1.9, 10)
            rx = (ain + mus * 0.3) * np.sin(th) * s
            ry = (bin_ + mus * 0.3) * np.cos(th)
            rz = zr - 85.0 * (th - 0.35) / 2.2
            pts = builder.scaled(
                *[(float(a), float(b), float(c)) for a, b, c in zip(rx, ry, rz, strict=True)]
            )
            if not builder.in_z(float(pts[:, 2].min()), float(pts[:, 2].max())):
                continue
            builder.canvas.tube(pts, 5.5, hu["cortical_bone"], Tissue.BONE_CORTEX)
            builder.canvas.tube(pts, 3.8, hu["trabecular_bone"], Tissue.BONE_TRAB)
    # sternum
    builder.ztube(None, [-95, 100], [0, 0], [-88, -88], 14.0, 6.0, hu["cortical_bone"], Tissue.BONE_CORTEX)
    builder.ztube(
        None, [-95, 100], [0, 0], [-88, -88], 12.0, 4.0, hu["trabecular_bone"], Tissue.BONE_TRAB, tex_sd=30
    )
