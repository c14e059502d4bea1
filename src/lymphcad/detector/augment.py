"""CT-physics intensity augmentation: contrast phase, reconstruction kernel and noise texture.

Real CT differs between scanners and protocols in ways a detector must not learn as "node or not":

* **Contrast phase.** Blood, enhancing organs and (less) nodes gain HU with iodine: unenhanced blood is
  about 40 HU, portal-venous vessels 150–250 HU, CT-angiography 300–500 HU. :func:`enhancement_remap` scales
  the enhancement above a knee (``HU' = knee + k·(HU − knee)`` up to ``top``, continuous and monotonic
  beyond), so one background can look unenhanced (k ≈ 0.2), portal-venous (k ≈ 1) or arterial (k ≈ 2).
  Fat, air and the nodes' own low-HU structure (fatty hilum, necrosis) stay where they are.
* **Reconstruction kernel.** Smooth kernels (B10f, SOFT) blur edges and noise; sharp kernels (LUNG, B70f)
  raise high frequencies. :func:`gaussian_blur3d` and :func:`unsharp` move a patch either way.
* **Slice thickness.** Thick sections (5 mm) average a small node with the fat above and below it, so it
  loses contrast and looks longer in z. With ``p_thick`` a patch is blurred along z only (after the kernel
  step, before the noise, which a thick reconstruction still has).
* **Noise texture.** CT noise is spatially correlated (its power spectrum follows the kernel), so
  :func:`correlated_noise` adds white noise low-passed by a Gaussian and rescaled to the drawn SD.

Everything works on ``(1, 1, Z, Y, X)`` float32 HU tensors and draws its randomness from a
``numpy.random.Generator`` (one seed per epoch keeps ``--resume`` exact).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from lymphcad.detector.config import AugmentConfig

#: HU of unenhanced blood/soft tissue: the knee of the enhancement remap
ENHANCEMENT_KNEE_HU = 40.0
#: above this the remap continues with slope 1 (cortical bone keeps its contrast to enhanced blood)
ENHANCEMENT_TOP_HU = 500.0


def enhancement_remap(
    hu: torch.Tensor, k: float, *, knee: float = ENHANCEMENT_KNEE_HU, top: float = ENHANCEMENT_TOP_HU
) -> torch.Tensor:
    """Scale iodine enhancement by ``k``: ``knee + k·(HU − knee)`` on [knee, top], slope 1 above ``top``."""
    if k <= 0:
        raise ValueError(f"enhancement factor must be positive, got {k}")
    mid = knee + k * (hu.clamp(knee, top) - knee)
    return torch.where(hu < knee, hu, mid + (hu - top).clamp(min=0.0))


def gaussian_blur3d(x: torch.Tensor, sigma: float | tuple[float, float, float]) -> torch.Tensor:
    """Separable Gaussian blur of a ``(1, C, Z, Y, X)`` tensor (σ in voxels per axis; 0 = none)."""
    sig = (sigma, sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    out = x
    for dim, s in enumerate(sig):
        if s <= 0:
            continue
        r = max(1, math.ceil(3 * s))
        k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * s * s))
        k = (k / k.sum()).to(out.dtype)
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = 2 * r + 1
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - dim)] = r
        pad[2 * (2 - dim) + 1] = r
        c = out.shape[1]
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.view(shape).expand(c, 1, *shape[2:]), groups=c)
    return out


def unsharp(x: torch.Tensor, amount: float, sigma: float = 1.0) -> torch.Tensor:
    """Unsharp masking: ``x + amount·(x − blur(x))`` (a sharper reconstruction kernel)."""
    return x + amount * (x - gaussian_blur3d(x, sigma))


def correlated_noise(
    shape: tuple[int, ...], sd: float, corr_sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """Gaussian noise of standard deviation ``sd`` whose texture is white noise blurred by ``corr_sigma``."""
    white = torch.randn(shape, generator=generator)
    if corr_sigma <= 0:
        return sd * white
    smooth = gaussian_blur3d(white, corr_sigma)
    return smooth * (sd / smooth.std().clamp(min=1e-6))


def augment_intensity(hu: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """The whole intensity chain of one patch, in HU: phase → global scale/shift → kernel → slice
    thickness → noise.

    The draw order is fixed (every draw happens whatever the probabilities), so changing a probability
    does not shift the random stream of the other augmentations. The slice thickness, added later, draws
    last and only when ``p_thick`` > 0, so runs made before it keep their stream.
    """
    k = float(np.exp(rng.uniform(np.log(cfg.enhancement_scale[0]), np.log(cfg.enhancement_scale[1]))))
    do_phase = rng.random() < cfg.p_enhancement
    scale = float(rng.uniform(*cfg.intensity_scale))
    shift = float(rng.uniform(-cfg.intensity_shift_hu, cfg.intensity_shift_hu))
    kernel_draw = rng.random()
    blur_sigma = float(rng.uniform(max(cfg.blur_sigma_vox[0], 0.3), max(cfg.blur_sigma_vox[1], 0.3)))
    sharpen = float(rng.uniform(*cfg.sharpen_amount))
    noise_sd = float(rng.uniform(*cfg.noise_sd_hu))
    corr = float(rng.uniform(*cfg.noise_corr_sigma_vox))
    noise_seed = int(rng.integers(2**62))
    thick_sigma = 0.0
    if cfg.p_thick > 0 and rng.random() < cfg.p_thick:  # drawn only when on: older runs keep their stream
        thick_sigma = float(rng.uniform(*cfg.thick_sigma_vox))
    if do_phase and k != 1.0:
        hu = enhancement_remap(hu, k)
    hu = hu * scale + shift
    if kernel_draw < cfg.p_blur and cfg.blur_sigma_vox[1] > 0:
        hu = gaussian_blur3d(hu, blur_sigma)
    elif kernel_draw < cfg.p_blur + cfg.p_sharpen and sharpen > 0:
        hu = unsharp(hu, sharpen)
    if thick_sigma > 0:
        hu = gaussian_blur3d(hu, (thick_sigma, 0.0, 0.0))
    if noise_sd > 0:
        gen = torch.Generator().manual_seed(noise_seed)
        hu = hu + correlated_noise(tuple(hu.shape), noise_sd, corr, gen)
    return hu
