"""Figure: one node written by each of the three image-formation models (additive, blend, texture) into the
same place of a real contrast abdomen (CRLM-CT-1004), the background before insertion beside them, and a line
profile through the node's centre for all four.

The same seed with one model at a time draws the same nodes at the same places (the formation draw takes one
number from the case's stream whatever the list), so the panels differ only in how the node is written.

Usage: ``python benchmarks/fig_formations.py [--out docs/img/insert_formations.png]``
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lymphcad import atomic
from lymphcad.io.reader import read_ct
from lymphcad.phantom.insert import analyse_background, canonical_volume, insert_nodes
from lymphcad.phantom.nodemodel import Formation

HERE = Path(__file__).resolve().parent
BACKGROUND = "crlm-ct/CRLM-CT-1004"
SEED = 4
COLOURS = {"before": "#888888", "additive": "#1f77b4", "blend": "#d62728", "texture": "#2ca02c"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.environ.get("LYMPHCAD_SHARED", str(HERE.parents[1] / "shared")))
    ap.add_argument("--out", default=str(HERE.parent / "docs" / "img" / "insert_formations.png"))
    a = ap.parse_args()
    vol = canonical_volume(read_ct(Path(a.shared) / "data" / "real-ct" / BACKGROUND))
    an = analyse_background(vol)
    images: dict[str, np.ndarray] = {"before": vol.array}
    res = None
    for f in Formation:
        res = insert_nodes(
            vol,
            4,
            np.random.default_rng(SEED),
            region="abdominal",
            formations=(f,),
            analysis=an,
            p_positive=1.0,
        )
        images[f.value] = res.image
    assert res is not None and res.nodes
    n = max(res.nodes, key=lambda x: x.sad_mm)
    src = n.texture_source
    sp = vol.geometry.spacing_zyx
    m = res.all_nodes == n.id
    zz, yy, xx = np.nonzero(m)
    k = int(np.argmax(np.bincount(zz)))
    j, i = int(np.round(yy[zz == k].mean())), int(np.round(xx[zz == k].mean()))
    h = round(30.0 / sp[1])
    sl = (slice(j - h, j + h), slice(i - h, i + h))
    fig = plt.figure(figsize=(10.5, 4.6))
    gs = fig.add_gridspec(2, 4, height_ratios=(1.0, 0.8))
    for c, (name, img) in enumerate(images.items()):
        ax = fig.add_subplot(gs[0, c])
        ax.imshow(img[k][sl], cmap="gray", vmin=-160, vmax=240, interpolation="nearest")
        ax.axhline(h, color=COLOURS[name], lw=0.5, ls=":")
        ax.set_title(name, fontsize=8, color=COLOURS[name])
        ax.axis("off")
    ax = fig.add_subplot(gs[1, :])
    x_mm = (np.arange(i - h, i + h) - i) * sp[2]
    for name, img in images.items():
        ax.plot(x_mm, img[k, j, i - h : i + h], color=COLOURS[name], lw=0.9, label=name)
    inside = np.nonzero(m[k, j, i - h : i + h])[0]
    if inside.size:
        ax.axvspan(x_mm[inside.min()], x_mm[inside.max()], color="#eeeeee", zorder=0, label="node mask")
    ax.axhline(n.spec.hu, color="k", lw=0.5, ls="--", label=f"node HU {n.spec.hu:.0f}")
    ax.set_xlabel("mm (left-right through the node's centre)", fontsize=8)
    ax.set_ylabel("HU", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    where = (
        ""
        if src is None or src.box is None
        else f"; texture from {src.kind.value} tissue, slices {src.box[0].start}–{src.box[0].stop - 1}"
    )
    fig.suptitle(
        f"lymphcad insert: the same node ({n.station}, SAD {n.sad_mm:.0f} mm, {n.spec.content.value}, edge σ "
        f"{n.spec.edge_mm:.1f} mm) by the three image-formation models{where}\n"
        "real CT CRLM-CT-1004 (TCIA Colorectal-Liver-Metastases, CC BY 4.0); the node is synthetic",
        fontsize=8,
    )
    plt.tight_layout()
    out = Path(a.out)
    with atomic.atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    print(f"node {n.id}: {n.station}, SAD {n.sad_mm:.1f} mm, slice {k}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
