"""The anatomy builder's frame, typed records and painting helpers (spec §6.2–6.3).

Frame: LPS axes, mm; x = 0 midline, y = 0 body centre, z = 0 carina. Positions in the region modules are
written for a standard body (inner half-axes 140 × 95 mm) and scaled by the case's habitus
(:meth:`AnatomyBuilder.scaled`); organ sizes are not scaled, so lean bodies are crowded (thin fat planes),
as in real lean patients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lymphcad.phantom.canvas import Canvas, smooth_path
from lymphcad.phantom.config import Z_DOME

#: points or per-point values in frame mm
Points = NDArray[np.float64]


@dataclass(frozen=True)
class BodyShape:
    """The body wall of a case (``body`` of its parameters): superellipse outline and layer thicknesses."""

    half_lr: float
    half_ap: float
    exponent: float
    skin_mm: float
    subcut_fat_mm: float
    muscle_mm: float
    #: relative amplitude of the outline's slow change along z
    z_wobble: float

    @property
    def wall_mm(self) -> float:
        """Skin + subcutaneous fat + muscle: from the outline to the body interior."""
        return self.skin_mm + self.subcut_fat_mm + self.muscle_mm


@dataclass(frozen=True)
class AnatomyParams:
    """What the anatomy builders read of a case's parameters (:func:`~lymphcad.phantom.config.sample_case_params`)."""

    body: BodyShape
    #: HU of every tissue of the case (``hu`` of its parameters)
    hu: Mapping[str, float]
    venous_lag: float
    oral_contrast: str  # "positive" | "neutral" | "none"
    dense_venous: bool
    ivc_mixing: bool
    mimic_density: float
    n_lung_vessels: int
    n_mesenteric_veins: int
    pericardial_recess: bool
    collapsed_bowel_fraction: float
    n_small_bowel: int

    @classmethod
    def from_case(cls, params: Mapping[str, Any]) -> AnatomyParams:
        """The record of a case's parameter dict (values are taken as they are, unconverted)."""
        body = params["body"]
        return cls(
            body=BodyShape(
                half_lr=body["half_lr"],
                half_ap=body["half_ap"],
                exponent=body["exponent"],
                skin_mm=body["skin_mm"],
                subcut_fat_mm=body["subcut_fat_mm"],
                muscle_mm=body["muscle_mm"],
                z_wobble=body["z_wobble"],
            ),
            hu=params["hu"],
            venous_lag=params["contrast"]["venous_lag"],
            oral_contrast=params["contrast"]["oral"],
            dense_venous=params["artifacts"]["dense_venous"],
            ivc_mixing=params["artifacts"]["ivc_mixing"],
            mimic_density=params["mimics"]["density"],
            n_lung_vessels=params["mimics"]["n_lung_vessels"],
            n_mesenteric_veins=params["mimics"]["n_mesenteric_veins"],
            pericardial_recess=params["mimics"]["recess"],
            collapsed_bowel_fraction=params["bowel"]["collapsed_fraction"],
            n_small_bowel=params["bowel"]["n_small_bowel"],
        )


@dataclass
class Anchor:
    """A centreline (N×3 frame mm) with radii, used to place nodes beside it."""

    pts: Points
    radius: Points


@dataclass(frozen=True)
class DeferredVessel:
    """A small vessel painted after the nodes (it winds around nodes instead of blocking them)."""

    points: Points  # (N, 3) frame mm
    radii_mm: Points  # (N,)
    hu: float
    tissue: int
    texture_sd: float


@dataclass(frozen=True)
class Mimic:
    """A node mimic the anatomy recorded (a blob-like confounder; a row of ``extra/<case>_mimics.csv``)."""

    #: what it is: "esophagus", "azygos", "crus", "collapsed_bowel", "small_vein_<where>", ...
    kind: str
    #: centre (x, y, z) in mm: the anatomy's frame while building, the world (LPS) in a finished case
    center_xyz: tuple[float, float, float]
    #: its size (diameter) in mm
    size_mm: float

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in self.center_xyz):
            raise ValueError(f"mimic {self.kind!r}: centre must be finite, got {self.center_xyz!r}")
        if not (math.isfinite(self.size_mm) and self.size_mm > 0.0):
            raise ValueError(f"mimic {self.kind!r}: size must be > 0 mm, got {self.size_mm!r}")

    def shifted(self, shift_xyz: NDArray[np.float64]) -> Mimic:
        """The same mimic moved by ``shift_xyz`` mm (frame to world)."""
        x, y, z = (float(v) for v in np.asarray(self.center_xyz) + shift_xyz)
        return Mimic(self.kind, (x, y, z), self.size_mm)


@dataclass
class Anatomy:
    """What the builders leave for node placement and the case files: anchors, mimics, body scale."""

    anchors: dict[str, Anchor] = field(default_factory=dict)
    mimics: list[Mimic] = field(default_factory=list)
    sx: float = 1.0
    sy: float = 1.0
    y_spine: float = 35.0
    dome_params: tuple[float, float] = (0.0, 0.0)
    #: mediastinal envelope knots (z, x, y, a, b) in frame mm: the evaluation region of MED cases
    med_env: tuple[Any, ...] | None = None
    #: small vessels painted after the nodes (they wind around nodes instead of blocking them)
    deferred: list[DeferredVessel] = field(default_factory=list)


