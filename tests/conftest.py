"""Shared fixtures. Real data comes from ../shared (setting: LYMPHCAD_SHARED); tests skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from review_fixtures import ReviewRun, build_review_run

REPO = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """The shared folder: $LYMPHCAD_SHARED, else ../shared beside the checkout."""
    return Path(os.environ.get("LYMPHCAD_SHARED", str(REPO.parent / "shared"))).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared, or skip with the reason."""
    root = shared_root()
    if not (root / "docs").is_dir():
        pytest.skip(f"shared data folder not found at {root} (set LYMPHCAD_SHARED to point at it)")
    return root


@pytest.fixture(scope="session")
def real_ct_dir(shared_dir: Path) -> Path:
    """../shared/data/real-ct (real CT files with SOURCES.md), or skip with the reason."""
    d = shared_dir / "data" / "real-ct"
    if not (d / "SOURCES.md").is_file():
        pytest.skip(f"real CT test data not found at {d}")
    return d


@pytest.fixture(scope="session")
def review_run(tmp_path_factory: pytest.TempPathFactory) -> ReviewRun:
    """A tiny phantom cohort with the shipped detector's detections (built once per session)."""
    return build_review_run(tmp_path_factory.mktemp("review_run"))
