"""DICOM SR (TID 1500) and SEG of detections on real CT series of four scanners: validators, read-back.

Detections are built directly (fast, every case covered: sizes, overlap, no diameter, below threshold);
one end-to-end ``detect --sr --seg`` runs the shipped model on a small real series.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from cli_checks import run_cli, snapshot
from dicom_results_checks import (
    SERIES,
    dciodvfy_errors,
    pixel_to_world,
    pixelmed_sr_errors,
    plane_distance,
    series_folder,
)
from lymphcad.dicomout.export import (
    DicomResultError,
    DicomResults,
    build_results,
    check_results,
    sr_groups,
    write_results,
)
from lymphcad.dicomout.findings import AlgorithmInfo
from lymphcad.dicomout.seg import DEFAULT_DIAMETER_MM, read_seg_segments
from lymphcad.dicomout.source import SourceSeries, read_source_series
from lymphcad.dicomout.sr import read_sr_findings
from lymphcad.errors import InputError
from lymphcad.io.detections import Detection, read_detections
from lymphcad.io.nifti import read_nifti_array

pytestmark = pytest.mark.real

ALGO = AlgorithmInfo(model_name="centernet3d_test", model_sha256="0123456789abcdef" * 4)
THRESHOLD = 0.1


@dataclasses.dataclass(frozen=True)
class SizedDetection(Detection):
    """A detection with the optional RECIST columns of formats.md 1.2 (as the detector adds them)."""

    short_axis_mm: float | None = None
    long_axis_mm: float | None = None
    volume_ml: float | None = None


def _detections(source: SourceSeries) -> list[Detection]:
    n = len(source.slices)
    mid = source.slices[n // 2].plane
    _, rows, cols = mid.shape_zyx
    c1 = mid.index_to_world([0.45 * cols + 0.3, 0.55 * rows + 0.7, 0.3])
    c2 = c1 + 6.0 * mid.direction[:, 0]  # overlaps the first sphere
    c3 = source.slices[max(0, n // 4)].plane.index_to_world([0.6 * cols, 0.4 * rows, -0.2])
    c4 = mid.index_to_world([0.3 * cols, 0.3 * rows, 0.0])
    as_tuple = lambda c: (float(c[0]), float(c[1]), float(c[2]))  # noqa: E731
    return [
        SizedDetection(
            "case", as_tuple(c1), 0.91, 14.0, short_axis_mm=9.5, long_axis_mm=13.2, volume_ml=1.37
        ),
        Detection("case", as_tuple(c2), 0.62, 12.0),
        Detection("case", as_tuple(c3), 0.35, None),
        Detection("case", as_tuple(c4), 0.05, 8.0),  # below THRESHOLD: not exported
    ]


@dataclasses.dataclass(frozen=True)
class Built:
    source: SourceSeries
    detections: list[Detection]
    results: DicomResults
    sr_path: Path
    seg_path: Path


@pytest.fixture(scope="module", params=sorted(SERIES))
def built(
    request: pytest.FixtureRequest, real_ct_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Built:
    tmp = tmp_path_factory.mktemp(request.param)
    source = read_source_series(series_folder(real_ct_dir, request.param, tmp))
    dets = _detections(source)
    results = build_results(source, dets, ALGO, threshold=THRESHOLD)
    write_results(results, sr_path=tmp / "sr.dcm", seg_path=tmp / "seg.dcm")
    return Built(source, dets, results, tmp / "sr.dcm", tmp / "seg.dcm")


def test_sr_and_seg_have_no_dciodvfy_errors(built: Built) -> None:
    assert dciodvfy_errors(built.sr_path) == []
    assert dciodvfy_errors(built.seg_path) == []


def test_sr_reads_back_to_the_same_points_and_measurements(built: Built) -> None:
    kept = [d for d in built.detections if d.probability >= THRESHOLD]
    back = read_sr_findings(pydicom.dcmread(built.sr_path))
    assert len(back) == len(kept) == 3
    by_slice = {s.sop_instance_uid: s.dataset for s in built.source.slices}
    for det, f in zip(sorted(kept, key=lambda d: -d.probability), back, strict=True):
        assert np.linalg.norm(np.subtract(f.point_xyz, det.center_xyz)) <= 0.5
        assert f.measurements["Probability"] == pytest.approx(det.probability, abs=1e-9)
        if det.diameter_mm is None:
            assert f.image_point_colrow is None and "Diameter" not in f.measurements
            continue
        assert f.measurements["Diameter"] == pytest.approx(det.diameter_mm)
        # the 2D point lies on the nearest slice, at the detection's in-plane position (SCOORD: centre of
        # the first pixel is 0.5, 0.5)
        assert f.image_point_colrow is not None and f.image_sop_instance_uid is not None
        ds = by_slice[f.image_sop_instance_uid]
        on_plane = pixel_to_world(
            ds, np.array([f.image_point_colrow[0] - 0.5]), np.array([f.image_point_colrow[1] - 0.5])
        )[0]
        dist = plane_distance(ds, np.asarray(det.center_xyz))
        nearest = min(abs(plane_distance(s, np.asarray(det.center_xyz))) for s in by_slice.values())
        assert abs(dist) == pytest.approx(nearest)
        projected = np.asarray(det.center_xyz) - dist * np.cross(
            np.asarray(ds.ImageOrientationPatient[:3], float),
            np.asarray(ds.ImageOrientationPatient[3:], float),
        )
        assert np.linalg.norm(on_plane - projected) <= 0.5
    assert back[0].measurements["Short Axis"] == pytest.approx(9.5)
    assert back[0].measurements["Long Axis"] == pytest.approx(13.2)
    assert back[0].measurements["Volume"] == pytest.approx(1.37)


def test_sr_header_is_a_machine_result_in_the_source_study(built: Built) -> None:
    sr = hd.sr.srread(built.sr_path)
    src = built.source.slices[0].dataset
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("PARTIAL", "UNVERIFIED")
    assert sr.StudyInstanceUID == src.StudyInstanceUID and sr.PatientID == src.PatientID
    assert sr.SeriesInstanceUID != src.SeriesInstanceUID
    assert str(sr.SpecificCharacterSet).strip()
    evidence = {uid for _, _, uid, _ in sr.get_evidence()}  # (study, series, instance, class)
    assert evidence == {s.sop_instance_uid for s in built.source.slices}
    groups = sr.content.get_image_measurement_groups()
    assert all(g.finding_type.value == "59441001" for g in groups)  # SCT Lymph node
    for g in groups:  # TID 4019 algorithm identification in every group: name, version, model and its hash
        names = {
            item.ConceptNameCodeSequence[0].CodeMeaning: str(getattr(item, "TextValue", ""))
            for item in g[0].ContentSequence
            if item.ValueType == "TEXT"
        }
        assert names["Algorithm Name"] == "lymphcad" and names["Algorithm Version"]
        parameters = [
            str(item.TextValue)
            for item in g[0].ContentSequence
            if item.ValueType == "TEXT"
            and item.ConceptNameCodeSequence[0].CodeMeaning == "Algorithm Parameters"
        ]
        assert f"model_sha256={ALGO.model_sha256}" in parameters and f"model={ALGO.model_name}" in parameters
    for g in groups:
        for m in g.get_measurements():
            for coord in m.referenced_coordinates or []:
                if coord.value_type == hd.sr.ValueTypeValues.SCOORD3D:
                    assert coord.ReferencedFrameOfReferenceUID == built.source.frame_of_reference_uid


def test_seg_segments_are_the_spheres_and_link_to_the_sr(built: Built) -> None:
    seg = pydicom.dcmread(built.seg_path)
    segments = read_seg_segments(seg)
    sr = read_sr_findings(pydicom.dcmread(built.sr_path))
    assert [s.tracking_uid for s in segments] == [f.tracking_uid for f in sr]
    assert [s.tracking_id for s in segments] == [f.tracking_id for f in sr]
    kept = sorted((d for d in built.detections if d.probability >= THRESHOLD), key=lambda d: -d.probability)
    radii = [(d.diameter_mm or DEFAULT_DIAMETER_MM) / 2 for d in kept]
    by_uid = {s.sop_instance_uid: s.dataset for s in built.source.slices}
    total = 0
    for n, (det, r) in enumerate(zip(kept, radii, strict=True)):
        # independent expectation: pixel centres within r of the centre and not claimed by a more probable one
        for uid, ds in by_uid.items():
            jj, ii = np.mgrid[0 : int(ds.Rows), 0 : int(ds.Columns)]
            world = pixel_to_world(ds, ii.ravel(), jj.ravel())
            inside = np.linalg.norm(world - np.asarray(det.center_xyz), axis=1) <= r
            for m in range(n):
                inside &= np.linalg.norm(world - np.asarray(kept[m].center_xyz), axis=1) > radii[m]
            got = segments[n].pixels.get(uid)
            got_flat = np.zeros(inside.shape, bool) if got is None else got.ravel()
            # a one-pixel tolerance: the centre pixel is always kept, even when another sphere covers it
            assert np.count_nonzero(got_flat != inside) <= 1, (n, uid)
            total += int(got_flat.sum())
    assert total > 0
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "59441001"
    assert seg.FrameOfReferenceUID == built.source.frame_of_reference_uid


@pytest.mark.slow
def test_pixelmed_accepts_every_sr(real_ct_dir: Path, tmp_path: Path) -> None:
    paths = []
    for key in ("ge-crlm", "philips-lidc", "siemens-j2k-reversed"):  # three scanners (the JVM is slow)
        source = read_source_series(series_folder(real_ct_dir, key, tmp_path))
        results = build_results(source, _detections(source), ALGO, threshold=THRESHOLD)
        write_results(results, sr_path=tmp_path / f"{key}.dcm", seg_path=None)
        paths.append(tmp_path / f"{key}.dcm")
    empty = build_results(source, [], ALGO)
    write_results(empty, sr_path=tmp_path / "empty.dcm", seg_path=None)
    paths.append(tmp_path / "empty.dcm")
    assert pixelmed_sr_errors(paths) == {p: [] for p in paths}


def test_empty_result_is_a_valid_sr_without_seg(real_ct_dir: Path, tmp_path: Path) -> None:
    source = read_source_series(real_ct_dir / SERIES["ge-crlm"])
    results = build_results(source, _detections(source), ALGO, threshold=0.99)
    assert results.findings == () and results.seg is None
    written = write_results(results, sr_path=tmp_path / "sr.dcm", seg_path=tmp_path / "seg.dcm")
    assert written == [tmp_path / "sr.dcm"] and not (tmp_path / "seg.dcm").exists()
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    assert read_sr_findings(pydicom.dcmread(tmp_path / "sr.dcm")) == []
    assert "Clinical finding absent" in str(pydicom.dcmread(tmp_path / "sr.dcm").ContentSequence)


def test_no_patient_data_is_printed(
    real_ct_dir: Path, capfd: pytest.CaptureFixture[str], recwarn: pytest.WarningsRecorder
) -> None:
    folder = real_ct_dir / SERIES["ge-crlm"]
    source = read_source_series(folder)
    name = str(source.slices[0].dataset.PatientName)
    build_results(source, _detections(source), ALGO)
    out, err = capfd.readouterr()
    assert name and name not in out + err
    assert not [w for w in recwarn if name in str(w.message)]


def test_source_without_uids_is_refused_with_the_file(real_ct_dir: Path) -> None:
    with pytest.raises(InputError, match="StudyInstanceUID is empty") as err:
        read_source_series(real_ct_dir / SERIES["siemens-j2k-reversed"])
    assert "example_ct_dicom" in str(err.value)


def test_cli_nifti_with_sr_fails_before_any_work(
    real_ct_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nifti = real_ct_dir / "totalsegmentator" / "example_ct_sm.nii.gz"
    before = snapshot([nifti, tmp_path])
    code, _, err = run_cli(capsys, "detect", nifti, "--out", tmp_path / "d.csv", "--sr", tmp_path / "sr.dcm")
    assert code == 1
    assert "example_ct_sm.nii.gz" in err and "no source DICOM instances" in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot([nifti, tmp_path]) == before


@pytest.mark.slow
def test_cli_detect_writes_sr_and_seg_matching_the_csv(
    real_ct_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = real_ct_dir / SERIES["ge-crlm"]
    sr, seg, csv = tmp_path / "sr.dcm", tmp_path / "seg.dcm", tmp_path / "d.csv"
    code, _, err = run_cli(
        capsys,
        "detect",
        folder,
        "--out",
        csv,
        "--sr",
        sr,
        "--seg",
        seg,
        "--sr-threshold",
        "0.02",  # a real CT without inserted nodes: the default model's calibrated peaks stay below 0.05 here
        "--threads",
        "1",
    )
    assert code == 0, err
    table = read_detections(csv)
    keep = table.probabilities >= 0.02
    back = read_sr_findings(pydicom.dcmread(sr))
    assert len(back) == int(keep.sum()) > 0
    assert f"DICOM: {len(back)} finding(s)" in err
    assert "copy attributes" not in err  # highdicom's INFO log stays quiet
    assert str(pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).PatientName) not in err
    want = sorted(
        zip(table.probabilities[keep], map(tuple, table.centers_xyz[keep]), strict=True), reverse=True
    )
    for (p, xyz), f in zip(want, back, strict=True):
        assert f.measurements["Probability"] == pytest.approx(p, abs=1e-6)
        assert np.linalg.norm(np.subtract(f.point_xyz, xyz)) <= 0.5
    assert dciodvfy_errors(sr) == []
    if back:
        assert dciodvfy_errors(seg) == []
        assert len(read_seg_segments(pydicom.dcmread(seg))) == len(back)


def test_source_series_is_chosen_by_uid_in_a_folder_of_two(real_ct_dir: Path, tmp_path: Path) -> None:
    for name in ("CRLM-CT-1004", "CRLM-CT-1006"):
        (tmp_path / name).mkdir()
        for f in (real_ct_dir / "crlm-ct" / name).iterdir():
            (tmp_path / name / f.name).symlink_to(f)
    with pytest.raises(InputError, match="2 CT series found; choose one with --series"):
        read_source_series(tmp_path)
    wanted = pydicom.dcmread(
        next((real_ct_dir / "crlm-ct" / "CRLM-CT-1006").iterdir()), stop_before_pixels=True
    )
    source = read_source_series(tmp_path, series_uid=str(wanted.SeriesInstanceUID))
    assert source.series_uid == wanted.SeriesInstanceUID and len(source.slices) == 51


def test_cli_dicomweb_options_need_dicomweb(
    real_ct_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = real_ct_dir / SERIES["ge-crlm"]
    code, _, err = run_cli(capsys, "detect", folder, "--out", tmp_path / "d.csv", "--store", "--study", "1.2")
    assert code == 2 and "--study, --store need(s) --dicomweb" in err
    code, _, err = run_cli(capsys, "detect", "--out", tmp_path / "d.csv")
    assert code == 2 and "--dicomweb" in err
    code, _, err = run_cli(
        capsys, "detect", folder, "--dicomweb", "http://127.0.0.1:9/dicom-web", "--out", tmp_path / "d.csv"
    )
    assert code == 2 and "not both" in err
    code, _, err = run_cli(capsys, "detect", folder, "--out", tmp_path / "d.csv", "--sr", tmp_path / "sr.txt")
    assert code == 2 and "--sr must end in .dcm" in err
    assert not list(tmp_path.iterdir())


def test_the_in_memory_check_catches_a_wrong_point_or_probability(real_ct_dir: Path) -> None:
    source = read_source_series(real_ct_dir / SERIES["ge-crlm"])
    results = build_results(source, _detections(source), ALGO, threshold=THRESHOLD)
    check_results(source, results)  # as built: fine
    groups = sr_groups(results.sr)
    assert set(groups) == {f.tracking_uid for f in results.findings}

    def probability_items(ds: pydicom.Dataset) -> list[pydicom.Dataset]:
        found = []
        for item in ds.get("ContentSequence", []):
            code = item.ConceptNameCodeSequence[0].CodeValue
            if item.ValueType == "NUM" and code == "122157":
                found.append(item)
            found.extend(probability_items(item))
        return found

    num = probability_items(results.sr)[0]
    num.MeasuredValueSequence[0].NumericValue = 0.5
    with pytest.raises(DicomResultError, match="probability"):
        check_results(source, results)
    num.MeasuredValueSequence[0].NumericValue = results.findings[0].probability
    point = next(c for c in num.ContentSequence if c.ValueType == "SCOORD3D")
    point.GraphicData = [float(point.GraphicData[0]) + 1.0, *point.GraphicData[1:]]
    with pytest.raises(DicomResultError, match="mm from the detection"):
        check_results(source, results)


@pytest.mark.slow
def test_cli_seg_takes_the_detectors_masks(
    real_ct_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = real_ct_dir / SERIES["ge-crlm"]
    seg, csv, masks = tmp_path / "seg.dcm", tmp_path / "d.csv", tmp_path / "masks"
    code, _, err = run_cli(
        capsys,
        "detect",
        folder,
        "--out",
        csv,
        "--seg",
        seg,
        "--masks",
        masks,
        "--sr-threshold",
        "0.02",  # a real CT without inserted nodes: the default model's calibrated peaks stay below 0.05 here
        "--threads",
        "1",
    )
    assert code == 0, err
    label_files = list(masks.glob("*.nii.gz"))
    assert len(label_files) == 1
    labels, _ = read_nifti_array(label_files[0])
    table = read_detections(csv)
    kept = int((table.probabilities >= 0.02).sum())
    assert kept > 0 and "SEG from the detector's masks" in err
    source = read_source_series(folder)
    segments = read_seg_segments(pydicom.dcmread(seg))
    assert len(segments) == kept
    # segment n is the n-th most probable detection = label n of the label volume (where that has a mask)
    for segment in segments:
        want = labels == segment.number
        if not want.any():
            continue  # no mask for this detection: a sphere
        got = np.zeros(want.shape, dtype=bool)
        for k, sl in enumerate(source.slices):
            if sl.sop_instance_uid in segment.pixels:
                got[k] = segment.pixels[sl.sop_instance_uid]
        overlap = got & want
        assert overlap.sum() >= 0.98 * want.sum() and got.sum() <= want.sum() + 1
