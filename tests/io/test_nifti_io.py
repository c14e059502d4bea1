"""NIfTI reading follows ITK's sform/qform rule and scaling; checked against SimpleITK on files built here."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume, Geometry
from lymphcad.io.nifti import header_geometry, itk_choose_transform, read_nifti, read_nifti_array, write_ct

RNG = np.random.default_rng(3)


def _rot(ax: float, ay: float) -> np.ndarray:
    cx, sx, cy, sy = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rx @ ry


def _affine(
    rot: np.ndarray, zooms: tuple[float, float, float], offset: tuple[float, float, float]
) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rot * np.asarray(zooms)[None, :]
    aff[:3, 3] = offset
    return aff


def _write(
    path: Path,
    data: np.ndarray,
    *,
    sform: np.ndarray | None,
    scode: int,
    qform: np.ndarray | None,
    qcode: int,
    zooms: tuple[float, float, float] = (0.8, 0.9, 2.5),
    slope: float | None = None,
    inter: float | None = None,
) -> Path:
    img = nib.Nifti1Image(data, None)
    hdr = img.header
    hdr.set_data_dtype(data.dtype)
    if qform is not None:
        hdr.set_qform(qform, code=qcode)
    else:
        hdr.set_qform(None, code=0)
    if sform is not None:
        hdr.set_sform(sform, code=scode)
    else:
        hdr.set_sform(None, code=0)
    hdr.set_zooms(zooms)
    hdr.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))
    if slope is not None or inter is not None:  # nibabel rewrites scl_* on save: patch the bytes on disk
        assert path.suffix == ".nii"
        raw = bytearray(path.read_bytes())
        if slope is not None:
            raw[112:116] = np.float32(slope).tobytes()
        if inter is not None:
            raw[116:120] = np.float32(inter).tobytes()
        path.write_bytes(bytes(raw))
    return path


def _data(dtype: type = np.int16) -> np.ndarray:
    return RNG.integers(-1000, 2000, size=(7, 6, 5)).astype(dtype)


def _assert_like_sitk(path: Path) -> None:
    ours, geom = read_nifti_array(path)
    img = sitk.ReadImage(str(path))
    assert geom.grid_differences(Geometry.from_sitk(img), atol_mm=1e-4, atol_dir=1e-4) == []
    assert header_geometry(path).same_grid(geom, atol_mm=1e-6)
    np.testing.assert_allclose(
        ours.astype(np.float64), sitk.GetArrayFromImage(img).astype(np.float64), atol=1e-3
    )
    for idx in [(0, 0, 0), (4, 5, 6), (1, 2, 3)]:
        np.testing.assert_allclose(
            geom.index_to_world(np.asarray(idx, float)), img.TransformIndexToPhysicalPoint(idx), atol=1e-3
        )


ROT_A = _rot(0.3, -0.2)
ROT_B = _rot(-0.1, 0.25)
SHEARED = _affine(ROT_A, (0.8, 0.9, 2.5), (10.0, -20.0, 30.0))
SHEARED[1, 2] += 0.9  # the kind of sform dcm2niix writes for a tilted gantry


@pytest.mark.parametrize(
    ("name", "sform", "scode", "qform", "qcode", "expect"),
    [
        (
            "same, codes 1/1",
            _affine(ROT_A, (0.8, 0.9, 2.5), (1, 2, 3)),
            1,
            _affine(ROT_A, (0.8, 0.9, 2.5), (1, 2, 3)),
            1,
            "sform",
        ),
        ("sform only (code 2)", _affine(ROT_A, (0.8, 0.9, 2.5), (1, 2, 3)), 2, None, 0, "sform"),
        ("qform only", None, 0, _affine(ROT_B, (0.8, 0.9, 2.5), (-5, 6, 7)), 1, "qform"),
        ("sheared sform + qform", SHEARED, 1, _affine(ROT_B, (0.8, 0.9, 2.5), (-5, 6, 7)), 1, "qform"),
        (
            "differ, sform code 1",
            _affine(ROT_A, (0.8, 0.9, 2.5), (1, 2, 3)),
            1,
            _affine(ROT_B, (0.8, 0.9, 2.5), (9, 9, 9)),
            1,
            "sform",
        ),
        (
            "differ, sform code 2",
            _affine(ROT_A, (0.8, 0.9, 2.5), (1, 2, 3)),
            2,
            _affine(ROT_B, (0.8, 0.9, 2.5), (9, 9, 9)),
            1,
            "qform",
        ),
        ("neither", None, 0, None, 0, "none"),
    ],
)
def test_sform_qform_rule_matches_simpleitk(
    tmp_path: Path,
    name: str,
    sform: np.ndarray | None,
    scode: int,
    qform: np.ndarray | None,
    qcode: int,
    expect: str,
) -> None:
    path = _write(tmp_path / "x.nii.gz", _data(), sform=sform, scode=scode, qform=qform, qcode=qcode)
    which, _ = itk_choose_transform(nib.load(str(path)).header)
    assert which == expect, name
    _assert_like_sitk(path)


def test_sheared_sform_alone_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.nii.gz", _data(), sform=SHEARED, scode=2, qform=None, qcode=0)
    with pytest.raises(InputError, match="no orthonormal transform"):
        read_nifti(path)
    with pytest.raises(RuntimeError):
        sitk.ReadImage(str(path))


def test_spacing_is_pixdim_not_sform_norm(tmp_path: Path) -> None:
    """ITK takes spacing from pixdim even when the sform's columns say otherwise."""
    path = _write(
        tmp_path / "x.nii.gz", _data(), sform=_affine(ROT_A, (1.0, 1.0, 3.0), (1, 2, 3)), scode=1, qform=None, qcode=0,
        zooms=(0.5, 0.5, 2.0),
    )  # fmt: skip
    assert header_geometry(path).spacing_ijk == pytest.approx((0.5, 0.5, 2.0))
    _assert_like_sitk(path)


