"""Training data: cases on the plan grid, patch sampling with positive oversampling, and augmentation.

Each patch is drawn in one resampling step from the whole case volume (``grid_sample``): the patch grid is
mapped to the case grid by ``p = centre + M·q`` where ``M`` combines flips, a rotation about the
cranio-caudal axis, small tilts and an isotropic scale, plus (optionally) a smooth random displacement
``d(q)`` that varies the anatomy's shape; node centres are mapped back by solving ``centre + M·q + d(q) = n``
and diameters divided by the scale. Intensity augmentation (shift, scale, noise, blur) follows in HU, then the
plan's normalisation. All randomness comes from the ``numpy.random.Generator`` passed in, so a training
epoch is a pure function of its seed (this is what makes ``--resume`` exact on CPU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from lymphcad.cohort import Cohort
from lymphcad.detector.config import AugmentConfig, TrainConfig
from lymphcad.detector.network import STRIDE
from lymphcad.detector.plan import Plan, PreparedVolume, prepare_volume
from lymphcad.detector.targets import Targets, encode
from lymphcad.errors import InputError

#: added before ``grid_sample`` (which pads with zeros) so that outside the volume reads as air
AIR_OFFSET = 1024.0
#: diameter assumed for a node whose size is unknown
DEFAULT_DIAMETER_MM = 12.0
#: fixed-point steps that map a node back through the random displacement (patch_targets)
ELASTIC_ITERATIONS = 8


@dataclass(frozen=True)
class NodeTruth:
    """Nodes of one case in world LPS mm: positives (to detect) and ignored findings (neither)."""

    pos_xyz: NDArray[np.float64]  # (N, 3)
    pos_diameter_mm: NDArray[np.float64]  # (N,)
    ign_xyz: NDArray[np.float64]  # (M, 3)
    ign_radius_mm: NDArray[np.float64]  # (M,)


@dataclass(frozen=True)
class TrainCase:
    """One case on the plan grid with its nodes in grid (z, y, x) voxel coordinates."""

    case_id: str
    prepared: PreparedVolume
    nodes_zyx: NDArray[np.float64]
    diameters_mm: NDArray[np.float64]
    ignore_zyx: NDArray[np.float64]
    ignore_radius_mm: NDArray[np.float64]


def _diameter(short: float | None, long_: float | None) -> float:
    vals = [v for v in (short, long_) if v is not None and v > 0]
    return float(np.mean(vals)) if vals else DEFAULT_DIAMETER_MM


def truth_from_annotations(cohort: Cohort, case_id: str) -> NodeTruth:
    """Positives = annotations.csv rows of the case (diameter = mean of the known axes)."""
    anns = cohort.annotations_for(case_id)
    pos = np.array([a.center_xyz for a in anns], dtype=np.float64).reshape(-1, 3)
    diam = np.array([_diameter(a.short_axis_mm, a.long_axis_mm) for a in anns], dtype=np.float64)
    ign = [p for p in cohort.ignore_for(case_id)]
    return NodeTruth(
        pos,
        diam,
        np.array([p.center_xyz for p in ign], dtype=np.float64).reshape(-1, 3),
        np.array([p.radius_mm for p in ign], dtype=np.float64),
    )


def truth_from_extra(
    cohort: Cohort, case_id: str, *, enlarged_mm: float, ignore_below_mm: float
) -> NodeTruth:
    """Positives = every node of the phantom's full truth (:meth:`Cohort.read_full_truth`) with SAD ≥ enlarged_mm.

    The writer's ``enlarged`` flag, when present, decides instead of the threshold (the phantom measures
    the short axis on the voxel mask); a ``truth`` class (positive / ignore / negative: the per-region rule
    of ``lymphcad.phantom.truthrule``, in insert cohorts) decides before both. Other nodes with a short axis
    ≥ ignore_below_mm become ignored findings; smaller ones are negatives (the detector should not fire on
    normal-sized nodes).
    """
    if cohort.full_truth_path(case_id) is None:
        raise InputError(
            f"--truth extra needs the full truth file of case {case_id!r}",
            cohort.root / "extra" / f"{case_id}_nodes.csv",
        )
    pos, diam, ign, rad = [], [], [], []
    for node in cohort.read_full_truth(case_id):
        d = _diameter(node.short_axis_mm, node.long_axis_mm)
        size = node.short_axis_mm if node.short_axis_mm is not None else d
        enlarged = node.enlarged if node.enlarged is not None else size >= enlarged_mm
        if node.truth is not None:  # the per-region rule of the collection's marks (insert cohorts)
            enlarged = node.truth == "positive"
            ignored = node.truth == "ignore"
        else:
            ignored = not enlarged and size >= ignore_below_mm
        if enlarged:
            pos.append(node.center_xyz)
            diam.append(d)
        elif ignored:
            ign.append(node.center_xyz)
            rad.append(max(4.0, 0.6 * d))
    return NodeTruth(
        np.array(pos, dtype=np.float64).reshape(-1, 3),
        np.array(diam, dtype=np.float64),
        np.array(ign, dtype=np.float64).reshape(-1, 3),
        np.array(rad, dtype=np.float64),
    )


def load_case(cohort: Cohort, case_id: str, plan: Plan, truth: NodeTruth) -> TrainCase:
    """Read, prepare and attach nodes (world → grid voxels) for one case."""
    prepared = prepare_volume(cohort.read_image(case_id), plan)
    g = prepared.geometry
    nodes = g.world_to_zyx(truth.pos_xyz) if len(truth.pos_xyz) else np.zeros((0, 3))
    ign = g.world_to_zyx(truth.ign_xyz) if len(truth.ign_xyz) else np.zeros((0, 3))
    return TrainCase(case_id, prepared, nodes, truth.pos_diameter_mm, ign, truth.ign_radius_mm)


# -- augmentation -------------------------------------------------------------------------------------
def _rot(axis: int, angle: float) -> NDArray[np.float64]:
    """3×3 rotation in (z, y, x) coordinates about array axis ``axis``."""
    c, s = math.cos(angle), math.sin(angle)
    m = np.eye(3)
    a, b = [i for i in range(3) if i != axis]
    m[a, a], m[a, b], m[b, a], m[b, b] = c, -s, s, c
    return m


def random_matrix(rng: np.random.Generator, cfg: AugmentConfig) -> NDArray[np.float64]:
    """Patch → case mapping ``M`` (z, y, x): flips, rotation, tilts, isotropic scale."""
    m = np.eye(3)
    if cfg.rotate_deg > 0:
        m = _rot(0, math.radians(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))) @ m
    if cfg.tilt_deg > 0:
        m = _rot(1, math.radians(rng.uniform(-cfg.tilt_deg, cfg.tilt_deg))) @ m
        m = _rot(2, math.radians(rng.uniform(-cfg.tilt_deg, cfg.tilt_deg))) @ m
    scale = float(rng.uniform(cfg.scale[0], cfg.scale[1]))
    m = m * scale
    if cfg.flip:
        flips = np.where(rng.random(3) < 0.5, -1.0, 1.0)
        m = m @ np.diag(flips)
    return m


def random_displacement(
    rng: np.random.Generator, cfg: AugmentConfig, patch_zyx: tuple[int, int, int]
) -> NDArray[np.float64] | None:
    """Control-point displacements ``(3, gz, gy, gx)`` in case voxels spanning the patch, or None (no draw).

    Nothing is drawn from ``rng`` when the augmentation is off, so runs made before it existed keep their
    random streams (and ``--resume`` stays exact).
    """
    if cfg.p_elastic <= 0.0 or cfg.elastic_sd_vox <= 0.0:
        return None
    if rng.random() >= cfg.p_elastic:
        return None
    grid = [max(2, math.ceil((s - 1) / cfg.elastic_grid_vox) + 1) for s in patch_zyx]
    d = rng.normal(0.0, cfg.elastic_sd_vox, size=(3, *grid))
    return np.clip(d, -3.0 * cfg.elastic_sd_vox, 3.0 * cfg.elastic_sd_vox)


def displacement_at(
    displacement: NDArray[np.float64], q_zyx: NDArray[np.float64], half: NDArray[np.float64]
) -> NDArray[np.float64]:
    """The trilinear displacement field at patch positions ``q`` (N, 3; patch of half extent ``half`` =
    (shape − 1) / 2), constant beyond the patch: the same field :func:`patch_points` adds at every voxel."""
    norm = np.asarray(q_zyx, dtype=np.float64) / np.maximum(np.asarray(half, dtype=np.float64), 0.5) - 1.0
    grid = torch.as_tensor(norm[:, [2, 1, 0]], dtype=torch.float64).view(1, 1, 1, -1, 3)
    field = torch.as_tensor(displacement, dtype=torch.float64)[None]
    out = F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return np.asarray(out[0, :, 0, 0, :].T.numpy(), dtype=np.float64)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (1, 1, Z, Y, X) tensor (σ in voxels)."""
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma * sigma))
    k = k / k.sum()
    out = x
    for dim in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = 2 * r + 1
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - dim)] = r
        pad[2 * (2 - dim) + 1] = r
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.view(shape))
    return out


