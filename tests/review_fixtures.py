"""A small reviewed run for the review page and report tests: a tiny phantom cohort and its detections."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from lymphcad.cli import main

CHROMIUM = Path("/usr/bin/chromium")
#: Debian's chromium, headless: no sandbox (containers), no GPU, no network chatter
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass(frozen=True)
class ReviewRun:
    """A phantom cohort and the shipped detector's detections on it."""

    cohort: Path
    dets: Path


def build_review_run(root: Path) -> ReviewRun:
    """``lymphcad phantom --preset tiny`` (2 cases) + ``lymphcad detect`` on it."""
    cohort = root / "cohort"
    dets = root / "dets.csv"
    args = ["phantom", "--preset", "tiny", "--cases", "2", "--seed", "0", "--out", str(cohort)]
    assert main(args) == 0
    assert main(["detect", str(cohort), "--out", str(dets), "--threads", "1"]) == 0
    return ReviewRun(cohort, dets)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
