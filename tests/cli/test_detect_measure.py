"""`detect` adds size, volume, voxel index, masks and calibrated probabilities (shipped model, phantom case)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lymphcad.cli import main
from lymphcad.geometry import CTVolume
from lymphcad.io.detections import read_detections
from lymphcad.io.nifti import read_nifti_array, write_ct
from lymphcad.measure.calibration import Calibration


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from lymphcad.detector.model import DEFAULT_MODEL, shipped_models
    from lymphcad.phantom.generate import generate_case

    if DEFAULT_MODEL not in shipped_models():
        pytest.skip(f"the default model {DEFAULT_MODEL} is not shipped in this checkout")
    root = tmp_path_factory.mktemp("measure")
    c = generate_case(3, 0, "mediastinal", 0.5, "tiny")
    write_ct(root / "case.nii.gz", CTVolume(c.image, c.geometry))
    return root, c


def test_detect_measures_and_writes_masks(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root, c = case
    out = tmp_path / "dets.csv"
    rc = main(["detect", str(root / "case.nii.gz"), "--out", str(out), "--masks", str(tmp_path / "masks")])
    assert rc == 0
    table = read_detections(out)
    assert len(table) > 0
    assert np.isfinite(table.short_axis_mm).all() and (table.short_axis_mm <= table.long_axis_mm + 1e-6).all()
    assert (table.volume_ml > 0).all()
    # i, j, k is the nearest voxel of the point
    ijk = c.geometry.world_to_voxel_zyx(table.centers_xyz)[:, ::-1]
    assert np.array_equal(table.ijk, ijk)
    labels, geom = read_nifti_array(tmp_path / "masks" / "case.nii.gz")
    assert geom.same_grid(c.geometry)
    assert set(np.unique(labels).tolist()) <= set(range(len(table) + 1))
    order = np.argsort(-table.probabilities, kind="stable")
    # the most probable detection owns label 1, and its mask holds its own point
    i, j, k = table.ijk[order[0]]
    assert labels[k, j, i] == 1
    # an annotated node found with p >= 0.5 is measured within 3 mm of its true short axis
    errs = []
    for a in c.annotations:
        d = np.linalg.norm(table.centers_xyz - np.asarray(a.center_xyz), axis=1)
        best = int(np.argmin(d))
        if d[best] < 5.0 and table.probabilities[best] >= 0.5 and a.short_axis_mm:
            errs.append(abs(table.short_axis_mm[best] - a.short_axis_mm))
    assert errs and float(np.median(errs)) <= 3.0, errs
    prov = json.loads((tmp_path / "dets.csv.json").read_text(encoding="utf-8"))["settings"]["measurement"]
    assert "RECIST" in prov["short_axis_mm,long_axis_mm"]
    assert "region-growing" in prov["mask"]
    # the default model ships with its calibration, and the provenance says so and where it came from
    assert prov["probability"].startswith("calibrated: isotonic")
    assert "calibration.json" in prov["probability"]


def test_detect_applies_the_calibration_beside_the_model(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from lymphcad.detector.model import resolve_model_path

    root, _ = case
    model = tmp_path / "model"
    shutil.copytree(resolve_model_path(None).parent, model)
    Calibration("isotonic", (0.0, 1.0), (0.0, 0.5), source="test").save(model / "calibration.json")
    args = ["detect", str(root / "case.nii.gz"), "--model", str(model), "--no-measure"]
    assert main([*args, "--out", str(tmp_path / "cal.csv")]) == 0
    assert main([*args, "--out", str(tmp_path / "raw.csv"), "--raw-scores"]) == 0
    cal, raw = read_detections(tmp_path / "cal.csv"), read_detections(tmp_path / "raw.csv")
    np.testing.assert_allclose(cal.probabilities, raw.probabilities / 2.0, atol=2e-6)
    assert np.isnan(cal.short_axis_mm).all()
    prov = json.loads((tmp_path / "cal.csv.json").read_text(encoding="utf-8"))["settings"]["measurement"]
    assert prov["probability"].startswith("calibrated: isotonic")


def test_threshold_applies_to_the_calibrated_probability(case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """--threshold is the lowest *reported* probability: with a calibration (which moves scores both up and
    down), the thresholded run is exactly the full run's rows at or above it."""
    from lymphcad.detector.model import resolve_model_path

    root, _ = case
    model = tmp_path / "model"
    shutil.copytree(resolve_model_path(None).parent, model)
    # raises scores below 0.3 and lowers those above: a raw threshold would keep and lose the wrong rows
    Calibration("isotonic", (0.0, 0.1, 0.3, 1.0), (0.0, 0.4, 0.45, 0.9), source="test").save(
        model / "calibration.json"
    )
    args = ["detect", str(root / "case.nii.gz"), "--model", str(model), "--no-measure", "--threshold"]
    assert main([*args, "0.0", "--out", str(tmp_path / "all.csv")]) == 0
    assert main([*args, "0.42", "--out", str(tmp_path / "cut.csv")]) == 0
    full, cut = read_detections(tmp_path / "all.csv"), read_detections(tmp_path / "cut.csv")
    keep = full.probabilities >= 0.42
    assert 0 < keep.sum() < len(full)
    assert (cut.probabilities >= 0.42).all()
    np.testing.assert_allclose(np.sort(cut.probabilities), np.sort(full.probabilities[keep]))
    # and some of them had raw scores below 0.42: a raw threshold would have lost them
    raw_args = [*args[:-1], "--raw-scores", "--threshold", "0.0", "--out", str(tmp_path / "raw.csv")]
    assert main(raw_args) == 0
    assert (
        read_detections(tmp_path / "raw.csv").probabilities[np.argsort(-full.probabilities)][
            keep[np.argsort(-full.probabilities)]
        ]
        < 0.42
    ).any()


def test_masks_inside_the_input_cohort_are_refused(tmp_path: Path) -> None:
    """--masks must not write into the cohort it reads (its labels/ would be overwritten)."""
    from evaluate_fixtures import write_mask_cohort

    write_mask_cohort(tmp_path / "c")
    before = (tmp_path / "c" / "labels" / "M.nii.gz").read_bytes()
    rc = main(
        [
            "detect",
            str(tmp_path / "c"),
            "--out",
            str(tmp_path / "d.csv"),
            "--masks",
            str(tmp_path / "c" / "labels"),
        ]
    )
    assert rc == 2
    assert (tmp_path / "c" / "labels" / "M.nii.gz").read_bytes() == before
    assert not (tmp_path / "d.csv").exists()


def test_dicom_seg_carries_the_measured_masks(case, real_ct_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """detect --seg on a real DICOM series: the SEG's first segment is the top detection's measured mask."""
    import pydicom

    from lymphcad.dicomout.seg import read_seg_segments
    from lymphcad.dicomout.source import read_source_series

    series = real_ct_dir / "crlm-ct" / "CRLM-CT-1004"
    args = ["detect", str(series), "--out", str(tmp_path / "d.csv"), "--threads", "1"]
    args += ["--seg", str(tmp_path / "seg.dcm"), "--sr-threshold", "0", "--masks", str(tmp_path / "m")]
    assert main(args) == 0
    labels, _ = read_nifti_array(next((tmp_path / "m").iterdir()))
    source = read_source_series(series)
    segments = read_seg_segments(pydicom.dcmread(tmp_path / "seg.dcm"))
    got = np.zeros(labels.shape, dtype=bool)
    for k, sl in enumerate(source.slices):
        frame = segments[0].pixels.get(sl.sop_instance_uid)
        if frame is not None:
            got[k] = frame
    assert got.sum() > 0
    assert np.array_equal(got, labels == 1)
