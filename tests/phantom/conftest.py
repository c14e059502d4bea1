"""Fixtures of the insertion tests: analysed crops of a real chest and a real abdomen (one per module)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lymphcad.geometry import CTVolume
from lymphcad.phantom.insert import BackgroundAnalysis
from real_crops import abdomen_centre, chest_mediastinum


@pytest.fixture(scope="module")
def chest(real_ct_dir: Path) -> tuple[CTVolume, BackgroundAnalysis]:
    """The mediastinum of the real contrast chest (``real_crops.chest_mediastinum``)."""
    return chest_mediastinum(real_ct_dir)


@pytest.fixture(scope="module")
def abdomen(real_ct_dir: Path) -> tuple[CTVolume, BackgroundAnalysis]:
    """The central real contrast abdomen (``real_crops.abdomen_centre``)."""
    return abdomen_centre(real_ct_dir)
