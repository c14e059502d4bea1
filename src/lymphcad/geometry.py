"""The one home of coordinate conventions in lymphcad.

Rules (formats.md §1), stated once here and nowhere else:

* **World** coordinates are millimetres in DICOM patient space, **LPS**: +x to the patient's left,
  +y posterior, +z head. Points and origins are always written ``(x, y, z)``.
* **Voxel indices** in files are 0-based ``(i, j, k) = (column, row, slice)``, ITK order.
* **Arrays** in memory are ``(z, y, x)`` = ``(k, j, i)``. A spacing or shape kept in array order says so
  in its name (``spacing_zyx``, ``shape_zyx``).
* ``direction`` is ITK's 3×3 direction matrix in LPS: column ``c`` is the world unit vector of index
  axis ``c`` (i, j, k). ``world = origin + direction @ (spacing_ijk * ijk)``.
* NIfTI stores a RAS affine: LPS x = -RAS x, LPS y = -RAS y, z unchanged. Only this module flips signs.

Every other module converts through :class:`Geometry`; none multiplies by a direction matrix itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

#: Multiplying a 3-vector by this maps LPS ↔ RAS (the map is its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

_AXIS_LETTERS_LPS = (("L", "R"), ("P", "A"), ("S", "I"))


def _as_points(points: ArrayLike) -> tuple[FloatArray, bool]:
    """Return ``(N, 3)`` float64 points and whether the input was a single point."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.shape == (3,):
        return arr[None, :], True
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"points must have shape (3,) or (N, 3), got {arr.shape}")
    return arr, False


def _restore(points: FloatArray, single: bool) -> FloatArray:
    return points[0] if single else points


