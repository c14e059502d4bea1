"""``lymphcad fetch``: download the collection's series (and annotation archives) into a raw folder.

Layout written (spec §5.2, the classic layout of §2.2)::

    RAW/
      LICENSE_AND_CITATION.txt        licence, data usage policy, citations (written before any download)
      metadata.csv                    one row per series, the NBIA Data Retriever's columns
      fetch-manifest.json             series UID, patient, files, bytes, zip sha256, md5 layout, time
      CT Lymph Nodes/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/*.dcm
      annotations/MED_ABD_LYMPH_{MASKS,ANNOTATIONS,CANDIDATES}.zip
      .lymphcad-tmp/                  in-flight downloads (removed when a run starts and ends)

Guarantees:

* a series folder appears only complete (extracted into a temp folder, verified, then renamed); a series
  whose folder exists and whose manifest row agrees is skipped on the next run (resume);
* verification: zip integrity (CRC of every entry), number of DICOM files = ``ImageCount``, and the MD5
  of every file when the zip carries hashes (``getImageWithMD5Hash``: an ``md5hashes.csv`` with
  ``Filename,MD5Hash`` as NBIA's server code writes it, or per-file ``<name>.md5`` sidecars; which layout
  was seen is recorded per series). A mismatch is downloaded again, then reported; never kept;
* zip entries with absolute paths or ``..`` are refused (zip-slip).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import shutil
import threading
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Protocol

from lymphcad import __version__, atomic, citations
from lymphcad.errors import InputError, LymphcadError
from lymphcad.hashing import file_sha256
from lymphcad.tcia import COLLECTION
from lymphcad.tcia.api import DEFAULT_API_URL, DownloadError, NBIAClient, RetryPolicy, SeriesRecord
from lymphcad.tcia.archives import (
    ARCHIVES,
    ArchiveSpec,
    ZipSlipError,
    check_zip_members,
    download_archive,
    extract_member,
    safe_member_path,
)

MANIFEST_NAME: Final = "fetch-manifest.json"
METADATA_NAME: Final = "metadata.csv"
LICENSE_NAME: Final = "LICENSE_AND_CITATION.txt"
TMP_NAME: Final = ".lymphcad-tmp"
MD5_CSV: Final = "md5hashes.csv"
#: the NBIA Data Retriever's metadata.csv columns (spec §2.1)
METADATA_COLUMNS: Final = (
    "Series UID",
    "Collection",
    "3rd Party Analysis",
    "Data Description URI",
    "Subject ID",
    "Study UID",
    "Study Description",
    "Study Date",
    "Series Description",
    "Manufacturer",
    "Modality",
    "SOP Class Name",
    "SOP Class UID",
    "Number of Images",
    "File Size",
    "File Location",
    "Download Timestamp",
)


class VerificationError(LymphcadError):
    """A downloaded series failed a check (zip, file count, MD5)."""


class FetchProgress(Protocol):
    """What fetch reports while it works (the CLI draws a progress bar from it)."""

    def start(self, n_series: int, total_bytes: int) -> None: ...
    def bytes(self, n: int) -> None: ...
    def series_done(self, record: SeriesRecord, status: str) -> None: ...
    def message(self, text: str) -> None: ...


class _NullProgress:
    def start(self, n_series: int, total_bytes: int) -> None:
        pass

    def bytes(self, n: int) -> None:
        pass

    def series_done(self, record: SeriesRecord, status: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass


@dataclass
class FetchOptions:
    """Settings of one fetch run."""

    out: Path
    collection: str = COLLECTION
    patients: Sequence[str] = ()
    manifest: Path | None = None
    modalities: Sequence[str] = ()
    workers: int = 4
    api_url: str = DEFAULT_API_URL
    annotations: bool = True
    annotations_url: str | None = None
    md5: bool = True
    verify_attempts: int = 3
    retry: RetryPolicy | None = None
    #: override of the archives' expected SHA-256 (name -> hex); tests only
    archive_sha256: dict[str, str | None] = field(default_factory=dict)


@dataclass
class FetchResult:
    """What a run did."""

    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    archives: dict[str, dict[str, Any]] = field(default_factory=dict)
    md5_layouts: dict[str, int] = field(default_factory=dict)
    bytes: int = 0


def licence_text(collection: str = COLLECTION) -> str:
    """The licence, data usage policy and citations to show (and record) before any download."""
    lines = [
        f"Collection: {collection} (doi:{citations.CT_LYMPH_NODES_DOI})",
        f"Licence: {citations.CT_LYMPH_NODES_LICENSE}",
        "",
        citations.TCIA_DATA_USAGE_POLICY,
        "",
        "Required citations:",
        *(f"  - {c}" for c in citations.CT_LYMPH_NODES_CITATIONS),
    ]
    return "\n".join(lines)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def series_dir(out: Path, collection: str, rec: SeriesRecord) -> Path:
    """Where a series lands: ``<out>/<collection>/<PatientID>/<StudyUID>/<SeriesUID>/`` (spec §2.2)."""
    parts = [rec.patient_id or "UNKNOWN_PATIENT", rec.study_uid or "UNKNOWN_STUDY", rec.series_uid]
    for p in parts:
        if p in (".", "..") or "/" in p or "\\" in p or "\x00" in p:
            raise InputError(f"unsafe identifier {p!r} from the API refused")
    return out / collection / parts[0] / parts[1] / parts[2]


class _Manifest:
    """fetch-manifest.json, updated under a lock and rewritten atomically after every series."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.data: dict[str, Any] = {"lymphcad_version": __version__, "series": {}, "archives": {}}
        if path.is_file():
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict) and isinstance(loaded.get("series"), dict):
                    self.data.update(loaded)
            except (OSError, json.JSONDecodeError):
                pass  # a damaged manifest: series folders are re-verified against the API instead

    def series(self, uid: str) -> dict[str, Any] | None:
        with self.lock:
            row = self.data["series"].get(uid)
            return dict(row) if row else None

    def set_series(self, uid: str, row: dict[str, Any]) -> None:
        with self.lock:
            self.data["series"][uid] = row
            atomic.write_json(self.path, self.data)

    def set(self, key: str, value: Any) -> None:
        with self.lock:
            self.data[key] = value
            atomic.write_json(self.path, self.data)


