"""A training run's history: one row per epoch in ``RUN/history.csv`` and the curves drawn from it
(``RUN/curves.png``), shared by both training loops."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from lymphcad import atomic

log = logging.getLogger(__name__)

#: the columns of the single-cohort loop's history (the mixed-data loop adds its own)
HISTORY_COLUMNS: Final = (
    "epoch",
    "iterations",
    "loss",
    "loss_heatmap",
    "loss_size",
    "loss_offset",
    "lr",
    "seconds",
    "val_cpm",
    "val_sens_at_1",
    "val_sens_at_3",
    "val_n_nodes",
)


def read_history(run: Path) -> list[dict[str, str]]:
    """Rows of RUN/history.csv (empty when absent)."""
    p = run / "history.csv"
    if not p.is_file():
        return []
    with p.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_history(
    run: Path,
    rows: Sequence[dict[str, Any]],
    *,
    columns: Sequence[str] = HISTORY_COLUMNS,
    plot: bool = True,
) -> None:
    """Write RUN/history.csv (``columns``) and, when ``plot`` (drawing costs seconds of CPU), RUN/curves.png."""
    atomic.write_csv(run / "history.csv", columns, ([r.get(k, "") for k in columns] for r in rows))
    if not plot:
        return
    try:
        plot_curves(run / "curves.png", rows)
    except Exception as exc:  # plotting must never stop training
        log.warning("could not draw curves: %s", exc)


def _col(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key, "")
        if v in ("", None):
            continue
        xs.append(float(r["epoch"]))
        ys.append(float(v))
    return xs, ys


def plot_curves(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Loss curves (left, log scale) and validation metrics (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "loss_heatmap", "loss_size", "loss_offset"):
        xs, ys = _col(rows, key)
        if xs:
            ax1.plot(xs, ys, label=key, marker="." if len(xs) < 30 else None)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.set_yscale("log")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    for key, label in (
        ("val_cpm", "CPM"),
        ("val_sens_at_1", "sens @ 1 FP/vol"),
        ("val_sens_at_3", "sens @ 3 FP/vol"),
    ):
        xs, ys = _col(rows, key)
        if xs:
            ax2.plot(xs, ys, label=label, marker="o")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation (phantom or insert cohort)")
    ax2.grid(alpha=0.3)
    if ax2.lines:
        ax2.legend(fontsize=8)
    else:
        ax2.text(0.5, 0.5, "no validation run", ha="center", va="center", transform=ax2.transAxes)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
