"""Which number format the network runs in at inference, and the context that makes it do so.

On a CPU with native bfloat16 (AVX512-BF16 or AMX) the network's 3D convolutions run 2.5–3 times
faster in bfloat16 with channels-last activations than in float32 (``benchmarks/bench_precision.py``),
with the scores of confident detections changed by under 0.01; on a CPU without it bfloat16 is emulated and
slower, so :attr:`Precision.AUTO` keeps float32 there. On CUDA, autocast's bfloat16 (Ampere and newer) or
float16 is the usual mixed precision. Only the network's layers change format: weights stay float32 and
the blending of windows, peaks and everything after run in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from lymphcad.detector.config import Precision
from lymphcad.errors import UsageError

_DTYPES: dict[Precision, torch.dtype] = {
    Precision.FLOAT32: torch.float32,
    Precision.BFLOAT16: torch.bfloat16,
    Precision.FLOAT16: torch.float16,
}


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (not by emulation)."""
    if device.type == "cuda":  # Ampere (compute capability 8) and newer; older GPUs only emulate it
        return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's probes of CPUID
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def compute_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    """The dtype the network computes in for ``precision`` on ``device`` (``AUTO`` resolved).

    Raises UsageError for float16 on a CPU: PyTorch's CPU float16 convolutions are slow, and float16's
    narrow range gains nothing there over bfloat16, so it is refused rather than silently used.
    """
    if precision is Precision.AUTO:
        if native_bfloat16(device):
            return torch.bfloat16
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision is Precision.FLOAT16 and device.type != "cuda":
        raise UsageError("precision float16 needs a CUDA device; use bfloat16 or float32 on a CPU")
    return _DTYPES[precision]


def concrete_precision(precision: Precision, device: torch.device) -> Precision:
    """``precision`` with ``AUTO`` replaced by what it means on ``device`` (for fingerprints and provenance)."""
    dtype = compute_dtype(precision, device)
    return next(p for p, d in _DTYPES.items() if d == dtype)


def activation_format(dtype: torch.dtype, device: torch.device) -> torch.memory_format:
    """Channels-last 3D for reduced precision on a CPU (oneDNN's fast layout), contiguous otherwise."""
    if device.type == "cpu" and dtype != torch.float32:
        return torch.channels_last_3d
    return torch.contiguous_format


@contextlib.contextmanager
def computing_in(dtype: torch.dtype, device: torch.device) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device`` for the block (nothing for float32)."""
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
        yield
