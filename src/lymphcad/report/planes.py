"""Slices for people: axial, coronal and sagittal planes of an LPS-ordered volume, windowed to 8 bits.

The volume comes from :func:`lymphcad.geometry.reorient_to_lps` (columns patient right → left, rows
anterior → posterior, slices inferior → superior), so the radiological convention (formats.md §1) is:
axial as stored; coronal and sagittal with their rows flipped so that superior is up; sagittal columns
run anterior → posterior (anterior on the left, as radiologists show it).
"""

from __future__ import annotations

import enum
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

#: (width W, level L) of the usual CT windows, in HU
WINDOWS: Final = {
    "mediastinum": (350.0, 40.0),
    "abdomen": (400.0, 50.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
}


class Plane(enum.Enum):
    """A display plane; its value is the array axis (z, y, x) it cuts."""

    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"

    @property
    def axis(self) -> int:
        """The (z, y, x) array axis held fixed in this plane."""
        return {"axial": 0, "coronal": 1, "sagittal": 2}[self.value]

    @property
    def letters(self) -> tuple[str, str, str, str]:
        """Orientation letters at the image's (left, right, top, bottom) edges."""
        return {
            "axial": ("R", "L", "A", "P"),
            "coronal": ("R", "L", "S", "I"),
            "sagittal": ("A", "P", "S", "I"),
        }[self.value]


def plane_image(
    array: NDArray[Any], spacing_zyx: tuple[float, float, float], plane: Plane, index: int
) -> tuple[NDArray[Any], tuple[float, float]]:
    """The 2D slice as shown (rows top → bottom) and its pixel size (row mm, column mm)."""
    sz, sy, sx = spacing_zyx
    if not 0 <= index < array.shape[plane.axis]:
        raise IndexError(f"{plane.value} slice {index} outside 0..{array.shape[plane.axis] - 1}")
    if plane is Plane.AXIAL:
        return array[index], (sy, sx)
    if plane is Plane.CORONAL:
        return array[::-1, index, :], (sz, sx)
    return array[::-1, :, index], (sz, sy)


def display_rc(
    zyx: NDArray[np.float64], shape_zyx: tuple[int, int, int], plane: Plane
) -> tuple[float, float]:
    """Where a continuous (z, y, x) array position falls in :func:`plane_image` (row, column)."""
    z, y, x = (float(v) for v in zyx)
    if plane is Plane.AXIAL:
        return y, x
    top = shape_zyx[0] - 1 - z
    return (top, x) if plane is Plane.CORONAL else (top, y)


def window_u8(image: NDArray[Any], width: float, level: float) -> NDArray[np.uint8]:
    """Map HU to 0..255 with a linear window (``level`` ± ``width``/2), clipped."""
    lo = level - width / 2.0
    scaled = (np.asarray(image, dtype=np.float32) - lo) * (255.0 / max(width, 1.0))
    return np.asarray(np.clip(scaled + 0.5, 0, 255), dtype=np.uint8)
