"""Turn a user's own DICOM folders / NIfTI files into a cohort (formats.md §2).

Case ids come from the file or folder name (never from DICOM patient tags, which may hold PHI).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from lymphcad.cohort import (
    Annotation,
    CohortWriter,
    DatasetInfo,
    read_annotations,
    read_dataset_json,
)
from lymphcad.errors import InputError


def case_id_for(path: Path) -> str:
    """A case id from a path's name: ``.nii.gz``/``.nii``/``.dcm`` dropped, other characters mapped to ``_``."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]+", "_", name).strip("._") or "case"
    return cleaned


def import_cases(
    inputs: Sequence[Path],
    out: Path,
    *,
    nodes_csv: Path | None = None,
    region: str | None = None,
    name: str | None = None,
    license: str = "as stated by the data owner",
    citation: Sequence[str] = (),
    on_case: Callable[[str], None] | None = None,
) -> DatasetInfo:
    """Read each input as one CT case and write/extend the cohort at ``out``.

    Cases already in ``out`` (same id) are kept and not re-read, so an interrupted import resumes.
    Node centres from ``nodes_csv`` (annotations.csv columns) must name the imported case ids and lie
    inside their volumes; their ``label_id`` is left empty (no masks are imported).
    """
    from lymphcad.io.reader import read_ct

    ids = [case_id_for(Path(p)) for p in inputs]
    dupes = sorted({c for c in ids if ids.count(c) > 1})
    if dupes:
        raise InputError(
            f"two inputs map to the same case id {dupes[0]!r}; rename one", inputs[ids.index(dupes[0])]
        )
    writer = CohortWriter(out)
    previous: DatasetInfo | None = None
    if (out / "dataset.json").is_file():
        previous = read_dataset_json(out)
    hashes: dict[str, str] = dict(previous.content_hashes or {}) if previous else {}
    regions: dict[str, str] = dict(previous.case_regions) if previous else {}
    geometries = {}
    for path, case in zip(inputs, ids, strict=True):
        if writer.has_case(case) and case in hashes:
            from lymphcad.io.nifti import header_geometry

            geometries[case] = header_geometry(writer.image_path(case))
        else:
            volume = read_ct(Path(path))
            hashes[case] = writer.write_image(case, volume)
            geometries[case] = volume.geometry
        regions[case] = region or regions.get(case) or "both"
        if on_case is not None:
            on_case(case)
    cases = sorted(set(regions))
    annotations: list[Annotation] = []
    if previous is not None and (out / "annotations.csv").is_file():
        annotations = [a for a in read_annotations(out / "annotations.csv") if a.case_id not in ids]
    if nodes_csv is not None:
        for line, a in enumerate(read_annotations(nodes_csv, known_cases=ids), start=2):
            geom = geometries[a.case_id]
            if not bool(np.all(geom.contains_world(a.center_xyz))):
                raise InputError(
                    f"node {a.node_id} of case {a.case_id!r} lies outside its volume", nodes_csv, line
                )
            node_region = a.region or (region if region in ("mediastinal", "abdominal") else None)
            annotations.append(
                Annotation(
                    a.case_id, a.node_id, a.center_xyz, a.short_axis_mm, a.long_axis_mm, node_region, None
                )
            )
    info = DatasetInfo(
        name=name or (previous.name if previous else out.name),
        description=previous.description if previous else "Cohort imported with `lymphcad import`.",
        cases=cases,
        case_regions={c: regions[c] for c in cases},
        license=license if previous is None or license != "as stated by the data owner" else previous.license,
        citation=list(citation) or (previous.citation if previous else []),
        source=previous.source if previous else "user data imported with lymphcad",
        content_hashes={c: hashes[c] for c in cases if c in hashes},
    )
    return writer.finish(info, annotations)
