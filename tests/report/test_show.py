"""Pictures: radiological orientation for any axis-aligned grid, and a PNG from a cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lymphcad.geometry import Geometry
from lymphcad.report.show import canonical, render_rows
from png_checks import GREEN, RED, pixels_of, read_png


def _world_field(geom: Geometry) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in geom.shape_zyx], indexing="ij")
    w = geom.zyx_to_world(np.stack([zz.ravel(), yy.ravel(), xx.ravel()], 1).astype(float))
    # a value that encodes the world position (unique per voxel)
    return (np.round(w[:, 0]) * 1_000_000 + np.round(w[:, 1]) * 1000 + np.round(w[:, 2])).reshape(
        geom.shape_zyx
    )


def test_canonical_is_lps_increasing_for_flipped_and_permuted_grids() -> None:
    lps = Geometry((4, 5, 6), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    ref, start, sp = canonical(_world_field(lps), lps)
    # RAS-stored (i → patient right, j → anterior), same voxel centres
    ras = Geometry((4, 5, 6), (1.0, 1.0, 1.0), (5.0, 4.0, 0.0), np.diag([-1.0, -1.0, 1.0]))
    got, start2, _ = canonical(_world_field(ras), ras)
    assert np.array_equal(got, ref) and np.allclose(start, start2)
    # slices running head → feet and i/j swapped
    d = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    perm = Geometry((4, 6, 5), (1.0, 1.0, 1.0), (0.0, 0.0, 3.0), d)
    got, start3, sp3 = canonical(_world_field(perm), perm)
    assert np.array_equal(got, ref) and np.allclose(start3, start) and np.allclose(sp3, sp)
    # axial display: row 0 = most anterior (smallest y), column 0 = patient right (smallest x)
    assert ref[0, 0, 0] < ref[0, 0, 1] and ref[0, 0, 0] < ref[0, 1, 0]


def test_render_png(tmp_path: Path) -> None:
    g = Geometry((20, 64, 64), (2.0, 1.5, 1.5), (-48.0, -48.0, -20.0))
    img = np.full(g.shape_zyx, -100, np.int16)
    img[8:12, 30:36, 10:16] = 60
    lab = np.zeros(g.shape_zyx, np.uint16)
    lab[8:12, 30:36, 10:16] = 1
    p = g.zyx_to_world([10.0, 33.0, 13.0])
    out = render_rows(img, g, lab, [p], ["node"], [(p, 0.9, 10.0)], tmp_path / "x.png")
    rgb = read_png(out)
    assert rgb.shape == (369, 1080, 3)  # one row of three panels, 12 × 4.1 inches at 90 dpi
    # the node's outline (green) and the detection's circle (red) are drawn; without them neither colour is
    assert pixels_of(rgb, GREEN) > 50 and pixels_of(rgb, RED) > 50
    bare = read_png(render_rows(img, g, None, [p], ["node"], [], tmp_path / "bare.png"))
    assert pixels_of(bare, GREEN) == 0 and pixels_of(bare, RED) == 0
