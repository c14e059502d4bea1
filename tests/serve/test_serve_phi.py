"""No PHI in the review page or the report: patient tags planted in a real CT series imported as a case never
appear in any response of the review API or in the exported and report files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient

from lymphcad.cli import main
from lymphcad.serve.app import create_app
from lymphcad.serve.service import ReviewService, ReviewSettings

PHI = {
    "PatientName": "ROE^RICHARD^XAVIER",
    "PatientID": "MRN-4471902",
    "PatientBirthDate": "19380911",
    "InstitutionName": "Mercy Lakeside Clinic",
    "ReferringPhysicianName": "KILDARE^JAMES",
    "AccessionNumber": "ACC-3310457",
}
TOKENS = sorted(
    set(PHI.values())
    | {p for v in PHI.values() for p in v.split("^") if len(p) > 3}
    | {"1938-09-11", "Lakeside"}
)
TOKEN = "phi-token"
WRITE = {"X-Lymphcad-Token": TOKEN}


def _leaks(data: bytes) -> list[str]:
    return [t for t in TOKENS if t.encode() in data or t.upper().encode() in data]


@pytest.fixture(scope="module")
def phi_cohort(real_ct_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A cohort imported from a real CT series whose files carry made-up PHI, and a detections CSV."""
    root = tmp_path_factory.mktemp("phi_review")
    series = root / "case_a"
    series.mkdir()
    for f in sorted((real_ct_dir / "totalsegmentator" / "example_ct_dicom").iterdir()):
        ds = pydicom.dcmread(f)
        for tag, value in PHI.items():
            setattr(ds, tag, value)
        ds.save_as(series / f.name)
    assert _leaks(next(series.iterdir()).read_bytes())  # planted
    cohort = root / "cohort"
    assert main(["import", str(series), "--out", str(cohort), "--region", "abdominal"]) == 0
    svc = ReviewService(ReviewSettings(cohort, None, root / "probe"))
    z, y, x = (s / 2 for s in svc.case_out("case_a").shape_zyx)
    centre = svc.cohort.geometries["case_a"].zyx_to_world([z, y, x])
    dets = root / "dets.csv"
    dets.write_text(
        "seriesuid,coordX,coordY,coordZ,probability,diameter_mm\n"
        f"case_a,{centre[0]:.2f},{centre[1]:.2f},{centre[2]:.2f},0.9,12\n"
    )
    return cohort, dets


def test_review_api_and_outputs_show_no_phi(phi_cohort: tuple[Path, Path], tmp_path: Path) -> None:
    cohort, dets = phi_cohort
    out = tmp_path / "review"
    svc = ReviewService(ReviewSettings(cohort, dets, out))
    client = TestClient(create_app(svc, token=TOKEN), base_url="http://127.0.0.1:8765")
    bodies = [
        client.get(p).content
        for p in ("/", "/static/viewer.js", "/api/cohort", "/api/cases/case_a", "/api/cases/case_a/state")
    ]
    bodies.append(client.get("/api/cases/case_a/volume").content[:4096])  # the JSON header
    bodies.append(client.get("/api/cases/case_a/slice.png").content)
    for body in ({"action": "accept", "finding_id": "d1"}, {"action": "add", "center_zyx": [5, 100, 100]}):
        bodies.append(client.post("/api/cases/case_a/decisions", json=body, headers=WRITE).content)
    bodies.append(client.post("/api/export", json={}, headers=WRITE).content)
    assert all(not _leaks(b) for b in bodies), [_leaks(b) for b in bodies]
    assert (out / "reviewed_dets.csv").is_file()
    report = tmp_path / "report.html"
    assert main(["report", str(cohort), "--dets", str(dets), "--out", str(report)]) == 0
    for f in [*out.rglob("*"), report]:
        if f.is_file():
            data = f.read_bytes()
            assert not _leaks(gzip.decompress(data) if f.name.endswith(".gz") else data), f
