"""Step 6 of reading a DICOM CT series: decode the pixels straight into a preallocated int16 array.

HU = round(RescaleSlope·raw + RescaleIntercept), rounded half away from zero and clipped to int16.
Uncompressed little-endian data is read directly from the file offset; compressed data goes through
pydicom's decoders (pylibjpeg/openjpeg/libjpeg/RLE); the retired lossy JPEG processes 6–8/10–12
(…4.53/…4.55), which pydicom cannot decode, fall back to SimpleITK (GDCM) for those slices.
``workers > 1`` decodes in forked worker processes writing into shared memory (Linux).
"""

from __future__ import annotations

import math
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lymphcad.geometry import hu_to_int16
from lymphcad.io.dicom.header import NATIVE_LE, DicomSeriesError, SliceHeader

#: Retired lossy JPEG processes that pydicom cannot decode: handed to SimpleITK (GDCM).
_RETIRED_JPEG = {"1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55"}


# -- pixel decoding ---------------------------------------------------------------------------------
def rescale_into(raw: NDArray[Any], h: SliceHeader, out: NDArray[np.int16], path: Path) -> None:
    slope, inter = _rescale_params(h)
    if raw.shape != out.shape:
        raise DicomSeriesError(f"decoded pixel array has shape {raw.shape}, expected {out.shape}", path)
    if slope == 1.0 and float(inter).is_integer():
        if raw.dtype == np.int16 and inter == 0.0:
            out[...] = raw
            return
        tmp = raw.astype(np.int32)
        tmp += int(inter)
        np.clip(tmp, -32768, 32767, out=tmp)
        out[...] = tmp
        return
    out[...] = hu_to_int16(raw.astype(np.float64) * slope + inter)


def _rescale_params(h: SliceHeader) -> tuple[float, float]:
    path = h.path
    try:
        slope = float(h.get("RescaleSlope") or 1.0)
        inter = float(h.get("RescaleIntercept") or 0.0)
    except (TypeError, ValueError) as exc:
        raise DicomSeriesError(f"invalid RescaleSlope/RescaleIntercept ({exc})", path) from exc
    if not (math.isfinite(slope) and math.isfinite(inter)):
        raise DicomSeriesError(f"invalid RescaleSlope/RescaleIntercept ({slope}, {inter})", path)
    return slope, inter


def native_into(h: SliceHeader, out: NDArray[np.int16]) -> bool:
    """Uncompressed little-endian 16-bit pixels read from the file offset straight into ``out``.

    Signed or unsigned, the intercept is added in place (values that would leave int16 are clipped, as the
    general path does). Returns False when the file is not in that form (compressed, 8/32-bit, a slope,
    signed with fewer than 16 stored bits, bits set above BitsStored); the caller then decodes through
    pydicom, overwriting ``out``.
    """
    if h.transfer_syntax not in NATIVE_LE or h.pixel_at is None:
        return False
    offset, length = h.pixel_at
    try:
        bits = int(h.get("BitsAllocated"))
        stored = int(h.get("BitsStored") or bits)
        signed = int(h.get("PixelRepresentation") or 0) == 1
        rows, cols = int(h.get("Rows")), int(h.get("Columns"))
    except (TypeError, ValueError):
        return False
    if bits != 16 or not 1 <= stored <= 16 or length < rows * cols * 2 or out.shape != (rows, cols):
        return False
    slope, inter = _rescale_params(h)
    if slope != 1.0 or not inter.is_integer():
        return False
    if signed and stored < 16:
        return False  # needs sign extension from bit stored-1: the general path handles it
    with open(h.path, "rb") as f:
        f.seek(offset)
        n = f.readinto(out.data.cast("B"))
    if n != rows * cols * 2:
        raise DicomSeriesError(f"pixel data is truncated ({n} of {rows * cols * 2} bytes)", h.path)
    if not signed and stored < 15 and int(out.max()) >= 2**stored:
        return False  # bits set above BitsStored: let pydicom decide what they mean
    stored_values = out if signed else out.view(np.uint16)
    lo, hi = (-(2 ** (stored - 1)), 2 ** (stored - 1) - 1) if signed else (0, 2**stored - 1)
    if lo + inter < -32768 or hi + inter > 32767:  # the stored range could leave int16: look at the values
        lo, hi = int(stored_values.min()), int(stored_values.max())
        if lo + inter < -32768 or hi + inter > 32767:  # they do: clip, as the general path does
            hu = stored_values.astype(np.int32)
            hu += int(inter)
            np.clip(hu, -32768, 32767, out=hu)
            out[...] = hu
            return True
    if inter:
        # stored + intercept in place, modulo 2**16: the int16 bits are exact since the result fits
        u = out.view(np.uint16)
        np.add(u, np.uint16(int(inter) % 65536), out=u)
    return True


