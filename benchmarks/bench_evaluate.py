"""Benchmark of ``lymphcad evaluate``'s core: 176 volumes × 200 detections, masks already in memory.

Timed (wall clock, best of ``--repeats``):
* ours: matching every case once + the pooled FROC curve + 1000 bootstrap resamples of it (target ≤ 3 s);
* ours, one FROC: matching + the pooled curve's point estimates (no bootstrap);
* ours, everything: all strata with bootstrap CIs and AP at IoU 0.1/0.5 (reported, no target);
* MONAI, one FROC on the same input: ``compute_fp_tp_probs_nd`` per case, ``compute_froc_curve_data``,
  ``compute_froc_score`` at the 7 LUNA rates (MONAI is a test/benchmark-only dependency).
The CPM of both is checked to agree (mask rule, duplicates ignored) before any time is reported.

Run: ``.venv/bin/python benchmarks/bench_evaluate.py [--out benchmarks/results/evaluate.json]``.
The cohort is synthetic (random spheres and detections); no number here is a detection result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lymphcad.cohort import Annotation
from lymphcad.evaluate import EvalSettings, evaluate_truth
from lymphcad.evaluate.matching import CaseTruth
from lymphcad.evaluate.run import evaluate_stratum, match_cohort
from lymphcad.evaluate.settings import CPM_RATES
from lymphcad.evaluate.strata import pooled
from lymphcad.evaluate.truth import case_truth
from lymphcad.geometry import Geometry
from lymphcad.io.detections import DetectionTable

N_CASES = 176
N_DETS = 200
SHAPE_ZYX = (64, 96, 96)
GEOM = Geometry(SHAPE_ZYX, (2.5, 0.8, 0.8), (-40.0, -40.0, -80.0), np.eye(3))


def make_input(seed: int = 0) -> tuple[list[CaseTruth], list[np.ndarray], DetectionTable]:
    """Random spheres (3–8 per case) and 200 detections per case, half of them inside some node."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(SHAPE_ZYX, dtype=np.float32)
    sz, sy, sx = GEOM.spacing_zyx
    truths, masks = [], []
    ids, centers, probs = [], [], []
    for c in range(N_CASES):
        case = f"case{c:03d}"
        mask = np.zeros(SHAPE_ZYX, np.uint16)
        anns = []
        for i in range(1, int(rng.integers(3, 9)) + 1):
            ctr = rng.uniform([6, 10, 10], [SHAPE_ZYX[0] - 6, SHAPE_ZYX[1] - 10, SHAPE_ZYX[2] - 10])
            r_mm = float(rng.uniform(4, 12))
            z0, z1 = int(max(ctr[0] - r_mm / sz - 1, 0)), int(min(ctr[0] + r_mm / sz + 2, SHAPE_ZYX[0]))
            y0, y1 = int(max(ctr[1] - r_mm / sy - 1, 0)), int(min(ctr[1] + r_mm / sy + 2, SHAPE_ZYX[1]))
            x0, x1 = int(max(ctr[2] - r_mm / sx - 1, 0)), int(min(ctr[2] + r_mm / sx + 2, SHAPE_ZYX[2]))
            d2 = (
                ((zz[z0:z1, y0:y1, x0:x1] - ctr[0]) * sz) ** 2
                + ((yy[z0:z1, y0:y1, x0:x1] - ctr[1]) * sy) ** 2
                + ((xx[z0:z1, y0:y1, x0:x1] - ctr[2]) * sx) ** 2
            )
            mask[z0:z1, y0:y1, x0:x1][d2 <= r_mm**2] = i
        present = [i for i in np.unique(mask).tolist() if i]
        relabel = np.zeros(int(mask.max()) + 1, np.uint16)
        relabel[present] = np.arange(1, len(present) + 1)
        mask = relabel[mask]
        for k in range(1, len(present) + 1):
            vox = np.argwhere(mask == k)
            ctr_w = GEOM.zyx_to_world(vox.mean(axis=0))
            anns.append(Annotation(case, k, tuple(ctr_w), float(rng.uniform(5, 25)), None, None, k))
        region = "mediastinal" if c < 90 else "abdominal"
        truths.append(case_truth(case, region=region, annotations=anns, geometry=GEOM, labels_zyx=mask))
        masks.append(mask)
        inside = np.argwhere(mask > 0)
        n_in = N_DETS // 2
        vox = np.concatenate(
            [inside[rng.integers(0, inside.shape[0], n_in)], rng.integers(0, SHAPE_ZYX, (N_DETS - n_in, 3))]
        )
        ids.extend([case] * N_DETS)
        centers.append(GEOM.zyx_to_world(vox.astype(float)))
        probs.append(np.concatenate([rng.beta(4, 2, n_in), rng.beta(2, 5, N_DETS - n_in)]))
    p = np.concatenate(probs)
    p = np.round(p * 2**20) / 2**20  # exact in float32 (MONAI stores TP scores as float32)
    table = DetectionTable(
        np.array(ids, dtype=np.str_),
        np.concatenate(centers),
        np.clip(p, 2**-20, 1.0),
        np.full(len(ids), 10.0),
    )
    return truths, masks, table


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "evaluate.json")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()

    t0 = time.perf_counter()
    truths, masks, table = make_input()
    build_s = time.perf_counter() - t0
    n_nodes = sum(t.n_nodes for t in truths)
    settings = EvalSettings(match="mask", duplicates="ignore", bootstrap=args.bootstrap, seed=0)
    no_boot = EvalSettings(match="mask", duplicates="ignore", bootstrap=0)
    stratum = pooled(truths)

    def ours_core(s: EvalSettings) -> Any:
        matched = match_cohort(truths, table, s)
        return evaluate_stratum(matched, table, stratum, s, with_ap=False)

    ours_boot_s, res_boot = best_time(lambda: ours_core(settings), args.repeats)
    ours_one_s, res_one = best_time(lambda: ours_core(no_boot), args.repeats)
    full_s, _ = best_time(lambda: evaluate_truth(truths, table, settings), 1)

    from monai.metrics import froc

    def monai_one() -> float:
        fps_all, tps_all, n_targets = [], [], 0
        for t, mask in zip(truths, masks, strict=True):
            sel = table.case_ids == t.case_id
            coords = GEOM.world_to_voxel_zyx(table.centers_xyz[sel])
            fp, tp, n = froc.compute_fp_tp_probs_nd(table.probabilities[sel], coords, mask)
            fps_all.append(fp)
            tps_all.append(tp)
            n_targets += n
        fps, sens = froc.compute_froc_curve_data(
            np.concatenate(fps_all), np.concatenate(tps_all), n_targets, len(truths)
        )
        return float(froc.compute_froc_score(fps, sens, CPM_RATES))

    monai_s, monai_cpm = best_time(monai_one, 1)
    if abs(monai_cpm - res_one.cpm) > 1e-6:
        raise SystemExit(f"CPM differs: ours {res_one.cpm} vs MONAI {monai_cpm}")
    if abs(res_boot.cpm - res_one.cpm) > 1e-12:
        raise SystemExit("bootstrap run changed the point estimate")

    result = {
        "benchmark": "evaluate: 176 volumes x 200 detections, masks in memory, mask rule, duplicates ignored",
        "input": {
            "n_cases": N_CASES,
            "detections_per_case": N_DETS,
            "n_detections": len(table),
            "n_nodes": n_nodes,
            "mask_shape_zyx": list(SHAPE_ZYX),
            "synthetic": True,
            "build_s": round(build_s, 3),
        },
        "ours_match_plus_bootstrap_s": round(ours_boot_s, 4),
        "bootstrap_resamples": args.bootstrap,
        "target_s": 3.0,
        "meets_target": ours_boot_s <= 3.0,
        "ours_match_plus_one_froc_s": round(ours_one_s, 4),
        "ours_full_evaluation_s": round(full_s, 4),
        "monai_one_froc_s": round(monai_s, 4),
        "ratio_monai_one_froc_over_ours_one_froc": round(monai_s / ours_one_s, 1),
        "ratio_monai_one_froc_over_ours_with_bootstrap": round(monai_s / ours_boot_s, 2),
        "cpm_ours": res_one.cpm,
        "cpm_monai": monai_cpm,
        "cpm_ci95_ours": list(res_boot.cpm_ci95) if res_boot.cpm_ci95 else None,
        "repeats": args.repeats,
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "note": "synthetic spheres and random detections: timings only, not a detection result",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
