"""Lymph-node insertion into a real CT background, where nodes live (issue 12).

1. The background is analysed once (:func:`analyse_background`): a tissue map, landmarks (spine, trachea,
   carina, aorta, bifurcation) and station masks (:mod:`lymphcad.phantom.background`), the background's
   noise power spectrum (:class:`lymphcad.phantom.formation.NoiseModel`) and the depth of node-hosting
   tissue (visceral fat and thin septa: the room a node can take).
2. Per node (:func:`insert_nodes`): a station of the chosen region by weight, a :class:`NodeSpec` from the
   node model (:mod:`lymphcad.phantom.nodemodel`), a centre inside the station where the hosting tissue is
   as deep as the node's short half-axis (so the node touches what bounds the fat: vessels, airway,
   oesophagus, organs), the short axis along the depth gradient. The node's interior (coverage ≥ 0.5)
   must lie in visceral fat or thin soft tissue only, ≥ 60 % fat — it displaces fat, never overlaps lumen,
   bone, lung, airway, gas, oesophagus or organ parenchyma — and keeps a voxel from other nodes.
3. Each node is written by its own image-formation model (:mod:`lymphcad.phantom.formation`: additive
   contrast or alpha-blended replacement with re-synthesised noise).
4. Ground truth follows the collection's per-region rule (:mod:`lymphcad.phantom.truthrule`): positives in
   labels/ and annotations.csv, the ignore band in ignore.csv, smaller nodes only in extra/.

The cohort carries the background's licence and citations in dataset.json.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad import atomic
from lymphcad.citations import TCIA_CITATION
from lymphcad.cohort import Annotation, CohortWriter, DatasetInfo, IgnorePoint, write_ignore
from lymphcad.errors import InputError, UsageError
from lymphcad.geometry import CTVolume, hu_to_int16, reorient_to_lps
from lymphcad.io.nifti import write_nifti
from lymphcad.io.reader import read_ct_input
from lymphcad.phantom.background import (
    CLASS_NAMES,
    FORBIDDEN,
    NODE_HOST,
    STATIONS,
    Landmarks,
    StationSpec,
    Tissue,
    background_region,
    classify_background,
    find_landmarks,
    smooth_hu,
    station_masks,
)
from lymphcad.phantom.formation import NoiseModel, form_additive, form_blend, local_noise_sd
from lymphcad.phantom.nodemodel import (
    Formation,
    NodeGeometry,
    NodeSpec,
    node_geometry,
    random_rotation,
    render_node,
    sample_node_spec,
)
from lymphcad.phantom.nodes import measure_mask
from lymphcad.phantom.truthrule import TruthClass, ignore_radius_mm, rule_for

__all__ = [
    "CLASS_NAMES",
    "FORBIDDEN",
    "BackgroundAnalysis",
    "CaseSummary",
    "InsertedNode",
    "InsertionResult",
    "PlacementError",
    "analyse_background",
    "classify_background",
    "insert_cohort",
    "insert_nodes",
    "parse_formations",
]

REGION_CHOICES: Final = ("mediastinal", "abdominal", "auto")
FORMATION_CHOICES: Final = ("additive", "blend", "both")
#: positions tried for one drawn node before another is drawn, and drawn nodes per requested node
POSITION_TRIES: Final = 30
DRAWS_PER_NODE: Final = 8
#: consecutive drawn nodes that found no room before the stations count as full
MAX_FAILED_DRAWS: Final = 24
#: the share of a node's interior that must be visceral fat (the rest: thin septa / vessel walls)
MIN_FAT_SHARE: Final = 0.6
#: a centre's hosting-tissue depth may fall short of the short half-axis by this much (mm): partial volume
DEPTH_TOL_MM: Final = 1.0
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
    "volume_mm3",
    "region",
    "station",
    "truth",
    "enlarged",
    "annotated",
    "internal_type",
    "formation",
    "drawn_sad_mm",
    "aspect",
    "cc_ratio",
    "lobulation",
    "irregularity",
    "members",
    "target_hu",
    "edge_mm",
    "texture_sd",
    "texture_mm",
    "mean_hu",
    "noise_sd_local",
    "nearest",
    "fat_share",
)


class PlacementError(InputError):
    """The background has no room for the asked minimum number of nodes."""


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

CMB_CRC_CITATION: Final = (
    "Cancer Moonshot Biobank - Colorectal Cancer Collection (CMB-CRC) [Data set]. The Cancer Imaging Archive. "
    "https://doi.org/10.7937/djg7-gz87"
)
ACRIN_FLT_BREAST_CITATION: Final = (
    "Kinahan P, Perlman D, Wahl R, et al. (2017). Data from ACRIN-FLT-Breast [Data set]. The Cancer Imaging "
    "Archive. https://doi.org/10.7937/K9/TCIA.2017.ol20zmxg"
)

#: licence and citations by a path fragment of ../shared/data/real-ct (see its SOURCES.md)
BACKGROUND_SOURCES: Final = (
    (
        "cmb-crc",
        "CC BY 4.0 (TCIA CMB-CRC; https://creativecommons.org/licenses/by/4.0/)",
        [CMB_CRC_CITATION, TCIA_CITATION],
    ),
    (
        "acrin-flt-breast",
        "CC BY 3.0 (TCIA ACRIN-FLT-Breast; https://creativecommons.org/licenses/by/3.0/)",
        [ACRIN_FLT_BREAST_CITATION, TCIA_CITATION],
    ),
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


def parse_formations(formation: str) -> tuple[Formation, ...]:
    """``additive`` | ``blend`` | ``both`` → the image-formation models a node is drawn from."""
    if formation == "both":
        return (Formation.ADDITIVE, Formation.BLEND)
    try:
        return (Formation(formation),)
    except ValueError:
        raise UsageError(
            f"--formation must be one of {', '.join(FORMATION_CHOICES)} (got {formation!r})"
        ) from None


# -- the background, analysed once ---------------------------------------------------------------
@dataclass(frozen=True)
class BackgroundAnalysis:
    """Everything insertion needs from a background, computed once and shared by its cases."""

    tissue: NDArray[np.uint8]
    landmarks: Landmarks
    stations: dict[str, NDArray[np.bool_]]
    region: str  # the background's own region (``auto`` resolves to it)
    noise: NoiseModel
    depth_mm: NDArray[np.float32]  # distance (mm) to the nearest voxel that cannot host a node
    hu_smooth: NDArray[np.float32]  # the background smoothed by ~3 mm (the additive model's reference)

    def station_voxels(self, name: str) -> NDArray[np.intp]:
        """(N, 3) voxel indices of a station."""
        return np.argwhere(self.stations[name])


def canonical_volume(vol: CTVolume) -> CTVolume:
    """The background with its array axes along +z, +y, +x of LPS (axis flips/permutations only, no
    interpolation): landmarks and stations read directions from the array. Oblique grids are refused."""
    geom = vol.geometry
    if geom.is_oblique():
        raise InputError("oblique backgrounds are not supported for insertion")
    if np.allclose(geom.direction, np.eye(3)):
        return vol
    arr, g = reorient_to_lps(vol.array, geom)
    return CTVolume(arr, g)


def analyse_background(vol: CTVolume) -> BackgroundAnalysis:
    """Tissue map, landmarks, stations, noise spectrum and hosting depth of a background whose array axes
    run along +z, +y, +x of LPS (:func:`canonical_volume`; ``insert_cohort`` reorients the background)."""
    geom = vol.geometry
    if geom.is_oblique():
        raise InputError("oblique backgrounds are not supported for insertion")
    if not np.allclose(geom.direction, np.eye(3)):
        raise InputError("reorient the background first (lymphcad.phantom.insert.canonical_volume)")
    sp = geom.spacing_zyx
    dz, dy, dx = sp
    tis = classify_background(vol.array, sp)
    sm = smooth_hu(vol.array, sp)
    lm = find_landmarks(tis, sm, geom)
    stations = station_masks(tis, lm, geom)
    noise = NoiseModel.measure(vol.array, tis, sp)
    host = np.isin(tis, np.asarray(NODE_HOST, dtype=np.uint8))
    depth = np.zeros(tis.shape, np.float32)
    if stations:
        union = np.zeros(tis.shape, bool)
        for m in stations.values():
            union |= m
        zz, yy, xx = np.nonzero(union)
        pad = (round(40.0 / dz) + 1, round(40.0 / dy) + 1, round(40.0 / dx) + 1)
        box = tuple(
            slice(max(0, int(a.min()) - p), min(n, int(a.max()) + p + 1))
            for a, p, n in zip((zz, yy, xx), pad, tis.shape, strict=True)
        )
        hb = host[box].copy()
        # the volume's border cannot host a node either
        hb[0], hb[-1] = False, False
        depth[box] = ndimage.distance_transform_edt(hb, sampling=sp).astype(np.float32)
    # the additive model's reference: the local mean of node-hosting tissue only (a plain blur would mix in
    # the vessels and organs beside the node and leave their shadow inside it)
    sig = (max(0.5, 2.0 / dz), 3.0 / dy, 3.0 / dx)
    hf = host.astype(np.float32)
    num = ndimage.gaussian_filter(vol.array.astype(np.float32) * hf, sig)
    den = ndimage.gaussian_filter(hf, sig)
    plain = ndimage.gaussian_filter(vol.array.astype(np.float32), sig)
    smooth3 = np.asarray(np.where(den > 0.05, num / np.maximum(den, 1e-6), plain), np.float32)
    return BackgroundAnalysis(tis, lm, stations, background_region(tis, lm, geom), noise, depth, smooth3)


# -- records --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InsertedNode:
    """One inserted node: a row of extra/<case>_nodes.csv (world LPS mm; sizes measured RECIST-style)."""

    id: int
    gt_node_id: int  # 1..n for ground-truth (positive) nodes, 0 otherwise
    xyz: tuple[float, float, float]
    sad_mm: float
    lad_mm: float
    volume_mm3: float
    region: str
    station: str
    truth: TruthClass
    spec: NodeSpec
    mean_hu: float
    noise_sd_local: float
    nearest: str  # the commonest non-fat class around the node (what it touches)
    fat_share: float  # share of the node's interior that displaced visceral fat

    @property
    def positive(self) -> bool:
        return self.truth is TruthClass.POSITIVE

    def row(self, case_id: str) -> list[str]:
        """The node-table row (columns :data:`INSERT_NODE_COLUMNS`)."""
        sp = self.spec.to_row()
        return [
            case_id,
            str(self.id),
            str(self.gt_node_id),
            *(f"{v:.4f}" for v in self.xyz),
            f"{self.sad_mm:.3f}",
            f"{self.lad_mm:.3f}",
            f"{self.volume_mm3:.1f}",
            self.region,
            self.station,
            self.truth.value,
            str(int(self.positive)),
            str(int(self.positive)),
            sp["internal_type"],
            sp["formation"],
            sp["drawn_sad_mm"],
            sp["aspect"],
            sp["cc_ratio"],
            sp["lobulation"],
            sp["irregularity"],
            sp["members"],
            sp["target_hu"],
            sp["edge_mm"],
            sp["texture_sd"],
            sp["texture_mm"],
            f"{self.mean_hu:.1f}",
            f"{self.noise_sd_local:.2f}",
            self.nearest,
            f"{self.fat_share:.3f}",
        ]

    def annotation(self, case_id: str) -> Annotation:
        """The annotations.csv row of a ground-truth node (label_id = node_id = gt id)."""
        return Annotation(
            case_id,
            self.gt_node_id,
            self.xyz,
            round(self.sad_mm, 3),
            round(self.lad_mm, 3),
            self.region,
            self.gt_node_id,
        )

    def ignore_point(self, case_id: str) -> IgnorePoint:
        """An ignore.csv row covering the node."""
        return IgnorePoint(case_id, self.xyz, ignore_radius_mm(round(self.sad_mm, 3), round(self.lad_mm, 3)))


@dataclass(frozen=True)
class InsertionResult:
    """One case: the image, all-node instance map (ids = ``InsertedNode.id``), ground-truth labels and nodes."""

    image: NDArray[np.int16]
    all_nodes: NDArray[np.uint16]
    labels: NDArray[np.uint16]
    nodes: tuple[InsertedNode, ...]
    region: str
    requested: int

    @property
    def by_station(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.nodes:
            out[n.station] = out.get(n.station, 0) + 1
        return dict(sorted(out.items()))


@dataclass(frozen=True)
class CaseSummary:
    """What one case got: placed, annotated (positive), ignored and negative nodes, per station."""

    case_id: str
    requested: int
    placed: int
    annotated: int
    ignored: int
    negative: int
    by_station: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        st = ", ".join(f"{k} {v}" for k, v in self.by_station.items()) or "none"
        return (
            f"{self.case_id}: placed {self.placed} of {self.requested} nodes, {self.annotated} annotated "
            f"(ground truth), {self.ignored} ignored, {self.negative} negative; stations: {st}"
        )


# -- placement ------------------------------------------------------------------------------------
def _stations_for(an: BackgroundAnalysis, region: str) -> list[StationSpec]:
    reg = an.region if region == "auto" else region
    return [s for s in STATIONS if s.region == reg and s.name in an.stations]


def _orientation(
    depth: NDArray[np.float32],
    k: int,
    j: int,
    i: int,
    sp: tuple[float, float, float],
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Short axis along the hosting-depth gradient (towards the nearest wall), long axis near cranio-caudal."""
    g = np.zeros(3)  # (x, y, z)
    idx = (k, j, i)
    for a_w, a_arr in ((0, 2), (1, 1), (2, 0)):
        lo = list(idx)
        hi = list(idx)
        lo[a_arr] = max(0, idx[a_arr] - 1)
        hi[a_arr] = min(depth.shape[a_arr] - 1, idx[a_arr] + 1)
        if hi[a_arr] > lo[a_arr]:
            g[a_w] = float(depth[tuple(hi)] - depth[tuple(lo)]) / ((hi[a_arr] - lo[a_arr]) * sp[a_arr])
    if np.linalg.norm(g) < 1e-3:
        return random_rotation(rng)
    d = g / np.linalg.norm(g)
    t = np.array([0.0, 0.0, 1.0]) + rng.normal(0, 0.3, 3)
    t = t - (t @ d) * d
    if np.linalg.norm(t) < 1e-3:
        return random_rotation(rng)
    t /= np.linalg.norm(t)
    third = np.cross(d, t)
    return np.stack([d, third, t], axis=1)


