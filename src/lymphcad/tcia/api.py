"""A small client for TCIA's NBIA REST API v4 (no authentication; spec §5).

Only what ``fetch`` needs: ``getSeries`` (JSON), ``getSeriesMetadata`` (POST, CSV), ``getImage`` and
``getImageWithMD5Hash`` (ZIP, streamed to a file). Every request is retried with exponential backoff on
connection errors, timeouts, HTTP 429 and 5xx (``Retry-After`` is honoured, capped by the policy); other
4xx answers fail at once. The retry delays come from :class:`RetryPolicy`, which tests shrink.
"""

from __future__ import annotations

import csv
import io
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import requests

from lymphcad import __version__
from lymphcad.errors import LymphcadError

DEFAULT_API_URL: Final = "https://nbia.cancerimagingarchive.net/nbia-api/services/v4"
USER_AGENT: Final = f"lymphcad/{__version__} (+requests)"
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))


class DownloadError(LymphcadError):
    """A request failed after all retries, or the server answered with a non-retryable error."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: delay_n = min(max_delay, base_delay · 2**n) · (1 + jitter·U(0,1)).

    ``LYMPHCAD_RETRY_BASE_DELAY`` / ``LYMPHCAD_RETRY_ATTEMPTS`` override the defaults (tests use tiny delays).
    """

    attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    jitter: float = 0.25

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """The default policy, with overrides from the environment."""
        base = float(os.environ.get("LYMPHCAD_RETRY_BASE_DELAY", cls.base_delay))
        attempts = int(os.environ.get("LYMPHCAD_RETRY_ATTEMPTS", cls.attempts))
        return cls(attempts=max(1, attempts), base_delay=max(0.0, base))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        d = min(self.max_delay, self.base_delay * (2**attempt))
        d *= 1.0 + self.jitter * random.random()
        if retry_after is not None:
            d = max(d, min(retry_after, self.max_delay))
        return float(d)


def _is_retryable_exc(exc: BaseException) -> bool:
    return isinstance(
        exc,
        requests.ConnectionError
        | requests.Timeout
        | requests.exceptions.ChunkedEncodingError
        | requests.exceptions.ContentDecodingError,
    )


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class SeriesRecord:
    """One row of ``getSeries`` (keys normalised as tcia-utils does)."""

    series_uid: str
    study_uid: str
    patient_id: str
    collection: str
    modality: str
    image_count: int | None
    file_size: int | None
    description: str = ""
    study_description: str = ""
    study_date: str = ""
    manufacturer: str = ""
    sop_class_uid: str = ""
    license_name: str = ""
    license_uri: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> SeriesRecord:
        """Build from a JSON object of ``getSeries`` (v1 and v4 key spellings)."""

        def pick(*keys: str) -> Any:
            for k in keys:
                if k in row and row[k] not in (None, ""):
                    return row[k]
            return None

        def as_int(value: Any) -> int | None:
            try:
                return None if value is None else int(float(value))
            except (TypeError, ValueError):
                return None

        uid = pick("SeriesInstanceUID", "Series Instance UID", "SeriesUID")
        if not uid:
            raise DownloadError(f"getSeries row without SeriesInstanceUID: keys {sorted(row)[:8]}")
        return cls(
            series_uid=str(uid),
            study_uid=str(pick("StudyInstanceUID", "Study Instance UID", "StudyUID") or ""),
            patient_id=str(pick("PatientID", "Patient ID", "SubjectID", "Subject ID") or ""),
            collection=str(pick("Collection") or ""),
            modality=str(pick("Modality") or ""),
            image_count=as_int(pick("ImageCount", "Image Count", "Number of Images")),
            file_size=as_int(pick("FileSize", "File Size")),
            description=str(pick("SeriesDescription", "Series Description") or ""),
            study_description=str(pick("StudyDesc", "StudyDescription", "Study Description") or ""),
            study_date=str(pick("StudyDate", "Study Date") or ""),
            manufacturer=str(pick("Manufacturer") or ""),
            sop_class_uid=str(pick("SOPClassUID", "SOP Class UID") or ""),
            license_name=str(pick("LicenseName", "License Name") or ""),
            license_uri=str(pick("LicenseURI", "License URI") or ""),
            raw=dict(row),
        )


