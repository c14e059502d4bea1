"""One entry point for CT input: a NIfTI, NRRD or MetaImage file, a DICOM folder, or a DICOM file.

Commands read their CT through :func:`read_ct_input`, which adds the checks every input passes whatever
its form (:func:`lymphcad.io.checks.check_volume`: 3D, not a single slice, plausible HU).
"""

from __future__ import annotations

from pathlib import Path

from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume
from lymphcad.io.checks import check_shape, check_volume
from lymphcad.io.itkimage import itk_format, read_itk_image, read_itk_shape


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _is_dicom_file(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    from lymphcad.io.dicom.header import read_header

    return read_header(path) is not None


def read_ct(
    path: str | Path, *, series_uid: str | None = None, allow_gaps: bool = False, workers: int = 1
) -> CTVolume:
    """Read a CT as int16 HU in LPS geometry.

    ``path`` may be a ``.nii``/``.nii.gz``, ``.nrrd``/``.nhdr`` or ``.mha``/``.mhd`` file, a folder of DICOM
    files (searched recursively; choose among several CT series with ``series_uid``, the CLI's
    ``--series``), or one DICOM file (a single slice is returned as a one-slice volume). Anything else is an
    InputError.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path)
    image_file = path.is_file() and (_is_nifti(path) or itk_format(path) is not None)
    if image_file and series_uid is not None:
        raise InputError("--series applies to DICOM input, not to an image file", path)
    volume: CTVolume
    if path.is_file() and _is_nifti(path):
        from lymphcad.io.nifti import read_nifti

        volume = read_nifti(path)
    elif image_file:
        volume = read_itk_image(path)
    else:
        from lymphcad.io.dicom import read_dicom_series

        if path.is_dir():
            volume = read_dicom_series(path, series_uid=series_uid, allow_gaps=allow_gaps, workers=workers)
        elif path.is_file() and _is_dicom_file(path):
            volume = read_dicom_series([path], series_uid=series_uid, allow_gaps=allow_gaps)
        else:
            raise InputError(
                "not a CT input: expected a .nii/.nii.gz, .nrrd or .mha/.mhd file, a DICOM folder or a DICOM "
                "file",
                path,
            )
    return volume


def read_ct_input(
    path: str | Path, *, series_uid: str | None = None, allow_gaps: bool = False, workers: int = 1
) -> CTVolume:
    """:func:`read_ct` for a command's CT input: a single slice or a 2D image is an InputError, and values
    that cannot be HU give a warning."""
    volume = read_ct(path, series_uid=series_uid, allow_gaps=allow_gaps, workers=workers)
    return check_volume(volume, path)


def precheck_ct_input(path: str | Path, *, series_uid: str | None = None, allow_gaps: bool = False) -> None:
    """From headers alone, what :func:`read_ct_input` would refuse (a single slice, a 4D image, no or several
    CT series, gaps); a cohort folder is opened and checked. Lets a command fail in a moment, before it
    loads heavy libraries or a model."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_dir() and (path / "dataset.json").is_file():
        from lymphcad.cohort import open_cohort

        open_cohort(path)
        return
    image_file = path.is_file() and (_is_nifti(path) or itk_format(path) is not None)
    if image_file and series_uid is not None:
        raise InputError("--series applies to DICOM input, not to an image file", path)
    if path.is_file() and _is_nifti(path):
        from lymphcad.io.nifti import header_geometry

        check_shape(header_geometry(path).shape_zyx, path)
    elif image_file:
        check_shape(read_itk_shape(path), path)
    elif path.is_dir() or (path.is_file() and _is_dicom_file(path)):
        from lymphcad.io.dicom import DicomSeriesError, dicom_summary

        summary = dicom_summary(path if path.is_dir() else [path], series_uid=series_uid, hu_range=False)
        if "size_ijk" not in summary:
            raise DicomSeriesError(summary["problem"], path)
        if summary["n_slices"] == 1:
            check_shape((1, *summary["size_ijk"][1::-1]), path)
        if summary["gaps"] and not allow_gaps:
            raise DicomSeriesError(
                summary["problem"] + "; pass --allow-gaps to resample to uniform spacing", path
            )
        if summary["gaps"] and summary.get("allow_gaps_problem"):
            raise DicomSeriesError(summary["allow_gaps_problem"], path)
    else:
        raise InputError(
            "not a CT input: expected a .nii/.nii.gz, .nrrd or .mha/.mhd file, a DICOM folder or a DICOM file",
            path,
        )
