"""The release recipe of the shipped default detector: train it reproducibly and measure it on a held-out
phantom test cohort (the model card's figures come from here).

    python release/train_default_model.py --work benchmarks/_work/default_model [--epochs N] [--ship]

Steps (each skipped when its output exists, so an interrupted run continues):

1. Phantom training cohorts (tiny preset, regions both) at several difficulties, one seed each, merged into
   one cohort with prefixed case ids (``d025_phantom_0000`` …); a 5-fold split of it (fold 0 is used:
   its val cases are the training-time validation set).
2. A held-out test cohort at difficulty 0.5 with its own seed (never seen in training).
3. ``lymphcad train`` on the merged cohort with ``--truth extra`` (every enlarged node of the phantom's
   full truth is a positive, nodes of 8–10 mm short axis are ignored, smaller ones are negatives).
4. ``detect`` + ``evaluate`` on the test cohort; figures written to ``benchmarks/results/detect_default_model.json``.
5. With ``--ship``: the model (float32 weights), plan and a model card into ``src/lymphcad/models/<name>/``.

All numbers are phantom numbers (synthetic data), never TCIA results.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

TRAIN_DIFFICULTIES = (0.25, 0.5, 0.75)
TRAIN_SEEDS = {0.25: 101, 0.5: 102, 0.75: 103}
TEST_SEED = 900
TEST_DIFFICULTY = 0.5
#: real CT backgrounds (shared/data/real-ct, never holdout/) for node insertion: training ones and one held-out
#: background for testing (insert cohorts are split by background, never by case)
REAL_CT = Path(os.environ.get("LYMPHCAD_SHARED", str(REPO.parent / "shared"))) / "data" / "real-ct"
INSERT_TRAIN = (
    "crlm-ct/CRLM-CT-1004",
    "totalsegmentator/example_ct.nii.gz",
    "totalsegmentator/example_ct_dicom",
)
INSERT_TEST = "crlm-ct/CRLM-CT-1006"
INSERT_SEED = 77


def _prefixed(prefix: str, case: str) -> str:
    return f"{prefix}_{case}"


def merge_cohorts(parts: dict[str, Path], out: Path) -> Path:
    """Merge phantom cohorts into one (case ids prefixed); images/labels/eval_regions/extra node tables."""
    from lymphcad.cohort import Annotation, CohortWriter, open_cohort

    if (out / "dataset.json").is_file():
        return out
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    writer = CohortWriter(tmp)
    anns: list[Annotation] = []
    cases: list[str] = []
    regions: dict[str, str] = {}
    hashes: dict[str, str] = {}
    info0 = None
    licences: list[str] = []
    citations: list[str] = []
    for prefix, root in parts.items():
        cohort = open_cohort(root, check_headers=False)
        info0 = info0 or cohort.info
        if cohort.info.license not in licences:
            licences.append(cohort.info.license)
        citations += [c for c in cohort.info.citation if c not in citations]
        for case in cohort.cases:
            new = _prefixed(prefix, case)
            cases.append(new)
            regions[new] = cohort.region_of(case)
            if cohort.info.content_hashes and case in cohort.info.content_hashes:
                hashes[new] = cohort.info.content_hashes[case]
            for sub in ("images", "labels", "eval_regions"):
                src = root / sub / f"{case}.nii.gz"
                if src.is_file():
                    (tmp / sub).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, tmp / sub / f"{new}.nii.gz")
            extra = root / "extra" / f"{case}_nodes.csv"
            if not extra.is_file():
                # an insert cohort: its annotations are its full truth (every inserted node is a positive)
                (tmp / "extra").mkdir(exist_ok=True)
                with (tmp / "extra" / f"{new}_nodes.csv").open("w", newline="", encoding="utf-8") as fh:
                    w = csv.writer(fh, lineterminator="\n")
                    w.writerow(
                        [
                            "case_id",
                            "id",
                            "coordX",
                            "coordY",
                            "coordZ",
                            "short_axis_mm",
                            "long_axis_mm",
                            "enlarged",
                        ]
                    )
                    for a in cohort.annotations_for(case):
                        w.writerow(
                            [new, a.node_id, *a.center_xyz, a.short_axis_mm or "", a.long_axis_mm or "", 1]
                        )
            else:
                (tmp / "extra").mkdir(exist_ok=True)
                with extra.open(newline="", encoding="utf-8") as fh:
                    rows = list(csv.DictReader(fh))
                with (tmp / "extra" / f"{new}_nodes.csv").open("w", newline="", encoding="utf-8") as fh:
                    dw = csv.DictWriter(
                        fh, fieldnames=list(rows[0].keys()) if rows else ["case_id"], lineterminator="\n"
                    )
                    dw.writeheader()
                    for r in rows:
                        r["case_id"] = new
                        dw.writerow(r)
            for a in cohort.annotations_for(case):
                anns.append(
                    Annotation(
                        new, a.node_id, a.center_xyz, a.short_axis_mm, a.long_axis_mm, a.region, a.label_id
                    )
                )
    assert info0 is not None
    from dataclasses import replace

    info = replace(
        info0,
        name="lymphcad-phantom-detector-training",
        description="Merged phantom cohorts (tiny preset) at difficulties "
        + ", ".join(str(d) for d in TRAIN_DIFFICULTIES)
        + " and synthetic nodes inserted into real CT backgrounds ("
        + ", ".join(INSERT_TRAIN)
        + ") for training the shipped detector.",
        cases=cases,
        case_regions=regions,
        content_hashes=hashes or None,
        license="; ".join(licences),
        citation=citations,
        source="synthetic phantom (lymphcad.phantom), seeds "
        + ", ".join(str(s) for s in TRAIN_SEEDS.values()),
    )
    writer.finish(info, anns)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def make_data(
    work: Path, n_per_difficulty: int, n_test: int, n_insert: int = 6, n_insert_test: int = 12
) -> tuple[Path, Path, Path]:
    """Generate (or reuse) the training parts, the merged cohort with its splits, and the test cohort."""
    from lymphcad.phantom import generate_cohort
    from lymphcad.phantom.insert import insert_cohort
    from lymphcad.splits import split_cohort

    parts = {}
    for d in TRAIN_DIFFICULTIES:
        root = work / "parts" / f"d{int(d * 100):03d}"
        if not (root / "dataset.json").is_file():
            generate_cohort(root, n_per_difficulty, "both", TRAIN_SEEDS[d], d, "tiny")
        parts[f"d{int(d * 100):03d}"] = root
    for i, bg in enumerate(INSERT_TRAIN):
        root = work / "parts" / f"ins{i}"
        if not (root / "dataset.json").is_file():
            insert_cohort(REAL_CT / bg, root, n_insert, (3, 6), INSERT_SEED + i, keep_size=False)
        parts[f"ins{i}"] = root
    merged = merge_cohorts(parts, work / "train_cohort")
    if not (merged / "splits.json").is_file():
        split_cohort(merged, scheme="kfold", folds=5, seed=0)
    test = work / "test_cohort"
    if not (test / "dataset.json").is_file():
        generate_cohort(test, n_test, "both", TEST_SEED, TEST_DIFFICULTY, "tiny")
    test_insert = work / "test_insert_cohort"
    if not (test_insert / "dataset.json").is_file():
        insert_cohort(
            REAL_CT / INSERT_TEST, test_insert, n_insert_test, (3, 6), INSERT_SEED + 100, keep_size=False
        )
    return merged, test, test_insert


def continue_run(src: Path, run: Path, epochs: int, threads: int) -> None:
    """Start ``run`` from the last checkpoint of ``src`` with ``epochs`` as the new total (warm restart).

    The run's config, plan, split and history are copied; the checkpoint's optimizer and scheduler state are
    kept, and the cosine schedule (a function of the configured total) resumes at the stretched position, so
    the learning rate jumps back up from its floor and decays again to the floor at the new last epoch.
    """
    from lymphcad.detector.config import load_config, save_config
    from lymphcad.detector.train import latest_checkpoint, read_history, write_history

    ckpt = latest_checkpoint(src)
    if ckpt is None:
        raise SystemExit(f"--continue-from: {src} holds no checkpoint")
    cfg = load_config(src / "config.toml")
    done = int(ckpt.stem.split("_")[1])
    if epochs <= done:
        raise SystemExit(f"--epochs {epochs} must exceed the {done} epochs of {src}")
    cfg = cfg.updated({"train": {"epochs": epochs, "threads": threads}})
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    save_config(run / "config.toml", cfg)
    for name in ("plan.json", "split.json"):
        shutil.copy2(src / name, run / name)
    write_history(run, read_history(src))
    shutil.copy2(ckpt, run / "checkpoints" / ckpt.name)


def default_config(epochs: int) -> Any:
    """The shipped model's configuration."""
    from lymphcad.detector.config import DetectorConfig

    return DetectorConfig().updated(
        {
            "train": {
                "epochs": epochs,
                "iters_per_epoch": 40,
                "batch_size": 4,
                "patch_zyx": [32, 64, 64],
                "warmup_iters": 40,
                "val_every": 6,
                "val_max_cases": 8,
                "lr": 2e-3,
                "device": "cpu",
                "threads": 2,
            }
        }
    )


