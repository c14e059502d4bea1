"""A real Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) for the PACS tests, on 127.0.0.1.

Started on a free port with a temporary storage folder and a JSON config (DICOMweb on, DICOM server off,
no remote access), ready when ``GET /system`` answers, stopped with SIGTERM and waited for.
Outside CI the tests skip, with the reason, when the binary or the plugin is missing; in CI they fail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ORTHANC = Path(os.environ.get("LYMPHCAD_ORTHANC", "/usr/sbin/Orthanc"))
DICOMWEB_PLUGIN = Path(
    os.environ.get("LYMPHCAD_ORTHANC_DICOMWEB", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
)
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class OrthancServer:
    """A running Orthanc: its REST root, DICOMweb root and (when auth is on) the one user."""

    url: str
    dicomweb: str
    user: str | None = None
    password: str | None = None

    @property
    def auth(self) -> tuple[str, str] | None:
        return None if self.user is None or self.password is None else (self.user, self.password)


def require_orthanc() -> None:
    """Skip (outside CI) or fail (in CI) when Orthanc or its DICOMweb plugin is missing."""
    missing = [str(p) for p in (ORTHANC, DICOMWEB_PLUGIN) if not p.exists()]
    if missing:
        message = f"Orthanc not installed ({', '.join(missing)} missing; Debian: orthanc orthanc-dicomweb)"
        if os.environ.get("CI"):
            pytest.fail(message + " — CI must install it (.ci/run)")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def orthanc(folder: Path, *, user: str | None = None, password: str | None = None) -> Iterator[OrthancServer]:
    """Run Orthanc with its storage in ``folder``; basic auth on when ``user`` is given."""
    require_orthanc()
    port = _free_port()
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "Name": "lymphcad-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": port,
        "HttpServerEnabled": True,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": user is not None,
        "RegisteredUsers": {user: password} if user is not None else {},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        },
        "StorageCompression": False,
        "HttpCompressionEnabled": False,
        "HttpThreadsCount": 8,
        "ConcurrentJobs": 1,
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=1))
    log = (folder / "orthanc.log").open("wb")
    proc = subprocess.Popen([str(ORTHANC), str(cfg)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    auth = (user, password) if user is not None and password is not None else None
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with code {proc.returncode}: {(folder / 'orthanc.log').read_text()[-2000:]}"
                )
            try:
                if requests.get(f"{url}/system", auth=auth, timeout=2).status_code == 200:
                    break
            except requests.exceptions.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer GET /system within {READY_TIMEOUT_S:.0f} s")
            time.sleep(0.2)
        yield OrthancServer(url=url, dicomweb=f"{url}/dicom-web", user=user, password=password)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def upload(server: OrthancServer, files: list[Path]) -> None:
    """Upload DICOM files through Orthanc's REST API (POST /instances)."""
    with requests.Session() as s:
        s.auth = server.auth
        for f in files:
            r = s.post(f"{server.url}/instances", data=f.read_bytes(), timeout=30)
            r.raise_for_status()
