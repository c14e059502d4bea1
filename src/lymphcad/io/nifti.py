"""NIfTI-1 read/write with the project's geometry (RAS on disk ↔ LPS in memory via lymphcad.geometry).

Geometry is read exactly as ITK/SimpleITK 2.5 (ITK 5.4 ``NiftiImageIO``) reads it, so that a file gives the
same world coordinates here and in SimpleITK-based tools:

* **spacing** = ``pixdim[1..3]`` (not the column norms of the chosen matrix), scaled by ``xyzt_units``
  (metre ×1000, micron ×0.001, else mm);
* **origin / direction** come from *one* of the two header transforms. ITK's rule
  (``SetImageIOOrientationFromNIfTI``), reproduced in :func:`itk_choose_transform`:

  1. both ``qform_code`` and ``sform_code`` unknown (0) → origin 0, identity direction;
  2. ``prefer_sform`` starts as "sform and qform agree" (3×3 within 1e-5 element-wise, translation and
     bottom row within 1e-7, in float32);
  3. if that is false *or* the sform code is set: when the sform's 3×3, with its columns normalised, is
     orthonormal (``R Rᵀ = I`` within 1e-4) — i.e. decomposable without skew — the sform is preferred when
     the qform code is 0, or when ``sform_code == 1`` (SCANNER_ANAT), or (codes 2/3/4 with a known qform)
     when an SVD comparison finds the two nearly equal (rotations, singular values, offsets within 1e-4);
  4. otherwise the qform is used when its code is set; else the file is rejected (no orthonormal
     transform). A **sheared sform** (e.g. dcm2niix's output for a gantry-tilted CT) therefore falls back
     to the qform, whereas nibabel's ``img.affine`` would use the sheared sform.

  The direction is the chosen matrix's columns normalised (then snapped to the nearest rotation, a change
  below 1e-4), with LPS = diag(-1, -1, 1)·RAS. ``ITK_NIFTI_SFORM_PERMISSIVE`` (off by default) is not
  emulated.
* **scaling** is taken from the header *as stored on disk* (nibabel's ``img.header`` shows NaN for
  ``scl_slope``/``scl_inter`` after loading even when the file holds 1 / -1024). As nifti1_io/ITK, a non-finite ``scl_slope`` or ``scl_inter`` counts as 0, and a slope of 0
  means 1. Scaling is applied only when slope ≠ 1 or intercept ≠ 0; otherwise the stored integers are
  returned unchanged (so ``scl_slope = NaN`` gives the raw stored values, kept integer).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

import nibabel as nib
import numpy as np
from isal import igzip, igzip_threaded
from numpy.typing import NDArray

from lymphcad.atomic import atomic_path
from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume, Geometry, hu_to_int16
from lymphcad.io.checks import finite_hu, warn_input

_XFORM_UNKNOWN = 0
#: slices handed to the deflater at a time when writing (with _BLOCK, the output depends on it: keep it fixed)
_SLAB = 16
#: bytes per independently deflated block (each primed with the previous block's last 32 KiB, as pigz does)
_BLOCK = 1 << 20
_XFORM_SCANNER_ANAT = 1


def _load(path: Path) -> Any:
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for a bad file
        raise InputError(f"not a readable NIfTI file ({exc.__class__.__name__}: {exc})", path) from exc


def _load_full(path: Path) -> Any:
    """Load header and voxels; a ``.nii.gz`` is inflated with ISA-L (about twice zlib's speed)."""
    if path.name.lower().endswith(".gz"):
        try:
            packed = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read ({exc.strerror or exc})", path) from exc
        try:
            raw = igzip.decompress(packed)
        except Exception as exc:
            raise InputError(f"not a readable NIfTI file (bad gzip stream: {exc})", path) from exc
        if len(raw) >= 348 and int.from_bytes(raw[:4], "little") in (348, 348 << 24):
            try:
                return nib.Nifti1Image.from_bytes(raw)
            except Exception as exc:
                raise InputError(
                    f"not a readable NIfTI file ({exc.__class__.__name__}: {exc})", path
                ) from exc
    return _load(path)


def _shape3(img: Any, path: Path) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        size = " × ".join(str(int(s)) for s in img.shape)
        raise InputError(f"a {len(shape)}D image (size {size}); expected one 3D CT volume", path)
    return (shape[0], shape[1], shape[2])


def _fixed(value: Any) -> float:
    """nifti1_io's FIXED_FLOAT: a non-finite header float reads as 0."""
    v = float(value)
    return v if math.isfinite(v) else 0.0


def _is_orthonormal_without_skew(m3: NDArray[np.float32]) -> bool:
    norms = np.linalg.norm(m3.astype(np.float64), axis=0)
    if np.any(norms == 0):
        return False
    rot = (m3.astype(np.float64) / norms[None, :]).astype(np.float32)
    cand = rot.astype(np.float64) @ rot.astype(np.float64).T
    return bool(np.all(np.abs(cand - np.eye(3)) <= 1e-4))


def _very_similar_svd(sform: NDArray[np.float32], qform: NDArray[np.float32]) -> bool:
    us, ws, _ = np.linalg.svd(sform[:3, :3].astype(np.float64))
    uq, wq, _ = np.linalg.svd(qform[:3, :3].astype(np.float64))
    cand = us @ np.linalg.inv(uq)
    return bool(
        np.all(np.abs(ws - wq) <= 1e-4)
        and np.all(np.abs(cand - np.eye(3)) <= 1e-4)
        and np.all(np.abs(sform[:3, 3] - qform[:3, 3]) <= 1e-4)
        and np.all(np.abs(sform[3] - qform[3]) <= 1e-4)
    )


def itk_choose_transform(header: Any) -> tuple[str, NDArray[np.float64] | None]:
    """Which header transform ITK uses: ``("sform", M)``, ``("qform", M)`` or ``("none", None)``.

    ``M`` is the 4×4 RAS matrix as nifti1_io holds it (float32 precision). Raises ``ValueError`` when ITK
    would refuse the file (no orthonormal transform).
    """
    scode = int(header["sform_code"])
    qcode = int(header["qform_code"])
    scode = scode if scode > 0 else _XFORM_UNKNOWN
    qcode = qcode if qcode > 0 else _XFORM_UNKNOWN
    if scode == _XFORM_UNKNOWN and qcode == _XFORM_UNKNOWN:
        return "none", None
    pix = np.abs(np.asarray(header["pixdim"][1:4], dtype=np.float64))
    pix = np.where(pix > 0, pix, 1.0)
    if scode != _XFORM_UNKNOWN:
        sform = np.asarray(header.get_sform(), dtype=np.float32)
    else:
        sform = np.zeros((4, 4), dtype=np.float32)
    if qcode != _XFORM_UNKNOWN:
        qform = np.asarray(header.get_qform(), dtype=np.float32)
    else:
        qform = np.diag([*pix, 1.0]).astype(np.float32)

    similar = bool(
        np.all(np.abs(sform[:3, :3] - qform[:3, :3]) <= 1e-5)
        and np.abs(sform[:, 3] - qform[:, 3]).sum() <= 1e-7
        and np.abs(sform[3] - qform[3]).sum() <= 1e-7
    )
    prefer_sform = similar
    if not prefer_sform or scode != _XFORM_UNKNOWN:
        is_affine = bool(np.allclose(sform[3], [0, 0, 0, 1]) and abs(np.linalg.det(sform[:3, :3])) > 0)
        if is_affine and _is_orthonormal_without_skew(sform[:3, :3]):
            if (qcode == _XFORM_UNKNOWN and scode != _XFORM_UNKNOWN) or scode == _XFORM_SCANNER_ANAT:
                prefer_sform = True
            elif qcode != _XFORM_UNKNOWN and scode != _XFORM_UNKNOWN:
                prefer_sform = _very_similar_svd(sform, qform)
    if prefer_sform:
        return "sform", sform.astype(np.float64)
    if qcode != _XFORM_UNKNOWN:
        return "qform", qform.astype(np.float64)
    raise ValueError("no orthonormal transform in the header (sheared sform and no qform)")


def _spacing_scale(header: Any) -> float:
    units = int(header["xyzt_units"]) & 0x07
    return {1: 1e3, 2: 1.0, 3: 1e-3}.get(units, 1.0)


def _geometry_from_header(header: Any, shape_xyz: tuple[int, int, int], path: Path) -> Geometry:
    try:
        _which, mat = itk_choose_transform(header)
    except ValueError as exc:
        raise InputError(str(exc), path) from exc
    pix = np.abs(np.asarray(header["pixdim"][1:4], dtype=np.float64)) * _spacing_scale(header)
    pix = np.where(pix > 0, pix, 1.0)
    nx, ny, nz = shape_xyz
    if mat is None:
        warn_input(
            path,
            "qform_code and sform_code are both 0 (no orientation stored): read as LPS axes with origin 0, "
            "as ITK does; world positions and left/right may be wrong",
        )
        return Geometry((nz, ny, nx), (pix[2], pix[1], pix[0]), (0.0, 0.0, 0.0), np.eye(3))
    return Geometry.from_affine_ras(
        mat, (nz, ny, nx), spacing_zyx=(float(pix[2]), float(pix[1]), float(pix[0]))
    )


def _disk_header(path: Path) -> Any:
    """The header exactly as stored (nibabel resets ``scl_slope``/``scl_inter`` to NaN in ``img.header``)."""
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as fobj:
        return nib.Nifti1Header.from_fileobj(fobj, check=False)


def _itk_scaling(header: Any) -> tuple[float, float]:
    slope = _fixed(header["scl_slope"])
    inter = _fixed(header["scl_inter"])
    if abs(slope) < np.finfo(np.float64).eps:
        slope = 1.0
    return slope, inter


def header_geometry(path: str | Path) -> Geometry:
    """Geometry from the header alone (no voxel data is decompressed), as SimpleITK reads it."""
    path = Path(path)
    img = _load(path)
    return _geometry_from_header(img.header, _shape3(img, path), path)


def read_nifti_array(path: str | Path) -> tuple[NDArray[Any], Geometry]:
    """Read a 3D NIfTI as (array in (z, y, x) order, geometry).

    The header's scaling is applied as ITK applies it (see the module notes): when it is the identity —
    including ``scl_slope`` = NaN or 0 — the stored values come back unchanged in the stored dtype;
    otherwise a float array (float32 for ≤16-bit integers, else float64) is returned.
    """
    path = Path(path)
    img = _load_full(path)
    shape = _shape3(img, path)
    try:
        raw = np.asarray(img.dataobj.get_unscaled()).reshape(shape)
    except Exception as exc:
        raise InputError(f"cannot read the voxel data ({exc.__class__.__name__}: {exc})", path) from exc
    try:
        slope, inter = _itk_scaling(_disk_header(path))
    except Exception as exc:
        raise InputError(f"cannot read the NIfTI header ({exc.__class__.__name__}: {exc})", path) from exc
    data: NDArray[Any] = raw
    if slope != 1.0 or inter != 0.0:
        ftype = np.float32 if raw.dtype.itemsize <= 2 and raw.dtype.kind in "iu" else np.float64
        data = raw.astype(ftype)
        data *= ftype(slope)
        data += ftype(inter)
    array = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
    geom = _geometry_from_header(img.header, shape, path)
    return array, geom


def read_nifti(path: str | Path) -> CTVolume:
    """Read a CT NIfTI as int16 HU (rounded half away from zero, clipped to int16)."""
    array, geom = read_nifti_array(path)
    return CTVolume(hu_to_int16(finite_hu(array, path)), geom)


def nifti_header_bytes(array: NDArray[Any], geometry: Geometry) -> bytes:
    """The NIfTI-1 header (with its empty extension block, up to ``vox_offset``) for ``array`` in ``geometry``.

    Both sform and qform hold the same rigid transform (code 1, SCANNER_ANAT), so ITK, nibabel and this
    module read back the same geometry; ``scl_slope`` 1, ``scl_inter`` 0, units mm/s, little-endian.
    """
    if tuple(array.shape) != geometry.shape_zyx:
        raise ValueError(f"array shape {array.shape} != geometry {geometry.shape_zyx}")
    affine = geometry.affine_ras()
    hdr: Any = nib.Nifti1Header(endianness="<")
    hdr.set_data_shape(tuple(reversed(array.shape)))
    hdr.set_data_dtype(array.dtype)
    hdr.set_sform(affine, code=1)
    hdr.set_qform(affine, code=1)
    hdr["scl_slope"] = 1.0
    hdr["scl_inter"] = 0.0
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_data_offset(352)
    buf = io.BytesIO()
    hdr.write_to(buf)
    return buf.getvalue().ljust(int(hdr.get_data_offset()), b"\0")


def write_nifti(
    path: str | Path, array: NDArray[Any], geometry: Geometry, *, compresslevel: int = 1, threads: int = 1
) -> None:
    """Write a (z, y, x) array with its geometry atomically; the dtype is kept (int16 CT, uint16/uint8 masks).

    The voxels go to the deflater straight from the array's buffer: a C-ordered (z, y, x) array is the
    NIfTI's (x, y, z) Fortran order, so no transposed copy and no ``to_bytes`` copy is made. ``.nii.gz`` is
    one standard gzip member deflated by ISA-L at ``compresslevel`` (0–3; 1 by default: on CT, level 0 is
    only ~5 % faster and its files are 13–19 % larger) in 1 MiB blocks on ``threads`` threads, pigz-style
    (each block primed with the previous block's last 32 KiB); mtime 0. The bytes depend on neither the
    thread count nor the timing, so the same input always gives the same file.
    """
    data = np.ascontiguousarray(array, dtype=np.asarray(array).dtype.newbyteorder("<"))
    write_nifti_slabs(path, data, geometry, [data.shape[0]], compresslevel=compresslevel, threads=threads)


def write_nifti_slabs(
    path: str | Path,
    array: NDArray[Any],
    geometry: Geometry,
    ready: Iterable[int],
    *,
    compresslevel: int = 1,
    threads: int = 1,
) -> None:
    """:func:`write_nifti` for an array that is still being filled, in z order (e.g. by a DICOM reader).

    ``ready`` yields how many leading z-slices of ``array`` are final so far; each newly final run of slices
    is queued for deflating at once (ISA-L releases the GIL, so ``threads`` deflate threads overlap with the
    filling). ``array`` must be C-contiguous and little-endian. If ``ready`` ends before every slice is
    final, nothing is written and ValueError is raised. The file is the same as :func:`write_nifti` writes.
    """
    if tuple(array.shape) != geometry.shape_zyx:
        raise ValueError(f"array shape {array.shape} != geometry {geometry.shape_zyx}")
    if not array.flags.c_contiguous or array.dtype.byteorder == ">":
        raise ValueError("write_nifti_slabs needs a C-contiguous little-endian array")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    head = nifti_header_bytes(array, geometry)
    n = int(array.shape[0])
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        out: BinaryIO = (
            igzip_threaded.open(fh, "wb", compresslevel=compresslevel, threads=threads, block_size=_BLOCK)
            if tmp.name.lower().endswith(".gz")
            else fh
        )
        try:
            out.write(head)
            # fixed slabs of _SLAB slices, whatever ``ready`` announces: the bytes never depend on the timing
            done = filled = 0
            for k in ready:
                filled = max(filled, min(int(k), n))
                while done < n and (done + _SLAB <= filled or filled == n):
                    out.write(array[done : min(n, done + _SLAB)].data.cast("B"))
                    done = min(n, done + _SLAB)
            if done != n:
                raise ValueError(f"only {filled} of {n} slices were filled")
        finally:
            if out is not fh:
                out.close()  # also joins the deflate threads when an error stopped the writing


def write_ct(path: str | Path, volume: CTVolume) -> None:
    """Write a CT volume as int16 NIfTI."""
    write_nifti(path, hu_to_int16(volume.array), volume.geometry)
