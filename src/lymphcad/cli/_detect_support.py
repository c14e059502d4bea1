"""What ``detect`` says about its own run: the synthetic-model notice and an honest second-stage record.

Kept out of cli/detect.py (edited by many) so that the wording lives in one small, tested place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_synthetic_model(meta: Mapping[str, Any]) -> bool:
    """Whether a model's metadata says it was trained on synthetic data only."""
    return str(meta.get("training_data") or "").lower().startswith("synthetic")


def is_synthetic_input(cohort_source: str | None) -> bool:
    """Whether the input is a cohort made by lymphcad's generators (phantom, spheres, inserted nodes: its
    dataset.json ``source`` says "synthetic"); a CT file or DICOM folder counts as real."""
    return cohort_source is not None and "synthetic" in cohort_source.lower()


def synthetic_model_notice(model_name: str, meta: Mapping[str, Any], cohort_source: str | None) -> str | None:
    """One line when a model trained on synthetic data runs on a real CT, else None."""
    if not is_synthetic_model(meta) or is_synthetic_input(cohort_source):
        return None
    return (
        f"note: the model {model_name} was trained on synthetic data only (see its model_card.md); on real CT "
        "its findings are a demonstration, not a clinical result — train on real data for that (lymphcad train)"
    )


def second_stage_record(*, requested: bool, flag: bool | None, has_fpr: bool) -> dict[str, Any]:
    """Provenance entries saying whether the false-positive reduction stage ran, and why (not)."""
    used = requested and has_fpr
    if used:
        reason = "the model's second stage (fpr.pt) re-scored the first stage's candidates"
    elif not requested:
        reason = (
            "switched off with --no-second-stage" if flag is False else "the model's settings switch it off"
        )
    else:
        reason = "asked for, but the model has no second stage (no fpr.pt): first-stage scores are reported"
    return {
        "second_stage": used,
        "second_stage_used": used,
        "second_stage_requested": requested,
        "second_stage_reason": reason,
    }
