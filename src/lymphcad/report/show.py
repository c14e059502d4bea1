"""Pictures of a cohort case: axial and coronal slices through nodes, ground-truth outlines, detections.

Radiological convention (formats.md §1): axial — patient right on the image's left, anterior up;
coronal — patient right on the left, superior up. Volumes are first reoriented to a canonical
LPS-increasing (z, y, x) array so that this holds for any axis-aligned direction matrix.
matplotlib (Agg) is imported lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lymphcad.errors import InputError
from lymphcad.geometry import Geometry, reorient_to_lps

WINDOW = (-160.0, 240.0)  # soft-tissue window (W 400, L 40)


def canonical(
    array: NDArray[Any], geom: Geometry
) -> tuple[NDArray[Any], NDArray[np.float64], NDArray[np.float64]]:
    """Reorient (z, y, x) so index axes run along +z, +y, +x of LPS (nearest axis for oblique grids).

    Returns the array, the per-axis (z, y, x) world start and the per-axis spacing (mm).
    """
    arr, canonical_geom = reorient_to_lps(array, geom)
    spacing = np.asarray(canonical_geom.spacing_zyx, dtype=np.float64)
    lo, _ = geom.world_bounds()
    start = np.array([lo[2], lo[1], lo[0]]) + spacing / 2
    return np.ascontiguousarray(arr), start, spacing


def pick_case(cohort: Any, case_id: str | None) -> str:
    """The case ``show`` draws: ``case_id``, else the first case with nodes, else the first case."""
    return _pick_case(cohort, case_id)


def _pick_case(cohort: Any, case_id: str | None) -> str:
    if case_id is not None:
        if case_id not in cohort.info.cases:
            raise InputError(f"case {case_id!r} is not in the cohort", cohort.root / "dataset.json")
        return case_id
    for c in cohort.cases:
        if cohort.annotations_for(c):
            return str(c)
    if not cohort.cases:
        raise InputError("the cohort has no cases", cohort.root / "dataset.json")
    return str(cohort.cases[0])


def show_cohort(
    cohort_dir: str | Path,
    out: str | Path,
    *,
    case_id: str | None = None,
    dets: str | Path | None = None,
    max_nodes: int = 4,
) -> Path:
    """Draw one case of a cohort (up to ``max_nodes`` rows, one per ground-truth node) into a PNG."""
    from lymphcad.cohort import open_cohort

    cohort = open_cohort(cohort_dir, check_headers=False)
    cid = _pick_case(cohort, case_id)
    vol = cohort.read_image(cid)
    lab = cohort.read_label(cid)
    det_rows: list[tuple[NDArray[np.float64], float, float | None]] = []
    det_text: list[str] = []
    if dets is not None:
        from lymphcad.io.detections import read_detections
        from lymphcad.measure.run import finding_text

        table = read_detections(dets)
        sel = table.case_ids == cid
        for c, p, dm in zip(
            table.centers_xyz[sel], table.probabilities[sel], table.diameters_mm[sel], strict=True
        ):
            det_rows.append((np.asarray(c), float(p), None if not np.isfinite(dm) else float(dm)))
        det_text = [
            finding_text(d) for d in sorted(table.rows(), key=lambda d: -d.probability) if d.case_id == cid
        ]
    anns = cohort.annotations_for(cid)
    points = [np.asarray(a.center_xyz) for a in anns][:max_nodes]
    titles = [f"node {a.node_id}: SAD {a.short_axis_mm or 0:.1f} mm" for a in anns][:max_nodes]
    if not points:  # no node: centre of the volume (or the top detections)
        if det_rows:
            det_rows.sort(key=lambda t: -t[1])
            points = [d[0] for d in det_rows[:max_nodes]]
            titles = det_text[:max_nodes]
        else:
            lo, hi = vol.geometry.world_bounds()
            points = [(lo + hi) / 2]
            titles = ["volume centre"]
    return render_rows(
        vol.array,
        vol.geometry,
        None if lab is None else lab.array,
        points,
        titles,
        det_rows,
        out,
        suptitle=f"{cid} ({cohort.region_of(cid)}) — {cohort.info.source}",
    )


def render_rows(
    image: NDArray[Any],
    geom: Geometry,
    labels: NDArray[Any] | None,
    points: list[NDArray[np.float64]],
    titles: list[str],
    det_rows: list[tuple[NDArray[np.float64], float, float | None]],
    out: str | Path,
    *,
    suptitle: str = "",
    half_fov_mm: float = 60.0,
) -> Path:
    """One row per point: whole axial slice, axial zoom, coronal zoom (radiological convention)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    img, start, sp = canonical(image, geom)
    lab = canonical(labels, geom)[0] if labels is not None else None
    n = len(points)
    fig, axes = plt.subplots(n, 3, figsize=(12, 4.1 * n), squeeze=False, facecolor="black")
    nz, ny, nx = img.shape
    ext_x = (start[2] - sp[2] / 2, start[2] + sp[2] * (nx - 0.5))
    ext_y = (start[1] - sp[1] / 2, start[1] + sp[1] * (ny - 0.5))
    ext_z = (start[0] - sp[0] / 2, start[0] + sp[0] * (nz - 0.5))

    def idx(p: NDArray[np.float64]) -> tuple[int, int, int]:
        k = int(np.clip(np.round((p[2] - start[0]) / sp[0]), 0, nz - 1))
        j = int(np.clip(np.round((p[1] - start[1]) / sp[1]), 0, ny - 1))
        i = int(np.clip(np.round((p[0] - start[2]) / sp[2]), 0, nx - 1))
        return k, j, i

    for r, (p, title) in enumerate(zip(points, titles, strict=True)):
        k, j, _ = idx(p)
        ax0, ax1, ax2 = axes[r]
        # axial: rows = +y (posterior) downward → anterior up; columns = +x (patient left) rightward
        for ax, zoom in ((ax0, False), (ax1, True)):
            ax.imshow(
                img[k],
                cmap="gray",
                vmin=WINDOW[0],
                vmax=WINDOW[1],
                extent=(ext_x[0], ext_x[1], ext_y[1], ext_y[0]),
                interpolation="nearest",
            )
            if lab is not None and lab[k].any():
                ax.contour(
                    np.linspace(start[2], start[2] + sp[2] * (nx - 1), nx),
                    np.linspace(start[1], start[1] + sp[1] * (ny - 1), ny),
                    (lab[k] > 0).astype(float),
                    [0.5],
                    colors="#33ff33",
                    linewidths=0.9,
                )
            for c, prob, dm in det_rows:
                if abs(c[2] - p[2]) <= max(sp[0], (dm or 10.0) / 2):
                    ax.add_patch(Circle((c[0], c[1]), (dm or 10.0) / 2, fill=False, color="#ff3030", lw=1.0))
                    if zoom:
                        ax.text(
                            c[0],
                            c[1] - (dm or 10.0) / 2 - 1,
                            f"{prob:.2f}",
                            color="#ff5050",
                            fontsize=7,
                            ha="center",
                            clip_on=True,  # a label beside the zoom window must not float over the next panel
                        )
            if zoom:
                ax.set_xlim(p[0] - half_fov_mm, p[0] + half_fov_mm)
                ax.set_ylim(p[1] + half_fov_mm, p[1] - half_fov_mm)
            else:
                ax.add_patch(
                    Rectangle(
                        (p[0] - half_fov_mm, p[1] - half_fov_mm),
                        2 * half_fov_mm,
                        2 * half_fov_mm,
                        fill=False,
                        color="#ffcc00",
                        lw=0.8,
                    )
                )
        ax0.set_title(f"axial z={p[2]:.1f} mm  (R | L)", color="w", fontsize=9)
        ax1.set_title(title, color="w", fontsize=9)
        # coronal: rows = z, superior up; columns = x as in axial
        cor = img[:, j, :]
        ax2.imshow(
            cor,
            cmap="gray",
            vmin=WINDOW[0],
            vmax=WINDOW[1],
            extent=(ext_x[0], ext_x[1], ext_z[0], ext_z[1]),
            origin="lower",
            interpolation="nearest",
        )
        if lab is not None and lab[:, j, :].any():
            ax2.contour(
                np.linspace(start[2], start[2] + sp[2] * (nx - 1), nx),
                np.linspace(start[0], start[0] + sp[0] * (nz - 1), nz),
                (lab[:, j, :] > 0).astype(float),
                [0.5],
                colors="#33ff33",
                linewidths=0.9,
            )
        for c, _prob, dm in det_rows:
            if abs(c[1] - p[1]) <= max(sp[1], (dm or 10.0) / 2):
                ax2.add_patch(Circle((c[0], c[2]), (dm or 10.0) / 2, fill=False, color="#ff3030", lw=1.0))
        ax2.set_xlim(p[0] - half_fov_mm, p[0] + half_fov_mm)
        ax2.set_ylim(p[2] - half_fov_mm, p[2] + half_fov_mm)
        ax2.set_title(f"coronal y={p[1]:.1f} mm  (S up)", color="w", fontsize=9)
        for ax in axes[r]:
            ax.set_facecolor("black")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal")
            ax.text(0.01, 0.5, "R", color="#ffcc00", transform=ax.transAxes, fontsize=9, va="center")
            ax.text(0.97, 0.5, "L", color="#ffcc00", transform=ax.transAxes, fontsize=9, va="center")
    if suptitle:
        fig.suptitle(suptitle + "  — green: ground truth, red: detections", color="w", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / max(1, n) / 4.1))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, facecolor="black")
    plt.close(fig)
    return out
