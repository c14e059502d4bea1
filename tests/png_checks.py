"""Reading back the PNGs the package draws, to assert what they show rather than their byte size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

#: the overlay colours of lymphcad.report.show (ground-truth outline, detection circle)
GREEN = (0x33, 0xFF, 0x33)
RED = (0xFF, 0x30, 0x30)


def read_png(path: Path) -> NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB of a PNG (alpha dropped); fails when the file is not a PNG."""
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    img = matplotlib.image.imread(path)  # float in [0, 1] for PNG
    return np.round(np.asarray(img)[..., :3] * 255).astype(np.uint8)


def pixels_of(rgb: NDArray[np.uint8], colour: tuple[int, int, int], tol: int = 40) -> int:
    """How many pixels are within ``tol`` (per channel) of ``colour``."""
    diff = np.abs(rgb.astype(np.int16) - np.asarray(colour, dtype=np.int16)[None, None, :])
    return int(np.all(diff <= tol, axis=2).sum())
