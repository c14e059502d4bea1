"""Node insertion into real CT backgrounds: placement never in forbidden tissue, contrast and noise kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lymphcad.errors import UsageError
from lymphcad.io.nifti import read_nifti, read_nifti_array
from lymphcad.phantom.insert import FORBIDDEN, classify_background, insert_cohort, insert_nodes

pytestmark = pytest.mark.real


def test_never_in_structures_of_a_real_tissue_map(real_ct_dir: Path) -> None:
    """TotalSegmentator's own multilabel map (organs, vessels, bones, muscles) of the same CT: no overlap."""
    ts = real_ct_dir / "totalsegmentator"
    vol = read_nifti(ts / "example_ct_sm.nii.gz")
    seg, _ = read_nifti_array(ts / "example_seg.nii.gz")
    placed = 0
    for seed in range(3):
        _, lab, recs, tis = insert_nodes(vol, 5, np.random.default_rng(seed))
        m = lab > 0
        placed += sum("id" in r for r in recs)
        # a node may abut a structure (its partial-volume rim shares a 3 mm voxel with the structure's border)
        # but never lies in it: its interior (the mask eroded by one voxel) never overlaps a structure
        for r in recs:
            if "id" in r:
                node = lab == r["id"]
                assert not np.any(seg[ndimage.binary_erosion(node)] > 0), "a node lies inside a structure"
                assert np.count_nonzero(seg[node]) <= 0.1 * node.sum(), "a node overlaps a structure"
        assert not np.isin(tis[m], FORBIDDEN).any()
        # never at the volume border
        zz, yy, xx = np.nonzero(m)
        assert zz.min() > 0 and yy.min() > 0 and xx.min() > 0
        assert zz.max() < m.shape[0] - 1 and yy.max() < m.shape[1] - 1 and xx.max() < m.shape[2] - 1
    assert placed >= 6


def test_contrast_and_noise_match_surroundings(real_ct_dir: Path) -> None:
    vol = read_nifti(real_ct_dir / "totalsegmentator" / "example_ct.nii.gz")
    tis = classify_background(vol.array, vol.geometry.spacing_zyx)
    img, lab, recs, _ = insert_nodes(vol, 8, np.random.default_rng(4), tissue=tis)
    good = [r for r in recs if "id" in r]
    assert len(good) >= 3
    bg = vol.array.astype(float)
    out = img.astype(float)
    diffs, ratios = [], []
    hp_o = out - ndimage.uniform_filter(out, 3)
    hp_b = bg - ndimage.uniform_filter(bg, 3)
    for r in good:
        if r["core_n"] >= 3:  # voxels fully inside the node
            diffs.append(
                (r["core_mean_hu"] - r["target_hu"])
                / ((r["noise_sd_background"] + 7.0) / np.sqrt(r["core_n"]))
            )
        m = lab == r["id"]
        ratios.append(hp_o[m].std() / max(hp_b[m].std(), 1e-6))
    assert diffs, "no node large enough to have a core"
    # full-coverage voxels reach the node's target HU (within 3 standard errors of noise + texture, + PSF margin)
    assert all(abs(d) < 4.0 for d in diffs), diffs
    # the background's noise is kept: high-pass SD inside the node ≈ that of the same voxels before
    assert 0.7 < float(np.median(ratios)) < 1.6
    # untouched away from the nodes
    far = ~ndimage.binary_dilation(lab > 0, iterations=4)
    assert np.array_equal(img[far], vol.array[far])


def test_cohort_carries_licence_and_refuses_holdout(real_ct_dir: Path, tmp_path: Path) -> None:
    bg = real_ct_dir / "totalsegmentator" / "example_ct_sm.nii.gz"
    info = insert_cohort(bg, tmp_path / "c", 1, (2, 3), seed=0)
    assert "Apache-2.0" in info.license and info.citation
    from lymphcad.cohort import open_cohort

    c = open_cohort(tmp_path / "c")
    for a in c.annotations:
        lab, geom = c.read_label(a.case_id)  # type: ignore[misc]
        assert lab[tuple(geom.world_to_voxel_zyx(a.center_xyz))] == a.label_id
    hold = real_ct_dir / "holdout"
    files = sorted(hold.rglob("*.nii.gz"))
    if files:
        with pytest.raises(UsageError):
            insert_cohort(files[0], tmp_path / "h", 1, (1, 1), seed=0)


def test_ground_truth_is_the_enlarged_nodes_and_extra_has_all(real_ct_dir: Path, tmp_path: Path) -> None:
    """Like the phantom: GT = measured short axis ≥ 10 mm; smaller inserted nodes only in the full truth."""
    import csv

    from lymphcad.cohort import open_cohort
    from lymphcad.io.nifti import read_nifti_array

    bg = real_ct_dir / "totalsegmentator" / "example_ct_sm.nii.gz"
    insert_cohort(bg, tmp_path / "c", 3, (4, 6), seed=3)
    c = open_cohort(tmp_path / "c")
    n_small = 0
    for case in c.cases:
        rows = list(csv.DictReader((c.root / "extra" / f"{case}_nodes.csv").open(encoding="utf-8")))
        assert [int(r["id"]) for r in rows] == list(range(1, len(rows) + 1))
        anns = c.annotations_for(case)
        big = [r for r in rows if r["enlarged"] == "1"]
        assert all(float(r["short_axis_mm"]) >= 10.0 for r in big)
        assert all(float(r["short_axis_mm"]) < 10.0 for r in rows if r["enlarged"] == "0")
        assert [a.node_id for a in anns] == list(range(1, len(big) + 1))
        assert [int(r["gt_node_id"]) for r in big] == [a.node_id for a in anns]
        lab, geom = c.read_label(case)  # type: ignore[misc]
        everything, _ = read_nifti_array(c.root / "extra" / f"{case}_all_nodes.nii.gz")
        assert set(np.unique(lab)) - {0} == {a.label_id for a in anns}
        assert set(np.unique(everything)) - {0} == {int(r["id"]) for r in rows}
        for r in rows:
            ijk = tuple(geom.world_to_voxel_zyx((float(r["coordX"]), float(r["coordY"]), float(r["coordZ"]))))
            assert everything[ijk] == int(r["id"])
            assert lab[ijk] == int(r["gt_node_id"])
            n_small += r["enlarged"] == "0"
    assert n_small > 0, "the draw should contain at least one sub-10 mm node (85 % enlarged draws)"
