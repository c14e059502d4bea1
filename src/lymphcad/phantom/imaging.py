"""CT image formation (spec §6.6): PSF blur, slice profile, correlated CT-like noise, artifacts.

Partial volume is done by the canvas (sub-voxel coverage = the detector-cell and slice box); here the
volume is blurred by a Gaussian in-plane PSF (σxy) and along z by σz (the slice box is already the
voxel integral), then CT noise with a band-pass NPS ∝ f·exp(−f²/fc²) (+5 % floor), correlated along z
with a 3-tap kernel, scaled by a path-length-dependent σ(x, y), is added.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import fft as sfft
from scipy import ndimage

F32 = NDArray[np.float32]


def _upsample_axis(a: F32, axis: int, n_out: int) -> F32:
    n_in = a.shape[axis]
    pos = np.linspace(0, n_in - 1, n_out)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w = (pos - i0).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = n_out
    w = w.reshape(shape)
    out: F32 = np.take(a, i0, axis=axis) * (1 - w) + np.take(a, i1, axis=axis) * w
    return out


def texture_field(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    corr_mm: float = 4.0,
    coarse_mm: float = 2.5,
) -> F32:
    """Unit-SD smooth Gaussian random field (correlation length ≈ corr_mm), built coarse and upsampled."""
    cshape = tuple(max(4, int(np.ceil(n * s / coarse_mm)) + 2) for n, s in zip(shape, spacing, strict=True))
    w = rng.standard_normal(cshape, dtype=np.float32)
    f = ndimage.gaussian_filter(w, corr_mm / coarse_mm / 1.5, mode="wrap")
    f /= f.std() + 1e-6
    out = f
    for axis in (2, 1, 0):  # smallest arrays first; the big last pass copies whole slices
        out = _upsample_axis(out, axis, shape[axis])
    out = np.ascontiguousarray(out, dtype=np.float32)
    out /= out.std() + 1e-6
    return out


def _gauss_taps(sigma_vox: float) -> NDArray[np.float32]:
    r = max(1, int(np.ceil(3.0 * sigma_vox)))
    t = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / sigma_vox) ** 2)
    out: NDArray[np.float32] = (w / w.sum()).astype(np.float32)
    return out


def _conv_axis(vol: F32, taps: NDArray[np.float32], axis: int) -> F32:
    """Symmetric small-kernel convolution along one axis by shifted adds (edges: nearest)."""
    r = len(taps) // 2
    n = vol.shape[axis]
    pad = [(0, 0)] * 3
    pad[axis] = (r, r)
    src = np.pad(vol, pad, mode="edge")
    out = np.multiply(np.take(src, np.arange(r, r + n), axis=axis), taps[r])
    for k in range(1, r + 1):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(r - k, r - k + n)
        hi[axis] = slice(r + k, r + k + n)
        out += taps[r + k] * (src[tuple(lo)] + src[tuple(hi)])
    res: F32 = out
    return res


def blur(vol: F32, spacing_zyx: tuple[float, float, float], psf_xy: float, psf_z: float) -> F32:
    """Separable Gaussian PSF: σxy in-plane, σz along z (mm → voxels)."""
    dz, dy, dx = spacing_zyx
    out = vol
    for axis, s in ((0, psf_z / dz), (1, psf_xy / dy), (2, psf_xy / dx)):
        if s > 0.05:
            out = _conv_axis(out, _gauss_taps(s), axis)
    return out


def nps_filter(ny: int, nx: int, dy: float, dx: float, peak: float, floor: float = 0.05) -> F32:
    """√NPS on the rfft2 grid: NPS(f) ∝ f·exp(−f²/fc²), fc = √2·peak, plus a flat floor (fraction of max)."""
    fy = np.fft.fftfreq(ny, d=dy)[:, None]
    fx = np.fft.rfftfreq(nx, d=dx)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    fc = np.sqrt(2.0) * peak
    nps = f * np.exp(-(f * f) / (fc * fc))
    nps = nps / nps.max()
    nps = nps + floor
    out: F32 = np.sqrt(nps).astype(np.float32)
    return out


def z_kernel(rho: float) -> NDArray[np.float64]:
    """3-tap kernel [a, 1, a] (normalised to unit gain in variance) with lag-1 correlation rho."""
    rho = float(np.clip(rho, 0.0, 0.49))
    if rho <= 0:
        return np.array([0.0, 1.0, 0.0])
    # 2a/(1+2a²) = rho  →  rho·2a² − 2a + rho = 0
    a = (2 - np.sqrt(4 - 8 * rho * rho)) / (4 * rho)
    k = np.array([a, 1.0, a])
    out: NDArray[np.float64] = k / np.sqrt((k * k).sum())
    return out


def correlated_noise(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing_zyx: tuple[float, float, float],
    peak: float,
    rho: float,
    floor: float = 0.05,
    chunk: int = 48,
) -> F32:
    """Unit-SD CT-like noise: per-slice NPS shaping, 3-tap z correlation."""
    nz, ny, nx = shape
    _, dy, dx = spacing_zyx
    filt = nps_filter(ny, nx, dy, dx, peak, floor)
    # normalisation so the filtered white noise has unit variance (Parseval on the full fft grid)
    full = np.concatenate([filt, filt[:, 1 : (nx + 1) // 2][:, ::-1]], axis=1) if nx > 1 else filt
    gain = float(np.sqrt((full.astype(np.float64) ** 2).mean()))
    filt = (filt / gain).astype(np.float32)
    out = np.empty((nz + 2, ny, nx), dtype=np.float32)
    for z0 in range(0, nz + 2, chunk):
        z1 = min(nz + 2, z0 + chunk)
        # uniform white noise (unit variance): after the band-pass NPS filter, which mixes many
        # pixels, the result is Gaussian to within sampling error and costs a fraction of normals
        w = rng.random((z1 - z0, ny, nx), dtype=np.float32)
        w -= np.float32(0.5)
        w *= np.float32(np.sqrt(12.0))
        spec = sfft.rfft2(w, axes=(1, 2))
        spec *= filt[None]
        out[z0:z1] = sfft.irfft2(spec, s=(ny, nx), axes=(1, 2))
    return out


def add_noise(
    vol: F32,
    rng: np.random.Generator,
    body: NDArray[np.bool_],
    spacing_zyx: tuple[float, float, float],
    sigma0: float,
    peak: float,
    rho: float,
    floor: float = 0.05,
    gain: float = 0.25,
    chunk: int = 32,
) -> None:
    """Add σ(x, y)-scaled, z-correlated CT noise to ``vol`` in place (chunked to bound memory)."""
    nz = vol.shape[0]
    pre = correlated_noise(rng, (vol.shape[0], vol.shape[1], vol.shape[2]), spacing_zyx, peak, rho, floor)
    k = z_kernel(rho).astype(np.float32)
    for z0 in range(0, nz, chunk):
        z1 = min(nz, z0 + chunk)
        n = k[0] * pre[z0:z1] + k[1] * pre[z0 + 1 : z1 + 1] + k[2] * pre[z0 + 2 : z1 + 2]
        n *= sigma_map(body[z0:z1], spacing_zyx, sigma0, gain)
        vol[z0:z1] += n


def sigma_map(
    body: NDArray[np.bool_], spacing_zyx: tuple[float, float, float], sigma0: float, gain: float = 0.25
) -> F32:
    """σ(x, y) = σ0·(1 + gain·(path-length factor − 1)); factor = mean of row/column chord lengths / their body means."""
    _, dy, dx = spacing_zyx
    lx = body.sum(axis=2, dtype=np.float32) * dx  # (z, y)
    ly = body.sum(axis=1, dtype=np.float32) * dy  # (z, x)
    cx = (lx > 0).sum(axis=1, keepdims=True)
    cy = (ly > 0).sum(axis=1, keepdims=True)
    mx = np.where(cx > 0, lx.sum(axis=1, keepdims=True) / np.maximum(cx, 1), 1.0).astype(np.float32)
    my = np.where(cy > 0, ly.sum(axis=1, keepdims=True) / np.maximum(cy, 1), 1.0).astype(np.float32)
    fx = np.where(lx > 0, lx / mx, 1.0).astype(np.float32)
    fy = np.where(ly > 0, ly / my, 1.0).astype(np.float32)
    g = np.float32(0.5 * gain * sigma0)
    s = (np.float32(sigma0 * (1 - gain)) + g * fx[:, :, None]) + g * fy[:, None, :]
    return np.clip(s, np.float32(0.6 * sigma0), np.float32(1.6 * sigma0))


@dataclass(frozen=True)
class ArtifactDraws:
    """Which optional artifacts a case drew (``artifacts`` of :func:`~lymphcad.phantom.config.sample_case_params`)."""

    streaks_shoulder: bool
    streaks_pelvis: bool
    beam_hardening: bool
    metal: bool
    #: dense venous contrast (painted by the anatomy; listed among the applied artifacts here)
    dense_venous: bool

    @classmethod
    def from_case(cls, params: Mapping[str, Any]) -> ArtifactDraws:
        """The record of a case's parameter dict."""
        art = params["artifacts"]
        return cls(
            streaks_shoulder=bool(art["streaks_shoulder"]),
            streaks_pelvis=bool(art["streaks_pelvis"]),
            beam_hardening=bool(art["beam_hardening"]),
            metal=bool(art["metal"]),
            dense_venous=bool(art["dense_venous"]),
        )


