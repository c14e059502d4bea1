"""One phantom case end to end, and the resumable cohort writer.

``generate_case`` returns arrays and tables in memory; ``generate_cohort`` writes a cohort per
formats.md §2 plus the full truth under ``extra/``. Every case draws from its own generator seeded by
``(seed, case_index)``, so a resumed or parallel run is byte-identical to a straight one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad import atomic
from lymphcad.citations import SYNTHETIC_LICENSE
from lymphcad.cohort import Annotation, CohortWriter, DatasetInfo, IgnorePoint, voxel_hash, write_ignore
from lymphcad.errors import UsageError
from lymphcad.geometry import Geometry
from lymphcad.io.nifti import write_nifti
from lymphcad.phantom import imaging
from lymphcad.phantom.anatomy import Anatomy, Mimic, build_anatomy, dome_z, paint_deferred
from lymphcad.phantom.canvas import Canvas
from lymphcad.phantom.config import (
    GENERATOR_VERSION,
    PRESETS,
    REGION_CHOICES,
    case_region,
    case_rng,
    sample_case_params,
)
from lymphcad.phantom.iaslc import iaslc_station
from lymphcad.phantom.nodes import NodeParams, NodePlacer, measure_mask, record_annotation
from lymphcad.phantom.tissue import NAMES, T
from lymphcad.phantom.truthrule import TruthClass, rule_for

NODE_COLUMNS = (
    "case_id",
    "id",
    "gt_node_id",
    "coordX",
    "coordY",
    "coordZ",
    "i",
    "j",
    "k",
    "reader_i",
    "reader_j",
    "reader_k",
    "short_axis_mm",
    "long_axis_mm",
    "axes3d_mm",
    "volume_mm3",
    "station",
    "region",
    "enlarged",
    "truth",
    "annotated",
    "in_eval_region",
    "cluster_id",
    "internal_type",
    "mean_hu",
    "local_cnr",
    "nearest_structure",
    "gap_mm",
    "box_min_xyz",
    "box_max_xyz",
    "drawn_sad_mm",
    "molded",
)


@dataclass(frozen=True)
class PhantomNodeRow:
    """One placed node of a phantom case: a row of ``extra/<case>_nodes.csv`` (world LPS mm, measured RECIST)."""

    id: int
    gt_node_id: int  # 1..n for ground-truth nodes, 0 otherwise (written as an empty cell)
    coord: tuple[float, float, float]
    ijk: tuple[float, float, float]
    reader: tuple[float, float, float]
    sad: float
    lad: float
    axes3d: tuple[float, ...]
    volume: float
    station: str
    region: str
    enlarged: bool  # ground truth by the region's rule (``truth == "positive"``)
    truth: str  # positive / ignore / negative (lymphcad.phantom.truthrule)
    annotated: bool
    in_eval: bool
    cluster_id: int
    internal: str
    mean_hu: float
    cnr: float
    nearest: str
    gap: float
    box_lo: tuple[float, float, float]
    box_hi: tuple[float, float, float]
    drawn_sad: float
    molded: bool

    def csv_row(self, case_id: str) -> list[Any]:
        """The node-table row (columns :data:`NODE_COLUMNS`)."""
        return [
            case_id,
            self.id,
            self.gt_node_id or "",
            *(_f(v) for v in self.coord),
            *(_f(v, 2) for v in self.ijk),
            *(_f(v, 2) for v in self.reader),
            _f(self.sad),
            _f(self.lad),
            " ".join(_f(v, 2) for v in self.axes3d),
            _f(self.volume, 1),
            self.station,
            self.region,
            int(self.enlarged),
            self.truth,
            int(self.annotated),
            int(self.in_eval),
            self.cluster_id,
            self.internal,
            _f(self.mean_hu, 1),
            _f(self.cnr, 2),
            self.nearest,
            _f(self.gap, 2),
            " ".join(_f(v) for v in self.box_lo),
            " ".join(_f(v) for v in self.box_hi),
            _f(self.drawn_sad),
            int(self.molded),
        ]


def _xyz(v: Any) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


@dataclass
class PhantomCase:
    case_id: str
    region: str
    params: dict[str, Any]
    image: NDArray[np.int16]
    labels: NDArray[np.uint16]
    all_nodes: NDArray[np.uint16]
    tissue: NDArray[np.uint8]
    eval_region: NDArray[np.uint8]
    geometry: Geometry
    annotations: list[Annotation]
    nodes: list[PhantomNodeRow]
    mimics: list[Mimic]  # world LPS mm
    timings: dict[str, float]


def _eval_region(canvas: Canvas, region: str, anatomy: Anatomy) -> NDArray[np.uint8]:
    """Where ground truth is defined: the mediastinum (envelope between the lungs, hila included, lung
    parenchyma excluded) for MED cases; the abdomen and pelvis below the dome for ABD cases."""
    x = canvas.xs[None, None, :]
    y = canvas.ys[None, :, None]
    z = canvas.zs[:, None, None]
    body = canvas.tissue > 0
    sx, shift = anatomy.dome_params
    dome = dome_z(x, y, sx, shift)
    if region == "mediastinal" and anatomy.med_env is not None:
        zk, xk, yk, ak, bk = anatomy.med_env
        zz = canvas.zs.astype(float)
        cx = np.interp(zz, zk[::-1], xk[::-1]).astype(np.float32)[:, None, None]
        cy = np.interp(zz, zk[::-1], yk[::-1]).astype(np.float32)[:, None, None]
        ca = (np.interp(zz, zk[::-1], ak[::-1]) + 15.0).astype(np.float32)[:, None, None]
        cb = np.interp(zz, zk[::-1], bk[::-1]).astype(np.float32)[:, None, None]
        env = ((x - cx) / ca) ** 2 + ((y - cy) / cb) ** 2 <= 1.0
        lung = (canvas.tissue == T.LUNG) | (canvas.tissue == T.LUNG_VESSEL)
        m = (z > dome - 5) & (z < 115) & env & body & ~lung
    else:
        m = (z <= dome + 5) & (z > -490) & body
    out: NDArray[np.uint8] = m.astype(np.uint8)
    return out


def generate_case(
    seed: int,
    case_index: int,
    region: str,
    difficulty: float,
    preset: str,
    annotation_fraction: float = 1.0,
    case_id: str | None = None,
) -> PhantomCase:
    """Generate one case (all randomness from ``case_rng(seed, case_index)``)."""
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
    t0 = time.perf_counter()
    tm: dict[str, float] = {}
    reg = case_region(region, case_index)
    cid = case_id or f"phantom_{case_index:04d}"
    rng = case_rng(seed, case_index)
    p = sample_case_params(
        rng,
        seed=seed,
        case_index=case_index,
        region=reg,
        difficulty=difficulty,
        preset=preset,
        annotation_fraction=annotation_fraction,
    )
    g = p["grid"]
    gs, gp, gf = g["shape_zyx"], g["spacing_zyx"], g["frame_first_xyz"]
    shape: tuple[int, int, int] = (int(gs[0]), int(gs[1]), int(gs[2]))
    spacing: tuple[float, float, float] = (float(gp[0]), float(gp[1]), float(gp[2]))
    first: tuple[float, float, float] = (float(gf[0]), float(gf[1]), float(gf[2]))
    shift = np.asarray(g["world_shift_xyz"], dtype=float)
    tex = imaging.texture_field(rng, shape, spacing)
    tm["texture"] = time.perf_counter() - t0
    canvas = Canvas(shape, spacing, first, texture=tex)
    anatomy = build_anatomy(canvas, p, rng)
    tm["anatomy"] = time.perf_counter() - t0 - sum(tm.values())
    placer = NodePlacer(canvas, anatomy, NodeParams.from_case(p), rng)
    placer.place_all(reg)
    p["nodes"]["dropped"] = dict(placer.dropped)  # drawn nodes that fit nowhere
    paint_deferred(canvas, anatomy)
    tm["nodes"] = time.perf_counter() - t0 - sum(tm.values())
    canvas.texture = None
    del tex
    geom = Geometry(shape, spacing, tuple(np.asarray(first) + shift))
    evr = _eval_region(canvas, reg, anatomy)
    # -- measure nodes, choose ground truth -------------------------------------------------------
    node_map = placer.node_map
    objs = ndimage.find_objects(node_map)
    rows: list[PhantomNodeRow] = []
    masks: dict[int, tuple[Any, NDArray[np.bool_]]] = {}
    gt_ids: list[int] = []
    hu_clean = canvas.hu
    for node in placer.nodes:
        sl = objs[node.node_index - 1] if node.node_index - 1 < len(objs) else None
        if sl is None:
            continue
        m = node_map[sl] == node.node_index
        meas = measure_mask(m, spacing)
        off = np.array([s.start for s in sl], dtype=float)
        cz, cy, cx = np.asarray(meas.centroid_zyx) + off
        ci = np.round([cz, cy, cx]).astype(int)
        if (
            node_map[tuple(ci)] != node.node_index
        ):  # centroid outside a bean-shaped mask: nearest voxel inside
            zz, yy, xx = np.nonzero(m)
            d = (zz + off[0] - cz) ** 2 + (yy + off[1] - cy) ** 2 + (xx + off[2] - cx) ** 2
            q = int(np.argmin(d))
            cz, cy, cx = zz[q] + off[0], yy[q] + off[1], xx[q] + off[2]
        world = geom.zyx_to_world([cz, cy, cx])
        # ground truth by the collection's rule of the node's region (abdomen from 7.5 mm, mediastinum 10 mm)
        truth = rule_for(node.region).classify(float(meas.sad_mm))
        enlarged = truth is TruthClass.POSITIVE
        canvas.tissue[sl][m] = T.NODE if enlarged else T.NODE_SMALL
        in_eval = bool(evr[round(cz), round(cy), round(cx)])
        annotated = bool(rng.random() < annotation_fraction)
        ri, rj, rk = meas.reader_ijk
        lo = geom.zyx_to_world(off - 0.5)
        hi = geom.zyx_to_world(off + np.array(m.shape) - 0.5)
        mean_hu = float(hu_clean[sl][m].mean())
        # nearest non-fat structure around the node (ring of 2 voxels)
        ring = ndimage.binary_dilation(m, iterations=2) & ~m
        tis = canvas.tissue[sl][ring]
        tis = tis[(tis != T.FAT_VISC) & (tis != T.STRANDING) & (tis != T.NODE) & (tis != T.NODE_SMALL)]
        nearest = NAMES.get(int(np.bincount(tis).argmax()), "") if tis.size else "fat"
        fat_ring = canvas.hu[sl][ring]
        cnr = (mean_hu - float(np.median(fat_ring))) / p["imaging"]["noise_sd"] if fat_ring.size else 0.0
        row = PhantomNodeRow(
            id=node.node_index,
            gt_node_id=0,
            coord=_xyz(world),
            ijk=(float(cx), float(cy), float(cz)),
            reader=(float(ri + off[2]), float(rj + off[1]), float(rk + off[0])),
            sad=float(meas.sad_mm),
            lad=float(meas.lad_mm),
            axes3d=tuple(float(v) for v in meas.axes3d_mm),
            volume=float(meas.volume_mm3),
            # the map's station where the node ended up (placement may leave its drawn station's side)
            station=iaslc_station(anatomy, world - shift, node.station)
            if node.region == "mediastinal"
            else node.station,
            region=node.region,
            enlarged=enlarged,
            truth=truth.value,
            annotated=annotated,
            in_eval=in_eval,
            cluster_id=int(node.cluster_id),
            internal=node.internal,
            mean_hu=mean_hu,
            cnr=float(cnr),
            nearest=nearest,
            gap=float(node.gap),
            box_lo=_xyz(lo),
            box_hi=_xyz(hi),
            drawn_sad=float(node.drawn_sad),
            molded=bool(node.molded),
        )
        rows.append(row)
        masks[node.node_index] = (sl, m)
        if enlarged and annotated and in_eval and node.region == reg:
            gt_ids.append(node.node_index)
    gt_ids.sort()
    labels = np.zeros(shape, dtype=np.uint16)
    annotations = []
    new_of = {old: new for new, old in enumerate(gt_ids, start=1)}
    rows = [replace(r, gt_node_id=new_of.get(r.id, 0)) for r in rows]
    for row in rows:
        if row.gt_node_id:
            sl_m, m_m = masks[row.id]
            labels[sl_m][m_m] = row.gt_node_id
            annotations.append(
                Annotation(
                    cid, row.gt_node_id, row.coord, round(row.sad, 3), round(row.lad, 3), reg, row.gt_node_id
                )
            )
    annotations.sort(key=lambda a: a.node_id)
    del masks
    tm["measure"] = time.perf_counter() - t0 - sum(tm.values())
    # -- image formation --------------------------------------------------------------------------
    im = p["imaging"]
    vol = imaging.blur(canvas.hu, spacing, im["psf_xy"], im["psf_z"])
    body = canvas.tissue > 0
    imaging.add_noise(
        vol,
        rng,
        body,
        spacing,
        im["noise_sd"],
        im["nps_peak"],
        im["z_rho"],
        im["nps_floor"],
        im["size_noise_gain"],
    )
    del body
    p["artifacts_applied"] = imaging.add_artifacts(
        vol,
        canvas.tissue,
        canvas.zs,
        canvas.xs,
        canvas.ys,
        imaging.ArtifactDraws.from_case(p),
        rng,
    )
    image = imaging.finalize(vol)
    tm["imaging"] = time.perf_counter() - t0 - sum(tm.values())
    mimics = [
        mm.shifted(shift)
        for mm in anatomy.mimics
        if canvas.xs[0] <= mm.center_xyz[0] <= canvas.xs[-1]
        and canvas.ys[0] <= mm.center_xyz[1] <= canvas.ys[-1]
        and canvas.zs[0] <= mm.center_xyz[2] <= canvas.zs[-1]
    ]
    return PhantomCase(
        cid, reg, p, image, labels, node_map, canvas.tissue, evr, geom, annotations, rows, mimics, tm
    )


# -- cohort ---------------------------------------------------------------------------------------
def _f(v: float, nd: int = 3) -> str:
    return f"{v:.{nd}f}"


def write_case(writer: CohortWriter, case: PhantomCase) -> dict[str, Any]:
    """Write one case's files; the case JSON (written last) marks it complete."""
    cid, geom = case.case_id, case.geometry
    extra = writer.extra_dir()
    root = writer.root
    write_nifti(root / "labels" / f"{cid}.nii.gz", case.labels, geom)
    write_nifti(root / "eval_regions" / f"{cid}.nii.gz", case.eval_region, geom)
    write_nifti(extra / f"{cid}_all_nodes.nii.gz", case.all_nodes, geom)
    write_nifti(extra / f"{cid}_tissue.nii.gz", case.tissue, geom)
    atomic.write_csv(extra / f"{cid}_nodes.csv", NODE_COLUMNS, (r.csv_row(cid) for r in case.nodes))
    atomic.write_csv(
        extra / f"{cid}_mimics.csv",
        ("case_id", "type", "coordX", "coordY", "coordZ", "size_mm"),
        ([cid, mm.kind, *(_f(v) for v in mm.center_xyz), _f(mm.size_mm, 1)] for mm in case.mimics),
    )
    write_nifti(writer.image_path(cid), case.image, geom)
    h = voxel_hash(case.image)
    info = {
        "case_id": cid,
        "region": case.region,
        "content_hash": h,
        "geometry": geom.to_json(),
        "annotations": [
            {"node_id": a.node_id, "xyz": list(a.center_xyz), "sad": a.short_axis_mm, "lad": a.long_axis_mm}
            for a in case.annotations
        ],
        "non_gt_nodes": [
            {
                "id": r.id,
                "xyz": list(r.coord),
                "radius_mm": round(max(r.lad, 4.0) / 2 + 2.0, 3),
                "enlarged": r.enlarged,
                "truth": r.truth,
                "sad": r.sad,
                "lad": r.lad,
                "region": r.region,
            }
            for r in case.nodes
            if not r.gt_node_id
        ],
        "all_enlarged": [
            {"id": r.id, "xyz": list(r.coord), "sad": r.sad, "lad": r.lad, "region": r.region}
            for r in case.nodes
            if r.enlarged
        ],
        "params": case.params,
    }
    atomic.write_json(extra / f"{cid}_case.json", info)
    return info


