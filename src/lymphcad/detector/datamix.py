"""Training data for real anatomy: a weighted mix of cohorts, compact cases, node masks and hard negatives.

The detector trained on the phantom alone learnt what *our insertion* looks like rather than what a lymph
node looks like (issue 12). This module feeds it what real anatomy offers:

* **A mix of sources** (:class:`MixSource`): phantom cohorts and cohorts of synthetic nodes inserted into
  every real CT background we may train on, each drawn with its own weight (a source with many cases does
  not drown the others).
* **Compact cases** (:class:`CompactCase`): each case on the plan grid, cropped to the body, HU stored as
  int16 and the node masks as uint8 coverage (0–255), so some hundred cases fit in a few GB; a patch is
  cut from a small block around its centre, then resampled once (``grid_sample``) with the augmentation.
* **Node masks**: the phantom and ``insert`` write every node's voxel mask (``extra/<case>_all_nodes``) and
  its class (``extra/<case>_nodes.csv``); the masks of positive nodes are the target of the auxiliary
  segmentation head, those of ignored nodes are excluded from it.
* **Hard negatives**: patches centred on node mimics — the phantom's own mimic list, soft tissue embedded
  in fat on real backgrounds (vessels in cross-section, oesophagus, crura, adrenals, bowel loops), and the
  current network's own false positives (:func:`mine_hard_negatives`, run every few epochs).

All randomness comes from the generator passed in, so an epoch is a pure function of its seed.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.cohort import Cohort
from lymphcad.detector.augment import augment_intensity
from lymphcad.detector.config import AugmentConfig, DetectConfig, TrainConfig
from lymphcad.detector.infer import normalised_padded, predict_dense
from lymphcad.detector.network import STRIDE, CenterNet3D
from lymphcad.detector.plan import Plan, PreparedVolume, reorient, resample_hu
from lymphcad.detector.sampling import (
    AIR_OFFSET,
    CaseSampler,
    NodeTruth,
    patch_points,
    patch_targets,
    random_displacement,
    random_matrix,
)
from lymphcad.detector.targets import decode
from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume, Geometry

#: body = plan-grid voxels above this HU (then closed and filled); cases are cropped to it plus a margin
BODY_HU: Final = -500.0
CROP_MARGIN_VOX: Final = 8
#: mimic prior: soft tissue or enhanced structure (HU range) within this many mm of fat, inside the body
MIMIC_HU: Final = (-20.0, 450.0)
FAT_HU: Final = (-200.0, -50.0)
MIMIC_NEAR_FAT_MM: Final = 4.0
MIMIC_POINTS: Final = 3000
#: a mined peak closer than max(this, 0.75 × its node's diameter) to a positive or ignored node is no negative
MINE_EXCLUDE_MM: Final = 12.0
#: a mined point is node-like (possibly a real, unannotated node of the background CT) when the median HU
#: within NODE_LIKE_CORE_MM is soft tissue and at least NODE_LIKE_FAT_SHARE of the shell NODE_LIKE_SHELL_MM
#: around it is fat
NODE_LIKE_CORE_MM: Final = 4.0
NODE_LIKE_SHELL_MM: Final = (6.0, 10.0)
NODE_LIKE_CORE_HU: Final = (-10.0, 110.0)
NODE_LIKE_FAT_HU: Final = (-200.0, -30.0)
NODE_LIKE_FAT_SHARE: Final = 0.3
DIAMETER_DEFAULT_MM: Final = 12.0


@dataclass(frozen=True)
class MixSource:
    """One cohort of the training mix.

    ``kind`` is "phantom" or "insertion"; ``background`` names the real CT an insertion cohort was built
    on (cases of one background share its anatomy, so mined negatives are shared between them).
    """

    name: str
    root: Path
    kind: str
    weight: float = 1.0
    background: str | None = None
    cases: tuple[str, ...] | None = None


@dataclass
class CompactCase:
    """One training case on the (cropped) plan grid; see the module docstring."""

    case_id: str
    source: str
    kind: str  # the source's kind: "phantom" or "insertion"
    group: str  # cases of one group share anatomy (one real background, or the case itself)
    geometry: Geometry
    hu: torch.Tensor  # (Z, Y, X) int16
    pos_cov: torch.Tensor | None  # (Z, Y, X) uint8, coverage × 255 of positive-node masks
    ign_cov: torch.Tensor | None  # (Z, Y, X) uint8, coverage × 255 of ignored-node masks
    nodes_zyx: NDArray[np.float64]
    diameters_mm: NDArray[np.float64]
    ignore_zyx: NDArray[np.float64]
    ignore_radius_mm: NDArray[np.float64]
    mimic_zyx: NDArray[np.float64]  # static hard-negative prior
    mined_zyx: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 3)))

    @property
    def hu_float(self) -> torch.Tensor:
        """HU as float32 (for inference on the whole case)."""
        return self.hu.to(torch.float32)


# -- truth and masks ----------------------------------------------------------------------------------
def _num(row: dict[str, str], *names: str) -> float | None:
    for n in names:
        text = (row.get(n) or "").strip()
        if text:
            try:
                return float(text)
            except ValueError:
                return None
    return None


@dataclass(frozen=True)
class NodeClasses:
    """A case's nodes by mask id: positives and ignored (everything else in the mask is a negative)."""

    truth: NodeTruth
    positive_ids: tuple[int, ...]
    ignored_ids: tuple[int, ...]


