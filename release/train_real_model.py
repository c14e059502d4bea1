"""Reproducibly train the detector for real anatomy (issue 12) on the phantom plus every usable real CT background.

    python release/train_real_model.py [--work benchmarks/_work/real_model] [--epochs N] [--resume]

Steps (each skipped when its output exists, so an interrupted call continues where it stopped):

1. **Data.** Phantom cohorts (tiny preset, both regions) at difficulties 0.25 / 0.5 / 0.75, and insertion
   cohorts (``lymphcad.phantom.insert``) into every training background of :data:`TRAIN_BACKGROUNDS`: all
   volumetric chest and abdominal CT of shared/data/real-ct except the test backgrounds of the realism
   benchmark (:data:`TEST_BACKGROUNDS`: the two holdout chest crops and CRLM-CT-1006) — contrast and
   non-contrast, sharp and smooth kernels. Insertion never uses ``blend`` (``--formation``, default
   :data:`TRAIN_FORMATION`), so the benchmark can test on a formation the model never saw. ``--data`` names
   the cohorts' folder (a new insertion method means new cohorts, not overwritten ones).
2. **Training** (:func:`lymphcad.detector.trainmix.train_mix`): a weighted mix of those sources with
   hard-negative patches (mimic prior, then the network's own false positives re-mined every few
   epochs; ``--mine-skip-node-like`` leaves out those that look like a real node), CT-physics augmentation
   (contrast phase, kernel, correlated noise) and the auxiliary node-mask loss. One checkpoint per epoch;
   ``--resume`` continues the newest one (bit-identical on CPU). ``--init-from RUN`` starts a new run from
   another run's weights (a warm start on new data). Every validated epoch (every 10) records the
   validation CPM and the **sphere score** (``trainmix.sphere_peak``: the raw score at a plain 14 mm
   soft-tissue sphere in fat) and keeps its weights in ``RUN/snapshots/epoch_NNNN``.
3. **Stop rule**: ship the validated epoch with the highest validation CPM among those whose sphere score
   is at least 0.5. Late epochs learn to suppress a node without anatomical context (run_v5 below, and
   run_v6/v8 from epoch 50 on), which cannot be what carries over to other insertion methods.
4. **Calibration** (``--calibrate [--snapshot EPOCH] [--calibration FOLDER]``): the isotonic score →
   probability map on fresh calibration cohorts, stored beside the weights.
5. **Ship** (``--ship NAME [--snapshot EPOCH]``): float16 weights, plan, calibration and the model card
   (figures from ``benchmarks/bench_realism.py``'s JSON, ``--realism``) into ``src/lymphcad/models/NAME``.

The shipped ``centernet3d_realmix_v5`` (the default) was made by these calls (the work folder is the
default)::

    python release/train_real_model.py --data data_v7 --formation additive,texture --insert-cases 16 \
        --run run_v8 --epochs 60 --mine-skip-node-like --init-from benchmarks/_work/real_model/run_v4/model
    python release/train_real_model.py --run run_v8 --calibrate --calibration calibration_v8 --snapshot 40
    python benchmarks/bench_realism.py --model benchmarks/_work/real_model/run_v8/snapshots/epoch_0040 \
        --name run_v8_e40 --baseline centernet3d_realmix_v4 --tta --out benchmarks/results/realism.json
    python release/train_real_model.py --run run_v8 --ship centernet3d_realmix_v5 --snapshot 40

``run_v4/model`` holds the float32 weights that ``centernet3d_realmix_v4`` ships cast to float16
(``--init-from src/lymphcad/models/centernet3d_realmix_v4`` starts from the same weights up to that rounding).
The stop rule chose epoch 40 of 60 (sphere score 0.54, validation CPM 0.73; epochs 50 and 60 had higher
validation CPM, 0.77 and 0.79, with sphere scores 0.33 and 0.41).

``centernet3d_realmix_v4`` was made by ``--run run_v4 --epochs 50 --init-from
src/lymphcad/models/centernet3d_realmix_v3`` and ``--run run_v4 --calibrate`` on the cohorts made before
mass-effect placement existed (the ACRIN chests took no node). A longer run warm-started from it (``--run
run_v5 --epochs 80``) reached a higher validation CPM (0.757 against 0.700) but no longer detected the plain
sphere (0.0; the CLI test ``test_shipped_model_default_via_cli`` caught it) and was not shipped; its realism
figures are kept in ``benchmarks/results/realism_run_v5.json``. All figures from these data are
phantom/insertion figures, never TCIA CT Lymph Nodes results.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any, Final

REPO = Path(__file__).resolve().parents[1]
REAL_CT = Path(os.environ.get("LYMPHCAD_SHARED", str(REPO.parent / "shared"))) / "data" / "real-ct"

TRAIN_DIFFICULTIES: Final = (0.25, 0.5, 0.75)
TRAIN_SEEDS: Final = {0.25: 101, 0.5: 102, 0.75: 103}
#: every volumetric chest/abdominal CT in shared/data/real-ct that is neither holdout nor a test background
#: (name → path under real-ct). Not used: slabs thinner than a training patch (mirp-lidc-idri-0314: 24 mm,
#: a patch spans 64 mm), single or scattered slices (dcmqi, lungmask, dicom-numpy, cornerstone), head CT.
TRAIN_BACKGROUNDS: Final = {
    "crlm1004": "crlm-ct/CRLM-CT-1004",
    "ts_abdomen": "totalsegmentator/example_ct.nii.gz",
    "ts_upper_abdomen": "totalsegmentator/example_ct_dicom",
    "cmbcrc_chest": "cmb-crc/MSB-01068-chest",
    "acrin001_abdomen": "acrin-flt-breast/001-abdomen",
    "acrin001_chest": "acrin-flt-breast/001-chest",
    "acrin013_chest": "acrin-flt-breast/013-chest",
}
#: the realism benchmark's test backgrounds (never trained on): two chest (holdout/) and one abdomen
TEST_BACKGROUNDS: Final = {
    "ts_chest_pulmonary": "holdout/totalsegmentator-chest/pulmonary_ct_cropped.nii.gz",
    "ts_chest_aorta": "holdout/totalsegmentator-chest/aorta_ct_cropped.nii.gz",
    "crlm1006": "crlm-ct/CRLM-CT-1006",
}
#: the region each test background's nodes are inserted at (the holdout crops show little lung, so the
#: insertion's own region guess is not trusted for them)
TEST_REGIONS: Final = {
    "ts_chest_pulmonary": "mediastinal",
    "ts_chest_aorta": "mediastinal",
    "crlm1006": "abdominal",
}
#: chest backgrounds seen in training, tested with the insertion method and formation the model never saw
#: (held out two ways, not by background): the insertion finds no room for nodes in the holdout chest crops
SEEN_CHEST_TESTS: Final = {
    "cmbcrc_chest": "cmb-crc/MSB-01068-chest",
    "acrin013_chest": "acrin-flt-breast/013-chest",
}
TRAIN_FORMATION: Final = "additive"
INSERT_SEED: Final = 1200
PHANTOM_CASES: Final = 20
#: calibration cohorts: fresh nodes (both formations) in the training backgrounds and a fresh phantom
#: cohort, never trained on and disjoint from the realism benchmark's test data
CALIB_SEED: Final = 5200
CALIB_INSERT_CASES: Final = 4
CALIB_PHANTOM_CASES: Final = 12


def make_training_data(
    work: Path,
    insert_cases: int,
    nodes: tuple[int, int],
    *,
    data: str = "data",
    formation: str = TRAIN_FORMATION,
) -> list[Any]:
    """Generate (or reuse) the phantom and insertion cohorts in ``work/data``; returns the mix sources."""
    from lymphcad.detector.datamix import MixSource
    from lymphcad.phantom import generate_cohort
    from lymphcad.phantom.insert import PlacementError, insert_cohort

    sources = []
    for d in TRAIN_DIFFICULTIES:
        name = f"phantom_d{int(d * 100):03d}"
        root = work / data / name
        if not (root / "dataset.json").is_file():
            print(f"[{time.strftime('%H:%M:%S')}] phantom {name}", flush=True)
            generate_cohort(root, PHANTOM_CASES, "both", TRAIN_SEEDS[d], d, "tiny")
        sources.append(MixSource(name, root, "phantom", weight=1.0 / len(TRAIN_DIFFICULTIES)))
    for i, (name, rel) in enumerate(sorted(TRAIN_BACKGROUNDS.items())):
        root = work / data / f"insert_{name}"
        if not (root / "dataset.json").is_file():
            print(f"[{time.strftime('%H:%M:%S')}] insertion into {rel}", flush=True)
            try:
                insert_cohort(REAL_CT / rel, root, insert_cases, nodes, INSERT_SEED + i, formation=formation)
            except PlacementError as exc:
                # a background whose stations hold fewer nodes still teaches its anatomy (hard negatives)
                print(f"  {exc}; retrying with 0 to {nodes[1]} nodes per case", flush=True)
                insert_cohort(
                    REAL_CT / rel,
                    root,
                    insert_cases,
                    (0, nodes[1]),
                    INSERT_SEED + i,
                    formation=formation,
                )
        sources.append(
            MixSource(
                f"insert_{name}", root, "insertion", weight=2.0 / len(TRAIN_BACKGROUNDS), background=name
            )
        )
    return sources


def calibration_cohorts(
    work: Path, nodes: tuple[int, int], folder: str = "calibration"
) -> list[tuple[str, Path]]:
    """Generate (or reuse) the calibration cohorts: new insertions into every training background (both
    image-formation models) and a new phantom cohort (difficulty 0.5). None of them is trained on."""
    from lymphcad.phantom import generate_cohort
    from lymphcad.phantom.insert import PlacementError, insert_cohort

    out = []
    root = work / folder / "phantom_d050"
    if not (root / "dataset.json").is_file():
        generate_cohort(root, CALIB_PHANTOM_CASES, "both", CALIB_SEED, 0.5, "tiny")
    out.append(("phantom_d050", root))
    for i, (name, rel) in enumerate(sorted(TRAIN_BACKGROUNDS.items())):
        root = work / folder / f"insert_{name}"
        if not (root / "dataset.json").is_file():
            print(f"[{time.strftime('%H:%M:%S')}] calibration insertion into {rel}", flush=True)
            seed = CALIB_SEED + 1 + i
            try:
                insert_cohort(REAL_CT / rel, root, CALIB_INSERT_CASES, nodes, seed, formation="both")
            except PlacementError:
                insert_cohort(REAL_CT / rel, root, CALIB_INSERT_CASES, (0, nodes[1]), seed, formation="both")
        out.append((f"insert_{name}", root))
    return out


def model_dir(run: Path, snapshot: int | None) -> Path:
    """The weights a call works on: the run's last (``run/model``) or a validated epoch's snapshot."""
    return run / "model" if snapshot is None else run / "snapshots" / f"epoch_{snapshot:04d}"


def calibrate_run(
    work: Path,
    run: Path,
    nodes: tuple[int, int],
    folder: str = "calibration",
    snapshot: int | None = None,
    tta: bool = False,
) -> Path:
    """Fit the isotonic map raw score → P(the detection hits a node) of the run's model on the calibration
    cohorts and store it beside the model (``run/model/calibration.json``), with its ECE before and after.

    Isotonic rather than temperature scaling: the heatmap peak is not a logit and its miscalibration is not
    one monotone stretch (many detections share low scores); isotonic needs no shape assumption and the
    pooled calibration set holds hundreds of detections.
    """
    import json

    from lymphcad import atomic
    from lymphcad.cohort import open_cohort
    from lymphcad.detector.infer import detect_volume, with_overrides
    from lymphcad.detector.model import load_model
    from lymphcad.detector.trainmix import case_truth_as
    from lymphcad.evaluate import EvalSettings, evaluate_truth
    from lymphcad.evaluate.settings import FP_RATES
    from lymphcad.io.detections import DetectionTable
    from lymphcad.measure.calibration import calibration_beside, expected_calibration_error, fit_isotonic

    mdir = model_dir(run, snapshot)
    model = load_model(mdir)
    settings = with_overrides(model.detect, tta_flips=True) if tta else model.detect
    truths, dets = [], []
    for name, root in calibration_cohorts(work, nodes, folder):
        c = open_cohort(root)
        for case in c.cases:
            cid = f"{name}__{case}"
            truths.append(case_truth_as(c, case, cid))
            dets += detect_volume(c.read_image(case), model, settings, case_id=cid)
        print(f"[{time.strftime('%H:%M:%S')}] calibration detections: {name}", flush=True)
    result = evaluate_truth(truths, DetectionTable.from_detections(dets), EvalSettings(bootstrap=0))
    probs, hits = result.hit_labels()
    source = (
        f"release/train_real_model.py: {len(truths)} calibration cases (phantom d=0.5 and new insertions, both "
        "formations, into the training backgrounds), never trained on"
    )
    cal = fit_isotonic(probs, hits, source=source)
    dest = cal.save(calibration_beside(mdir))
    summary = {
        "tta": tta,
        "cpm": float(result.pooled.cpm),
        "sensitivity_at_3_fp": float(result.pooled.sensitivity_at_fp[FP_RATES.index(3.0)]),
        "cases": len(truths),
        "detections": int(probs.size),
        "hits": int(hits.sum()),
        "ece_raw": expected_calibration_error(probs, hits),
        "ece_calibrated": expected_calibration_error(cal.apply(probs), hits),
        "note": "ECE on the fitting set itself (optimistic); held-out ECE: benchmarks/bench_measure.py",
    }
    atomic.write_json(mdir / "calibration_fit.json", summary)
    print(f"calibration: {json.dumps(summary)}", flush=True)
    return dest


def real_model_config(epochs: int, threads: int) -> Any:
    """The training configuration of the real-anatomy model (written resolved into the run folder)."""
    from lymphcad.detector.config import DetectorConfig

    return DetectorConfig().updated(
        {
            "network": {"seg_head": True},
            "train": {
                "epochs": epochs,
                "iters_per_epoch": 50,
                "batch_size": 4,
                "patch_zyx": [32, 64, 64],
                "warmup_iters": 50,
                "val_every": 10,
                "lr": 2e-3,
                "device": "cpu",
                "threads": threads,
            },
            "augment": {
                "enhancement_scale": [0.2, 2.0],
                "p_enhancement": 0.7,
                "p_blur": 0.25,
                "blur_sigma_vox": [0.3, 1.0],
                "sharpen_amount": [0.3, 1.2],
                "p_sharpen": 0.25,
                "noise_sd_hu": [0.0, 25.0],
                "noise_corr_sigma_vox": [0.0, 1.0],
                "intensity_shift_hu": 20.0,
            },
        }
    )


def _card_table(result: dict[str, Any], models: list[str]) -> list[str]:
    """Markdown table rows of the realism benchmark for some models."""
    rows = [
        "| model | test data (held out) | region | cases | nodes | sens @1 | @2 | @3 | @4 FP/vol | CPM [95 % CI] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(v: Any) -> str:
        return "–" if v is None else f"{v:.2f}"

    for m in models:
        for key, block in result["models"].get(m, {}).items():
            if not isinstance(block, dict) or "cpm" not in block:
                continue
            what, region = result["strata"][key]
            sens = block["sensitivity_at_fp"]
            ci = block.get("cpm_ci95") or [None, None]
            rows.append(
                f"| {m} | {what} | {region} | {block['n_cases']} | {block['n_nodes']} | {f(sens.get('1'))} | "
                f"{f(sens.get('2'))} | {f(sens.get('3'))} | {f(sens.get('4'))} | {f(block['cpm'])} [{f(ci[0])}, {f(ci[1])}] |"
            )
    return rows


def _run_formations(run: Path) -> list[str]:
    """The image-formation models of the run's insertion cohorts (their dataset.json descriptions)."""
    import json
    import re

    mix = json.loads((run / "mix.json").read_text(encoding="utf-8"))
    found: set[str] = set()
    for src in mix["sources"]:
        if src["kind"] != "insertion":
            continue
        desc = json.loads((Path(src["root"]) / "dataset.json").read_text(encoding="utf-8"))["description"]
        m = re.search(r"image formation: ([a-z/]+)\)", desc)
        if m:
            found.update(m.group(1).split("/"))
    return sorted(found) or [TRAIN_FORMATION]


