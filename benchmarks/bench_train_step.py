"""Cost of one training iteration, split into its parts: drawing the patches and the network's step.

    python benchmarks/bench_train_step.py [--cases 4] [--repeats 5] [--out benchmarks/results/train_step.json]

On a phantom cohort (tiny preset; patch sampling crops and augments around nodes, so the volume size barely
matters), for the default training settings (batch 4 × 48×64×64) and those of the shipped model's recipe
(batch 4 × 32×64×64):

* **sampling**: CPU seconds to draw one batch (crop, rotate/scale, intensity, noise, blur; targets);
* **step**: wall seconds of forward + backward + AdamW on the CPU, with 1 and with all threads;
* **FLOPs** of forward + backward per iteration (``torch.utils.flop_counter``), and the CPU's achieved
  GFLOP/s from them.

docs/scaling.md derives the GPU cost of a TCIA fold from these: on a GPU the network's step shrinks by the
GPU's throughput while the sampling stays on the CPU (the training loop draws patches in its own process),
so the sampling time is the floor of an iteration. Phantom data: speed figures only.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from lymphcad import atomic
from lymphcad.cohort import open_cohort
from lymphcad.detector.common import load_cases
from lymphcad.detector.config import DetectorConfig
from lymphcad.detector.network import build_network
from lymphcad.detector.sampling import PatchSampler
from lymphcad.detector.train import build_plan_from_cohort, compute_losses
from lymphcad.phantom import generate_cohort

HERE = Path(__file__).resolve().parent


def measure(cfg: DetectorConfig, sampler: PatchSampler, repeats: int) -> dict[str, Any]:
    """Sampling seconds, step seconds (1 and all threads) and FLOPs of one iteration with ``cfg``."""
    rng = np.random.default_rng(0)
    t = []
    for _ in range(repeats):
        c0 = time.process_time()
        batch = sampler.batch(rng, cfg.train.batch_size)
        t.append(time.process_time() - c0)
    sampling = float(np.median(t))
    net = build_network(cfg.network)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        losses = compute_losses(
            net(batch["image"]), batch, w_size=cfg.train.w_size, w_offset=cfg.train.w_offset
        )
        losses["loss"].backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    steps: dict[str, float] = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        step()  # warm-up
        w = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            w.append(time.perf_counter() - t0)
        steps[f"threads{threads}"] = round(float(np.median(w)), 3)
    best = min(steps.values())
    return {
        "batch": cfg.train.batch_size,
        "patch_zyx": list(cfg.train.patch_zyx),
        "sampling_cpu_s_per_batch": round(sampling, 3),
        "step_s": steps,
        "gflop_per_iteration": round(flops / 1e9, 1),
        "cpu_gflop_per_s": round(flops / 1e9 / best, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_step.json")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp) / "cohort"
        generate_cohort(root, args.cases, "both", 7, 0.5, "tiny")
        cohort = open_cohort(root)
        settings = {
            "default": DetectorConfig(),
            "shipped_recipe": DetectorConfig().updated({"train": {"patch_zyx": [32, 64, 64]}}),
        }
        out: dict[str, Any] = {}
        for name, cfg in settings.items():
            plan = build_plan_from_cohort(cohort, cohort.cases, cfg)
            cases = load_cases(
                cohort,
                cohort.cases,
                plan,
                "labels",
                enlarged_mm=cfg.train.enlarged_mm,
                ignore_below_mm=cfg.train.ignore_below_mm,
            )
            out[name] = measure(cfg, PatchSampler(cases, plan, cfg.train, cfg.augment), args.repeats)
            print(f"{name}: {out[name]}")
    result = {
        "benchmark": "one training iteration: patch sampling (CPU) vs the network's step (CPU), FLOPs",
        "settings": out,
        "load_average_1_5_15": {
            "before": [round(v, 2) for v in load_before],
            "after": [round(v, 2) for v in os.getloadavg()],
        },
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "platform": platform.platform()},
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "note": "phantom patches: speed figures only",
    }
    atomic.write_json(args.out, result)
    print(f"→ {args.out}")


if __name__ == "__main__":
    main()
