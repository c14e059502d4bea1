"""An evaluation's figures as rows of text, shared by `evaluate`'s terminal table and the HTML report.

One list of rows (label, one cell per stratum) so that both show the same figures, formatted alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lymphcad.evaluate.settings import FP_RATE_KEYS

if TYPE_CHECKING:  # the formatting needs no evaluation machinery at import time (the CLI starts fast)
    from lymphcad.evaluate.run import StratumResult


def fmt(value: float | None, digits: int = 3) -> str:
    """A figure to ``digits`` decimals; '–' where there is none (no nodes, no curve)."""
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def fmt_ap(value: float | None) -> str:
    """AP, or 'n/a' where it cannot be computed (no detection has a diameter; see evaluate.explain)."""
    return "n/a" if value is None else fmt(value)


def metric_rows(blocks: Sequence[tuple[str, StratumResult]]) -> list[tuple[str, list[str]]]:
    """Rows (label, cells) of the figures of each (name, stratum) block, in the blocks' order."""

    rows: list[tuple[str, list[str]]] = [
        ("cases", [str(b.n_cases) for _, b in blocks]),
        ("nodes", [str(b.n_nodes) for _, b in blocks]),
        ("detections", [str(b.n_detections) for _, b in blocks]),
    ]
    for k, key in enumerate(FP_RATE_KEYS):
        rows.append((f"sens @{key} FP/vol", [fmt(float(b.sensitivity_at_fp[k])) for _, b in blocks]))
    rows.append(("CPM", [fmt(b.cpm) for _, b in blocks]))
    rows.append(
        (
            "CPM 95 % CI",
            [
                "–" if b.cpm_ci95 is None else f"{fmt(b.cpm_ci95[0], 2)}–{fmt(b.cpm_ci95[1], 2)}"
                for _, b in blocks
            ],
        )
    )
    rows.append(
        ("max FP/vol", [fmt(None if b.curve is None else b.curve.max_fp_per_volume, 2) for _, b in blocks])
    )
    rows.append(("AP @IoU 0.1", [fmt_ap(b.ap[0]) for _, b in blocks]))
    rows.append(("AP @IoU 0.5", [fmt_ap(b.ap[1]) for _, b in blocks]))
    return rows
