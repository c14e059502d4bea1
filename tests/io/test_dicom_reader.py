"""DICOM series reader on small synthetic series written here (no ../shared needed)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless, generate_uid

from lymphcad.errors import InputError
from lymphcad.io.dicom import DicomSeriesError, dicom_summary, list_series, read_dicom_series
from lymphcad.io.dicom.write import ct_slice
from lymphcad.io.reader import read_ct

ROWS, COLS = 12, 10
IOP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _slice(
    pixels: np.ndarray,
    ipp: tuple[float, float, float],
    *,
    series_uid: str,
    instance: int,
    iop: tuple[float, ...] = IOP,
    **kw: Any,
) -> Dataset:
    ds = ct_slice(
        pixels,
        ipp,
        series_uid=series_uid,
        study_uid="1.2.3.4",
        instance=instance,
        orientation=iop,
        slice_thickness=2.0,
        **kw,
    )
    ds.PatientName = "SECRET^NAME"
    return ds


def _series(
    folder: Path,
    n: int = 6,
    *,
    step: float = 2.0,
    z0: float = -100.0,
    uid: str | None = None,
    dtype: type = np.uint16,
    names: str = "shuffled",
    **kw: object,
) -> tuple[str, np.ndarray]:
    """Write n slices; return the series UID and the expected HU stack in ascending-z order."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    rng = np.random.default_rng(n)
    raw = rng.integers(0, 3000, size=(n, ROWS, COLS)).astype(dtype)
    order = rng.permutation(n) if names == "shuffled" else np.arange(n)
    for rank, k in enumerate(order):
        ds = _slice(raw[k], (-50.0, -60.0, z0 + step * k), series_uid=uid, instance=int(n - k), **kw)  # type: ignore[arg-type]
        ds.save_as(folder / f"IM{rank:04d}", enforce_file_format=True)
    slope = float(kw.get("slope", 1.0))  # type: ignore[arg-type]
    inter = float(kw.get("intercept", -1024.0))  # type: ignore[arg-type]
    hu = raw.astype(np.float64) * slope + inter
    hu = np.where(hu >= 0, np.floor(hu + 0.5), np.ceil(hu - 0.5))
    return uid, hu.astype(np.int16)


def test_sorted_by_position_not_name_or_instance(tmp_path: Path) -> None:
    _, hu = _series(tmp_path / "s")
    vol = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, hu)
    g = vol.geometry
    assert g.spacing_zyx == pytest.approx((2.0, 0.7, 0.8))  # PixelSpacing = (row spacing, column spacing)
    assert g.origin_xyz == pytest.approx((-50.0, -60.0, -100.0))
    np.testing.assert_allclose(g.direction, np.eye(3))


def test_signed_pixels_and_fractional_slope(tmp_path: Path) -> None:
    _, hu = _series(tmp_path / "s", dtype=np.int16, slope=0.5, intercept=-1000.5)
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "s").array, hu)


def test_reversed_normal_direction(tmp_path: Path) -> None:
    """IOP with the normal pointing to the feet: slice 0 is the most superior one, direction[:,2] = -z."""
    _series(tmp_path / "s", iop=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0))
    vol = read_dicom_series(tmp_path / "s")
    np.testing.assert_allclose(vol.geometry.direction, np.diag([1.0, -1.0, -1.0]), atol=1e-9)
    assert vol.geometry.origin_xyz[2] == pytest.approx(-90.0)  # highest z first
    assert vol.geometry.index_to_world([0, 0, 5])[2] == pytest.approx(-100.0)


def test_non_dicom_and_seg_files_are_ignored(tmp_path: Path) -> None:
    _, hu = _series(tmp_path / "s")
    (tmp_path / "s" / "notes.txt").write_text("hello")
    (tmp_path / "s" / "DICOMDIR.bin").write_bytes(b"\x00" * 300)
    seg = _slice(np.zeros((ROWS, COLS), np.uint16), (0, 0, 0), series_uid=generate_uid(), instance=1, modality="SEG",
                 sop_class="1.2.840.10008.5.1.4.1.1.66.4")  # fmt: skip
    seg.save_as(tmp_path / "s" / "seg.dcm", enforce_file_format=True)
    assert [s.n_files for s in list_series(tmp_path / "s")] == [6]
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "s").array, hu)


def test_missing_modality_uses_sop_class(tmp_path: Path) -> None:
    _, hu = _series(tmp_path / "s", modality=None)
    np.testing.assert_array_equal(read_dicom_series(tmp_path / "s").array, hu)


