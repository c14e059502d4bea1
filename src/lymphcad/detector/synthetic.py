"""Tiny synthetic volumes with known nodes, for the detector's tests and smoke runs (not the phantom).

A "body" of fat-like noise (−100 HU, σ 15 HU) in air, with soft-tissue spheres (60 HU) at known world
positions, optional bright "vessels" (170 HU tubes) as distractors. Any spacing, origin and direction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from lymphcad.citations import SYNTHETIC_LICENSE
from lymphcad.cohort import Annotation, CohortWriter, DatasetInfo
from lymphcad.geometry import CTVolume, Geometry, hu_to_int16


def sphere_volume(
    geometry: Geometry,
    centers_xyz: ArrayLike,
    diameters_mm: Sequence[float],
    *,
    seed: int = 0,
    noise_hu: float = 15.0,
    node_hu: float = 60.0,
    background_hu: float = -100.0,
    vessels: int = 0,
) -> tuple[CTVolume, NDArray[np.uint16]]:
    """A CT with soft-tissue spheres at world ``centers_xyz`` and its instance mask (ids 1..N)."""
    rng = np.random.default_rng(seed)
    shape = geometry.shape_zyx
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    world = geometry.zyx_to_world(idx.astype(np.float64)).reshape(*shape, 3)
    hu = np.full(shape, background_hu, dtype=np.float64)
    labels = np.zeros(shape, dtype=np.uint16)
    for v in range(vessels):
        # a bright tube along a random direction through a random point
        p0 = world.reshape(-1, 3)[rng.integers(world.shape[0] * world.shape[1] * world.shape[2])]
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        rel = world - p0
        dist = np.linalg.norm(rel - (rel @ d)[..., None] * d, axis=-1)
        hu[dist < rng.uniform(2.5, 5.0)] = 170.0
        del v
    centers = np.asarray(centers_xyz, dtype=np.float64).reshape(-1, 3)
    for i, (c, diam) in enumerate(zip(centers, diameters_mm, strict=True), start=1):
        dist = np.linalg.norm(world - c, axis=-1)
        inside = dist <= diam / 2.0
        hu[inside] = node_hu
        labels[inside] = i
    hu = ndimage.gaussian_filter(hu, sigma=0.6)
    hu += rng.normal(0.0, noise_hu, size=shape)
    return CTVolume(hu_to_int16(hu), geometry), labels


def write_sphere_cohort(
    root: str | Path,
    *,
    n_cases: int = 4,
    seed: int = 0,
    shape_zyx: tuple[int, int, int] = (40, 48, 48),
    spacing_zyx: tuple[float, float, float] = (2.0, 1.6, 1.6),
    nodes_per_case: int = 2,
    vessels: int = 1,
    direction: ArrayLike | None = None,
) -> Path:
    """Write a small cohort of sphere volumes (formats.md §2) and a one-fold splits.json (last case = val)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    writer = CohortWriter(root)
    anns: list[Annotation] = []
    cases = []
    for n in range(n_cases):
        case = f"sphere_{n:03d}"
        cases.append(case)
        geom = Geometry(
            shape_zyx,
            spacing_zyx,
            (-40.0, -30.0, 100.0),
            np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64),
        )
        lo, hi = geom.world_bounds()
        centers: list[NDArray[np.float64]] = []
        diams: list[float] = []
        while len(centers) < nodes_per_case:
            d = float(rng.uniform(10.0, 18.0))
            c = lo + d / 2 + 6 + rng.uniform(0, 1, 3) * (hi - lo - d - 12)
            if all(np.linalg.norm(c - o) > (d + od) / 2 + 4 for o, od in zip(centers, diams, strict=True)):
                centers.append(c)
                diams.append(d)
        vol, labels = sphere_volume(geom, centers, diams, seed=seed * 1000 + n, vessels=vessels)
        writer.write_image(case, vol)
        writer.write_label(case, labels, geom)
        for i, (c, d) in enumerate(zip(centers, diams, strict=True), start=1):
            anns.append(Annotation(case, i, (float(c[0]), float(c[1]), float(c[2])), d, d, "mediastinal", i))
    info = DatasetInfo(
        name="spheres",
        description="synthetic spheres for detector tests",
        cases=cases,
        case_regions={c: "mediastinal" for c in cases},
        license=SYNTHETIC_LICENSE,
        citation=[],
        source=f"lymphcad.detector.synthetic spheres, seed {seed}",
    )
    writer.finish(info, anns)
    splits = {
        "format_version": "1.1",
        "scheme": "kfold",
        "seed": seed,
        "test": [],
        "folds": [{"train": sorted(cases[:-1]), "val": [cases[-1]]}],
    }
    (root / "splits.json").write_text(json.dumps(splits, indent=2) + "\n", encoding="utf-8")
    return root