def node_classes(path: Path, *, enlarged_mm: float, ignore_below_mm: float) -> NodeClasses:
    """Read ``extra/<case>_nodes.csv``: positives (the ``enlarged`` flag, else SAD ≥ ``enlarged_mm``),
    ignored (other nodes with SAD ≥ ``ignore_below_mm``), each with its mask id (column ``id``). A ``truth``
    column (positive / ignore / negative: the per-region ground-truth rule of insertion cohorts) decides
    before both.

    The same rule as :func:`lymphcad.detector.sampling.truth_from_extra`, plus the ids that tie a node to
    its voxel mask in ``extra/<case>_all_nodes.nii.gz``.
    """
    pos, diam, ign, rad, pos_ids, ign_ids = [], [], [], [], [], []
    with path.open(newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            x, y, z = _num(row, "coordX", "x_mm"), _num(row, "coordY", "y_mm"), _num(row, "coordZ", "z_mm")
            if x is None or y is None or z is None:
                raise InputError("node row without a centre (coordX/coordY/coordZ)", path, line)
            sad = _num(row, "short_axis_mm", "sad_mm")
            lad = _num(row, "long_axis_mm", "lad_mm")
            axes = [v for v in (sad, lad) if v is not None and v > 0]
            d = float(np.mean(axes)) if axes else DIAMETER_DEFAULT_MM
            size = sad if sad is not None else d
            flag = (row.get("enlarged") or "").strip()
            enlarged = flag == "1" if flag in ("0", "1") else size >= enlarged_mm
            nid = int(_num(row, "id") or 0)
            rule = (row.get("truth") or "").strip()  # the per-region rule, when the table carries it
            if rule in ("positive", "ignore", "negative"):
                enlarged = rule == "positive"
                size = ignore_below_mm if rule == "ignore" else -1.0
            if enlarged:
                pos.append((x, y, z))
                diam.append(d)
                pos_ids.append(nid)
            elif size >= ignore_below_mm:
                ign.append((x, y, z))
                rad.append(max(4.0, 0.6 * d))
                ign_ids.append(nid)
    truth = NodeTruth(
        np.array(pos, dtype=np.float64).reshape(-1, 3),
        np.array(diam, dtype=np.float64),
        np.array(ign, dtype=np.float64).reshape(-1, 3),
        np.array(rad, dtype=np.float64),
    )
    return NodeClasses(truth, tuple(pos_ids), tuple(ign_ids))


def _coverage(mask: NDArray[np.bool_], geometry: Geometry, spacing_mm: float) -> torch.Tensor:
    """A binary mask resampled to the plan grid exactly as the image is: the fraction covered, float32."""
    canon = reorient(CTVolume(mask.astype(np.float32), geometry))
    cov, _ = resample_hu(canon.array, canon.geometry, spacing_mm)
    return cov.clamp(0.0, 1.0)


def body_box(hu: torch.Tensor) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(start, shape) of the body's bounding box on a plan grid, with :data:`CROP_MARGIN_VOX` of margin."""
    body = (hu > BODY_HU).numpy()
    if not body.any():
        return (0, 0, 0), (int(hu.shape[0]), int(hu.shape[1]), int(hu.shape[2]))
    idx = np.nonzero(body)
    lo = [max(0, int(a.min()) - CROP_MARGIN_VOX) for a in idx]
    hi = [min(int(n), int(a.max()) + CROP_MARGIN_VOX + 1) for a, n in zip(idx, hu.shape, strict=True)]
    return (lo[0], lo[1], lo[2]), (hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2])