def test_nan_scl_slope_gives_raw_int16(tmp_path: Path) -> None:
    data = _data()
    path = _write(tmp_path / "x.nii", data, sform=_affine(np.eye(3), (1, 1, 1), (0, 0, 0)), scode=1,
                  qform=None, qcode=0, slope=float("nan"), inter=float("nan"))  # fmt: skip
    vol = read_nifti(path)
    assert vol.array.dtype == np.int16
    np.testing.assert_array_equal(vol.array, np.transpose(data, (2, 1, 0)))
    _assert_like_sitk(path)


@pytest.mark.parametrize(
    ("slope", "inter"), [(1.0, -1024.0), (0.0, -1024.0), (2.0, 0.5), (float("nan"), 7.0)]
)
def test_scaling_like_itk(tmp_path: Path, slope: float, inter: float) -> None:
    data = _data()
    path = _write(tmp_path / "x.nii", data, sform=_affine(np.eye(3), (1, 1, 1), (0, 0, 0)), scode=1,
                  qform=None, qcode=0, slope=slope, inter=inter)  # fmt: skip
    _assert_like_sitk(path)
    s = 1.0 if not np.isfinite(slope) or slope == 0 else slope
    expect = np.transpose(data, (2, 1, 0)).astype(np.float64) * s + inter
    expect = np.where(expect >= 0, np.floor(expect + 0.5), np.ceil(expect - 0.5))
    np.testing.assert_array_equal(read_nifti(path).array, expect.astype(np.int16))


def test_int32_storage_reads_as_int16(tmp_path: Path) -> None:
    data = _data(np.int32)
    data[0, 0, 0] = 40000
    path = _write(
        tmp_path / "x.nii.gz",
        data,
        sform=_affine(np.eye(3), (1, 1, 1), (0, 0, 0)),
        scode=1,
        qform=None,
        qcode=0,
    )
    vol = read_nifti(path)
    assert vol.array.dtype == np.int16 and vol.array[0, 0, 0] == 32767


def test_write_read_roundtrip_and_simpleitk(tmp_path: Path) -> None:
    geom = Geometry((5, 6, 7), (2.5, 0.9, 0.8), (-12.0, 33.0, 4.5), ROT_B)
    vol = CTVolume(RNG.integers(-1024, 3000, size=(5, 6, 7)).astype(np.int16), geom)
    path = tmp_path / "ct.nii.gz"
    write_ct(path, vol)
    back = read_nifti(path)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.geometry.grid_differences(geom, atol_mm=1e-4, atol_dir=1e-5) == []
    img = sitk.ReadImage(str(path))
    assert Geometry.from_sitk(img).grid_differences(geom, atol_mm=1e-4, atol_dir=1e-5) == []
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vol.array)
    # and what SimpleITK writes, we read the same way
    out = tmp_path / "sitk.nii.gz"
    sitk.WriteImage(img, str(out))
    assert read_nifti(out).geometry.grid_differences(geom, atol_mm=1e-4, atol_dir=1e-5) == []


def test_not_a_nifti(tmp_path: Path) -> None:
    bad = tmp_path / "x.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(InputError, match="not a readable NIfTI"):
        read_nifti(bad)
