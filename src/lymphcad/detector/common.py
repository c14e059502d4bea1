"""What both detector stages share at training and inference time: device choice, the learning-rate
schedule, and loading training cases with their truth.

It sits below :mod:`~lymphcad.detector.train`, :mod:`~lymphcad.detector.fpr_train` and the command line,
so none of them needs to import another's module for these (inference never imports training).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

from lymphcad.cohort import Cohort, TruthMode
from lymphcad.detector.plan import Plan
from lymphcad.detector.sampling import (
    NodeTruth,
    TrainCase,
    load_case,
    truth_from_annotations,
    truth_from_extra,
)
from lymphcad.errors import UsageError

_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` → a torch device.

    ``auto`` takes CUDA when present; plain ``cuda`` means device ``local_rank`` (one per process under
    torchrun). UsageError when CUDA (or that device index) is asked for but absent, or the name is unknown.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    index: int | None = local_rank if name == "cuda" else None
    match = _CUDA_INDEX.fullmatch(name)
    if match:
        index = int(match.group(1))
    if index is None:
        raise UsageError(f"unknown device {name!r} (cpu, cuda, cuda:N or auto)")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available")
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    return torch.device("cuda", index)


def lr_factor(it: int, *, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` iterations, then cosine decay to 1 % at ``total``."""
    if warmup > 0 and it < warmup:
        return (it + 1) / warmup
    progress = min(1.0, (it - warmup) / max(1, total - warmup))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


def case_truth_for_training(
    cohort: Cohort,
    case_id: str,
    truth: TruthMode | str,
    *,
    enlarged_mm: float,
    ignore_below_mm: float,
) -> NodeTruth:
    """The training truth of a case: annotations.csv (``labels``) or the phantom's full truth (``extra``).

    ``enlarged_mm`` / ``ignore_below_mm`` split the full truth into positives, ignored findings and
    negatives (unused for ``labels``).
    """
    if TruthMode.parse(truth) is TruthMode.LABELS:
        return truth_from_annotations(cohort, case_id)
    return truth_from_extra(cohort, case_id, enlarged_mm=enlarged_mm, ignore_below_mm=ignore_below_mm)


def load_cases(
    cohort: Cohort,
    case_ids: Sequence[str],
    plan: Plan,
    truth: TruthMode | str,
    *,
    enlarged_mm: float,
    ignore_below_mm: float,
) -> list[TrainCase]:
    """Prepare cases on the plan grid with their training truth (see :func:`case_truth_for_training`)."""
    return [
        load_case(
            cohort,
            c,
            plan,
            case_truth_for_training(
                cohort, c, truth, enlarged_mm=enlarged_mm, ignore_below_mm=ignore_below_mm
            ),
        )
        for c in case_ids
    ]