def _stop_rule_line(run: Path, epochs: int) -> str:
    """Model-card line: the sanity stop rule and the chosen epoch's validation figures."""
    import csv

    with (run / "history.csv").open(encoding="utf-8", newline="") as f:
        rows = {int(r["epoch"]): r for r in csv.DictReader(f)}
    row = rows.get(epochs, {})
    peak, cpm = row.get("val_sphere_peak") or "", row.get("val_cpm") or ""
    return (
        "- Stop rule: the validated epoch with the highest validation CPM among those whose raw score at a plain "
        "14 mm soft-tissue sphere in fat (`lymphcad.detector.trainmix.sphere_peak`) is at least 0.5 (late epochs "
        "learn to suppress a node without anatomical context). "
        + (f"This model: epoch {epochs}, sphere score {peak}, validation CPM {cpm}." if peak else "")
    )


def _lineage(run: Path, formations: list[str]) -> list[str]:
    """Model-card lines: how the run's cohorts were made (``formations``: :func:`_run_formations`) and which
    weights each warm start began from (``mix.json``'s ``init_from``, followed)."""
    import json

    forms = ", ".join(formations)
    lines = [
        f"- The training cohorts are made by the station-based insertion ({forms}) with mass-effect placement where",
        "  the mediastinal fat is thin, and the per-region ground-truth rule (`lymphcad.phantom.truthrule`: abdominal",
        "  nodes positive from 7.5 mm, mediastinal from 10 mm).",
    ]
    seen: set[Path] = set()
    cur: Path | None = run
    while cur is not None and cur not in seen and (cur / "mix.json").is_file():
        seen.add(cur)
        init = json.loads((cur / "mix.json").read_text(encoding="utf-8")).get("init_from")
        if not init:
            break
        lines.append(f"- Run `{cur.name}` was warm-started from {_weights_name(Path(init))}.")
        nxt = Path(init)
        cur = nxt.parent if nxt.name == "model" else None
    if any("centernet3d_realmix_v3" in line for line in lines):
        lines.append(
            "- `centernet3d_realmix_v3` itself was trained on the insertion before the station-based method landed "
            "(nodes in visceral fat beside vessels, ground truth SAD ≥ 10 mm in both regions)."
        )
    return lines


