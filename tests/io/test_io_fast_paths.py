"""The fast paths behind ``lymphcad prepare``: DICOM header parser, streamed NIfTI writer, overlapped write."""

from __future__ import annotations

import gzip
import threading
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from lymphcad.cohort import CohortWriter, voxel_hash
from lymphcad.geometry import CTVolume, Geometry
from lymphcad.io import dicom
from lymphcad.io.dicom import header
from lymphcad.io.dicom import pixels as dicom_pixels
from lymphcad.io.dicom.write import ct_slice
from lymphcad.io.nifti import read_nifti, write_ct, write_nifti, write_nifti_slabs
from lymphcad.tcia.prepare_case import _write_ct_overlapped


def _ct_file(
    path: Path,
    z: float,
    *,
    syntax: str = ExplicitVRLittleEndian,
    description: str = "synthetic",
    sequences: bool = True,
) -> None:
    pixels = (np.arange(30, dtype=np.uint16) * 7 + int(z)).reshape(6, 5)
    ds = ct_slice(
        pixels,
        (-10.5, 20.0, z),
        series_uid="1.2.3.4",
        slice_thickness=1.25,
        bits_stored=12,
        description=description,
        syntax=syntax,
    )
    ds.Manufacturer = "ACME"
    if sequences:  # nested sequences before the tags the reader needs: written with undefined lengths
        inner = Dataset()
        inner.CodeValue = "X1"
        item = Dataset()
        item.ReferencedSOPInstanceUID = generate_uid()
        item.PurposeOfReferenceCodeSequence = Sequence([inner])
        ds.ReferencedImageSequence = Sequence([item, Dataset()])
        ds.ReferencedImageSequence.is_undefined_length = True
        item.PurposeOfReferenceCodeSequence.is_undefined_length = True
        for it in (item, inner):
            it.is_undefined_length_sequence_item = True
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_fast_header_equals_pydicom(tmp_path: Path, syntax: str) -> None:
    path = tmp_path / "a.dcm"
    _ct_file(path, 3.0, syntax=syntax)
    fast = header.fast_header(path)
    assert fast is not None
    ref = header.header_from_dataset(path, pydicom.dcmread(path, defer_size=16))  # pixels deferred
    assert fast.values == ref.values
    assert fast.values["ImagePositionPatient"] == "-10.5\\20\\3"
    assert fast.values["Rows"] == 6 and fast.values["ImageType"] == "ORIGINAL\\PRIMARY\\AXIAL"
    assert (fast.transfer_syntax, fast.media_sop_class, fast.has_pixels, fast.pixel_at) == (
        ref.transfer_syntax,
        ref.media_sop_class,
        ref.has_pixels,
        ref.pixel_at,
    )
    assert fast.ds is None  # pydicom was not used


def test_fast_header_falls_back_to_pydicom(tmp_path: Path) -> None:
    good = tmp_path / "good.dcm"
    _ct_file(good, 0.0, sequences=False)
    accented = tmp_path / "accented.dcm"
    _ct_file(accented, 1.0, description="Thorax Kontrastmittel ä")
    assert header.fast_header(accented) is None  # non-ASCII text: pydicom decodes it
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:300])
    assert header.fast_header(truncated) is None
    text = tmp_path / "notes.txt"
    text.write_text("not DICOM")
    assert header.fast_header(text) is None
    # the folder still reads: both good slices (one through each parser); the other files are skipped
    vol = dicom.read_dicom_series(tmp_path)
    assert vol.array.shape == (2, 6, 5)
    assert int(vol.array[1, 0, 0]) == 1 - 1024


def _geom(shape: tuple[int, int, int]) -> Geometry:
    return Geometry(shape, (2.5, 0.7, 0.8), (-10.0, 20.0, 30.0), np.diag([1.0, -1.0, 1.0]))


