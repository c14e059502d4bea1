"""A miniature "CT Lymph Nodes" collection and a local NBIA server for the TCIA tests (no internet).

* :func:`build_collection` relabels real DICOM series from ../shared/data/real-ct with TCIA-style patient
  ids (``ABD_LYMPH_001``, ``MED_LYMPH_001``…) and ``61.7.`` UIDs, keeps fake PHI (PatientName,
  PatientBirthDate) in the headers so tests can check that none is printed, adds one DICOM SEG series,
  packs every series as NBIA packs it (``getImage``: ``1-NNN.dcm``; ``getImageWithMD5Hash``:
  ``00000001.dcm`` … plus ``md5hashes.csv`` with ``Filename,MD5Hash``) and writes the three annotation
  archives in the spec's formats (§3), each zip holding a top folder of its own name.
* :class:`NBIAServer` serves it on 127.0.0.1 (``http.server`` in a thread) with fault injection.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
import pydicom
import SimpleITK as sitk

PHI_NAME = "Doe^Jane^Fixture"
PHI_BIRTHDATE = "19410203"
COLLECTION = "CT Lymph Nodes"

#: (patient id, source folder below real-ct, how many slices to take, sizes columns)
PATIENTS: tuple[tuple[str, str, int], ...] = (
    ("ABD_LYMPH_001", "crlm-ct/CRLM-CT-1004", 12),
    ("ABD_LYMPH_002", "dcmqi/ct-3slice", 3),
    ("MED_LYMPH_001", "mirp-lidc-idri-0314", 24),
    # same pixels as ABD_LYMPH_001 under other ids: the spec's MED/ABD duplicates
    ("MED_LYMPH_002", "crlm-ct/CRLM-CT-1004", 12),
)


def uid(*parts: int | str) -> str:
    """A TCIA-style UID (root 61.7.)."""
    digits = "".join(str(p) for p in parts)
    h = str(int(hashlib.sha256(digits.encode()).hexdigest(), 16))[:36]
    return f"61.7.{h}"


@dataclass
class FixtureSeries:
    """One series of the fixture collection."""

    patient_id: str
    study_uid: str
    series_uid: str
    modality: str
    files: dict[str, bytes]  # name in the getImage zip (1-NNN.dcm) -> DICOM bytes
    description: str = "lymphnodes"

    def get_series_row(self) -> dict[str, Any]:
        """The JSON object getSeries returns for this series (v4 keys, as tcia-utils normalises them)."""
        return {
            "SeriesInstanceUID": self.series_uid,
            "StudyInstanceUID": self.study_uid,
            "PatientID": self.patient_id,
            "Collection": COLLECTION,
            "Modality": self.modality,
            "Manufacturer": "GE MEDICAL SYSTEMS",
            "SeriesDescription": self.description,
            "ImageCount": len(self.files),
            "FileSize": sum(len(b) for b in self.files.values()),
            "LicenseName": "Creative Commons Attribution 3.0 Unported License",
            "LicenseURI": "https://creativecommons.org/licenses/by/3.0/",
            "DataDescriptionURI": "https://doi.org/10.7937/K9/TCIA.2015.AQIIDCNM",
        }

    def zip_get_image(self) -> bytes:
        """``getImage?NewFileNames=Yes``: ``1-NNN.dcm`` entries."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in self.files.items():
                zf.writestr(name, data)
        return buf.getvalue()

    def zip_md5(self, *, layout: str = "csv", corrupt_hash: bool = False) -> bytes:
        """``getImageWithMD5Hash``: ``%08d.dcm`` entries plus ``md5hashes.csv`` (or per-file sidecars)."""
        buf = io.BytesIO()
        rows = []
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for n, data in enumerate(self.files.values(), start=1):
                name = f"{n:08d}.dcm"
                zf.writestr(name, data)
                digest = hashlib.md5(data).hexdigest()
                if corrupt_hash and n == 1:
                    digest = "0" * 32
                rows.append((name, digest))
                if layout == "sidecar":
                    zf.writestr(name + ".md5", f"{digest}  {name}\n")
            if layout == "csv":
                zf.writestr("md5hashes.csv", "Filename,MD5Hash\n" + "".join(f"{a},{b}\n" for a, b in rows))
        return buf.getvalue()


