"""The preprocessing plan and the one function that puts a CT onto the network's grid.

The plan is data (``plan.json``), computed once from a training cohort and read by training and inference,
never recomputed (nnU-Net's fingerprint → plan idea). It holds:

* ``spacing_mm``: the isotropic voxel size of the network input (default 2 mm);
* ``hu_window``: the HU clip window; the input is then scaled to about [-1, 1];
* the training cohort's acquisition ranges (in-plane spacing, slice spacing, an HU statistic) used by
  :func:`plan_warnings` to warn when an input lies outside what the model saw.

:func:`prepare_volume` maps a :class:`~lymphcad.geometry.CTVolume` to the network grid in three steps:

1. **Reorient** by axis permutation and flips only (no interpolation) so the array axes point, as closely
   as the direction matrix allows, to +z (head), +y (posterior), +x (patient left) — DICOM's usual "LPS"
   storage. An oblique direction keeps its small residual rotation; it is carried by the geometry.
2. **Pool** by an integer factor along axes at least twice finer than the target (anti-aliasing, cheap).
3. **Resample** trilinearly to the target spacing along the array axes.

The returned :class:`PreparedVolume` carries the :class:`~lymphcad.geometry.Geometry` of the network grid,
so any network position maps to world LPS mm through :meth:`Geometry.zyx_to_world` — the only coordinate
conversion in the detector.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from lymphcad import atomic
from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume, Geometry, reorient_to_lps

PLAN_VERSION: Final = 1
#: HU range used for the contrast statistic (soft tissue, fat and enhanced vessels; bone mostly excluded)
_TISSUE_HU: Final = (-200.0, 300.0)
_ENHANCED_HU: Final = (130.0, 300.0)


@dataclass(frozen=True)
class Plan:
    """Preprocessing plan (see module docstring). All lengths in mm."""

    spacing_mm: float = 2.0
    hu_window: tuple[float, float] = (-250.0, 350.0)
    #: training data ranges: (min, max) over training cases
    inplane_spacing_range: tuple[float, float] = (0.5, 1.0)
    slice_spacing_range: tuple[float, float] = (0.5, 1.5)
    #: share of tissue-range voxels (-200..300 HU) that are enhanced (130..300 HU): (min, median) over cases
    enhanced_fraction_range: tuple[float, float] = (0.0, 0.0)
    n_cases: int = 0
    source: str = ""
    version: int = PLAN_VERSION
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form."""
        data = asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data

    @classmethod
    def from_json(cls, data: Any, *, where: str | Path | None = None) -> Plan:
        """Inverse of :meth:`to_json`; raises InputError on a malformed plan."""
        if not isinstance(data, dict):
            raise InputError("plan must be a JSON object", where)
        try:
            version = int(data.get("version", 0))
            if version != PLAN_VERSION:
                raise InputError(f"plan version {version} is not supported (expected {PLAN_VERSION})", where)
            return cls(
                spacing_mm=float(data["spacing_mm"]),
                hu_window=_pair(data["hu_window"]),
                inplane_spacing_range=_pair(data["inplane_spacing_range"]),
                slice_spacing_range=_pair(data["slice_spacing_range"]),
                enhanced_fraction_range=_pair(data["enhanced_fraction_range"]),
                n_cases=int(data.get("n_cases", 0)),
                source=str(data.get("source", "")),
                version=version,
                notes=dict(data.get("notes", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed plan ({exc.__class__.__name__}: {exc})", where) from exc

    def normalise(self, hu: torch.Tensor) -> torch.Tensor:
        """Clip HU to the window and scale it to [-1, 1] (returns a new tensor)."""
        lo, hi = self.hu_window
        return (hu.clamp(lo, hi) - (lo + hi) / 2.0) / ((hi - lo) / 2.0)

    def normalised_air(self) -> float:
        """The normalised value of air (−1024 HU): what the network sees outside the volume."""
        return float(self.normalise(torch.tensor(-1024.0)))


def _pair(value: Any) -> tuple[float, float]:
    a, b = value
    return (float(a), float(b))


def save_plan(path: str | Path, plan: Plan) -> None:
    """Write plan.json atomically."""
    atomic.write_json(path, plan.to_json())


def load_plan(path: str | Path) -> Plan:
    """Read plan.json."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read plan ({exc.strerror})", path) from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg} at line {exc.lineno})", path) from exc
    return Plan.from_json(data, where=path)


# -- statistics ---------------------------------------------------------------------------------------
def enhanced_fraction(array: NDArray[Any], *, step: int = 2) -> float:
    """Share of tissue-range voxels (-200..300 HU) that look contrast-enhanced (130..300 HU).

    A heuristic for "was contrast given": portal-venous CT has enhanced vessels and organs, unenhanced CT
    has almost none in this band (trabecular bone contributes a little to both). Subsampled by ``step``.
    """
    sub = np.asarray(array[::step, ::step, ::step])
    tissue = (sub >= _TISSUE_HU[0]) & (sub <= _TISSUE_HU[1])
    n = int(tissue.sum())
    if n == 0:
        return 0.0
    enhanced = (sub >= _ENHANCED_HU[0]) & (sub <= _ENHANCED_HU[1])
    return float(enhanced.sum()) / n


def compute_plan(
    geometries: list[Geometry],
    enhanced_fractions: list[float],
    *,
    spacing_mm: float = 2.0,
    hu_window: tuple[float, float] = (-250.0, 350.0),
    source: str = "",
) -> Plan:
    """A plan from the training cases' grids and contrast statistics (:func:`enhanced_fraction`).

    The target spacing is the configured one, but never finer than the median of the cases' coarsest
    spacing (capped at 3 mm): no upsampling of information that is not there.
    """
    if not geometries:
        raise InputError("cannot compute a plan from zero training cases")
    canon = [canonical_spacing_zyx(g) for g in geometries]
    inplane = [min(sp[1], sp[2]) for sp in canon]
    slices = [sp[0] for sp in canon]
    median_coarsest = float(np.median([max(g.spacing_zyx) for g in geometries]))
    target = max(float(spacing_mm), min(median_coarsest, 3.0))
    fr = list(enhanced_fractions) or [0.0]
    return Plan(
        spacing_mm=target,
        hu_window=(float(hu_window[0]), float(hu_window[1])),
        inplane_spacing_range=(float(min(inplane)), float(max(inplane))),
        slice_spacing_range=(float(min(slices)), float(max(slices))),
        enhanced_fraction_range=(float(min(fr)), float(np.median(fr))),
        n_cases=len(geometries),
        source=source,
    )


def plan_warnings(volume: CTVolume, plan: Plan) -> list[str]:
    """Human-readable warnings when ``volume`` lies outside what the model was trained on."""
    out: list[str] = []
    sz, sy, sx = canonical_spacing_zyx(volume.geometry)
    lo, hi = plan.slice_spacing_range
    if sz > max(hi * 1.5, plan.spacing_mm * 1.25):
        out.append(
            f"slice spacing {sz:.2f} mm is coarser than the training data ({lo:.2f}–{hi:.2f} mm); "
            "small nodes may be missed"
        )
    ilo, ihi = plan.inplane_spacing_range
    inplane = min(sy, sx)
    if inplane > max(ihi * 1.5, plan.spacing_mm):
        out.append(
            f"in-plane spacing {inplane:.2f} mm is coarser than the training data ({ilo:.2f}–{ihi:.2f} mm)"
        )
    if plan.enhanced_fraction_range[0] > 0:
        frac = enhanced_fraction(volume.array)
        if frac < 0.5 * plan.enhanced_fraction_range[0]:
            out.append(
                f"few contrast-enhanced voxels ({100 * frac:.1f} % of tissue voxels at 130–300 HU; training "
                f"cases had ≥ {100 * plan.enhanced_fraction_range[0]:.1f} %): the CT may be unenhanced or "
                "arterial-phase; the detector was trained on portal-venous contrast CT"
            )
    if volume.geometry.is_oblique(tol=0.05):
        out.append("the volume is oblique; it is analysed on its own (rotated) grid")
    return out


# -- reorientation and resampling ---------------------------------------------------------------------
def canonical_spacing_zyx(geometry: Geometry) -> tuple[float, float, float]:
    """Voxel size along the index axes nearest to world z, y, x (slice spacing first)."""
    perm, _ = geometry.nearest_axes()
    sp = geometry.spacing_ijk
    return (sp[perm[2]], sp[perm[1]], sp[perm[0]])


def reorient(volume: CTVolume) -> CTVolume:
    """Permute/flip array axes (no interpolation) so index axes i, j, k point to about +x, +y, +z (LPS)."""
    array, geometry = reorient_to_lps(volume.array, volume.geometry)
    return volume if geometry is volume.geometry else CTVolume(np.ascontiguousarray(array), geometry)


@dataclass(frozen=True)
class PreparedVolume:
    """A CT on the network grid: ``hu`` (z, y, x) float32 HU (not yet normalised) and its geometry."""

    hu: torch.Tensor
    geometry: Geometry


def resample_hu(
    array: NDArray[Any] | torch.Tensor, geometry: Geometry, spacing_mm: float
) -> tuple[torch.Tensor, Geometry]:
    """Resample a (z, y, x) HU array along its own axes to isotropic ``spacing_mm``.

    Integer average pooling first along axes ≥ 2× finer than the target, then trilinear interpolation
    (align_corners=False, PyTorch's half-pixel convention). Returns the float32 tensor and its geometry.
    """
    t = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
    t = t.to(torch.float32)[None, None]
    sp = np.asarray(geometry.spacing_zyx, dtype=np.float64)
    # first voxel centre, in old continuous (z, y, x) index units, and the current step in old index units
    first = np.zeros(3)
    step = np.ones(3)
    pool = [max(1, math.floor(spacing_mm / s + 1e-6)) for s in sp]
    pool = [p if p >= 2 else 1 for p in pool]
    if any(p > 1 for p in pool):
        # crop so each pooled axis is a whole number of blocks (the tail < one block is dropped)
        shape = t.shape[2:]
        keep = [max(p, (n // p) * p) for n, p in zip(shape, pool, strict=True)]
        if any(k > n for k, n in zip(keep, shape, strict=True)):
            pad = []
            for k, n in reversed(list(zip(keep, shape, strict=True))):
                pad += [0, max(0, k - n)]
            t = F.pad(t, pad, mode="replicate")
        t = t[:, :, : keep[0], : keep[1], : keep[2]]
        t = F.avg_pool3d(t, kernel_size=pool, stride=pool)
        pool_arr = np.asarray(pool, dtype=np.float64)
        first = first + (pool_arr - 1.0) / 2.0
        step = step * pool_arr
    cur_sp = sp * step
    scale = cur_sp / spacing_mm
    if not np.allclose(scale, 1.0, atol=1e-6):
        out_shape = [max(1, math.floor(n * s)) for n, s in zip(t.shape[2:], scale, strict=True)]
        t = F.interpolate(
            t,
            size=None,
            scale_factor=tuple(float(s) for s in scale),
            mode="trilinear",
            align_corners=False,
            recompute_scale_factor=False,
        )
        # PyTorch maps output index o to input (o + 0.5) / scale - 0.5 (in the current grid)
        first = first + step * (0.5 / scale - 0.5)
        step = step / scale
        if list(t.shape[2:]) != out_shape:  # pragma: no cover - PyTorch's own rounding rule
            raise RuntimeError(f"unexpected resampled shape {tuple(t.shape[2:])} != {out_shape}")
    origin = geometry.zyx_to_world(first)
    out_geom = Geometry(
        shape_zyx=(int(t.shape[2]), int(t.shape[3]), int(t.shape[4])),
        spacing_zyx=(float(sp[0] * step[0]), float(sp[1] * step[1]), float(sp[2] * step[2])),
        origin_xyz=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=geometry.direction,
    )
    return t[0, 0].contiguous(), out_geom


def prepare_volume(volume: CTVolume, plan: Plan) -> PreparedVolume:
    """Reorient and resample a CT onto the plan's grid (HU, float32); see the module docstring."""
    canon = reorient(volume)
    hu, geom = resample_hu(canon.array, canon.geometry, plan.spacing_mm)
    return PreparedVolume(hu, geom)
