"""Draw the landmarks lymphcad finds on a real contrast-enhanced chest CT (docs/img/landmarks_real_chest.png).

    python benchmarks/landmarks_figure.py [--ct PATH] [--out docs/img/landmarks_real_chest.png]

Default CT: ../shared/data/real-ct/cmb-crc/MSB-01068-chest (TCIA CMB-CRC, CC BY 4.0; cite the collection,
doi:10.7937/djg7-gz87, and TCIA, Clark et al. 2013). Panels: coronal slice through the carina, sagittal slice
through the descending aorta, axial slice just below the carina; radiological convention (patient right on
the image's left, anterior and superior up).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LYMPHCAD_SHARED", str(REPO.parent / "shared")))
DEFAULT_CT = SHARED / "data" / "real-ct" / "cmb-crc" / "MSB-01068-chest"
CITATION = "CT: TCIA CMB-CRC (doi:10.7937/djg7-gz87), CC BY 4.0; TCIA: Clark et al., J Digit Imaging 2013"


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lymphcad import atomic
    from lymphcad.geometry import CTVolume
    from lymphcad.io.reader import read_ct
    from lymphcad.measure.landmarks import axial_view, find_landmarks

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ct", type=Path, default=DEFAULT_CT)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "landmarks_real_chest.png")
    args = ap.parse_args()
    vol = read_ct(args.ct)
    vol = CTVolume(np.asarray(vol.array), vol.geometry)
    t0 = time.perf_counter()
    lm = find_landmarks(vol)
    secs = time.perf_counter() - t0
    view = axial_view(vol)
    g = view.geometry
    hu = view.hu
    if lm.carina_xyz is None:
        raise SystemExit(f"no carina found: {lm.notes}")
    c = lm.carina_xyz
    kc, yc, xc = (round(v) for v in g.world_to_zyx(c))
    lo, hi = g.world_bounds()
    win = dict(cmap="gray", vmin=-1000, vmax=400)
    fig, axes = plt.subplots(1, 3, figsize=(15, 6.2), dpi=110)
    # coronal through the carina: x (patient right on the left) against z (head up)
    ax = axes[0]
    ax.imshow(hu[:, yc, :], origin="lower", extent=(lo[0], hi[0], lo[2], hi[2]), aspect="equal", **win)
    ax.plot(lm.trachea[:, 0], lm.trachea[:, 2], "-", color="#00e5ff", lw=2, label="trachea centreline")
    ax.plot(
        lm.bronchus_right[:, 0],
        lm.bronchus_right[:, 2],
        "-",
        color="#ffd400",
        lw=2,
        label="right main bronchus",
    )
    ax.plot(
        lm.bronchus_left[:, 0], lm.bronchus_left[:, 2], "-", color="#ff8c00", lw=2, label="left main bronchus"
    )
    ax.plot([c[0]], [c[2]], "o", color="red", ms=8, label=f"carina (z {c[2]:.0f} mm)")
    for z, name, col in (
        (lm.arch_top_z, "top of aortic arch", "#ff4fd8"),
        (lm.dome_right_z, "right diaphragm dome", "#7CFC00"),
        (lm.lung_top_z, "lung apices", "#9999ff"),
    ):
        if z is not None:
            ax.axhline(z, color=col, lw=1.2, ls="--", label=f"{name} (z {z:.0f} mm)")
    ax.set_title("coronal through the carina")
    ax.set_xlabel("x (mm, patient right ← → left)")
    ax.set_ylabel("z (mm)")
    ax.legend(loc="lower left", fontsize=7)
    # sagittal through the descending aorta: y (anterior on the left) against z
    ax = axes[1]
    xa = round(g.world_to_zyx(lm.aorta[0, :3])[2]) if len(lm.aorta) else xc
    ax.imshow(hu[:, :, xa], origin="lower", extent=(lo[1], hi[1], lo[2], hi[2]), aspect="equal", **win)
    if len(lm.aorta):
        ax.plot(
            lm.aorta[:, 1], lm.aorta[:, 2], "-", color="#ff4fd8", lw=2, label="descending aorta centreline"
        )
    if len(lm.spine):
        ax.plot(lm.spine[:, 1], lm.spine[:, 2], ".", color="#7CFC00", ms=3, label="vertebral bodies")
    if lm.arch_top_z is not None:
        ax.axhline(lm.arch_top_z, color="#ff4fd8", lw=1.2, ls="--", label="top of aortic arch")
    ax.axhline(c[2], color="red", lw=1.2, ls="--", label="carina level")
    ax.set_title("sagittal through the descending aorta")
    ax.set_xlabel("y (mm, anterior ← → posterior)")
    ax.legend(loc="lower left", fontsize=7)
    # axial just below the carina
    ax = axes[2]
    k = max(0, kc - round(10.0 / g.spacing_zyx[0]))
    z = float(g.zyx_to_world(np.array([k, 0.0, 0.0]))[2])
    ax.imshow(hu[k], origin="upper", extent=(lo[0], hi[0], hi[1], lo[1]), aspect="equal", **win)
    for rows, col, name in (
        (lm.bronchus_right, "#ffd400", "right bronchus"),
        (lm.bronchus_left, "#ff8c00", "left bronchus"),
    ):
        if len(rows):
            i = int(np.argmin(np.abs(rows[:, 2] - z)))
            ax.add_patch(
                plt.Circle((rows[i, 0], rows[i, 1]), rows[i, 3], fill=False, color=col, lw=2, label=name)
            )
    ao = lm.aorta_at(z)
    if ao is not None:
        ax.add_patch(
            plt.Circle((ao[0], ao[1]), ao[2], fill=False, color="#ff4fd8", lw=2, label="descending aorta")
        )
    if lm.ascending_xy is not None:
        x, y, r = lm.ascending_xy
        ax.add_patch(
            plt.Circle((x, y), r, fill=False, color="#ff69b4", lw=2, ls=":", label="ascending aorta")
        )
    ax.set_title(f"axial at z {z:.0f} mm (10 mm below the carina)")
    ax.set_xlabel("x (mm, patient right ← → left)")
    ax.set_ylabel("y (mm, anterior up)")
    ax.legend(loc="lower left", fontsize=7)
    fig.suptitle(
        f"lymphcad landmarks on a real contrast-enhanced chest CT (found in {secs:.1f} s, shared 2-core machine)\n"
        + CITATION,
        fontsize=9,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(args.out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    print(f"wrote {args.out}; carina {np.round(c, 1).tolist()}, arch top {lm.arch_top_z}, notes {lm.notes}")


if __name__ == "__main__":
    main()
