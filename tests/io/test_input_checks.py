"""Inputs that are not one usable 3D CT fail clearly for every input form; odd ones warn in one line."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from cli_checks import assert_refused, run_cli, snapshot
from lymphcad.errors import InputError, InputWarning
from lymphcad.geometry import CTVolume, Geometry
from lymphcad.io.dicom.write import write_dicom_series
from lymphcad.io.nifti import read_nifti, write_ct
from lymphcad.io.reader import read_ct, read_ct_input


def _ct(shape: tuple[int, int, int] = (20, 40, 40), seed: int = 0) -> CTVolume:
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1000, 300, shape).astype(np.int16)
    return CTVolume(arr, Geometry(shape, (2.5, 0.8, 0.8), (-16.0, -20.0, 40.0), np.eye(3)))


def _nifti(path: Path, data: np.ndarray, *, codes: int = 1) -> Path:
    if codes == 0:  # no transform at all: nibabel writes qform_code = sform_code = 0
        img = nib.Nifti1Image(data, None)
        assert int(img.header["sform_code"]) == 0 and int(img.header["qform_code"]) == 0
    else:
        img = nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.5, 1.0]))
        img.header.set_sform(img.affine, code=codes)
        img.header.set_qform(img.affine, code=codes)
    nib.save(img, str(path))
    return path


def _warnings_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def test_nan_voxels_become_air_with_one_warning(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = np.full((30, 30, 12), -50.0, dtype=np.float32)
    data[:, :, 0] = -1000.0
    data[3:5, 3:5, 3] = np.nan
    path = _nifti(tmp_path / "nan.nii.gz", data)
    with pytest.warns(InputWarning, match=r"nan.nii.gz: 4 voxel\(s\) .* NaN or infinite; read as -1024 HU"):
        vol = read_nifti(path)
    assert int(vol.array.min()) == -1024 and np.count_nonzero(vol.array == -1024) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy "invalid value in cast" leaks
        code, _, err = run_cli(capsys, "info", path)
    assert code == 0
    lines = _warnings_lines(err)
    assert len(lines) == 1 and str(path) in lines[0] and "NaN" in lines[0]
    assert "RuntimeWarning" not in err and "UserWarning" not in err and "InputWarning" not in err


def test_no_orientation_warns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = np.full((30, 30, 12), -500, dtype=np.int16)
    path = _nifti(tmp_path / "noxform.nii.gz", data, codes=0)
    code, _, err = run_cli(capsys, "convert", path, tmp_path / "out.nii.gz")
    assert code == 0
    lines = _warnings_lines(err)
    assert len(lines) == 1 and str(path) in lines[0] and "qform_code and sform_code are both 0" in lines[0]


def test_values_that_cannot_be_hu_warn(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(0, 256, (30, 30, 12)).astype(np.uint8)
    path = _nifti(tmp_path / "picture.nii.gz", data)
    code, _, err = run_cli(capsys, "convert", path, tmp_path / "out.nii.gz")
    assert code == 0
    lines = _warnings_lines(err)
    assert len(lines) == 1 and str(path) in lines[0] and "may not be in HU" in lines[0]
    # a CT in HU gives no such warning
    path = _nifti(tmp_path / "ct.nii.gz", np.asarray(_ct().array.transpose(2, 1, 0)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        read_ct_input(path)


@pytest.mark.parametrize("form", ["nifti-2d", "nifti-4d", "nrrd-2d", "dicom-file"])
def test_not_a_3d_volume_is_refused_by_every_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, form: str
) -> None:
    if form == "nifti-2d":
        path = _nifti(tmp_path / "slice.nii.gz", np.full((30, 30), -500, dtype=np.int16))
        problem = "a single slice"
    elif form == "nifti-4d":
        path = _nifti(tmp_path / "series.nii.gz", np.full((30, 30, 12, 3), -500, dtype=np.int16))
        problem = "a 4D image"
    elif form == "nrrd-2d":
        path = tmp_path / "slice.nrrd"
        sitk.WriteImage(sitk.GetImageFromArray(np.full((30, 30), -500, dtype=np.int16)), str(path))
        problem = "a single slice"
    else:
        files = write_dicom_series(_ct((3, 24, 24)), tmp_path / "series")
        path = files[1]
        problem = "a single slice"
    keep = [path]
    assert_refused(
        capsys,
        ["convert", path, tmp_path / "o.nii.gz"],
        code=1,
        names=[path],
        problem=problem,
        unchanged=keep,
    )
    assert_refused(
        capsys,
        ["import", path, "--out", tmp_path / "c"],
        code=1,
        names=[path],
        problem=problem,
        unchanged=keep,
    )
    assert not (tmp_path / "c").exists()
    assert_refused(
        capsys,
        ["detect", path, "--out", tmp_path / "d.csv"],
        code=1,
        names=[path],
        problem=problem,
        unchanged=keep,
    )
    assert not (tmp_path / "d.csv").exists()
    code, _, err = run_cli(capsys, "info", path)
    assert code == 1 and str(path) in err and problem in err
    assert_refused(
        capsys,
        ["insert", "--background", path, "--out", tmp_path / "ins"],
        code=1,
        names=[path],
        problem=problem,
        unchanged=keep,
    )
    assert not (tmp_path / "ins" / "dataset.json").exists()


def test_too_small_for_the_model_same_for_dicom_and_nifti(
    capsys: pytest.CaptureFixture[str], real_ct_dir: Path, tmp_path: Path
) -> None:
    dicom = real_ct_dir / "dcmqi" / "ct-3slice"
    nifti = tmp_path / "three.nii.gz"
    write_ct(nifti, read_ct(dicom))
    for path in (dicom, nifti):
        assert_refused(
            capsys,
            ["detect", path, "--out", tmp_path / "d.csv"],
            code=1,
            names=[path],
            problem="too small for the detector",
            unchanged=[path],
        )
        assert not (tmp_path / "d.csv").exists()


def test_allow_gaps_bridges_small_gaps_only_with_one_line_warnings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    files = write_dicom_series(_ct((12, 24, 24)), tmp_path / "s")
    files[5].unlink()  # one missing slice: a 5 mm gap, bridged with --allow-gaps
    code, _, err = run_cli(capsys, "convert", tmp_path / "s", tmp_path / "a.nii.gz")
    assert code == 1 and "pass --allow-gaps" in err and "allow_gaps=True" not in err
    code, _, err = run_cli(capsys, "convert", tmp_path / "s", tmp_path / "a.nii.gz", "--allow-gaps")
    assert code == 0, err
    lines = _warnings_lines(err)
    assert len(lines) == 1 and "resampled linearly" in lines[0] and "UserWarning" not in err
    for f in files[6:9]:  # now a 12.5 mm gap: more than 10 mm or two slice steps
        f.unlink()
    before = snapshot([tmp_path / "s", tmp_path / "a.nii.gz"])
    code, _, err = run_cli(capsys, "convert", tmp_path / "s", tmp_path / "b.nii.gz", "--allow-gaps")
    assert code == 1
    assert "largest gap is 12.5 mm and --allow-gaps bridges at most 10.0 mm" in err
    assert (
        snapshot([tmp_path / "s", tmp_path / "a.nii.gz"]) == before and not (tmp_path / "b.nii.gz").exists()
    )


def test_series_option_on_detect_and_import(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "two"
    write_dicom_series(_ct((16, 24, 24), 1), folder / "a", series_uid="1.2.3.1")
    write_dicom_series(_ct((16, 24, 24), 2), folder / "b", series_uid="1.2.3.2")
    code, _, err = run_cli(capsys, "import", folder, "--out", tmp_path / "c")
    assert code == 1 and "choose one with --series UID" in err and "series_uid" not in err
    assert not (tmp_path / "c").exists()
    code, _, err = run_cli(capsys, "import", folder, "--out", tmp_path / "c", "--series", "1.2.3.2")
    assert code == 0, err
    assert (
        read_nifti(tmp_path / "c" / "images" / "two.nii.gz").array.tobytes()
        == read_ct(folder / "b").array.tobytes()
    )
    code, _, err = run_cli(
        capsys, "detect", tmp_path / "c", "--out", tmp_path / "d.csv", "--series", "1.2.3.2"
    )
    assert code == 2 and "--series and --allow-gaps apply to a DICOM folder" in err


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd"])
def test_nrrd_and_metaimage_read_as_simpleitk_does(
    capsys: pytest.CaptureFixture[str], real_ct_dir: Path, tmp_path: Path, suffix: str
) -> None:
    src = real_ct_dir / "totalsegmentator" / "example_ct_sm.nii.gz"
    image = sitk.ReadImage(str(src))
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(image, str(path))
    vol = read_ct_input(path)
    ref = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(ref))
    np.testing.assert_allclose(vol.geometry.origin_xyz, ref.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(vol.geometry.direction.ravel(), ref.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(vol.geometry.spacing_ijk, ref.GetSpacing(), atol=1e-6)
    # and it is the same CT as the NIfTI it came from, through lymphcad's own NIfTI reader
    nii = read_nifti(src)
    np.testing.assert_array_equal(vol.array, nii.array)
    np.testing.assert_allclose(
        vol.geometry.index_to_world([[3, 5, 7]]), nii.geometry.index_to_world([[3, 5, 7]]), atol=1e-3
    )
    code, out, _ = run_cli(capsys, "info", path)
    assert code == 0 and ("NRRD image" if suffix == ".nrrd" else "MetaImage image") in out
    assert "size (x × y × z): 122 × 101 × 30" in out
    code, _, err = run_cli(capsys, "convert", path, tmp_path / "c.nii.gz")
    assert code == 0, err
    np.testing.assert_array_equal(read_nifti(tmp_path / "c.nii.gz").array, nii.array)
    code, out, err = run_cli(capsys, "import", path, "--out", tmp_path / "cohort")
    assert code == 0, err
    assert out.startswith("ct: ")


def test_detect_reads_nrrd_like_nifti(
    capsys: pytest.CaptureFixture[str], real_ct_dir: Path, tmp_path: Path
) -> None:
    src = real_ct_dir / "totalsegmentator" / "example_ct_sm.nii.gz"
    nrrd = tmp_path / "example_ct_sm.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(src)), str(nrrd))
    shutil.copy(src, tmp_path / "example_ct_sm.nii.gz")
    rows = []
    for path in (tmp_path / "example_ct_sm.nii.gz", nrrd):
        out = tmp_path / f"{path.suffix}.csv"
        code, _, err = run_cli(capsys, "detect", path, "--out", out, "--device", "cpu")
        assert code == 0, err
        rows.append(out.read_text())
    assert rows[0] == rows[1]


def test_read_ct_keeps_single_slices_for_library_use(tmp_path: Path) -> None:
    files = write_dicom_series(_ct((3, 24, 24)), tmp_path / "series")
    assert read_ct(files[0]).shape_zyx == (1, 24, 24)
    with pytest.raises(InputError, match="a single slice"):
        read_ct_input(files[0])
