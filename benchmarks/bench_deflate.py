"""Benchmark: deflate libraries on CT volumes — why ``.nii.gz`` is written with ISA-L level 1.

Compresses two int16 volumes in one thread and records CPU MB/s (voxel bytes per CPU second, best of
``--repeats``) and the compressed size ÷ the raw size:

* ``real-ct``: the real series ../shared/data/real-ct/crlm-ct/CRLM-CT-1004 (41 slices of a clinical abdominal
  CT, read with lymphcad's reader), repeated along z to about 128 MB so that every library works on the
  same large buffer (skipped, with a note, when the shared folder is absent);
* ``torso``: the 300-slice synthetic torso of ``bench_prepare.py --pixels body`` (15 HU noise everywhere).

Libraries: ISA-L (``isal``, a project dependency; levels 0–2), zlib (stdlib, level 1) and, when they are
installed, libdeflate (``deflate``) and zlib-ng (``zlib-ng``) at level 1. Those two are not project
dependencies: install them beside the project to include them; a missing one is listed under ``missing``.
These are single-buffer calls; prepare itself deflates in 1 MiB blocks on several threads (same library,
same level), which costs the same CPU per byte.

    python benchmarks/bench_deflate.py [--repeats 3] [--mb 128]

Writes benchmarks/results/deflate.json and prints the figures.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lymphcad import atomic

HERE = Path(__file__).resolve().parent


def real_volume(shared: Path, mb: float) -> np.ndarray | None:
    """CRLM-CT-1004 in HU (int16), repeated along z to about ``mb`` MB; None when the files are absent."""
    from lymphcad.io.dicom import read_dicom_series

    folder = shared / "data" / "real-ct" / "crlm-ct" / "CRLM-CT-1004"
    if not any(folder.glob("*.dcm")):
        return None
    arr = read_dicom_series(folder).array
    reps = max(1, round(mb * 1e6 / arr.nbytes))
    return np.concatenate([arr] * reps)


def torso_volume(slices: int = 300) -> np.ndarray:
    """The synthetic torso of bench_prepare.py (``--pixels body``) in HU (int16)."""
    from lymphcad.io.dicom.write import body_slice

    return np.stack([body_slice(k, slices).astype(np.int16) - 1024 for k in range(slices)])


def compressors() -> tuple[dict[str, Callable[[bytes], bytes]], list[str]]:
    """Name → one-shot deflate of a buffer (raw deflate stream or gzip member); and the missing libraries."""
    from isal import isal_zlib

    out: dict[str, Callable[[bytes], bytes]] = {
        f"isal level {lvl}": (lambda d, lvl=lvl: isal_zlib.compress(d, lvl)) for lvl in (0, 1, 2)
    }
    out["zlib level 1"] = lambda d: zlib.compress(d, 1)
    missing = []
    try:
        libdeflate: Any = importlib.import_module("deflate")
        out["libdeflate level 1"] = lambda d: libdeflate.gzip_compress(d, 1)
    except ImportError:
        missing.append("libdeflate (pip install deflate)")
    try:
        zng: Any = importlib.import_module("zlib_ng.zlib_ng")
        out["zlib-ng level 1"] = lambda d: zng.compress(d, 1)
    except ImportError:
        missing.append("zlib-ng (pip install zlib-ng)")
    return out, missing


def measure(data: bytes, fn: Callable[[bytes], bytes], repeats: int) -> dict[str, float]:
    """Best CPU seconds over ``repeats`` and the compressed fraction."""
    best, size = float("inf"), 0
    for _ in range(repeats):
        c0 = time.process_time()
        size = len(fn(data))
        best = min(best, time.process_time() - c0)
    return {
        "cpu_seconds": round(best, 3),
        "mb_per_cpu_s": round(len(data) / 1e6 / best, 1),
        "compressed_fraction": round(size / len(data), 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mb", type=float, default=128.0, help="size the real series is repeated to")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "deflate.json")
    args = ap.parse_args(argv)

    shared = Path(os.environ.get("LYMPHCAD_SHARED", HERE.parent.parent / "shared"))
    volumes: dict[str, np.ndarray] = {"torso": torso_volume()}
    notes = []
    real = real_volume(shared, args.mb)
    if real is None:
        notes.append(f"real-ct skipped: no CRLM-CT-1004 under {shared} (set LYMPHCAD_SHARED)")
    else:
        volumes = {"real-ct": real, **volumes}
    libs, missing = compressors()
    results: dict[str, Any] = {}
    for vname, vol in volumes.items():
        data = np.ascontiguousarray(vol).tobytes()
        results[vname] = {"mb": round(len(data) / 1e6, 1), "shape_zyx": list(vol.shape), "libraries": {}}
        for lname, fn in libs.items():
            r = measure(data, fn, args.repeats)
            results[vname]["libraries"][lname] = r
            print(
                f"{vname:8s} {lname:20s} {r['mb_per_cpu_s']:7.1f} MB/CPU-s  compressed {r['compressed_fraction']:.3f}",
                flush=True,
            )
    doc = {
        "benchmark": "one-thread deflate of int16 CT volumes: CPU MB/s and compressed fraction",
        "repeats_best_of": args.repeats,
        "volumes": results,
        "missing": missing,
        "notes": notes,
        "load_average_1_5_15_after": [round(v, 2) for v in os.getloadavg()],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(args.out, doc)
    print(f"→ {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
