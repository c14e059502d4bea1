"""The model card and packaging of a real-anatomy run (``train_real_model.py --ship``): float16 weights, plan,
calibration, training config and ``model_card.md`` whose every line is derived from the run and the realism
benchmark's JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from real_model_setup import (
    PHANTOM_CASES,
    REAL_CT,
    REPO,
    TEST_BACKGROUNDS,
    TRAIN_BACKGROUNDS,
    TRAIN_DIFFICULTIES,
    TRAIN_FORMATION,
    model_dir,
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


def _run_keep_size(run: Path) -> bool:
    """Whether the run's insertion cohorts were drawn with the keep-size placement (their dataset.json)."""
    mix = json.loads((run / "mix.json").read_text(encoding="utf-8"))
    roots = [Path(src["root"]) for src in mix["sources"] if src["kind"] == "insertion"]
    flags = {
        json.loads((r / "dataset.json").read_text(encoding="utf-8")).get("insertion", {}).get("placement")
        == "keep-size"
        for r in roots
        if (r / "dataset.json").is_file()
    }
    return flags == {True}


def _run_formations(run: Path) -> list[str]:
    """The image-formation models of the run's insertion cohorts (their dataset.json descriptions)."""
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

    forms = ", ".join(formations)
    lines = [
        f"- The training cohorts are made by the station-based insertion ({forms}) with mass-effect placement where",
        "  the mediastinal fat is thin, and the per-region ground-truth rule (`lymphcad.phantom.truthrule`: abdominal",
        "  nodes positive from 7.5 mm, mediastinal from 10 mm).",
        "- Node placement: "
        + (
            "each drawn node keeps its size (tried at every station and by mass effect), so the placed sizes "
            "follow the collection's marks."
            if _run_keep_size(run)
            else "a node that found no room was redrawn at once, so the placed sizes lean small: in the fat-poor "
            "abdomens the placed positives had medians of 10.3–11.5 mm and 0–9 % of them ≥ 15 mm, against the "
            "marks' 12.5 mm and 32 % (`benchmarks/results/insert_sizes.json`). The realism benchmark's test "
            "cohorts keep the sizes."
        ),
    ]
    seen: set[Path] = set()
    cur: Path | None = run
    while cur is not None and cur not in seen and (cur / "mix.json").is_file():
        seen.add(cur)
        init = json.loads((cur / "mix.json").read_text(encoding="utf-8")).get("init_from")
        if not init:
            break
        # a relative init_from was given from the repository root (the recipe's calls): resolve it there, so the
        # card does not depend on the directory it is written from
        start = Path(init) if Path(init).is_absolute() else REPO / init
        lines.append(f"- Run `{cur.name}` was warm-started from {_weights_name(start)}.")
        cur = _weights_run(start)
    if any("centernet3d_realmix_v3" in line for line in lines):
        lines.append(
            "- `centernet3d_realmix_v3` itself was trained on the insertion before the station-based method landed "
            "(nodes in visceral fat beside vessels, ground truth SAD ≥ 10 mm in both regions)."
        )
    return lines


def _members(run: Path) -> list[tuple[Path, int | None]]:
    """The member runs and epochs of an ensemble folder (``train_real_model.py --ensemble``); [] for a run."""
    path = run / "members.json"
    if not path.is_file():
        return []
    return [
        (run.parent / m["run"], m["snapshot"])
        for m in json.loads(path.read_text(encoding="utf-8"))["members"]
    ]


def _member_lines(members: list[tuple[Path, int | None]]) -> list[str]:
    """Model-card lines of an ensemble: each member's weights, augmentation, stop rule and warm starts."""
    from lymphcad.detector.config import load_config

    lines = []
    for i, (mrun, epoch) in enumerate(members, 1):
        aug = load_config(mrun / "config.toml").augment
        extra = [
            f"elastic displacement of {aug.p_elastic:.0%} of the patches" if aug.p_elastic > 0 else "",
            f"slice-thickness blur of {aug.p_thick:.0%}" if aug.p_thick > 0 else "",
        ]
        also = "; ".join(e for e in extra if e)
        lines.append(
            f"- Member {i}: {_weights_name(model_dir(mrun, epoch))}" + (f" ({also})." if also else ".")
        )
        if epoch is not None:
            lines.append("  " + _stop_rule_line(mrun, epoch).removeprefix("- "))
        lines += ["  " + line for line in _lineage(mrun, _run_formations(mrun))]
    return lines


def _weights_run(path: Path) -> Path | None:
    """The run folder whose weights ``path`` is (``RUN/model`` or ``RUN/snapshots/epoch_NNNN``), else None."""
    if path.name == "model":
        return path.parent
    if path.parent.name == "snapshots":
        return path.parent.parent
    return None