def add_artifacts(
    vol: F32,
    tissue: NDArray[np.uint8],
    zs: NDArray[np.float32],
    xs: NDArray[np.float32],
    ys: NDArray[np.float32],
    art: ArtifactDraws,
    rng: np.random.Generator,
) -> list[str]:
    """Optional artifacts after noise (spec §2 table). Returns the names of those applied."""
    done = []
    body = tissue > 0
    ny = vol.shape[1]

    def streaks(zmask: NDArray[np.bool_], name: str) -> None:
        ks = np.nonzero(zmask)[0]
        if len(ks) == 0:
            return
        amp = rng.uniform(30, 80)
        for k in ks:
            prof = ndimage.gaussian_filter1d(
                np.asarray(rng.standard_normal(ny), dtype=np.float32), rng.uniform(1.0, 2.5)
            )
            prof *= amp / (prof.std() + 1e-6) * 0.5
            vol[k] += prof[:, None] * body[k]
        done.append(name)

    if art.streaks_shoulder:
        streaks(zs > 75, "streaks_shoulder")
    if art.streaks_pelvis:
        streaks(zs < -420, "streaks_pelvis")
    if art.beam_hardening:
        ks = np.nonzero((zs < -455) & (zs > -495))[0]
        if len(ks):
            band = (-rng.uniform(20, 60) * np.exp(-(((ys - 4.0) / 6.0) ** 2)))[:, None] * (np.abs(xs) < 80)[
                None, :
            ]
            vol[ks] += band.astype(np.float32)[None] * body[ks]
            done.append("beam_hardening")
    if art.metal:
        bone_or_soft = np.argwhere(tissue[:, ::8, ::8] == 3)
        if len(bone_or_soft):
            k, j, i = bone_or_soft[int(rng.integers(len(bone_or_soft)))] * np.array([1, 8, 8])
            yy, xx = np.mgrid[0:ny, 0 : vol.shape[2]].astype(np.float32)
            th = np.arctan2(yy - j, xx - i)
            rr = np.hypot(yy - j, xx - i)
            nst = int(rng.integers(4, 9))
            for kk in range(max(0, k - 2), min(vol.shape[0], k + 3)):
                vol[kk] += (300 * np.cos(nst * th) * np.exp(-rr / 40.0) * body[kk]).astype(np.float32)
                vol[kk][rr < 2.0] = 3000.0
            done.append("metal")
    if art.dense_venous:
        done.append("dense_venous")
    return done


def finalize(vol: F32) -> NDArray[np.int16]:
    """Round to the nearest integer and clip to the stored CT range [−1024, 3071]."""
    np.clip(vol, -1024.0, 3071.0, out=vol)
    np.rint(vol, out=vol)
    return vol.astype(np.int16)