@dataclass
class FixtureCollection:
    """The whole fixture: series, annotation archives and the truth used to build them."""

    root: Path
    series: list[FixtureSeries]
    archives: dict[str, bytes]  # archive name -> zip bytes
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # pid -> indices/points/sizes/mask ids

    def series_by_uid(self) -> dict[str, FixtureSeries]:
        """Series keyed by SeriesInstanceUID."""
        return {s.series_uid: s for s in self.series}

    def ct_series(self, pid: str) -> FixtureSeries:
        """The CT series of a patient."""
        return next(s for s in self.series if s.patient_id == pid and s.modality == "CT")

    def write_series_folders(self, out: Path, layout: str = "classic") -> Path:
        """Write the DICOM files in one of the spec's §2 layouts (classic, descriptive, tcia-utils)."""
        for s in self.series:
            if layout == "classic":
                d = out / s.patient_id / s.study_uid / s.series_uid
            elif layout == "descriptive":
                d = (
                    out
                    / "manifest-1680277513580"
                    / COLLECTION
                    / s.patient_id
                    / f"09-14-2014-{s.patient_id.replace('_', '')}-lymphnodes-{s.study_uid[-5:]}"
                    / f"{s.description}-{s.series_uid[-5:]}"
                )
            elif layout == "flat":  # tcia-utils downloadSeries
                d = out / s.series_uid
            else:
                raise ValueError(layout)
            d.mkdir(parents=True, exist_ok=True)
            for name, data in s.files.items():
                (d / name).write_bytes(data)
        return out

    def write_archives(self, out: Path, *, extracted: bool = False) -> dict[str, Path]:
        """Write the three archives as zips (or extracted folders with the nested top folder)."""
        out.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, data in self.archives.items():
            if extracted:
                target = out / name
                with zipfile.ZipFile(io.BytesIO(data)) as zf:
                    zf.extractall(target)
                paths[name] = target
            else:
                target = out / f"{name}.zip"
                target.write_bytes(data)
                paths[name] = target
        return paths


def _relabel(src: Path, pid: str, study_uid: str, series_uid: str, n: int, i: int) -> bytes:
    ds = pydicom.dcmread(src)
    ds.PatientID = pid
    ds.PatientName = PHI_NAME
    ds.PatientBirthDate = PHI_BIRTHDATE
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    sop = uid(series_uid, "sop", i)
    ds.SOPInstanceUID = sop
    if hasattr(ds, "file_meta"):
        ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.Modality = ds.get("Modality", "CT") or "CT"
    ds.SeriesDescription = "lymphnodes"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue()


def _slices(folder: Path, n: int) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix == ".dcm")
    # take n slices that are contiguous in space (sorted by z), whatever their file names
    zs = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in files]
    order = [files[i] for i in np.argsort(zs)]
    return order[:n]


def read_sitk_series(folder: Path) -> sitk.Image:
    """The reference reading: SimpleITK ImageSeriesReader with GDCM's geometric sort (as nnDetection)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def build_collection(real_ct: Path, work: Path) -> FixtureCollection:
    """Build the fixture collection from ../shared/data/real-ct into ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    series: list[FixtureSeries] = []
    for pid, sub, n in PATIENTS:
        study = uid(pid, "study")
        ser = uid(pid, "series")
        files = {}
        for i, src in enumerate(reversed(_slices(real_ct / sub, n)), start=1):
            # reversed: file names deliberately run against z (a name is not a slice position)
            files[f"1-{i:03d}.dcm"] = _relabel(src, pid, study, ser, n, i)
        series.append(FixtureSeries(pid, study, ser, "CT", files))
    # a DICOM SEG series beside ABD_LYMPH_002's CT (the 2023 release adds one per patient; prepare ignores it)
    seg_pid = "ABD_LYMPH_002"
    seg_study = uid(seg_pid, "study")
    seg_uid = uid(seg_pid, "seg")
    seg_bytes = _relabel(real_ct / "dcmqi" / "liver.dcm", seg_pid, seg_study, seg_uid, 1, 1)
    series.append(FixtureSeries(seg_pid, seg_study, seg_uid, "SEG", {"1-1.dcm": seg_bytes}, "Segmentation"))

    coll = FixtureCollection(work, series, {})
    ct_dir = work / "ct"
    for s in series:
        if s.modality != "CT":
            continue
        d = ct_dir / s.patient_id
        d.mkdir(parents=True, exist_ok=True)
        for name, data in s.files.items():
            (d / name).write_bytes(data)
    _make_archives(coll, ct_dir)
    return coll


def _fmt6(v: float) -> str:
    """C++ stream default: 6 significant digits (what the authors' ITK tool writes)."""
    return f"{v:.6g}"