def test_several_series_need_a_choice(tmp_path: Path) -> None:
    uid_a, _ = _series(tmp_path / "a", 4)
    uid_b, hu_b = _series(tmp_path / "b", 5)
    with pytest.raises(DicomSeriesError, match="2 CT series found") as err:
        read_dicom_series(tmp_path)
    assert uid_a in str(err.value) and uid_b in str(err.value)
    np.testing.assert_array_equal(read_dicom_series(tmp_path, series_uid=uid_b).array, hu_b)
    with pytest.raises(DicomSeriesError, match="not found"):
        read_dicom_series(tmp_path, series_uid="9.9.9")
    infos = list_series(tmp_path)
    assert sorted(i.n_files for i in infos) == [4, 5]
    assert not any("SECRET" in repr(i) for i in infos)


def test_duplicate_position_fails(tmp_path: Path) -> None:
    uid, _ = _series(tmp_path / "s", 4)
    extra = _slice(np.zeros((ROWS, COLS), np.uint16), (-50.0, -60.0, -98.0), series_uid=uid, instance=99)
    extra.save_as(tmp_path / "s" / "dup", enforce_file_format=True)
    with pytest.raises(DicomSeriesError, match="duplicate slice position"):
        read_dicom_series(tmp_path / "s")


def test_missing_slice_fails_then_resamples(tmp_path: Path) -> None:
    _, hu = _series(tmp_path / "s", 6, names="ordered")
    (tmp_path / "s" / "IM0003").unlink()  # z = -94 is gone
    with pytest.raises(DicomSeriesError, match=r"not uniform.*1 slice\(s\) missing.*--allow-gaps"):
        read_dicom_series(tmp_path / "s")
    with pytest.warns(UserWarning, match="resampled linearly to 6 slices at 2.000 mm"):
        vol = read_dicom_series(tmp_path / "s", allow_gaps=True)
    assert vol.shape_zyx == (6, ROWS, COLS)
    keep = [0, 1, 2, 4, 5]
    np.testing.assert_array_equal(vol.array[keep], hu[keep])
    mid = (hu[2].astype(np.float64) + hu[4]) / 2
    np.testing.assert_array_equal(vol.array[3], np.where(mid >= 0, np.floor(mid + 0.5), np.ceil(mid - 0.5)))
    s = dicom_summary(tmp_path / "s")
    assert s["readable"] is False and "missing" in s["problem"]
    # the summary describes the volume the reader resamples to (one spacing rule for both)
    assert s["n_slices"] == 5 and s["size_ijk"] == [COLS, ROWS, 6]
    assert s["spacing_zyx"][0] == vol.geometry.spacing_zyx[0] == 2.0


def test_tilted_series_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    folder.mkdir()
    uid = generate_uid()
    t = np.deg2rad(15.0)
    iop = (1.0, 0.0, 0.0, 0.0, np.cos(t), -np.sin(t))
    for k in range(4):  # slices move along z (table), not along the tilted normal
        _slice(
            np.zeros((ROWS, COLS), np.uint16), (0.0, 0.0, 3.0 * k), series_uid=uid, instance=k + 1, iop=iop
        ).save_as(folder / f"{k}", enforce_file_format=True)
    with pytest.raises(DicomSeriesError, match="gantry-tilted"):
        read_dicom_series(folder)


def test_oblique_but_not_sheared_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "o"
    folder.mkdir()
    uid = generate_uid()
    t = np.deg2rad(15.0)
    iop = (1.0, 0.0, 0.0, 0.0, np.cos(t), -np.sin(t))
    normal = np.cross(iop[:3], iop[3:])
    for k in range(4):
        ipp = tuple(float(v) for v in 3.0 * k * normal)
        _slice(np.full((ROWS, COLS), k, np.uint16), ipp, series_uid=uid, instance=k + 1, iop=iop).save_as(  # type: ignore[arg-type]
            folder / f"{3 - k}", enforce_file_format=True
        )
    vol = read_dicom_series(folder)
    assert vol.geometry.spacing_zyx[0] == pytest.approx(3.0, abs=1e-4)
    np.testing.assert_allclose(vol.geometry.direction[:, 2], normal, atol=1e-5)
    assert [int(vol.array[k, 0, 0]) for k in range(4)] == [-1024, -1023, -1022, -1021]


def test_localizer_rejected(tmp_path: Path) -> None:
    _series(tmp_path / "s", 1, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    with pytest.raises(DicomSeriesError, match="localizer"):
        read_dicom_series(tmp_path / "s")


def test_localizer_inside_an_axial_series_is_dropped(tmp_path: Path) -> None:
    uid, hu = _series(tmp_path / "s", 5)
    scout = _slice(np.zeros((ROWS, COLS), np.uint16), (0.0, 0.0, 0.0), series_uid=uid, instance=99,
                   iop=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0), image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))  # fmt: skip
    scout.save_as(tmp_path / "s" / "scout", enforce_file_format=True)
    with pytest.warns(UserWarning, match="ignored 1 localizer"):
        vol = read_dicom_series(tmp_path / "s")
    np.testing.assert_array_equal(vol.array, hu)