@dataclass(frozen=True)
class Patch:
    """One training sample: normalised image ``(1, Z, Y, X)`` and targets at the output stride."""

    image: torch.Tensor
    heatmap: torch.Tensor
    ignore: torch.Tensor
    size: torch.Tensor
    offset: torch.Tensor
    reg_mask: torch.Tensor


class GridNodes(Protocol):
    """A training case's nodes on its grid (voxel z, y, x): what the patch targets are encoded from."""

    @property
    def nodes_zyx(self) -> NDArray[np.float64]: ...
    @property
    def diameters_mm(self) -> NDArray[np.float64]: ...
    @property
    def ignore_zyx(self) -> NDArray[np.float64]: ...
    @property
    def ignore_radius_mm(self) -> NDArray[np.float64]: ...


def patch_points(
    patch_zyx: tuple[int, int, int],
    half: NDArray[np.float64],
    matrix: NDArray[np.float64],
    centre_zyx: NDArray[np.float64],
    displacement: NDArray[np.float64] | None = None,
) -> torch.Tensor:
    """(Z, Y, X, 3) float64 case-voxel coordinates of a patch's voxels: ``centre + M·q (+ d(q))`` for the
    patch grid ``q`` about its middle (``half`` = (shape − 1) / 2); ``d`` interpolates the control-point
    ``displacement`` of :func:`random_displacement` trilinearly over the patch."""
    pz, py, px = patch_zyx
    qz = torch.arange(pz, dtype=torch.float64) - half[0]
    qy = torch.arange(py, dtype=torch.float64) - half[1]
    qx = torch.arange(px, dtype=torch.float64) - half[2]
    q = torch.stack(torch.meshgrid(qz, qy, qx, indexing="ij"), dim=-1)  # (Z, Y, X, 3)
    out: torch.Tensor = q @ torch.as_tensor(matrix).T + torch.as_tensor(centre_zyx)
    if displacement is not None:
        field = torch.as_tensor(displacement, dtype=torch.float64)[None]
        dense = F.interpolate(field, size=patch_zyx, mode="trilinear", align_corners=True)[0]
        out = out + dense.permute(1, 2, 3, 0)
    return out


