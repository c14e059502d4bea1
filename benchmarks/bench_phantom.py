"""Phantom benchmark: timings per preset (CPU seconds on one core) and the realism check (spec §6.11.4–6).

Realism: the fixed reference blob detector (lymphcad.phantom.blobs, multi-scale LoG inside 0–120 HU,
no training) — candidates per volume needed for ≥ 95 % sensitivity at d = 0.25 / 0.5 / 0.75, and the
sensitivity at a fixed 40 candidates per volume (must fall as d rises). Target at d = 0.5: 30–60.

    .venv/bin/python benchmarks/bench_phantom.py --cases 6 --out benchmarks/results/phantom.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


def _one(args: tuple[int, int, float, str, bool]) -> dict[str, Any]:
    from lymphcad.phantom import generate_case
    from lymphcad.phantom.blobs import blob_candidates, hits_at_rank

    seed, idx, d, preset, detect = args
    t0, c0 = time.perf_counter(), time.process_time()
    case = generate_case(seed, idx, "both", d, preset)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out: dict[str, Any] = {
        "case_index": idx,
        "region": case.region,
        "difficulty": d,
        "wall_s": wall,
        "cpu_s": cpu,
        "shape_zyx": list(case.image.shape),
        "timings": case.timings,
        "n_gt": len(case.annotations),
        "n_enlarged": int(sum(r["enlarged"] for r in case.nodes)),
        "n_small": int(sum(not r["enlarged"] for r in case.nodes)),
        "gt_sad": [a.short_axis_mm for a in case.annotations],
        "enlarged_in_region": int(sum(r["enlarged"] and r["region"] == case.region for r in case.nodes)),
        "drawn_enlarged_kept": [r["sad"] >= 10.0 for r in case.nodes if r["drawn_sad"] >= 10.0],
    }
    if detect:
        sp = case.geometry.spacing_zyx
        cand, _ = blob_candidates(case.image, sp, region=case.eval_region)
        nodes = np.array([case.geometry.world_to_zyx(a.center_xyz) for a in case.annotations]).reshape(
            -1, 3
        ) * np.array(sp)
        radii = np.array([max(5.0, (a.short_axis_mm or 10.0) / 2) for a in case.annotations])
        out["ranks"] = hits_at_rank(cand, nodes, radii).tolist()
        out["n_candidates"] = len(cand)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=6, help="cases per difficulty (alternating regions)")
    ap.add_argument("--difficulties", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--timing-presets", nargs="*", default=["tiny", "bench"])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/phantom.json"))
    a = ap.parse_args()
    from lymphcad.phantom.blobs import candidates_needed, sensitivity_at

    res: dict[str, Any] = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "note": "phantom numbers, never TCIA results; cpu_s = process CPU time of one case on one core",
    }
    timing: dict[str, Any] = {}
    for preset in a.timing_presets:
        n = 4 if preset == "tiny" else 2
        rows = [_one((a.seed + 7, i, 0.5, preset, False)) for i in range(n)]
        timing[preset] = {
            "cpu_s": [round(r["cpu_s"], 2) for r in rows],
            "wall_s": [round(r["wall_s"], 2) for r in rows],
            "shape_zyx": [r["shape_zyx"] for r in rows],
        }
        print(preset, timing[preset], flush=True)
    res["timing"] = timing
    real: dict[str, Any] = {}
    for d in a.difficulties:
        jobs = [(a.seed, i, d, a.preset, True) for i in range(a.cases)]
        if a.workers > 1:
            with ProcessPoolExecutor(a.workers) as ex:
                rows = list(ex.map(_one, jobs))
        else:
            rows = [_one(j) for j in jobs]
        ranks = [np.asarray(r["ranks"], dtype=np.int64) for r in rows]
        real[str(d)] = {
            "cases": len(rows),
            "gt_nodes": int(sum(len(x) for x in ranks)),
            "candidates_needed_95": candidates_needed(ranks, 0.95),
            "candidates_needed_90": candidates_needed(ranks, 0.90),
            "sensitivity_at_10": sensitivity_at(ranks, 10),
            "sensitivity_at_20": sensitivity_at(ranks, 20),
            "sensitivity_at_40": sensitivity_at(ranks, 40),
            "mean_candidates_per_volume": float(np.mean([r["n_candidates"] for r in rows])),
            "cpu_s_per_case": [round(r["cpu_s"], 1) for r in rows],
            "n_gt_per_case": [r["n_gt"] for r in rows],
            "n_small_per_case": [r["n_small"] for r in rows],
            "gt_sad_mean": float(np.mean([s for r in rows for s in r["gt_sad"]]))
            if any(r["gt_sad"] for r in rows)
            else None,
            "drawn_enlarged_kept_share": float(np.mean([v for r in rows for v in r["drawn_enlarged_kept"]])),
            "ranks": [r["ranks"] for r in rows],
        }
        print(d, {k: v for k, v in real[str(d)].items() if k != "ranks"}, flush=True)
    res["realism"] = real
    res["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
