"""The network in float32 against bfloat16 (autocast, channels-last): speed, and how much the outputs move.

    python benchmarks/bench_precision.py [--model NAME] [--cohort COHORT] [--cases 2]
        [--calibration DIR] [--out benchmarks/results/precision.json]

Speed: the network stage of ``detect`` (sliding windows with the model's flip TTA) on bench-preset phantom
CTs, 1 and 2 torch threads, both formats in the same process and run (float32 is the reference).
Agreement: the largest change of the blended heatmap probability anywhere, and of the detections' scores
and diameters. ``--calibration DIR`` adds the figure that decides whether bfloat16 may be the default: the
pooled CPM and sensitivities of the raw detections on every cohort in DIR (release/train_real_model.py's
calibration cohorts, never trained on), in both formats. Phantom and insertion figures, not TCIA results.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lymphcad import atomic
from lymphcad.batch.detect import set_torch_threads
from lymphcad.batch.inputs import collect_inputs
from lymphcad.detector.config import DetectConfig, Precision
from lymphcad.detector.infer import (
    DenseOutput,
    detect_prepared,
    detect_volume,
    normalised_padded,
    predict_with,
)
from lymphcad.detector.model import LoadedModel, load_model
from lymphcad.detector.plan import prepare_volume
from lymphcad.detector.precision import native_bfloat16
from lymphcad.io.detections import Detection
from lymphcad.io.reader import read_ct_input
from lymphcad.phantom import generate_cohort

HERE = Path(__file__).resolve().parent
FORMATS = (Precision.FLOAT32, Precision.BFLOAT16)


def network_stage(
    loaded: LoadedModel, settings: DetectConfig, img: torch.Tensor
) -> tuple[DenseOutput, float, float]:
    """The blended network output of one case, with its wall and CPU seconds."""
    w0, c0 = time.perf_counter(), time.process_time()
    dense = predict_with(loaded.network, img, settings)
    return dense, time.perf_counter() - w0, time.process_time() - c0


def _matched(ref: list[Detection], other: list[Detection], floor: float) -> dict[str, Any]:
    """Each reference detection with probability ≥ ``floor`` against the nearest one of ``other``."""
    strong = [d for d in ref if d.probability >= floor]
    dist, dp, dd = [], [], []
    for d in strong:
        if not other:
            break
        m = min(other, key=lambda e: float(np.linalg.norm(np.subtract(e.center_xyz, d.center_xyz))))
        dist.append(float(np.linalg.norm(np.subtract(m.center_xyz, d.center_xyz))))
        dp.append(abs(m.probability - d.probability))
        if m.diameter_mm is not None and d.diameter_mm is not None:
            dd.append(abs(m.diameter_mm - d.diameter_mm) / max(d.diameter_mm, 1e-6))
    return {
        "reference_detections": len(strong),
        "matched_within_2mm": int(sum(x <= 2.0 for x in dist)),
        "max_abs_score_change": round(max(dp, default=0.0), 4),
        "max_rel_diameter_change": round(max(dd, default=0.0), 4),
    }


def speed_and_agreement(loaded: LoadedModel, paths: list[str]) -> dict[str, Any]:
    """Network seconds per case by thread count and format; output agreement (1-thread runs)."""
    cases = []
    for p in paths:
        vol = read_ct_input(p)
        prepared = prepare_volume(vol, loaded.plan)
        cases.append((vol, prepared, normalised_padded(prepared, loaded.plan)))
    out: dict[str, Any] = {}
    agreement: dict[str, Any] = {}
    for threads in (1, 2):
        set_torch_threads(threads)
        row: dict[str, Any] = {}
        for fmt in FORMATS:
            settings = replace(loaded.detect, precision=fmt)
            wall = cpu = 0.0
            dets: list[Detection] = []
            max_dprob = 0.0
            for k, (vol, prepared, img) in enumerate(cases):
                dense, w, c = network_stage(loaded, settings, img)
                wall, cpu = wall + w, cpu + c
                if threads == 1:
                    dets += detect_prepared(
                        prepared, loaded.network, loaded.plan, settings, case_id=f"c{k}",
                        original=vol, fpr=loaded.fpr, image=img, dense=dense,
                    )  # fmt: skip
                    if fmt is Precision.FLOAT32:
                        agreement.setdefault("_ref_dense", []).append(dense.prob)
                    else:
                        ref = agreement["_ref_dense"][k]
                        max_dprob = max(max_dprob, float((dense.prob - ref).abs().max()))
            row[fmt.value] = {
                "network_wall": round(wall / len(cases), 3),
                "network_cpu": round(cpu / len(cases), 3),
            }
            if threads == 1:
                agreement[fmt.value] = dets
                if fmt is Precision.BFLOAT16:
                    agreement["max_abs_heatmap_probability_change"] = round(max_dprob, 4)
        row["speedup_bfloat16"] = round(row["float32"]["network_wall"] / row["bfloat16"]["network_wall"], 3)
        out[f"{threads}_thread{'s' if threads > 1 else ''}"] = row
    ref_dets, bf_dets = agreement.pop("float32"), agreement.pop("bfloat16")
    agreement.pop("_ref_dense")
    agreement["detections_probability_ge_0_3"] = _matched(ref_dets, bf_dets, 0.3)
    agreement["detections_all"] = _matched(ref_dets, bf_dets, 0.0)
    out["agreement_1_thread"] = agreement
    return out


def calibration_cpm(loaded: LoadedModel, folder: Path) -> dict[str, Any]:
    """Pooled CPM and sensitivities of the raw detections on every cohort under ``folder``, both formats."""
    from lymphcad.cohort import open_cohort
    from lymphcad.detector.trainmix import case_truth_as
    from lymphcad.evaluate import EvalSettings, evaluate_truth
    from lymphcad.evaluate.settings import FP_RATES
    from lymphcad.io.detections import DetectionTable

    result: dict[str, Any] = {"cohorts": [], "fp_rates": list(FP_RATES)}
    for fmt in FORMATS:
        settings = replace(loaded.detect, precision=fmt)
        truths, dets = [], []
        t0 = time.perf_counter()
        for root in sorted(p for p in folder.iterdir() if (p / "dataset.json").is_file()):
            cohort = open_cohort(root)
            if fmt is FORMATS[0]:
                result["cohorts"].append(root.name)
            for case in cohort.cases:
                cid = f"{root.name}__{case}"
                truths.append(case_truth_as(cohort, case, cid))
                dets += detect_volume(cohort.read_image(case), loaded, settings, case_id=cid)
        res = evaluate_truth(truths, DetectionTable.from_detections(dets), EvalSettings(bootstrap=0))
        result[fmt.value] = {
            "cpm": round(float(res.pooled.cpm), 4),
            "sensitivity_at_fp": [round(float(s), 4) for s in res.pooled.sensitivity_at_fp],
            "cases": len(truths),
            "detections": len(dets),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        print(f"{folder.name} {fmt.value}: CPM {result[fmt.value]['cpm']:.4f}", flush=True)
    result["cpm_change_bfloat16"] = round(result["bfloat16"]["cpm"] - result["float32"]["cpm"], 4)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name or path (default: the shipped default)")
    ap.add_argument("--cohort", type=Path, default=None, help="a cohort to time (default: generate one)")
    ap.add_argument("--cases", type=int, default=2, help="cases to time (the first ones of the cohort)")
    ap.add_argument(
        "--calibration", type=Path, default=None, help="also the CPM on these cohorts, both formats"
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "precision.json")
    args = ap.parse_args()
    loaded = load_model(args.model)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        cohort = args.cohort
        if cohort is None:
            cohort = Path(tmp) / "cohort"
            generate_cohort(cohort, args.cases, "both", 2026, 0.5, "bench")
        items = collect_inputs(cohort).items[: args.cases]
        speed = speed_and_agreement(loaded, [it.path for it in items])
    result: dict[str, Any] = {
        "benchmark": "the network stage in float32 (reference) and bfloat16, bench-preset phantom CTs",
        "model": loaded.name,
        "tta_flips": loaded.detect.tta_flips,
        "native_bfloat16": native_bfloat16(torch.device("cpu")),
        "cases": [it.case_id for it in items],
        **speed,
    }
    if args.calibration is not None:
        set_torch_threads(2)
        result["calibration"] = calibration_cpm(loaded, args.calibration)
    result["load_average_1_5_15"] = {
        "before": [round(v, 2) for v in load_before],
        "after": [round(v, 2) for v in os.getloadavg()],
    }
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    result["time_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["note"] = "phantom (speed, agreement) and insertion (calibration) figures, not TCIA results"
    atomic.write_json(args.out, result)
    for key in ("1_thread", "2_threads"):
        r = speed[key]
        print(
            f"{key.replace('_', ' ')}: network float32 {r['float32']['network_wall']:.2f} s, bfloat16 "
            f"{r['bfloat16']['network_wall']:.2f} s per case (×{r['speedup_bfloat16']:.2f})"
        )
    agree = speed["agreement_1_thread"]
    print(
        f"largest heatmap change {agree['max_abs_heatmap_probability_change']:.4f}; detections ≥ 0.3: "
        f"{agree['detections_probability_ge_0_3']}"
    )
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
