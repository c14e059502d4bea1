"""The per-patient work of ``lymphcad prepare`` (:mod:`lymphcad.tcia.prepare`): find a patient's CT series
(discovery), convert it to ``images/<case>.nii.gz``, its centroids to annotations (with the index-base
self-check), its mask to ``labels/<case>.nii.gz``, and write the case's record. Each call of
:func:`convert_case` runs in a worker of the batch engine; the module docstring of
:mod:`lymphcad.tcia.prepare` describes the steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.typing import NDArray

from lymphcad import atomic
from lymphcad.cohort import CohortWriter
from lymphcad.errors import InputError, LymphcadError
from lymphcad.geometry import Geometry
from lymphcad.tcia.archives import (
    PatientCentroids,
    Source,
)

if TYPE_CHECKING:
    from lymphcad.io.dicom import SeriesStream

#: physical points and index-derived points further apart than this are reported (mm)
DISAGREE_MM: Final = 0.05
#: mask grid vs CT grid tolerance (mm for origin/spacing; unitless for direction cosines)
GRID_ATOL_MM: Final = 1e-3
GRID_ATOL_DIR: Final = 1e-4
RECORD_VERSION: Final = 1
_SKIP_NAMES: Final = frozenset({"metadata.csv", "fetch-manifest.json", "LICENSE_AND_CITATION.txt"})


def region_of(case_id: str) -> str | None:
    """``mediastinal`` for MED_*, ``abdominal`` for ABD_*, None otherwise."""
    if case_id.startswith("MED"):
        return "mediastinal"
    if case_id.startswith("ABD"):
        return "abdominal"
    return None


# -- discovery ------------------------------------------------------------------------------------------
@dataclass
class SeriesDir:
    """A folder of DICOM files, tagged by the PatientID and Modality of its first readable file."""

    path: Path
    patient_id: str
    modality: str
    files: list[Path]


def discover(raw: Path) -> dict[str, list[SeriesDir]]:
    """PatientID → its DICOM folders, in any layout (non-DICOM files and hidden folders are ignored)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out: dict[str, list[SeriesDir]] = defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(raw):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files = sorted(
            Path(dirpath) / f
            for f in filenames
            if not f.startswith(".")
            and f not in _SKIP_NAMES
            and not f.lower().endswith((".zip", ".json", ".csv", ".txt"))
        )
        for f in files[:5]:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["PatientID", "Modality"])
            except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
                continue
            pid = str(ds.get("PatientID", "") or "").strip()
            if not pid:
                continue
            out[pid].append(SeriesDir(Path(dirpath), pid, str(ds.get("Modality", "") or "").upper(), files))
            break
    return dict(sorted(out.items()))


# -- per-case work ------------------------------------------------------------------------------------
@dataclass
class CaseJob:
    """Everything one worker needs (picklable)."""

    case_id: str
    dirs: list[SeriesDir]
    out: Path
    centroids: PatientCentroids | None
    mask_source: Path | None
    mask_entry: str | None
    signature: str
    deflate_threads: int = 1
    allow_gaps: bool = False


@dataclass
class CaseResult:
    """What a worker returns (also the per-case record on disk)."""

    case_id: str
    status: str  # converted | skipped | failed
    error: str = ""
    content_hash: str = ""
    annotations: list[dict[str, Any]] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    dicom_bytes: int = 0
    signature: str = ""


def record_path(out: Path, case_id: str) -> Path:
    return out / "extra" / "prepare" / f"{case_id}.json"


def case_signature(
    dirs: Sequence[SeriesDir],
    centroids: PatientCentroids | None,
    mask: tuple[Path, str] | None,
    *,
    allow_gaps: bool = False,
) -> str:
    h = hashlib.sha256()
    for d in sorted(dirs, key=lambda d: str(d.path)):
        h.update(str(d.path).encode())
        for f in d.files:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}".encode())
    if centroids is not None:
        for arr in (centroids.indices, centroids.points):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
        h.update(json.dumps(centroids.sizes).encode())
    if mask is not None:
        h.update(f"{mask[0]}!{mask[1]}".encode())
    if allow_gaps:  # a resampled series is another image: a case converted without it is redone
        h.update(b"allow_gaps")
    h.update(f"v{RECORD_VERSION}".encode())
    return h.hexdigest()


def _open_ct(dirs: Sequence[SeriesDir], allow_gaps: bool = False) -> tuple[SeriesStream, dict[str, Any]]:
    """The patient's CT series (checked, geometry known, pixels not yet decoded), chosen per spec §2.5."""
    from lymphcad.io.dicom import DicomSeriesError, list_series, stream_dicom_series

    ct_dirs = [d for d in dirs if d.modality in ("CT", "")]
    ignored = sorted({d.modality for d in dirs if d.modality not in ("CT", "")})
    info: dict[str, Any] = {"ignored_modalities": ignored, "n_series_folders": len(dirs)}
    if not ct_dirs:
        raise InputError(
            f"no CT series (found only {', '.join(ignored) or 'nothing readable'})",
            dirs[0].path if dirs else None,
        )
    if len(ct_dirs) == 1:
        try:
            stream = stream_dicom_series(ct_dirs[0].files, allow_gaps=allow_gaps)
            info["n_files"] = len(ct_dirs[0].files)
            return stream, info
        except DicomSeriesError as exc:
            if "CT series found" not in str(exc):
                raise
    # several CT series: the one with the most files (spec §2.5 step 2)
    best = None
    for d in ct_dirs:
        for s in list_series(d.path):
            if best is None or s.n_files > best.n_files:
                best = s
    if best is None:
        raise InputError("no CT image series found", ct_dirs[0].path)
    info["n_files"] = best.n_files
    info["chosen_among_ct_series"] = sum(len(list_series(d.path)) for d in ct_dirs)
    return stream_dicom_series(list(best.files), series_uid=best.series_uid, allow_gaps=allow_gaps), info