def patch_targets(
    case: GridNodes,
    matrix: NDArray[np.float64],
    centre_zyx: NDArray[np.float64],
    half: NDArray[np.float64],
    out_shape: tuple[int, int, int],
    spacing_mm: float,
    displacement: NDArray[np.float64] | None = None,
) -> Targets:
    """The case's nodes mapped into a patch (``M⁻¹``, sizes divided by the scale) and encoded as targets.

    With a ``displacement`` the patch position ``q`` of a node ``n`` solves ``centre + M·q + d(q) = n`` by
    fixed-point iteration (the field is smooth and small against the control spacing, so a few steps
    reach sub-voxel accuracy). Sizes keep the affine scale: with the defaults the field stretches a node
    locally by about 13 % at one SD (σ√2 over one control spacing), which the size targets ignore.
    """
    scale = float(abs(np.linalg.det(matrix)) ** (1.0 / 3.0))
    return encode(
        case_to_patch(case.nodes_zyx, matrix, centre_zyx, half, displacement),
        case.diameters_mm / scale,
        out_shape,
        spacing_mm=spacing_mm,
        ignore_zyx=case_to_patch(case.ignore_zyx, matrix, centre_zyx, half, displacement),
        ignore_radius_mm=case.ignore_radius_mm / scale,
    )


