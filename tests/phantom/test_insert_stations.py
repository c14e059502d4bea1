"""Insertion where nodes live (issue 12): stations on a real chest and abdomen, never in forbidden tissue,
a clear failure when the asked minimum does not fit, both image-formation models keep the noise level.

Backgrounds are crops of the real CTs in ../shared/data/real-ct (never holdout/): the contrast chest
cmb-crc/MSB-01068-chest (mediastinum around the carina) and the contrast abdomen crlm-ct/CRLM-CT-1004.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from lymphcad.cli import main
from lymphcad.cohort import open_cohort
from lymphcad.geometry import CTVolume
from lymphcad.io.nifti import read_nifti, write_nifti
from lymphcad.io.reader import read_ct
from lymphcad.phantom.background import FORBIDDEN, Tissue
from lymphcad.phantom.formation import noise_level_ratio, robust_sd
from lymphcad.phantom.insert import (
    BackgroundAnalysis,
    InsertionResult,
    PlacementError,
    insert_cohort,
    insert_nodes,
)
from lymphcad.phantom.nodemodel import Formation
from lymphcad.phantom.truthrule import RULES, TruthClass
from real_crops import CHEST, crop

pytestmark = [pytest.mark.real, pytest.mark.slow]


def _check_never_forbidden(vol: CTVolume, an: BackgroundAnalysis, res: InsertionResult) -> None:
    """Nodes lie in fat of the tissue map as the anatomy lies after any mass-effect push (the keep-size
    placement pushes the large nodes that find no fat deep enough; the map before would show what moved)."""
    inside = res.all_nodes > 0
    tissue = an.tissue if res.tissue is None else res.tissue
    assert inside.any()
    assert not np.isin(tissue[inside], FORBIDDEN).any(), "a node overlaps lumen, bone, lung, airway or organ"
    # the node took the place of fat: before insertion, the voxels were fat-like HU or thin septa
    assert np.mean(tissue[inside] == Tissue.FAT_VISC) >= 0.6


def test_chest_gets_mediastinal_stations(chest: tuple[CTVolume, BackgroundAnalysis]) -> None:
    vol, an = chest
    assert an.region == "mediastinal"
    assert an.landmarks.carina_k is not None
    stations: dict[str, int] = {}
    for seed in range(1):
        res = insert_nodes(vol, 8, np.random.default_rng(seed), region="auto", analysis=an)
        assert len(res.nodes) >= 6
        _check_never_forbidden(vol, an, res)
        for n in res.nodes:
            stations[n.station] = stations.get(n.station, 0) + 1
            assert n.region == "mediastinal"
            # ground truth by the mediastinal rule of the collection's marks
            assert (n.truth is TruthClass.POSITIVE) == (n.sad_mm >= RULES["mediastinal"].positive_min_mm)
            assert (n.gt_node_id > 0) == (n.truth is TruthClass.POSITIVE)
            # inside the chest, between the lungs: the node's centre is closer to the trachea than 80 mm
            assert n.fat_share >= 0.6
    # not only anterior fat: nodes at ≥ 3 stations, among them one of the deep mediastinal ones
    assert len(stations) >= 3, stations
    assert set(stations) & {
        "paratracheal_r",
        "paratracheal_l",
        "subcarinal",
        "ap_window",
        "hilar_r",
        "hilar_l",
    }


def test_abdomen_never_in_forbidden_tissue(abdomen: tuple[CTVolume, BackgroundAnalysis]) -> None:
    vol, an = abdomen
    assert an.region == "abdominal"
    res = insert_nodes(vol, 5, np.random.default_rng(3), region="abdominal", analysis=an)
    assert len(res.nodes) >= 3
    _check_never_forbidden(vol, an, res)
    assert {n.station for n in res.nodes} <= {"para_aortic", "paracaval", "mesenteric", "iliac"}
    assert all(n.region == "abdominal" for n in res.nodes)
    # untouched farther than 8 mm in-plane (the edge blur's reach) from the nodes placed in fat, and beyond
    # the push of those placed by mass effect (it fades out at 4 half-axes: within 2 long axes + 8 mm)
    from scipy import ndimage

    reach = round(8.0 / vol.geometry.spacing_zyx[2])
    far = ~ndimage.binary_dilation(res.all_nodes > 0, structure=np.ones((3, 3, 3), bool), iterations=reach)
    pushed = [n for n in res.nodes if n.placement == "mass_effect"]
    if pushed:
        dist = ndimage.distance_transform_edt(
            ~np.isin(res.all_nodes, [n.id for n in pushed]), sampling=vol.geometry.spacing_zyx
        )
        far &= dist > 2.0 * max(n.lad_mm for n in pushed) + 8.0
    assert far.mean() > 0.5  # most of the volume is checked
    assert np.array_equal(res.image[far], vol.array[far])


@pytest.mark.parametrize("formation", [Formation.ADDITIVE, Formation.BLEND])
def test_both_formation_models_keep_the_noise_level(
    chest: tuple[CTVolume, BackgroundAnalysis], formation: Formation
) -> None:
    """Pooled over nodes, the high-pass noise SD inside node cores stays within 10 % of the background's.

    Additive keeps the background's own noise: the reference is the same core voxels before insertion.
    Blend replaces it with re-synthesised noise: the reference is homogeneous fat / soft tissue around the node
    (in the node's slices) before insertion — the noise the synthesis must match.
    """
    vol, an = chest
    res = insert_nodes(
        vol, 8, np.random.default_rng(11), formations=(formation,), analysis=an, p_positive=1.0
    )
    assert res.nodes and all(n.spec.formation is formation for n in res.nodes)
    checks = [noise_level_ratio(vol.array, res.image, an.tissue, res.all_nodes == n.id) for n in res.nodes]
    inside = np.concatenate([c.inside_values for c in checks])
    ref = np.concatenate(
        [(c.core_before if formation is Formation.ADDITIVE else c.around_values) for c in checks]
    )
    assert inside.size > 200
    ratio = robust_sd(inside) / robust_sd(ref)
    assert 0.9 <= ratio <= 1.1, ratio


def test_failure_to_place_is_a_clear_error(
    real_ct_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """40 mm of mediastinum cannot hold 100 nodes (it holds about 30, most by mass effect): one line naming the file and the shortfall, exit code 1;
    a region without stations and ``--cases 0`` are refused too."""
    vol = crop(read_ct(real_ct_dir / CHEST), (40, 95, 90), (16, 330, 340))
    bg = tmp_path / "chest_crop.nii.gz"
    write_nifti(bg, vol.array, vol.geometry)
    with pytest.raises(PlacementError, match="placed only"):
        insert_cohort(bg, tmp_path / "c", 1, (100, 100), seed=0, region="mediastinal")
    assert not (tmp_path / "c" / "dataset.json").exists()
    capsys.readouterr()
    assert (
        main(["insert", "--background", str(bg), "--out", str(tmp_path / "d"), "--nodes", "100", "100"]) == 1
    )
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "placed only" in err[0] and "chest_crop.nii.gz" in err[0], err
    assert not (tmp_path / "d" / "dataset.json").exists()
    assert (
        main(["insert", "--background", str(bg), "--out", str(tmp_path / "e"), "--region", "abdominal"]) == 1
    )
    assert "no abdominal node station" in capsys.readouterr().err
    assert main(["insert", "--background", str(bg), "--out", str(tmp_path / "f"), "--cases", "0"]) == 2


def test_cohort_rows_ignore_and_determinism(
    real_ct_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Per case: nodes placed and annotated are printed; GT/ignore/negative follow the region's rule; the
    node table records the image-formation model; the same seed gives the same bytes."""
    vol = crop(read_ct(real_ct_dir / CHEST), (30, 95, 90), (40, 330, 340))
    bg = tmp_path / "chest_crop.nii.gz"
    write_nifti(bg, vol.array, vol.geometry)
    args = [
        "insert",
        "--background",
        str(bg),
        "--cases",
        "2",
        "--nodes",
        "3",
        "5",
        "--seed",
        "5",
        "--p-positive",
        "0.5",
    ]
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "placed" in ln]
    assert len(lines) == 2 and all("annotated" in ln and "stations:" in ln for ln in lines), lines
    c = open_cohort(tmp_path / "a")
    rule = RULES["mediastinal"]
    for case in c.cases:
        rows = list(csv.DictReader((c.root / "extra" / f"{case}_nodes.csv").open(encoding="utf-8")))
        assert 3 <= len(rows) <= 5
        for row in rows:
            assert row["truth"] == rule.classify(float(row["short_axis_mm"])).value
            assert row["formation"] in ("additive", "blend")
            assert row["station"] and row["region"] == "mediastinal"
        pos = [row for row in rows if row["truth"] == "positive"]
        assert [a.node_id for a in c.annotations_for(case)] == list(range(1, len(pos) + 1))
        ign = [row for row in rows if row["truth"] == "ignore"]
        assert len(c.ignore_for(case)) == len(ign)
        assert all(rule.ignore_min_mm <= float(row["short_axis_mm"]) < rule.positive_min_mm for row in ign)
    # resumed: the finished cases are kept (not rewritten) and the cohort files come out the same
    before = {f.name: f.read_bytes() for f in (tmp_path / "a").glob("*.*")}
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a" / "images").iterdir()}
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a" / "images").iterdir()} == stamp
    assert {f.name: f.read_bytes() for f in (tmp_path / "a").glob("*.*")} == before
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for case in c.cases:
        a = read_nifti(tmp_path / "a" / "images" / f"{case}.nii.gz").array
        b = read_nifti(tmp_path / "b" / "images" / f"{case}.nii.gz").array
        assert np.array_equal(a, b)