def insert_nodes(
    vol: CTVolume,
    n_nodes: int,
    rng: np.random.Generator,
    *,
    region: str = "auto",
    formations: tuple[Formation, ...] = (Formation.ADDITIVE, Formation.BLEND),
    analysis: BackgroundAnalysis | None = None,
    p_positive: float = 0.8,
) -> InsertionResult:
    """Insert up to ``n_nodes`` nodes at the stations of ``region`` (``auto``: the background's own region).

    Returns fewer nodes when the stations have no more room; :func:`insert_cohort` turns a shortfall below the
    asked minimum into a :class:`PlacementError`.
    """
    if region not in REGION_CHOICES:
        raise UsageError(f"--region must be one of {', '.join(REGION_CHOICES)} (got {region!r})")
    an = analyse_background(vol) if analysis is None else analysis
    geom = vol.geometry
    sp = geom.spacing_zyx
    shape: tuple[int, int, int] = (int(vol.array.shape[0]), int(vol.array.shape[1]), int(vol.array.shape[2]))
    sts = _stations_for(an, region)
    reg = an.region if region == "auto" else region
    occupied = np.zeros(shape, bool)
    all_nodes = np.zeros(shape, np.uint16)
    placed: list[tuple[NodeSpec, Any, StationSpec, NDArray[np.bool_], float]] = []
    if sts:
        weights = np.array([s.weight for s in sts], dtype=float)
        weights /= weights.sum()
        vox = {s.name: an.station_voxels(s.name) for s in sts}
        depth_at = {s.name: an.depth_mm[tuple(vox[s.name].T)] for s in sts}
        draws = failed = 0
        while (
            len(placed) < n_nodes and draws < DRAWS_PER_NODE * max(1, n_nodes) and failed < MAX_FAILED_DRAWS
        ):
            draws += 1
            st = sts[int(rng.choice(len(sts), p=weights))]
            spec = sample_node_spec(rng, st.region, formations, p_positive=p_positive)
            got = _place_one(an, spec, st, vox[st.name], depth_at[st.name], shape, sp, occupied, rng)
            if got is None:
                failed += 1
                continue
            failed = 0
            rendered, inside, fat_share = got
            nid = len(placed) + 1
            all_nodes[rendered.box][inside] = nid
            occupied[rendered.box] |= inside
            placed.append((spec, rendered, st, inside, fat_share))
    # image formation, node by node, each by its own model
    hu0 = vol.array.astype(np.float32)
    out = hu0.copy()
    noise_sd: list[float] = []
    for spec, rendered, _, inside, _ in placed:
        box = rendered.box
        sigma = local_noise_sd(vol.array, an.tissue, box, inside, an.noise)
        noise_sd.append(float(np.mean(sigma[inside.any(axis=(1, 2))])))
        if spec.formation is Formation.ADDITIVE:
            out[box] = form_additive(
                out[box], an.hu_smooth[box], rendered.coverage, rendered.content, spec.edge_mm, sp
            )
        else:
            nrng = np.random.default_rng(spec.seed + 2)
            cs = rendered.coverage.shape
            noise = an.noise.synthesize(nrng, (int(cs[0]), int(cs[1]), int(cs[2])), sp)
            out[box] = form_blend(
                out[box], rendered.coverage, rendered.content, spec.edge_mm, sp, noise, sigma
            )
    image = np.array(vol.array, dtype=np.int16, copy=True)
    changed = out != hu0
    image[changed] = hu_to_int16(np.clip(out[changed], -1024, 3071))
    # measure, classify by the region's rule, number the ground truth
    nodes: list[InsertedNode] = []
    labels = np.zeros(shape, np.uint16)
    n_gt = 0
    for idx, (spec, rendered, st, inside, fat_share) in enumerate(placed, start=1):
        box = rendered.box
        meas = measure_mask(inside, sp)
        off = np.array([s.start for s in box], dtype=float)
        cz, cy, cx = np.asarray(meas["centroid_zyx"]) + off
        ci = tuple(round(v) for v in (cz, cy, cx))
        if all_nodes[ci] != idx:  # centroid outside a bean-shaped mask: nearest voxel inside
            zz, yy, xx = np.nonzero(inside)
            q = int(np.argmin((zz + off[0] - cz) ** 2 + (yy + off[1] - cy) ** 2 + (xx + off[2] - cx) ** 2))
            cz, cy, cx = zz[q] + off[0], yy[q] + off[1], xx[q] + off[2]
        truth = rule_for(st.region).classify(float(meas["sad_mm"]))
        gt = 0
        if truth is TruthClass.POSITIVE:
            n_gt += 1
            gt = n_gt
            labels[box][inside] = gt
        ring = ndimage.binary_dilation(inside, iterations=2) & ~inside
        around = an.tissue[box][ring]
        around = around[(around != Tissue.FAT_VISC) & (around != Tissue.SOFT_THIN)]
        nearest = CLASS_NAMES[int(np.bincount(around).argmax())].split(" ")[0] if around.size else "fat"
        w = geom.zyx_to_world([cz, cy, cx])
        nodes.append(
            InsertedNode(
                idx,
                gt,
                (float(w[0]), float(w[1]), float(w[2])),
                float(meas["sad_mm"]),
                float(meas["lad_mm"]),
                float(meas["volume_mm3"]),
                st.region,
                st.name,
                truth,
                spec,
                float(image[box][inside].mean()),
                noise_sd[idx - 1],
                nearest,
                fat_share,
            )
        )
    return InsertionResult(image, all_nodes, labels, tuple(nodes), reg, n_nodes)