def _parse_md5_csv(data: bytes) -> dict[str, str]:
    text = data.decode("utf-8-sig", errors="replace")
    rows = list(csv.reader(io.StringIO(text)))
    out: dict[str, str] = {}
    for n, row in enumerate(rows):
        if len(row) < 2:
            continue
        name, digest = row[0].strip(), row[1].strip().lower()
        if n == 0 and not all(c in "0123456789abcdef" for c in digest):
            continue  # header (Filename,MD5Hash)
        out[PurePosixPath(name.replace("\\", "/")).name] = digest
    return out


def _verify_and_extract(
    zip_path: Path, dest: Path, rec: SeriesRecord, *, expect_hashes: bool
) -> tuple[int, int, str]:
    """Check the zip and extract the DICOM files into ``dest``; returns (files, bytes, md5 layout)."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise VerificationError(f"not a valid zip ({exc})") from exc
    with zf:
        members = check_zip_members(zf, rec.series_uid)
        by_base: dict[str, zipfile.ZipInfo] = {}
        md5_csv: zipfile.ZipInfo | None = None
        sidecars: dict[str, zipfile.ZipInfo] = {}
        data_members: list[zipfile.ZipInfo] = []
        for info in members:
            base = safe_member_path(info.filename).name
            if base.lower() == MD5_CSV:
                md5_csv = info
            elif base.lower().endswith(".md5"):
                sidecars[base[:-4]] = info
            else:
                data_members.append(info)
                by_base[base] = info
        try:
            bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise VerificationError(f"corrupt zip ({exc})") from exc
        if bad is not None:
            raise VerificationError(f"corrupt zip: CRC error in {bad!r}")
        if rec.image_count is not None and len(data_members) != rec.image_count:
            raise VerificationError(
                f"{len(data_members)} files in the zip, the API says ImageCount={rec.image_count}"
            )
        hashes: dict[str, str] = {}
        layout = "none"
        if md5_csv is not None:
            hashes = _parse_md5_csv(zf.read(md5_csv))
            layout = MD5_CSV
        elif sidecars:
            for base, info in sidecars.items():
                token = zf.read(info).decode("ascii", errors="replace").split()
                if token:
                    hashes[PurePosixPath(base).name] = token[0].strip().lower()
            layout = "per-file .md5"
        if expect_hashes and layout == "none":
            layout = "none (getImageWithMD5Hash returned no hashes)"
        if hashes:
            missing = sorted(set(by_base) - set(hashes))
            extra = sorted(set(hashes) - set(by_base))
            if missing:
                raise VerificationError(f"no MD5 for {len(missing)} file(s), e.g. {missing[0]!r}")
            if extra:
                raise VerificationError(
                    f"MD5 listed for {len(extra)} file(s) missing from the zip, e.g. {extra[0]!r}"
                )
        total = 0
        for info in data_members:
            digest = extract_member(zf, info, dest, hasher="md5")
            base = safe_member_path(info.filename).name
            if hashes and digest != hashes[base]:
                raise VerificationError(f"MD5 mismatch for {base!r}: got {digest}, expected {hashes[base]}")
            total += info.file_size
        return len(data_members), total, layout


class Fetcher:
    """Downloads series into ``opts.out`` (see the module docstring)."""

    def __init__(
        self,
        opts: FetchOptions,
        *,
        client: NBIAClient | None = None,
        progress: FetchProgress | None = None,
    ) -> None:
        self.opts = opts
        self.progress = progress or _NullProgress()
        self.client = client or NBIAClient(
            opts.api_url, retry=opts.retry, on_retry=lambda msg: self.progress.message(msg)
        )
        self.out = Path(opts.out)
        self.tmp_root = self.out / TMP_NAME
        self.manifest = _Manifest(self.out / MANIFEST_NAME)
        self.result = FetchResult()
        self._lock = threading.Lock()

    # -- selection --------------------------------------------------------------------------------
    def select_series(self) -> list[SeriesRecord]:
        """The collection's series, narrowed by --patients, --manifest and --modality."""
        records = self.client.get_series(self.opts.collection)
        if not records:
            raise DownloadError(f"getSeries lists no series for collection {self.opts.collection!r}")
        if self.opts.manifest is not None:
            from lymphcad.tcia.manifest import read_manifest

            wanted = read_manifest(self.opts.manifest).series_uids
            by_uid = {r.series_uid: r for r in records}
            missing = [u for u in wanted if u not in by_uid]
            if missing:
                # a manifest may name series of another collection: ask for them directly
                extra = self.client.get_series_metadata(missing)
                for row in extra:
                    rec = SeriesRecord.from_json(row)
                    by_uid[rec.series_uid] = rec
                still = [u for u in wanted if u not in by_uid]
                if still:
                    raise InputError(
                        f"{len(still)} series of the manifest are unknown to the API (e.g. {still[0]})",
                        self.opts.manifest,
                    )
            records = [by_uid[u] for u in wanted]
        if self.opts.patients:
            want = set(self.opts.patients)
            unknown = sorted(want - {r.patient_id for r in records})
            if unknown:
                raise InputError(f"patient(s) not in the collection: {', '.join(unknown[:5])}")
            records = [r for r in records if r.patient_id in want]
        if self.opts.modalities:
            mods = {m.upper() for m in self.opts.modalities}
            records = [r for r in records if r.modality.upper() in mods]
        return sorted(records, key=lambda r: (r.patient_id, r.modality != "CT", r.series_uid))

    # -- one series -------------------------------------------------------------------------------
    def is_complete(self, rec: SeriesRecord) -> bool:
        """A finished series: its folder exists, its manifest row agrees and the file count matches."""
        d = series_dir(self.out, self.opts.collection, rec)
        row = self.manifest.series(rec.series_uid)
        if not d.is_dir() or row is None or row.get("status") != "ok":
            return False
        n = sum(1 for p in d.iterdir() if p.is_file())
        if n != row.get("files"):
            return False
        return rec.image_count is None or n == rec.image_count

    def fetch_series(self, rec: SeriesRecord) -> str:
        """Download, verify and place one series; returns 'downloaded' or 'skipped'."""
        if self.is_complete(rec):
            return "skipped"
        final = series_dir(self.out, self.opts.collection, rec)
        self.tmp_root.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for attempt in range(max(1, self.opts.verify_attempts)):
            work = Path(
                os.path.join(self.tmp_root, f"{rec.series_uid}.{os.getpid()}.{threading.get_ident()}")
            )
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            try:
                zip_path = work / "series.zip"
                nbytes = self.client.download_series_zip(
                    rec.series_uid, zip_path, md5=self.opts.md5, on_bytes=self.progress.bytes
                )
                zip_sha = file_sha256(zip_path)
                extracted = work / "files"
                files, total, layout = _verify_and_extract(
                    zip_path, extracted, rec, expect_hashes=self.opts.md5
                )
                zip_path.unlink()
                final.parent.mkdir(parents=True, exist_ok=True)
                if final.exists():
                    shutil.rmtree(final)  # a folder not vouched for by the manifest: replace it
                os.replace(extracted, final)
                self.manifest.set_series(
                    rec.series_uid,
                    {
                        "status": "ok",
                        "patient_id": rec.patient_id,
                        "study_uid": rec.study_uid,
                        "modality": rec.modality,
                        "files": files,
                        "bytes": total,
                        "zip_bytes": nbytes,
                        "zip_sha256": zip_sha,
                        "md5_layout": layout,
                        "md5_verified": layout in (MD5_CSV, "per-file .md5"),
                        "path": str(final.relative_to(self.out)),
                        "time": _now(),
                        "attempts": attempt + 1,
                    },
                )
                with self._lock:
                    self.result.md5_layouts[layout] = self.result.md5_layouts.get(layout, 0) + 1
                    self.result.bytes += total
                return "downloaded"
            except ZipSlipError:
                raise  # a malicious or broken archive does not improve on retry
            except VerificationError as exc:
                last_error = str(exc)
                self.progress.message(
                    f"{rec.series_uid}: verification failed ({exc}); "
                    + ("downloading again" if attempt + 1 < self.opts.verify_attempts else "giving up")
                )
            finally:
                shutil.rmtree(work, ignore_errors=True)
        raise VerificationError(
            f"{rec.series_uid}: {last_error} (after {self.opts.verify_attempts} attempts; nothing kept)"
        )

    # -- whole run --------------------------------------------------------------------------------
    def run(self) -> FetchResult:
        """Fetch everything selected; raises DownloadError at the end if any series failed."""
        self.out.mkdir(parents=True, exist_ok=True)
        text = licence_text(self.opts.collection)
        atomic.write_text(self.out / LICENSE_NAME, text + "\n")
        self.manifest.set(
            "licence",
            {
                "license": citations.CT_LYMPH_NODES_LICENSE,
                "data_usage_policy": citations.TCIA_DATA_USAGE_POLICY,
                "citation": list(citations.CT_LYMPH_NODES_CITATIONS),
                "shown_at": _now(),
            },
        )
        shutil.rmtree(self.tmp_root, ignore_errors=True)  # leftovers of an interrupted run
        records = self.select_series()
        todo = [r for r in records if not self.is_complete(r)]
        for r in records:
            if r not in todo:
                self.result.skipped.append(r.series_uid)
        self.progress.start(len(records), sum(r.file_size or 0 for r in todo))
        for r in records:
            if r not in todo:
                self.progress.series_done(r, "skipped")
        with ThreadPoolExecutor(max_workers=max(1, self.opts.workers)) as pool:
            futures = {pool.submit(self.fetch_series, r): r for r in todo}
            for fut in as_completed(futures):
                rec = futures[fut]
                try:
                    status = fut.result()
                except LymphcadError as exc:
                    self.result.failed[rec.series_uid] = str(exc)
                    self.progress.series_done(rec, "failed")
                    self.progress.message(f"FAILED {rec.patient_id} {rec.series_uid}: {exc}")
                    continue
                (self.result.downloaded if status == "downloaded" else self.result.skipped).append(
                    rec.series_uid
                )
                self.progress.series_done(rec, status)
        shutil.rmtree(self.tmp_root, ignore_errors=True)
        self.write_metadata(records)
        if self.opts.annotations:
            self.fetch_archives()
        if self.result.failed:
            archives = {a.name for a in ARCHIVES}
            n_series = sum(1 for k in self.result.failed if k not in archives)
            n_arch = len(self.result.failed) - n_series
            first = next(iter(self.result.failed.values()))
            parts = []
            if n_series:
                parts.append(f"{n_series} of {len(records)} series")
            if n_arch:
                parts.append(f"{n_arch} annotation archive(s)")
            raise DownloadError(
                f"{' and '.join(parts)} failed (first: {first}); everything else is in place: run the same "
                f"command again to retry only what failed"
            )
        return self.result

    def write_metadata(self, records: list[SeriesRecord]) -> None:
        """metadata.csv with the retriever's columns, one row per series present on disk."""
        rows = []
        for r in records:
            row = self.manifest.series(r.series_uid)
            if row is None or row.get("status") != "ok":
                continue
            raw = r.raw
            rows.append(
                {
                    "Series UID": r.series_uid,
                    "Collection": r.collection or self.opts.collection,
                    "3rd Party Analysis": str(raw.get("ThirdPartyAnalysis", "NO") or "NO"),
                    "Data Description URI": str(raw.get("DataDescriptionURI", "") or ""),
                    "Subject ID": r.patient_id,
                    "Study UID": r.study_uid,
                    "Study Description": r.study_description,
                    "Study Date": r.study_date,
                    "Series Description": r.description,
                    "Manufacturer": r.manufacturer,
                    "Modality": r.modality,
                    "SOP Class Name": str(raw.get("SOPClassName", "") or ""),
                    "SOP Class UID": r.sop_class_uid,
                    "Number of Images": row.get("files", ""),
                    "File Size": row.get("bytes", ""),
                    "File Location": "./" + str(row.get("path", "")).replace(os.sep, "/"),
                    "Download Timestamp": row.get("time", ""),
                }
            )
        with atomic.atomic_open(self.out / METADATA_NAME) as fh:
            w = csv.DictWriter(fh, fieldnames=list(METADATA_COLUMNS), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)

    def fetch_archives(self) -> None:
        """The three annotation archives (masks checked against the spec's SHA-256)."""
        out_dir = self.out / "annotations"
        out_dir.mkdir(parents=True, exist_ok=True)
        done = self.manifest.data.get("archives", {})
        for spec in ARCHIVES:
            if spec.name in self.opts.archive_sha256:
                spec = ArchiveSpec(
                    spec.name, spec.url, self.opts.archive_sha256[spec.name], spec.url_verified
                )
            target = out_dir / f"{spec.name}.zip"
            prev = done.get(spec.name)
            if target.is_file() and prev and prev.get("sha256") == file_sha256(target):
                self.result.archives[spec.name] = dict(prev, status="skipped")
                continue
            try:
                path, digest, verified = download_archive(
                    spec, out_dir, get=self._get_file, base_url=self.opts.annotations_url
                )
            except LymphcadError as exc:
                self.result.failed[spec.name] = str(exc)
                self.progress.message(f"FAILED annotation archive {spec.name}: {exc}")
                continue
            entry = {
                "status": "ok",
                "file": str(path.relative_to(self.out)),
                "sha256": digest,
                "sha256_expected": spec.sha256,
                "sha256_verified": verified,
                "url": (self.opts.annotations_url.rstrip("/") + f"/{spec.name}.zip")
                if self.opts.annotations_url
                else spec.url,
                "bytes": path.stat().st_size,
                "time": _now(),
            }
            done[spec.name] = entry
            self.result.archives[spec.name] = entry
            self.manifest.set("archives", done)

    def _get_file(self, url: str, target: Path) -> int:
        """Plain retried GET of a URL into a file (the archives live on the website, not the API)."""

        def once() -> int:
            n = 0
            with self.client.session.get(url, stream=True, timeout=self.client.timeout) as resp:
                from lymphcad.tcia.api import _raise_for_status

                _raise_for_status(resp)
                with open(target, "wb") as fh:
                    for block in resp.iter_content(1 << 20):
                        fh.write(block)
                        n += len(block)
                        self.progress.bytes(len(block))
            return n

        result: int = self.client._with_retries(url, once)
        return result


def fetch(
    opts: FetchOptions,
    *,
    client: NBIAClient | None = None,
    progress: FetchProgress | None = None,
    show: Callable[[str], None] | None = None,
) -> FetchResult:
    """Show the licence/policy/citations (``show``), then run a :class:`Fetcher`."""
    if show is not None:
        show(licence_text(opts.collection))
    return Fetcher(opts, client=client, progress=progress).run()
