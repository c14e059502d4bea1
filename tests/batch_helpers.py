"""Helpers of the batch tests: a small phantom cohort and the detect command line on it."""

from __future__ import annotations

import csv
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lymphcad.batch.detect import set_torch_threads
from lymphcad.phantom import generate_cohort

#: the detect options every batch test uses (one torch thread per worker: results do not depend on the
#: number of threads then, so serial, local-process and Ray runs must agree to the last digit)
DETECT_OPTS = ["--threads", "1", "--threshold", "0.2"]


def phantom_cohort(root: Path, cases: int = 4, seed: int = 11) -> Path:
    """A tiny-preset phantom cohort (64 × 128 × 128 voxels per case)."""
    generate_cohort(root, cases, "both", seed, 0.5, "tiny")
    return root


def copy_cohort(src: Path, dst: Path) -> Path:
    """A private copy of a cohort (tests that damage a case)."""
    shutil.copytree(src, dst)
    return dst


def rows(path: Path) -> list[tuple[str, ...]]:
    """The data rows of a CSV, sorted (the header checked apart)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        return sorted(tuple(r) for r in reader)


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to a fraction of its size (a half-copied image)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@dataclass(frozen=True)
class ThreadProbeSpec:
    """A worker recipe whose tasks report the worker: its pid, whether the preload probe module was imported
    before the task, and torch's intra-/inter-op thread counts after the worker's set-up."""

    def setup(self, threads: int) -> Callable[[Any], Any]:
        set_torch_threads(threads)
        return _thread_probe


def _thread_probe(_payload: Any) -> tuple[int, bool, int, int]:
    return (
        os.getpid(),
        "batch_preload_probe" in sys.modules,
        torch.get_num_threads(),
        torch.get_num_interop_threads(),
    )
