"""Plain summaries of a CT or a cohort for ``lymphcad info``: geometry and intensities, never PHI.

Only technical facts are reported; patient tags (name, id, birth date, ...) are never read into the output.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume


def _fmt_vec(values: tuple[float, ...] | list[float], digits: int = 3) -> str:
    return " × ".join(f"{v:.{digits}f}".rstrip("0").rstrip(".") for v in values)


def volume_facts(volume: CTVolume) -> list[tuple[str, str]]:
    """Size, spacing, orientation, origin and HU statistics of a CT volume."""
    g = volume.geometry
    arr = volume.array
    p1, p50, p99 = np.percentile(arr[:: max(1, arr.shape[0] // 64)], [1, 50, 99])
    return [
        ("size (x × y × z)", " × ".join(str(s) for s in g.size_ijk)),
        ("spacing (x × y × z) mm", _fmt_vec(g.spacing_ijk, 4)),
        ("orientation (i, j, k)", g.orientation_codes() + (" (oblique)" if g.is_oblique() else "")),
        ("origin (LPS mm)", ", ".join(f"{v:.2f}" for v in g.origin_xyz)),
        (
            "HU range",
            f"{int(arr.min())} … {int(arr.max())} (1st/50th/99th percentile {p1:.0f} / {p50:.0f} / {p99:.0f})",
        ),
        ("memory", f"{arr.nbytes / 2**20:.1f} MiB ({arr.dtype})"),
    ]


def describe(path: Path, *, series_uid: str | None = None) -> list[tuple[str, str]]:
    """Facts about a NIfTI file, a DICOM folder/file or a cohort folder, as (label, value) pairs."""
    path = Path(path)
    if path.is_dir() and (path / "dataset.json").is_file():
        return _describe_cohort(path)
    name = path.name.lower()
    if path.is_file() and (name.endswith(".nii") or name.endswith(".nii.gz")):
        from lymphcad.io.nifti import read_nifti

        return [
            ("type", "NIfTI image"),
            ("modality", "CT (assumed: NIfTI stores no modality)"),
            *volume_facts(read_nifti(path)),
        ]
    return _describe_dicom(path, series_uid)


def _describe_dicom(path: Path, series_uid: str | None) -> list[tuple[str, str]]:
    from lymphcad.io.dicom import DicomSeriesError, dicom_summary, list_series

    folder = path if path.is_dir() else path.parent
    all_series = list_series(folder) if path.is_dir() else list_series(path)
    if not all_series:
        raise InputError(
            "no CT image series found (other DICOM objects and non-DICOM files are ignored)", path
        )
    facts: list[tuple[str, str]] = [("type", "DICOM " + ("folder" if path.is_dir() else "file"))]
    for s in all_series:
        facts.append(
            (
                f"CT series {s.series_uid or '(no SeriesInstanceUID)'}",
                f"{s.n_files} file(s), {s.description or '(no description)'}",
            )
        )
    if len(all_series) > 1 and series_uid is None:
        facts.append(("note", "several CT series: choose one with --series UID for details"))
        return facts
    try:
        summary = dicom_summary(path if path.is_dir() else [path], series_uid=series_uid)
    except DicomSeriesError as exc:
        facts.append(("readable as one 3D CT", f"no: {exc.problem}"))
        return facts
    facts.append(("modality", summary["modality"]))
    if "size_ijk" in summary:
        sp = summary["spacing_zyx"]
        facts += [
            ("size (x × y × z)", " × ".join(str(v) for v in summary["size_ijk"])),
            ("spacing (x × y × z) mm", _fmt_vec([sp[2], sp[1], sp[0]], 4)),
            ("orientation (i, j, k)", summary["orientation"]),
            ("origin (LPS mm)", ", ".join(f"{v:.2f}" for v in summary["origin_xyz"])),
        ]
    if "hu_min" in summary:
        facts.append(("HU range", f"{summary['hu_min']} … {summary['hu_max']}"))
    facts += [
        ("slice thickness mm", summary["slice_thickness"] or "(not stated)"),
        ("transfer syntax", ", ".join(summary["transfer_syntaxes"])),
        ("scanner", " ".join(v for v in (summary["manufacturer"], summary["model"]) if v) or "(not stated)"),
    ]
    if "size_ijk" not in summary:  # the slice layout itself is unusable (tilt, mixed orientations, ...)
        facts.append(("readable as one 3D CT", f"no: {summary['problem']}"))
        return facts
    gaps = summary.get("gaps") or []
    facts.append(("gaps", "; ".join(gaps) or "none (uniform slice spacing)"))
    if gaps:
        facts.append(("readable as one 3D CT", "only with --allow-gaps (resamples to uniform spacing)"))
    return facts


def _describe_cohort(path: Path) -> list[tuple[str, str]]:
    from lymphcad.cohort import open_cohort

    cohort = open_cohort(path)
    info = cohort.info
    regions = Counter(info.case_regions.values())
    n_labels = sum(1 for c in cohort.cases if cohort.label_path(c) is not None)
    n_eval = sum(1 for c in cohort.cases if cohort.eval_region_path(c) is not None)
    spacings = np.array([g.spacing_zyx for g in cohort.geometries.values()]) if cohort.geometries else None
    facts = [
        ("type", "cohort (format_version " + info.format_version + ")"),
        ("name", info.name),
        ("source", info.source),
        (
            "cases",
            f"{len(cohort.cases)} (" + ", ".join(f"{k}: {v}" for k, v in sorted(regions.items())) + ")",
        ),
        ("annotated nodes", str(len(cohort.annotations))),
        ("ignore points", str(len(cohort.ignore))),
        ("instance masks", f"{n_labels} case(s)"),
        ("evaluation regions", f"{n_eval} case(s)"),
        ("splits.json", "yes" if cohort.splits_path().is_file() else "no"),
    ]
    if spacings is not None and len(spacings):
        facts.append(
            (
                "slice spacing mm (min/median/max)",
                f"{spacings[:, 0].min():.2f} / {np.median(spacings[:, 0]):.2f} / {spacings[:, 0].max():.2f}",
            )
        )
    facts.append(("license", info.license))
    for i, c in enumerate(info.citation, start=1):
        facts.append((f"citation {i}", c))
    return facts
