"""Turn a user's own DICOM folders / NIfTI files into a cohort (formats.md §2).

Case ids come from the file or folder name (never from DICOM patient tags, which may hold PHI).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lymphcad.cohort import (
    Annotation,
    CohortWriter,
    DatasetInfo,
    read_annotations,
    read_dataset_json,
    voxel_hash,
)
from lymphcad.errors import InputError
from lymphcad.geometry import Geometry


def case_id_for(path: Path) -> str:
    """A case id from a path's name: image suffixes dropped, accents folded to ASCII, other characters ``_``.

    A name with no ASCII letter or digit left (e.g. ``患者.nii.gz``) becomes ``case_<8 hex digits>`` from a
    hash of the name, so that two such names never share an id.
    """
    name = path.name
    for suffix in (".nii.gz", ".nii", ".dcm", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]+", "_", folded).strip("._")
    if not re.search(r"[A-Za-z0-9]", cleaned):
        return "case_" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return cleaned


@dataclass(frozen=True)
class _Checked:
    """What the checking pass learnt about one input, before anything is written."""

    path: Path
    case_id: str
    content_hash: str
    geometry: Geometry
    already_there: bool  # the cohort holds this very scan under this id (a resumed import)


def import_cases(
    inputs: Sequence[Path],
    out: Path,
    *,
    nodes_csv: Path | None = None,
    region: str | None = None,
    name: str | None = None,
    license: str = "as stated by the data owner",
    citation: Sequence[str] = (),
    series_uid: str | None = None,
    allow_gaps: bool = False,
    on_case: Callable[[str], None] | None = None,
    on_checked: Callable[[str], None] | None = None,
) -> DatasetInfo:
    """Read each input as one CT case and write/extend the cohort at ``out``.

    Everything is checked before anything is written: every input is read (a 3D CT; ``series_uid`` and
    ``allow_gaps`` as for :func:`lymphcad.io.reader.read_ct_input`), the node CSV must name the imported case ids
    with centres inside their volumes, and an id already in the cohort must hold the same scan (same
    voxel hash) — a different scan whose name maps to that id is refused, never dropped. Cases already in
    ``out`` with the same content are not written again, so an interrupted import resumes. Node
    ``label_id`` is left empty (no masks are imported).
    """
    from lymphcad.io.reader import read_ct_input

    ids = [case_id_for(Path(p)) for p in inputs]
    dupes = sorted({c for c in ids if ids.count(c) > 1})
    if dupes:
        first = ids.index(dupes[0])
        other = ids.index(dupes[0], first + 1)
        raise InputError(
            f"this input and {inputs[other]} map to the same case id {dupes[0]!r}; rename one", inputs[first]
        )
    previous: DatasetInfo | None = None
    if (out / "dataset.json").is_file():
        previous = read_dataset_json(out)
    old_hashes: dict[str, str] = dict(previous.content_hashes or {}) if previous else {}
    node_rows = [] if nodes_csv is None else read_annotations(nodes_csv, known_cases=ids)

    # 1. check: read every input (nothing is written yet)
    checked: list[_Checked] = []
    for path, case in zip(inputs, ids, strict=True):
        volume = read_ct_input(Path(path), series_uid=series_uid, allow_gaps=allow_gaps)
        digest = voxel_hash(volume.array)
        old = old_hashes.get(case)
        if old is not None and old != digest:
            raise InputError(
                f"maps to case id {case!r}, which the cohort {out} already holds with a different scan "
                "(content hash differs); rename the input to import it as a new case",
                path,
            )
        if old is None and previous is not None and case in previous.cases:
            raise InputError(
                f"maps to case id {case!r}, which the cohort {out} already holds (without a content hash to "
                "compare); rename the input to import it as a new case",
                path,
            )
        already = old is not None and (out / "images" / f"{case}.nii.gz").is_file()
        checked.append(_Checked(Path(path), case, digest, volume.geometry, already))
        del volume
        if on_checked is not None:
            on_checked(case)
    geometries = {c.case_id: c.geometry for c in checked}
    annotations: list[Annotation] = []
    if previous is not None and (out / "annotations.csv").is_file():
        annotations = [a for a in read_annotations(out / "annotations.csv") if a.case_id not in ids]
    for line, a in enumerate(node_rows, start=2):
        assert nodes_csv is not None
        if not bool(np.all(geometries[a.case_id].contains_world(a.center_xyz))):
            raise InputError(
                f"node {a.node_id} of case {a.case_id!r} lies outside its volume", nodes_csv, line
            )
        node_region = a.region or (region if region in ("mediastinal", "abdominal") else None)
        annotations.append(
            Annotation(a.case_id, a.node_id, a.center_xyz, a.short_axis_mm, a.long_axis_mm, node_region, None)
        )

    # 2. write
    writer = CohortWriter(out)
    hashes = dict(old_hashes)
    regions: dict[str, str] = dict(previous.case_regions) if previous else {}
    for c in checked:
        if not c.already_there:
            volume = read_ct_input(c.path, series_uid=series_uid, allow_gaps=allow_gaps)
            hashes[c.case_id] = writer.write_image(c.case_id, volume)
            if hashes[c.case_id] != c.content_hash:
                raise InputError("changed while it was being imported; run the import again", c.path)
        regions[c.case_id] = region or regions.get(c.case_id) or "both"
        if on_case is not None:
            on_case(c.case_id)
    cases = sorted(set(regions))
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