def _write_ct_overlapped(
    writer: CohortWriter, case_id: str, stream: SeriesStream, deflate_threads: int = 1
) -> str:
    """Decode the series and write images/<case>.nii.gz at the same time; returns the content hash.

    The main thread decodes slabs of slices and hashes them; ``deflate_threads`` other threads deflate each
    slab as soon as it is decoded (ISA-L and the file reads release the GIL). The file and the hash are the same as
    ``writer.write_image`` gives for the whole volume (formats.md: sha256 of the int16 voxels, C order).
    """
    from lymphcad.io.nifti import write_nifti_slabs

    ready: queue.SimpleQueue[int | None] = queue.SimpleQueue()

    def announced() -> Iterator[int]:
        while (k := ready.get()) is not None:
            yield k

    digest = hashlib.sha256()
    array = stream.array
    with ThreadPoolExecutor(max_workers=1) as pool:
        written = pool.submit(
            write_nifti_slabs,
            writer.image_path(case_id),
            array,
            stream.geometry,
            announced(),
            threads=deflate_threads,
        )
        try:
            done = 0
            for k in stream.slabs():
                digest.update(array[done:k].data.cast("B"))
                ready.put(k)
                done = k
        finally:
            ready.put(None)  # on a decoding error the writer stops short and leaves no file
        written.result()
    return digest.hexdigest()


def check_centroids(pc: PatientCentroids, geom: Geometry) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """World LPS centres of the nodes from the indices and the geometry, plus the self-check results.

    The index base is found on the data: per axis, the offset ``indices − round(world_to_index(points))``.
    When one offset vector explains every node it is removed before conversion; otherwise the spec's 0-based
    reading is used and the disagreement is reported.
    """
    checks: dict[str, Any] = {"n_nodes": pc.n_nodes}
    idx, pts = pc.indices, pc.points
    if idx is None and pts is None:
        return np.zeros((0, 3)), checks
    if idx is None:
        assert pts is not None
        checks["source"] = "physicalPoints (no indices file)"
        return pts, checks
    if pts is None:
        checks["source"] = "indices, 0-based assumed (no physicalPoints file)"
        return geom.index_to_world(idx), checks
    if idx.shape[0] == 0:
        return np.zeros((0, 3)), checks
    cont = geom.world_to_index(pts)
    diff = np.round(idx - np.round(cont)).astype(int)
    offsets = []
    for a in range(3):
        counts = Counter(diff[:, a].tolist())
        offsets.append(int(counts.most_common(1)[0][0]))
    consistent = bool(np.all(diff == np.asarray(offsets)[None, :]))
    if consistent and offsets == [0, 0, 0]:
        base = "0-based"
    elif consistent and offsets == [1, 1, 1]:
        base = "1-based"
    elif consistent:
        base = f"offset {offsets} (i, j, k)"
    else:
        base = "inconsistent"
    used = np.asarray(offsets if consistent else [0, 0, 0], dtype=float)
    world = geom.index_to_world(idx - used[None, :])
    dist = np.linalg.norm(world - pts, axis=1)
    checks.update(
        {
            "source": "indices",
            "index_base": base,
            "index_offset_ijk": offsets,
            "index_offset_consistent": consistent,
            "rows_matching_0_based": int(np.sum(np.all(diff == 0, axis=1))),
            "rows_matching_1_based": int(np.sum(np.all(diff == 1, axis=1))),
            "max_residual_vox": float(np.max(np.abs(idx - used[None, :] - cont))),
            "max_disagreement_mm": float(dist.max()),
            "nodes_over_0.05mm": [int(i) + 1 for i in np.nonzero(dist > DISAGREE_MM)[0]],
        }
    )
    return world, checks


def _sizes(
    pc: PatientCentroids | None, node: int, region: str | None
) -> tuple[float | None, float | None, bool | None]:
    if pc is None or pc.sizes is None or node >= len(pc.sizes):
        return None, None, None
    vals = [v if v > 0 else None for v in pc.sizes[node]]
    if len(vals) == 1:
        return vals[0], None, None
    short, long_ = vals[0], vals[1]
    ordered = None if short is None or long_ is None else bool(short <= long_ + 1e-9)
    return short, long_, ordered


