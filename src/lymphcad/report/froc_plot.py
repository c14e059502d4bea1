"""FROC plot (PNG): this run's curves with their bootstrap band, and published operating points as labelled markers.

matplotlib is imported lazily with the Agg backend, so importing this module costs nothing and no display
is needed. Published numbers (``lymphcad.evaluate.literature``) are drawn as hollow markers in a legend
section of their own, labelled "published, real CT Lymph Nodes data", never joined to our curves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lymphcad import atomic
from lymphcad.evaluate.literature import OPERATING_POINTS, PUBLISHED_LABEL
from lymphcad.evaluate.run import BAND_RATES, EvalResult, StratumResult

_COLORS = {"pooled": "#222222", "mediastinal": "#1f77b4", "abdominal": "#d62728"}
_SHORT = {"mediastinal": "MED", "abdominal": "ABD"}
_MARKERS = {"pooled": "o", "mediastinal": "^", "abdominal": "s"}


def _draw_stratum(ax: Any, block: StratumResult, color: str, label: str) -> None:
    curve = block.curve
    if curve is None or block.n_nodes == 0:
        return
    sens = np.interp(BAND_RATES, curve.fps, curve.sensitivity)
    ax.plot(BAND_RATES, sens, color=color, lw=2.0, label=f"{label} (CPM {block.cpm:.3f}, n={block.n_nodes})")
    if block.band_lo is not None and block.band_hi is not None:
        ax.fill_between(BAND_RATES, block.band_lo, block.band_hi, color=color, alpha=0.15, lw=0)


def plot_froc(
    result: EvalResult, path: str | Path, *, title: str | None = None, published: bool = True
) -> Path:
    """Draw pooled and per-region FROC curves with 95 % bootstrap bands; write the PNG atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 5.6), dpi=120)
    try:
        blocks = [("pooled", result.pooled), *result.regions.items()]
        for name, block in blocks:
            _draw_stratum(ax, block, _COLORS.get(name, "#555555"), f"this run: {name}")
        if published:
            for p in OPERATING_POINTS:
                ax.scatter(
                    [p.fp_per_volume],
                    [p.sensitivity],
                    marker=_MARKERS.get(p.region, "D"),
                    facecolors="none",
                    edgecolors=_COLORS.get(p.region, "#555555"),
                    s=55,
                    lw=1.4,
                    zorder=5,
                )
                ax.annotate(
                    f"{p.method} ({_SHORT.get(p.region, 'all')})",
                    (p.fp_per_volume, p.sensitivity),
                    textcoords="offset points",
                    xytext=(5, -3),
                    fontsize=6.5,
                    color="#444444",
                )
            for region, marker in _MARKERS.items():
                ax.scatter(
                    [],
                    [],
                    marker=marker,
                    facecolors="none",
                    edgecolors=_COLORS[region],
                    label=f"{PUBLISHED_LABEL}: {region}",
                )
        for r in (0.125, 0.25, 0.5, 1, 2, 4, 8):
            ax.axvline(r, color="#dddddd", lw=0.6, zorder=0)
        ax.set_xscale("log", base=2)
        ax.set_xlim(0.1, 12.0)
        ax.set_ylim(0.0, 1.02)
        ax.set_xticks([0.125, 0.25, 0.5, 1, 2, 3, 4, 6, 8])
        ax.set_xticklabels(["1/8", "1/4", "1/2", "1", "2", "3", "4", "6", "8"])
        ax.set_xlabel("false positives per volume")
        ax.set_ylabel("sensitivity")
        rule = result.settings
        radius = "auto" if rule.radius_mm is None else f"{rule.radius_mm:g} mm"
        ax.set_title(
            title
            or f"FROC — this run on: {result.source or 'cohort'}\n"
            f"match={rule.match.value}, radius={radius}, duplicates={rule.duplicates.value}; band = 95 % bootstrap CI",
            fontsize=9,
        )
        ax.legend(loc="lower right", fontsize=7, frameon=True)
        if result.citation:
            fig.text(0.01, 0.005, "Data: " + result.citation[0][:160], fontsize=5.5, color="#666666")
        ax.grid(False)
        fig.tight_layout()
        path = Path(path)
        with atomic.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
