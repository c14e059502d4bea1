"""Benchmark: lymphcad's DICOM series reader vs SimpleITK's ImageSeriesReader on the same files.

Generates a synthetic 512×512×N CT series (default N = 600) in a temporary folder, twice: uncompressed
(Explicit VR Little Endian) and JPEG 2000 lossless (encoded by pydicom 3 through pylibjpeg-openjpeg).
Each reader runs in its own fresh subprocess (so peak memory is its own), after one warm-up pass that puts
the files in the page cache; the best of ``--repeats`` runs is reported. Time includes finding and sorting
the files (GDCM's ``GetGDCMSeriesFileNames`` for SimpleITK, the header scan for lymphcad).

The CPU time of each reader (its process plus its decode workers) and the machine's 1-minute load
average are recorded too: on a shared machine the wall-clock ratio is only meaningful when the load stays
below the core count.

Targets (issue): time ratio ours/SimpleITK ≤ 1.0 uncompressed and ≤ 1.1 for JPEG 2000; peak memory
≤ 2.5× the volume's size (RSS growth of the reading process over its post-import baseline; the decode
workers' own peak RSS is reported beside it).

    python benchmarks/bench_read_series.py [--slices 600] [--workers 2] [--repeats 3]

Writes benchmarks/results/read_series.json and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SIZE = 512


def _write_slice(args: tuple[Path, int, int, str, str, bool]) -> None:
    from pydicom.uid import JPEG2000Lossless

    from lymphcad.io.dicom.write import body_slice, ct_slice

    folder, k, n, series_uid, study_uid, j2k = args
    pixels = body_slice(k, n, SIZE)
    ds = ct_slice(
        pixels,
        (-250.0, -250.0, -600.0 + 1.0 * k),
        series_uid=series_uid,
        study_uid=study_uid,
        instance=k + 1,
        pixel_spacing=(0.9765625, 0.9765625),
        bits_stored=12,
        description="synthetic benchmark series",
    )
    ds.Manufacturer = "lymphcad-benchmark"
    if j2k:
        ds.compress(JPEG2000Lossless, pixels)
    # file names in reverse spatial order, so neither reader can rely on the name order
    ds.save_as(folder / f"IMG{n - k:05d}.dcm", enforce_file_format=True)


def generate(folder: Path, n: int, *, j2k: bool, jobs: int) -> None:
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study = generate_uid(), generate_uid()
    tasks = [(folder, k, n, series, study, j2k) for k in range(n)]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(_write_slice, tasks, chunksize=8))


_CHILD = r"""
import json, resource, sys, time
which, folder, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
import numpy as np
import SimpleITK as sitk
from lymphcad.io.dicom import read_dicom_series
def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
base = rss_kib()
def cpu_s():
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
c0 = cpu_s()
t = time.perf_counter()
if which == "lymphcad":
    vol = read_dicom_series(folder, workers=workers)
    arr = vol.array
else:
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(folder))
    img = r.Execute()
    arr = sitk.GetArrayViewFromImage(img)
elapsed = time.perf_counter() - t
cpu = cpu_s() - c0
checksum = int(arr.sum(dtype=np.int64))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "base_rss_kib": base, "peak_rss_kib": peak,
                  "children_peak_rss_kib": children, "shape": list(arr.shape), "dtype": str(arr.dtype),
                  "checksum": checksum}))
