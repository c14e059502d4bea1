"""README figure: phantom slices next to real CT slices at the same window (docs/img/phantom_vs_real.png).

.venv/bin/python benchmarks/bench_phantom_figure.py [--shared ../shared] [--out docs/img/phantom_vs_real.png]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def _crop(
    img: np.ndarray, sp: tuple[float, float], fov: float = 360.0
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    ny, nx = img.shape
    ext = (-nx * sp[1] / 2, nx * sp[1] / 2, ny * sp[0] / 2, -ny * sp[0] / 2)
    return img, ext


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("LYMPHCAD_SHARED", "../shared")))
    ap.add_argument("--out", type=Path, default=Path("docs/img/phantom_vs_real.png"))
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lymphcad.io.reader import read_ct
    from lymphcad.phantom import generate_case
    from lymphcad.report.show import canonical

    real_dir = a.shared / "data" / "real-ct"
    abd = read_ct(real_dir / "crlm-ct" / "CRLM-CT-1006")
    ra, _, rsp = canonical(abd.array, abd.geometry)
    # phantom: an abdominal and a mediastinal bench case at d = 0.5
    pa = generate_case(a.seed, 1, "both", 0.5, "bench")
    pm = generate_case(a.seed, 0, "both", 0.5, "bench")
    panels = []
    for case, title in ((pm, "phantom, mediastinal (d = 0.5)"), (pa, "phantom, abdominal (d = 0.5)")):
        img, _, sp = canonical(case.image, case.geometry)
        lab = canonical(case.labels, case.geometry)[0]
        if case.region == "abdominal":  # same level as the real slice: largest liver section
            from lymphcad.phantom.tissue import T

            tis = canonical(case.tissue, case.geometry)[0]
            k = int(np.argmax((tis == T.LIVER).sum(axis=(1, 2))))
        else:
            k = int(np.argmax((lab > 0).sum(axis=(1, 2)))) if lab.any() else img.shape[0] // 2
        panels.append((img[k], lab[k], sp, title))
    kr = int(ra.shape[0] * 0.55)
    panels.insert(
        1, (ra[kr], None, rsp, "real CT: TCIA Colorectal-Liver-Metastases CRLM-CT-1006 (CC BY 4.0)")
    )
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.8), facecolor="black")
    for ax, (img, lab, sp, title) in zip(axes, panels, strict=True):
        ny, nx = img.shape
        ext = (-nx * sp[2] / 2, nx * sp[2] / 2, ny * sp[1] / 2, -ny * sp[1] / 2)
        ax.imshow(img, cmap="gray", vmin=-160, vmax=240, extent=ext, interpolation="bilinear")
        if lab is not None and lab.any():
            ax.contour(
                np.linspace(ext[0], ext[1], nx),
                np.linspace(ext[3], ext[2], ny),
                (lab > 0).astype(float),
                [0.5],
                colors="#33ff33",
                linewidths=0.7,
            )
        ax.set_xlim(-200, 200)
        ax.set_ylim(160, -160)
        ax.set_title(title, color="w", fontsize=9)
        ax.axis("off")
    fig.suptitle(
        "Soft-tissue window W400/L40; patient right on the image's left, anterior up; green: ground-truth nodes "
        "(phantom numbers are never TCIA results)",
        color="w",
        fontsize=9,
    )
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=80, facecolor="black")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
