"""One entry point for CT input: a NIfTI file, a DICOM folder, or a single DICOM file."""

from __future__ import annotations

from pathlib import Path

from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume


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

    ``path`` may be a ``.nii``/``.nii.gz`` file, a folder of DICOM files (searched recursively; choose
    among several CT series with ``series_uid``), or one DICOM file. Anything else is an InputError.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path)
    if path.is_file() and _is_nifti(path):
        if series_uid is not None:
            raise InputError("series_uid applies to DICOM input, not to a NIfTI file", path)
        from lymphcad.io.nifti import read_nifti

        return read_nifti(path)
    from lymphcad.io.dicom import read_dicom_series

    if path.is_dir():
        return read_dicom_series(path, series_uid=series_uid, allow_gaps=allow_gaps, workers=workers)
    if path.is_file() and _is_dicom_file(path):
        return read_dicom_series([path], series_uid=series_uid, allow_gaps=allow_gaps)
    raise InputError("not a CT input: expected a .nii/.nii.gz file, a DICOM folder or a DICOM file", path)
