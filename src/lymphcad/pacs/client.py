"""A DICOMweb client for the clinical workflow: QIDO-RS to list, WADO-RS to pull a CT series, STOW-RS to
store results (``dicomweb-client`` underneath).

Pulling a series is the one place that bypasses dicomweb-client's decoding: it turns every instance into a
pydicom Dataset, and writing those back to files cost 2–3 s for 300 slices; instead the multipart reply
is streamed and each part (a DICOM Part 10 file, as stored) is written to disk unchanged.

Every network or HTTP failure becomes one :class:`PacsError` line naming the server (without any
credentials) and the problem: unreachable, 401/403, not found, an empty study, no usable CT series, a
series too large for this machine's memory, a store the server did not fully accept.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from lymphcad.errors import LymphcadError
from lymphcad.geometry import direction_from_dicom
from lymphcad.pacs.auth import Credentials

# dicomweb-client logs request URLs and headers at debug level: keep it quiet whatever the root logger does
logging.getLogger("dicomweb_client").setLevel(logging.WARNING)

#: WADO-RS Accept header: the instances as stored (no transcoding on the server).
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: Bytes read from the network at a time.
CHUNK_BYTES = 1 << 20
#: Seconds to wait for a server to answer one request.
TIMEOUT_S = 60.0
#: |normal · z| above which a series counts as axial.
_AXIAL_COS = 0.9
#: Memory a series may take, as a fraction of the memory available now (the volume, its float copy and
#: the network's buffers must fit beside it).
MEMORY_FRACTION = 0.25


class PacsError(LymphcadError):
    """A DICOMweb server or study that cannot be used (the message says why)."""


def safe_url(url: str) -> str:
    """``url`` without user info, query or fragment (what may appear in messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PacsError(f"not a DICOMweb URL (expected http(s)://host[:port]/path): {safe_url(url)!r}")
    if parts.username or parts.password:
        raise PacsError(
            "credentials in the URL are refused (they would show in the process list): use --user with "
            "--password-file, or --token-file",
            safe_url(url),
        )
    return url.rstrip("/")


@dataclass(frozen=True)
class StudyRow:
    """One study as QIDO-RS lists it (no patient fields)."""

    study_uid: str
    modalities: tuple[str, ...]
    n_series: int | None
    n_instances: int | None
    description: str


@dataclass(frozen=True)
class SeriesRow:
    """One series as QIDO-RS lists it."""

    series_uid: str
    modality: str
    number: int | None
    n_instances: int | None
    description: str


@dataclass(frozen=True)
class SeriesChoice:
    """The CT series chosen for detection and why."""

    series: SeriesRow
    reason: str
    rows: int
    columns: int


@dataclass(frozen=True)
class StoreResult:
    """What the server said about a STOW-RS request."""

    stored: int
    failed: int


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    element = item.get(tag) or {}
    values = element.get("Value") or []
    return list(values)


def _text(item: dict[str, Any], tag: str) -> str:
    values = _values(item, tag)
    return str(values[0]) if values else ""


def _int(item: dict[str, Any], tag: str) -> int | None:
    values = _values(item, tag)
    try:
        return int(values[0]) if values else None
    except (TypeError, ValueError):
        return None


class Pacs:
    """One DICOMweb server (base URL of its QIDO/WADO/STOW services) with credentials."""

    def __init__(self, url: str, credentials: Credentials | None = None) -> None:
        self.url = _check_url(url)
        self.where = safe_url(self.url)
        self._session = (credentials or Credentials()).session()
        self._client = DICOMwebClient(self.url, session=self._session, timeout=TIMEOUT_S)
        # two tries 0.1 s apart on 408/429/503/504 (the default, five with exponential waits, made an
        # unreachable server a 30 s wait)
        self._client.set_http_retry_params(retry=True, max_attempts=2, wait_exponential_multiplier=100)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn requests' errors into one PacsError line (never including credentials)."""
        try:
            yield
        except requests.exceptions.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else None
            if code == 401:
                problem = "401 Unauthorized: credentials missing or wrong (--user with --password-file, or --token-file)"
            elif code == 403:
                problem = "403 Forbidden: these credentials may not " + what
            elif code == 404:
                problem = f"404 Not Found: cannot {what} (wrong URL, study or series?)"
            else:
                problem = f"HTTP {code} while trying to {what}"
            raise PacsError(problem, self.where) from None
        except requests.exceptions.ConnectionError:
            raise PacsError(f"cannot reach the DICOMweb server (to {what})", self.where) from None
        except requests.exceptions.Timeout:
            raise PacsError(
                f"the DICOMweb server did not answer in {TIMEOUT_S:.0f} s (to {what})", self.where
            ) from None
        except requests.exceptions.RequestException as exc:
            raise PacsError(
                f"request failed ({exc.__class__.__name__}) while trying to {what}", self.where
            ) from None

    # -- QIDO-RS ----------------------------------------------------------------------------------
    def studies(self) -> list[StudyRow]:
        """All studies on the server (UID, modalities, counts, description)."""
        with self._errors("search for studies"):
            found = self._client.search_for_studies(
                fields=[
                    "ModalitiesInStudy",
                    "NumberOfStudyRelatedSeries",
                    "NumberOfStudyRelatedInstances",
                    "StudyDescription",
                ],
                get_remaining=True,
            )
        rows = [
            StudyRow(
                study_uid=_text(s, "0020000D"),
                modalities=tuple(str(v) for v in _values(s, "00080061")),
                n_series=_int(s, "00201206"),
                n_instances=_int(s, "00201208"),
                description=_text(s, "00081030"),
            )
            for s in found
        ]
        return sorted(rows, key=lambda r: r.study_uid)

    def series(self, study_uid: str) -> list[SeriesRow]:
        """The series of one study (PacsError when the study has none or does not exist)."""
        with self._errors(f"search the series of study {study_uid}"):
            found = self._client.search_for_series(
                study_instance_uid=study_uid,
                fields=["NumberOfSeriesRelatedInstances", "SeriesDescription", "SeriesNumber", "Modality"],
                get_remaining=True,
            )
        if not found:
            raise PacsError(f"study {study_uid} has no series (empty or unknown study)", self.where)
        rows = [
            SeriesRow(
                series_uid=_text(s, "0020000E"),
                modality=_text(s, "00080060"),
                number=_int(s, "00200011"),
                n_instances=_int(s, "00201209"),
                description=_text(s, "0008103E"),
            )
            for s in found
        ]
        return sorted(rows, key=lambda r: (r.number if r.number is not None else 1 << 30, r.series_uid))

    def _first_instance(self, study_uid: str, series_uid: str) -> dict[str, Any] | None:
        with self._errors(f"read the metadata of series {series_uid}"):
            found = self._client.search_for_instances(
                study_instance_uid=study_uid, series_instance_uid=series_uid, limit=1
            )
            if not found:
                return None
            sop = _text(found[0], "00080018")
            meta = self._client.retrieve_instance_metadata(study_uid, series_uid, sop)
        return meta

    def choose_series(self, study_uid: str, series_uid: str | None = None) -> SeriesChoice:
        """The series to detect on: ``series_uid`` if given, else the largest axial CT image series."""
        rows = self.series(study_uid)
        if series_uid is not None:
            match = [r for r in rows if r.series_uid == series_uid]
            if not match:
                raise PacsError(f"series {series_uid} is not in study {study_uid}", self.where)
            candidates, reason = match, "as asked (--series)"
        else:
            candidates = [r for r in rows if r.modality == "CT"]
            if not candidates:
                listing = ", ".join(sorted({r.modality or "?" for r in rows}))
                raise PacsError(f"study {study_uid} has no CT series (modalities: {listing})", self.where)
            reason = "the largest axial CT image series"
        usable: list[SeriesChoice] = []
        rejected: list[str] = []
        for row in sorted(candidates, key=lambda r: -(r.n_instances or 0)):
            meta = self._first_instance(study_uid, row.series_uid)
            problem = _not_axial_ct(meta)
            if problem is not None:
                rejected.append(f"{row.series_uid}: {problem}")
                continue
            assert meta is not None
            usable.append(SeriesChoice(row, reason, _int(meta, "00280010") or 0, _int(meta, "00280011") or 0))
            break  # sorted by size: the first usable one is the largest
        if not usable:
            raise PacsError(
                f"no axial CT image series in study {study_uid} ({'; '.join(rejected)})", self.where
            )
        return usable[0]

    # -- WADO-RS ----------------------------------------------------------------------------------
    def retrieve_series(
        self,
        study_uid: str,
        choice: SeriesChoice,
        folder: Path,
        *,
        memory_limit_bytes: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Download a series into ``folder`` as DICOM files (as stored, no transcoding); returns the count.

        Refused before any download when the series would not fit in memory (PacsError).
        """
        check_fits_in_memory(choice, memory_limit_bytes=memory_limit_bytes, where=self.where)
        folder.mkdir(parents=True, exist_ok=True)
        n = 0
        url = f"{self.url}/studies/{study_uid}/series/{choice.series.series_uid}"
        with (
            self._errors(f"retrieve series {choice.series.series_uid}"),
            self._session.get(url, headers={"Accept": AS_STORED}, stream=True, timeout=TIMEOUT_S) as reply,
        ):
            reply.raise_for_status()
            for part in multipart_parts(
                reply.headers.get("Content-Type", ""), reply.iter_content(CHUNK_BYTES)
            ):
                if part[128:132] != b"DICM":
                    raise PacsError(f"WADO-RS part {n + 1} is not a DICOM Part 10 instance", self.where)
                (folder / f"{n:06d}.dcm").write_bytes(part)
                n += 1
                if progress is not None:
                    progress(n)
        if n == 0:
            raise PacsError(f"series {choice.series.series_uid} returned no instances", self.where)
        return n

    # -- STOW-RS ----------------------------------------------------------------------------------
    def store(self, datasets: Sequence[Dataset], study_uid: str) -> StoreResult:
        """Store instances in one STOW-RS request; PacsError unless the server accepted every one."""
        with self._errors(f"store {len(datasets)} object(s) in study {study_uid}"):
            reply = self._client.store_instances(list(datasets), study_instance_uid=study_uid)
        failed = len(reply.get("FailedSOPSequence", []) or [])  # Orthanc always sends it, empty when fine
        stored = len(reply.get("ReferencedSOPSequence", []) or [])
        if failed or stored != len(datasets):
            raise PacsError(
                f"the server stored {stored} of {len(datasets)} object(s) ({failed} failed)", self.where
            )
        return StoreResult(stored=stored, failed=failed)


def multipart_parts(content_type: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The bodies of a ``multipart/related`` HTTP reply, streamed (RFC 2046); a plain ``application/dicom``
    reply (some servers send one instance unwrapped) is one part."""
    if content_type.lower().startswith("application/dicom"):
        yield b"".join(chunks)
        return
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/related") or m is None:
        raise ValueError(f"unexpected WADO-RS reply type {content_type!r}")
    delimiter = b"\r\n--" + m.group(1).encode("ascii")
    buf = bytearray(b"\r\n")  # the first delimiter may open the body without a preceding line break
    start = 0
    seen_first = False
    for chunk in chunks:
        buf += chunk
        while (i := buf.find(delimiter, start)) >= 0:
            segment = bytes(buf[:i])
            del buf[: i + len(delimiter)]
            start = 0
            if seen_first:
                head_end = segment.find(b"\r\n\r\n")
                if head_end < 0:
                    raise ValueError("a multipart part without headers")
                yield segment[head_end + 4 :]
            seen_first = True
            if buf[:2] == b"--":
                return  # the closing delimiter
        start = max(0, len(buf) - len(delimiter))
    if seen_first and buf.strip(b"\r\n-"):
        raise ValueError("the multipart reply ended without its closing delimiter")


def _not_axial_ct(meta: dict[str, Any] | None) -> str | None:
    """Why an instance's series is not an axial single-frame CT image series (None when it is)."""
    if meta is None:
        return "no instances"
    if _text(meta, "00080060") != "CT":
        return f"modality {_text(meta, '00080060') or 'missing'}"
    image_type = {str(v).upper() for v in _values(meta, "00080008")}
    if "LOCALIZER" in image_type:
        return "a localizer (scout)"
    if (_int(meta, "00280008") or 1) > 1:
        return "a multi-frame (enhanced) CT"
    iop = _values(meta, "00200037")
    if len(iop) != 6:
        return "no image orientation"
    try:
        normal = direction_from_dicom(np.asarray(iop, dtype=float))[:, 2]
    except ValueError:
        return "a degenerate image orientation"
    if abs(float(normal[2])) < _AXIAL_COS:
        return "not axial"
    return None


def available_memory_bytes() -> int:
    """Memory available now (Linux MemAvailable, else free pages)."""
    try:
        text = Path("/proc/meminfo").read_text()
        m = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
        if m:
            return int(m.group(1)) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def check_fits_in_memory(choice: SeriesChoice, *, memory_limit_bytes: int | None, where: str) -> None:
    """PacsError when the series' int16 volume would exceed MEMORY_FRACTION of the available memory."""
    n = choice.series.n_instances or 0
    need = n * max(choice.rows, 1) * max(choice.columns, 1) * 2
    limit = (
        int(MEMORY_FRACTION * available_memory_bytes()) if memory_limit_bytes is None else memory_limit_bytes
    )
    if need > limit:
        raise PacsError(
            f"series {choice.series.series_uid} is too large for this machine's memory: {n} images of "
            f"{choice.rows}x{choice.columns} need {need / 2**30:.1f} GiB, limit {limit / 2**30:.1f} GiB",
            where,
        )
