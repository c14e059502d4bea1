"""The detector's one typed configuration: dataclasses loaded from TOML, overridable, saved resolved.

A config file holds any subset of the sections below; unknown keys are an error naming the key, so a typo
never silently falls back to a default::

    [plan]
    target_spacing_mm = 2.0
    [network]
    base_channels = 16
    [train]
    epochs = 30
    [augment]
    rotate_deg = 15.0
    [detect]
    threshold = 0.05
    precision = "float32"

The dataclasses are frozen: derive a changed copy with :meth:`DetectorConfig.updated` (or
:func:`dataclasses.replace`), so no caller's config changes under it.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from lymphcad import atomic
from lymphcad.errors import InputError


@dataclass(frozen=True)
class PlanConfig:
    """How the preprocessing plan is computed from a training cohort."""

    #: isotropic voxel size (mm) of the network input; the plan never goes finer than the data's median
    target_spacing_mm: float = 2.0
    #: HU window the input is clipped to before normalisation
    hu_window: tuple[float, float] = (-250.0, 350.0)


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the network (see :mod:`lymphcad.detector.network`)."""

    #: channels at stride 2; stride 4 and 8 double them
    base_channels: int = 16
    #: residual blocks per level (stride 2, 4, 8)
    blocks: tuple[int, int, int] = (1, 2, 2)
    #: an auxiliary node-mask head at the heads' stride (Retina U-Net's segmentation loss; also the
    #: per-detection mask output). False keeps the layout of models trained before it existed.
    seg_head: bool = False


@dataclass(frozen=True)
class AugmentConfig:
    """Patch augmentation (applied on the fly to each training patch)."""

    flip: bool = True
    rotate_deg: float = 15.0  # about the cranio-caudal axis, uniform ±
    tilt_deg: float = 5.0  # about the two other axes, uniform ±
    scale: tuple[float, float] = (0.85, 1.15)
    intensity_shift_hu: float = 15.0
    intensity_scale: tuple[float, float] = (0.9, 1.1)
    noise_sd_hu: tuple[float, float] = (0.0, 15.0)
    blur_sigma_vox: tuple[float, float] = (0.0, 0.8)
    p_blur: float = 0.3
    #: contrast phase: enhancement above 40 HU scaled by k, log-uniform in this range, with this probability
    #: (lymphcad.detector.augment.enhancement_remap; (1, 1) = off)
    enhancement_scale: tuple[float, float] = (1.0, 1.0)
    p_enhancement: float = 0.0
    #: a sharper kernel: unsharp masking with an amount drawn here, with this probability (exclusive of blur)
    sharpen_amount: tuple[float, float] = (0.0, 0.0)
    p_sharpen: float = 0.0
    #: noise texture: white noise blurred by σ (voxels) drawn here before scaling to the drawn SD (0 = white)
    noise_corr_sigma_vox: tuple[float, float] = (0.0, 0.0)
    #: anatomy variation: with this probability a smooth random displacement (control points every
    #: ``elastic_grid_vox`` plan voxels, each displaced by a normal draw of SD ``elastic_sd_vox`` per axis,
    #: clipped at 3 SD, trilinear in between) is added to the patch's sampling positions (0 = off)
    p_elastic: float = 0.0
    elastic_sd_vox: float = 1.5
    elastic_grid_vox: float = 16.0
    #: slice thickness: with this probability the patch is blurred along z only (a thicker reconstruction's
    #: slice profile; Gaussian σ in plan voxels drawn here). Drawn only when on, so runs without it keep
    #: their random stream (0 = off)
    p_thick: float = 0.0
    thick_sigma_vox: tuple[float, float] = (0.4, 1.1)


@dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    seed: int = 0
    epochs: int = 30
    iters_per_epoch: int = 100
    batch_size: int = 4
    #: patch size in plan voxels (z, y, x); multiples of 8
    patch_zyx: tuple[int, int, int] = (48, 64, 64)
    #: share of patches centred near a ground-truth node
    p_positive: float = 0.5
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    grad_clip: float = 5.0
    #: loss weights of the size and offset heads (the heatmap's weight is 1)
    w_size: float = 0.5
    w_offset: float = 1.0
    #: weight of the auxiliary mask loss (BCE + soft Dice), used when the network has a seg head
    w_seg: float = 1.0
    #: validate every N epochs (0 = never); needs a non-empty validation fold
    val_every: int = 5
    #: at most this many validation cases per validation run (0 = all)
    val_max_cases: int = 0
    #: nodes with a short axis in [ignore_below_mm, enlarged_mm) are neither positive nor negative
    enlarged_mm: float = 10.0
    ignore_below_mm: float = 8.0
    #: "cpu", "cuda" or "auto"
    device: str = "auto"
    threads: int = 0  # 0 = torch default
    amp: bool = True  # mixed precision on CUDA only