def test_workers_and_compressed(tmp_path: Path) -> None:
    _, hu = _series(tmp_path / "s", 7)
    for p in (tmp_path / "s").iterdir():
        ds = pydicom.dcmread(p)
        ds.compress(RLELossless)
        ds.save_as(p)
    a = read_dicom_series(tmp_path / "s")
    b = read_dicom_series(tmp_path / "s", workers=2)
    np.testing.assert_array_equal(a.array, hu)
    np.testing.assert_array_equal(b.array, hu)
    assert a.geometry.same_grid(b.geometry)


def test_single_slice_and_read_ct_dispatch(tmp_path: Path) -> None:
    _, hu = _series(tmp_path / "s", 1)
    (f,) = list((tmp_path / "s").iterdir())
    vol = read_ct(f)
    np.testing.assert_array_equal(vol.array, hu)
    assert vol.geometry.spacing_zyx[0] == 1.0  # no SpacingBetweenSlices: 1 mm, as SimpleITK
    np.testing.assert_array_equal(read_ct(tmp_path / "s").array, hu)
    other = tmp_path / "x.txt"
    other.write_text("no")
    with pytest.raises(InputError, match="not a CT input"):
        read_ct(other)
    with pytest.raises(InputError, match="no such file"):
        read_ct(tmp_path / "missing.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DicomSeriesError, match="no CT image series"):
        read_ct(tmp_path / "empty")


def test_no_warnings_for_clean_series(tmp_path: Path) -> None:
    _series(tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_dicom_series(tmp_path / "s")


def test_synthetic_builder_values(tmp_path: Path) -> None:
    from lymphcad.io.dicom.write import body_slice, ds_number

    assert [ds_number(v) for v in (1.25, -600.0, -0.0, 0.9765625)] == ["1.25", "-600", "0", "0.9765625"]
    assert all(len(ds_number(v)) <= 16 for v in (1e-7, -123456789.123456, 3e20))
    a, b = body_slice(3, 10, 64), body_slice(3, 10, 64)
    assert a.dtype == np.uint16 and np.array_equal(a, b) and a.max() <= 4095
    assert (a < 200).mean() > 0.2 and (a > 1700).any()  # air around the body, bone in it
    with pytest.raises(ValueError, match="2-D"):
        ct_slice(np.zeros((2, 2, 2), np.uint16), (0, 0, 0), series_uid="1.2")
    # the file reads back with the stored values and geometry it was built from
    ds = ct_slice(a.astype(np.int16), (-1.5, 2.0, 3.25), series_uid="1.2.3.9", pixel_spacing=(0.5, 0.75))
    ds.save_as(tmp_path / "one.dcm", enforce_file_format=True)
    back = pydicom.dcmread(tmp_path / "one.dcm")
    assert np.array_equal(back.pixel_array, a.astype(np.int16)) and back.PixelRepresentation == 1
    assert [float(v) for v in back.ImagePositionPatient] == [-1.5, 2.0, 3.25]
    assert [float(v) for v in back.PixelSpacing] == [0.5, 0.75]


def test_write_dicom_series_round_trip_matches_simpleitk(tmp_path: Path) -> None:
    import SimpleITK as sitk

    from lymphcad.geometry import CTVolume, Geometry
    from lymphcad.io.dicom.write import write_dicom_series

    a, b = np.deg2rad(12.0), np.deg2rad(-7.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    geom = Geometry((9, 14, 11), (2.5, 0.7, 0.9), (-120.25, 33.5, -410.0), rz @ rx)
    hu = np.random.default_rng(5).integers(-3024, 3071, size=geom.shape_zyx).astype(np.int16)
    files = write_dicom_series(CTVolume(hu, geom), tmp_path / "s", patient_id="RT")
    assert len(files) == 9
    back = read_dicom_series(tmp_path / "s")
    assert np.array_equal(back.array, hu)
    assert np.allclose(back.geometry.direction, geom.direction, atol=1e-6)
    assert np.allclose(back.geometry.origin_xyz, geom.origin_xyz, atol=1e-6)
    assert np.allclose(back.geometry.spacing_zyx, geom.spacing_zyx, atol=1e-6)
    # an independent reader agrees on the same files
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "s")))
    img = reader.Execute()
    assert np.array_equal(sitk.GetArrayFromImage(img), hu)
    assert np.allclose(np.array(img.GetDirection()).reshape(3, 3), geom.direction, atol=1e-5)
    assert np.allclose(img.GetOrigin(), geom.origin_xyz, atol=1e-4)
    assert np.allclose(img.GetSpacing(), geom.spacing_ijk, atol=1e-4)
    with pytest.raises(ValueError, match="left-handed"):
        write_dicom_series(
            CTVolume(hu, Geometry(geom.shape_zyx, geom.spacing_zyx, (0, 0, 0), np.diag([1.0, 1, -1]))),
            tmp_path / "x",
        )