@pytest.mark.parametrize(
    ("dtype", "bits", "intercept", "low", "high"),
    [
        (np.int16, 16, -1024, -2000, 3071),  # the common clinical case (-3024 HU outside the scan field)
        (np.int16, 16, -1024, -32768, 3071),  # would leave int16: clipped
        (np.int16, 16, 0, -1024, 3071),
        (np.int16, 16, 1024, 30000, 32767),  # clipped at the top
        (np.uint16, 16, -1024, 0, 30000),
        (np.uint16, 16, -1024, 0, 40000),  # clipped
        (np.uint16, 16, 0, 0, 65535),  # clipped
        (np.uint16, 16, -32768, 0, 65535),  # fits exactly after the shift
        (np.uint16, 12, -1024, 0, 4095),
    ],
)
def test_native_pixels_equal_pydicom(
    tmp_path: Path, dtype: type, bits: int, intercept: int, low: int, high: int
) -> None:
    rng = np.random.default_rng(abs(bits + intercept))
    pixels = rng.integers(low, high, size=(24, 20), endpoint=True).astype(dtype)
    pixels[0, :2] = (low, high)
    path = tmp_path / "a.dcm"
    ct_slice(pixels, (0.0, 0.0, 0.0), series_uid="1.2", intercept=intercept, bits_stored=bits).save_as(
        path, enforce_file_format=True
    )
    h = header.fast_header(path)
    assert h is not None
    fast = np.empty(pixels.shape, np.int16)
    assert dicom_pixels.native_into(h, fast)  # no pydicom decoding for any of these
    ref = np.empty(pixels.shape, np.int16)
    dicom_pixels.rescale_into(pydicom.dcmread(path).pixel_array, h, ref, path)
    assert np.array_equal(fast, ref)
    assert np.array_equal(ref, np.clip(pixels.astype(np.int64) + intercept, -32768, 32767))


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8])
def test_write_nifti_equals_nibabel_bytes(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(0)
    arr: np.ndarray = rng.integers(0, 200, size=(40, 7, 9)).astype(dtype)
    geom = _geom(arr.shape)
    write_nifti(tmp_path / "a.nii.gz", arr, geom)
    img = nib.Nifti1Image(np.transpose(arr, (2, 1, 0)), geom.affine_ras())
    img.header.set_data_dtype(arr.dtype)
    img.header.set_sform(geom.affine_ras(), code=1)
    img.header.set_qform(geom.affine_ras(), code=1)
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    img.header.set_xyzt_units("mm", "sec")
    assert gzip.decompress((tmp_path / "a.nii.gz").read_bytes()) == img.to_bytes()
    write_nifti(tmp_path / "b.nii", np.asfortranarray(arr), geom)
    assert (tmp_path / "b.nii").read_bytes() == img.to_bytes()


def test_write_nifti_slabs_bytes_do_not_depend_on_timing(tmp_path: Path) -> None:
    arr = np.random.default_rng(1).integers(-1024, 2000, size=(37, 16, 16)).astype(np.int16)
    geom = _geom(arr.shape)
    write_nifti(tmp_path / "whole.nii.gz", arr, geom)
    write_nifti_slabs(tmp_path / "steps.nii.gz", arr, geom, [1, 3, 3, 20, 36, 37])
    write_nifti_slabs(tmp_path / "slabs.nii.gz", arr, geom, [16, 32, 37])
    whole = (tmp_path / "whole.nii.gz").read_bytes()
    assert (tmp_path / "steps.nii.gz").read_bytes() == whole
    assert (tmp_path / "slabs.nii.gz").read_bytes() == whole
    assert np.array_equal(read_nifti(tmp_path / "whole.nii.gz").array, arr)
    with pytest.raises(ValueError, match="only 20 of 37"):
        write_nifti_slabs(tmp_path / "short.nii.gz", arr, geom, [5, 20])
    assert not list(tmp_path.glob("*short*"))  # no file, no temporary left behind


def test_threaded_deflate_is_one_gzip_member_whatever_the_threads(tmp_path: Path) -> None:
    # 3.1 MB of voxels: four 1 MiB blocks deflated on different threads, joined into one member
    arr = np.random.default_rng(2).integers(-1024, 400, size=(48, 180, 180)).astype(np.int16)
    arr[:, :60] = -1024  # compressible, like air around a body
    geom = _geom(arr.shape)
    sizes = set()
    for threads in (1, 2, 3):
        write_nifti_slabs(tmp_path / f"t{threads}.nii.gz", arr, geom, [10, 30, 48], threads=threads)
        sizes.add((tmp_path / f"t{threads}.nii.gz").read_bytes())
    assert len(sizes) == 1  # byte-identical files
    packed = sizes.pop()
    d = zlib.decompressobj(31)
    raw = d.decompress(packed)
    assert d.eof and d.unused_data == b""  # a single gzip member with a valid CRC and size
    assert len(raw) == 352 + arr.nbytes and len(packed) < 0.9 * len(raw)
    img = sitk.ReadImage(str(tmp_path / "t3.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(img), arr)
    with pytest.raises(ValueError, match="threads"):
        write_nifti(tmp_path / "x.nii.gz", arr, geom, threads=0)


def test_overlapped_write_equals_sequential(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(40):  # more slices than one slab
        _ct_file(folder / f"{k:03d}.dcm", 2.0 * k, sequences=k % 2 == 0)
    stream = dicom.stream_dicom_series(folder)
    assert stream.geometry.shape_zyx == (40, 6, 5)
    digest = _write_ct_overlapped(CohortWriter(tmp_path / "a"), "CASE_1", stream)
    vol = dicom.read_dicom_series(folder)
    assert np.array_equal(stream.array, vol.array)
    assert digest == voxel_hash(vol.array)
    write_ct(tmp_path / "b.nii.gz", CTVolume(vol.array, vol.geometry))
    assert (tmp_path / "a" / "images" / "CASE_1.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()


@pytest.mark.parametrize("threads", [1, 2])
def test_overlapped_write_leaves_no_file_on_a_decoding_error(tmp_path: Path, threads: int) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(20):
        _ct_file(folder / f"{k:03d}.dcm", 2.0 * k)
    stream = dicom.stream_dicom_series(folder)
    last = folder / "019.dcm"
    last.write_bytes(last.read_bytes()[:-10])  # pixel data truncated after the headers were read
    before = threading.active_count()
    with pytest.raises(dicom.DicomSeriesError, match="truncated"):
        _write_ct_overlapped(CohortWriter(tmp_path / "a"), "CASE_1", stream, threads)
    assert not list((tmp_path / "a" / "images").iterdir())
    assert threading.active_count() == before  # the deflate threads were stopped and joined