def _weights_name(path: Path) -> str:
    """How a warm start's weights are named in a model card: a shipped model by name, a run by its folder."""
    run = _weights_run(path)
    if path.parent.name == "models":
        return f"the shipped model `{path.name}`"
    if run is None:
        return f"`{path.name}`"
    if path.name == "model":
        return f"the final weights of run `{run.name}`"
    return f"the weights of run `{run.name}` at epoch {int(path.name.split('_')[-1])}"


def _drawn_lines(result: dict[str, Any]) -> list[str]:
    """How the benchmark's test cohorts were drawn, when its JSON records it (benchmarks since the paired design)."""
    d = result.get("drawn")
    if not d:
        return []
    paired = (
        " Both formations of a background hold the same nodes at the same places (one seed), so the"
        " cross-formation gap compares identical nodes."
        if d.get("paired_formations")
        else ""
    )
    return [
        f"{d['cases']} cases per held-out background and formation, {d['seen_cases']} per seen chest, "
        f"{d['nodes'][0]}–{d['nodes'][1]} nodes asked per case.{paired}"
    ]


def _gap_lines(result: dict[str, Any], own: list[str]) -> list[str]:
    """The cross-formation gap per model: with its bootstrap interval when the JSON has one."""
    out = []
    for k in own:
        ci = result["models"][k].get("cross_formation_cpm_gap_ci95")
        if ci:
            kind = (
                "paired bootstrap over the same nodes"
                if any(g["paired"] for g in ci.values())
                else "bootstrap"
            )
            parts = ", ".join(
                f"{r.replace('_', ' ')} {g['gap']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]"
                for r, g in ci.items()
            )
            out.append(
                f"Cross-formation gap of {k} (CPM held-out formation − trained formation; 95 % CI, {kind}): {parts}"
            )
        else:
            out.append(
                f"Cross-formation gap of {k} (CPM held-out formation − trained formation): "
                f"{json.dumps(result['models'][k]['cross_formation_cpm_gap'])}"
            )
    return out