class NBIAClient:
    """NBIA REST API v4 client (``api_url`` is the ``…/services/v4`` base, no trailing slash needed)."""

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        *,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (15.0, 300.0),
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.retry = retry or RetryPolicy.from_env()
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", USER_AGENT)
        self._sleep = sleep
        self._on_retry = on_retry

    # -- low level --------------------------------------------------------------------------------
    def url(self, endpoint: str) -> str:
        """Full URL of an endpoint."""
        return f"{self.api_url}/{endpoint}"

    def _with_retries(self, what: str, attempt_fn: Callable[[], Any]) -> Any:
        last: str = ""
        for attempt in range(self.retry.attempts):
            retry_after: float | None = None
            try:
                return attempt_fn()
            except _HTTPStatus as exc:
                if exc.status not in _RETRY_STATUSES:
                    raise DownloadError(f"{what}: HTTP {exc.status} {exc.reason}".rstrip()) from None
                last = f"HTTP {exc.status}"
                retry_after = exc.retry_after
            except _Retryable as exc:
                last = str(exc)
            except Exception as exc:
                if not _is_retryable_exc(exc):
                    raise
                last = f"{exc.__class__.__name__}"
            if attempt + 1 < self.retry.attempts:
                delay = self.retry.delay(attempt, retry_after)
                if self._on_retry is not None:
                    self._on_retry(
                        f"{what}: {last}; retry {attempt + 1}/{self.retry.attempts - 1} in {delay:.1f} s"
                    )
                self._sleep(delay)
        raise DownloadError(f"{what}: failed after {self.retry.attempts} attempt(s) (last error: {last})")

    def _get(self, endpoint: str, params: dict[str, str] | None = None) -> requests.Response:
        def once() -> requests.Response:
            resp = self.session.get(self.url(endpoint), params=params, timeout=self.timeout)
            _raise_for_status(resp)
            return resp

        result: requests.Response = self._with_retries(endpoint, once)
        return result

    def _post(self, endpoint: str, data: dict[str, str]) -> requests.Response:
        def once() -> requests.Response:
            resp = self.session.post(self.url(endpoint), data=data, timeout=self.timeout)
            _raise_for_status(resp)
            return resp

        result: requests.Response = self._with_retries(endpoint, once)
        return result

    # -- endpoints --------------------------------------------------------------------------------
    def get_collections(self) -> list[str]:
        """``getCollectionValues``: names of all collections."""
        rows = self._get("getCollectionValues").json()
        return [str(r.get("Collection", r)) if isinstance(r, dict) else str(r) for r in rows]

    def get_series(
        self, collection: str, *, patient_id: str | None = None, modality: str | None = None
    ) -> list[SeriesRecord]:
        """``getSeries``: every series of a collection (optionally one patient / one modality)."""
        params = {"Collection": collection}
        if patient_id:
            params["PatientID"] = patient_id
        if modality:
            params["Modality"] = modality
        resp = self._get("getSeries", params)
        if not resp.content.strip():
            return []
        try:
            rows = resp.json()
        except ValueError as exc:
            raise DownloadError(f"getSeries: the answer is not JSON ({exc})") from exc
        if not isinstance(rows, list):
            raise DownloadError("getSeries: expected a JSON list")
        return [SeriesRecord.from_json(r) for r in rows]

    def get_series_metadata(self, series_uids: Iterable[str]) -> list[dict[str, str]]:
        """POST ``getSeriesMetadata`` (v4; CSV answer) for up to 10,000 series per call."""
        uids = list(series_uids)
        out: list[dict[str, str]] = []
        for start in range(0, len(uids), 10_000):
            resp = self._post("getSeriesMetadata", {"list": ",".join(uids[start : start + 10_000])})
            text = resp.text
            if text.lstrip().startswith("["):
                out.extend({str(k): str(v) for k, v in r.items()} for r in resp.json())
            else:
                out.extend(csv.DictReader(io.StringIO(text)))
        return out

    def download_series_zip(
        self,
        series_uid: str,
        target: Path,
        *,
        md5: bool = True,
        on_bytes: Callable[[int], None] | None = None,
        chunk: int = 1 << 20,
    ) -> int:
        """Stream one series' ZIP to ``target`` (overwritten) and return its size in bytes.

        ``md5=True`` uses ``getImageWithMD5Hash``, else ``getImage?NewFileNames=Yes``. A dropped connection
        restarts the download from byte 0 (NBIA builds the zip on the fly, so there is nothing to resume);
        ``on_bytes`` receives negative counts to take back bytes of an abandoned attempt.
        """
        endpoint = "getImageWithMD5Hash" if md5 else "getImage"
        params = {"SeriesInstanceUID": series_uid}
        if not md5:
            params["NewFileNames"] = "Yes"

        def once() -> int:
            written = 0
            try:
                with self.session.get(
                    self.url(endpoint), params=params, timeout=self.timeout, stream=True
                ) as resp:
                    _raise_for_status(resp)
                    expected = resp.headers.get("Content-Length")
                    with open(target, "wb") as fh:
                        for block in resp.iter_content(chunk_size=chunk):
                            if block:
                                fh.write(block)
                                written += len(block)
                                if on_bytes is not None:
                                    on_bytes(len(block))
                    if expected is not None and expected.isdigit() and int(expected) != written:
                        raise _Retryable(f"short read: {written} of {expected} bytes")
                return written
            except BaseException:
                if on_bytes is not None and written:
                    on_bytes(-written)
                raise

        result: int = self._with_retries(f"{endpoint} {series_uid}", once)
        return result


class _HTTPStatus(Exception):
    def __init__(self, status: int, reason: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class _Retryable(Exception):
    """A transfer problem worth another attempt (e.g. fewer bytes than Content-Length)."""


def _raise_for_status(resp: requests.Response) -> None:
    if resp.status_code >= 400:
        retry_after = _retry_after(resp)
        reason = resp.reason or ""
        resp.close()
        raise _HTTPStatus(resp.status_code, reason, retry_after)