def dome_z(x: Any, y: Any, sx: float = 1.0, shift: float = 0.0) -> Any:
    """Height of the diaphragm dome under (x, y): right side higher, lower laterally and posteriorly."""
    xn = x / sx
    side = np.float32(-8.0) / (1.0 + np.exp(-xn / 10.0))  # left dome ~8 mm lower
    return (
        np.float32(Z_DOME + 5 + shift)
        + side
        - 55.0 * (((np.abs(xn) - 55.0) / 95.0) ** 2 + (y / 100.0) ** 2) * (np.abs(xn) > 55.0)
        - 55.0 * (y / 100.0) ** 2 * (np.abs(xn) <= 55.0)
    )


class AnatomyBuilder:
    """The state the region painters share: canvas, case parameters, generator, body scale, results."""

    def __init__(self, canvas: Canvas, params: AnatomyParams, rng: np.random.Generator) -> None:
        self.canvas = canvas
        self.params = params
        self.hu = params.hu
        self.rng = rng
        body = params.body
        inner_half_lr = body.half_lr - body.skin_mm - body.subcut_fat_mm - body.muscle_mm
        inner_half_ap = body.half_ap - body.skin_mm - body.subcut_fat_mm - body.muscle_mm
        self.sx = float(np.clip(inner_half_lr / 140.0, 0.75, 1.3))
        self.sy = float(np.clip(inner_half_ap / 95.0, 0.75, 1.3))
        self.anatomy = Anatomy(sx=self.sx, sy=self.sy)
        self.dome_shift = float(rng.uniform(-10, 10))
        z = canvas.zs
        self.zlo, self.zhi = float(z[0]), float(z[-1])
        #: the body outline's 2D distance maps (one per distinct outline) and each slice's map index,
        #: set by :func:`~lymphcad.phantom.anatomy.body_wall.paint_body_wall` (the lungs reuse them)
        self.base2d: list[NDArray[np.float32]] = []
        self.base_index: NDArray[np.intp] = np.zeros(0, np.intp)

    def scaled(self, *pts: tuple[float, float, float]) -> Points:
        """Scale standard-frame points to this body."""
        arr = np.asarray(pts, dtype=float)
        arr[:, 0] *= self.sx
        arr[:, 1] *= self.sy
        return arr

    def in_z(self, zmin: float, zmax: float) -> bool:
        """Whether [zmin, zmax] comes within 30 mm of the canvas's z range."""
        return zmax >= self.zlo - 30 and zmin <= self.zhi + 30

    def tube(
        self,
        name: str | None,
        knots: Points,
        r: float | Points,
        hu: float,
        tissue: int,
        *,
        jitter: float = 2.0,
        wall: tuple[float, float, int] | None = None,
        **kw: Any,
    ) -> Points:
        """Smooth tube through knots; optional wall (thickness, HU, tissue) painted first; records an anchor."""
        pts = smooth_path(self.rng, knots, n=6, jitter=jitter)
        rr = np.interp(
            np.linspace(0, 1, len(pts)),
            np.linspace(0, 1, len(knots)),
            np.broadcast_to(np.asarray(r, float), (len(knots),)),
        )
        if pts[:, 2].max() < self.zlo - 30 or pts[:, 2].min() > self.zhi + 30:
            return pts
        if wall is not None:
            self.canvas.tube(pts, rr + wall[0], wall[1], wall[2], tex_sd=8, tex_flip=1)
        self.canvas.tube(pts, rr, hu, tissue, **kw)
        if name:
            self.anatomy.anchors[name] = Anchor(pts, rr + (wall[0] if wall else 0.0))
        return pts

    def mimic(self, kind: str, center: Any, size: float) -> None:
        """Record a node mimic (written to ``extra/<case>_mimics.csv``)."""
        c = np.asarray(center, dtype=float)
        self.anatomy.mimics.append(Mimic(kind, (float(c[0]), float(c[1]), float(c[2])), float(size)))

    def ztube(
        self,
        name: str | None,
        zk: Sequence[float],
        xk: Sequence[float],
        yk: Sequence[float],
        ak: Any,
        bk: Any,
        hu: float,
        tissue: int,
        scale: bool = True,
        **kw: Any,
    ) -> None:
        """An elliptic tube along z through knots (x, y scaled to this body unless ``scale=False``)."""
        xs = np.asarray(xk, float) * (self.sx if scale else 1.0)
        ys = np.asarray(yk, float) * (self.sy if scale else 1.0)
        zs = np.asarray(zk, float)
        a = np.broadcast_to(np.asarray(ak, float), zs.shape)
        b = np.broadcast_to(np.asarray(bk, float), zs.shape)
        if not self.in_z(float(zs.min()), float(zs.max())):
            return
        self.canvas.ztube(zs, xs, ys, a, b, hu, tissue, **kw)
        if name:
            order = np.argsort(zs)
            zz = np.linspace(zs.min(), zs.max(), max(2, int((zs.max() - zs.min()) / 5)))
            pts = np.stack(
                [np.interp(zz, zs[order], xs[order]), np.interp(zz, zs[order], ys[order]), zz], axis=1
            )
            rad = 0.5 * (np.interp(zz, zs[order], a[order]) + np.interp(zz, zs[order], b[order]))
            self.anatomy.anchors[name] = Anchor(pts, rad)

    def ellipsoid(
        self,
        c: tuple[float, float, float],
        half: tuple[float, float, float],
        hu: float,
        tissue: int,
        rot: Points | None = None,
        **kw: Any,
    ) -> None:
        """An ellipsoid centred on a standard-frame point (scaled to this body)."""
        self.canvas.ellipsoid(self.scaled(c)[0], half, hu, tissue, rot, **kw)
