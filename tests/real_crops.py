"""Crops of the real CT backgrounds of ../shared that the insertion tests share (kept small for speed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lymphcad.geometry import CTVolume
from lymphcad.io.reader import read_ct
from lymphcad.phantom.insert import BackgroundAnalysis, analyse_background

#: the contrast chest covering the whole mediastinum and the portal-venous abdomen (shared/data/real-ct)
CHEST = "cmb-crc/MSB-01068-chest"
ABDOMEN = "crlm-ct/CRLM-CT-1004"


def crop(vol: CTVolume, start: tuple[int, int, int], shape: tuple[int, int, int]) -> CTVolume:
    """The sub-volume of ``shape`` voxels from index ``start`` (z, y, x), with its geometry."""
    k, j, i = start
    a = vol.array[k : k + shape[0], j : j + shape[1], i : i + shape[2]]
    return CTVolume(np.ascontiguousarray(a), vol.geometry.crop(start, a.shape))


def chest_mediastinum(real_ct_dir: Path) -> tuple[CTVolume, BackgroundAnalysis]:
    """The mediastinum of the real contrast chest from 60 mm below to 75 mm above the carina, analysed."""
    vol = crop(read_ct(real_ct_dir / CHEST), (25, 95, 90), (56, 330, 340))
    return vol, analyse_background(vol)


def abdomen_centre(real_ct_dir: Path) -> tuple[CTVolume, BackgroundAnalysis]:
    """The real contrast abdomen (5 mm slices), central 320 × 360 pixels, analysed."""
    full = read_ct(real_ct_dir / ABDOMEN)
    vol = crop(full, (0, 90, 75), (full.array.shape[0], 320, 360))
    return vol, analyse_background(vol)
