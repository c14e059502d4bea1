"""The CT readers on every real file in ../shared/data/real-ct (see its SOURCES.md).

References: SimpleITK (ImageSeriesReader with GDCM's sorted names, ImageFileReader) and the dcm2niix
summaries in _derived/. Skipped with a reason when ../shared is absent.
"""

from __future__ import annotations

import hashlib
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk

from lymphcad.geometry import CTVolume, Geometry
from lymphcad.io.dicom import (
    DicomSeriesError,
    dicom_summary,
    header,
    layout,
    list_series,
    pixels,
    read_dicom_series,
)
from lymphcad.io.nifti import read_nifti
from lymphcad.io.reader import read_ct

pytestmark = pytest.mark.real

SERIES = [
    "totalsegmentator/example_ct_dicom",  # J2K lossless, reversed file order, no SeriesInstanceUID
    "mirp-lidc-idri-0314",  # implicit VR, unsigned 12 bit, file names not in spatial order
    "dcmqi/ct-3slice",  # beside a SEG and NRRD masks in the parent folder
    "lungmask",  # no Modality tag
    "crlm-ct/CRLM-CT-1004",
    "crlm-ct/CRLM-CT-1006",
]
SINGLE_FILES = [
    "cornerstone-wado-testimages/CTImage.dcm",  # the uncompressed twin of the transfer-syntax variants
    "pydicom-data/bad_sequence.dcm",
    "pydicom-data/explicit_VR-UN.dcm",
    "pylibjpeg-data/ELSCINT1_JP2vsJ2K.dcm",
    "pylibjpeg-data/TOSHIBA_J2K_OpenJPEGv2Regression.dcm",
]
TS_DIR = "cornerstone-wado-testimages"
LOSSLESS = ["1.2.840.10008.1.2.1.dcm", "1.2.840.10008.1.2.2.dcm", "1.2.840.10008.1.2.1.99.dcm",
            "1.2.840.10008.1.2.dcm", "1.2.840.10008.1.2.4.57.dcm", "1.2.840.10008.1.2.4.70.dcm",
            "1.2.840.10008.1.2.4.80.dcm", "1.2.840.10008.1.2.4.90.dcm", "1.2.840.10008.1.2.5.dcm"]  # fmt: skip
#: SOURCES.md §8: max |ΔHU| of each lossy variant against the uncompressed twin (.53/.55 as SimpleITK decodes them)
LOSSY = {"1.2.840.10008.1.2.4.81.dcm": 1, "1.2.840.10008.1.2.4.91.dcm": 5, "1.2.840.10008.1.2.4.51.dcm": 36,
         "1.2.840.10008.1.2.4.50.dcm": 64, "1.2.840.10008.1.2.4.53.dcm": 36, "1.2.840.10008.1.2.4.55.dcm": 36}  # fmt: skip
NIFTIS = [
    "totalsegmentator/example_ct.nii.gz",  # int32, sform only (code 2)
    "totalsegmentator/example_ct_sm.nii.gz",
    "totalsegmentator/example_seg.nii.gz",
    "_derived/dcm2niix_v1.0.20260724/ct3slice.nii.gz",  # qfac -1, scl_inter -1024 on disk
    # holdout: read only to check the reader's geometry against SimpleITK (no training/tuning)
    "holdout/totalsegmentator-chest/pulmonary_ct_cropped.nii.gz",
    "holdout/totalsegmentator-chest/aorta_ct_cropped.nii.gz",
]
DERIVED = "_derived/dcm2niix_v1.0.20260724"


def _ts_file(real: Path, suffix: str) -> Path:
    if suffix == "1.2.840.10008.1.2.dcm":
        return real / TS_DIR / "CTImage.dcm_LittleEndianImplicitTransferSyntax_1.2.840.10008.1.2.dcm"
    hits = [p for p in (real / TS_DIR).iterdir() if p.name.endswith("_" + suffix)]
    assert len(hits) == 1, suffix
    return hits[0]


