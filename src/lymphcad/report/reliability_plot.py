"""Reliability diagram (PNG): hit rate against mean probability per bin, with the ECE and the bin counts.

matplotlib is imported lazily with the Agg backend (no display needed), as in :mod:`froc_plot`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lymphcad import atomic


def plot_reliability(block: dict[str, Any], path: str | Path, *, title: str = "Reliability") -> Path:
    """Draw eval.json's calibration block (:func:`lymphcad.measure.agreement.calibration_block`) to a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    bins = block["bins"]
    lo = np.array([b["lo"] for b in bins])
    hi = np.array([b["hi"] for b in bins])
    n = np.array([b["n"] for b in bins])
    mean_p = np.array([np.nan if b["mean_probability"] is None else b["mean_probability"] for b in bins])
    rate = np.array([np.nan if b["hit_rate"] is None else b["hit_rate"] for b in bins])
    ece_key = next(k for k in block if k.startswith("ece_"))
    ece = block[ece_key]
    fig, (ax, axn) = plt.subplots(
        2, 1, figsize=(5.2, 6.2), dpi=110, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        ax.plot([0, 1], [0, 1], color="#888888", lw=1, ls="--", label="perfect calibration")
        ax.bar(
            lo,
            np.nan_to_num(rate),
            width=hi - lo,
            align="edge",
            color="#1f77b4",
            alpha=0.35,
            label="hit rate",
        )
        ok = n > 0
        ax.plot(mean_p[ok], rate[ok], "o-", color="#1f77b4", label="hit rate at mean probability")
        ax.set_ylabel("fraction of detections that hit a node")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ece_text = "–" if ece is None else f"{ece:.3f}"
        ax.set_title(
            f"{title}\nECE ({len(bins)} bins) = {ece_text}, n = {block['n_detections']}", fontsize=10
        )
        ax.legend(loc="upper left", fontsize=8)
        axn.bar(lo, n, width=hi - lo, align="edge", color="#555555")
        axn.set_yscale("log" if n.max(initial=0) > 50 else "linear")
        axn.set_xlabel("probability")
        axn.set_ylabel("detections")
        fig.tight_layout()
        with atomic.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)
