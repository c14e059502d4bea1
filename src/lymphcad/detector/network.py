"""The detection network: a compact 3D residual encoder-decoder with centre-heatmap heads at stride 2.

Input: ``(B, 1, Z, Y, X)`` float32, a CT on the plan's grid (isotropic, default 2 mm), HU normalised to
about [-1, 1]; Z, Y, X multiples of 8. Output: a dict of maps at stride 2 (``(Z/2, Y/2, X/2)``):

* ``"heatmap"``: ``(B, 1, ...)`` logits; sigmoid = probability that a node centre lies in the cell;
* ``"size"``: ``(B, 1, ...)`` log(diameter / 10 mm);
* ``"offset"``: ``(B, 3, ...)`` node centre minus cell centre, in cells, (z, y, x) order;
* ``"seg"`` (only with ``NetworkConfig.seg_head``): ``(B, 1, ...)`` logits of "this cell lies inside an
  enlarged node" — Retina U-Net's auxiliary segmentation output, trained on the synthetic nodes' masks.

Design (docs/design.md): a strided stem (the full-resolution grid is never convolved at width > 1), then three levels at stride 2, 4 and 8
(residual blocks, BatchNorm, ReLU), a light top-down path (nearest upsampling + 1×1 projection, added to
the skip), heads after one 3×3×3 conv. BatchNorm (not instance norm) keeps sliding-window inference
independent of the window's content. About 0.8 M parameters at ``base_channels = 16``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from lymphcad.detector.config import NetworkConfig

#: output stride of every head, in input voxels
STRIDE: Final = 2
#: spatial sizes must be multiples of this (three stride-2 steps)
SIZE_MULTIPLE: Final = 8
#: the heatmap head's bias starts at logit(PRIOR): few cells hold a node centre
PRIOR: Final = 0.01


def _conv(cin: int, cout: int, *, k: int = 3, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel_size=k, stride=stride, padding=k // 2, bias=False)


class ConvBNReLU(nn.Sequential):
    """Conv3d (no bias) → BatchNorm3d → ReLU."""

    def __init__(self, cin: int, cout: int, *, k: int = 3, stride: int = 1) -> None:
        super().__init__(_conv(cin, cout, k=k, stride=stride), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    """Two 3×3×3 convs with an identity shortcut."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(channels, channels)
        self.conv2 = _conv(channels, channels)
        self.bn2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.conv1(x)))
        return F.relu(x + y, inplace=True)


class CenterNet3D(nn.Module):
    """Encoder-decoder with heatmap, size and offset heads (see module docstring)."""

    def __init__(self, config: NetworkConfig | None = None) -> None:
        super().__init__()
        cfg = config or NetworkConfig()
        self.config = cfg
        c = int(cfg.base_channels)
        c1, c2, c3 = c, 2 * c, 4 * c
        b1, b2, b3 = cfg.blocks
        self.stem = nn.Sequential(ConvBNReLU(1, max(4, c // 2), stride=2), ConvBNReLU(max(4, c // 2), c1))
        self.level1 = nn.Sequential(*[ResBlock(c1) for _ in range(b1)])
        self.down2 = ConvBNReLU(c1, c2, stride=2)
        self.level2 = nn.Sequential(*[ResBlock(c2) for _ in range(b2)])
        self.down3 = ConvBNReLU(c2, c3, stride=2)
        self.level3 = nn.Sequential(*[ResBlock(c3) for _ in range(b3)])
        self.lat3 = _conv(c3, c2, k=1)
        self.fuse2 = ConvBNReLU(c2, c2)
        self.lat2 = _conv(c2, c1, k=1)
        self.fuse1 = ConvBNReLU(c1, c1)
        self.head_trunk = ConvBNReLU(c1, c1)
        self.head_heatmap = nn.Conv3d(c1, 1, kernel_size=1)
        self.head_size = nn.Conv3d(c1, 1, kernel_size=1)
        self.head_offset = nn.Conv3d(c1, 3, kernel_size=1)
        self.head_seg = nn.Conv3d(c1, 1, kernel_size=1) if cfg.seg_head else None
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.modules():
            if isinstance(block, ResBlock):
                nn.init.zeros_(block.bn2.weight)  # residual branches start as identity
        for head in (self.head_heatmap, self.head_size, self.head_offset, self.head_seg):
            if head is not None:
                nn.init.normal_(head.weight, std=0.01)
        assert self.head_heatmap.bias is not None
        nn.init.constant_(self.head_heatmap.bias, -math.log((1 - PRIOR) / PRIOR))
        if self.head_seg is not None:
            assert self.head_seg.bias is not None
            nn.init.constant_(self.head_seg.bias, -math.log((1 - PRIOR) / PRIOR))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the network; see the module docstring for shapes."""
        if any(s % SIZE_MULTIPLE for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be a multiple of {SIZE_MULTIPLE}")
        f1 = self.level1(self.stem(x))
        f2 = self.level2(self.down2(f1))
        f3 = self.level3(self.down3(f2))
        p2 = self.fuse2(f2 + F.interpolate(self.lat3(f3), scale_factor=2.0, mode="nearest"))
        p1 = self.fuse1(f1 + F.interpolate(self.lat2(p2), scale_factor=2.0, mode="nearest"))
        t = self.head_trunk(p1)
        out = {
            "heatmap": self.head_heatmap(t),
            "size": self.head_size(t),
            "offset": self.head_offset(t),
        }
        if self.head_seg is not None:
            out["seg"] = self.head_seg(t)
        return out


class EnsembleNet(nn.Module):
    """Several trained networks of one architecture whose outputs are averaged (a model ensemble).

    Members trained apart make partly independent mistakes, so their average ranks true nodes above false
    positives more often than any one of them. Heatmap and mask probabilities are averaged after the
    sigmoid and returned as logits again (so callers apply the sigmoid as for one network); size and
    offset are averaged as they are.
    """

    def __init__(self, members: Sequence[CenterNet3D]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two networks, got {len(members)}")
        if any(m.config != members[0].config for m in members[1:]):
            raise ValueError("the networks of an ensemble must share one architecture (NetworkConfig)")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every member's output, averaged (see the class docstring)."""
        outs = [m(x) for m in self.members]
        merged: dict[str, torch.Tensor] = {}
        for key in outs[0]:
            stack = torch.stack([o[key].float() for o in outs])
            if key in ("heatmap", "seg"):
                merged[key] = torch.logit(torch.sigmoid(stack).mean(0), eps=1e-7)
            else:
                merged[key] = stack.mean(0)
        return merged


#: what inference runs: one network or an ensemble of them
DetectorNet: TypeAlias = CenterNet3D | EnsembleNet


def build_network(config: NetworkConfig | None = None) -> CenterNet3D:
    """The detector network for a config."""
    return CenterNet3D(config)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