def case_to_patch(
    zyx: NDArray[np.float64],
    matrix: NDArray[np.float64],
    centre_zyx: NDArray[np.float64],
    half: NDArray[np.float64],
    displacement: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Case-voxel points (N, 3) → patch-voxel points: the inverse of :func:`patch_points`."""
    if not len(zyx):
        return np.zeros((0, 3))
    minv = np.linalg.inv(matrix)
    q: NDArray[np.float64] = (zyx - centre_zyx) @ minv.T + half
    if displacement is not None:
        for _ in range(ELASTIC_ITERATIONS):
            q = (zyx - centre_zyx - displacement_at(displacement, q, half)) @ minv.T + half
    return q


CaseT = TypeVar("CaseT", bound=GridNodes)


class CaseSampler(Generic[CaseT]):
    """What the patch samplers share: the training cases, the plan grid, the training and augmentation
    settings, and the patch's half extent ``(shape − 1) / 2`` in voxels."""

    def __init__(
        self, cases: Sequence[CaseT], plan: Plan, train: TrainConfig, augment: AugmentConfig
    ) -> None:
        if not cases:
            raise InputError("no training cases")
        self.cases = list(cases)
        self.plan = plan
        self.train = train
        self.augment = augment
        self.half = (np.asarray(train.patch_zyx, dtype=np.float64) - 1.0) / 2.0


class PatchSampler(CaseSampler[TrainCase]):
    """Draws augmented patches from training cases (positive oversampling)."""

    def __init__(
        self, cases: Sequence[TrainCase], plan: Plan, train: TrainConfig, augment: AugmentConfig
    ) -> None:
        super().__init__(cases, plan, train, augment)
        self.with_nodes = [i for i, c in enumerate(self.cases) if len(c.nodes_zyx)]
        self._shifted = [c.prepared.hu[None, None] + AIR_OFFSET for c in self.cases]

    def sample(self, rng: np.random.Generator) -> Patch:
        """One patch (see the module docstring)."""
        pz, py, px = self.train.patch_zyx
        half = self.half
        positive = bool(self.with_nodes) and rng.random() < self.train.p_positive
        if positive:
            ci = int(self.with_nodes[rng.integers(len(self.with_nodes))])
            case = self.cases[ci]
            node = case.nodes_zyx[rng.integers(len(case.nodes_zyx))]
            jitter = rng.uniform(-1.0, 1.0, size=3) * np.maximum(half - 8.0, 0.0) * 0.8
            centre = node + jitter
        else:
            ci = int(rng.integers(len(self.cases)))
            case = self.cases[ci]
            shape = np.asarray(case.prepared.hu.shape, dtype=np.float64)
            centre = rng.uniform(0.0, 1.0, size=3) * (shape - 1.0)
        m = random_matrix(rng, self.augment)
        disp = random_displacement(rng, self.augment, self.train.patch_zyx)
        p = patch_points(self.train.patch_zyx, half, m, centre, disp)
        size_t = torch.as_tensor(case.prepared.hu.shape, dtype=torch.float64)
        norm = 2.0 * p / (size_t - 1.0).clamp(min=1.0) - 1.0
        grid = norm[..., [2, 1, 0]].to(torch.float32)[None]  # grid_sample wants (x, y, z)
        hu = F.grid_sample(self._shifted[ci], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        hu = hu - AIR_OFFSET
        hu = self._intensity(hu, rng)
        image = self.plan.normalise(hu)[0]
        out_shape = (pz // STRIDE, py // STRIDE, px // STRIDE)
        t = patch_targets(case, m, centre, half, out_shape, self.plan.spacing_mm, disp)
        return Patch(
            image,
            torch.from_numpy(t.heatmap),
            torch.from_numpy(t.ignore),
            torch.from_numpy(t.size),
            torch.from_numpy(t.offset),
            torch.from_numpy(t.reg_mask),
        )

    def _intensity(self, hu: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        a = self.augment
        scale = float(rng.uniform(*a.intensity_scale))
        shift = float(rng.uniform(-a.intensity_shift_hu, a.intensity_shift_hu))
        hu = hu * scale + shift
        if rng.random() < a.p_blur and a.blur_sigma_vox[1] > 0:
            sigma = float(rng.uniform(max(a.blur_sigma_vox[0], 0.3), a.blur_sigma_vox[1]))
            hu = _blur(hu, sigma)
        noise_sd = float(rng.uniform(*a.noise_sd_hu))
        if noise_sd > 0:
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            hu = hu + noise_sd * torch.randn(hu.shape, generator=gen)
        return hu

    def batch(self, rng: np.random.Generator, n: int) -> dict[str, torch.Tensor]:
        """``n`` patches stacked into a batch dict (image, heatmap, ignore, size, offset, reg_mask)."""
        return self.batch_of([rng] * n)

    def batch_of(self, rngs: Sequence[np.random.Generator]) -> dict[str, torch.Tensor]:
        """One patch per random stream, stacked into a batch dict (the training loop gives each patch of a
        global batch its own stream, so the batch does not depend on how many processes share it)."""
        patches = [self.sample(rng) for rng in rngs]
        return {
            key: torch.stack([getattr(p, key) for p in patches])
            for key in ("image", "heatmap", "ignore", "size", "offset", "reg_mask")
        }