def _place_one(
    an: BackgroundAnalysis,
    spec: NodeSpec,
    st: StationSpec,
    vox: NDArray[np.intp],
    depth_at: NDArray[np.float32],
    shape: tuple[int, int, int],
    sp: tuple[float, float, float],
    occupied: NDArray[np.bool_],
    rng: np.random.Generator,
) -> tuple[Any, NDArray[np.bool_], float] | None:
    """Find a pose for one drawn node at a station; (rendered node, interior mask, fat share) or None."""
    need = 0.5 * spec.sad_mm - DEPTH_TOL_MM
    ok = np.flatnonzero(depth_at >= need)
    if ok.size == 0:
        return None
    # prefer snug poses (the node touches what bounds the fat), as nodes sit against vessels and airways
    slack = depth_at[ok] - need
    w = 1.0 / (1.0 + slack)
    w /= w.sum()
    host = np.zeros(256, bool)
    host[list(int(t) for t in NODE_HOST)] = True
    for _ in range(POSITION_TRIES):
        k, j, i = (int(v) for v in vox[ok[int(rng.choice(ok.size, p=w))]])
        rot = _orientation(an.depth_mm, k, j, i, sp, rng)
        centre = np.array([k * sp[0], j * sp[1], i * sp[2]]) + rng.uniform(-0.3, 0.3, 3) * np.asarray(sp)
        geo = node_geometry(spec, centre, rot)
        if not _precheck(geo, an.tissue, sp, host):
            continue
        rendered = render_node(spec, geo, shape, sp)
        if rendered is None:
            continue
        inside = rendered.coverage >= 0.5
        if inside.sum() < 4:
            continue
        box = rendered.box
        if any(b.start == 0 or b.stop == n for b, n in zip(box, shape, strict=True)):
            continue
        t = an.tissue[box][inside]
        if not host[t].all():
            continue
        fat_share = float((t == Tissue.FAT_VISC).mean())
        if fat_share < MIN_FAT_SHARE:
            continue
        if ndimage.binary_dilation(occupied[box], iterations=1)[inside].any():
            continue
        return rendered, inside, fat_share
    return None


