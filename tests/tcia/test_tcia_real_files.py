"""The TCIA reader on the collection's real released files (../shared/data/ct-lymph-nodes): all 176 patients,
and ABD_LYMPH_001's marks placed through the geometry of its two real CT slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from lymphcad.cohort import Annotation, read_annotations, write_annotations
from lymphcad.geometry import Geometry
from lymphcad.io.reader import read_ct
from lymphcad.tcia.archives import Source, read_candidates, read_centroids
from lymphcad.tcia.prepare_case import _sizes, check_centroids, region_of


@pytest.fixture(scope="module")
def released(shared_dir: Path) -> Path:
    root = shared_dir / "data" / "ct-lymph-nodes"
    if not (root / "MED_ABD_LYMPH_ANNOTATIONS").is_dir():
        pytest.skip(f"the collection's released files are not at {root}")
    return root


def test_all_176_patients_983_marks(released: Path) -> None:
    with Source.open(released / "MED_ABD_LYMPH_ANNOTATIONS") as src:
        centroids = read_centroids(src)
    assert len(centroids) == 176
    abd = [p for p in centroids if p.startswith("ABD_")]
    med = [p for p in centroids if p.startswith("MED_")]
    assert len(abd) == 86 and len(med) == 90
    assert sum(centroids[p].n_nodes for p in abd) == 595
    assert sum(centroids[p].n_nodes for p in med) == 388
    for pc in centroids.values():  # every patient has all three files, row i = node i
        assert pc.indices is not None and pc.points is not None and pc.sizes is not None
        assert pc.indices.shape[0] == pc.points.shape[0] == len(pc.sizes)
    # sizes: ABD short + long axis, MED short axis only
    assert all(len(row) == 2 for p in abd for row in centroids[p].sizes or [])
    assert all(len(row) == 1 for p in med for row in centroids[p].sizes or [])


def test_unknown_size_zero_stays_unknown(released: Path, tmp_path: Path) -> None:
    with Source.open(released / "MED_ABD_LYMPH_ANNOTATIONS") as src:
        centroids = read_centroids(src)
    zeros = [(p, n) for p, pc in centroids.items() for n, row in enumerate(pc.sizes or []) if 0.0 in row]
    assert zeros == [("MED_LYMPH_010", 0)]
    pc = centroids["MED_LYMPH_010"]
    assert _sizes(pc, 0, region_of("MED_LYMPH_010")) == (None, None, None)
    short, long_, _ = _sizes(centroids["MED_LYMPH_011"], 0, "mediastinal")  # a known size stays a size
    assert short is not None and short > 0 and long_ is None
    # and it stays unknown (an empty cell, not 0) through annotations.csv
    p = pc.points
    assert p is not None
    write_annotations(
        tmp_path / "a.csv", [Annotation("MED_LYMPH_010", 1, tuple(p[0]), None, None, "mediastinal", None)]
    )
    assert "MED_LYMPH_010,1," in (tmp_path / "a.csv").read_text()
    (back,) = read_annotations(tmp_path / "a.csv")
    assert back.short_axis_mm is None and back.long_axis_mm is None


def test_candidates_1578_positive_6692_negative(released: Path) -> None:
    with Source.open(released / "MED_ABD_LYMPH_CANDIDATES") as src:
        cands = read_candidates(src)
    assert len(cands) == 176
    assert sum(c["pos"].shape[0] for c in cands.values()) == 1578
    assert sum(c["neg"].shape[0] for c in cands.values()) == 6692


def test_abd_lymph_001_marks_through_its_real_slices(released: Path) -> None:
    slices = sorted((released / "slices").glob("ABD_LYMPH_001_*.dcm"))
    assert len(slices) == 2
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in slices]
    (n0, n1) = (int(h.InstanceNumber) for h in headers)
    g0, g1 = (read_ct(f).geometry for f in slices)  # lymphcad's own reader on each real slice
    for h, g in zip(headers, (g0, g1), strict=True):
        np.testing.assert_allclose(g.origin_xyz, [float(v) for v in h.ImagePositionPatient], atol=1e-6)
    # the series' geometry from the two slices: k = InstanceNumber - 1, uniform step along the normal
    normal = g0.direction[:, 2]
    step = float(np.dot(np.subtract(g1.origin_xyz, g0.origin_xyz), normal)) / (n1 - n0)
    assert step == pytest.approx(1.0, abs=1e-6)
    origin = np.asarray(g0.origin_xyz) - (n0 - 1) * step * normal
    series = Geometry(
        (660, g0.shape_zyx[1], g0.shape_zyx[2]), (step, *g0.spacing_zyx[1:]), origin, g0.direction
    )
    # each real slice sits at k = InstanceNumber - 1 of that grid
    for n, g in ((n0, g0), (n1, g1)):
        np.testing.assert_allclose(series.world_to_index(g.origin_xyz), [0.0, 0.0, n - 1], atol=1e-6)
    with Source.open(released / "MED_ABD_LYMPH_ANNOTATIONS") as src:
        pc = read_centroids(src)["ABD_LYMPH_001"]
    world, checks = check_centroids(pc, series)
    assert checks["index_base"] == "0-based" and checks["index_offset_consistent"]
    assert pc.points is not None and world.shape == (4, 3)
    np.testing.assert_allclose(world, pc.points, atol=0.01)
    assert checks["max_disagreement_mm"] < 0.01
