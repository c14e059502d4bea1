"""Checks every CT input passes, whatever its form (NIfTI, DICOM, NRRD/MetaImage): one place, one wording.

Errors (:class:`~lymphcad.errors.InputError`) for what cannot be a CT volume (a single slice, a 2D picture);
warnings (:class:`~lymphcad.errors.InputWarning`) for what reads but may mislead (NaN voxels, values that
cannot be Hounsfield units). Each message names the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from lymphcad.errors import InputError, InputWarning
from lymphcad.geometry import CTVolume

#: HU given to NaN voxels: air, so that they cannot look like tissue.
NAN_HU: Final = -1024.0
#: A CT in HU always holds air (−1000) or fat (−100) somewhere; no value below this suggests another unit.
LOWEST_PLAUSIBLE_MIN_HU: Final = -100


def warn_input(path: str | Path, problem: str) -> None:
    """Emit an :class:`InputWarning` naming ``path`` (printed by the CLI as one line)."""
    warnings.warn(f"{path}: {problem}", InputWarning, stacklevel=3)


def finite_hu(array: NDArray[Any], path: str | Path) -> NDArray[Any]:
    """``array`` with NaN/inf voxels set to air (−1024 HU), with one warning that says how many."""
    if array.dtype.kind != "f":
        return array
    bad = ~np.isfinite(array)
    n = int(np.count_nonzero(bad))
    if n:
        array = np.where(bad, np.asarray(NAN_HU, dtype=array.dtype), array)
        warn_input(
            path,
            f"{n:,} voxel(s) ({100 * n / array.size:.2g} %) are NaN or infinite; read as {NAN_HU:g} HU (air)",
        )
    return array


def check_volume(volume: CTVolume, path: str | Path) -> CTVolume:
    """Refuse what is not a 3D CT volume; warn when the values cannot be Hounsfield units. Returns ``volume``."""
    check_shape(volume.geometry.shape_zyx, path)
    warn_if_not_hu(volume, path)
    return volume


def check_shape(shape_zyx: tuple[int, int, int], path: str | Path) -> None:
    """Refuse a single slice or a 2D image (any axis of one voxel)."""
    nz, ny, nx = shape_zyx
    if min(nz, ny, nx) == 1:
        kind = "a single slice" if nz == 1 else "a 2D image"
        raise InputError(
            f"{kind} ({nx} × {ny} × {nz} voxels): lymphcad needs a 3D CT volume of several slices", path
        )


def warn_if_not_hu(volume: CTVolume, path: str | Path) -> None:
    """Warn (naming ``path``) when no voxel is below −100: no air and no fat, so probably not HU."""
    arr = volume.array
    sample = arr[:: max(1, arr.shape[0] // 64)]
    lo, hi = int(sample.min()), int(sample.max())
    if lo >= LOWEST_PLAUSIBLE_MIN_HU:
        warn_input(
            path,
            f"values {lo} … {hi} hold no air or fat (a CT in Hounsfield units has about −1000 HU outside the "
            "body): the image may not be in HU (an 8-bit picture, or stored values without their rescale)",
        )


def check_fits_model(volume: CTVolume, spacing_mm: float, where: str | Path, *, min_voxels: int = 8) -> None:
    """Refuse a volume smaller than ``min_voxels`` model voxels (of ``spacing_mm``) along any axis.

    The detector resamples to ``spacing_mm`` and downsamples by 8; a thinner volume holds no node either.
    """
    extent = [n * s for n, s in zip(volume.geometry.shape_zyx, volume.geometry.spacing_zyx, strict=True)]
    need = min_voxels * spacing_mm
    if min(extent) < need:
        z, y, x = extent
        raise InputError(
            f"the volume is too small for the detector: {x:.0f} × {y:.0f} × {z:.0f} mm (x × y × z), it needs at "
            f"least {need:g} mm along each axis",
            where,
        )


def check_text_file(path: str | Path, what: str = "CSV") -> None:
    """Refuse a file that is not UTF-8 text (e.g. an image given where a CSV belongs), naming it.

    Without this, Python's csv module fails later with a UnicodeDecodeError that names no file.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return  # the caller's own open() reports a missing or unreadable file
    nul = data.find(b"\0")
    if nul >= 0:
        raise InputError(f"not a text {what}: binary data (a NUL byte at offset {nul})", path)
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"not a UTF-8 text {what}: byte 0x{data[exc.start]:02x} at offset {exc.start} cannot be decoded "
            "(a binary file?)",
            path,
        ) from None


def count_duplicate_detections(
    case_ids: NDArray[Any], centers_xyz: NDArray[Any], probabilities: NDArray[Any]
) -> int:
    """How many detection rows repeat an earlier row's case, centre and probability exactly."""
    seen: set[tuple[str, float, float, float, float]] = set()
    dupes = 0
    for case, (x, y, z), p in zip(
        case_ids.tolist(), centers_xyz.tolist(), probabilities.tolist(), strict=True
    ):
        key = (str(case), float(x), float(y), float(z), float(p))
        dupes += key in seen
        seen.add(key)
    return dupes