"""


def _run_child(which: str, folder: Path, workers: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(HERE.parent / "src"))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, which, str(folder), str(workers)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _warm(folder: Path) -> None:
    for p in folder.iterdir():
        p.read_bytes()


def measure(folder: Path, *, workers: int, repeats: int, volume_bytes: int) -> dict[str, Any]:
    _warm(folder)
    runs: dict[str, list[dict[str, Any]]] = {"lymphcad": [], "simpleitk": []}
    load = [os.getloadavg()[0]]
    for _ in range(repeats):  # interleave so drifts hit both readers alike
        runs["lymphcad"].append(_run_child("lymphcad", folder, workers))
        runs["simpleitk"].append(_run_child("simpleitk", folder, workers))
        load.append(os.getloadavg()[0])
    best = {k: min(v, key=lambda r: r["seconds"]) for k, v in runs.items()}
    ours, ref = best["lymphcad"], best["simpleitk"]
    if ours["checksum"] != ref["checksum"]:
        raise SystemExit(f"readers disagree on {folder}: checksum {ours['checksum']} != {ref['checksum']}")

    def mem(r: dict[str, Any]) -> float:
        return (r["peak_rss_kib"] - r["base_rss_kib"]) * 1024 / volume_bytes

    return {
        "lymphcad_seconds": ours["seconds"],
        "simpleitk_seconds": ref["seconds"],
        "ratio": ours["seconds"] / ref["seconds"],
        "lymphcad_cpu_seconds": ours["cpu_seconds"],
        "simpleitk_cpu_seconds": ref["cpu_seconds"],
        "cpu_ratio": ours["cpu_seconds"] / ref["cpu_seconds"],
        "load_average_1min_during": load,
        "lymphcad_all_seconds": [r["seconds"] for r in runs["lymphcad"]],
        "simpleitk_all_seconds": [r["seconds"] for r in runs["simpleitk"]],
        "lymphcad_peak_memory_x_volume": mem(ours),
        "lymphcad_worker_peak_rss_mib": ours["children_peak_rss_kib"] / 1024,
        "simpleitk_peak_memory_x_volume": mem(ref),
        "workers": workers,
        "same_voxels": True,
        "simpleitk_pixel_type": ref["dtype"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2, help="lymphcad decode workers for JPEG 2000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--tmp", type=Path, default=None, help="where to write the series (default: a temp folder)"
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "read_series.json")
    args = ap.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="bench_read_series_", dir=args.tmp))
    volume_bytes = args.slices * SIZE * SIZE * 2
    jobs = os.cpu_count() or 1
    results: dict[str, Any] = {}
    try:
        for name, j2k, workers in (("uncompressed", False, 1), ("jpeg2000_lossless", True, args.workers)):
            folder = base / name
            t = time.perf_counter()
            generate(folder, args.slices, j2k=j2k, jobs=jobs)
            gen_s = time.perf_counter() - t
            size_mib = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
            r = measure(folder, workers=workers, repeats=args.repeats, volume_bytes=volume_bytes)
            r.update(generate_seconds=gen_s, files_mib=size_mib)
            results[name] = r
            print(
                f"{name:18s} lymphcad {r['lymphcad_seconds']:.2f} s (workers={workers})  SimpleITK "
                f"{r['simpleitk_seconds']:.2f} s  ratio {r['ratio']:.2f} (CPU-time ratio {r['cpu_ratio']:.2f}, "
                f"load {max(r['load_average_1min_during']):.1f})  peak memory "
                f"{r['lymphcad_peak_memory_x_volume']:.2f}× volume (SimpleITK {r['simpleitk_peak_memory_x_volume']:.2f}×)"
                f"  worker peak RSS {r['lymphcad_worker_peak_rss_mib']:.0f} MiB  files {size_mib:.0f} MiB"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)

    import pydicom
    import SimpleITK as sitk

    targets = {
        "uncompressed_ratio_max": 1.0,
        "jpeg2000_ratio_max": 1.1,
        "peak_memory_x_volume_max": 2.5,
    }
    passed = {
        "uncompressed_ratio": results["uncompressed"]["ratio"] <= targets["uncompressed_ratio_max"],
        "jpeg2000_ratio": results["jpeg2000_lossless"]["ratio"] <= targets["jpeg2000_ratio_max"],
        "peak_memory": all(
            r["lymphcad_peak_memory_x_volume"] <= targets["peak_memory_x_volume_max"]
            for r in results.values()
        ),
    }
    report = {
        "benchmark": "read_series",
        "volume": {"shape_zyx": [args.slices, SIZE, SIZE], "dtype": "int16", "bytes": volume_bytes},
        "results": results,
        "targets": targets,
        "passed": passed,
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "pydicom": pydicom.__version__,
            "simpleitk": sitk.Version.VersionString(),
        },
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"targets {passed}; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
