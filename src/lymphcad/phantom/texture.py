"""The third image-formation model, **texture**: a node's interior is real tissue texture from the same CT.

The two other models (:mod:`lymphcad.phantom.formation`) keep the background's own noise under the node
(*additive*) or replace it with noise synthesised from the background's stationary noise power spectrum
(*blend*). Neither has texture the scanner actually produced inside the node. This model transplants it:

1. **Source patch** (:meth:`TextureSource.pick`): a box as large as the node's support (where its edge
   opacity is non-zero), lying wholly inside homogeneous thick soft tissue of the same background (muscle,
   spleen / liver parenchyma: class ``SOFT`` of the tissue map, two voxels in-plane from any other class, so
   never vessel lumen, bone, gas, airway or lung), drawn with the node's own generator (``spec.seed + 3``,
   not the case's stream). Boxes in the node's own slices are preferred (the same tube current); a patch
   whose residual has heavy tails (a fascia line, a bowel wall) is refused. When no soft-tissue box fits,
   homogeneous fat is used; when nothing fits, *blend*'s synthetic noise, with a one-line log message.
2. **Texture** ``t``: the patch minus its local mean (in-plane Gaussian of :data:`MEAN_SIGMA_MM`), so only
   the scanner's noise grain, its kernel and the tissue's fine structure remain, randomly flipped in-plane,
   then scaled per slice by the ratio of the noise SD around the node to the noise SD of the source (both
   measured as the high-pass residual's robust SD): the noise level inside matches the level around.
3. **Blend**: ``α`` = the node's coverage blurred by its edge σ (:func:`edge_alpha`);
   ``out = (1 − α)·bg + α·content + sqrt(2α − α²)·t``, the content blurred by :data:`PSF_SIGMA_MM` (a
   typical body kernel's in-plane PSF). Background noise and texture are independent with the same SD σ,
   so the variance ``(1 − α)²σ² + (2α − α²)σ²`` equals σ² across the edge: no halo of lower noise.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from lymphcad.phantom.background import Tissue
from lymphcad.phantom.formation import NoiseModel, edge_alpha, highpass, homogeneous, robust_sd

log = logging.getLogger(__name__)

#: in-plane σ (mm) of the local mean removed from the source patch: what remains is noise and fine structure
MEAN_SIGMA_MM: Final = 3.0
#: in-plane σ (mm) the node's content is blurred by (a body kernel's PSF; the texture carries the real one)
PSF_SIGMA_MM: Final = 0.6
#: the node's support: where its edge opacity exceeds this
SUPPORT_ALPHA: Final = 1e-3
#: a patch is homogeneous when its residual's SD is at most this many robust SDs (no edges, no septa)
MAX_TAIL_RATIO: Final = 1.3
#: candidate boxes tried per tissue kind before falling back to the next kind
TRIES: Final = 12
#: the per-slice scale (noise around / noise of the source) is kept within these bounds
SCALE_RANGE: Final = (1.0 / 3.0, 3.0)
#: a slice's own noise SD needs this many of the node's interior voxels (else the node's whole interior)
MIN_SLICE_VOXELS: Final = 150


class SourceKind(enum.Enum):
    """Where a node's texture came from."""

    SOFT = "soft"  # homogeneous thick soft tissue (muscle, parenchyma)
    FAT = "fat"  # homogeneous fat: no soft-tissue box large enough
    SYNTHETIC = "synthetic"  # nothing fits: the blend model's re-synthesised noise


@dataclass(frozen=True)
class TexturePatch:
    """The source of one node's texture: its kind and box in the background (None when synthetic)."""

    kind: SourceKind
    box: tuple[slice, slice, slice] | None


