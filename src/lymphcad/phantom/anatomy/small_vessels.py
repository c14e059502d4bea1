"""Small vessels winding through visceral fat in both regions, painted after the nodes."""

from __future__ import annotations

import numpy as np

from lymphcad.phantom.anatomy.builder import Anatomy, AnatomyBuilder, DeferredVessel
from lymphcad.phantom.canvas import Canvas, smooth_path
from lymphcad.phantom.tissue import Tissue


def paint_small_vessels(builder: AnatomyBuilder) -> None:
    """Small vessels (1.5–3.5 mm radius) winding through visceral fat: the commonest node mimic in
    axial slices (round 3–7 mm sections at 80–170 HU). Veins are poorly enhanced; count ∝ mimic density."""
    hu, rng = builder.hu, builder.rng
    dens = builder.params.mimic_density
    boxes = (
        ("med", np.array([-50.0, -80.0, -120.0]), np.array([50.0, 30.0, 100.0]), round(34 * dens), 0.35),
        ("abd", np.array([-95.0, -90.0, -430.0]), np.array([95.0, 45.0, -150.0]), round(40 * dens), 0.6),
    )
    for name, lo, hi, n, vert in boxes:
        if not builder.in_z(float(lo[2]), float(hi[2])):
            continue
        for _ in range(n):
            start = lo + rng.random(3) * (hi - lo)
            d = rng.normal(0, 1, 3) * np.array([1.0, 1.0, 1.0 + 3 * vert])
            d /= np.linalg.norm(d)
            length = rng.uniform(30, 110)
            k = np.stack([start + d * t + rng.normal(0, 4, 3) * (t > 0) for t in np.linspace(0, length, 4)])
            k[:, 0] *= builder.sx
            k[:, 1] *= builder.sy
            if not builder.in_z(float(k[:, 2].min()), float(k[:, 2].max())):
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
            builder.anatomy.deferred.append(
                DeferredVessel(
                    pts,
                    np.linspace(r, r * rng.uniform(0.5, 1.0), len(pts)),
                    val,
                    Tissue.VEIN_POOR if vein else Tissue.ARTERY,
                    10.0,
                )
            )
            if vein:
                builder.mimic(f"small_vein_{name}", pts[len(pts) // 2], 2 * r)


def paint_deferred(canvas: Canvas, anatomy: Anatomy) -> None:
    """Paint the deferred small vessels (only into visceral fat, so they pass around nodes)."""
    for vessel in anatomy.deferred:
        canvas.tube(
            vessel.points,
            vessel.radii_mm,
            vessel.hu,
            vessel.tissue,
            tex_sd=vessel.texture_sd,
            allowed=(Tissue.FAT_VISC,),
        )