def evaluate_model(model_dir: Path, test: Path, out: Path, *, second_stage: bool = True) -> dict[str, Any]:
    """Detect on the test cohort and evaluate; returns the figures (and writes eval.json, dets.csv).

    ``second_stage=False`` measures the first stage alone even when the model folder holds fpr.pt.
    """
    from lymphcad.cohort import open_cohort
    from lymphcad.detector.infer import detect_volume, with_overrides
    from lymphcad.detector.model import load_model
    from lymphcad.evaluate import EvalSettings, evaluate_cohort, write_outputs
    from lymphcad.io.detections import DetectionTable, write_detections

    model = load_model(model_dir)
    settings = with_overrides(model.detect, second_stage=second_stage)
    cohort = open_cohort(test)
    dets = []
    t0 = time.perf_counter()
    for case in cohort.cases:
        dets.extend(detect_volume(cohort.read_image(case), model, settings, case_id=case))
    secs = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    write_detections(out / "dets.csv", dets)
    result = evaluate_cohort(cohort, DetectionTable.from_detections(dets), EvalSettings(bootstrap=200))
    write_outputs(result, out / "eval.json")
    ev = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    return {
        "test_cohort": str(test),
        "n_cases": len(cohort.cases),
        "seconds_per_case": secs / max(1, len(cohort.cases)),
        "second_stage_used": bool(model.fpr is not None and second_stage),
        "pooled": ev["pooled"],
        "mediastinal": ev.get("mediastinal"),
        "abdominal": ev.get("abdominal"),
        "rule": ev["rule"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "_work" / "default_model")
    ap.add_argument("--cases-per-difficulty", type=int, default=20)
    ap.add_argument("--test-cases", type=int, default=20)
    ap.add_argument("--insert-cases", type=int, default=12, help="insertion cases per training background")
    ap.add_argument(
        "--insert-test-cases", type=int, default=12, help="insertion cases of the held-out background"
    )
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--ship", action="store_true", help="copy the model into src/lymphcad/models/")
    ap.add_argument("--name", default="centernet3d_phantom_v2")
    ap.add_argument("--skip-train", action="store_true", help="only evaluate an existing run")
    ap.add_argument(
        "--fpr-iters",
        type=int,
        default=1000,
        help="train the second stage (false-positive reduction) for this many iterations after the first "
        "(0 = no second stage); skipped when the run's model already holds fpr.pt",
    )
    ap.add_argument("--run", default="run", help="run folder name inside --work (default: run)")
    ap.add_argument(
        "--continue-from",
        default=None,
        help="run folder name inside --work whose last checkpoint (weights, optimizer, history) starts --run; "
        "--epochs is then the new total, the cosine schedule is stretched to it (a warm restart)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 by default: on 2 cores shared with other jobs, 1 thread ran 5x faster than 2)",
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lymphcad.detector.train import latest_checkpoint, read_history, train

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    merged, test, test_insert = make_data(
        work, args.cases_per_difficulty, args.test_cases, args.insert_cases, args.insert_test_cases
    )
    t_data = time.perf_counter() - t0
    run = work / args.run
    cfg = default_config(args.epochs).updated({"train": {"threads": args.threads}})
    if args.continue_from and latest_checkpoint(run) is None:
        continue_run(work / args.continue_from, run, args.epochs, args.threads)
    t1 = time.perf_counter()
    if not args.skip_train:
        resume = latest_checkpoint(run) is not None

        def report(done: int, total: int, msg: str) -> None:
            if done % 20 == 0 or done == total:
                print(f"[{time.strftime('%H:%M:%S')}] {done}/{total} {msg}", flush=True)

        train(
            merged,
            split=merged / "splits.json",
            fold=0,
            out=run,
            config=None if resume else cfg,
            resume=resume,
            truth="extra",
            progress=report,
        )
    t_train = time.perf_counter() - t1
    fpr_summary = None
    t2 = time.perf_counter()
    if args.fpr_iters > 0:
        from lymphcad.detector.fpr import FPR_FILE, FPRConfig, load_fpr
        from lymphcad.detector.fpr_train import train_fpr

        if (run / "model" / FPR_FILE).is_file():
            fpr_summary = load_fpr(run / "model" / FPR_FILE).config.validation
        else:

            def fpr_report(done: int, total: int, msg: str) -> None:
                if done % 100 == 0 or done == total:
                    print(f"[{time.strftime('%H:%M:%S')}] second stage {done}/{total} {msg}", flush=True)

            fpr_summary = train_fpr(
                merged,
                model=run / "model",
                split=merged / "splits.json",
                fold=0,
                truth="extra",
                config=FPRConfig(iters=args.fpr_iters),
                device="cpu",
                progress=fpr_report,
            )
    t_fpr = time.perf_counter() - t2
    suffix = "" if args.run == "run" else f"_{args.run}"
    figures = evaluate_model(run / "model", test, work / f"test_eval{suffix}")
    insert_figures = evaluate_model(run / "model", test_insert, work / f"test_insert_eval{suffix}")
    stage1 = stage1_insert = None
    if figures["second_stage_used"]:
        stage1 = evaluate_model(run / "model", test, work / f"test_eval{suffix}_stage1", second_stage=False)
        stage1_insert = evaluate_model(
            run / "model", test_insert, work / f"test_insert_eval{suffix}_stage1", second_stage=False
        )
    history = list(csv.DictReader((run / "history.csv").open(encoding="utf-8")))
    result = {
        "what": "shipped default detector, phantom test cohort (synthetic data, not TCIA)",
        "model": args.name,
        "train_cohort": str(merged),
        "train_difficulties": list(TRAIN_DIFFICULTIES),
        "test_difficulty": TEST_DIFFICULTY,
        "epochs": len(history),
        "threads": args.threads,
        "insert_cases": args.insert_cases,
        "insert_test_cases": args.insert_test_cases,
        "run": args.run,
        "continued_from": args.continue_from,
        "continued_from_epochs": (
            len(read_history(work / args.continue_from)) if args.continue_from else None
        ),
        "train_minutes_this_call": round(t_train / 60, 2),
        "train_minutes_total": round(sum(float(r["seconds"]) for r in history) / 60, 2),
        "data_minutes": round(t_data / 60, 2),
        "last_history_row": history[-1] if history else None,
        **figures,
        "insert_test": {"background": INSERT_TEST, **insert_figures},
        "second_stage": fpr_summary,
        "second_stage_minutes_this_call": round(t_fpr / 60, 2),
        "first_stage_only": None
        if stage1 is None or stage1_insert is None
        else {
            "phantom_test": {k: stage1[k] for k in ("pooled", "mediastinal", "abdominal")},
            "insert_test": {k: stage1_insert[k] for k in ("pooled", "mediastinal", "abdominal")},
        },
    }
    # the committed figures are those of the shipped (or default) run; other runs keep theirs in the work folder
    shipped_or_default = args.ship or args.run == "run"
    out = (
        REPO / "benchmarks" / "results" / "detect_default_model.json"
        if shipped_or_default
        else run / "result.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("epochs", "train_minutes_total")}, indent=1))
    print(json.dumps(result["pooled"], indent=1))
    if args.ship:
        ship(run, args.name, result)


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _block_rows(name: str, block: dict[str, Any] | None) -> str:
    if not block:
        return ""
    s = block["sensitivity_at_fp"]
    ci = block.get("cpm_ci95") or [None, None]
    return (
        f"| {name} | {block['n_cases']} | {block['n_nodes']} | {_fmt(s.get('0.125'))} | {_fmt(s.get('1'))} | "
        f"{_fmt(s.get('2'))} | {_fmt(s.get('3'))} | {_fmt(s.get('4'))} | {_fmt(s.get('8'))} | "
        f"{_fmt(block['cpm'])} [{_fmt(ci[0])}, {_fmt(ci[1])}] | {_fmt(block.get('ap_iou_0.1'))} |\n"
    )


def model_card(name: str, result: dict[str, Any], n_params: int, size_mb: float, cfg_text: str) -> str:
    """The model card (markdown) from the measured results."""
    speed_path = REPO / "benchmarks" / "results" / "detect_speed.json"
    speed = json.loads(speed_path.read_text(encoding="utf-8")) if speed_path.is_file() else None
    hist = result.get("last_history_row") or {}
    lines = [
        f"# Model card: `{name}`",
        "",
        "**Trained on synthetic data**: the lymphcad phantom, plus synthetic nodes inserted into three public real CT",
        "backgrounds. It was **not** trained on TCIA CT Lymph Nodes data (no real lymph node was ever a training",
        "target), and every figure below is a **phantom or insertion number**, not a TCIA CT Lymph Nodes result.",
        "",
        "## What it is",
        f"- 3D centre-heatmap detector (CenterNet/CPM-Net style, `lymphcad.detector.network.CenterNet3D`), "
        f"{n_params:,} parameters, float32 weights ({size_mb:.1f} MB; the measured figures are of exactly these weights). Design: docs/design.md.",
        "- Input: CT reoriented to LPS axes, resampled to 2 mm isotropic, HU clipped to [-250, 350] (plan.json).",
        "- Output: node centres (world LPS mm), probability (heatmap peak), diameter (mm); NMS in mm.",
        "- Intended use: research and software testing of the lymphcad pipeline (demo, CI). Not a medical device;",
        "  not validated on patient data.",
        "",
        "## Training data",
        "- Phantom cohorts (`lymphcad.phantom`, preset tiny: 64×128×128 voxels at 2.0×1.6×1.6 mm, regions both),",
        f"  difficulties {', '.join(str(d) for d in TRAIN_DIFFICULTIES)}, seeds "
        f"{', '.join(str(TRAIN_SEEDS[d]) for d in TRAIN_DIFFICULTIES)}, merged; fold 0 of a 5-fold split "
        "(80 % train, 20 % validation).",
        "- Truth: the phantom's full truth (`--truth extra`): every enlarged node (short axis ≥ 10 mm) is a positive,",
        "  nodes of 8–10 mm are ignored, smaller nodes are negatives.",
        "- Node insertions (`lymphcad.phantom.insert`: additive PSF-blurred synthetic nodes, the background's own",
        "  noise kept; as in the phantom, inserted nodes with a measured short axis ≥ 10 mm are the positives, smaller",
        f"  ones ignored (8–10 mm) or negatives) into real CT backgrounds: {', '.join(INSERT_TRAIN)}",
        "  (shared/data/real-ct; licences and citations: CRLM-CT = TCIA Colorectal-Liver-Metastases, CC BY 4.0,",
        "  Simpson et al. 2023, doi:10.7937/QXK2-QG03, and Clark et al. 2013 (TCIA); TotalSegmentator test files,",
        f"  Apache-2.0), {result.get('insert_cases', 6)} cases per background. Background {INSERT_TEST} is held out for testing.",
        "- Never used: shared/data/real-ct/holdout, TCIA CT Lymph Nodes.",
        "",
        "## Training settings",
        *(
            [
                "- Second stage (`fpr.pt`, `lymphcad.detector.fpr`): a 3D CNN on 48 mm cubes around the first stage's "
                "candidates of the training fold (hard negatives = its false positives; the truth centres added as "
                f"positives), fused as p1^(1-w)·p2^w with w = {result['second_stage'].get('weight')} chosen by "
                f"validation CPM ({result['second_stage'].get('validation_cpm_by_weight')}).",
            ]
            if isinstance(result.get("second_stage"), dict) and "weight" in result["second_stage"]
            else []
        ),
        f"- {result['epochs']} epochs × 40 iterations, batch 4 patches of 32×64×64 voxels, AdamW lr 2e-3, cosine",
        "  schedule with warm-up, flips/rotation/scale/intensity/noise/blur augmentation, positive oversampling 0.5.",
        *(
            [
                f"- Trained in two stages: the run `{result['continued_from']}` "
                f"({result.get('continued_from_epochs')} epochs, one cosine cycle), then "
                f"continued from its last checkpoint to {result['epochs']} epochs (`--continue-from`): the cosine "
                "schedule is stretched to the new total, so the learning rate restarts from its floor at about a "
                "quarter of its peak and decays again (a warm restart)."
            ]
            if result.get("continued_from")
            else []
        ),
        f"- Training time: {result['train_minutes_total']:.1f} min with {result.get('threads', 1)} torch thread(s) on a "
        "2-core CPU machine shared with other jobs "
        f"(last epoch loss {hist.get('loss', '–')}).",
        "- Full resolved configuration: `training_config.toml`; reproduce with "
        + (
            f"`python release/train_default_model.py --epochs {result.get('continued_from_epochs')}` then "
            f"`python release/train_default_model.py --run {result['run']} --continue-from "
            f"{result['continued_from']} --epochs {result['epochs']} --ship`."
            if result.get("continued_from")
            else "`python release/train_default_model.py --ship`."
        ),
        "",
        "## Measured figures (phantom test cohort, held out)",
        f"Test cohort: {result['n_cases']} fresh phantom cases at difficulty {TEST_DIFFICULTY}, seed {TEST_SEED} "
        "(never seen in training), tiny preset, regions both. Evaluator: `lymphcad.evaluate`, "
        f"match {result['rule']['match']}, radius {result['rule']['radius_mm']}, duplicates "
        f"{result['rule']['duplicates']}; 95 % CI by 200 bootstrap resamples of cases.",
        "",
        "| stratum | cases | nodes | sens @1/8 | @1 | @2 | @3 | @4 | @8 FP/vol | CPM [95 % CI] | AP@0.1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    table = (
        _block_rows("pooled", result["pooled"])
        + _block_rows("mediastinal", result.get("mediastinal"))
        + _block_rows("abdominal", result.get("abdominal"))
    )
    lines.append(table.rstrip("\n"))
    ins = result.get("insert_test")
    if ins:
        lines += [
            "",
            f"Insertions into the held-out real background {ins['background']} ({ins['n_cases']} cases, seed "
            f"{INSERT_SEED + 100}; ground truth = inserted nodes with a measured short axis ≥ 10 mm, as in the "
            "phantom; smaller inserted nodes stay in the images unannotated):",
            "",
            "| stratum | cases | nodes | sens @1/8 | @1 | @2 | @3 | @4 | @8 FP/vol | CPM [95 % CI] | AP@0.1 |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            _block_rows("pooled", ins["pooled"]).rstrip("\n"),
        ]
    s1 = result.get("first_stage_only")
    if s1:
        lines += [
            "",
            "First stage alone (`lymphcad detect --no-second-stage`), same test cohorts:",
            "",
            "| stratum | cases | nodes | sens @1/8 | @1 | @2 | @3 | @4 | @8 FP/vol | CPM [95 % CI] | AP@0.1 |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            (
                _block_rows("phantom pooled", s1["phantom_test"]["pooled"])
                + _block_rows("phantom mediastinal", s1["phantom_test"].get("mediastinal"))
                + _block_rows("phantom abdominal", s1["phantom_test"].get("abdominal"))
                + _block_rows("insertion pooled", s1["insert_test"]["pooled"])
            ).rstrip("\n"),
        ]
    lines += [
        "",
        "Issue targets (phantom d = 0.5): sensitivity ≥ 0.90 at 3 FP/volume and CPM ≥ 0.80 per region.",
        f"Detection time on the tiny test cases: {result['seconds_per_case']:.2f} s per case (2 shared cores).",
    ]
    if speed:
        lines.append(
            f"Speed on one 512×512×300 CT at 0.7×0.7×1.25 mm (benchmarks/bench_detect.py): "
            f"{speed['best_file_to_detections_s']:.1f} s file → detections, peak RAM "
            f"{speed['max_peak_rss_gb']:.2f} GB, {speed['threads']} threads."
        )
    lines += [
        "",
        "## Limitations",
        "- Phantom anatomy is simpler than real anatomy; success on the phantom says nothing about real CT",
        "  (see shared literature notes: a detector that was perfect on a toy phantom found nothing on real CT).",
        "- Insertion figures come from one held-out background with a handful of cases: very wide uncertainty.",
        "- Not evaluated on TCIA CT Lymph Nodes (real nodes); expect much lower figures there.",
        "- Probabilities are heatmap peak values, not calibrated probabilities.",
        "",
    ]
    del cfg_text
    return "\n".join(lines)


def ship(run: Path, name: str, result: dict[str, Any]) -> Path:
    """Copy the run's model (float32 weights, as measured) and plan into the package with a model card."""
    from lymphcad.detector.model import load_model, save_model
    from lymphcad.detector.network import count_parameters

    m = load_model(run / "model")
    dest = REPO / "src" / "lymphcad" / "models" / name
    pooled = result["pooled"]
    meta = {
        "training_data": "synthetic: lymphcad phantom (tiny preset, difficulties "
        + ", ".join(str(d) for d in TRAIN_DIFFICULTIES)
        + ") and synthetic nodes inserted into real CT backgrounds ("
        + ", ".join(INSERT_TRAIN)
        + "); not TCIA CT Lymph Nodes data",
        "epochs": result["epochs"],
        "phantom_test": {
            "difficulty": TEST_DIFFICULTY,
            "n_cases": result["n_cases"],
            "cpm": pooled["cpm"],
            "sensitivity_at_3": pooled["sensitivity_at_fp"].get("3"),
        },
    }
    save_model(dest, m.network, m.plan, name=name, detect=m.detect, meta=meta, half=False)
    from lymphcad.detector.fpr import FPR_FILE

    if (run / "model" / FPR_FILE).is_file():
        shutil.copy2(run / "model" / FPR_FILE, dest / FPR_FILE)
    elif (dest / FPR_FILE).is_file():
        (dest / FPR_FILE).unlink()
    cfg_text = (run / "config.toml").read_text(encoding="utf-8")
    (dest / "training_config.toml").write_text(cfg_text, encoding="utf-8")
    size_mb = (dest / "model.pt").stat().st_size / 1e6
    card = model_card(name, result, count_parameters(m.network), size_mb, cfg_text)
    (dest / "model_card.md").write_text(card, encoding="utf-8")
    print(f"shipped {dest} ({size_mb:.2f} MB)")
    return dest


if __name__ == "__main__":
    main()
