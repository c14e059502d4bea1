"""``make demo``: a fresh phantom cohort → detect with the shipped model → evaluate → FROC plot + gallery.

    python -m lymphcad.demo --out demo-out [--cases 4] [--seed 2026] [--difficulty 0.5]

Everything shown is measured on synthetic phantom data: phantom numbers, never TCIA results. Budget: under
3 minutes on 2 CPU cores (tiny preset).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _say(msg: str) -> None:
    print(msg, flush=True)


def _gallery(
    cohort: Any, dets: list[Any], matches_csv: Path | None, out_dir: Path, *, max_cases: int
) -> list[Path]:
    """One PNG per case: the top detections (TP/FP) and the missed nodes."""
    from lymphcad.report.show import render_rows

    outcome: dict[tuple[str, str, str, str], str] = {}
    hit_nodes: dict[str, set[str]] = {}
    if matches_csv is not None and matches_csv.is_file():
        with matches_csv.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                outcome[(r["seriesuid"], r["coordX"], r["coordY"], r["coordZ"])] = r["outcome"]
                if r["outcome"] == "tp" and r["node_id"]:
                    hit_nodes.setdefault(r["seriesuid"], set()).add(r["node_id"])
    paths = []
    for case in cohort.cases[:max_cases]:
        vol = cohort.read_image(case)
        lab = cohort.read_label(case)
        mine = sorted((d for d in dets if d.case_id == case), key=lambda d: -d.probability)
        det_rows = [(np.asarray(d.center_xyz), d.probability, d.diameter_mm) for d in mine[:10]]
        points, titles = [], []
        for d in mine[:2]:
            x, y, z = (f"{v:.3f}" for v in d.center_xyz)
            key = (case, x, y, z)
            word = outcome.get(key, "?")
            points.append(np.asarray(d.center_xyz))
            titles.append(f"detection p={d.probability:.2f} ({word})")
        missed = [a for a in cohort.annotations_for(case) if str(a.node_id) not in hit_nodes.get(case, set())]
        for a in missed[:2]:
            points.append(np.asarray(a.center_xyz))
            titles.append(f"MISSED node {a.node_id}: SAD {a.short_axis_mm or 0:.1f} mm")
        if not points:
            continue
        target = out_dir / f"gallery_{case}.png"
        render_rows(
            vol.array,
            vol.geometry,
            None if lab is None else lab.array,
            points,
            titles,
            det_rows,
            target,
            suptitle=f"{case}: top detections (red circles) and missed nodes (green = truth) — phantom data",
        )
        paths.append(target)
    return paths


def run_demo(
    out: Path, *, cases: int, seed: int, difficulty: float, model: str | None = None, gallery_cases: int = 3
) -> int:
    """Run the demo into ``out``; returns a process exit code."""
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    cohort_dir = out / "cohort"
    from lymphcad.cohort import open_cohort
    from lymphcad.detector.infer import detect_volume
    from lymphcad.detector.model import load_model
    from lymphcad.evaluate import EvalSettings, evaluate_cohort, write_outputs
    from lymphcad.io.detections import DetectionTable, write_detections, write_provenance
    from lymphcad.phantom import generate_cohort
    from lymphcad.report.froc_plot import plot_froc

    _say(f"[1/4] phantom cohort: {cases} case(s), difficulty {difficulty}, seed {seed} → {cohort_dir}")
    generate_cohort(cohort_dir, cases, "both", seed, difficulty, "tiny")

    cohort = open_cohort(cohort_dir)
    loaded = load_model(model)
    _say(f"[2/4] detect with the model {loaded.name} ({loaded.meta.get('training_data', 'synthetic data')})")
    dets = []
    t_det = time.perf_counter()
    for case in cohort.cases:
        dets.extend(detect_volume(cohort.read_image(case), loaded, case_id=case))
    t_det = time.perf_counter() - t_det
    dets_csv = out / "dets.csv"
    write_detections(dets_csv, dets)
    write_provenance(
        dets_csv,
        model_name=loaded.name,
        model_sha256=loaded.sha256,
        settings={"threshold": loaded.detect.threshold, "tta_flips": loaded.detect.tta_flips},
        inputs={str(cohort_dir): cohort.info.source},
        license=cohort.info.license,
        citation=list(cohort.info.citation),
    )
    _say(f"      {len(dets)} detection(s), {t_det / max(1, len(cohort.cases)):.1f} s per case")

    _say("[3/4] evaluate (FROC/CPM, mask-or-radius hits, duplicates ignored)")
    result = evaluate_cohort(cohort, DetectionTable.from_detections(dets), EvalSettings(bootstrap=200))
    _eval_json, matches_csv = write_outputs(result, out / "eval.json")
    p = result.pooled
    sens = dict(zip(("0.125", "0.25", "0.5", "1", "2", "3", "4", "6", "8"), p.sensitivity_at_fp, strict=True))
    _say(
        f"      PHANTOM numbers (synthetic data, not TCIA): {p.n_nodes} nodes in {p.n_cases} cases; "
        f"CPM {p.cpm:.3f}; sensitivity {sens['1']:.2f} @ 1, {sens['3']:.2f} @ 3 FP/volume"
    )
    plot_froc(result, out / "froc.png", title="FROC on a fresh phantom cohort (synthetic data, not TCIA)")
    _say(f"      FROC plot → {out / 'froc.png'}")
    _say("[4/4] gallery of top detections and missed nodes")
    for path in _gallery(cohort, dets, matches_csv, out, max_cases=gallery_cases):
        _say(f"      {path}")
    _say(f"demo finished in {time.perf_counter() - t0:.0f} s → {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m lymphcad.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("demo-out"))
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--difficulty", type=float, default=0.5)
    ap.add_argument(
        "--model", default=None, help="model/run folder or shipped name (default: the shipped model)"
    )
    args = ap.parse_args(argv)
    from lymphcad.errors import LymphcadError

    try:
        return run_demo(
            args.out, cases=args.cases, seed=args.seed, difficulty=args.difficulty, model=args.model
        )
    except LymphcadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
