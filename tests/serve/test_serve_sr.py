"""Export of a reviewed case as DICOM SR (the clinical-outputs SR writer) when the case's DICOM series is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from lymphcad.cohort import open_cohort
from lymphcad.dicomout.sr import read_sr_findings
from lymphcad.errors import InputError
from lymphcad.geometry import CTVolume
from lymphcad.io.dicom.write import write_dicom_series
from lymphcad.serve.app import create_app
from lymphcad.serve.service import ReviewService, ReviewSettings
from review_fixtures import ReviewRun

TOKEN = "sr-token"
WRITE = {"X-Lymphcad-Token": TOKEN}


def _series(volume: CTVolume, folder: Path) -> None:
    """The case as a DICOM series (synthetic patient module: the SR copies it from the source)."""
    for path in write_dicom_series(volume, folder):
        ds = pydicom.dcmread(path)
        ds.PatientName = "Phantom^Synthetic"
        for keyword in (
            "PatientBirthDate",
            "PatientSex",
            "AccessionNumber",
            "StudyID",
            "ReferringPhysicianName",
        ):
            if keyword not in ds:
                setattr(ds, keyword, "")
        for keyword, value in (("StudyDate", "20261207"), ("StudyTime", "080000")):
            if keyword not in ds:
                setattr(ds, keyword, value)
        ds.save_as(path)


def test_export_writes_an_sr_of_accepted_and_added_findings(review_run: ReviewRun, tmp_path: Path) -> None:
    cohort = open_cohort(review_run.cohort)
    case_id = cohort.cases[0]
    _series(cohort.read_image(case_id), tmp_path / "dicom" / case_id)
    svc = ReviewService(
        ReviewSettings(review_run.cohort, review_run.dets, tmp_path / "out", dicom_dir=tmp_path / "dicom")
    )
    client = TestClient(create_app(svc, token=TOKEN), base_url="http://127.0.0.1:8765")
    url = f"/api/cases/{case_id}/decisions"
    centre = [s / 2 for s in svc.case_out(case_id).shape_zyx]
    for body in (
        {"action": "accept", "finding_id": "d1"},
        {"action": "reject", "finding_id": "d2"},
        {"action": "add", "center_zyx": centre, "diameter_mm": 14.0},
    ):
        assert client.post(url, json=body, headers=WRITE).status_code == 200
    res = client.post("/api/export", json={}, headers=WRITE).json()
    sr_path = tmp_path / "out" / "sr" / f"{case_id}_reviewed_sr.dcm"
    assert str(sr_path) in res["files"] and "1 case" in res["sr"]
    back = read_sr_findings(pydicom.dcmread(sr_path))
    state = {f.finding_id: f for f in svc.state(case_id).findings}
    want = [state["d1"], state["a1"]]
    assert len(back) == 2
    for f in want:
        dist = min(float(np.linalg.norm(np.subtract(b.point_xyz, f.center_xyz))) for b in back)
        assert dist < 0.5
    probs = sorted(round(v, 6) for b in back for k, v in b.measurements.items() if "robab" in k)
    assert probs == [round(state["d1"].probability or 0, 6), 1.0]


def test_a_dicom_series_of_another_case_is_refused(review_run: ReviewRun, tmp_path: Path) -> None:
    cohort = open_cohort(review_run.cohort)
    case_id = cohort.cases[0]
    vol = cohort.read_image(case_id)
    _series(
        CTVolume(vol.array[:-3], vol.geometry.crop((0, 0, 0), (vol.shape_zyx[0] - 3, *vol.shape_zyx[1:]))),
        tmp_path / "dicom" / case_id,
    )
    svc = ReviewService(
        ReviewSettings(review_run.cohort, review_run.dets, tmp_path / "out", dicom_dir=tmp_path / "dicom")
    )
    client = TestClient(create_app(svc, token=TOKEN), base_url="http://127.0.0.1:8765")
    assert (
        client.post(
            f"/api/cases/{case_id}/decisions", json={"action": "accept", "finding_id": "d1"}, headers=WRITE
        ).status_code
        == 200
    )
    res = client.post("/api/export", json={}, headers=WRITE)
    assert res.status_code == 422 and "not the series the case was made from" in res.json()["detail"]
    with pytest.raises(InputError):
        svc.export()