def _precheck(
    geo: NodeGeometry, tissue: NDArray[np.uint8], sp: tuple[float, float, float], host: NDArray[np.bool_]
) -> bool:
    """Cheap rejection before rendering: each member's centre and 14 points at 80 % of its axes must be
    node-hosting tissue."""
    pts = [np.zeros(3)]
    for ax in range(3):
        for sg in (-1.0, 1.0):
            e = np.zeros(3)
            e[ax] = sg * 0.8
            pts.append(e)
    for sx in (-1, 1):
        for sy in (-1, 1):
            for sz in (-1, 1):
                pts.append(0.46 * np.array([sx, sy, sz], dtype=float))
    unit = np.asarray(pts)
    c = np.asarray(geo.centre_zyx_mm)
    for off, half in geo.members:
        local = unit * np.asarray(half) + np.asarray(off)  # (x, y, z) in the node frame
        w = local @ geo.rot.T  # world-axis offsets (x, y, z) in mm
        idx = np.round((c[None, :] + w[:, ::-1]) / np.asarray(sp)).astype(int)
        if np.any(idx < 0) or np.any(idx >= np.asarray(tissue.shape)):
            return False
        if not host[tissue[idx[:, 0], idx[:, 1], idx[:, 2]]].all():
            return False
    return True