def _sitk_series(folder: Path) -> Any:
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
    return r.Execute()


def _assert_matches_sitk(vol: CTVolume, img: Any, *, exact: bool = True) -> None:
    ref = Geometry.from_sitk(img)
    assert vol.geometry.grid_differences(ref, atol_mm=1e-4, atol_dir=1e-4) == []
    assert vol.array.dtype == np.int16
    arr = sitk.GetArrayFromImage(img)
    if exact:
        np.testing.assert_array_equal(vol.array.astype(np.int64), arr.astype(np.int64))
    # Geometry.index_to_world agrees with ITK's TransformIndexToPhysicalPoint
    sx, sy, sz = img.GetSize()
    for idx in [
        (0, 0, 0),
        (sx - 1, 0, 0),
        (0, sy - 1, sz - 1),
        (sx // 3, sy // 2, sz - 1),
        (sx - 1, sy - 1, sz // 2),
    ]:
        ours = vol.geometry.index_to_world(np.asarray(idx, dtype=float))
        theirs = img.TransformIndexToPhysicalPoint([int(v) for v in idx])
        np.testing.assert_allclose(ours, theirs, atol=1e-3)


@pytest.mark.parametrize("rel", SERIES)
def test_series_equals_simpleitk(real_ct_dir: Path, rel: str) -> None:
    vol = read_dicom_series(real_ct_dir / rel)
    _assert_matches_sitk(vol, _sitk_series(real_ct_dir / rel))
    # the volume's slice axis is the slice normal, pointing from slice 0 to slice 1
    d = vol.geometry.direction
    np.testing.assert_allclose(np.cross(d[:, 0], d[:, 1]), d[:, 2], atol=1e-6)


def test_series_with_two_workers_is_identical(real_ct_dir: Path) -> None:
    rel = real_ct_dir / "totalsegmentator/example_ct_dicom"
    a = read_dicom_series(rel)
    b = read_dicom_series(rel, workers=2)
    np.testing.assert_array_equal(a.array, b.array)
    assert a.geometry.same_grid(b.geometry)


@pytest.mark.parametrize("rel", SINGLE_FILES)
def test_single_file_equals_simpleitk(real_ct_dir: Path, rel: str) -> None:
    vol = read_ct(real_ct_dir / rel)
    _assert_matches_sitk(vol, sitk.ReadImage(str(real_ct_dir / rel)))


def test_explicit_vr_un_flipped_rows(real_ct_dir: Path) -> None:
    """IOP [1,0,0, 0,-1,0]: rows run anterior; kept as stored, the direction says so (as in SimpleITK)."""
    vol = read_ct(real_ct_dir / "pydicom-data/explicit_VR-UN.dcm")
    np.testing.assert_allclose(vol.geometry.direction, np.diag([1.0, -1.0, -1.0]), atol=1e-9)
    assert vol.geometry.orientation_codes() == "LAI"
    # rows run towards anterior (-y): row 511 lies 439 mm anterior of row 0
    np.testing.assert_allclose(
        vol.geometry.index_to_world([0, 511, 0]), (0.0, -511 * 0.859375, -121.0), atol=1e-3
    )


@pytest.mark.parametrize("suffix", LOSSLESS)
def test_lossless_transfer_syntax_equals_twin(real_ct_dir: Path, suffix: str) -> None:
    ref = read_ct(real_ct_dir / TS_DIR / "CTImage.dcm")
    vol = read_ct(_ts_file(real_ct_dir, suffix))
    np.testing.assert_array_equal(vol.array, ref.array)
    assert vol.geometry.same_grid(ref.geometry)


@pytest.mark.parametrize(("suffix", "max_err"), sorted(LOSSY.items()))
def test_lossy_transfer_syntax_within_recorded_error(real_ct_dir: Path, suffix: str, max_err: int) -> None:
    ref = read_ct(real_ct_dir / TS_DIR / "CTImage.dcm")
    vol = read_ct(_ts_file(real_ct_dir, suffix))
    diff = np.abs(vol.array.astype(np.int32) - ref.array.astype(np.int32))
    assert 0 < diff.max() <= max_err
    assert vol.geometry.same_grid(ref.geometry)


@pytest.mark.parametrize(
    ("rel", "words"),
    [
        ("pydicom-data/eCT_Supplemental.dcm", "enhanced multi-frame CT"),
        ("pylibjpeg-data/MAROTECH_CT_JP2Lossy.dcm", "localizer"),
        ("pylibjpeg-data/TOSHIBA_J2K_SIZ0_PixRep1.dcm", "multiplanar reformat"),
        ("dcm_qa_ct/In/GE", "gantry-tilted"),
        ("dcmqi/liver.dcm", "no CT image series"),
    ],
)
def test_rejected_with_clear_message(real_ct_dir: Path, rel: str, words: str) -> None:
    with pytest.raises(DicomSeriesError, match=words):
        read_ct(real_ct_dir / rel)


def _summaries(real: Path) -> dict[str, Any]:
    items: dict[str, Any] = json.loads((real / DERIVED / "reference_summaries.json").read_text())["items"]
    return items


def _las_hash(vol_kji: np.ndarray, dtype: str) -> str:
    """The summaries' hash rule for an axial LPS stack: NIfTI [i, j, k] with rows flipped (LAS), LE bytes."""
    arr = np.ascontiguousarray(np.transpose(vol_kji, (2, 1, 0))[:, ::-1, :]).astype(
        np.dtype(dtype).newbyteorder("<")
    )
    return hashlib.sha256(arr.tobytes()).hexdigest()


def _check_summary(vol: np.ndarray, ref: dict[str, Any]) -> None:
    nii = np.transpose(vol, (2, 1, 0))[:, ::-1, :]
    assert list(nii.shape) == ref["shape"]
    assert int(nii.min()) == ref["min"] and int(nii.max()) == ref["max"]
    assert int(nii.astype(np.int64).sum()) == ref["sum"]
    for key, value in ref["probes"].items():
        assert int(nii[tuple(json.loads(key))]) == value, key
    assert _las_hash(vol, ref["dtype"]) == ref["sha256"]


@pytest.mark.parametrize(
    ("rel", "name"),
    [("totalsegmentator/example_ct_dicom", "0_CT_Body_3.0.nii.gz"), ("dcmqi/ct-3slice", "ct3slice.nii.gz")],
)
def test_series_equals_dcm2niix_summary(real_ct_dir: Path, rel: str, name: str) -> None:
    ref = _summaries(real_ct_dir)[name]
    vol = read_dicom_series(real_ct_dir / rel)
    _check_summary(vol.array, ref)
    np.testing.assert_allclose(vol.geometry.spacing_ijk, ref["zooms"], atol=1e-4)
    # dcm2niix's RAS sform == our LPS affine with rows flipped
    flip = np.eye(4)
    flip[1, 1], flip[1, 3] = -1, vol.shape_zyx[1] - 1
    np.testing.assert_allclose(vol.geometry.affine_ras() @ flip, ref["sform"], atol=1e-3)


def test_ct3slice_nifti_equals_its_dicom(real_ct_dir: Path) -> None:
    """dcm2niix's NIfTI (qfac -1, scl_inter -1024) and the DICOM series give the same HU and grid."""
    nii = read_nifti(real_ct_dir / DERIVED / "ct3slice.nii.gz")
    dic = read_dicom_series(real_ct_dir / "dcmqi/ct-3slice")
    assert nii.geometry.orientation_codes() == "LAS"
    # the same world points carry the same HU
    flipped = nii.array[:, ::-1, :]
    np.testing.assert_array_equal(flipped, dic.array)
    np.testing.assert_allclose(
        nii.geometry.index_to_world([0, 511, 0]), dic.geometry.index_to_world([0, 0, 0]), atol=1e-3
    )


def test_tilted_ge_series_sorted_like_dcm2niix(real_ct_dir: Path) -> None:
    """Rejected for reading, but the sort along the normal is checked: the raw stack equals dcm2niix's _2.nii."""
    files, _ = header.expand_inputs(real_ct_dir / "dcm_qa_ct/In/GE")
    (_, headers), = header.scan_series(files).items()  # fmt: skip
    slices = layout.layout_slices(headers, allow_gaps=True, _allow_tilt=True)
    vol = pixels.decode_all(slices.headers, slices.rows, slices.cols, 1)
    _check_summary(vol, _summaries(real_ct_dir)["_2.nii.gz"])
    assert slices.gaps  # 4.0 mm, then 1.08 mm, then 7.0 mm steps


def _unzip_dupe(real: Path, tmp: Path) -> Path:
    out = tmp / "dupe"
    with zipfile.ZipFile(real / "dicom-numpy/dupe-positions.zip") as z:
        z.extractall(out)
    return out


def test_duplicate_and_missing_slices(real_ct_dir: Path, tmp_path: Path) -> None:
    folder = _unzip_dupe(real_ct_dir, tmp_path)
    with pytest.raises(DicomSeriesError, match="duplicate slice position"):
        read_dicom_series(folder)
    # the sorted, de-duplicated stack is dcm2niix's dupe.nii.gz
    files, _ = header.expand_inputs(folder)
    (_, headers), = header.scan_series(files).items()  # fmt: skip
    slices = layout.layout_slices(headers, allow_gaps=True, _max_gap_mm=200.0)
    assert slices.dropped_duplicates == 1 and len(slices.headers) == 10
    _check_summary(
        pixels.decode_all(slices.headers, slices.rows, slices.cols, 1), _summaries(real_ct_dir)["dupe.nii.gz"]
    )
    # allow_gaps drops the duplicate but does not bridge this series' 115 mm gap (dcm2niix's _Eq_1 does:
    # 470 mm resampled from 10 slices): a gap wider than 10 mm or two slice steps means missing anatomy
    with pytest.raises(DicomSeriesError, match=r"largest gap is 115.0 mm and --allow-gaps bridges at most"):
        read_dicom_series(folder, allow_gaps=True)
    summary = dicom_summary(folder, hu_range=False)
    assert summary["readable"] is False and "duplicate" in summary["problem"]


def test_dicom_summary_and_list_series(real_ct_dir: Path) -> None:
    s = dicom_summary(real_ct_dir / "totalsegmentator/example_ct_dicom")
    assert s["readable"] and s["n_slices"] == 20 and s["orientation"] == "LPS"
    assert s["transfer_syntaxes"] == ["1.2.840.10008.1.2.4.90"] and s["manufacturer"] == "SIEMENS"
    ref = _summaries(real_ct_dir)["0_CT_Body_3.0.nii.gz"]
    assert (s["hu_min"], s["hu_max"]) == (ref["min"], ref["max"])
    assert s["spacing_zyx"] == pytest.approx([2.0, 0.9765625, 0.9765625])
    assert "PatientName" not in json.dumps(s)
    found = list_series(real_ct_dir / "dcmqi")  # the SEG and the NRRD files are ignored
    assert [x.n_files for x in found] == [3]
    with pytest.raises(DicomSeriesError, match="CT series found, choose one"):
        read_dicom_series(real_ct_dir / "crlm-ct")
    uid = list_series(real_ct_dir / "crlm-ct/CRLM-CT-1006")[0].series_uid
    assert read_dicom_series(real_ct_dir / "crlm-ct", series_uid=uid).shape_zyx[0] == 51


@pytest.mark.parametrize("rel", NIFTIS)
def test_nifti_equals_simpleitk(real_ct_dir: Path, rel: str) -> None:
    path = real_ct_dir / rel
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vol = read_nifti(path)
    img = sitk.ReadImage(str(path))
    _assert_matches_sitk(vol, img)
