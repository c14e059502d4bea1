"""Node insertion into real CT backgrounds: never in a structure of an independent organ map; licences travel;
holdout backgrounds are refused. (Stations, failures, noise: tests/phantom/test_insert_stations.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lymphcad.errors import UsageError
from lymphcad.geometry import reorient_to_lps
from lymphcad.io.nifti import read_nifti, read_nifti_array
from lymphcad.phantom.insert import (
    FORBIDDEN,
    analyse_background,
    canonical_volume,
    insert_cohort,
    insert_nodes,
)

pytestmark = pytest.mark.real


def test_never_in_structures_of_a_real_tissue_map(real_ct_dir: Path) -> None:
    """TotalSegmentator's own multilabel map (organs, vessels, bones, muscles) of the same CT: no overlap."""
    ts = real_ct_dir / "totalsegmentator"
    raw = read_nifti(ts / "example_ct_sm.nii.gz")  # stored RAS: reoriented to LPS-increasing axes
    vol = canonical_volume(raw)
    seg, seg_geom = read_nifti_array(ts / "example_seg.nii.gz")
    seg = reorient_to_lps(seg, seg_geom)[0]
    assert seg.shape == vol.array.shape
    an = analyse_background(vol)
    assert an.region == "abdominal"
    placed = 0
    for seed in range(3):
        res = insert_nodes(vol, 5, np.random.default_rng(seed), region="abdominal", analysis=an)
        m = res.all_nodes > 0
        placed += len(res.nodes)
        # a node may abut a structure (its partial-volume rim shares a 3 mm voxel with the structure's border)
        # but never lies in it: its interior (the mask eroded by one voxel) never overlaps a structure. The map
        # shows the anatomy before any push: a node placed by mass effect moved its neighbours away (the
        # keep-size placement pushes the large nodes that find no fat deep enough), so it is checked against
        # the pushed tissue map instead
        for n in res.nodes:
            node = res.all_nodes == n.id
            if n.placement == "fat":
                assert not np.any(seg[ndimage.binary_erosion(node)] > 0), "a node lies inside a structure"
                assert np.count_nonzero(seg[node]) <= 0.15 * node.sum(), "a node overlaps a structure"
        tissue = an.tissue if res.tissue is None else res.tissue
        assert not np.isin(tissue[m], FORBIDDEN).any()
        if m.any():  # never at the volume border
            zz, yy, xx = np.nonzero(m)
            assert zz.min() > 0 and yy.min() > 0 and xx.min() > 0
            assert zz.max() < m.shape[0] - 1 and yy.max() < m.shape[1] - 1 and xx.max() < m.shape[2] - 1
    assert placed >= 6


def test_cohort_carries_licence_and_refuses_holdout(real_ct_dir: Path, tmp_path: Path) -> None:
    bg = real_ct_dir / "totalsegmentator" / "example_ct_sm.nii.gz"
    info = insert_cohort(bg, tmp_path / "c", 1, (2, 3), seed=0, region="abdominal")
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