# -- cohort ---------------------------------------------------------------------------------------
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
    with table.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            truth = TruthClass(row["truth"])
            counts[truth] += 1
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
) -> DatasetInfo:
    """Write a cohort of ``cases`` copies of a real CT, each with its own inserted nodes.

    Each case draws its node count uniformly in ``nodes`` = (MIN, MAX) and fails the whole run with a
    :class:`PlacementError` (nothing half-written is left as a finished cohort: dataset.json is written last)
    when fewer than MIN nodes fit. ``on_case`` receives each case's :class:`CaseSummary`. ``evaluation``
    marks a test cohort (benchmarks only): then a holdout background may take nodes; a training cohort never.
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
    }
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
        res = insert_nodes(vol, n, rng, region=region, formations=forms, analysis=an, p_positive=p_positive)
        summary = CaseSummary(
            cid,
            n,
            len(res.nodes),
            sum(x.truth is TruthClass.POSITIVE for x in res.nodes),
            sum(x.truth is TruthClass.IGNORE for x in res.nodes),
            sum(x.truth is TruthClass.NEGATIVE for x in res.nodes),
            res.by_station,
        )
        if len(res.nodes) < nodes[0]:
            raise PlacementError(
                f"case {c}: placed only {len(res.nodes)} of the minimum {nodes[0]} nodes at the {reg} stations "
                f"({', '.join(s.name for s in sts) or 'none'}): no more room in node-hosting fat; "
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
                "truth_rule": {"positive_min_mm": rule.positive_min_mm, "ignore_min_mm": rule.ignore_min_mm},
            }
        },
    )
    return writer.finish(info, anns, ignore)