def _weights_name(path: Path) -> str:
    """How a warm start's weights are named in a model card: a shipped model by name, a run by its folder."""
    if path.parent.name == "models":
        return f"the shipped model `{path.name}`"
    if path.name == "model":
        return f"the final weights of run `{path.parent.name}`"
    return f"`{path.name}`"


def _target_lines(result: dict[str, Any], model: str) -> list[str]:
    """Model-card lines: issue 12's targets against the measured figures of ``model``."""
    blocks = result["models"].get(model, {})

    def fig(key: str, what: str) -> str:
        b = blocks.get(key)
        if not isinstance(b, dict) or "cpm" not in b:
            return f"{key}: not measured"
        s3 = b["sensitivity_at_fp"].get("3")
        return f"{what} sensitivity {s3:.2f} at 3 FP/volume, CPM {b['cpm']:.2f}"

    gap = blocks.get("cross_formation_cpm_gap", {})
    failed = sorted(result.get("insertion_failures", {}))
    missing = (
        [
            f"- No test cohort could be made from {', '.join(failed)} (the insertion found no room for the minimum)."
        ]
        if failed
        else []
    )
    return [
        *missing,
        "- Issue 12's targets (sensitivity ≥ 0.85 at 3 FP/volume and CPM ≥ 0.75 on held-out real backgrounds; CPM",
        f"  ≥ 0.80 on the phantom), measured: {fig('insertion_pooled', 'held-out backgrounds')}; "
        f"{fig('phantom_mediastinal', 'phantom mediastinal')}; {fig('phantom_abdominal', 'phantom abdominal')}.",
        f"  Cross-formation CPM gap (target ≤ 0.10): {', '.join(f'{k} {v:+.2f}' for k, v in gap.items()) or 'n/a'}.",
    ]


