"""Batch throughput of ``lymphcad detect`` on a phantom cohort: serial vs ``--workers 2`` vs ``--ray --workers 2``.

    python benchmarks/bench_batch.py [--cases 8] [--preset bench] [--out benchmarks/results/batch.json]

Each run is the command a user types, in a fresh process (imports, model load and, for Ray, starting and
stopping a local Ray are all included): wall-clock seconds for the whole cohort, cases per hour, and the
CPU seconds and peak memory of the serial run. The serial run uses the default threads (all cores); each of
2 workers gets half of them; a serial run with one thread shows how much of the gain comes from running
cases side by side rather than splitting one case's work over threads. A 1-case serial run gives the fixed cost (imports, model), so the per-case cost
is ``(CPU(N cases) − CPU(1 case)) / (N − 1)``. Bytes read are the cohort's ``.nii.gz`` files, bytes written
the detections CSV. Targets (issue 15): 2 workers ≥ 1.6× serial throughput; Ray ≤ 10 % slower than local
processes at the same worker count. The machine's load average is recorded before and after: on a shared
2-core machine the ratios are only meaningful when other jobs leave the cores free.

Each run also writes the command's timeline (``LYMPHCAD_BATCH_TIMELINE``): when the batch started after
the command was launched (imports, model check, starting the workers), each worker's wait before its first
case, idle time between cases and after its last one (the tail), and each case's wall and CPU seconds. From
the CPU seconds the benchmark predicts both runs on free cores (``amdahl``, see
:func:`free_cores_prediction`): on a loaded machine the wall clock says how the kernel shared the cores
out, not what the code can do (``cpu_share``: the share of a core each worker got). The Ray run's start-up
(``ray.init`` and creating the actors) is reported apart from its batch.

The CT volumes are phantom cases (synthetic): these are speed figures, not detection results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from lymphcad import atomic
from lymphcad.detector.model import load_model
from lymphcad.phantom import generate_cohort

HERE = Path(__file__).resolve().parent
#: the network's speed-up with 2 threads on a quiet machine (detect_speed_1thread.json → detect_speed.json,
#: 2026-11-25), used when detect_stages.json does not give one
NETWORK_SPEEDUP_2_THREADS = 1.64
BATCH_S = re.compile(r"volume\(s\)(?: \(\d+ from an earlier run\))?, ([0-9.]+) s on ")


def _cpu_children() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1e6  # CPU s, peak RSS GB of the largest child so far


def timeline_summary(path: Path, launched: float) -> dict[str, Any]:
    """The command's timeline (written by detect) relative to its launch: steps, workers, cases."""
    d = json.loads(path.read_text(encoding="utf-8"))
    tasks = [t for t in d["tasks"] if t["ok"]]
    workers = d["workers"]
    batch_s = d["batch_ended"] - d["batch_started"]
    busy_cpu = sum(w["cpu_s"] + w["setup_s"] for w in workers)
    return {
        "steps_s": {k: round(v - launched, 2) for k, v in d["marks"].items()},
        "batch_started_s": round(d["batch_started"] - launched, 2),
        "batch_s": round(batch_s, 2),
        "executor_start": d["executor_start"],
        "workers": workers,
        "case_wall_s": round(sum(t["seconds"] for t in tasks) / max(1, len(tasks)), 3),
        "case_cpu_s": round(sum(t["cpu_seconds"] for t in tasks) / max(1, len(tasks)), 3),
        "sum_case_cpu_s": round(sum(t["cpu_seconds"] for t in tasks), 2),
        "idle_s": {
            "before_first": round(sum(w["before_first_s"] for w in workers), 2),
            "between": round(sum(w["between_s"] for w in workers), 2),
            "after_last": round(sum(w["after_last_s"] for w in workers), 2),
        },
        # CPU the workers got during the batch, as a share of one core each (1.0 = a free core per worker)
        "cpu_share": round(busy_cpu / (len(workers) * batch_s), 3) if workers and batch_s > 0 else None,
        "first_cases": [t["key"] for t in sorted(tasks, key=lambda t: t["started"])[: len(workers)]],
    }