def _make_archives(coll: FixtureCollection, ct_dir: Path) -> None:
    rng = np.random.default_rng(7)
    ann = io.BytesIO()
    masks = io.BytesIO()
    cands = io.BytesIO()
    with (
        zipfile.ZipFile(ann, "w") as za,
        zipfile.ZipFile(masks, "w") as zm,
        zipfile.ZipFile(cands, "w") as zc,
    ):
        for pid in sorted({s.patient_id for s in coll.series if s.modality == "CT"}):
            img = read_sitk_series(ct_dir / pid)
            sx, sy, sz = img.GetSize()
            n_nodes = 3
            idx = np.stack(
                [
                    rng.integers(60, sx - 60, n_nodes),
                    rng.integers(60, sy - 60, n_nodes),
                    rng.integers(0, sz, n_nodes),
                ],
                axis=1,
            )
            pts = np.array([img.TransformIndexToPhysicalPoint([int(v) for v in row]) for row in idx])
            if pid.startswith("MED"):
                sizes = [[float(rng.uniform(10, 20))] for _ in range(n_nodes)]
            else:
                sizes = [
                    sorted([float(rng.uniform(10, 15)), float(rng.uniform(15, 25))]) for _ in range(n_nodes)
                ]
            top = "MED_ABD_LYMPH_ANNOTATIONS"
            za.writestr(
                f"{top}/{pid}/{pid}_lymphnodes_indices.txt", "".join(f"{a} {b} {c}\n" for a, b, c in idx)
            )
            za.writestr(
                f"{top}/{pid}/{pid}_lymphnodes_physicalPoints.txt",
                "".join(" ".join(_fmt6(v) for v in p) + "\n" for p in pts),
            )
            za.writestr(
                f"{top}/{pid}/{pid}_lymphnodes_sizes.txt",
                "".join(" ".join(_fmt6(v) for v in s) + "\n" for s in sizes),
            )
            za.writestr(f"{top}/{pid}/{pid}_lymphnodes.mps", "<point_set/>\n")  # an unknown file: ignored
            # mask: non-consecutive ids; nodes 1 and 3 get a small box around their centre, node 2 none
            arr = np.zeros((sz, sy, sx), dtype=np.uint8)
            mask_ids = {0: 7, 2: 3}
            for node, lab in mask_ids.items():
                i, j, k = (int(v) for v in idx[node])
                arr[max(0, k - 1) : k + 2, j - 4 : j + 5, i - 4 : i + 5] = lab
            m = sitk.GetImageFromArray(arr)
            m.CopyInformation(img)
            mpath = ct_dir / f"{pid}_mask.nii.gz"
            sitk.WriteImage(m, str(mpath))
            zm.writestr(f"MED_ABD_LYMPH_MASKS/{pid}/{pid}_mask.nii.gz", mpath.read_bytes())
            # candidates: the GT points (pos) and a few others (neg)
            neg_idx = np.stack(
                [rng.integers(0, sx, 4), rng.integers(0, sy, 4), rng.integers(0, sz, 4)], axis=1
            )
            neg = np.array([img.TransformIndexToPhysicalPoint([int(v) for v in row]) for row in neg_idx])
            ctop = "MED_ABD_LYMPH_CANDIDATES"
            zc.writestr(
                f"{ctop}/{pid}/{pid}_posCADe_physicalPoints.txt",
                "".join(" ".join(_fmt6(v) for v in p) + "\n" for p in pts),
            )
            zc.writestr(
                f"{ctop}/{pid}/{pid}_negCADe_physicalPoints.txt",
                "".join(" ".join(_fmt6(v) for v in p) + "\n" for p in neg),
            )
            coll.nodes[pid] = {
                "indices": idx,
                "points": pts,
                "sizes": sizes,
                "mask_ids": {node + 1: lab for node, lab in mask_ids.items()},
                "neg": neg,
            }
    coll.archives = {
        "MED_ABD_LYMPH_ANNOTATIONS": ann.getvalue(),
        "MED_ABD_LYMPH_MASKS": masks.getvalue(),
        "MED_ABD_LYMPH_CANDIDATES": cands.getvalue(),
    }


# -- the server -------------------------------------------------------------------------------------------
@dataclass
class Faults:
    """Fault injection, per series UID. ``*_times`` count down; -1 = forever."""

    drop: dict[str, int] = field(default_factory=dict)  # send half the zip, then close the connection
    corrupt: dict[str, int] = field(default_factory=dict)  # flip bytes inside the zip
    bad_md5: dict[str, int] = field(default_factory=dict)  # md5hashes.csv lists a wrong hash
    status: dict[str, list[int]] = field(default_factory=dict)  # HTTP statuses to answer first (429, 500…)
    status_forever: dict[str, int] = field(default_factory=dict)  # always answer this status
    zipslip: set[str] = field(default_factory=set)  # add an entry ../../evil
    md5_layout: str = "csv"  # csv | sidecar | none
    list_status: list[int] = field(default_factory=list)  # statuses for getSeries before success