def ship(
    run: Path,
    name: str,
    realism: Path,
    speed: Path | None,
    snapshot: int | None = None,
    tta: bool = False,
) -> Path:
    """Copy the run's model (or a validated epoch's snapshot) into the package (float16 weights, plan,
    training config) with its model card."""
    import json

    from lymphcad.detector.config import load_config
    from lymphcad.detector.infer import with_overrides
    from lymphcad.detector.model import load_model, save_model
    from lymphcad.detector.network import count_parameters
    from lymphcad.phantom.insert import background_source

    mdir = model_dir(run, snapshot)
    m = load_model(mdir)
    result = json.loads(realism.read_text(encoding="utf-8"))
    dest = REPO / "src" / "lymphcad" / "models" / name
    hist = (run / "history.csv").read_text(encoding="utf-8").strip().splitlines()
    done = len(hist) - 1
    epochs = done if snapshot is None else snapshot
    minutes = sum(float(line.split(",")[8]) for line in hist[1 : epochs + 1]) / 60.0
    planned = load_config(run / "config.toml").train.epochs
    if snapshot is not None:
        schedule = (
            f"{epochs} of the {planned} scheduled epochs (the weights of epoch {epochs}, chosen by the stop rule "
            "under Training settings)"
        )
    elif epochs == planned:
        schedule = f"{epochs} epochs"
    else:
        schedule = (
            f"{epochs} of the {planned} scheduled epochs (stopped for the session's deadline; "
            "`--resume` continues the cosine schedule)"
        )
    meta = {
        "training_data": "synthetic: lymphcad phantom and synthetic nodes inserted into real CT backgrounds "
        f"({', '.join(TRAIN_BACKGROUNDS.values())}); not TCIA CT Lymph Nodes data",
        "epochs": epochs,
        "realism_benchmark": "benchmarks/results/realism.json",
    }
    calib = mdir / "calibration.json"
    fit_path = (
        mdir / "calibration_fit.json"
        if (mdir / "calibration_fit.json").is_file()
        else run / "calibration_fit.json"
    )
    fit = json.loads(fit_path.read_text(encoding="utf-8")) if calib.is_file() else None
    if fit is not None and bool(fit.get("tta")) != tta:
        raise SystemExit(f"{calib}: fit with tta={fit.get('tta')}, shipping with tta={tta}: calibrate again")
    detect = with_overrides(m.detect, tta_flips=True) if tta else m.detect
    save_model(dest, m.network, m.plan, name=name, detect=detect, meta=meta, half=True)
    (dest / "training_config.toml").write_text(
        (run / "config.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    if calib.is_file():
        (dest / "calibration.json").write_text(calib.read_text(encoding="utf-8"), encoding="utf-8")
    size_mb = (dest / "model.pt").stat().st_size / 1e6
    formations = _run_formations(run)
    forms = ", ".join(f"`{f}`" for f in formations)
    mix = json.loads((run / "mix.json").read_text(encoding="utf-8"))
    skip_node_like = bool(mix.get("settings", {}).get("mine_skip_node_like"))
    licences = []
    for rel in TRAIN_BACKGROUNDS.values():
        lic, cites = background_source(REAL_CT / rel)
        licences.append(f"  - `{rel}`: {lic}; cite: {' '.join(cites)}")
    sp = json.loads(speed.read_text(encoding="utf-8")) if speed is not None and speed.is_file() else None
    own = [k for k in result["models"] if k.startswith(name) or k == result.get("candidate")]
    lines = [
        f"# Model card: `{name}`",
        "",
        "**Trained on synthetic data**: the lymphcad phantom and synthetic nodes inserted into public real CT",
        "backgrounds (chest and abdomen; contrast and non-contrast; sharp and smooth kernels). It was **not** trained",
        "on TCIA CT Lymph Nodes data (no real lymph node was ever a training target), and every figure below is an",
        "**insertion or phantom number**, not a TCIA CT Lymph Nodes result.",
        "",
        "## What it is",
        f"- 3D centre-heatmap detector (`lymphcad.detector.network.CenterNet3D`) with an auxiliary node-mask head, "
        f"{count_parameters(m.network):,} parameters, float16 weights ({size_mb:.1f} MB; "
        + (
            "the benchmark measured these shipped weights). "
            if result.get("candidate") == name
            else "the benchmark measured the float32 training weights they were cast from). "
        )
        + "Design: docs/design.md §9.",
        f"- Input: CT reoriented to LPS axes, resampled to {m.plan.spacing_mm:g} mm isotropic, HU clipped to "
        f"{list(m.plan.hu_window)} (plan.json).",
        "- Output: node centres (world LPS mm), probability (heatmap peak), diameter (mm); the mask head's node",
        "  probability through `lymphcad.detector.infer.detect_volume_with_mask`.",
        *(
            [
                "- Flip test-time augmentation is on in the model's detection settings: the heatmaps of 4 flipped copies",
                "  (identity, x, y, x+y) are averaged, for 4× the network's work (`detect --no-tta` turns it off)"
                + (
                    f"; CPM on the calibration cases (never trained on, no holdout data) {fit['cpm']:.2f} with it"
                    if fit and "cpm" in fit
                    else ""
                )
                + ". The realism benchmark's figures below are with it.",
            ]
            if tta
            else []
        ),
        "- Intended use: research and software testing. Not a medical device; not validated on patient data.",
        "",
        "## Training data",
        "- Phantom cohorts (`lymphcad.phantom`, tiny preset, both regions) at difficulties "
        f"{', '.join(str(d) for d in TRAIN_DIFFICULTIES)}, {PHANTOM_CASES} cases each (weight 1/3 of the patches).",
        f"- Synthetic nodes inserted (`lymphcad.phantom.insert`, image-formation models {forms}; never `blend`) into "
        "these real CT backgrounds of shared/data/real-ct (weight 2/3, each background equal):",
        *licences,
        *_lineage(run, formations),
        "- Hard negatives: a quarter of the patches centred on node mimics (soft tissue beside fat, the phantom's mimic",
        "  list, and the network's own false positives re-mined every 5 epochs on each real background)"
        + (
            "; false positives that look like a real node (a soft-tissue core with fat around it,\n"
            "  `lymphcad.detector.datamix.node_like`) are not mined: the backgrounds are patients' CT whose own nodes"
            " nobody annotated."
            if skip_node_like
            else "."
        ),
        "- Never used: shared/data/real-ct/holdout, the realism benchmark's test backgrounds "
        f"({', '.join(TEST_BACKGROUNDS.values())}), TCIA CT Lymph Nodes.",
        "",
        "## Training settings",
        f"- {schedule} × 50 iterations, batch 4 patches of 32×64×64 voxels, AdamW lr 2e-3, cosine schedule with "
        "warm-up; flips/rotation/scale; contrast-phase (enhancement × 0.2–2), kernel (blur or unsharp), correlated "
        "noise augmentation; mask loss BCE + soft Dice (weight 1).",
        *([_stop_rule_line(run, epochs)] if snapshot is not None else []),
        f"- Training time of the last run: {minutes:.1f} min with 1 torch thread on a 2-core CPU machine shared with "
        "other jobs (the warm starts before it are listed under Training data).",
        "- Full resolved configuration: `training_config.toml`; reproduce with the calls in the docstring of",
        "  `release/train_real_model.py`,",
        f"  then `python benchmarks/bench_realism.py --model benchmarks/_work/real_model/{run.name}/"
        f"{mdir.relative_to(run)} --name {name}`.",
        "",
        "## Measured figures (realism benchmark, `benchmarks/results/realism.json`)",
        "Held out three ways: backgrounds never trained on (two holdout chest crops, CRLM-CT-1006), the image-formation",
        f"model not trained with (`blend`; trained with {forms}), per region; and the phantom test cohort.",
        "95 % CI: 1000 bootstrap resamples of cases. Insertion/phantom figures, not TCIA results. The holdout chest",
        "crops are fat-poor: their nodes are placed by the insertion's mass-effect method (nodes displace the",
        "surrounding anatomy), which no training cohort used, so the held-out mediastinal rows are held out by",
        "background, placement method and (blend) formation. The `seen` rows are chest backgrounds seen in training",
        "(CMB-CRC MSB-01068, ACRIN-FLT-Breast 013) with new nodes: held out by nodes and formation only.",
        "",
        *_card_table(result, [result["baseline"], *own]),
        "",
        "Cross-formation gap (CPM held-out formation − trained formation): "
        + "; ".join(f"{k}: {json.dumps(result['models'][k]['cross_formation_cpm_gap'])}" for k in own),
        "",
        "Paired bootstrap CPM difference to the previous default on the real-background insertions: "
        + "; ".join(
            f"{m} ({k.replace('_', ' ')}): {v['cpm_difference']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]"
            for m, blocks in result["paired_vs_baseline"].items()
            for k, v in blocks.items()
        ),
    ]
    if sp:
        lines.append(
            f"\nSpeed on one 512×512×300 CT at 0.7×0.7×1.25 mm (`benchmarks/bench_detect.py`): "
            f"{sp['best_file_to_detections_s']:.1f} s file → detections, peak RAM {sp['max_peak_rss_gb']:.2f} GB, "
            f"{sp['threads']} threads."
        )
    lines += [
        "",
        "## Limitations",
        *_target_lines(result, own[0] if own else name),
        "- Inserted nodes are still synthetic; real nodes (TCIA CT Lymph Nodes) were never seen: expect lower figures.",
        "- Few backgrounds (7 for training, 3 for testing, the two chest test crops from one patient): wide intervals.",
        "- Real backgrounds may contain real, unannotated nodes; hard-negative mining may have taught the model to",
        "  ignore some of them"
        + (" (node-like false positives are not mined, which limits this)." if skip_node_like else "."),
        (
            f"- Probabilities are calibrated (isotonic, `calibration.json`{', on flip-TTA scores' if fit.get('tta') else ''}) "
            f"on {fit['cases']} calibration cases "
            f"({fit['detections']} detections; ECE on that set {fit['ece_raw']:.3f} raw → {fit['ece_calibrated']:.3f}); "
            "they were fit on insertions into the training backgrounds and on the phantom, so on other CT they are "
            "an estimate, not a guarantee. `detect --raw-scores` gives the heatmap peaks."
            if fit
            else "- Probabilities are heatmap peak values, not calibrated probabilities."
        ),
        "",
    ]
    (dest / "model_card.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"shipped {dest} ({size_mb:.2f} MB)")
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "_work" / "real_model")
    ap.add_argument("--run", default="run", help="run folder name inside --work")
    ap.add_argument("--epochs", type=int, default=70)
    ap.add_argument("--data", default="data", help="folder of the training cohorts inside --work")
    ap.add_argument(
        "--formation",
        default=TRAIN_FORMATION,
        help="image-formation model(s) of the training insertions (never blend: the benchmark holds it out)",
    )
    ap.add_argument("--insert-cases", type=int, default=8, help="insertion cases per training background")
    ap.add_argument("--nodes", type=int, nargs=2, default=(3, 6), help="nodes per insertion case (min max)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: see docs/design.md)")
    ap.add_argument("--resume", action="store_true", help="continue the run's newest checkpoint")
    ap.add_argument("--init-from", default=None, help="start from this run/model's weights (warm start)")
    ap.add_argument(
        "--mine-skip-node-like",
        action="store_true",
        help="never mine a false positive that looks like a real node (detector.datamix.node_like)",
    )
    ap.add_argument("--data-only", action="store_true", help="only generate the training cohorts")
    ap.add_argument("--stop-after-epochs", type=int, default=None, help="end this call after N epochs")
    ap.add_argument(
        "--calibrate", action="store_true", help="only fit the run's calibration (run/model/calibration.json)"
    )
    ap.add_argument(
        "--calibration", default="calibration", help="folder of the calibration cohorts inside --work"
    )
    ap.add_argument(
        "--snapshot",
        type=int,
        default=None,
        metavar="EPOCH",
        help="--calibrate/--ship the weights of this validated epoch (RUN/snapshots) instead of the last",
    )
    ap.add_argument(
        "--tta",
        action="store_true",
        help="--calibrate on flip-TTA scores / --ship with flip TTA on in the model's detection settings",
    )
    ap.add_argument("--ship", default=None, metavar="NAME", help="only copy the run's model into the package")
    ap.add_argument("--realism", type=Path, default=REPO / "benchmarks" / "results" / "realism.json")
    ap.add_argument("--speed", type=Path, default=None, help="bench_detect.py JSON of this model")
    args = ap.parse_args()
    if args.ship:
        ship(args.work / args.run, args.ship, args.realism, args.speed, args.snapshot, args.tta)
        return
    if args.calibrate:
        calibrate_run(
            args.work,
            args.work / args.run,
            (args.nodes[0], args.nodes[1]),
            args.calibration,
            args.snapshot,
            args.tta,
        )
        return

    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from lymphcad.detector.train import latest_checkpoint
    from lymphcad.detector.trainmix import MixSettings, train_mix

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    if "blend" in args.formation or args.formation in ("both", "all"):
        raise SystemExit(
            "--formation: blend is the realism benchmark's held-out formation; never train on it"
        )
    sources = make_training_data(
        work,
        args.insert_cases,
        (args.nodes[0], args.nodes[1]),
        data=args.data,
        formation=args.formation,
    )
    if args.data_only:
        return
    run = work / args.run
    resume = args.resume or latest_checkpoint(run) is not None

    def report(done: int, total: int, msg: str) -> None:
        if done % 25 == 0 or done == total:
            print(f"[{time.strftime('%H:%M:%S')}] {done}/{total} {msg}", flush=True)

    result = train_mix(
        sources,
        out=run,
        config=None if resume else real_model_config(args.epochs, args.threads),
        settings=None if resume else MixSettings(mine_skip_node_like=args.mine_skip_node_like),
        resume=resume,
        init_from=args.init_from,
        progress=report,
        stop_after_epochs=args.stop_after_epochs,
    )
    print(f"{result.epochs_done} epochs in {result.run}; {result.seconds / 60:.1f} min this call", flush=True)


if __name__ == "__main__":
    main()