def _stages() -> dict[str, Any] | None:
    path = HERE / "results" / "detect_stages.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def network_speedup() -> float:
    """s, the network's 2-thread speed-up: measured by ``bench_detect_stages.py`` with the default model's
    settings (``detect_stages.json``) when it was, else the older measurement ``NETWORK_SPEEDUP_2_THREADS``."""
    stages = _stages()
    if stages is None or "network_speedup_2_threads_measured_here" not in stages:
        return NETWORK_SPEEDUP_2_THREADS
    return float(stages["network_speedup_2_threads_measured_here"])


def network_share(no_tta: bool = False) -> float | None:
    """The network's share of a one-thread case's CPU (``detect_stages.json``, measured with the default model's
    settings), when it was measured. With ``no_tta`` and a default model that runs flip TTA (4 network passes
    of equal cost), the share of one pass: f/4 / (1 − f + f/4)."""
    stages = _stages()
    if stages is None:
        return None
    f = float(stages["network_share_of_one_thread_case_cpu"])
    if no_tta and load_model(None).detect.tta_flips:
        return round((f / 4) / (1 - f + f / 4), 3)
    return f


def free_cores_prediction(runs: dict[str, Any], n: int, workers: int, no_tta: bool = False) -> dict[str, Any]:
    """What the serial and the worker runs take on ``workers`` free cores, from CPU seconds measured here.

    A command's fixed cost F (start, imports, model, writing: the 1-case serial run's CPU minus its case's)
    is paid by both, on one core (the workers' imports overlap the driver's); a one-thread case costs c CPU-s
    (the 1-thread serial run); a 2-thread case takes c (1 − f + f / s), f being the network's share of c
    and s the network's 2-thread speed-up on free cores, both from ``detect_stages.json`` (:func:`network_speedup`).
    The workers share the cases and idle on average for half a case each at the end (the tail).
    """
    f = network_share(no_tta)
    s = network_speedup()
    stages = _stages() or {}
    one = runs["serial_1_case"]
    fixed = one["cpu_s_of_process"] - one["timeline"]["sum_case_cpu_s"]
    c = runs["serial_1_thread"]["timeline"]["case_cpu_s"]
    out: dict[str, Any] = {
        "what": "predicted wall clock on free cores from the CPU seconds measured in this run (see "
        "free_cores_prediction in bench_batch.py)",
        "fixed_cost_cpu_s": round(fixed, 2),
        "case_cpu_s_1_thread": c,
        "case_cpu_s_in_workers": runs[f"workers{workers}"]["timeline"]["case_cpu_s"],
        "network_share_f": f,
        "network_speedup_2_threads_s": s,
        "f_and_s_from": f"detect_stages.json of {stages.get('time_utc', '?')} ({stages.get('precision', 'float32')})",
        "workers_cpu_share": runs[f"workers{workers}"]["timeline"]["cpu_share"],
    }
    if f is None:
        return out
    case_2_threads = c * (1 - f + f / s)
    tail = c * (workers - 1) / (2 * workers)
    for cases in (n, 2 * n):
        serial = fixed + cases * case_2_threads
        parallel = fixed + cases * c / workers + tail
        out[f"{cases}_cases"] = {
            "serial_s": round(serial, 1),
            "workers_s": round(parallel, 1),
            "speedup": round(serial / parallel, 3),
        }
    out["batch_only_speedup_limit"] = round(workers * (1 - f + f / s), 3)
    return out


