"""Lymph-node insertion into a real CT background (spec §6 "Reuse for hybrid data").

1. A tissue classifier for the background (HU + morphology): body, lung, gas, bone, enhanced vessel
   lumen / enhancing organ, soft tissue (organ parenchyma, muscle, bowel), subcutaneous and visceral fat.
2. Placement only in visceral (mediastinal / retroperitoneal / mesenteric) fat within a few mm of an
   enhanced vessel or an airway, never touching lung, gas, bone, vessel lumen or the volume border;
   every voxel of the node's mask (coverage ≥ 0.5) must be fat, so a node may abut an organ, bowel or muscle
   (its partial-volume rim reaches them) but never overlaps them.
3. Rendering as an additive contrast: (node HU + node texture − smoothed local background) × sub-voxel
   coverage (in-plane coverage averaged over the slice thickness = the slice profile), blurred by the
   in-plane PSF. The background's own noise is kept; no extra noise is added.

The cohort carries the background's licence and citations in dataset.json.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad import atomic
from lymphcad.citations import TCIA_CITATION
from lymphcad.cohort import Annotation, CohortWriter, DatasetInfo, voxel_hash
from lymphcad.errors import InputError, UsageError
from lymphcad.geometry import CTVolume, hu_to_int16
from lymphcad.io.nifti import write_nifti
from lymphcad.phantom.nodes import (
    _perturb,
    measure_mask,
    record_annotation,
    sample_enlarged_sad,
    sample_ratio,
)

# background tissue classes
OUTSIDE: Final = 0
FAT_VISC: Final = 1
FAT_SUBCUT: Final = 2
SOFT: Final = 3
VESSEL: Final = 4
BONE: Final = 5
LUNG: Final = 6
GAS: Final = 7
CLASS_NAMES: Final = {
    0: "outside",
    1: "fat_visceral",
    2: "fat_subcutaneous",
    3: "soft_tissue",
    4: "vessel_or_enhancing",
    5: "bone",
    6: "lung",
    7: "gas",
}
FORBIDDEN: Final = (OUTSIDE, VESSEL, BONE, LUNG, GAS)
#: ground truth = enlarged nodes, measured short axis ≥ 10 mm (as the phantom and the collection define it);
#: smaller inserted nodes stay in the image as unannotated nodes, listed only in the full truth under extra/
ENLARGED_SAD_MM: Final = 10.0
#: positions tried for one drawn node size before another size is drawn
SIZE_TRIES: Final = 40
#: columns of extra/<case>_nodes.csv (the full truth, read by the detector's ``--truth extra``)
INSERT_NODE_COLUMNS: Final = (
    "case_id",
    "id",
    "gt_node_id",
    "coordX",
    "coordY",
    "coordZ",
    "short_axis_mm",
    "long_axis_mm",
    "region",
    "enlarged",
    "annotated",
    "internal_type",
    "mean_hu",
    "gap_mm",
    "drawn_sad_mm",
)

CRLM_CITATION: Final = (
    "Simpson, A. L., Peoples, J., Creasy, J. M., Fichtinger, G., Gangai, N., Lasso, A., Keshava Murthy, K. N., Shia, J., "
    "D'Angelica, M. I., & Do, R. K. G. (2023). Preoperative CT and Survival Data for Patients Undergoing Resection of "
    "Colorectal Liver Metastases (Colorectal-Liver-Metastases) (Version 2) [Data set]. The Cancer Imaging Archive. "
    "https://doi.org/10.7937/QXK2-QG03"
)
LIDC_CITATION: Final = (
    "Armato SG III, McLennan G, Bidaut L, et al. Data from LIDC-IDRI [Data set]. The Cancer Imaging Archive. "
    "https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX"
)

#: licence and citations by a path fragment of ../shared/data/real-ct (see its SOURCES.md)
BACKGROUND_SOURCES: Final = (
    (
        "crlm-ct",
        "CC BY 4.0 (TCIA Colorectal-Liver-Metastases; https://creativecommons.org/licenses/by/4.0/)",
        [CRLM_CITATION, TCIA_CITATION],
    ),
    (
        "totalsegmentator",
        "Apache-2.0 (wasserth/TotalSegmentator test data, repository licence)",
        [
            "Wasserthal J, Breit H-C, Meyer MT, et al. TotalSegmentator: robust segmentation of 104 anatomic structures in CT images. "
            "Radiol Artif Intell 2023;5(5):e230024. doi:10.1148/ryai.230024 (test data from github.com/wasserth/TotalSegmentator)"
        ],
    ),
    (
        "mirp-lidc-idri",
        "CC BY 3.0 (TCIA LIDC-IDRI, via oncoray/mirp test data)",
        [LIDC_CITATION, TCIA_CITATION],
    ),
    (
        "lungmask",
        "Apache-2.0 repository; pixel data from TCIA LIDC-IDRI (CC BY 3.0)",
        [LIDC_CITATION, TCIA_CITATION],
    ),
    (
        "dicom-numpy",
        "MIT by inclusion (innolitics/dicom-numpy test data; origin undocumented)",
        ["innolitics/dicom-numpy test data"],
    ),
    ("dcmqi", "BSD-3-Clause (QIICR/dcmqi test data; origin undocumented)", ["QIICR/dcmqi test data"]),
)


def background_source(path: Path) -> tuple[str, list[str]]:
    """Licence and citations of a background, from its location under shared/data/real-ct."""
    text = str(path.resolve())
    for key, lic, cites in BACKGROUND_SOURCES:
        if key in text:
            return lic, list(cites)
    return "unknown (see the background's own licence)", [f"background CT {path.name}"]


# -- tissue classifier ----------------------------------------------------------------------------
def classify_background(hu: NDArray[Any], spacing_zyx: tuple[float, float, float]) -> NDArray[np.uint8]:
    """Tissue classes of a real CT (z, y, x) by HU and morphology (see module docstring)."""
    a = hu.astype(np.float32)
    dz, dy, dx = spacing_zyx
    sm = ndimage.gaussian_filter(a, (0.6 / dz * 1.0, 1.0 / dy, 1.0 / dx))  # denoise ~1 mm
    # body: largest connected component above −400 HU, holes filled per slice
    body = sm > -400
    lab, n = ndimage.label(body)
    if n == 0:
        return np.zeros(a.shape, np.uint8)
    sizes = ndimage.sum_labels(body, lab, index=np.arange(1, n + 1))
    body = lab == (int(np.argmax(sizes)) + 1)
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    out = np.full(a.shape, SOFT, np.uint8)
    out[~body] = OUTSIDE
    air = body & (sm < -400)
    lab, n = ndimage.label(air)
    if n:
        sizes = ndimage.sum_labels(air, lab, index=np.arange(1, n + 1)) * dz * dy * dx
        big = np.zeros(n + 1, bool)
        big[1:] = sizes > 100_000  # > 100 cm³: lung
        lung = big[lab]
        lung = ndimage.binary_dilation(lung, iterations=1) & (sm < -200) | lung
        out[lung & body] = LUNG
        out[air & ~lung] = GAS
    bone = body & (sm > 300)
    bone = ndimage.binary_dilation(bone, iterations=1)
    vessel = body & (sm > 125) & ~bone
    fat = body & (sm > -220) & (sm < -35)
    out[vessel] = VESSEL
    out[bone & body] = BONE
    out[fat] = FAT_VISC
    # subcutaneous fat: fat components (per slice) touching the skin band
    for k in range(a.shape[0]):
        bk = body[k]
        if not bk.any():
            continue
        skin = bk & ~ndimage.binary_erosion(bk, iterations=max(1, round(4.0 / dx)))
        fk = out[k] == FAT_VISC
        lab2, n2 = ndimage.label(fk | skin)
        if n2 == 0:
            continue
        touch = np.unique(lab2[skin])
        touch = touch[touch > 0]
        sub = np.isin(lab2, touch) & fk
        out[k][sub] = FAT_SUBCUT
    return out


def estimate_noise(hu: NDArray[Any], tissue: NDArray[np.uint8]) -> float:
    """Noise SD (HU) from a high-pass residual in eroded fat (robust MAD)."""
    a = hu.astype(np.float32)
    res = a - ndimage.uniform_filter(a, (1, 3, 3))
    m = ndimage.binary_erosion((tissue == FAT_VISC) | (tissue == FAT_SUBCUT), iterations=2)
    vals = res[m]
    if vals.size < 100:
        vals = res[tissue == SOFT]
    if vals.size < 10:
        return 20.0
    mad = float(np.median(np.abs(vals - np.median(vals))))
    return float(1.4826 * mad / np.sqrt(1 - 1 / 9.0))  # residual after a 3×3 mean has variance σ²(1 − 1/9)


# -- rendering ------------------------------------------------------------------------------------
def node_coverage(
    shape: tuple[int, int, int],
    spacing_zyx: tuple[float, float, float],
    centre_zyx_mm: NDArray[np.float64],
    half_axes: tuple[float, float, float],
    rot: NDArray[np.float64],
    perturb: Any,
    sub_z: int = 5,
) -> tuple[tuple[slice, slice, slice], NDArray[np.float32]]:
    """Sub-voxel coverage of a node on an anisotropic grid: in-plane coverage averaged over the slice box."""
    dz, dy, dx = spacing_zyx
    reach = np.abs(rot) @ np.asarray(half_axes) * 1.3 + 2 * max(dx, dy)
    c = np.asarray(centre_zyx_mm)  # (z, y, x) in grid mm (index × spacing)
    lo = [
        int(np.floor((c[0] - reach[2]) / dz)) - 1,
        int(np.floor((c[1] - reach[1]) / dy)) - 1,
        int(np.floor((c[2] - reach[0]) / dx)) - 1,
    ]
    hi = [
        int(np.ceil((c[0] + reach[2]) / dz)) + 2,
        int(np.ceil((c[1] + reach[1]) / dy)) + 2,
        int(np.ceil((c[2] + reach[0]) / dx)) + 2,
    ]
    lo = [max(0, v) for v in lo]
    hi = [min(s, v) for s, v in zip(shape, hi, strict=True)]
    sl = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    z = (np.arange(lo[0], hi[0]) * dz)[:, None, None, None]
    y = (np.arange(lo[1], hi[1]) * dy)[None, :, None, None]
    x = (np.arange(lo[2], hi[2]) * dx)[None, None, :, None]
    off = ((np.arange(sub_z) + 0.5) / sub_z - 0.5) * dz
    zz = z + off[None, None, None, :]
    px, py, pz = x - c[2], y - c[1], zz - c[0]
    ax = np.asarray(half_axes)
    u = px * rot[0, 0] + py * rot[1, 0] + pz * rot[2, 0]
    v = px * rot[0, 1] + py * rot[1, 1] + pz * rot[2, 1]
    w = px * rot[0, 2] + py * rot[1, 2] + pz * rot[2, 2]
    q = np.sqrt((u / ax[0]) ** 2 + (v / ax[1]) ** 2 + (w / ax[2]) ** 2) + 1e-6
    g = np.sqrt((u / ax[0] ** 2) ** 2 + (v / ax[1] ** 2) ** 2 + (w / ax[2] ** 2) ** 2) / q + 1e-6
    if perturb is not None:
        q = q / (1.0 + perturb(u / q / ax[0], v / q / ax[1], w / q / ax[2]))
    sdf = (q - 1.0) / g
    h = 0.5 * (dx + dy)
    cov = np.clip(0.5 - sdf / h, 0.0, 1.0).mean(axis=3)
    return sl, cov.astype(np.float32)


def _rot(rng: np.random.Generator) -> NDArray[np.float64]:
    a = rng.normal(0, 1, 3) * np.array([0.35, 0.35, 1.0])  # long axis roughly cranio-caudal
    a /= np.linalg.norm(a)
    helper = np.array([1.0, 0.0, 0.0])
    b = np.cross(a, helper)
    b /= np.linalg.norm(b)
    c = np.cross(a, b)
    th = rng.uniform(0, np.pi)
    b2, c2 = np.cos(th) * b + np.sin(th) * c, -np.sin(th) * b + np.cos(th) * c
    return np.stack([b2, c2, a], axis=1)  # columns: short, in-plane long, cranio-caudal (x, y, z frame)


def insert_nodes(
    vol: CTVolume,
    n_nodes: int,
    rng: np.random.Generator,
    *,
    tissue: NDArray[np.uint8] | None = None,
    psf_xy: float = 0.6,
    max_tries: int | None = None,
) -> tuple[NDArray[np.int16], NDArray[np.uint16], list[dict[str, Any]], NDArray[np.uint8]]:
    """Insert ``n_nodes`` nodes; returns (image, instance labels 1..N, node records, background tissue map)."""
    geom = vol.geometry
    if geom.is_oblique():
        raise InputError("oblique backgrounds are not supported for insertion")
    sp = geom.spacing_zyx
    dz, dy, dx = sp
    hu = vol.array.astype(np.float32)
    tis = classify_background(vol.array, sp) if tissue is None else tissue
    noise_sd = estimate_noise(vol.array, tis)
    vessel_like = (tis == VESSEL) | ((tis == GAS) & _mediastinal_air(tis))
    lab, nlab = ndimage.label(vessel_like)
    if nlab:  # only vessels/airways of some size (≥ 0.3 cm³) count as anchors
        vol_mm3 = ndimage.sum_labels(vessel_like, lab, index=np.arange(1, nlab + 1)) * dz * dy * dx
        keep = np.zeros(nlab + 1, bool)
        keep[1:] = vol_mm3 >= 300.0
        vessel_like = keep[lab]
    dist_vessel = ndimage.distance_transform_edt(~vessel_like, sampling=sp)
    fat = (tis == FAT_VISC) & _central(tis)
    shape = hu.shape
    labels = np.zeros(shape, np.uint16)
    contrast = np.zeros(shape, np.float32)
    covmap = np.zeros(shape, np.float32)
    records: list[dict[str, Any]] = []
    bg_smooth = ndimage.gaussian_filter(hu, (max(0.5, 2.0 / dz), 3.0 / dy, 3.0 / dx))
    cand = np.argwhere(fat & (dist_vessel < 12.0))
    if len(cand) == 0:
        cand = np.argwhere(fat)
    if len(cand) == 0:
        raise InputError("the background has no visceral fat to place nodes in")
    occupied = np.zeros(shape, bool)
    tries = 0
    max_tries = 250 * max(1, n_nodes) if max_tries is None else max_tries
    size: tuple[float, float, float] | None = None
    size_tries = 0
    while len(records) < n_nodes and tries < max_tries:
        tries += 1
        # a drawn size is kept over failed positions: redrawing at every failure would favour small nodes
        # (they fit anywhere) and bias the placed sizes below the sampler's distribution
        if size is None or size_tries >= SIZE_TRIES:
            sad0 = sample_enlarged_sad(rng) if rng.random() < 0.85 else float(rng.uniform(6.0, 10.0))
            ratio0 = sample_ratio(rng, True)
            size, size_tries = (sad0, ratio0, max(ratio0, float(rng.uniform(1.0, 2.0)))), 0
        size_tries += 1
        sad, ratio, cc = size
        half = (sad / 2, ratio * sad / 2, cc * sad / 2)
        k, j, i = cand[int(rng.integers(len(cand)))]
        # border margin: node must stay away from the volume edge
        margin = np.array([half[2] + 5.0, max(half) + 5.0, max(half) + 5.0])
        pos_mm = np.array([k * dz, j * dy, i * dx], dtype=float)
        if np.any(pos_mm < margin) or np.any(pos_mm > (np.array(shape) - 1) * np.array(sp) - margin):
            continue
        d0 = float(dist_vessel[k, j, i])
        if d0 < half[0] * 0.8 or d0 > half[0] + 8.0:  # beside a vessel/airway: gap 0–8 mm
            continue
        rot = _rot(rng)
        pert = _perturb(rng, 0.08, rng.random() < 0.2)
        sl, cov = node_coverage(shape, sp, pos_mm, half, rot, pert)
        inside = cov >= 0.5
        if inside.sum() < 4:
            continue
        t = tis[sl][inside]
        if np.isin(t, FORBIDDEN).any() or occupied[sl][inside].any():
            continue
        # abut soft tissue, never overlap it: non-fat voxels only in the partial-volume rim, at most 10 %
        rim = cov[inside] < 0.9
        if np.any((t != FAT_VISC) & ~rim) or (t == FAT_VISC).mean() < 0.9:
            continue
        if ndimage.binary_dilation(occupied[sl], iterations=1)[inside].any():
            continue  # keep inserted nodes apart
        target = float(rng.normal(60.0, 8.0))
        kind = "solid"
        tex = ndimage.gaussian_filter(
            rng.standard_normal(cov.shape).astype(np.float32), (max(0.3, 1.5 / dz), 1.5 / dy, 1.5 / dx)
        )
        tex *= np.float32(7.0 / (tex.std() + 1e-6))
        delta = (np.float32(target) + tex - bg_smooth[sl]) * cov
        if rng.random() < 0.1:  # necrotic core
            _, cov2 = node_coverage(shape, sp, pos_mm, tuple(h * 0.5 for h in half), rot, None)  # type: ignore[arg-type]
            if cov2.shape == cov.shape:
                delta += (np.float32(rng.uniform(10, 30)) - np.float32(target)) * cov2 * (cov > 0.9)
                kind = "necrotic"
        contrast[sl] += delta
        nid = len(records) + 1
        labels[sl][inside] = nid
        np.maximum(covmap[sl], cov, out=covmap[sl])
        occupied[sl] |= inside
        size = None
        records.append(
            {
                "id": nid,
                "zyx_mm": pos_mm.tolist(),
                "drawn_sad": sad,
                "target_hu": target,
                "internal": kind,
                "gap_mm": max(0.0, d0 - half[0]),
            }
        )
    # in-plane PSF of the node edge (the background's own blur is already in its pixels)
    contrast = ndimage.gaussian_filter(contrast, (0.0, psf_xy / dy, psf_xy / dx))
    out = np.array(vol.array, dtype=np.int16, copy=True)  # untouched outside the nodes' reach
    touched = np.abs(contrast) > 0.01
    out[touched] = hu_to_int16(np.clip(hu[touched] + contrast[touched], -1024, 3071))
    for r in records:
        m = labels == r["id"]
        meas = measure_mask(m, sp)
        cz, cy, cx = meas["centroid_zyx"]
        ci = tuple(round(v) for v in (cz, cy, cx))
        if labels[ci] != r["id"]:
            zz, yy, xx = np.nonzero(m)
            q = int(np.argmin((zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2))
            cz, cy, cx = float(zz[q]), float(yy[q]), float(xx[q])
        core = m & (covmap >= 0.99)
        r.update(
            {
                "xyz": geom.zyx_to_world([cz, cy, cx]).tolist(),
                "sad": meas["sad_mm"],
                "lad": meas["lad_mm"],
                "mean_hu": float(out[m].mean()),
                "noise_sd_background": noise_sd,
                "core_n": int(core.sum()),
                "core_mean_hu": float(out[core].mean()) if core.any() else None,
                "core_background_hu": float(hu[core].mean()) if core.any() else None,
                "region": "mediastinal" if _near_lung(tis, m) else "abdominal",
                # ground truth follows the measured short axis, as in the phantom (enlarged: ≥ 10 mm)
                "enlarged": bool(meas["sad_mm"] >= ENLARGED_SAD_MM),
            }
        )
    if len(records) < n_nodes:
        records.append(
            {"warning": f"placed {len(records)} of {n_nodes} nodes (no more room in plausible fat)"}
        )
    return out, labels, records, tis


def _ground_truth(
    labels: NDArray[np.uint16], records: list[dict[str, Any]]
) -> tuple[NDArray[np.uint16], list[dict[str, Any]]]:
    """Keep the enlarged nodes as ground truth, renumbered 1..n in placement order (ids stay consecutive).

    Sets each record's ``gt_node_id`` (0 for an unannotated small node) and returns the relabelled instance
    image and the ground-truth records carrying their new ids.
    """
    lut = np.zeros(max((int(r["id"]) for r in records), default=0) + 1, np.uint16)
    gt: list[dict[str, Any]] = []
    for r in records:
        r["gt_node_id"] = 0
        if r["enlarged"]:
            lut[r["id"]] = len(gt) + 1
            r["gt_node_id"] = len(gt) + 1
            gt.append({**r, "id": len(gt) + 1})
    return lut[labels], gt


def _write_node_table(path: Path, case_id: str, records: list[dict[str, Any]]) -> None:
    """The full truth of one insertion case: every inserted node, enlarged or not (formats.md §2 ``extra/``)."""
    atomic.write_csv(
        path,
        INSERT_NODE_COLUMNS,
        (
            [
                case_id,
                r["id"],
                r["gt_node_id"],
                *(f"{v:.3f}" for v in r["xyz"]),
                f"{r['sad']:.3f}",
                f"{r['lad']:.3f}",
                r["region"],
                int(r["enlarged"]),
                int(r["enlarged"]),
                r["internal"],
                f"{r['mean_hu']:.1f}",
                f"{r['gap_mm']:.2f}",
                f"{r['drawn_sad']:.3f}",
            ]
            for r in records
        ),
    )


def _central(tis: NDArray[np.uint8], frac: float = 0.62) -> NDArray[np.bool_]:
    """Per slice: inside an ellipse of ``frac`` × the body's half-extents (excludes flank and wall fat)."""
    out = np.zeros(tis.shape, bool)
    yy, xx = np.mgrid[0 : tis.shape[1], 0 : tis.shape[2]]
    for k in range(tis.shape[0]):
        b = tis[k] != OUTSIDE
        if b.sum() < 100:
            continue
        ys, xs = np.nonzero(b)
        cy, cx = 0.5 * (ys.min() + ys.max()), 0.5 * (xs.min() + xs.max())
        ay, ax = max(1.0, 0.5 * (ys.max() - ys.min())), max(1.0, 0.5 * (xs.max() - xs.min()))
        out[k] = ((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 < frac * frac
    return out


def _mediastinal_air(tis: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Gas inside the chest (trachea/bronchi): gas voxels in slices that contain lung."""
    has_lung = (tis == LUNG).any(axis=(1, 2))
    return np.broadcast_to(has_lung[:, None, None], tis.shape)


def _near_lung(tis: NDArray[np.uint8], m: NDArray[np.bool_]) -> bool:
    ks = np.nonzero(m.any(axis=(1, 2)))[0]
    return bool((tis[ks] == LUNG).sum() > 1000)


def insert_cohort(
    background: str | Path,
    out: str | Path,
    cases: int,
    nodes: tuple[int, int],
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetInfo:
    """Write a cohort of ``cases`` copies of a real CT, each with its own inserted nodes."""
    bg = Path(background)
    if "holdout" in bg.resolve().parts:
        raise UsageError("holdout backgrounds are for evaluation only: never insert into them")
    from lymphcad.io.reader import read_ct

    vol = read_ct(bg)
    lic, cites = background_source(bg)
    tis = classify_background(vol.array, vol.geometry.spacing_zyx)
    vessels = vol.array[tis == VESSEL]
    phase_note = ""
    if vessels.size and float(np.percentile(vessels, 99)) > 400:
        phase_note = " Background looks arterial (CTA-like, vessels > 400 HU): phase mismatch with portal-venous nodes."
    writer = CohortWriter(out)
    stem = "".join(
        ch if ch.isalnum() or ch in "_-." else "_"
        for ch in bg.name.replace(".nii.gz", "").replace(".nii", "")
    )
    anns: list[Annotation] = []
    hashes: dict[str, str] = {}
    regions: dict[str, str] = {}
    body = (tis != OUTSIDE).astype(np.uint8)
    extra = writer.extra_dir()
    for c in range(cases):
        cid = f"insert_{stem}_{c:04d}"
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), c, 0x1A5E]))
        n = int(rng.integers(nodes[0], nodes[1] + 1))
        img, labels, recs, _ = insert_nodes(vol, n, rng, tissue=tis)
        write_nifti(writer.image_path(cid), img, vol.geometry)
        good = [r for r in recs if "id" in r]
        gt_labels, gt_recs = _ground_truth(labels, good)
        write_nifti(writer.root / "labels" / f"{cid}.nii.gz", gt_labels, vol.geometry)
        write_nifti(writer.root / "eval_regions" / f"{cid}.nii.gz", body, vol.geometry)
        write_nifti(extra / f"{cid}_all_nodes.nii.gz", labels, vol.geometry)
        _write_node_table(extra / f"{cid}_nodes.csv", cid, good)
        reg = (
            "mediastinal" if sum(r["region"] == "mediastinal" for r in good) > len(good) / 2 else "abdominal"
        )
        regions[cid] = reg
        for r in gt_recs:
            anns.append(record_annotation(cid, r))
        hashes[cid] = voxel_hash(img)
        atomic.write_json(
            extra / f"{cid}_insert.json",
            {"background": str(bg), "seed": seed, "case_index": c, "nodes": recs},
        )
        if progress:
            progress(c + 1, cases)
    write_nifti(extra / f"{stem}_tissue.nii.gz", tis, vol.geometry)
    atomic.write_json(extra / "tissue_classes.json", {str(k): v for k, v in CLASS_NAMES.items()})
    info = DatasetInfo(
        name=f"lymphcad-insert-{stem}-s{seed}",
        description=(
            f"Synthetic lymph nodes inserted into the real CT {bg.name} (additive PSF-blurred contrast; the background's "
            f"own noise is kept). Inserted-node numbers are not TCIA results.{phase_note}"
        ),
        cases=sorted(regions),
        case_regions=regions,
        license=lic,
        citation=cites,
        source=f"real CT {bg.name} with synthetic nodes (lymphcad.phantom.insert), seed {seed}",
        content_hashes=hashes,
        extra={"insertion": {"background": str(bg), "seed": seed, "nodes": list(nodes)}},
    )
    return writer.finish(info, anns)