@dataclass(frozen=True)
class Geometry:
    """The sampling grid of a 3D image in world LPS mm.

    Attributes:
        shape_zyx: number of voxels along (k, j, i).
        spacing_zyx: voxel size in mm along (k, j, i).
        origin_xyz: world LPS position of voxel (0, 0, 0)'s centre.
        direction: 3×3 orthonormal matrix; column c = world direction of index axis c (i, j, k).
    """

    shape_zyx: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: FloatArray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape_zyx)
        spacing = tuple(float(s) for s in self.spacing_zyx)
        origin = tuple(float(o) for o in self.origin_xyz)
        direction = np.array(self.direction, dtype=np.float64).reshape(3, 3)
        if len(shape) != 3 or any(s < 1 for s in shape):
            raise ValueError(f"shape_zyx must be three positive sizes, got {self.shape_zyx}")
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing_zyx must be three positive finite numbers, got {self.spacing_zyx}")
        if len(origin) != 3 or not all(np.isfinite(o) for o in origin):
            raise ValueError(f"origin_xyz must be three finite numbers, got {self.origin_xyz}")
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise ValueError(f"direction must be orthonormal, got {direction.tolist()}")
        direction.setflags(write=False)
        object.__setattr__(self, "shape_zyx", shape)
        object.__setattr__(self, "spacing_zyx", spacing)
        object.__setattr__(self, "origin_xyz", origin)
        object.__setattr__(self, "direction", direction)

    # -- derived values -------------------------------------------------------------------------
    @property
    def spacing_ijk(self) -> tuple[float, float, float]:
        """Voxel size in ITK order (i, j, k)."""
        z, y, x = self.spacing_zyx
        return (x, y, z)

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        """Number of voxels in ITK order (i, j, k)."""
        z, y, x = self.shape_zyx
        return (x, y, z)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³."""
        return float(np.prod(self.spacing_zyx))

    def affine_lps(self) -> FloatArray:
        """4×4 matrix mapping homogeneous (i, j, k, 1) to LPS (x, y, z, 1)."""
        aff = np.eye(4)
        aff[:3, :3] = self.direction * np.asarray(self.spacing_ijk)[None, :]
        aff[:3, 3] = self.origin_xyz
        return aff

    def affine_ras(self) -> FloatArray:
        """4×4 NIfTI-style matrix mapping (i, j, k, 1) to RAS (x, y, z, 1)."""
        flip = np.eye(4)
        flip[:3, :3] = LPS_TO_RAS
        return flip @ self.affine_lps()

    def orientation_codes(self) -> str:
        """Three letters naming the direction each index axis (i, j, k) points to, in LPS terms.

        An axial CT read from DICOM in the usual way is ``"LPS"``; a NIfTI in RAS storage is ``"RAS"``.
        """
        letters = []
        for c in range(3):
            col = self.direction[:, c]
            axis = int(np.argmax(np.abs(col)))
            pos, neg = _AXIS_LETTERS_LPS[axis]
            letters.append(pos if col[axis] > 0 else neg)
        return "".join(letters)

    def nearest_axes(self) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
        """For each world axis (x, y, z) the index axis (i=0, j=1, k=2) nearest to it and whether it runs
        against it (greedy assignment by largest |cosine|: one-to-one for any orthonormal direction)."""
        d = np.abs(self.direction)
        perm: list[int] = [-1, -1, -1]
        used: set[int] = set()
        for _ in range(3):
            best = (-1.0, -1, -1)
            for a in range(3):
                if perm[a] >= 0:
                    continue
                for c in range(3):
                    if c in used:
                        continue
                    if d[a, c] > best[0]:
                        best = (float(d[a, c]), a, c)
            _, a, c = best
            perm[a] = c
            used.add(c)
        flips = tuple(bool(self.direction[a, perm[a]] < 0) for a in range(3))
        return (perm[0], perm[1], perm[2]), (flips[0], flips[1], flips[2])

    def dicom_orientation(self) -> tuple[float, float, float, float, float, float]:
        """ImageOrientationPatient of this grid's slices: the world directions of the i, then the j axis."""
        d = self.direction
        return (
            float(d[0, 0]), float(d[1, 0]), float(d[2, 0]), float(d[0, 1]), float(d[1, 1]), float(d[2, 1])
        )  # fmt: skip

    def is_right_handed(self) -> bool:
        """Whether k runs along i × j (as in any DICOM series, whose slices readers order along i × j)."""
        return bool(np.linalg.det(self.direction) > 0)

    def is_oblique(self, tol: float = 1e-4) -> bool:
        """True when some index axis is not parallel to a world axis."""
        return bool(np.any(np.abs(np.abs(self.direction).max(axis=0) - 1.0) > tol))

    # -- conversions ----------------------------------------------------------------------------
    def index_to_world(self, ijk: ArrayLike) -> FloatArray:
        """Map (i, j, k) indices (may be fractional), shape (3,) or (N, 3), to world LPS mm."""
        pts, single = _as_points(ijk)
        world = pts * np.asarray(self.spacing_ijk)[None, :] @ self.direction.T + np.asarray(self.origin_xyz)
        return _restore(world, single)

    def world_to_index(self, xyz: ArrayLike) -> FloatArray:
        """Map world LPS mm, shape (3,) or (N, 3), to continuous (i, j, k) indices."""
        pts, single = _as_points(xyz)
        rel = pts - np.asarray(self.origin_xyz)[None, :]
        ijk = (rel @ self.direction) / np.asarray(self.spacing_ijk)[None, :]
        return _restore(ijk, single)

    def zyx_to_world(self, zyx: ArrayLike) -> FloatArray:
        """Map array positions (z, y, x) = (k, j, i), shape (3,) or (N, 3), to world LPS mm."""
        pts, single = _as_points(zyx)
        return _restore(self.index_to_world(pts[:, ::-1]), single)

    def world_to_zyx(self, xyz: ArrayLike) -> FloatArray:
        """Map world LPS mm to continuous array positions (z, y, x)."""
        pts, single = _as_points(xyz)
        return _restore(self.world_to_index(pts)[:, ::-1], single)

    def world_to_voxel_zyx(self, xyz: ArrayLike) -> NDArray[np.int64]:
        """Nearest voxel (z, y, x) of world points (may be out of bounds).

        A point halfway between two voxel centres goes to the higher index (rounded half up:
        ``floor(position + 0.5)``, so -0.5 → 0 and 0.5 → 1 alike), the same rule on both sides of 0.
        """
        pos = self.world_to_zyx(xyz)
        return np.asarray(np.floor(pos + 0.5), dtype=np.int64)

    def contains_world(self, xyz: ArrayLike, *, margin_vox: float = 0.5) -> NDArray[np.bool_]:
        """Whether world points lie inside the image extent (voxel centres ± ``margin_vox``)."""
        pts, single = _as_points(xyz)
        zyx = self.world_to_zyx(pts)
        upper = np.asarray(self.shape_zyx, dtype=np.float64) - 1.0 + margin_vox
        inside = np.all((zyx >= -margin_vox) & (zyx <= upper), axis=1)
        return np.asarray(inside[0] if single else inside, dtype=np.bool_)

    def world_bounds(self) -> tuple[FloatArray, FloatArray]:
        """Axis-aligned world box (min_xyz, max_xyz) covering every voxel in full (centres ± half a voxel)."""
        z, y, x = self.shape_zyx
        corners = np.array(
            [[i, j, k] for i in (-0.5, x - 0.5) for j in (-0.5, y - 0.5) for k in (-0.5, z - 0.5)],
            dtype=float,
        )
        world = self.index_to_world(corners)
        return world.min(axis=0), world.max(axis=0)

    def same_grid(self, other: Geometry, *, atol_mm: float = 1e-3, atol_dir: float = 1e-4) -> bool:
        """True when both geometries sample the same voxels (size, spacing, origin, direction)."""
        return not self.grid_differences(other, atol_mm=atol_mm, atol_dir=atol_dir)

    def grid_differences(
        self, other: Geometry, *, atol_mm: float = 1e-3, atol_dir: float = 1e-4
    ) -> list[str]:
        """Human-readable list of the ways ``other``'s grid differs from this one (empty = same grid)."""
        diffs = []
        if self.shape_zyx != other.shape_zyx:
            diffs.append(f"shape_zyx {other.shape_zyx} != {self.shape_zyx}")
        if not np.allclose(self.spacing_zyx, other.spacing_zyx, atol=atol_mm):
            diffs.append(f"spacing_zyx {_fmt(other.spacing_zyx)} != {_fmt(self.spacing_zyx)}")
        if not np.allclose(self.origin_xyz, other.origin_xyz, atol=atol_mm):
            diffs.append(f"origin_xyz {_fmt(other.origin_xyz)} != {_fmt(self.origin_xyz)}")
        if not np.allclose(self.direction, other.direction, atol=atol_dir):
            diffs.append("direction differs")
        return diffs

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_affine_lps(
        cls,
        affine: ArrayLike,
        shape_zyx: tuple[int, int, int],
        *,
        spacing_zyx: tuple[float, float, float] | None = None,
    ) -> Geometry:
        """Build from a 4×4 (i, j, k) → LPS matrix; a sheared matrix is orthonormalised (nearest rotation).

        The spacing is the columns' lengths unless ``spacing_zyx`` is given (NIfTI readers take ``pixdim``,
        as ITK does); the direction is the columns normalised, then snapped to the nearest rotation.
        """
        aff = np.asarray(affine, dtype=np.float64)
        rot_zoom = aff[:3, :3]
        norms = np.linalg.norm(rot_zoom, axis=0)
        if spacing_zyx is None:
            if np.any(norms <= 0):
                raise ValueError("affine has a zero-length axis")
            spacing = (float(norms[2]), float(norms[1]), float(norms[0]))
        else:
            spacing = (float(spacing_zyx[0]), float(spacing_zyx[1]), float(spacing_zyx[2]))
        direction = rot_zoom / np.where(norms > 0, norms, 1.0)[None, :]
        u, _, vt = np.linalg.svd(direction)
        direction = u @ vt
        return cls(
            shape_zyx=shape_zyx,
            spacing_zyx=spacing,
            origin_xyz=(float(aff[0, 3]), float(aff[1, 3]), float(aff[2, 3])),
            direction=direction,
        )

    @classmethod
    def from_affine_ras(
        cls,
        affine: ArrayLike,
        shape_zyx: tuple[int, int, int],
        *,
        spacing_zyx: tuple[float, float, float] | None = None,
    ) -> Geometry:
        """Build from a NIfTI RAS affine (i, j, k) → RAS (``spacing_zyx``: see :meth:`from_affine_lps`)."""
        flip = np.eye(4)
        flip[:3, :3] = LPS_TO_RAS
        return cls.from_affine_lps(
            flip @ np.asarray(affine, dtype=np.float64), shape_zyx, spacing_zyx=spacing_zyx
        )

    @classmethod
    def from_sitk(cls, image: Any) -> Geometry:
        """Build from a SimpleITK image's metadata (size/spacing in i, j, k order; LPS)."""
        sx, sy, sz = image.GetSize()
        px, py, pz = image.GetSpacing()
        return cls(
            shape_zyx=(sz, sy, sx),
            spacing_zyx=(pz, py, px),
            origin_xyz=tuple(image.GetOrigin()),
            direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
        )

    def apply_to_sitk(self, image: Any) -> None:
        """Copy this geometry into a SimpleITK image (spacing/origin/direction; sizes must agree)."""
        if tuple(image.GetSize()) != self.size_ijk:
            raise ValueError(f"SimpleITK image size {image.GetSize()} != {self.size_ijk}")
        image.SetSpacing(self.spacing_ijk)
        image.SetOrigin(self.origin_xyz)
        image.SetDirection(tuple(float(v) for v in self.direction.ravel()))

    def crop(self, start_zyx: tuple[int, int, int], shape_zyx: tuple[int, int, int]) -> Geometry:
        """Geometry of the sub-grid starting at array index ``start_zyx`` with ``shape_zyx`` voxels."""
        origin = self.zyx_to_world(np.asarray(start_zyx, dtype=float))
        return Geometry(shape_zyx, self.spacing_zyx, tuple(origin), self.direction)

    def resampled(self, spacing_zyx: tuple[float, float, float]) -> Geometry:
        """A grid over the same world extent at a new spacing; voxel (0,0,0) stays at the same corner.

        The new grid starts half a new voxel inside the old corner so both cover the same box.
        """
        old_sp = np.asarray(self.spacing_zyx)
        new_sp = np.asarray(spacing_zyx, dtype=float)
        extent = old_sp * np.asarray(self.shape_zyx)
        shape = np.maximum(1, np.round(extent / new_sp)).astype(int)
        # the corner of voxel (0,0,0) is at index -0.5; new first centre at corner + new_sp/2
        first_zyx = -0.5 + (new_sp / 2.0) / old_sp
        origin = self.zyx_to_world(first_zyx)
        return Geometry(
            (int(shape[0]), int(shape[1]), int(shape[2])),
            (float(new_sp[0]), float(new_sp[1]), float(new_sp[2])),
            (float(origin[0]), float(origin[1]), float(origin[2])),
            self.direction,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (lists)."""
        return {
            "shape_zyx": list(self.shape_zyx),
            "spacing_zyx": list(self.spacing_zyx),
            "origin_xyz": list(self.origin_xyz),
            "direction": self.direction.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Geometry:
        """Inverse of :meth:`to_json`."""
        return cls(
            tuple(data["shape_zyx"]),
            tuple(data["spacing_zyx"]),
            tuple(data["origin_xyz"]),
            np.asarray(data["direction"], dtype=float),
        )


def direction_from_dicom(orientation: ArrayLike) -> FloatArray:
    """The direction matrix of a DICOM slice stack from ImageOrientationPatient (row then column cosines).

    Column 0 is the row direction, column 1 the column direction made orthogonal to it (Gram–Schmidt),
    column 2 their cross product: the slice normal, along which slices are ordered. ValueError for a zero
    row vector or parallel row and column vectors.
    """
    iop = np.asarray(orientation, dtype=np.float64).reshape(6)
    r, c = iop[:3], iop[3:]
    nr = np.linalg.norm(r)
    if nr == 0:
        raise ValueError("ImageOrientationPatient has a zero row vector")
    r = r / nr
    c = c - (c @ r) * r
    nc = np.linalg.norm(c)
    if nc < 1e-3:
        raise ValueError("ImageOrientationPatient row and column vectors are parallel")
    c = c / nc
    return np.stack([r, c, np.cross(r, c)], axis=1)


def positions_along_normal(points_xyz: ArrayLike, direction: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Slice origins (N, 3) against a slice stack's ``direction``: their positions along the slice normal
    (column 2) and how far each lies sideways from the line through the first one along the normal (mm;
    non-zero for a gantry-tilted, sheared stack)."""
    pts = np.asarray(points_xyz, dtype=np.float64).reshape(-1, 3)
    normal = np.asarray(direction, dtype=np.float64)[:, 2]
    rel = pts - pts[0]
    sideways = rel - np.outer(rel @ normal, normal)
    return pts @ normal, np.linalg.norm(sideways, axis=1)


def reorient_to_lps(array: NDArray[Any], geometry: Geometry) -> tuple[NDArray[Any], Geometry]:
    """Permute/flip a (z, y, x) array so its index axes run along +x, +y, +z of LPS; exact, no resampling.

    Each world axis takes its nearest index axis (:meth:`Geometry.nearest_axes`). The returned geometry
    describes the same voxels (its direction is the identity for axis-aligned grids; an oblique grid keeps
    its small rotation). In the result, columns run patient right → left and rows anterior → posterior, so
    an axial slice shown as stored is in the radiological convention; coronal and sagittal slices need only
    their rows flipped (superior up). The array is a view (no copy; ``np.ascontiguousarray`` it when
    needed); an already canonical grid comes back as it is (the same objects).
    """
    perm, flips = geometry.nearest_axes()
    if perm == (0, 1, 2) and not any(flips):
        return array, geometry
    # new index axis a (x, y, z) is old index axis perm[a]; array axes are (k, j, i) = index axes reversed
    arr = np.transpose(array, [2 - perm[2], 2 - perm[1], 2 - perm[0]])
    for a in range(3):
        if flips[a]:
            arr = np.flip(arr, axis=2 - a)
    old_size_ijk = geometry.size_ijk
    old_spacing_ijk = geometry.spacing_ijk
    # old index of the new voxel (0, 0, 0)
    old_first = np.zeros(3)
    for a in range(3):
        c = perm[a]
        old_first[c] = old_size_ijk[c] - 1 if flips[a] else 0
    origin = geometry.index_to_world(old_first)
    direction = np.zeros((3, 3))
    spacing_ijk = [0.0, 0.0, 0.0]
    for a in range(3):
        c = perm[a]
        direction[:, a] = geometry.direction[:, c] * (-1.0 if flips[a] else 1.0)
        spacing_ijk[a] = old_spacing_ijk[c]
    new_geometry = Geometry(
        shape_zyx=(arr.shape[0], arr.shape[1], arr.shape[2]),
        spacing_zyx=(spacing_ijk[2], spacing_ijk[1], spacing_ijk[0]),
        origin_xyz=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=direction,
    )
    return arr, new_geometry


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


@dataclass(frozen=True)
class CTVolume:
    """A CT image: int16 Hounsfield units in array order (z, y, x) plus its :class:`Geometry`.

    The array is never modified in place by lymphcad; functions return new volumes.
    """

    array: NDArray[Any]
    geometry: Geometry

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"CT array must be 3D (z, y, x), got shape {self.array.shape}")
        if tuple(self.array.shape) != self.geometry.shape_zyx:
            raise ValueError(f"array shape {self.array.shape} != geometry shape {self.geometry.shape_zyx}")

    @classmethod
    def from_array(
        cls,
        array: NDArray[Any],
        *,
        spacing_zyx: tuple[float, float, float],
        origin_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0),
        direction: ArrayLike | None = None,
    ) -> CTVolume:
        """Wrap an array (z, y, x) with explicit spacing/origin/direction."""
        geom = Geometry(
            tuple(array.shape),
            spacing_zyx,
            origin_xyz,
            np.eye(3) if direction is None else np.asarray(direction, dtype=float),
        )
        return cls(array, geom)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Array shape (z, y, x)."""
        return self.geometry.shape_zyx

    def with_array(self, array: NDArray[Any]) -> CTVolume:
        """Same geometry, another array of the same shape."""
        return CTVolume(array, self.geometry)


def hu_to_int16(values: NDArray[Any]) -> NDArray[np.int16]:
    """Round HU values half away from zero and clip to the int16 range."""
    arr: NDArray[Any] = np.asarray(values)
    out: NDArray[np.int16]
    if arr.dtype == np.int16:
        out = arr.astype(np.int16, copy=False)
    elif np.issubdtype(arr.dtype, np.integer):
        out = np.clip(arr, -32768, 32767).astype(np.int16)
    else:
        rounded = np.where(arr >= 0, np.floor(arr + 0.5), np.ceil(arr - 0.5))
        out = np.clip(rounded, -32768, 32767).astype(np.int16)
    return out