def _take(counter: dict[str, int], key: str) -> bool:
    n = counter.get(key, 0)
    if n == 0:
        return False
    if n > 0:
        counter[key] = n - 1
    return True


class NBIAServer:
    """The documented v4 endpoints over the fixture collection, on 127.0.0.1 (context manager)."""

    def __init__(self, coll: FixtureCollection, faults: Faults | None = None) -> None:
        self.coll = coll
        self.faults = faults or Faults()
        self.requests: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(
                self,
                status: int,
                body: bytes,
                ctype: str = "application/json",
                extra: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                server.handle(self, "GET")

            def do_POST(self) -> None:
                server.handle(self, "POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        """http://127.0.0.1:PORT"""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def api_url(self) -> str:
        """The v4 services base URL."""
        return self.base + "/nbia-api/services/v4"

    @property
    def archives_url(self) -> str:
        """Where the annotation zips are served."""
        return self.base + "/wp-content/uploads"

    def __enter__(self) -> NBIAServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def count(self, needle: str) -> int:
        """How many requests contained ``needle``."""
        with self.lock:
            return sum(needle in r for r in self.requests)

    def handle(self, h: Any, method: str) -> None:
        url = urlparse(h.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if method == "POST":
            length = int(h.headers.get("Content-Length", 0))
            query.update({k: v[0] for k, v in parse_qs(h.rfile.read(length).decode()).items()})
        with self.lock:
            self.requests.append(f"{method} {h.path}")
        path = url.path
        f = self.faults
        if path.startswith("/wp-content/uploads/"):
            name = path.rsplit("/", 1)[-1].removesuffix(".zip")
            if name not in self.coll.archives:
                return h._send(404, b"not found", "text/plain")
            return h._send(200, self.coll.archives[name], "application/zip")
        endpoint = path.rsplit("/", 1)[-1]
        if not path.startswith("/nbia-api/services/v4/"):
            return h._send(404, b"not found", "text/plain")
        if endpoint == "getSeries":
            if f.list_status:
                return h._send(f.list_status.pop(0), b"busy", "text/plain", {"Retry-After": "0"})
            rows = [
                s.get_series_row()
                for s in self.coll.series
                if query.get("Collection") == COLLECTION
                and query.get("PatientID", s.patient_id) == s.patient_id
                and query.get("Modality", s.modality) == s.modality
            ]
            return h._send(200, json.dumps(rows).encode())
        if endpoint == "getSeriesMetadata":
            uids = query.get("list", "").split(",")
            cols = [
                "Series Instance UID",
                "Patient ID",
                "Study Instance UID",
                "Modality",
                "Image Count",
                "File Size",
            ]
            lines = [",".join(cols)]
            for s in self.coll.series:
                if s.series_uid in uids:
                    r = s.get_series_row()
                    lines.append(
                        ",".join(
                            str(x)
                            for x in (
                                s.series_uid,
                                s.patient_id,
                                s.study_uid,
                                s.modality,
                                r["ImageCount"],
                                r["FileSize"],
                            )
                        )
                    )
            return h._send(200, ("\n".join(lines) + "\n").encode(), "text/csv")
        if endpoint in ("getImage", "getImageWithMD5Hash"):
            suid = query.get("SeriesInstanceUID", "")
            s = self.coll.series_by_uid().get(suid)
            if s is None:
                return h._send(404, b"unknown series", "text/plain")
            if suid in f.status_forever:
                return h._send(f.status_forever[suid], b"error", "text/plain")
            queue = f.status.get(suid)
            if queue:
                st = queue.pop(0)
                return h._send(st, b"slow down", "text/plain", {"Retry-After": "0"} if st == 429 else None)
            if endpoint == "getImage":
                body = s.zip_get_image()
            else:
                body = s.zip_md5(layout=f.md5_layout, corrupt_hash=_take(f.bad_md5, suid))
            if suid in f.zipslip:
                buf = io.BytesIO(body)
                with zipfile.ZipFile(buf, "a") as zf:
                    zf.writestr("../../evil", b"gotcha")
                body = buf.getvalue()
            if _take(f.corrupt, suid):
                b = bytearray(body)
                mid = len(b) // 3
                b[mid : mid + 64] = bytes(64)
                body = bytes(b)
            if _take(f.drop, suid):
                h.send_response(200)
                h.send_header("Content-Type", "application/zip")
                h.send_header("Content-Length", str(len(body)))
                h.end_headers()
                h.wfile.write(body[: len(body) // 2])
                h.wfile.flush()
                h.close_connection = True
                with contextlib.suppress(OSError):
                    h.connection.shutdown(socket.SHUT_RDWR)
                return None
            return h._send(200, body, "application/zip")
        return h._send(404, b"unknown endpoint", "text/plain")