def mimic_points(
    hu: torch.Tensor, spacing_mm: float, rng: np.random.Generator, n: int = MIMIC_POINTS
) -> NDArray[np.float64]:
    """Hard-negative prior on a plan grid: soft or enhanced tissue within a few mm of fat, inside the body.

    That is where vessels in cross-section, the oesophagus, the crura, adrenals and bowel loops sit — the
    structures a node detector confuses with nodes. At most ``n`` points, drawn uniformly.
    """
    a = hu.numpy()
    body = ndimage.binary_fill_holes(ndimage.binary_closing(a > BODY_HU, iterations=2))
    inner = ndimage.binary_erosion(body, iterations=max(1, round(10.0 / spacing_mm)))
    fat = (a >= FAT_HU[0]) & (a <= FAT_HU[1])
    near_fat = ndimage.binary_dilation(fat, iterations=max(1, round(MIMIC_NEAR_FAT_MM / spacing_mm)))
    soft = (a >= MIMIC_HU[0]) & (a <= MIMIC_HU[1]) & near_fat & inner
    pts = np.argwhere(soft).astype(np.float64)
    if len(pts) > n:
        pts = pts[rng.choice(len(pts), size=n, replace=False)]
    return pts


def _phantom_mimics(cohort: Cohort, case_id: str) -> NDArray[np.float64]:
    """World centres of the phantom's node mimics (``extra/<case>_mimics.csv``), if it lists them."""
    path = cohort.root / "extra" / f"{case_id}_mimics.csv"
    if not path.is_file():
        return np.zeros((0, 3))
    pts = []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            x, y, z = _num(row, "coordX"), _num(row, "coordY"), _num(row, "coordZ")
            if x is not None and y is not None and z is not None:
                pts.append((x, y, z))
    return np.array(pts, dtype=np.float64).reshape(-1, 3)


def load_compact_case(
    cohort: Cohort,
    case_id: str,
    plan: Plan,
    source: MixSource,
    train: TrainConfig,
    rng: np.random.Generator,
) -> CompactCase:
    """Read one case of a mix source onto the plan grid (cropped to the body) with masks and mimics."""
    vol = cohort.read_image(case_id)
    canon = reorient(vol)
    hu, geom = resample_hu(canon.array, canon.geometry, plan.spacing_mm)
    start, shape = body_box(hu)
    sl = tuple(slice(s, s + n) for s, n in zip(start, shape, strict=True))
    hu = hu[sl].contiguous()
    geom = geom.crop(start, shape)
    extra = cohort.root / "extra"
    nodes_csv = extra / f"{case_id}_nodes.csv"
    pos_cov = ign_cov = None
    if nodes_csv.is_file():
        classes = node_classes(
            nodes_csv, enlarged_mm=train.enlarged_mm, ignore_below_mm=train.ignore_below_mm
        )
        truth = classes.truth
        mask_path = extra / f"{case_id}_all_nodes.nii.gz"
        if mask_path.is_file():
            labels, lgeom = cohort.read_mask(mask_path, dtype=np.uint16)
            for ids, kind in ((classes.positive_ids, "pos"), (classes.ignored_ids, "ign")):
                cov = _coverage(np.isin(labels, ids), lgeom, plan.spacing_mm)[sl]
                q = (cov * 255.0).round().to(torch.uint8).contiguous()
                if kind == "pos":
                    pos_cov = q
                else:
                    ign_cov = q
    else:  # no full truth: the annotations are the positives (no masks, no ignored nodes)
        anns = cohort.annotations_for(case_id)
        truth = NodeTruth(
            np.array([a.center_xyz for a in anns], dtype=np.float64).reshape(-1, 3),
            np.array(
                [
                    np.mean([v for v in (a.short_axis_mm, a.long_axis_mm) if v] or [DIAMETER_DEFAULT_MM])
                    for a in anns
                ],
                dtype=np.float64,
            ),
            np.zeros((0, 3)),
            np.zeros((0,)),
        )
    nodes = geom.world_to_zyx(truth.pos_xyz) if len(truth.pos_xyz) else np.zeros((0, 3))
    ign = geom.world_to_zyx(truth.ign_xyz) if len(truth.ign_xyz) else np.zeros((0, 3))
    mimics = mimic_points(hu, plan.spacing_mm, rng)
    listed = _phantom_mimics(cohort, case_id)
    if len(listed):
        mimics = np.concatenate([geom.world_to_zyx(listed), mimics])
    return CompactCase(
        case_id=case_id,
        source=source.name,
        kind=source.kind,
        group=source.background or case_id,
        geometry=geom,
        hu=hu.round().clamp(-32768, 32767).to(torch.int16),
        pos_cov=pos_cov,
        ign_cov=ign_cov,
        nodes_zyx=nodes,
        diameters_mm=truth.pos_diameter_mm,
        ignore_zyx=ign,
        ignore_radius_mm=truth.ign_radius_mm,
        mimic_zyx=mimics,
    )


