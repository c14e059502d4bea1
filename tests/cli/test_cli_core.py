"""The foundation CLI: --version, info (never PHI), convert, import; exit codes and one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from lymphcad import __version__
from lymphcad.cli import main
from lymphcad.cohort import ANNOTATION_COLUMNS, open_cohort
from lymphcad.io.nifti import read_nifti

PHI = {
    "PatientName": "DOE^JOHN^Q",
    "PatientID": "MRN-8842913",
    "PatientBirthDate": "19450317",
    "PatientAddress": "12 Elm Street Springfield",
    "OtherPatientIDs": "ALT-55519",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "InstitutionName": "Saint Elsewhere Hospital",
    "AccessionNumber": "ACC-7770001",
}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def phi_series(real_ct_dir: Path, tmp_path: Path) -> Path:
    """The real dcmqi 3-slice CT series, rewritten with made-up PHI in the patient tags, plus junk files."""
    src = real_ct_dir / "dcmqi" / "ct-3slice"
    out = tmp_path / "series"
    out.mkdir()
    for f in sorted(src.glob("0?.dcm")):
        ds = pydicom.dcmread(f)
        for tag, value in PHI.items():
            setattr(ds, tag, value)
        ds.save_as(out / f.name)
    shutil.copy(
        real_ct_dir / "dcmqi" / "liver.dcm", out / "seg.dcm"
    )  # a DICOM SEG: must be ignored, not an error
    (out / "README.txt").write_text("not dicom")
    return out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"lymphcad {__version__}"


def test_info_never_prints_phi(capsys: pytest.CaptureFixture[str], phi_series: Path) -> None:
    code, out, err = run(capsys, "info", phi_series)
    assert code == 0, err
    assert "512 × 512 × 3" in out and "LPS" in out and "HU range" in out
    for value in PHI.values():
        for part in value.split("^"):
            assert part not in out and part not in err


def test_convert_matches_simpleitk(
    capsys: pytest.CaptureFixture[str], phi_series: Path, tmp_path: Path
) -> None:
    target = tmp_path / "ct.nii.gz"
    code, _, err = run(capsys, "convert", phi_series, target)
    assert code == 0, err
    ours = read_nifti(target)
    reader = sitk.ImageSeriesReader()
    ct_uid = pydicom.dcmread(phi_series / "01.dcm").SeriesInstanceUID
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(phi_series), ct_uid))
    ref = reader.Execute()
    assert np.array_equal(ours.array, sitk.GetArrayFromImage(ref).astype(np.int16))
    assert np.allclose(ours.geometry.origin_xyz, ref.GetOrigin(), atol=1e-4)
    assert np.allclose(ours.geometry.spacing_ijk, ref.GetSpacing(), atol=1e-4)


def test_import_with_nodes(capsys: pytest.CaptureFixture[str], phi_series: Path, tmp_path: Path) -> None:
    nifti = tmp_path / "other case.nii.gz"
    assert run(capsys, "convert", phi_series, nifti)[0] == 0
    vol = read_nifti(nifti)
    centre = vol.geometry.zyx_to_world([1, 256, 256])
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(
        ",".join(ANNOTATION_COLUMNS) + f"\nother_case,1,{centre[0]},{centre[1]},{centre[2]},12,,abdominal,\n"
    )
    cohort = tmp_path / "cohort"
    code, _, err = run(
        capsys, "import", phi_series, nifti, "--out", cohort, "--nodes", nodes, "--region", "abdominal"
    )
    assert code == 0, err
    c = open_cohort(cohort)
    assert c.cases == ["other_case", "series"]
    assert c.info.case_regions == {"other_case": "abdominal", "series": "abdominal"}
    assert len(c.annotations) == 1 and c.annotations[0].short_axis_mm == 12.0
    assert c.info.content_hashes is not None and set(c.info.content_hashes) == {"other_case", "series"}
    code, out, _ = run(capsys, "info", cohort)
    assert code == 0 and "annotated nodes: 1" in out
    for value in PHI.values():
        assert value not in out


def test_import_node_outside_volume_fails(
    capsys: pytest.CaptureFixture[str], phi_series: Path, tmp_path: Path
) -> None:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(",".join(ANNOTATION_COLUMNS) + "\nseries,1,0,0,9999,,,abdominal,\n")
    code, _, err = run(capsys, "import", phi_series, "--out", tmp_path / "c", "--nodes", nodes)
    assert code == 1
    assert "nodes.csv:2: node 1 of case 'series' lies outside its volume" in err
    assert "Traceback" not in err


def test_errors_are_one_line_with_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"garbage")
    code, _, err = run(capsys, "info", bad)
    assert (
        code == 1
        and err.strip().startswith("error:")
        and str(bad) in err
        and len(err.strip().splitlines()) == 1
    )
    code, _, err = run(capsys, "info", tmp_path / "missing")
    assert code == 1 and "no such file or folder" in err
    code, _, err = run(capsys, "convert", tmp_path, tmp_path / "x.mha")
    assert code == 2 and "must end in .nii" in err
    code, _, _ = run(capsys, "no-such-command")
    assert code == 2