class Precision(StrEnum):
    """The number format the network computes in at inference (weights and blending stay float32).

    ``AUTO`` picks the fastest format the device computes natively: bfloat16 on a CPU with AVX512-BF16 or
    AMX and on a CUDA GPU that has it, float16 on an older GPU, float32 otherwise
    (:func:`lymphcad.detector.precision.compute_dtype`).
    """

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


@dataclass(frozen=True)
class DetectConfig:
    """Inference settings (also the defaults of ``lymphcad detect``)."""

    threshold: float = 0.05
    max_detections: int = 100
    #: two peaks closer than max(nms_min_mm, nms_diameter_factor × the kept one's diameter) are merged
    nms_min_mm: float = 8.0
    nms_diameter_factor: float = 0.5
    #: sliding window size in plan voxels (z, y, x), multiples of 8; overlap as a fraction of the window
    window_zyx: tuple[int, int, int] = (160, 256, 256)
    overlap: float = 0.25
    tta_flips: bool = False
    #: re-score candidates with the second stage when the model folder holds one (fpr.pt)
    second_stage: bool = True
    #: the network's number format at inference (docs/design.md §6); a plain string is converted
    precision: Precision = Precision.AUTO

    def __post_init__(self) -> None:
        value: object = self.precision  # a file or a caller may give the plain string
        if not isinstance(value, Precision):
            try:
                object.__setattr__(self, "precision", Precision(str(value)))
            except ValueError:
                choices = ", ".join(p.value for p in Precision)
                raise ValueError(f"precision must be one of {choices}, got {value!r}") from None


@dataclass(frozen=True)
class DetectorConfig:
    """All sections together."""

    plan: PlanConfig = field(default_factory=PlanConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists)."""
        out: dict[str, Any] = plain(dataclasses.asdict(self))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str | Path | None = None) -> DetectorConfig:
        """Build from a nested dict; missing keys keep their defaults, unknown keys raise InputError."""
        return cls().updated(data, where=where)

    def updated(self, data: dict[str, Any], *, where: str | Path | None = None) -> DetectorConfig:
        """A copy with values overridden from a nested dict (same rules as :meth:`from_dict`).

        ``cfg.updated({"train": {"epochs": 3}})`` changes one value; types are checked as when reading TOML.
        """
        sections: dict[str, Any] = {}
        for section, values in data.items():
            if not hasattr(self, section) or section.startswith("_"):
                raise InputError(f"unknown config section [{section}]", where)
            if not isinstance(values, dict):
                raise InputError(f"config section [{section}] must be a table", where)
            obj = sections.get(section, getattr(self, section))
            fields = {f.name for f in dataclasses.fields(obj)}
            changes: dict[str, Any] = {}
            for key, value in values.items():
                if key not in fields:
                    raise InputError(f"unknown config key {section}.{key}", where)
                changes[key] = _coerce(value, getattr(obj, key), f"{section}.{key}", where)
            sections[section] = dataclasses.replace(obj, **changes)
        return dataclasses.replace(self, **sections)


def plain(value: Any) -> Any:
    """``value`` with tuples as lists and enums as their values: what JSON, TOML and ``torch.save``'s
    safe loader all read back (``dataclasses.asdict`` keeps both)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _coerce(value: Any, current: Any, name: str, where: str | Path | None) -> Any:
    """Convert ``value`` to the type of the default ``current`` (tuples, floats from ints)."""
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise InputError(f"{name} must be true or false, got {value!r}", where)
        return value
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(current):
            raise InputError(f"{name} must be a list of {len(current)} values, got {value!r}", where)
        return tuple(_coerce(v, c, name, where) for v, c in zip(value, current, strict=True))
    if isinstance(current, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{name} must be an integer, got {value!r}", where)
        return value
    if isinstance(current, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{name} must be a number, got {value!r}", where)
        return float(value)
    if isinstance(current, Enum):
        try:
            return type(current)(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in type(current))
            raise InputError(f"{name} must be one of {choices}, got {value!r}", where) from None
    if isinstance(current, str):
        if not isinstance(value, str):
            raise InputError(f"{name} must be a string, got {value!r}", where)
        return value
    return value


def load_config(path: str | Path | None) -> DetectorConfig:
    """Read a TOML config (None = all defaults)."""
    if path is None:
        return DetectorConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read config ({exc.strerror})", path) from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"invalid TOML ({exc})", path) from exc
    return DetectorConfig.from_dict(data, where=path)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def dumps_config(cfg: DetectorConfig) -> str:
    """TOML text of a config (every value written, so the file is the resolved config)."""
    lines: list[str] = ["# lymphcad detector configuration (resolved: every value is written)"]
    for section, values in cfg.to_dict().items():
        lines.append("")
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def save_config(path: str | Path, cfg: DetectorConfig) -> None:
    """Write the resolved config as TOML (atomically)."""
    atomic.write_text(path, dumps_config(cfg))