def _target_lines(result: dict[str, Any], model: str) -> list[str]:
    """Model-card lines: issue 12's targets against the measured figures of ``model``."""
    blocks = result["models"].get(model, {})

    def fig(key: str, what: str) -> str:
        b = blocks.get(key)
        if not isinstance(b, dict) or "cpm" not in b:
            return f"{key}: not measured"
        s3 = b["sensitivity_at_fp"].get("3")
        return f"{what} sensitivity {s3:.2f} at 3 FP/volume, CPM {b['cpm']:.2f}"

    per_region = (
        ("insertion_mediastinal", "held-out chest backgrounds"),
        ("insertion_abdominal", "held-out abdominal background"),
    )
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
        "- Issue 12's targets (sensitivity ≥ 0.85 at 3 FP/volume and CPM ≥ 0.75 on held-out real backgrounds in each",
        "  region; CPM ≥ 0.80 on the phantom), measured: "
        + "; ".join(
            fig(key, what)
            for key, what in (
                # the per-region strata are newer than the benchmark JSONs of older models: only when measured
                *((k, w) for k, w in per_region if k in blocks),
                ("insertion_pooled", "all held-out backgrounds"),
                ("phantom_mediastinal", "phantom mediastinal"),
                ("phantom_abdominal", "phantom abdominal"),
            )
        )
        + ".",
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

    from lymphcad.detector.config import load_config
    from lymphcad.detector.infer import with_overrides
    from lymphcad.detector.model import load_model, save_model
    from lymphcad.detector.network import count_parameters
    from lymphcad.phantom.insert import background_source

    mdir = model_dir(run, snapshot)
    m = load_model(mdir)
    result = json.loads(realism.read_text(encoding="utf-8"))
    dest = REPO / "src" / "lymphcad" / "models" / name
    members = _members(run)
    # an ensemble's recipe lines (schedule, augmentation, cohorts) come from its first member's run
    train_run, train_snap = members[0] if members else (run, snapshot)
    hist = (train_run / "history.csv").read_text(encoding="utf-8").strip().splitlines()
    done = len(hist) - 1
    epochs = done if train_snap is None else train_snap
    minutes = sum(float(line.split(",")[8]) for line in hist[1 : epochs + 1]) / 60.0
    run_cfg = load_config(train_run / "config.toml")
    planned = run_cfg.train.epochs
    aug = run_cfg.augment
    elastic = (
        f"; smooth elastic displacement of {aug.p_elastic:.0%} of the patches (SD {aug.elastic_sd_vox:g} voxels "
        f"on a {aug.elastic_grid_vox:g}-voxel control grid)"
        if aug.p_elastic > 0
        else ""
    ) + (
        f"; slice-thickness blur along z of {aug.p_thick:.0%} of the patches (σ {aug.thick_sigma_vox[0]:g}–"
        f"{aug.thick_sigma_vox[1]:g} voxels)"
        if aug.p_thick > 0
        else ""
    )
    try:
        realism_name = realism.resolve().relative_to(REPO.resolve()).as_posix()
    except ValueError:
        realism_name = realism.name
    if members:
        schedule = "Each member: the epochs up to the one its stop rule chose (under Training data)"
    elif snapshot is not None:
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
        "realism_benchmark": realism_name,
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
        (train_run / "config.toml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    if calib.is_file():
        (dest / "calibration.json").write_text(calib.read_text(encoding="utf-8"), encoding="utf-8")
    size_mb = (dest / "model.pt").stat().st_size / 1e6
    formations = sorted({f for r in [train_run, *(mr for mr, _ in members)] for f in _run_formations(r)})
    forms = ", ".join(f"`{f}`" for f in formations)
    mix = json.loads((train_run / "mix.json").read_text(encoding="utf-8"))
    skip_node_like = bool(mix.get("settings", {}).get("mine_skip_node_like"))
    # one set of cohorts per --data folder (train_real_model.make_training_data): count them from the sources
    folders = sum(1 for src in mix["sources"] if src["kind"] == "phantom") // len(TRAIN_DIFFICULTIES)
    drawn = "" if folders <= 1 else f"; {folders} cohort folders drawn with different seeds"
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
        (
            f"- An ensemble of {len(members)} 3D centre-heatmap detectors (`lymphcad.detector.network.EnsembleNet` of "
            "`CenterNet3D`, each with an auxiliary node-mask head; their heatmap and mask probabilities are averaged, "
            f"so it does {len(members)}× one network's work), {count_parameters(m.network) // len(members):,} "
            f"parameters each, float16 weights ({size_mb:.1f} MB; "
            if members
            else "- 3D centre-heatmap detector (`lymphcad.detector.network.CenterNet3D`) with an auxiliary node-mask "
            f"head, {count_parameters(m.network):,} parameters, float16 weights ({size_mb:.1f} MB; "
        )
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
        f"{', '.join(str(d) for d in TRAIN_DIFFICULTIES)}, {PHANTOM_CASES * max(folders, 1)} cases each (weight 1/3 of the patches).",
        f"- Synthetic nodes inserted (`lymphcad.phantom.insert`, image-formation models {forms}; never `blend`) into "
        f"these real CT backgrounds of shared/data/real-ct (weight 2/3, each background equal{drawn}):",
        *licences,
        *(_member_lines(members) if members else _lineage(run, formations)),
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
        f"noise augmentation{elastic}; mask loss BCE + soft Dice (weight 1).",
        *([_stop_rule_line(run, epochs)] if snapshot is not None and not members else []),
        f"- Training time of the {'first member' if members else 'last'} run: {minutes:.1f} min with 1 torch thread on a 2-core CPU machine shared with "
        "other jobs (the warm starts before it are listed under Training data).",
        "- Full resolved configuration: `training_config.toml`; reproduce with the calls in the docstring of",
        "  `release/train_real_model.py`,",
        f"  then `python benchmarks/bench_realism.py --model benchmarks/_work/real_model/{run.name}/"
        f"{mdir.relative_to(run)} --name {name}`.",
        "",
        f"## Measured figures (realism benchmark, `{realism_name}`)",
        "Held out three ways: backgrounds never trained on (two holdout chest crops, CRLM-CT-1006), the image-formation",
        f"model not trained with (`blend`; trained with {forms}), per region; and the phantom test cohort.",
        "95 % CI: 1000 bootstrap resamples of cases. Insertion/phantom figures, not TCIA results. The holdout chest",
        "crops are fat-poor: their nodes are placed by the insertion's mass-effect method (nodes displace the",
        "surrounding anatomy), which no training cohort used, so the held-out mediastinal rows are held out by",
        "background, placement method and (blend) formation. The `seen` rows are chest backgrounds seen in training",
        "(CMB-CRC MSB-01068, ACRIN-FLT-Breast 013) with new nodes: held out by nodes and formation only.",
        *_drawn_lines(result),
        "",
        *_card_table(result, [result["baseline"], *own]),
        "",
        *_gap_lines(result, own),
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
            f"{sp['threads']} threads, the network in {sp.get('precision', 'float32')}."
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
