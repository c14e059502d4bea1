"""Plain summaries of a CT or a cohort for ``lymphcad info``: geometry and intensities, never PHI.

Only technical facts are reported; patient tags (name, id, birth date, ...) are never read into the output.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume, hu_to_int16
from lymphcad.io.checks import finite_hu, warn_if_not_hu
from lymphcad.io.itkimage import itk_format, read_itk_array


def _fmt_num(value: float, digits: int = 4) -> str:
    """A number with up to ``digits`` decimals and no trailing zeros (5.000000 → 5, 1.25 → 1.25)."""
    return f"{value:.{digits}f}".rstrip("0").rstrip(".")


def _fmt_vec(values: tuple[float, ...] | list[float], digits: int = 3) -> str:
    return " × ".join(_fmt_num(v, digits) for v in values)


#: The fact that says whether a path can be used as a CT; ``info`` exits 1 when its value starts with "no".
READABLE = "readable as one 3D CT"


def volume_facts(
    volume: CTVolume, *, stored_dtype: str | None = None, path: Path | None = None
) -> list[tuple[str, str]]:
    """Size, spacing, orientation, origin and HU statistics of a CT volume.

    ``stored_dtype``: the voxel type in the file, when it differs from the int16 HU held in memory.
    """
    g = volume.geometry
    arr = volume.array
    p1, p50, p99 = np.percentile(arr[:: max(1, arr.shape[0] // 64)], [1, 50, 99])
    single = g.shape_zyx[0] == 1
    spacing = _fmt_vec(g.spacing_ijk[:2], 4) + (
        " × — (one slice)" if single else f" × {_fmt_num(g.spacing_ijk[2])}"
    )
    memory = f"{arr.nbytes / 2**20:.1f} MiB as {arr.dtype} HU"
    if stored_dtype is not None and stored_dtype != str(arr.dtype):
        memory += f" (stored as {stored_dtype} in the file)"
    facts = [
        ("size (x × y × z)", " × ".join(str(s) for s in g.size_ijk)),
        ("spacing (x × y × z) mm", spacing),
        ("orientation (i, j, k)", g.orientation_codes() + (" (oblique)" if g.is_oblique() else "")),
        ("origin (LPS mm)", ", ".join(f"{v:.2f}" for v in g.origin_xyz)),
        (
            "HU range",
            f"{int(arr.min())} … {int(arr.max())} (1st/50th/99th percentile {p1:.0f} / {p50:.0f} / {p99:.0f})",
        ),
        ("memory", memory),
    ]
    if min(g.shape_zyx) == 1:
        where = "" if path is None else f"{path}: "
        facts.append((READABLE, f"no: {where}a single slice (2D image); lymphcad needs a 3D CT volume"))
    return facts


def describe(path: Path, *, series_uid: str | None = None) -> list[tuple[str, str]]:
    """Facts about a NIfTI/NRRD/MetaImage file, a DICOM folder/file or a cohort folder, as (label, value) pairs.

    When the CT cannot be used, the fact :data:`READABLE` says ``no: <file>: <problem>``.
    """
    path = Path(path)
    if path.is_dir() and (path / "dataset.json").is_file():
        return _describe_cohort(path)
    name = path.name.lower()
    if path.is_file() and (name.endswith(".nii") or name.endswith(".nii.gz")):
        from lymphcad.io.nifti import read_nifti

        header_dtype = _nifti_stored_dtype(path)
        volume = read_nifti(path)
        warn_if_not_hu(volume, path)
        return [
            ("type", "NIfTI image"),
            ("modality", "CT (assumed: NIfTI stores no modality)"),
            *volume_facts(volume, stored_dtype=header_dtype, path=path),
        ]
    fmt = itk_format(path)
    if path.is_file() and fmt is not None:
        array, geometry = read_itk_array(path)
        volume = CTVolume(hu_to_int16(finite_hu(array, path)), geometry)
        warn_if_not_hu(volume, path)
        return [
            ("type", f"{fmt} image"),
            ("modality", f"CT (assumed: {fmt} stores no modality)"),
            *volume_facts(volume, stored_dtype=str(array.dtype), path=path),
        ]
    return _describe_dicom(path, series_uid)


def _nifti_stored_dtype(path: Path) -> str:
    import nibabel as nib

    try:
        header: Any = nib.load(str(path)).header
    except Exception as exc:
        raise InputError(f"not a readable NIfTI file ({exc.__class__.__name__}: {exc})", path) from exc
    dtype = str(header.get_data_dtype())
    slope, inter = header.get_slope_inter()
    if slope not in (None, 1.0) or inter not in (None, 0.0):
        dtype += f", scaled by {_fmt_num(float(slope or 1.0))} + {_fmt_num(float(inter or 0.0))}"
    return dtype


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
    except DicomSeriesError as exc:  # e.g. a truncated file: str(exc) names it
        facts.append((READABLE, f"no: {exc}"))
        return facts
    facts.append(("modality", summary["modality"]))
    single = summary.get("n_slices") == 1
    if "size_ijk" in summary:
        sp = summary["spacing_zyx"]
        facts += [
            ("size (x × y × z)", " × ".join(str(v) for v in summary["size_ijk"])),
            (
                "spacing (x × y × z) mm",
                _fmt_vec([sp[2], sp[1]], 4) + (" × — (one slice)" if single else f" × {_fmt_num(sp[0])}"),
            ),
            ("orientation (i, j, k)", summary["orientation"]),
            ("origin (LPS mm)", ", ".join(f"{v:.2f}" for v in summary["origin_xyz"])),
        ]
    if "hu_min" in summary:
        facts.append(("HU range", f"{summary['hu_min']} … {summary['hu_max']}"))
    facts += [
        ("slice thickness mm", _thickness(summary["slice_thickness"])),
        ("transfer syntax", ", ".join(summary["transfer_syntaxes"])),
        ("scanner", " ".join(v for v in (summary["manufacturer"], summary["model"]) if v) or "(not stated)"),
    ]
    where = path
    if "size_ijk" not in summary:  # the slice layout itself is unusable (tilt, mixed orientations, ...)
        facts.append((READABLE, f"no: {where}: {summary['problem']}"))
        return facts
    if single:
        facts.append(("gaps", "— (one slice)"))
        facts.append((READABLE, f"no: {where}: a single slice; lymphcad needs a 3D CT volume"))
        return facts
    gaps = summary.get("gaps") or []
    facts.append(("gaps", "; ".join(gaps) or "none (uniform slice spacing)"))
    if gaps and summary.get("allow_gaps_problem"):
        facts.append((READABLE, f"no: {where}: {summary['allow_gaps_problem']}"))
    elif gaps:
        facts.append((READABLE, "only with --allow-gaps (resamples to uniform spacing)"))
    return facts


def _thickness(text: str) -> str:
    """SliceThickness as a number like every other figure here (the header may say "5.000000")."""
    try:
        return _fmt_num(float(text))
    except (TypeError, ValueError):
        return text or "(not stated)"


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
                " / ".join(
                    _fmt_num(float(v))
                    for v in (spacings[:, 0].min(), np.median(spacings[:, 0]), spacings[:, 0].max())
                ),
            )
        )
    facts.append(("license", info.license))
    for i, c in enumerate(info.citation, start=1):
        facts.append((f"citation {i}", c))
    return facts
