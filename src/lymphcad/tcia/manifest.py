"""``.tcia`` manifests (spec §5.3), read as the NBIA Data Retriever and tcia-utils read them.

Format: ``key=value`` header lines (downloadServerUrl, includeAnnotation, noOfrRetry, databasketId,
manifestVersion, ListOfSeriesToDownload=), then one SeriesInstanceUID per line. Everything after the
``ListOfSeriesToDownload=`` line is a UID; blank lines and surrounding whitespace are ignored. A file with
no header (a bare list of UIDs) is accepted too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from lymphcad.errors import InputError

_UID_RE: Final = re.compile(r"^[0-9]+(\.[0-9]+)*$")
LIST_KEY: Final = "ListOfSeriesToDownload"


@dataclass(frozen=True)
class TciaManifest:
    """A parsed manifest: header fields and the series UIDs in file order (duplicates removed)."""

    series_uids: list[str]
    header: dict[str, str] = field(default_factory=dict)


def parse_manifest(text: str, path: str | Path | None = None) -> TciaManifest:
    """Parse the text of a ``.tcia`` manifest."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    header: dict[str, str] = {}
    start = 0
    has_header = bool(lines) and lines[0].strip().startswith("downloadServerUrl")
    if has_header:
        for n, raw in enumerate(lines):
            line = raw.strip()
            if "=" in line:
                key, value = line.split("=", 1)
                header[key.strip()] = value.strip()
                if key.strip() == LIST_KEY:
                    start = n + 1
                    break
        else:
            raise InputError(f"manifest has a header but no {LIST_KEY}= line", path)
    uids: list[str] = []
    seen: set[str] = set()
    for n in range(start, len(lines)):
        uid = lines[n].strip()
        if not uid:
            continue
        if not _UID_RE.match(uid) or len(uid) > 64:
            raise InputError(f"not a SeriesInstanceUID: {uid[:70]!r}", path, n + 1)
        if uid not in seen:
            seen.add(uid)
            uids.append(uid)
    if not uids:
        raise InputError("manifest lists no series", path)
    return TciaManifest(uids, header)


def read_manifest(path: str | Path) -> TciaManifest:
    """Read a ``.tcia`` manifest file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except OSError as exc:
        raise InputError(f"cannot read manifest ({exc.strerror})", path) from exc
    except UnicodeDecodeError as exc:
        raise InputError("manifest is not text", path) from exc
    return parse_manifest(text, path)


def write_manifest(path: str | Path, series_uids: list[str], *, basket_id: str = "lymphcad.tcia") -> None:
    """Write a manifest in the retriever's format (used by tests and to hand a selection to the retriever)."""
    from lymphcad.atomic import write_text

    head = [
        "downloadServerUrl=https://public.cancerimagingarchive.net/nbia-download/servlet/DownloadServlet",
        "includeAnnotation=true",
        "noOfrRetry=4",
        f"databasketId={basket_id}",
        "manifestVersion=3.0",
        f"{LIST_KEY}=",
    ]
    write_text(path, "\n".join([*head, *series_uids]) + "\n")
