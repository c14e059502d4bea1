"""NRRD and MetaImage CT volumes (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``), read with SimpleITK.

These formats store LPS geometry as ITK does, so :meth:`Geometry.from_sitk` takes it over unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import SimpleITK as sitk
from numpy.typing import NDArray

from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume, Geometry, hu_to_int16
from lymphcad.io.checks import finite_hu

#: File endings read through SimpleITK, with the format's name for messages.
ITK_SUFFIXES: Final = {".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage"}


def itk_format(path: str | Path) -> str | None:
    """The format name when ``path`` ends in an NRRD/MetaImage suffix, else None."""
    name = Path(path).name.lower()
    return next((fmt for suffix, fmt in ITK_SUFFIXES.items() if name.endswith(suffix)), None)


def _problem(exc: RuntimeError) -> str:
    """SimpleITK's error without its C++ file/line preamble."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else exc.__class__.__name__
    return text.split(": ", 1)[-1] if "itk::" in text or ".cxx" in text else text


def read_itk_array(path: str | Path) -> tuple[NDArray[Any], Geometry]:
    """Read a 3D NRRD/MetaImage as (array in (z, y, x) order and its stored dtype, LPS geometry).

    A 4D image with one time point is taken as 3D; a 2D image comes back as one slice.
    """
    path = Path(path)
    fmt = itk_format(path) or "image"
    try:
        image: Any = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"not a readable {fmt} file ({_problem(exc)})", path) from exc
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{image.GetNumberOfComponentsPerPixel()} values per voxel (a colour or vector image), not a CT",
            path,
        )
    size = list(image.GetSize())
    if len(size) == 4 and size[3] == 1:
        image = image[:, :, :, 0]
        size = size[:3]
    if len(size) > 3:
        raise InputError(
            f"a {len(size)}D image (size {' × '.join(map(str, size))}); expected one 3D CT", path
        )
    if len(size) == 2:
        image = sitk.JoinSeries(image)
    return sitk.GetArrayFromImage(image), Geometry.from_sitk(image)


def read_itk_image(path: str | Path) -> CTVolume:
    """Read a 3D NRRD/MetaImage CT as int16 HU in LPS (NaN voxels become air, with a warning)."""
    array, geometry = read_itk_array(path)
    return CTVolume(hu_to_int16(finite_hu(array, path)), geometry)


def read_itk_shape(path: str | Path) -> tuple[int, int, int]:
    """The (z, y, x) size from an NRRD/MetaImage header alone (a 2D image as one slice; 4D refused)."""
    path = Path(path)
    reader: Any = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(
            f"not a readable {itk_format(path) or 'image'} file ({_problem(exc)})", path
        ) from exc
    size = [int(s) for s in reader.GetSize()]
    if len(size) > 3 and any(s > 1 for s in size[3:]):
        raise InputError(
            f"a {len(size)}D image (size {' × '.join(map(str, size))}); expected one 3D CT", path
        )
    nx, ny, nz = [*size, 1, 1][:3]
    return nz, ny, nx
