"""Lymph-node insertion into a real CT background, where nodes live (issue 12): the cohort writer.

1. The background is analysed once (:mod:`lymphcad.phantom.analysis`): a tissue map, landmarks and station
   masks (:mod:`lymphcad.phantom.background`), the noise power spectrum and the depth of node-hosting tissue.
2. Each case gets its own nodes (:mod:`lymphcad.phantom.placement`): drawn from the node model
   (:mod:`lymphcad.phantom.nodemodel`), placed at the stations of the region in fat as deep as the node, or,
   where the fat is thinner than the node (fat-poor mediastina), by **mass effect**: the node's neighbours are
   pushed aside by a smooth, volume-keeping radial displacement (:mod:`lymphcad.phantom.masseffect`), so it
   never overlaps lumen, airway, bone, lung, oesophagus or organ parenchyma; each node is written by its own
   image-formation model (:mod:`lymphcad.phantom.formation`).
3. Ground truth follows the collection's per-region rule (:mod:`lymphcad.phantom.truthrule`): positives in
   labels/ and annotations.csv, the ignore band in ignore.csv, smaller nodes only in extra/ (the node table,
   :mod:`lymphcad.phantom.inserted`, records per node its station and whether it was placed by mass effect).

A case that gets fewer than the asked minimum fails the run (:class:`PlacementError`); the cohort carries the
background's licence and citations (:mod:`lymphcad.phantom.background_sources`) in dataset.json.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lymphcad import atomic
from lymphcad.cohort import Annotation, CohortWriter, DatasetInfo, IgnorePoint, write_ignore
from lymphcad.errors import UsageError
from lymphcad.geometry import CTVolume
from lymphcad.io.nifti import write_nifti
from lymphcad.io.reader import read_ct_input
from lymphcad.phantom.analysis import BackgroundAnalysis, analyse_background, canonical_volume
from lymphcad.phantom.background import CLASS_NAMES, FORBIDDEN, STATIONS, Tissue, classify_background
from lymphcad.phantom.background_sources import BACKGROUND_SOURCES, background_source
from lymphcad.phantom.inserted import INSERT_NODE_COLUMNS, CaseSummary, InsertedNode, InsertionResult
from lymphcad.phantom.nodemodel import Formation
from lymphcad.phantom.placement import (
    FORMATION_CHOICES,
    REGION_CHOICES,
    PlacementError,
    _stations_for,
    insert_nodes,
    parse_formations,
)
from lymphcad.phantom.texture import TextureSource
from lymphcad.phantom.truthrule import TruthClass, ignore_radius_mm, rule_for

__all__ = [
    "BACKGROUND_SOURCES",
    "CLASS_NAMES",
    "FORBIDDEN",
    "FORMATION_CHOICES",
    "INSERT_NODE_COLUMNS",
    "REGION_CHOICES",
    "BackgroundAnalysis",
    "CaseSummary",
    "InsertedNode",
    "InsertionResult",
    "PlacementError",
    "analyse_background",
    "background_source",
    "canonical_volume",
    "classify_background",
    "insert_cohort",
    "insert_nodes",
    "parse_formations",
]


def _finished_case(
    writer: CohortWriter, cid: str, run_key: dict[str, Any]
) -> tuple[CaseSummary, list[Annotation | tuple[IgnorePoint, bool]], str, str] | None:
    """A case a previous run with the same settings finished (its image, node table and, last, its
    ``_insert.json``); its summary, annotations / (ignore point, in ignore.csv) and hash, or None."""
    extra = writer.root / "extra"
    js, table = extra / f"{cid}_insert.json", extra / f"{cid}_nodes.csv"
    if not (writer.has_case(cid) and js.is_file() and table.is_file()):
        return None
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("run") != run_key or "content_hash" not in meta:
        return None
    out: list[Annotation | tuple[IgnorePoint, bool]] = []
    counts = {t: 0 for t in TruthClass}
    pushed = 0
    with table.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            truth = TruthClass(row["truth"])
            counts[truth] += 1
            pushed += row.get("placement") == "mass_effect"
            xyz = (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"]))
            sad, lad = float(row["short_axis_mm"]), float(row["long_axis_mm"])
            if truth is TruthClass.POSITIVE:
                gt = int(row["gt_node_id"])
                out.append(Annotation(cid, gt, xyz, round(sad, 3), round(lad, 3), row["region"], gt))
            else:
                out.append((IgnorePoint(cid, xyz, ignore_radius_mm(sad, lad)), truth is TruthClass.IGNORE))
    summary = CaseSummary(
        cid,
        int(meta["requested"]),
        sum(counts.values()),
        counts[TruthClass.POSITIVE],
        counts[TruthClass.IGNORE],
        counts[TruthClass.NEGATIVE],
        dict(meta.get("by_station", {})),
        pushed,
    )
    return summary, out, str(meta["content_hash"]), str(meta["region"])


def _stem(bg: Path) -> str:
    name = bg.name.replace(".nii.gz", "").replace(".nii", "")
    if bg.is_dir():
        name = f"{bg.parent.name}_{bg.name}"
    return "".join(ch if ch.isalnum() or ch in "_-." else "_" for ch in name)


def insert_cohort(
    background: str | Path,
    out: str | Path,
    cases: int,
    nodes: tuple[int, int],
    seed: int,
    *,
    region: str = "auto",
    formation: str = "both",
    p_positive: float = 0.8,
    progress: Callable[[int, int], None] | None = None,
    on_case: Callable[[CaseSummary], None] | None = None,
    evaluation: bool = False,
    keep_size: bool = True,
) -> DatasetInfo:
    """Write a cohort of ``cases`` copies of a real CT, each with its own inserted nodes.

    Each case draws its node count uniformly in ``nodes`` = (MIN, MAX) and fails the whole run with a
    :class:`PlacementError` (nothing half-written is left as a finished cohort: dataset.json is written last)
    when fewer than MIN nodes fit. ``on_case`` receives each case's :class:`CaseSummary`. ``evaluation``
    marks a test cohort (benchmarks only): then a holdout background may take nodes; a training cohort never.
    ``keep_size``: see :func:`lymphcad.phantom.placement.insert_nodes`; ``False`` reproduces cohorts drawn
    before it existed (the training data of the models up to v8), byte for byte.
    """
    bg = Path(background)
    if cases < 1:
        raise UsageError(f"--cases must be at least 1 (got {cases})")
    if nodes[0] < 0 or nodes[1] < nodes[0]:
        raise UsageError("--nodes MIN MAX needs 0 <= MIN <= MAX")
    if region not in REGION_CHOICES:
        raise UsageError(f"--region must be one of {', '.join(REGION_CHOICES)} (got {region!r})")
    forms = parse_formations(formation)
    if "holdout" in bg.resolve().parts and not evaluation:
        raise UsageError("holdout backgrounds are for evaluation only: never insert into them", bg)
    vol = canonical_volume(read_ct_input(bg))
    an = analyse_background(vol)
    reg = an.region if region == "auto" else region
    sts = _stations_for(an, region)
    if not sts and nodes[0] > 0:
        raise PlacementError(
            f"no {reg} node station found in this background (landmarks: {an.landmarks.summary()}); "
            "try another --region",
            bg,
        )
    lic, cites = background_source(bg)
    texture = TextureSource.build(vol.array, an.tissue) if Formation.TEXTURE in forms else None
    vessels = vol.array[an.tissue == Tissue.VESSEL]
    phase_note = ""
    if vessels.size and float(np.percentile(vessels, 99)) > 400:
        phase_note = " Background looks arterial (CTA-like, vessels > 400 HU): phase mismatch with portal-venous nodes."
    writer = CohortWriter(out)
    stem = _stem(bg)
    anns: list[Annotation] = []
    ignore: list[IgnorePoint] = []
    non_gt: list[IgnorePoint] = []
    hashes: dict[str, str] = {}
    regions: dict[str, str] = {}
    body = (an.tissue != Tissue.OUTSIDE).astype(np.uint8)
    extra = writer.extra_dir()
    stations_map = np.zeros(an.tissue.shape, np.uint8)
    for n_st, s in enumerate(STATIONS, start=1):
        if s.name in an.stations:
            stations_map[an.stations[s.name] & (stations_map == 0)] = n_st
    run_key = {
        "background": bg.name,
        "seed": seed,
        "nodes": list(nodes),
        "region": region,
        "formation": formation,
        "p_positive": p_positive,
        "mass_effect": True,
    }
    if keep_size:  # absent from cohorts drawn before the option, so their resume keys still match
        run_key["placement"] = "keep-size"
    for c in range(cases):
        cid = f"insert_{stem}_{c:04d}"
        kept = _finished_case(writer, cid, run_key)
        if kept is not None:  # resumed: this case was written by the same run settings
            summary, case_nodes, case_hash, case_region = kept
            hashes[cid], regions[cid] = case_hash, case_region
            anns.extend(a for a in case_nodes if isinstance(a, Annotation))
            for pt, is_ignore in (x for x in case_nodes if isinstance(x, tuple)):
                non_gt.append(pt)
                if is_ignore:
                    ignore.append(pt)
            if on_case:
                on_case(summary)
            if progress:
                progress(c + 1, cases)
            continue
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), c, 0x1A5E]))
        n = int(rng.integers(nodes[0], nodes[1] + 1))
        res = insert_nodes(
            vol,
            n,
            rng,
            region=region,
            formations=forms,
            analysis=an,
            p_positive=p_positive,
            texture=texture,
            keep_size=keep_size,
        )
        summary = CaseSummary(
            cid,
            n,
            len(res.nodes),
            sum(x.truth is TruthClass.POSITIVE for x in res.nodes),
            sum(x.truth is TruthClass.IGNORE for x in res.nodes),
            sum(x.truth is TruthClass.NEGATIVE for x in res.nodes),
            res.by_station,
            sum(x.placement == "mass_effect" for x in res.nodes),
        )
        if len(res.nodes) < nodes[0]:
            raise PlacementError(
                f"case {c}: placed only {len(res.nodes)} of the minimum {nodes[0]} nodes at the {reg} stations "
                f"({', '.join(s.name for s in sts) or 'none'}): no more room in node-hosting tissue, not even by "
                "pushing neighbours aside (mass effect); "
                "ask for fewer --nodes or another --region",
                bg,
            )
        hashes[cid] = writer.write_image(cid, CTVolume(res.image, vol.geometry))
        writer.write_label(cid, res.labels, vol.geometry)
        writer.write_eval_region(cid, body, vol.geometry)
        write_nifti(extra / f"{cid}_all_nodes.nii.gz", res.all_nodes, vol.geometry)
        atomic.write_csv(extra / f"{cid}_nodes.csv", INSERT_NODE_COLUMNS, (x.row(cid) for x in res.nodes))
        regions[cid] = res.region
        for x in res.nodes:
            if x.positive:
                anns.append(x.annotation(cid))
            else:
                non_gt.append(x.ignore_point(cid))
                if x.truth is TruthClass.IGNORE:
                    ignore.append(x.ignore_point(cid))
        # written last: marks the case complete for a resumed run
        atomic.write_json(
            extra / f"{cid}_insert.json",
            {
                "run": run_key,
                "case_index": c,
                "requested": n,
                "region": res.region,
                "formations": [f.value for f in forms],
                "by_station": res.by_station,
                "content_hash": hashes[cid],
                "landmarks": an.landmarks.summary(),
            },
        )
        if on_case:
            on_case(summary)
        if progress:
            progress(c + 1, cases)
    write_nifti(extra / f"{stem}_tissue.nii.gz", an.tissue, vol.geometry)
    write_nifti(extra / f"{stem}_stations.nii.gz", stations_map, vol.geometry)
    atomic.write_json(
        extra / "tissue_classes.json",
        {
            "tissue": {str(k): v for k, v in CLASS_NAMES.items()},
            "stations": {str(i): s.name for i, s in enumerate(STATIONS, start=1)},
        },
    )
    write_ignore(extra / "ignore_non_gt.csv", non_gt)
    rule = rule_for(reg)
    info = DatasetInfo(
        name=f"lymphcad-insert-{stem}-s{seed}",
        description=(
            f"Synthetic lymph nodes inserted into the real CT {bg.name} at {reg} stations "
            f"(image formation: {'/'.join(f.value for f in forms)}). Ground truth: short axis >= "
            f"{rule.positive_min_mm} mm; {rule.ignore_min_mm}-{rule.positive_min_mm} mm in ignore.csv (the "
            f"collection's {reg} rule). Inserted-node numbers are not TCIA results.{phase_note}"
        ),
        cases=sorted(regions),
        case_regions=regions,
        license=lic,
        citation=cites,
        source=f"real CT {bg.name} with synthetic nodes (lymphcad.phantom.insert), seed {seed}",
        content_hashes=hashes,
        extra={
            "insertion": {
                "background": bg.name,
                "seed": seed,
                "nodes": list(nodes),
                "region": reg,
                "formation": formation,
                **({"placement": "keep-size"} if keep_size else {}),
                "truth_rule": {"positive_min_mm": rule.positive_min_mm, "ignore_min_mm": rule.ignore_min_mm},
            }
        },
    )
    return writer.finish(info, anns, ignore)