def run_detect(cohort: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """One ``lymphcad detect`` in a fresh process: wall seconds, CPU seconds of its children, rows."""
    cmd = [sys.executable, "-m", "lymphcad", "detect", str(cohort), "--out", str(out), *extra]
    timeline = out.with_name(out.stem + ".timeline.json")
    env = {**os.environ, "LYMPHCAD_NO_PROGRESS": "1", "LYMPHCAD_BATCH_TIMELINE": str(timeline)}
    cpu0, _ = _cpu_children()
    launched = time.time()
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    cpu1, peak = _cpu_children()
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr[-2000:]}")
    return {
        "command": " ".join(["lymphcad", "detect", "COHORT", "--out", out.name, *extra]),
        "wall_s": round(wall, 2),
        "cpu_s_of_process": round(cpu1 - cpu0, 2),
        "peak_rss_gb_so_far": round(peak, 3),
        "rows": max(0, len(out.read_text(encoding="utf-8").splitlines()) - 1),
        "csv_bytes": out.stat().st_size,
        "stdout": " ".join(res.stdout.split()),
        # the batch itself, from the executor being ready to the last case (no imports, no Ray start)
        "batch_s": float(m.group(1)) if (m := BATCH_S.search(" ".join(res.stdout.split()))) else None,
        "timeline": timeline_summary(timeline, launched),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--preset", default="bench", help="phantom preset: tiny | bench (512² × 240–320) | full")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temp folder)")
    ap.add_argument(
        "--cohort", type=Path, default=None, help="an existing phantom cohort to use (default: generate one)"
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "batch.json")
    ap.add_argument(
        "--no-tta",
        action="store_true",
        help="detect without the model's flip TTA in every run (the engine's scaling with a network of v4's cost)",
    )
    args = ap.parse_args()
    if args.cases < 2:
        raise SystemExit("--cases must be >= 2")

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        work = args.work or Path(tmp)
        cohort = args.cohort or work / f"phantom-{args.preset}-{args.cases}"
        t0 = time.perf_counter()
        if args.cohort is None:
            generate_cohort(cohort, args.cases, "both", 2026, 0.5, args.preset, workers=2)
        gen_s = time.perf_counter() - t0
        images = sorted((cohort / "images").glob("*.nii.gz"))
        if len(images) != args.cases:
            raise SystemExit(f"{cohort}: {len(images)} cases, --cases says {args.cases}")
        one = work / "one"
        one.mkdir(exist_ok=True)
        single = work / "single-case.txt"
        single.write_text(f"{images[0]}\n", encoding="utf-8")

        load_before = os.getloadavg()
        w = str(args.workers)
        tta = ["--no-tta"] if args.no_tta else []
        runs = {
            "serial_1_case": run_detect(single, one / "one.csv", tta),
            "serial": run_detect(cohort, work / "serial.csv", tta),
            "serial_1_thread": run_detect(cohort, work / "serial1.csv", [*tta, "--threads", "1"]),
            f"workers{w}": run_detect(cohort, work / "workers.csv", [*tta, "--workers", w]),
            f"ray{w}": run_detect(cohort, work / "ray.csv", [*tta, "--ray", "--workers", w]),
        }
        load_after = os.getloadavg()
        # the workers run one thread each: compare with the one-thread serial run (bit for bit) and count the
        # rows that differ from the default serial run (its 2 threads sum in another order: last digits)
        ref1 = (work / "serial1.csv").read_bytes()
        same = {
            name: (work / f"{kind}.csv").read_bytes() == ref1
            for name, kind in ((f"workers{w}", "workers"), (f"ray{w}", "ray"))
        }
        two = (work / "serial.csv").read_text(encoding="utf-8").splitlines()
        one = ref1.decode("utf-8").splitlines()
        rows_differ_2_threads = sum(a != b for a, b in zip(one, two, strict=False)) + abs(len(one) - len(two))
        # what the network computed in (detect --precision, default auto: resolved per run in the provenance)
        precision = json.loads((work / "serial.csv.json").read_text(encoding="utf-8"))["settings"][
            "precision"
        ]
        read_bytes = sum(p.stat().st_size for p in images)
        voxels = sum(int(np.prod(nib.load(str(p)).header.get_data_shape()[:3])) for p in images)

    n = args.cases
    serial, workers, ray = runs["serial"], runs[f"workers{w}"], runs[f"ray{w}"]
    per_case_cpu = (serial["cpu_s_of_process"] - runs["serial_1_case"]["cpu_s_of_process"]) / (n - 1)
    per_case_wall = (serial["wall_s"] - runs["serial_1_case"]["wall_s"]) / (n - 1)
    tl_ray = ray["timeline"]
    ray_start = sum(tl_ray["executor_start"].values())
    result = {
        "benchmark": f"detect on {n} phantom cases ({args.preset} preset): serial vs {w} worker processes vs Ray"
        + (" (--no-tta: without the default model's flip TTA)" if args.no_tta else ""),
        "no_tta": args.no_tta,
        "precision": precision,
        "cases": n,
        "preset": args.preset,
        "phantom_generation_s": round(gen_s, 1) if args.cohort is None else None,
        "cohort": "generated" if args.cohort is None else "given with --cohort (generated earlier)",
        "runs": runs,
        "cases_per_hour": {
            k: round(3600 * n / r["wall_s"], 1) for k, r in runs.items() if k != "serial_1_case"
        },
        "speedup_workers_over_serial": round(serial["wall_s"] / workers["wall_s"], 3),
        "speedup_workers_over_serial_1_thread": round(
            runs["serial_1_thread"]["wall_s"] / workers["wall_s"], 3
        ),
        "speedup_ray_over_serial": round(serial["wall_s"] / ray["wall_s"], 3),
        "ray_overhead_vs_workers": round(ray["wall_s"] / workers["wall_s"] - 1.0, 3),
        # with a running cluster (--ray auto) Ray is not started per command: the batch time alone
        "ray_overhead_vs_workers_batch_only": (
            round(ray["batch_s"] / workers["batch_s"] - 1.0, 3)
            if ray["batch_s"] and workers["batch_s"]
            else None
        ),
        "ray_start_s": round(ray_start, 2),
        "ray_overhead_vs_workers_without_start": round(
            (ray["wall_s"] - ray_start) / workers["wall_s"] - 1.0, 3
        ),
        "amdahl": free_cores_prediction(runs, n, int(w), args.no_tta),
        "rows_identical_to_serial_1_thread": same,
        "rows_differing_between_serial_1_and_2_threads": rows_differ_2_threads,
        "per_case": {
            "cpu_s": round(per_case_cpu, 2),
            "wall_s_serial": round(per_case_wall, 2),
            "fixed_cost_wall_s": round(runs["serial_1_case"]["wall_s"] - per_case_wall, 2),
            "bytes_read": read_bytes // n,
            "voxels": voxels // n,
            "bytes_written": serial["csv_bytes"] // n,
            "peak_rss_gb_serial": serial["peak_rss_gb_so_far"],
        },
        "targets": {"speedup_workers_min": 1.6, "ray_overhead_max": 0.10},
        "meets": {
            "speedup": serial["wall_s"] / workers["wall_s"] >= 1.6,
            "ray_overhead": ray["wall_s"] / workers["wall_s"] - 1.0 <= 0.10,
        },
        "niceness": os.nice(0),
        "load_average_1_5_15": {
            "before": [round(v, 2) for v in load_before],
            "after": [round(v, 2) for v in load_after],
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "phantom CTs: speed figures only, not detection results",
    }
    atomic.write_json(args.out, result)
    print(
        f"{n} {args.preset} phantom cases: serial {serial['wall_s']:.1f} s, {w} workers {workers['wall_s']:.1f} s "
        f"(x{result['speedup_workers_over_serial']:.2f}), Ray {w} workers {ray['wall_s']:.1f} s "
        f"(x{result['speedup_ray_over_serial']:.2f}; {100 * result['ray_overhead_vs_workers']:+.0f} % vs processes); "
        f"per case {per_case_cpu:.1f} CPU-s ({precision}); rows identical: {same}; load {load_before[0]:.1f} → {load_after[0]:.1f}"
    )
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
