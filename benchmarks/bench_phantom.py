"""Phantom benchmark: timings per preset (CPU seconds on one core) and the realism check (spec §6.11.4–6).

Realism: the fixed reference blob detector (lymphcad.phantom.blobs, multi-scale LoG inside 0–120 HU,
no training) — candidates per volume needed for ≥ 95 % sensitivity at d = 0.25 / 0.5 / 0.75, and the
sensitivity at fixed 10 / 20 / 40 candidates per volume (must fall as d rises). Target at d = 0.5: 30–60.
Case bootstrap (16/50/84th percentiles) of the candidate counts; the machine's load average is recorded.

    .venv/bin/python benchmarks/bench_phantom.py --cases 12 --workers 2 --out benchmarks/results/phantom.json
"""

from __future__ import annotations

import argparse
import json
import os
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
    from lymphcad.phantom.truthrule import RULES

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
        "n_enlarged": int(sum(r.enlarged for r in case.nodes)),
        "n_small": int(sum(not r.enlarged for r in case.nodes)),
        "gt_sad": [a.short_axis_mm for a in case.annotations],
        "enlarged_in_region": int(sum(r.enlarged and r.region == case.region for r in case.nodes)),
        "drawn_enlarged_kept": [
            r.sad >= RULES[r.region].positive_min_mm
            for r in case.nodes
            if r.drawn_sad >= RULES[r.region].positive_min_mm
        ],
        "dropped": case.params["nodes"].get("dropped", {}),
        "gt_touching_soft": int(
            sum(bool(r.gt_node_id) and r.nearest not in ("fat", "artery", "vein") for r in case.nodes)
        ),
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


def _boot(ranks: list[np.ndarray], target: float, n_boot: int = 2000) -> dict[str, float]:
    """Bootstrap over cases of the candidates needed for ``target`` sensitivity: 16/50/84th percentiles and
    the share of resamples that never reach it (a missed node caps the count at 10**9)."""
    from lymphcad.phantom.blobs import candidates_needed

    rng = np.random.default_rng(0)
    vals = []
    for _ in range(n_boot):
        pick = [ranks[i] for i in rng.integers(0, len(ranks), len(ranks))]
        if sum(len(x) for x in pick):
            vals.append(candidates_needed(pick, target))
    v = np.asarray(vals, dtype=float)
    p16, p50, p84 = np.percentile(v, [16, 50, 84])
    return {"p16": float(p16), "p50": float(p50), "p84": float(p84), "never": float(np.mean(v >= 10**9))}


def _sens(ranks: list[np.ndarray], n: int) -> dict[str, float]:
    allr = np.concatenate(ranks)
    p = float(np.mean(allr <= n))
    return {"value": p, "se": float(np.sqrt(p * (1 - p) / len(allr)))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=12, help="cases per difficulty (alternating regions)")
    ap.add_argument("--difficulties", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--timing-presets", nargs="*", default=["tiny", "bench"])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/phantom.json"))
    a = ap.parse_args()
    from lymphcad.phantom.blobs import candidates_needed, sensitivity_at

    res: dict[str, Any] = {
        "loadavg_start": list(os.getloadavg()),
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
            "candidates_needed_95_bootstrap": _boot(ranks, 0.95),
            "candidates_needed_90_bootstrap": _boot(ranks, 0.90),
            "sensitivity_at_10": sensitivity_at(ranks, 10),
            "sensitivity_at_20": sensitivity_at(ranks, 20),
            "sensitivity_at_40": sensitivity_at(ranks, 40),
            "sensitivity_se": {str(n): _sens(ranks, n)["se"] for n in (10, 20, 40)},
            "gt_touching_soft_tissue": int(sum(r["gt_touching_soft"] for r in rows)),
            "dropped_per_case": [r["dropped"] for r in rows],
            "mean_candidates_per_volume": float(np.mean([r["n_candidates"] for r in rows])),
            "cpu_s_per_case": [round(r["cpu_s"], 1) for r in rows],
            "n_gt_per_case": [r["n_gt"] for r in rows],
            "n_small_per_case": [r["n_small"] for r in rows],
            "gt_sad_mean": float(np.mean([s for r in rows for s in r["gt_sad"]]))
            if any(r["gt_sad"] for r in rows)
            else None,
            "drawn_enlarged_kept_share": float(np.mean([v for r in rows for v in r["drawn_enlarged_kept"]])),
            "drawn_enlarged_placed": int(sum(len(r["drawn_enlarged_kept"]) for r in rows)),
            "drawn_enlarged_dropped": int(sum(r["dropped"].get("enlarged", 0) for r in rows)),
            "missed_nodes": int(sum(int(np.sum(x >= 10**9)) for x in ranks)),
            "ranks": [r["ranks"] for r in rows],
        }
        print(d, {k: v for k, v in real[str(d)].items() if k != "ranks"}, flush=True)
    res["realism"] = real
    res["loadavg_end"] = list(os.getloadavg())
    res["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