def _prepare_mask(
    job: CaseJob, geom: Geometry, writer: CohortWriter
) -> tuple[NDArray[np.uint16] | None, dict[str, Any]]:
    from lymphcad.io.nifti import read_nifti_array

    info: dict[str, Any] = {}
    if job.mask_source is None or job.mask_entry is None:
        return None, {"present": False}
    with (
        Source.open(job.mask_source) as src,
        src.local_file(job.mask_entry, job.out / "extra" / ".tmp") as path,
    ):
        arr, mgeom = read_nifti_array(path)
    info["present"] = True
    info["dtype_on_disk"] = str(arr.dtype)
    diffs = geom.grid_differences(mgeom, atol_mm=GRID_ATOL_MM, atol_dir=GRID_ATOL_DIR)
    info["grid_matches_ct"] = not diffs
    if diffs:
        info["grid_differences"] = diffs
        return None, info
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.round(arr) == arr):
        info["error"] = "mask holds non-integer values"
        return None, info
    arr = arr.astype(np.int64, copy=False)
    if arr.min(initial=0) < 0:
        info["error"] = "mask holds negative values"
        return None, info
    ids = np.unique(arr)
    ids = ids[ids > 0]
    info["n_instances"] = int(ids.size)
    info["ids_consecutive"] = bool(np.array_equal(ids, np.arange(1, ids.size + 1)))
    if not info["ids_consecutive"]:
        info["original_ids"] = [int(i) for i in ids]
    relabelled = np.zeros(arr.shape, dtype=np.uint16)
    fg = arr > 0
    relabelled[fg] = (np.searchsorted(ids, arr[fg]) + 1).astype(np.uint16)
    writer.write_label(job.case_id, relabelled, geom)
    return relabelled, info


def convert_case(job: CaseJob) -> CaseResult:
    """Convert one patient (runs in a worker process). Never raises: failures come back as status 'failed'."""
    t0 = time.perf_counter()
    result = CaseResult(job.case_id, "failed", signature=job.signature)
    try:
        writer = CohortWriter(job.out)
        stream, series_info = _open_ct(job.dirs, job.allow_gaps)
        geom = stream.geometry
        result.dicom_bytes = sum(
            f.stat().st_size for d in job.dirs if d.modality in ("CT", "") for f in d.files
        )
        result.content_hash = _write_ct_overlapped(writer, job.case_id, stream, job.deflate_threads)
        checks: dict[str, Any] = {
            "series": series_info,
            "geometry": {
                "shape_zyx": list(geom.shape_zyx),
                "spacing_zyx": [round(v, 6) for v in geom.spacing_zyx],
                "orientation": geom.orientation_codes(),
            },
        }
        labels, mask_info = _prepare_mask(job, geom, writer)
        checks["mask"] = mask_info
        region = region_of(job.case_id)
        rows: list[dict[str, Any]] = []
        if job.centroids is not None:
            world, cchecks = check_centroids(job.centroids, geom)
            checks["centroids"] = cchecks
            order_flags = []
            outside = []
            for n in range(world.shape[0]):
                short, long_, ordered = _sizes(job.centroids, n, region)
                if ordered is not None:
                    order_flags.append(ordered)
                label_id = None
                if not geom.contains_world(world[n], margin_vox=0.5):
                    outside.append(n + 1)
                elif labels is not None:
                    z, y, x = (int(v) for v in geom.world_to_voxel_zyx(world[n]))
                    z = min(max(z, 0), geom.shape_zyx[0] - 1)
                    y = min(max(y, 0), geom.shape_zyx[1] - 1)
                    x = min(max(x, 0), geom.shape_zyx[2] - 1)
                    v = int(labels[z, y, x])
                    label_id = v or None
                rows.append(
                    {
                        "node_id": n + 1,
                        "center_xyz": [float(c) for c in world[n]],
                        "short_axis_mm": short,
                        "long_axis_mm": long_,
                        "region": region,
                        "label_id": label_id,
                    }
                )
            if order_flags:
                checks["sizes_short_le_long"] = {
                    "rows": len(order_flags),
                    "violations": order_flags.count(False),
                }
            if outside:
                checks["nodes_outside_volume"] = outside
            if labels is not None:
                checks["nodes_in_mask"] = sum(1 for r in rows if r["label_id"] is not None)
        else:
            checks["centroids"] = {"n_nodes": 0, "note": "no annotation files for this patient"}
        result.annotations = rows
        result.checks = checks
        result.status = "converted"
    except LymphcadError as exc:
        result.error = str(exc)
    except Exception as exc:  # a broken patient is reported, never fatal for the run
        result.error = f"{exc.__class__.__name__}: {exc}"
        result.checks = {"traceback": traceback.format_exc(limit=3)}
    result.seconds = time.perf_counter() - t0
    if result.status == "converted":
        atomic.write_json(record_path(job.out, job.case_id), asdict(result))
    return result


@dataclass(frozen=True)
class ConvertSpec:
    """The batch worker of prepare: :func:`convert_case`, with a failed patient raised for the engine."""

    def setup(self, threads: int) -> Callable[[Any], Any]:
        return _convert_or_raise


def _convert_or_raise(job: CaseJob) -> CaseResult:
    result = convert_case(job)
    if result.status == "failed":
        raise LymphcadError(result.error)
    return result
