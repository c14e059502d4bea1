"""Two of the three independent image-formation models that write a rendered node into a real background (the
third, *texture*, real tissue texture of the same CT, is :mod:`lymphcad.phantom.texture`), and their helpers.

* **additive** (:func:`form_additive`): ``out = bg + G_edge * ((content − smooth(bg)) · coverage)`` — the
  background's own noise and fine structure stay under the node; the edge is the coverage blurred by the
  node's edge σ.
* **blend** (:func:`form_blend`): alpha-blended replacement. ``α = G_edge * coverage``;
  ``out = (1 − α)·bg + α·content + sqrt(2α − α²)·σ_local·n`` where ``n`` is unit-variance noise
  re-synthesised with the background's own noise power spectrum (:class:`NoiseModel`, measured on
  homogeneous patches of the same CT) and ``σ_local`` is the noise SD measured around the node. Inside the
  node the background (noise, septa) is gone and new noise of the same power takes its place; the
  ``sqrt(2α − α²)`` weight keeps the noise variance constant across the edge
  ((1 − α)² + 2α − α² = 1).

:func:`noise_level_ratio` measures what the tests hold both models to: the noise level inside the node
against the background's level around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.phantom.background import Tissue

#: edge of the square patches the noise power spectrum is measured on (pixels)
PATCH: Final = 32
#: high-pass used to measure noise: HU − 3×3 in-plane mean
HP_SIZE: Final = 3


def highpass(a: NDArray[Any]) -> NDArray[np.float32]:
    """In-plane high-pass residual (value − 3×3 mean), per slice."""
    f = a.astype(np.float32)
    return np.asarray(f - ndimage.uniform_filter(f, (1, HP_SIZE, HP_SIZE)), np.float32)


def robust_sd(v: NDArray[Any]) -> float:
    """SD from the median absolute deviation (structure edges are outliers, noise is not)."""
    if v.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


@dataclass(frozen=True)
class NoiseModel:
    """The background's in-plane noise power spectrum, radially averaged (cycles/mm → relative power).

    ``hp_gain`` = SD of high-passed noise / SD of the noise, for noise of this spectrum: it converts a
    high-pass measurement into a noise SD.
    """

    freq: NDArray[np.float64]
    power: NDArray[np.float64]
    hp_gain: float
    sd: float  # global noise SD (HU) of the homogeneous patches

    @classmethod
    def measure(
        cls,
        hu: NDArray[Any],
        tissue: NDArray[np.uint8],
        spacing_zyx: tuple[float, float, float],
        max_patches: int = 300,
    ) -> NoiseModel:
        """Measure on up to ``max_patches`` 32×32 patches that lie wholly inside fat or thick soft tissue."""
        _, dy, dx = spacing_zyx
        nz = hu.shape[0]
        acc = np.zeros((PATCH, PATCH))
        sds: list[float] = []
        n = 0
        ks = np.linspace(0, nz - 1, min(nz, 24)).astype(int)
        for k in ks:
            for cls_ in (Tissue.FAT_SUBCUT, Tissue.FAT_VISC, Tissue.SOFT):
                m = tissue[k] == cls_
                if m.sum() < PATCH * PATCH:
                    continue
                inner = ndimage.binary_erosion(m, structure=np.ones((PATCH, PATCH), bool))
                cand = np.argwhere(inner)
                if len(cand) == 0:
                    continue
                for j, i in cand[:: max(1, len(cand) // 4)][:4]:
                    p = hu[k, j - PATCH // 2 : j + PATCH // 2, i - PATCH // 2 : i + PATCH // 2].astype(
                        np.float64
                    )
                    if p.shape != (PATCH, PATCH):
                        continue
                    # remove a plane (slow background trends are not noise)
                    yy, xx = np.mgrid[0:PATCH, 0:PATCH]
                    A = np.stack([np.ones(PATCH * PATCH), yy.ravel(), xx.ravel()], axis=1)
                    coef, *_ = np.linalg.lstsq(A, p.ravel(), rcond=None)
                    r = p - (A @ coef).reshape(PATCH, PATCH)
                    acc += np.abs(np.fft.fft2(r)) ** 2
                    sds.append(float(r.std()))
                    n += 1
                if n >= max_patches:
                    break
        if n == 0:  # no homogeneous patch: white noise of 20 HU
            f = np.linspace(0, 0.5 / min(dy, dx), 17)
            return cls._finish(f, np.ones_like(f), spacing_zyx, 20.0)
        nps = acc / n
        fy = np.fft.fftfreq(PATCH, dy)
        fx = np.fft.fftfreq(PATCH, dx)
        fr = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
        edges = np.linspace(0, fr.max() + 1e-9, 17)
        idx = np.digitize(fr.ravel(), edges) - 1
        power = np.array([nps.ravel()[idx == b].mean() if np.any(idx == b) else 0.0 for b in range(16)])
        centres = 0.5 * (edges[:-1] + edges[1:])
        power[0] = power[1]  # the plane fit removed the DC term
        return cls._finish(centres, power, spacing_zyx, float(np.median(sds)))

    @classmethod
    def _finish(
        cls,
        freq: NDArray[np.float64],
        power: NDArray[np.float64],
        spacing_zyx: tuple[float, float, float],
        sd: float,
    ) -> NoiseModel:
        tmp = cls(freq, power / max(float(power.max()), 1e-12), 1.0, sd)
        rng = np.random.default_rng(0)
        n = tmp.synthesize(rng, (4, 96, 96), spacing_zyx)
        gain = float(highpass(n)[:, 4:-4, 4:-4].std() / n[:, 4:-4, 4:-4].std())
        return cls(tmp.freq, tmp.power, gain, sd)

    def synthesize(
        self, rng: np.random.Generator, shape: tuple[int, int, int], spacing_zyx: tuple[float, float, float]
    ) -> NDArray[np.float32]:
        """Unit-SD noise with this power spectrum in-plane (slices independent), shape (z, y, x)."""
        _, dy, dx = spacing_zyx
        nz, ny, nx = shape
        py, px = ny + 16, nx + 16  # pad: the FFT filter wraps around
        fy = np.fft.fftfreq(py, dy)
        fx = np.fft.rfftfreq(px, dx)
        fr = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
        amp = np.sqrt(np.interp(fr, self.freq, self.power, right=float(self.power[-1])))
        w = rng.standard_normal((nz, py, px))
        n = np.fft.irfft2(np.fft.rfft2(w, axes=(1, 2)) * amp[None], s=(py, px), axes=(1, 2))[
            :, 8 : 8 + ny, 8 : 8 + nx
        ]
        sd = float(n.std()) if n.size > 1 else 1.0
        return np.asarray(n / max(sd, 1e-9), np.float32)


def homogeneous(tissue: NDArray[np.uint8], *, fat_only: bool = False) -> NDArray[np.bool_]:
    """Voxels where only noise varies: fat (or, unless ``fat_only``, thick soft tissue too), 2 voxels in-plane
    from any other class (a sharp kernel's edge overshoot reaches that far)."""
    out = np.zeros(tissue.shape, bool)
    classes = (
        (Tissue.FAT_VISC, Tissue.FAT_SUBCUT)
        if fat_only
        else (Tissue.FAT_VISC, Tissue.FAT_SUBCUT, Tissue.SOFT)
    )
    for cls_ in classes:
        out |= ndimage.binary_erosion(tissue == cls_, structure=np.ones((1, 3, 3), bool), iterations=2)
    return out


def local_noise_sd(
    hu: NDArray[Any],
    tissue: NDArray[np.uint8],
    box: tuple[slice, slice, slice],
    inside: NDArray[np.bool_],
    model: NoiseModel,
) -> NDArray[np.float32]:
    """Noise SD (HU) around a node, per slice of its box: robust SD of the high-pass residual in homogeneous
    fat of the slice outside the node (fat and thick soft tissue when fat is scarce), converted by the
    spectrum's high-pass gain. The noise level changes from slice to slice (tube-current modulation: ±20 %
    between neighbouring slices of the real chest), so one value per box would not do; slices with too few
    homogeneous voxels take the box's value."""
    hp = highpass(hu[box])
    away = ~ndimage.binary_dilation(inside, structure=np.ones((1, 3, 3), bool), iterations=2)
    fat = homogeneous(tissue[box], fat_only=True) & away
    anyh = homogeneous(tissue[box]) & away
    pool = hp[fat] if fat.sum() >= 200 else hp[anyh]
    whole = robust_sd(pool) / model.hp_gain if pool.size >= 50 else model.sd
    out = np.full(hp.shape[0], whole, np.float32)
    for k in range(hp.shape[0]):
        v = hp[k][fat[k]] if fat[k].sum() >= 150 else hp[k][anyh[k]]
        if v.size >= 150:
            out[k] = robust_sd(v) / model.hp_gain
    return out


def edge_alpha(
    coverage: NDArray[np.float32], edge_mm: float, spacing_zyx: tuple[float, float, float]
) -> NDArray[np.float32]:
    """The coverage blurred in-plane by the node's edge σ (mm): the node's opacity."""
    _, dy, dx = spacing_zyx
    return np.asarray(
        np.clip(ndimage.gaussian_filter(coverage, (0.0, edge_mm / dy, edge_mm / dx)), 0.0, 1.0), np.float32
    )


def form_additive(
    bg: NDArray[np.float32],
    bg_smooth: NDArray[np.float32],
    coverage: NDArray[np.float32],
    content: NDArray[np.float32],
    edge_mm: float,
    spacing_zyx: tuple[float, float, float],
) -> NDArray[np.float32]:
    """Additive contrast in a node's box: background + edge-blurred (content − smooth background) × coverage."""
    _, dy, dx = spacing_zyx
    delta = (content - bg_smooth) * coverage
    delta = ndimage.gaussian_filter(delta, (0.0, edge_mm / dy, edge_mm / dx))
    return np.asarray(bg + delta, np.float32)


def form_blend(
    bg: NDArray[np.float32],
    coverage: NDArray[np.float32],
    content: NDArray[np.float32],
    edge_mm: float,
    spacing_zyx: tuple[float, float, float],
    noise: NDArray[np.float32],
    sigma: NDArray[np.float32],
) -> NDArray[np.float32]:
    """Alpha-blended replacement in a node's box with re-synthesised noise (module docstring); ``sigma`` is
    the local noise SD per slice of the box."""
    a = edge_alpha(coverage, edge_mm, spacing_zyx)
    _, dy, dx = spacing_zyx
    c = ndimage.gaussian_filter(content, (0.0, 0.5 * edge_mm / dy, 0.5 * edge_mm / dx))
    return np.asarray(
        (1.0 - a) * bg
        + a * c
        + np.sqrt(np.clip(2.0 * a - a * a, 0.0, 1.0)) * sigma.astype(np.float32)[:, None, None] * noise,
        np.float32,
    )


@dataclass(frozen=True)
class NoiseCheck:
    """High-pass residuals (3×3) around one node: in its core after insertion, in the same core before, and in
    homogeneous background (fat, thick soft tissue) around it before; the ratios are robust SDs.

    ``ratio_kept`` (after / before in the core) is the additive model's check (it keeps the background's noise);
    ``ratio_around`` (core after / homogeneous surroundings before) is the blend model's (its noise is new and
    must match the noise around the node).
    """

    inside_values: NDArray[np.float32]
    core_before: NDArray[np.float32]
    around_values: NDArray[np.float32]

    @property
    def ratio_kept(self) -> float:
        return robust_sd(self.inside_values) / max(robust_sd(self.core_before), 1e-9)

    @property
    def ratio_around(self) -> float:
        return robust_sd(self.inside_values) / max(robust_sd(self.around_values), 1e-9)


def noise_level_ratio(
    before: NDArray[Any],
    after: NDArray[Any],
    tissue: NDArray[np.uint8],
    node: NDArray[np.bool_],
    pad: int = 12,
    pixel_mm: float | None = None,
) -> NoiseCheck:
    """The high-pass residuals of one node (mask ``node``): its core (eroded in-plane by 2 voxels, or by
    1.6 mm when ``pixel_mm`` is given: one voxel of a 3 mm grid) after and before insertion, and homogeneous
    voxels within 10 voxels around it, in its slices, before."""
    zz, yy, xx = np.nonzero(node)
    box = (
        slice(int(zz.min()), int(zz.max()) + 1),
        slice(max(0, int(yy.min()) - pad), int(yy.max()) + pad + 1),
        slice(max(0, int(xx.min()) - pad), int(xx.max()) + pad + 1),
    )
    m = node[box]
    st = np.ones((1, 3, 3), bool)
    erode = 2 if pixel_mm is None else max(1, round(1.6 / pixel_mm))
    core = ndimage.binary_erosion(m, structure=st, iterations=erode)
    hp_after = highpass(after[box])
    hp_before = highpass(before[box])
    ring = ndimage.binary_dilation(m, structure=st, iterations=10) & ~ndimage.binary_dilation(
        m, structure=st, iterations=2
    )
    ring &= homogeneous(tissue[box])
    return NoiseCheck(hp_after[core], hp_before[core], hp_before[ring])
