"""Realism benchmark of a detector, held out three ways: by background, by image-formation model, by region.

    python benchmarks/bench_realism.py --model RUN_OR_MODEL [--baseline centernet3d_phantom_v2] [--tta]

Test data (generated once under ``--work``, each cohort beside a record of how it was drawn; every figure is
an **insertion or phantom figure**, never a TCIA CT Lymph Nodes result):

* synthetic nodes inserted (``lymphcad.phantom.insert`` with the keep-size placement, so the placed sizes follow
  the collection's marks; ground truth by the per-region rule) into the real
  CT backgrounds of ``train_real_model.TEST_BACKGROUNDS``, none of them ever trained on: two chest crops from
  shared/data/real-ct/holdout (mediastinal, CTA-like contrast) and CRLM-CT-1006 (abdominal, portal-venous),
  32 cases each, once with each image-formation model — ``additive`` (the one the model was trained with)
  and ``blend`` (the held-out one). Both formations of a background get the same seed (``--paired-formations``,
  the default), hence the same nodes at the same places: the cross-formation gap is measured on identical
  nodes, with a paired bootstrap;
* the chest backgrounds seen in training (``SEEN_CHEST_TESTS``), 8 cases per formation: held out by insertion
  method and formation only;
* the phantom test cohort of the release recipe (tiny preset, difficulty 0.5, seed 900).

For each model: detections on every case, then ``lymphcad.evaluate`` per stratum (region × formation) with
1000 bootstrap resamples of cases for the CPM's 95 % CI, and a paired bootstrap of the CPM difference
between the model and the baseline on the real-background insertions. The cross-formation gap (held-out
formation − trained formation) comes with its own bootstrap interval: paired over cases when the two
formations share their nodes, resampled independently otherwise. Writes
``benchmarks/results/realism.json`` and ``benchmarks/results/realism.md`` (the table for the model card
and README).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "release"))

from real_model_setup import (  # noqa: E402
    REAL_CT,
    SEEN_CHEST_TESTS,
    TEST_BACKGROUNDS,
    TEST_REGIONS,
    TRAIN_FORMATION,
)

FORMATIONS: Final = ("additive", "blend")
TEST_SEED: Final = 4100
PHANTOM_SEED: Final = 900
PHANTOM_DIFFICULTY: Final = 0.5
BOOTSTRAP: Final = 1000


@dataclass(frozen=True)
class TestCohort:
    """One cohort of the benchmark and the held-out axes it stands for."""

    name: str
    root: Path
    kind: str  # "insertion" | "phantom"
    background: str | None
    formation: str | None


def _check_drawn(root: Path, drawn: dict[str, Any]) -> bool:
    """Whether the cohort at ``root`` exists, drawn with ``drawn`` (its ``<root>.drawn.json`` beside it).

    A cohort drawn with other settings, or before the settings were recorded, stops the run: the cached
    detections under ``--work`` would otherwise be scored against another test set.
    """
    marker = root.with_name(root.name + ".drawn.json")
    if not (root / "dataset.json").is_file():
        return False
    if not marker.is_file():
        raise SystemExit(f"{root}: cohort drawn without a record of its settings; pass another --work")
    was = json.loads(marker.read_text(encoding="utf-8"))
    if was != drawn:
        raise SystemExit(f"{marker}: cohort drawn with {was}, this run asks for {drawn}; pass another --work")
    return True


def _record_drawn(root: Path, drawn: dict[str, Any]) -> None:
    from lymphcad import atomic

    atomic.write_json(root.with_name(root.name + ".drawn.json"), drawn)


def make_test_cohorts(
    work: Path,
    cases: int,
    nodes: tuple[int, int],
    phantom_cases: int,
    failures: dict[str, str],
    *,
    seen_cases: int | None = None,
    paired_formations: bool = False,
) -> list[TestCohort]:
    """Generate (or reuse) the insertion cohorts per test background × formation and the phantom cohort.

    A background where the insertion cannot place the minimum number of nodes is recorded in ``failures``
    (its message) and left out. Chest backgrounds seen in training (``SEEN_CHEST_TESTS``) are added with
    ``seen`` in their name: held out by insertion method and formation only; ``seen_cases`` of them (default
    ``cases``; 0 leaves them out). With ``paired_formations`` every formation of a background is drawn with
    the same seed: the same nodes at the same places, only the image formation differs.
    """
    from lymphcad.phantom import generate_cohort
    from lymphcad.phantom.insert import PlacementError, insert_cohort

    out = []
    todo = [(n, r, TEST_REGIONS[n], "") for n, r in sorted(TEST_BACKGROUNDS.items())]
    n_seen = cases if seen_cases is None else seen_cases
    if n_seen > 0:
        todo += [(n, r, "mediastinal", "seen_") for n, r in sorted(SEEN_CHEST_TESTS.items())]
    for bi, (name, rel, region, tag) in enumerate(todo):
        for fi, form in enumerate(FORMATIONS):
            root = work / "cohorts" / f"{tag}{name}_{form}"
            failed = root.with_name(root.name + ".failed")  # a placement failure is remembered, not retried
            if failed.is_file():
                failures[f"{tag}{name}_{form}"] = failed.read_text(encoding="utf-8").strip()
                continue
            n_cases = n_seen if tag else cases
            seed = TEST_SEED + 10 * bi + (0 if paired_formations else fi)
            drawn: dict[str, Any] = {
                "background": rel,
                "cases": n_cases,
                "nodes": list(nodes),
                "seed": seed,
                "region": region,
                "formation": form,
                "placement": "keep-size",
            }
            if not _check_drawn(root, drawn):
                print(f"[{time.strftime('%H:%M:%S')}] insertion ({form}) into {rel}", flush=True)
                try:
                    insert_cohort(
                        REAL_CT / rel,
                        root,
                        n_cases,
                        nodes,
                        seed,
                        region=region,
                        formation=form,
                        evaluation=True,
                        keep_size=True,  # placed sizes follow the collection's marks
                    )
                except PlacementError as exc:
                    failures[f"{tag}{name}_{form}"] = str(exc)
                    failed.parent.mkdir(parents=True, exist_ok=True)
                    failed.write_text(str(exc) + "\n", encoding="utf-8")
                    print(f"  no cohort: {exc}", flush=True)
                    continue
                _record_drawn(root, drawn)
            out.append(TestCohort(f"{tag}{name}_{form}", root, "insertion", name, form))
    root = work / "cohorts" / "phantom_d050"
    drawn = {"cases": phantom_cases, "seed": PHANTOM_SEED, "difficulty": PHANTOM_DIFFICULTY, "preset": "tiny"}
    if not _check_drawn(root, drawn):
        generate_cohort(root, phantom_cases, "both", PHANTOM_SEED, PHANTOM_DIFFICULTY, "tiny")
        _record_drawn(root, drawn)
    out.append(TestCohort("phantom_d050", root, "phantom", None, None))
    return out


def _in_precision(settings: Any, name: str, precision: str | None) -> tuple[Any, str]:
    """``settings`` with the network format resolved for this CPU, and the model's name in the tables: a
    format other than float32 is named (``v10 [bfloat16]``), so its detections are cached apart from the
    float32 ones earlier runs cached under the bare name."""
    import torch

    from lymphcad.detector.infer import with_overrides
    from lymphcad.detector.precision import concrete_precision

    chosen = with_overrides(settings, precision=precision)
    fmt = concrete_precision(chosen.precision, torch.device("cpu"))
    out = with_overrides(chosen, precision=fmt)
    return out, name if fmt.value == "float32" else f"{name} [{fmt.value}]"


def detect_cohort(model: Any, settings: Any, cohort: TestCohort, out_csv: Path) -> tuple[list[Any], float]:
    """Detections of one model on one cohort (case ids prefixed with the cohort name); cached in ``out_csv``."""
    from lymphcad.cohort import open_cohort
    from lymphcad.detector.infer import detect_volume
    from lymphcad.io.detections import read_detections, write_detections

    if out_csv.is_file():
        meta = json.loads(out_csv.with_suffix(".json").read_text(encoding="utf-8"))
        return read_detections(out_csv).rows(), float(meta["seconds_per_case"])
    c = open_cohort(cohort.root)
    dets = []
    t0 = time.perf_counter()
    for case in c.cases:
        dets.extend(detect_volume(c.read_image(case), model, settings, case_id=f"{cohort.name}__{case}"))
    secs = (time.perf_counter() - t0) / max(1, len(c.cases))
    write_detections(out_csv, dets)
    out_csv.with_suffix(".json").write_text(json.dumps({"seconds_per_case": secs}) + "\n", encoding="utf-8")
    return dets, secs


def truths_of(cohorts: list[TestCohort]) -> dict[str, list[Any]]:
    """Ground truth per cohort, case ids prefixed as in :func:`detect_cohort`."""
    from lymphcad.cohort import open_cohort
    from lymphcad.detector.trainmix import case_truth_as

    out = {}
    for tc in cohorts:
        c = open_cohort(tc.root)
        out[tc.name] = [case_truth_as(c, case, f"{tc.name}__{case}") for case in c.cases]
    return out


def evaluate(truths: list[Any], dets: list[Any], bootstrap: int) -> dict[str, Any]:
    """Pooled block (sensitivities, CPM with CI, AP) of detections against truths."""
    from lymphcad.evaluate import EvalSettings, evaluate_truth
    from lymphcad.io.detections import DetectionTable

    ids = {t.case_id for t in truths}
    table = DetectionTable.from_detections([d for d in dets if d.case_id in ids])
    res = evaluate_truth(truths, table, EvalSettings(bootstrap=bootstrap))
    block: dict[str, Any] = res.pooled.to_json()
    return block


def _cpm(truths: list[Any], dets: list[Any]) -> float:
    """Pooled CPM of the detections on the cases of ``truths`` (no bootstrap)."""
    from lymphcad.evaluate import EvalSettings, evaluate_truth
    from lymphcad.io.detections import DetectionTable

    ids = {t.case_id for t in truths}
    table = DetectionTable.from_detections([d for d in dets if d.case_id in ids])
    return float(evaluate_truth(truths, table, EvalSettings(bootstrap=0)).pooled.cpm)


def _by_case(dets: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for d in dets:
        out.setdefault(d.case_id, []).append(d)
    return out


def _drawn(
    truths: list[Any], by_case: dict[str, list[Any]], pick: Any, tag: str
) -> tuple[list[Any], list[Any]]:
    """The cases ``pick`` (indices into ``truths``, repeats allowed) renamed apart, with their detections."""
    ts: list[Any] = []
    ds: list[Any] = []
    for k, i in enumerate(pick):
        t = truths[int(i)]
        new_id = f"{tag}{k}_{t.case_id}"
        ts.append(_renamed_truth(t, new_id))
        ds += [dataclasses.replace(d, case_id=new_id) for d in by_case.get(t.case_id, [])]
    return ts, ds


def paired_cpm_difference(
    truths: list[Any], dets_a: list[Any], dets_b: list[Any], n: int, seed: int = 0
) -> dict[str, Any]:
    """CPM(a) − CPM(b) on the same cases and its 95 % interval from a paired bootstrap over cases."""
    by_case_a, by_case_b = _by_case(dets_a), _by_case(dets_b)
    point = _cpm(truths, dets_a) - _cpm(truths, dets_b)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        pick = rng.integers(len(truths), size=len(truths))
        ts, da = _drawn(truths, by_case_a, pick, "b")
        _, db = _drawn(truths, by_case_b, pick, "b")
        diffs.append(_cpm(ts, da) - _cpm(ts, db))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"cpm_difference": point, "ci95": [float(lo), float(hi)], "resamples": n}


def formation_pairs(
    truths_a: list[Any], form_a: str, truths_b: list[Any], form_b: str
) -> list[tuple[int, int]]:
    """Index pairs (into ``truths_a``, ``truths_b``) of the cases that hold the same nodes in both formations.

    Case ids are ``<background>_<formation>__<case>``; a case pairs with the case of the same background and
    case id in the other formation. Meaningful only when both cohorts were drawn with one seed
    (``--paired-formations``), which the caller states.
    """
    where = {t.case_id.replace(f"_{form_b}__", "__", 1): j for j, t in enumerate(truths_b)}
    return [
        (i, where[key])
        for i, t in enumerate(truths_a)
        if (key := t.case_id.replace(f"_{form_a}__", "__", 1)) in where
    ]


def formation_gap(
    truths_a: list[Any],
    truths_b: list[Any],
    dets: list[Any],
    n: int,
    pairs: list[tuple[int, int]] | None,
    seed: int = 0,
) -> dict[str, Any]:
    """CPM(b) − CPM(a) of one model on two sets of cases (the held-out formation b, the trained one a).

    The 95 % interval comes from a bootstrap over cases: over ``pairs`` (the same draw for both sides) when
    the two sets hold the same nodes, otherwise each side resampled on its own.
    """
    by_case = _by_case(dets)
    point = _cpm(truths_b, dets) - _cpm(truths_a, dets)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        if pairs:
            pick = rng.integers(len(pairs), size=len(pairs))
            pick_a = [pairs[int(k)][0] for k in pick]
            pick_b = [pairs[int(k)][1] for k in pick]
        else:
            pick_a = list(rng.integers(len(truths_a), size=len(truths_a)))
            pick_b = list(rng.integers(len(truths_b), size=len(truths_b)))
        ta, da = _drawn(truths_a, by_case, pick_a, "a")
        tb, db = _drawn(truths_b, by_case, pick_b, "b")
        diffs.append(_cpm(tb, db) - _cpm(ta, da))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {
        "gap": round(point, 4),
        "ci95": [round(float(lo), 4), round(float(hi), 4)],
        "paired": bool(pairs),
        "pairs": len(pairs or []),
        "resamples": n,
    }


def paired_summary(paired: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One line of paired differences (model → stratum → :func:`paired_cpm_difference`'s result):
    ``model (stratum): +0.080 [-0.010, +0.170]; ...``."""
    parts = []
    for model, strata in paired.items():
        for stratum, diff in strata.items():
            lo, hi = diff["ci95"]
            parts.append(
                f"{model} ({stratum.replace('_', ' ')}): {diff['cpm_difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            )
    return "; ".join(parts)


def gap_summary(gaps: dict[str, dict[str, Any]]) -> str:
    """One line of cross-formation gaps with their intervals: ``abdominal +0.120 [-0.050, +0.290], ...``."""
    return ", ".join(
        f"{region.replace('_', ' ')} {g['gap']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]"
        for region, g in gaps.items()
    )


def _renamed_truth(truth: Any, case_id: str) -> Any:
    return dataclasses.replace(truth, case_id=case_id)


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def table_rows(result: dict[str, Any]) -> list[str]:
    """Markdown rows: one per model × stratum."""
    rows = [
        "| model | test data (held out) | region | cases | nodes | sens @1 | @2 | @3 | @4 FP/vol | CPM [95 % CI] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mname, strata in result["models"].items():
        for key, block in strata.items():
            if not isinstance(block, dict) or "cpm" not in block:
                continue
            s = block["sensitivity_at_fp"]
            ci = block.get("cpm_ci95") or [None, None]
            what, region = result["strata"][key]
            rows.append(
                f"| {mname} | {what} | {region} | {block['n_cases']} | {block['n_nodes']} | {_fmt(s.get('1'))} | "
                f"{_fmt(s.get('2'))} | {_fmt(s.get('3'))} | {_fmt(s.get('4'))} | "
                f"{_fmt(block['cpm'])} [{_fmt(ci[0])}, {_fmt(ci[1])}] |"
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the model to measure (run folder, model folder or name)")
    ap.add_argument("--name", default=None, help="its name in the tables (default: the model's own)")
    ap.add_argument("--baseline", default="centernet3d_phantom_v2")
    ap.add_argument(
        "--tta", action="store_true", help="also measure the model with flip test-time augmentation"
    )
    ap.add_argument(
        "--precision",
        default=None,
        help="the candidate's network format (default: the model's, auto, as detect runs it); a format other "
        "than float32 is named in the tables, e.g. 'model [bfloat16]', and cached apart",
    )
    ap.add_argument("--baseline-precision", default=None, help="the same for the baseline")
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "_work" / "realism")
    ap.add_argument(
        "--cases", type=int, default=32, help="insertion cases per held-out test background and formation"
    )
    ap.add_argument(
        "--seen-cases",
        type=int,
        default=8,
        help="insertion cases per seen chest background and formation (0 leaves them out; they are slow)",
    )
    ap.add_argument(
        "--paired-formations",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw both formations of a background with one seed (same nodes): a paired cross-formation gap",
    )
    ap.add_argument("--nodes", type=int, nargs=2, default=(2, 5))
    ap.add_argument("--phantom-cases", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=BOOTSTRAP)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "realism.json")
    ap.add_argument("--cohorts-only", action="store_true", help="only generate the test cohorts")
    ap.add_argument("--baseline-only", action="store_true", help="only detect with the baseline (cached)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from lymphcad import atomic
    from lymphcad.detector.infer import with_overrides
    from lymphcad.detector.model import load_model

    work: Path = args.work
    drawn = {
        "cases": args.cases,
        "seen_cases": args.seen_cases,
        "nodes": list(args.nodes),
        "phantom_cases": args.phantom_cases,
        "paired_formations": args.paired_formations,
    }
    failures: dict[str, str] = {}
    cohorts = make_test_cohorts(
        work,
        args.cases,
        (args.nodes[0], args.nodes[1]),
        args.phantom_cases,
        failures,
        seen_cases=args.seen_cases,
        paired_formations=args.paired_formations,
    )
    if args.cohorts_only:
        return
    truths = truths_of(cohorts)
    strata: dict[str, tuple[list[str], str, str]] = {}
    unseen = [tc for tc in cohorts if tc.kind == "insertion" and not tc.name.startswith("seen_")]
    seen = [tc for tc in cohorts if tc.name.startswith("seen_")]
    for form in FORMATIONS:
        held = "trained formation" if form == TRAIN_FORMATION else "held-out formation"
        what = f"insertion, held-out backgrounds, {form} ({held})"
        for region in ("mediastinal", "abdominal"):
            names = [
                tc.name
                for tc in unseen
                if tc.formation == form and TEST_REGIONS[tc.background or ""] == region
            ]
            if names:
                strata[f"{form}_{region}"] = (names, what, region)
        names = [tc.name for tc in unseen if tc.formation == form]
        if names:
            strata[f"{form}_pooled"] = (names, what, "both")
        names = [tc.name for tc in seen if tc.formation == form]
        if names:
            strata[f"seen_{form}_mediastinal"] = (
                names,
                f"insertion (new method), chest backgrounds seen in training, {form} ({held})",
                "mediastinal",
            )
    real = [tc.name for tc in unseen]
    strata["insertion_pooled"] = (real, "insertion, held-out backgrounds, both formations", "both")
    for region in ("mediastinal", "abdominal"):  # the per-region targets, formations pooled
        names = [tc.name for tc in unseen if TEST_REGIONS[tc.background or ""] == region]
        strata[f"insertion_{region}"] = (names, "insertion, held-out backgrounds, both formations", region)
    for region in ("mediastinal", "abdominal"):
        ph = [t for t in truths["phantom_d050"] if t.region == region]
        truths[f"phantom_{region}"] = ph
        strata[f"phantom_{region}"] = ([f"phantom_{region}"], "phantom d = 0.5 (seed 900)", region)

    models: dict[str, tuple[Any, Any]] = {}
    base = load_model(args.baseline)
    base_settings, base_name = _in_precision(base.detect, base.name, args.baseline_precision)
    models[base_name] = (base, base_settings)
    cand = load_model(args.model)
    cand_settings, cand_name = _in_precision(cand.detect, args.name or cand.name, args.precision)
    if cand_name in models:
        raise SystemExit(f"the candidate and the baseline are both {cand_name!r}: give --name")
    if not args.baseline_only:
        models[cand_name] = (cand, cand_settings)
    if args.tta and not args.baseline_only:
        models[f"{cand_name} + TTA"] = (cand, with_overrides(cand_settings, tta_flips=True))
    result: dict[str, Any] = {
        "what": "realism benchmark: insertion and phantom figures (synthetic nodes), not TCIA CT Lymph Nodes results",
        "test_backgrounds": TEST_BACKGROUNDS,
        "seen_chest_tests": SEEN_CHEST_TESTS,
        "insertion_failures": failures,
        "trained_formation": TRAIN_FORMATION,
        "formations": list(FORMATIONS),
        "drawn": drawn,
        "cohorts": {
            tc.name: {"root": str(tc.root), "background": tc.background, "formation": tc.formation}
            for tc in cohorts
        },
        "strata": {k: [v[1], v[2]] for k, v in strata.items()},
        "baseline": base_name,
        "candidate": cand_name,
        "precision": {base_name: base_settings.precision.value, cand_name: cand_settings.precision.value},
        "bootstrap": args.bootstrap,
        "threads": args.threads,
        "models": {},
        "seconds_per_case": {},
    }
    all_dets: dict[str, list[Any]] = {}
    for mname, (model, settings) in models.items():
        dets: list[Any] = []
        secs = {}
        slug = "".join(ch if ch.isalnum() else "_" for ch in mname)
        for tc in cohorts:
            if "TTA" in mname and (tc.kind == "phantom" or tc.name.startswith("seen_")):
                continue  # TTA costs 4x: measured on the held-out-background insertions only
            found, s = detect_cohort(model, settings, tc, work / "dets" / slug / f"{tc.name}.csv")
            dets += found
            secs[tc.name] = round(s, 3)
            print(f"[{time.strftime('%H:%M:%S')}] {mname}: {tc.name} {s:.2f} s/case", flush=True)
        # phantom detections carry the cohort's prefix; the per-region phantom strata reuse them
        dets += [
            dataclasses.replace(d, case_id=d.case_id.replace("phantom_d050__", f"phantom_{r}__", 1))
            for d in dets
            if d.case_id.startswith("phantom_d050__")
            for r in ("mediastinal", "abdominal")
        ]
        all_dets[mname] = dets
        blocks: dict[str, Any] = {}
        for key, (names, _, _) in strata.items():
            ts = [t for n in names for t in truths[n]]
            if "phantom" in key:
                ts = [_renamed_truth(t, t.case_id.replace("phantom_d050__", f"{key}__", 1)) for t in ts]
            if not ts or ("TTA" in mname and ("phantom" in key or key.startswith("seen_"))):
                continue
            blocks[key] = evaluate(ts, dets, args.bootstrap)
        gap = {}
        gap_ci = {}
        held_out = next(f for f in FORMATIONS if f != TRAIN_FORMATION)
        for region in ("mediastinal", "abdominal", "pooled", "seen_mediastinal"):
            pre = "seen_" if region.startswith("seen_") else ""
            reg = region.removeprefix("seen_")
            ka, kb = f"{pre}{TRAIN_FORMATION}_{reg}", f"{pre}{held_out}_{reg}"
            a, b = blocks.get(ka), blocks.get(kb)
            if a and b:
                gap[region] = round(float(b["cpm"]) - float(a["cpm"]), 4)
                ta = [t for n in strata[ka][0] for t in truths[n]]
                tb = [t for n in strata[kb][0] for t in truths[n]]
                pairs = formation_pairs(ta, TRAIN_FORMATION, tb, held_out) if args.paired_formations else None
                gap_ci[region] = formation_gap(ta, tb, dets, min(args.bootstrap, 300), pairs)
        blocks["cross_formation_cpm_gap"] = gap
        blocks["cross_formation_cpm_gap_ci95"] = gap_ci
        result["models"][mname] = blocks
        result["seconds_per_case"][mname] = secs
    if args.baseline_only:
        return
    real_truths = [t for n in real for t in truths[n]]
    seen_truths = [t for tc in cohorts if tc.name.startswith("seen_") for t in truths[tc.name]]
    n_paired = min(args.bootstrap, 300)
    result["paired_vs_baseline"] = {}
    for mname in models:
        if mname == base_name:
            continue
        block = {
            "held_out_backgrounds": paired_cpm_difference(
                real_truths, all_dets[mname], all_dets[base_name], n_paired
            )
        }
        if seen_truths and "TTA" not in mname:
            block["all_real_backgrounds"] = paired_cpm_difference(
                real_truths + seen_truths, all_dets[mname], all_dets[base_name], n_paired
            )
        result["paired_vs_baseline"][mname] = block
    atomic.write_json(args.out, result)
    md = args.out.with_suffix(".md")
    lines = [
        "Realism benchmark (`benchmarks/bench_realism.py`): synthetic nodes inserted into real CT backgrounds never "
        "trained on, and the phantom; **insertion/phantom figures, not TCIA results**. 95 % CI: bootstrap over cases.",
        "",
        *table_rows(result),
        "",
        "Cross-formation gap (CPM on the held-out formation − CPM on the trained one"
        + (", the same nodes in both, paired bootstrap" if args.paired_formations else "")
        + "): "
        + "; ".join(
            f"{m}: {gap_summary(b['cross_formation_cpm_gap_ci95'])}" for m, b in result["models"].items()
        ),
        "",
        "Paired bootstrap over cases, CPM difference to the baseline on the real-background insertions: "
        + paired_summary(result["paired_vs_baseline"]),
        "",
    ]
    atomic.write_text(md, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
