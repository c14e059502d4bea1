"""Where one detected case spends its time, stage by stage, with 1 and with 2 torch threads (in-process).

    python benchmarks/bench_detect_stages.py [--cohort COHORT] [--cases 2] [--out benchmarks/results/detect_stages.json]

The stages are those a batch worker runs for a case (``lymphcad.batch.detect``): reading the ``.nii.gz``,
resampling to the model's grid, the network (sliding windows), decoding the peaks, measuring and locating
the detections (``lymphcad.measure``) and hashing the voxels. For each stage: wall-clock and CPU seconds of
this process (all its threads). Only the network runs on several threads, so this gives the share of a case
that a second thread can speed up (Amdahl), which bounds what 2 one-thread workers gain over one worker
with 2 threads: ``speedup = 2 (1 − f + f / s)``, with ``f`` the network's share of a one-thread case and
``s`` its 2-thread speed-up. On a loaded machine the CPU seconds still hold; the wall-clock speed-up of the
second thread does not (it needs a free core), so the JSON also carries the load average.

Without ``--cohort`` a cohort of bench-preset phantom cases is generated (synthetic: speed figures only).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from lymphcad import atomic
from lymphcad.batch.detect import DetectSpec, cached_model, set_torch_threads
from lymphcad.batch.inputs import collect_inputs
from lymphcad.cohort import voxel_hash
from lymphcad.detector.config import DetectConfig
from lymphcad.detector.infer import detect_prepared, normalised_padded, predict_with
from lymphcad.detector.model import LoadedModel
from lymphcad.detector.plan import prepare_volume
from lymphcad.io.reader import read_ct_input
from lymphcad.measure.run import MeasureOptions, finish_case
from lymphcad.phantom import generate_cohort

HERE = Path(__file__).resolve().parent
T = TypeVar("T")
STAGES = ("read", "resample", "network", "peaks", "measure", "hash")


def timed(times: dict[str, list[float]], stage: str, fn: Callable[[], T]) -> T:
    """Run ``fn``, add its wall and CPU seconds to ``times``."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    times[f"{stage}_wall"].append(time.perf_counter() - w0)
    times[f"{stage}_cpu"].append(time.process_time() - c0)
    return out


def profile_case(
    path: str,
    loaded: LoadedModel,
    settings: DetectConfig,
    measure: MeasureOptions,
    times: dict[str, list[float]],
) -> None:
    """One case, stage by stage, as a batch worker runs it (times added to ``times``)."""
    vol = timed(times, "read", lambda: read_ct_input(path))
    prepared = timed(times, "resample", lambda: prepare_volume(vol, loaded.plan))
    img = normalised_padded(prepared, loaded.plan)
    dense = timed(times, "network", lambda: predict_with(loaded.network, img, settings))
    dets = timed(
        times,
        "peaks",
        lambda: detect_prepared(
            prepared,
            loaded.network,
            loaded.plan,
            settings,
            case_id="c",
            original=vol,
            fpr=loaded.fpr,
            image=img,
            dense=dense,
        ),
    )
    timed(times, "measure", lambda: finish_case(vol, dets, measure))
    timed(times, "hash", lambda: voxel_hash(vol.array))


def profile(paths: list[str], threads: int, precision: str | None = None) -> dict[str, Any]:
    """Every stage of every case with ``threads`` torch threads: mean wall and CPU seconds per case."""
    set_torch_threads(threads)
    spec = DetectSpec(precision=precision)
    loaded = cached_model(spec.model, torch.device("cpu"))
    measure = spec.measure_options(loaded)
    settings = spec.settings(loaded, measure)
    times: dict[str, list[float]] = {f"{s}_{k}": [] for s in STAGES for k in ("wall", "cpu")}
    for path in paths:
        profile_case(path, loaded, settings, measure, times)
    n = len(paths)
    per: dict[str, Any] = {k: round(sum(v) / n, 3) for k, v in times.items()}
    per["case_wall"] = round(sum(per[f"{s}_wall"] for s in STAGES), 3)
    per["case_cpu"] = round(sum(per[f"{s}_cpu"] for s in STAGES), 3)
    per["precision"] = settings.precision.value
    return per


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=Path, default=None, help="a cohort to use (default: generate one)")
    ap.add_argument("--cases", type=int, default=2, help="cases to run (the first ones of the cohort)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "detect_stages.json")
    ap.add_argument(
        "--precision",
        default=None,
        help="the network's format (default: the model's, auto: as detect runs it)",
    )
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        cohort = args.cohort
        if cohort is None:
            cohort = Path(tmp) / "cohort"
            generate_cohort(cohort, args.cases, "both", 2026, 0.5, "bench")
        items = collect_inputs(cohort).items[: args.cases]
        paths = [it.path for it in items]
        one = profile(paths, 1, args.precision)
        two = profile(paths, 2, args.precision)
    load_after = os.getloadavg()
    f = float(one["network_cpu"]) / float(one["case_cpu"])
    s_here = one["network_wall"] / two["network_wall"] if two["network_wall"] > 0 else 1.0
    result = {
        "benchmark": "one detected case, stage by stage, 1 and 2 torch threads (bench-preset phantom CTs)",
        "cases": [it.case_id for it in items],
        "precision": one["precision"],
        "one_thread": one,
        "two_threads": two,
        "network_share_of_one_thread_case_cpu": round(f, 3),
        "network_speedup_2_threads_measured_here": round(s_here, 3),
        "amdahl_two_workers_over_one_2_thread_worker": {
            "formula": "2 (1 - f + f / s): batch throughput, fixed costs left out",
            "with_s_measured_here": round(2 * (1 - f + f / s_here), 3),
            "with_s_1_64": round(2 * (1 - f + f / 1.64), 3),
            "with_s_2": round(2 * (1 - f + f / 2.0), 3),
        },
        "load_average_1_5_15": {
            "before": [round(v, 2) for v in load_before],
            "after": [round(v, 2) for v in load_after],
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "phantom CTs: speed figures only, not detection results",
    }
    atomic.write_json(args.out, result)
    print(
        f"per case, 1 thread: {one['case_cpu']:.2f} CPU-s ("
        + ", ".join(f"{s} {one[f'{s}_cpu']:.2f}" for s in STAGES)
        + f"); network share f = {f:.2f}; 2 threads: network ×{s_here:.2f} here; "
        f"2 workers vs 1 worker × 2 threads ≤ ×{result['amdahl_two_workers_over_one_2_thread_worker']['with_s_1_64']:.2f} "
        f"(s = 1.64); load {load_before[0]:.1f} → {load_after[0]:.1f}"
    )
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