def _worker(args: tuple[str, int, int, str, float, str, float]) -> dict[str, Any]:
    out, seed, idx, region, difficulty, preset, frac = args
    writer = CohortWriter(out)
    case = generate_case(seed, idx, region, difficulty, preset, frac)
    return write_case(writer, case)


def generate_cohort(
    out: str | Path,
    cases: int,
    region: str,
    seed: int,
    difficulty: float = 0.5,
    preset: str = "bench",
    *,
    annotation_fraction: float = 1.0,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetInfo:
    """Write a phantom cohort (resumable: finished cases are skipped; output is byte-identical either way)."""
    if region not in REGION_CHOICES:
        raise UsageError(f"--region must be one of {', '.join(REGION_CHOICES)}")
    if preset not in PRESETS:
        raise UsageError(f"--preset must be one of {', '.join(PRESETS)}")
    if cases < 1:
        raise UsageError("--cases must be >= 1")
    if not 0.0 <= difficulty <= 1.0:
        raise UsageError("--difficulty must be in [0, 1]")
    if not 0.0 < annotation_fraction <= 1.0:
        raise UsageError("--annotation-fraction must be in (0, 1]")
    out = Path(out)
    writer = CohortWriter(out)
    extra = writer.extra_dir()
    infos: dict[int, dict[str, Any]] = {}
    todo = []
    for idx in range(cases):
        cid = f"phantom_{idx:04d}"
        js = extra / f"{cid}_case.json"
        if js.is_file() and writer.has_case(cid):
            data = json.loads(js.read_text(encoding="utf-8"))
            pp = data.get("params", {})
            if (pp.get("seed"), pp.get("difficulty"), pp.get("preset"), pp.get("annotation_fraction")) == (
                seed,
                float(np.clip(difficulty, 0, 1)),
                preset,
                float(annotation_fraction),
            ) and data.get("region") == case_region(region, idx):
                infos[idx] = data
                continue
        todo.append(idx)
    done = len(infos)
    if progress:
        progress(done, cases)
    jobs = [(str(out), seed, idx, region, difficulty, preset, annotation_fraction) for idx in todo]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            for idx, info in zip(todo, ex.map(_worker, jobs), strict=True):
                infos[idx] = info
                done += 1
                if progress:
                    progress(done, cases)
    else:
        for idx, job in zip(todo, jobs, strict=True):
            infos[idx] = _worker(job)
            done += 1
            if progress:
                progress(done, cases)
    return _finish(writer, infos, seed, region, difficulty, preset, annotation_fraction)


def _finish(
    writer: CohortWriter,
    infos: dict[int, dict[str, Any]],
    seed: int,
    region: str,
    difficulty: float,
    preset: str,
    annotation_fraction: float,
) -> DatasetInfo:
    anns: list[Annotation] = []
    ignore_rows: list[IgnorePoint] = []
    extra = writer.extra_dir()
    full_rows = []
    for idx in sorted(infos):
        info = infos[idx]
        cid = info["case_id"]
        for a in info["annotations"]:
            anns.append(
                Annotation(
                    cid, a["node_id"], tuple(a["xyz"]), a["sad"], a["lad"], info["region"], a["node_id"]
                )
            )
        for r in info["non_gt_nodes"]:
            ignore_rows.append(IgnorePoint(cid, tuple(r["xyz"]), r["radius_mm"]))
        for r in info["all_enlarged"]:
            full_rows.append(record_annotation(cid, r))
    # full truth: every non-GT node in ignore.csv columns; every enlarged node in annotation columns
    write_ignore(extra / "ignore_non_gt.csv", ignore_rows)
    from lymphcad.cohort import write_annotations

    write_annotations(extra / "full_annotations.csv", full_rows)
    cases = [infos[i]["case_id"] for i in sorted(infos)]
    dinfo = DatasetInfo(
        name=f"lymphcad-phantom-{preset}-{region}-d{difficulty:g}-s{seed}",
        description=(
            f"Synthetic portal-venous CT phantom (lymphcad.phantom {GENERATOR_VERSION}), preset {preset}, region {region}, "
            f"difficulty {difficulty:g}, annotation_fraction {annotation_fraction:g}. Phantom numbers are never TCIA results. "
            "Full truth (all nodes incl. sub-10 mm and unannotated ones, tissue maps, parameters) is under extra/."
        ),
        cases=cases,
        case_regions={infos[i]["case_id"]: infos[i]["region"] for i in infos},
        license=SYNTHETIC_LICENSE,
        citation=[
            f"lymphcad synthetic CT lymph-node phantom v{GENERATOR_VERSION} (docs/phantom.md), seed {seed}"
        ],
        source=f"synthetic phantom v1, seed {seed}",
        content_hashes={infos[i]["case_id"]: infos[i]["content_hash"] for i in infos},
        extra={
            "generator": {
                "version": GENERATOR_VERSION,
                "seed": seed,
                "difficulty": difficulty,
                "preset": preset,
                "region": region,
                "annotation_fraction": annotation_fraction,
            }
        },
    )
    return writer.finish(dinfo, anns)