@dataclass(frozen=True)
class TextureSource:
    """The places of one background that texture may be taken from, computed once per case.

    ``hu`` is the background before any node was written (so no patch ever holds an inserted node);
    ``soft`` / ``fat`` are its homogeneous thick soft tissue and fat (two voxels in-plane from any other class).
    """

    hu: NDArray[np.float32]
    soft: NDArray[np.bool_]
    fat: NDArray[np.bool_]

    @classmethod
    def build(cls, hu: NDArray[Any], tissue: NDArray[np.uint8]) -> TextureSource:
        """Homogeneous soft tissue and fat of a background (its tissue map, :mod:`lymphcad.phantom.background`)."""
        fat = homogeneous(tissue, fat_only=True)
        soft = homogeneous(tissue) & (tissue == Tissue.SOFT)
        return cls(np.asarray(hu, np.float32), soft, fat)

    def mask(self, kind: SourceKind) -> NDArray[np.bool_]:
        """The homogeneous voxels of a source kind."""
        return self.soft if kind is SourceKind.SOFT else self.fat

    def pick(
        self,
        shape: tuple[int, int, int],
        z_start: int,
        rng: np.random.Generator,
        spacing_zyx: tuple[float, float, float],
    ) -> tuple[TexturePatch, NDArray[np.float32]]:
        """A box of ``shape`` wholly inside homogeneous soft tissue (else fat) and its mean-removed residual.

        Boxes starting at slice ``z_start`` (the node's own slices) are preferred; among the candidates a box is
        drawn with ``rng`` until one passes the homogeneity check (:data:`MAX_TAIL_RATIO`). Returns the
        synthetic kind with an empty residual when nothing fits.
        """
        size = np.asarray(shape)
        for kind in (SourceKind.SOFT, SourceKind.FAT):
            m = self.mask(kind)
            if int(m.sum()) < int(size.prod()) or np.any(size > np.asarray(m.shape)):
                continue
            for in_slab in (True, False):  # the whole volume only when the node's slices have no box
                pool = self._starts_in_slab(m, shape, z_start) if in_slab else self._starts(m, shape)
                if len(pool) == 0:
                    continue
                for q in rng.permutation(len(pool))[:TRIES]:
                    k, j, i = (int(v) for v in pool[q])
                    box = (slice(k, k + shape[0]), slice(j, j + shape[1]), slice(i, i + shape[2]))
                    resid = residual(self.hu[box], spacing_zyx)
                    if float(resid.std()) <= MAX_TAIL_RATIO * robust_sd(resid):
                        return TexturePatch(kind, box), resid
        return TexturePatch(SourceKind.SYNTHETIC, None), np.zeros(shape, np.float32)

    @staticmethod
    def _starts(m: NDArray[np.bool_], shape: tuple[int, int, int]) -> NDArray[np.intp]:
        """(N, 3) start corners of every box of ``shape`` wholly inside ``m``."""
        # the minimum over the box centred at c (start c − shape // 2) is 1 only when the box lies inside m
        fits = ndimage.minimum_filter(m.view(np.uint8), size=shape, mode="constant", cval=0)
        return np.asarray(np.argwhere(fits) - np.asarray(shape) // 2, np.intp)

    @staticmethod
    def _starts_in_slab(m: NDArray[np.bool_], shape: tuple[int, int, int], z_start: int) -> NDArray[np.intp]:
        """Start corners of the boxes of ``shape`` wholly inside ``m`` that start at slice ``z_start``."""
        if z_start < 0 or z_start + shape[0] > m.shape[0]:
            return np.zeros((0, 3), np.intp)
        col = m[z_start : z_start + shape[0]].all(axis=0)
        fits = ndimage.minimum_filter(col.view(np.uint8), size=shape[1:], mode="constant", cval=0)
        yx = np.argwhere(fits) - np.asarray(shape[1:]) // 2
        return np.asarray(np.column_stack([np.full(len(yx), z_start), yx]), np.intp)

    def highpass(self, patch: TexturePatch) -> NDArray[np.float32]:
        """The high-pass residual (:func:`lymphcad.phantom.formation.highpass`) of a source box, computed with
        its real neighbours (no border effect): what the source's noise level is measured on."""
        assert patch.box is not None
        zs, ys, xs = patch.box
        ny, nx = self.hu.shape[1:]
        y0, x0 = max(0, ys.start - 1), max(0, xs.start - 1)
        ebox = (zs, slice(y0, min(ny, ys.stop + 1)), slice(x0, min(nx, xs.stop + 1)))
        return highpass(self.hu[ebox])[:, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]


def residual(patch: NDArray[Any], spacing_zyx: tuple[float, float, float]) -> NDArray[np.float32]:
    """A patch minus its local mean (in-plane Gaussian of :data:`MEAN_SIGMA_MM`): noise and fine structure."""
    _, dy, dx = spacing_zyx
    f = np.asarray(patch, np.float32)
    mean = ndimage.gaussian_filter(f, (0.0, MEAN_SIGMA_MM / dy, MEAN_SIGMA_MM / dx), mode="reflect")
    return np.asarray(f - mean, np.float32)


def support_box(alpha: NDArray[np.float32]) -> tuple[slice, slice, slice] | None:
    """The bounding box (within the node's box) where the node's edge opacity exceeds :data:`SUPPORT_ALPHA`."""
    objs = ndimage.find_objects((alpha > SUPPORT_ALPHA).astype(np.int8))
    if not objs or objs[0] is None:
        return None
    s = objs[0]
    return (s[0], s[1], s[2])


def node_texture(
    source: TextureSource,
    alpha: NDArray[np.float32],
    sigma: NDArray[np.float32],
    spacing_zyx: tuple[float, float, float],
    box_z_start: int,
    rng: np.random.Generator,
    model: NoiseModel,
) -> tuple[NDArray[np.float32], TexturePatch]:
    """The texture ``t`` (HU, zero mean, SD ``sigma`` per slice of the node's box) for a node of opacity
    ``alpha``: a real patch (module docstring) or, when none fits, synthetic noise of the background's
    spectrum; zero outside the node's support."""
    t = np.zeros(alpha.shape, np.float32)
    sup = support_box(alpha)
    if sup is None:
        return t, TexturePatch(SourceKind.SYNTHETIC, None)
    shape = (sup[0].stop - sup[0].start, sup[1].stop - sup[1].start, sup[2].stop - sup[2].start)
    patch, resid = source.pick(shape, box_z_start + sup[0].start, rng, spacing_zyx)
    sig = sigma.astype(np.float32)[sup[0]]
    if patch.kind is SourceKind.SYNTHETIC:
        log.warning(
            "texture formation: no homogeneous soft tissue or fat box of %d×%d×%d voxels in this background; "
            "this node uses synthetic noise of the background's spectrum instead",
            *shape,
        )
        t[sup] = model.synthesize(rng, shape, spacing_zyx) * sig[:, None, None]
        return t, patch
    hp = source.highpass(patch)
    if rng.random() < 0.5:
        resid, hp = resid[:, ::-1, :], hp[:, ::-1, :]
    if rng.random() < 0.5:
        resid, hp = resid[:, :, ::-1], hp[:, :, ::-1]
    interior = alpha[sup] >= 0.5
    core = ndimage.binary_erosion(interior, structure=np.ones((1, 3, 3), bool), iterations=2)
    where = core if core.sum() >= 50 else interior
    scale = np.clip(sig / np.maximum(source_sd(hp, where, model), 1e-3), *SCALE_RANGE)
    t[sup] = resid * scale[:, None, None]
    return t, patch


def source_sd(hp: NDArray[np.float32], interior: NDArray[np.bool_], model: NoiseModel) -> NDArray[np.float32]:
    """Noise SD (HU) per slice of a source patch where it becomes the node's interior (robust SD of the
    high-pass residual ``hp`` over ``interior``, converted by the spectrum's high-pass gain, as the noise
    around the node is measured): per slice with :data:`MIN_SLICE_VOXELS` interior voxels, else over the
    whole interior (the patch's centre can be a little quieter or noisier than its border)."""
    pool = hp[interior] if interior.sum() >= 50 else hp.ravel()
    whole = robust_sd(pool) / model.hp_gain
    out = np.full(hp.shape[0], whole, np.float32)
    for k in range(hp.shape[0]):
        if interior[k].sum() >= MIN_SLICE_VOXELS:
            out[k] = robust_sd(hp[k][interior[k]]) / model.hp_gain
    return out


def form_texture(
    bg: NDArray[np.float32],
    alpha: NDArray[np.float32],
    content: NDArray[np.float32],
    texture: NDArray[np.float32],
    spacing_zyx: tuple[float, float, float],
) -> NDArray[np.float32]:
    """``(1 − α)·bg + α·content + sqrt(2α − α²)·t`` in a node's box (module docstring), the content blurred
    by :data:`PSF_SIGMA_MM` in-plane; ``alpha`` is :func:`edge_alpha` of the node's coverage."""
    _, dy, dx = spacing_zyx
    c = ndimage.gaussian_filter(content, (0.0, PSF_SIGMA_MM / dy, PSF_SIGMA_MM / dx))
    w = np.sqrt(np.clip(2.0 * alpha - alpha * alpha, 0.0, 1.0))
    return np.asarray((1.0 - alpha) * bg + alpha * c + w * texture, np.float32)


def write_texture_node(
    bg: NDArray[np.float32],
    coverage: NDArray[np.float32],
    content: NDArray[np.float32],
    edge_mm: float,
    spacing_zyx: tuple[float, float, float],
    sigma: NDArray[np.float32],
    source: TextureSource,
    box_z_start: int,
    seed: int,
    model: NoiseModel,
) -> tuple[NDArray[np.float32], TexturePatch]:
    """One node by the texture model in its box: the new box content and where its texture came from;
    deterministic given ``seed`` (the node's own: ``spec.seed + 3``)."""
    rng = np.random.default_rng(seed)
    alpha = edge_alpha(coverage, edge_mm, spacing_zyx)
    t, patch = node_texture(source, alpha, sigma, spacing_zyx, box_z_start, rng, model)
    return form_texture(bg, alpha, content, t, spacing_zyx), patch