# -- patches ------------------------------------------------------------------------------------------
#: keys of a training batch
BATCH_KEYS: Final = ("image", "heatmap", "ignore", "size", "offset", "reg_mask", "seg", "seg_ignore")


class MixSampler(CaseSampler[CompactCase]):
    """Draws augmented patches from a weighted mix of compact cases (positives, hard negatives, random)."""

    def __init__(
        self,
        cases: Sequence[CompactCase],
        plan: Plan,
        train: TrainConfig,
        augment: AugmentConfig,
        *,
        source_weights: dict[str, float],
        p_hard: float,
    ) -> None:
        super().__init__(cases, plan, train, augment)
        self.p_hard = float(p_hard)
        names = sorted({c.source for c in self.cases})
        self.sources = names
        self.by_source = {n: [i for i, c in enumerate(self.cases) if c.source == n] for n in names}
        w = np.array([max(0.0, float(source_weights.get(n, 1.0))) for n in names], dtype=np.float64)
        if w.sum() <= 0:
            raise InputError("every training source has weight 0")
        self.source_p = w / w.sum()
        half = self.half
        # the farthest a patch voxel can map from its centre (rotation, tilt, scale ≤ augment.scale[1], and
        # the elastic displacement's clip at 3 SD per axis)
        elastic = 3.0 * math.sqrt(3.0) * augment.elastic_sd_vox if augment.p_elastic > 0 else 0.0
        self.reach = math.ceil(float(np.linalg.norm(half)) * max(1.0, augment.scale[1]) + elastic) + 2

    def _centre(self, case: CompactCase, rng: np.random.Generator) -> NDArray[np.float64]:
        draw = rng.random()
        if len(case.nodes_zyx) and draw < self.train.p_positive:
            node = case.nodes_zyx[rng.integers(len(case.nodes_zyx))]
            jitter = rng.uniform(-1.0, 1.0, size=3) * np.maximum(self.half - 8.0, 0.0) * 0.8
            return np.asarray(node + jitter, dtype=np.float64)
        hard = draw < self.train.p_positive + self.p_hard
        pool = case.mined_zyx if len(case.mined_zyx) and rng.random() < 0.5 else case.mimic_zyx
        if hard and len(pool):
            return np.asarray(
                pool[rng.integers(len(pool))] + rng.uniform(-4.0, 4.0, size=3), dtype=np.float64
            )
        shape = np.asarray(case.hu.shape, dtype=np.float64)
        return np.asarray(rng.uniform(0.0, 1.0, size=3) * (shape - 1.0), dtype=np.float64)

    def sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One patch: normalised image and targets (see :data:`BATCH_KEYS`)."""
        src = self.sources[int(rng.choice(len(self.sources), p=self.source_p))]
        members = self.by_source[src]
        case = self.cases[members[int(rng.integers(len(members)))]]
        centre = self._centre(case, rng)
        m = random_matrix(rng, self.augment)
        disp = random_displacement(rng, self.augment, self.train.patch_zyx)
        pz, py, px = self.train.patch_zyx
        shape = np.asarray(case.hu.shape)
        lo = np.clip(np.floor(centre).astype(int) - self.reach, 0, shape - 1)
        hi = np.clip(np.floor(centre).astype(int) + self.reach + 2, lo + 1, shape)
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        p = patch_points(self.train.patch_zyx, self.half, m, centre - lo, disp)
        bsize = torch.as_tensor(hi - lo, dtype=torch.float64)
        grid = (2.0 * p / (bsize - 1.0).clamp(min=1.0) - 1.0)[..., [2, 1, 0]].to(torch.float32)[None]
        block = case.hu[sl].to(torch.float32)[None, None] + AIR_OFFSET
        hu = F.grid_sample(block, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        hu = augment_intensity(hu - AIR_OFFSET, rng, self.augment)
        image = self.plan.normalise(hu)[0]
        out_shape = (pz // STRIDE, py // STRIDE, px // STRIDE)
        seg, seg_ign = self._seg_targets(case, sl, grid, out_shape)
        t = patch_targets(case, m, centre, self.half, out_shape, self.plan.spacing_mm, disp)
        return {
            "image": image,
            "heatmap": torch.from_numpy(t.heatmap),
            "ignore": torch.from_numpy(t.ignore),
            "size": torch.from_numpy(t.size),
            "offset": torch.from_numpy(t.offset),
            "reg_mask": torch.from_numpy(t.reg_mask),
            "seg": seg,
            "seg_ignore": seg_ign,
        }

    def _seg_targets(
        self, case: CompactCase, sl: tuple[slice, ...], grid: torch.Tensor, out_shape: tuple[int, int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask targets at the output stride: positive coverage, and 1 where an ignored node lies."""
        maps = []
        for cov in (case.pos_cov, case.ign_cov):
            if cov is None:
                maps.append(torch.zeros((1, *out_shape)))
                continue
            raw = cov[sl]
            if not bool(raw.any()):  # no node mask near this patch: skip the resampling
                maps.append(torch.zeros((1, *out_shape)))
                continue
            block = raw.to(torch.float32)[None, None] / 255.0
            full = F.grid_sample(block, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            maps.append(F.avg_pool3d(full, STRIDE)[0])
        return maps[0], (maps[1] > 0.05).to(torch.float32)

    def batch(self, rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
        """``n`` patches stacked (keys :data:`BATCH_KEYS`)."""
        patches = [self.sample(rng) for _ in range(n)]
        return {k: torch.stack([p[k] for p in patches]) for k in BATCH_KEYS}


# -- hard-negative mining ------------------------------------------------------------------------------
def _exclusion_ok(pts: NDArray[np.float64], case: CompactCase, spacing_mm: float) -> NDArray[np.bool_]:
    """True for points (plan voxels) farther than the exclusion radius from every positive/ignored node."""
    ok = np.ones(len(pts), dtype=bool)
    for centres, sizes in (
        (case.nodes_zyx, case.diameters_mm),
        (case.ignore_zyx, 2.0 * case.ignore_radius_mm),
    ):
        for c, d in zip(centres, sizes, strict=True):
            r = max(MINE_EXCLUDE_MM, 0.75 * float(d)) / spacing_mm
            ok &= np.linalg.norm(pts - c, axis=1) > r
    return ok


def node_like(hu: torch.Tensor, pts: NDArray[np.float64], spacing_mm: float) -> NDArray[np.bool_]:
    """True for points (plan voxels of the isotropic grid ``hu``) that look like a lymph node: a soft-tissue
    core with fat around it (the constants above).

    The real backgrounds are patients' CT: they hold real lymph nodes (and node-like bowel loops or
    unenhanced vessels in cross-section) that nobody annotated. Mining such a point as a negative teaches
    the network that a real node is not a node unless it carries the insertion's signature; skipping them
    keeps the mined negatives to what is clearly not a node (vessel lumen, fat, bowel gas, organ edges).
    """
    a = hu.numpy() if hu.dtype == torch.float32 else hu.to(torch.float32).numpy()
    r = int(np.ceil(NODE_LIKE_SHELL_MM[1] / spacing_mm))
    grid = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1].reshape(3, -1).T
    dist = np.linalg.norm(grid, axis=1) * spacing_mm
    core_off = grid[dist <= NODE_LIKE_CORE_MM]
    shell_off = grid[(dist >= NODE_LIKE_SHELL_MM[0]) & (dist <= NODE_LIKE_SHELL_MM[1])]
    hi = np.asarray(a.shape) - 1
    out = np.zeros(len(pts), dtype=bool)
    for i, p in enumerate(np.rint(pts).astype(int)):
        core = a[tuple(np.clip(p + core_off, 0, hi).T)]
        shell = a[tuple(np.clip(p + shell_off, 0, hi).T)]
        fat = float(np.mean((shell > NODE_LIKE_FAT_HU[0]) & (shell < NODE_LIKE_FAT_HU[1])))
        med = float(np.median(core))
        out[i] = NODE_LIKE_CORE_HU[0] <= med <= NODE_LIKE_CORE_HU[1] and fat >= NODE_LIKE_FAT_SHARE
    return out


def mine_hard_negatives(
    network: CenterNet3D,
    cases: Sequence[CompactCase],
    plan: Plan,
    detect: DetectConfig,
    *,
    round_index: int,
    per_case: int = 24,
    threshold: float = 0.02,
    kinds: tuple[str, ...] = ("insertion",),
    skip_node_like: bool = False,
) -> dict[str, int]:
    """Run the network on one case per group and give every case of the group the false positives found.

    Cases of one group share their anatomy (one real background with different inserted nodes), so the
    false positives found on one are negatives for all of them (each case still drops those near its own
    nodes). ``round_index`` rotates which case of a group is analysed. Only cases of the given source
    ``kinds`` are mined (the phantom lists its own mimics). ``skip_node_like`` leaves out the false positives
    that look like a real node (:func:`node_like`). Returns mined points per group.
    """
    groups: dict[str, list[CompactCase]] = {}
    for c in cases:
        if c.kind in kinds:
            groups.setdefault(c.group, []).append(c)
    was_training = network.training
    network.eval()
    found: dict[str, int] = {}
    try:
        for name, members in sorted(groups.items()):
            probe = members[round_index % len(members)]
            img = normalised_padded(PreparedVolume(probe.hu_float, probe.geometry), plan)
            dense = predict_dense(network, img, window_zyx=detect.window_zyx, overlap=detect.overlap)
            peaks = decode(dense.prob, dense.size, dense.offset, threshold=threshold, max_peaks=4 * per_case)
            inside = np.all((peaks.zyx >= 0) & (peaks.zyx <= np.asarray(probe.hu.shape) - 1), axis=1)
            keep = peaks.zyx[inside]
            if skip_node_like and len(keep):
                keep = keep[~node_like(probe.hu, keep, plan.spacing_mm)]
            world = probe.geometry.zyx_to_world(keep) if len(keep) else np.zeros((0, 3))
            found[name] = 0
            for case in members:
                pts = case.geometry.world_to_zyx(world) if len(world) else np.zeros((0, 3))
                pts = pts[_exclusion_ok(pts, case, plan.spacing_mm)][:per_case]
                case.mined_zyx = pts
                found[name] = max(found[name], len(pts))
    finally:
        network.train(was_training)
    return found


def mined_to_json(cases: Sequence[CompactCase]) -> dict[str, Any]:
    """Mined negatives in world mm per case (saved with each checkpoint so that a resumed run is exact)."""
    return {
        c.case_id: c.geometry.zyx_to_world(c.mined_zyx).round(3).tolist() if len(c.mined_zyx) else []
        for c in cases
    }


def mined_from_json(cases: Sequence[CompactCase], data: dict[str, Any]) -> None:
    """Inverse of :func:`mined_to_json` (cases not listed keep no mined points)."""
    for c in cases:
        pts = np.asarray(data.get(c.case_id, []), dtype=np.float64).reshape(-1, 3)
        c.mined_zyx = c.geometry.world_to_zyx(pts) if len(pts) else np.zeros((0, 3))
