"""Speed/memory benchmark of ``detect``: one 512×512×300 CT at 0.7×0.7×1.25 mm, file → detections.

    python benchmarks/bench_detect.py [--model NAME|PATH] [--threads 2] [--repeats 2] [--precision P]

Target (issue 7): ≤ 30 s and ≤ 6 GB peak RAM on 2 CPU cores. The CT is synthetic (body ellipse of fat and
soft tissue, bright vessels, a few nodes, 20 HU noise) — only its size and spacing matter here. Each repeat
runs in a fresh process (read NIfTI → detect_volume → write CSV) so peak RSS is the whole job's.
Results: ``benchmarks/results/detect_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import resource, sys, time, json
t0 = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[3]))
from lymphcad.io.reader import read_ct
from lymphcad.detector.model import load_model
from lymphcad.detector.infer import detect_volume, with_overrides
from lymphcad.detector.precision import concrete_precision
from lymphcad.io.detections import write_detections
t_import = time.perf_counter() - t0
model = load_model(None if sys.argv[2] == "-" else sys.argv[2])
settings = with_overrides(model.detect, precision=None if sys.argv[5] == "-" else sys.argv[5])
precision = concrete_precision(settings.precision, torch.device("cpu")).value
t1 = time.perf_counter()
vol = read_ct(sys.argv[1])
t2 = time.perf_counter()
dets = detect_volume(vol, model, settings, case_id="bench")
t3 = time.perf_counter()
write_detections(sys.argv[4], dets)
t4 = time.perf_counter()
print(json.dumps({"import_s": t_import, "read_s": t2 - t1, "detect_s": t3 - t2, "total_s": t4 - t0,
                  "file_to_detections_s": t4 - t1, "n_detections": len(dets), "precision": precision,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))
"""


def make_ct(path: Path) -> None:
    """Write the synthetic 512×512×300 CT (0.7 × 0.7 × 1.25 mm)."""
    import numpy as np

    from lymphcad.geometry import CTVolume, Geometry, hu_to_int16
    from lymphcad.io.nifti import write_ct

    rng = np.random.default_rng(0)
    nz, ny, nx = 300, 512, 512
    y, x = np.mgrid[0:ny, 0:nx].astype(np.float32)
    yy, xx = (y - ny / 2) * 0.7, (x - nx / 2) * 0.7
    body = (xx / 165) ** 2 + (yy / 120) ** 2 <= 1.0
    inner = (xx / 120) ** 2 + (yy / 85) ** 2 <= 1.0
    sl = np.where(body, -100.0, -1000.0).astype(np.float32)
    sl[inner] = 50.0
    sl[((xx - 20) ** 2 + (yy + 10) ** 2) <= 12**2] = 170.0  # aorta
    vol = np.empty((nz, ny, nx), dtype=np.int16)
    for k in range(nz):
        vol[k] = hu_to_int16(sl + rng.normal(0, 20, size=sl.shape).astype(np.float32))
    geom = Geometry((nz, ny, nx), (1.25, 0.7, 0.7), (-179.0, -179.0, -300.0))
    write_ct(path, CTVolume(vol, geom))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="-", help="model path or shipped name (default: the shipped model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--precision", default="-", help="the network's format (default: the model's, as detect runs)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "detect_speed.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ct = Path(tmp) / "ct.nii.gz"
        t0 = time.perf_counter()
        make_ct(ct)
        print(f"made {ct} in {time.perf_counter() - t0:.0f} s ({ct.stat().st_size / 1e6:.0f} MB)", flush=True)
        runs = []
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        for r in range(args.repeats):
            cmd = [
                sys.executable,
                "-c",
                CHILD,
                str(ct),
                args.model,
                str(args.threads),
                str(Path(tmp) / f"d{r}.csv"),
                args.precision,
            ]
            if args.threads <= 2 and hasattr(os, "sched_setaffinity"):
                cpus = sorted(os.sched_getaffinity(0))[: args.threads]
                cmd = ["taskset", "-c", ",".join(str(c) for c in cpus), *cmd]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    result = {
        "what": "detect: one 512x512x300 CT at 0.7x0.7x1.25 mm, NIfTI file to detections (fresh process)",
        "target": {"seconds": 30, "peak_rss_gb": 6, "cores": 2},
        "threads": args.threads,
        "model": args.model,
        "precision": runs[0]["precision"],
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "loadavg_at_end": load},
        "runs": runs,
        "best_file_to_detections_s": min(r["file_to_detections_s"] for r in runs),
        "max_peak_rss_gb": max(r["peak_rss_gb"] for r in runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("best_file_to_detections_s", "max_peak_rss_gb")}))


if __name__ == "__main__":
    main()
