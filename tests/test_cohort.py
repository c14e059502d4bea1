"""Cohort read/write and validation (formats.md §2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lymphcad.cohort import (
    ANNOTATION_COLUMNS,
    Annotation,
    CohortWriter,
    DatasetInfo,
    IgnorePoint,
    open_cohort,
    read_annotations,
    voxel_hash,
)
from lymphcad.detector.sampling import truth_from_extra
from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume, Geometry

DIRECTION = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _volume(seed: int = 0) -> CTVolume:
    rng = np.random.default_rng(seed)
    arr = rng.normal(-80, 20, size=(12, 20, 24)).astype(np.int16)
    return CTVolume.from_array(
        arr, spacing_zyx=(2.5, 0.8, 0.7), origin_xyz=(-10.0, 30.0, -200.0), direction=DIRECTION
    )


def _write(root: Path) -> tuple[CTVolume, list[Annotation]]:
    vol = _volume()
    w = CohortWriter(root)
    h = w.write_image("case_a", vol)
    labels = np.zeros(vol.shape_zyx, np.uint16)
    labels[5:8, 8:12, 10:14] = 1
    w.write_label("case_a", labels, vol.geometry)
    w.write_eval_region("case_a", np.ones(vol.shape_zyx, np.uint8), vol.geometry)
    center = tuple(float(v) for v in vol.geometry.zyx_to_world([6.0, 9.5, 11.5]))
    ann = [Annotation("case_a", 1, center, 6.0, 9.0, "abdominal", 1)]  # type: ignore[arg-type]
    info = DatasetInfo(
        name="t",
        description="test",
        cases=["case_a"],
        case_regions={"case_a": "abdominal"},
        license="CC0",
        citation=["me"],
        source="test",
        content_hashes={"case_a": h},
    )
    w.finish(info, ann, [IgnorePoint("case_a", center, 3.0)])
    return vol, ann


def test_round_trip(tmp_path: Path) -> None:
    vol, ann = _write(tmp_path)
    c = open_cohort(tmp_path)
    assert c.cases == ["case_a"]
    assert c.annotations[0].case_id == "case_a" and c.annotations[0].label_id == 1
    assert np.allclose(c.annotations[0].center_xyz, ann[0].center_xyz, atol=1e-4)
    img = c.read_image("case_a")
    assert np.array_equal(img.array, vol.array)
    assert img.geometry.same_grid(vol.geometry, atol_mm=1e-4)
    label = c.read_label("case_a")
    assert label is not None and label.array.dtype == np.uint16 and label.array.max() == 1
    assert label.geometry.same_grid(vol.geometry, atol_mm=1e-4)
    assert c.info.content_hashes == {"case_a": voxel_hash(vol.array)}
    assert len(c.ignore) == 1
    header = (tmp_path / "annotations.csv").read_text().splitlines()[0]
    assert header == ",".join(ANNOTATION_COLUMNS)
    data = json.loads((tmp_path / "dataset.json").read_text())
    assert data["format_version"] == "1.1" and data["cases"] == ["case_a"]


def test_missing_image_is_named(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "images" / "case_a.nii.gz").unlink()
    with pytest.raises(InputError, match=r"case_a\.nii\.gz: image of case 'case_a' is missing"):
        open_cohort(tmp_path)


def test_bad_header_is_named(tmp_path: Path) -> None:
    _write(tmp_path)
    (tmp_path / "images" / "case_a.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="case_a.nii.gz: not a readable NIfTI"):
        open_cohort(tmp_path)


def test_unknown_case_names_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path)
    p = tmp_path / "annotations.csv"
    p.write_text(p.read_text() + "case_b,1,0,0,0,,,abdominal,\n")
    with pytest.raises(InputError, match=r"annotations\.csv:3: unknown case id 'case_b'"):
        open_cohort(tmp_path)


def test_annotation_outside_volume(tmp_path: Path) -> None:
    _write(tmp_path)
    p = tmp_path / "annotations.csv"
    p.write_text(p.read_text() + "case_a,2,500,500,500,,,abdominal,\n")
    with pytest.raises(InputError, match=r"annotations\.csv:3: point .* lies outside its volume"):
        open_cohort(tmp_path)


def test_bad_rows(tmp_path: Path) -> None:
    p = tmp_path / "a.csv"
    p.write_text(",".join(ANNOTATION_COLUMNS) + "\nx,1,1,nan,1,,,abdominal,\n")
    with pytest.raises(InputError, match="a.csv:2: coordY 'nan' is not finite"):
        read_annotations(p)
    p.write_text("case_id,node_id\nx,1\n")
    with pytest.raises(InputError, match="a.csv:1: missing column"):
        read_annotations(p)
    p.write_text(",".join(ANNOTATION_COLUMNS) + "\nx,1,1,1,1,,,chest,\n")
    with pytest.raises(InputError, match="region 'chest'"):
        read_annotations(p)


def test_mask_grid_mismatch(tmp_path: Path) -> None:
    vol, _ = _write(tmp_path)
    other = Geometry(vol.shape_zyx, vol.geometry.spacing_zyx, (0.0, 0.0, 0.0), vol.geometry.direction)
    CohortWriter(tmp_path).write_label("case_a", np.zeros(vol.shape_zyx, np.uint16), other)
    with pytest.raises(InputError, match="labels/case_a.nii.gz: grid differs"):
        open_cohort(tmp_path)


def test_dataset_json_validation(tmp_path: Path) -> None:
    _write(tmp_path)
    p = tmp_path / "dataset.json"
    data = json.loads(p.read_text())
    data["case_regions"]["case_a"] = "pelvis"
    p.write_text(json.dumps(data))
    with pytest.raises(InputError, match="dataset.json: case_regions"):
        open_cohort(tmp_path)
    p.write_text("{")
    with pytest.raises(InputError, match="dataset.json: invalid JSON"):
        open_cohort(tmp_path)


def test_full_truth_is_read_by_the_cohort_and_labels_training_truth(tmp_path: Path) -> None:
    """extra/<case>_nodes.csv: the writer's 'enlarged' flag wins over the threshold; 8–10 mm → ignored."""
    _write(tmp_path)
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "case_a_nodes.csv").write_text(
        "case_id,node_id,coordX,coordY,coordZ,short_axis_mm,long_axis_mm,enlarged\n"
        "case_a,1,1.0,2.0,3.0,11.0,14.0,1\n"  # enlarged
        "case_a,2,4.0,5.0,6.0,10.5,12.0,0\n"  # ≥ 10 mm by the table, but the mask measure said no
        "case_a,3,7.0,8.0,9.0,9.0,,\n"  # no flag: 9 mm → ignored finding
        "case_a,4,0.0,0.0,0.0,5.0,6.0,0\n",  # small: a negative
        encoding="utf-8",
    )
    c = open_cohort(tmp_path)
    nodes = c.read_full_truth("case_a")
    assert [n.enlarged for n in nodes] == [True, False, None, False]
    assert nodes[2].center_xyz == (7.0, 8.0, 9.0) and nodes[2].long_axis_mm is None
    truth = truth_from_extra(c, "case_a", enlarged_mm=10.0, ignore_below_mm=8.0)
    assert truth.pos_xyz.tolist() == [[1.0, 2.0, 3.0]] and truth.pos_diameter_mm.tolist() == [12.5]
    assert truth.ign_xyz.tolist() == [[4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]
    # insert cohorts carry the per-region class, which decides before the flag and the threshold
    (tmp_path / "extra" / "case_a_nodes.csv").write_text(
        "coordX,coordY,coordZ,short_axis_mm,long_axis_mm,enlarged,truth\n"
        "1,2,3,8.0,9.0,0,positive\n4,5,6,11.0,12.0,1,ignore\n7,8,9,9.0,9.0,0,negative\n",
        encoding="utf-8",
    )
    assert [n.truth for n in c.read_full_truth("case_a")] == ["positive", "ignore", "negative"]
    truth = truth_from_extra(c, "case_a", enlarged_mm=10.0, ignore_below_mm=8.0)
    assert truth.pos_xyz.tolist() == [[1.0, 2.0, 3.0]] and truth.ign_xyz.tolist() == [[4.0, 5.0, 6.0]]
    (tmp_path / "extra" / "case_a_nodes.csv").write_text(
        "coordX,coordY,coordZ,short_axis_mm\n1,2,,5\n", encoding="utf-8"
    )
    with pytest.raises(InputError, match=r"case_a_nodes.csv:2: node row without a centre"):
        c.read_full_truth("case_a")
    assert c.full_truth_path("other") is None