def _decode_sitk(h: SliceHeader, out: NDArray[np.int16]) -> None:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(h.path))
    except Exception as exc:
        ts = h.transfer_syntax
        raise DicomSeriesError(
            f"cannot decode pixel data (transfer syntax {ts}) with pydicom or SimpleITK: {exc}", h.path
        ) from exc
    out[...] = hu_to_int16(sitk.GetArrayFromImage(img).reshape(out.shape))  # already rescaled by GDCM


def decode_into(h: SliceHeader, out: NDArray[np.int16]) -> None:
    if not native_into(h, out):
        ts = h.transfer_syntax
        if ts in _RETIRED_JPEG:
            _decode_sitk(h, out)
            return
        ds = None
        try:
            ds = h.dataset()
            raw = ds.pixel_array
        except Exception as exc:
            raise DicomSeriesError(
                f"cannot decode pixel data (transfer syntax {ts or 'unknown'}): {exc.__class__.__name__}: {exc}",
                h.path,
            ) from exc
        finally:
            if ds is not None:
                _forget_pixels(ds)
        rescale_into(np.asarray(raw), h, out, h.path)


def _forget_pixels(ds: Any) -> None:
    """Drop the pixel bytes and decoded array that pydicom caches on the dataset."""
    for attr, value in (("_pixel_array", None), ("_pixel_id", {})):
        if hasattr(ds, attr):
            setattr(ds, attr, value)
    ds._dict.pop(0x7FE00010, None)


# worker-side state for forked decoding (set before the pool forks)
_FORK_STATE: dict[str, Any] = {}


def _worker_decode(indices: list[int]) -> None:
    headers: list[SliceHeader] = _FORK_STATE["headers"]
    vol = _FORK_STATE["vol"]
    for k in indices:
        decode_into(headers[k], vol[k])


def shared_empty(shape: tuple[int, int, int]) -> NDArray[np.int16]:
    """An int16 array in anonymous shared memory: forked workers' writes land in the parent's array."""
    count = int(np.prod(shape))
    buf = mmap.mmap(-1, max(1, 2 * count))
    return np.frombuffer(buf, dtype=np.int16, count=count).reshape(shape)  # the array keeps buf alive


def is_parallel(workers: int) -> bool:
    return workers > 1 and os.name == "posix"


def decode_all(
    headers: list[SliceHeader], rows: int, cols: int, workers: int, out: NDArray[np.int16] | None = None
) -> NDArray[np.int16]:
    """Decode every slice into ``out`` (allocated when None; with ``workers > 1`` it must come from
    :func:`shared_empty`, since forked workers write into it)."""
    n = len(headers)
    shape = (n, rows, cols)
    workers = max(1, min(int(workers), n))
    if not is_parallel(workers):
        vol = np.empty(shape, dtype=np.int16) if out is None else out
        for k, h in enumerate(headers):
            decode_into(h, vol[k])
        return vol
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    vol = shared_empty(shape) if out is None else out
    _FORK_STATE.update(headers=headers, vol=vol)
    try:
        chunks = [list(range(i, n, workers)) for i in range(workers)]
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
            for fut in [pool.submit(_worker_decode, c) for c in chunks]:
                fut.result()
    finally:
        _FORK_STATE.clear()
    return vol
