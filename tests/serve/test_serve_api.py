"""The review API (Starlette TestClient): cases, voxels, decisions, review.csv, export, restart, security."""

from __future__ import annotations

import csv
import io
import json
import shutil
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lymphcad.cli import main
from lymphcad.cohort import open_cohort
from lymphcad.errors import InputError, LymphcadError
from lymphcad.geometry import CTVolume, reorient_to_lps
from lymphcad.io.detections import read_detections
from lymphcad.report.planes import window_u8
from lymphcad.serve import server as serve_server
from lymphcad.serve.app import create_app
from lymphcad.serve.cases import make_display_volume
from lymphcad.serve.service import ReviewService, ReviewSettings
from lymphcad.serve.store import REVIEW_COLUMNS, read_review
from review_fixtures import ReviewRun

TOKEN = "test-token-123"
BASE = "http://127.0.0.1:8765"
WRITE = {"X-Lymphcad-Token": TOKEN, "Origin": BASE, "Sec-Fetch-Site": "same-origin"}


def _service(run: ReviewRun, out: Path) -> ReviewService:
    return ReviewService(
        ReviewSettings(cohort_dir=run.cohort, detections=run.dets, out_dir=out, reader="dr. test")
    )


@pytest.fixture
def service(review_run: ReviewRun, tmp_path: Path) -> ReviewService:
    return _service(review_run, tmp_path / "out")


@pytest.fixture
def client(service: ReviewService) -> TestClient:
    return TestClient(create_app(service, token=TOKEN), base_url=BASE)


def _volume(client: TestClient, case_id: str) -> tuple[dict[str, object], np.ndarray]:
    res = client.get(f"/api/cases/{case_id}/volume")
    assert res.status_code == 200
    body = res.content
    (hlen,) = struct.unpack("<I", body[:4])
    assert (4 + hlen) % 8 == 0
    header = json.loads(body[4 : 4 + hlen])
    data = np.frombuffer(body[4 + hlen :], dtype="<i2").reshape(header["shape_zyx"])
    return header, data


def test_case_list_counts_detections_truth_and_threshold(client: TestClient, review_run: ReviewRun) -> None:
    cohort = open_cohort(review_run.cohort)
    table = read_detections(review_run.dets)
    data = client.get("/api/cohort").json()
    assert [c["case_id"] for c in data["cases"]] == cohort.cases
    assert data["license"] == cohort.info.license and data["citation"] == cohort.info.citation
    for c in data["cases"]:
        sel = table.case_ids == c["case_id"]
        assert c["n_detections"] == int(sel.sum())
        assert c["n_above"] == int((table.probabilities[sel] >= 0.5).sum())
        assert c["n_truth"] == len(cohort.annotations_for(c["case_id"]))
        assert c["status"] == "new"
    assert TOKEN not in json.dumps(data)


def test_findings_are_ranked_and_positioned_on_the_display_volume(
    client: TestClient, review_run: ReviewRun
) -> None:
    cohort = open_cohort(review_run.cohort)
    case_id = cohort.cases[0]
    info = client.get(f"/api/cases/{case_id}").json()
    probs = [f["probability"] for f in info["findings"]]
    assert probs == sorted(probs, reverse=True)
    assert [f["finding_id"] for f in info["findings"]] == [f"d{i + 1}" for i in range(len(probs))]
    header, data = _volume(client, case_id)
    vol = cohort.read_image(case_id)
    expected, geom = reorient_to_lps(vol.array, vol.geometry)
    assert np.array_equal(data, expected)
    assert header["shape_zyx"] == list(info["shape_zyx"]) == list(geom.shape_zyx)
    # every finding's display position holds the voxel at its world position in the original image
    for f in info["findings"] + info["truth"]:
        k, j, i = np.floor(np.asarray(f["center_zyx"]) + 0.5).astype(int)
        orig = vol.geometry.world_to_voxel_zyx(f["center_xyz"])
        assert data[k, j, i] == vol.array[tuple(orig)]


def test_slice_png_is_radiological_and_mm_proportional(client: TestClient, review_run: ReviewRun) -> None:
    case_id = open_cohort(review_run.cohort).cases[0]
    _, data = _volume(client, case_id)
    info = client.get(f"/api/cases/{case_id}").json()
    sz, _sy, sx = info["spacing_zyx"]
    res = client.get(
        f"/api/cases/{case_id}/slice.png", params={"plane": "coronal", "index": 40, "width": 400, "level": 40}
    )
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(res.content)))
    unit = min(sz, sx)
    assert img.shape == (round(data.shape[0] * sz / unit), round(data.shape[2] * sx / unit))
    # superior up: back at voxel size, the PNG matches the slice with its rows flipped, not as stored
    back = np.asarray(
        Image.open(io.BytesIO(res.content)).resize((data.shape[2], data.shape[0]), Image.Resampling.BILINEAR),
        dtype=float,
    )
    flipped = window_u8(data[::-1, 40, :], 400, 40).astype(float)
    stored = window_u8(data[:, 40, :], 400, 40).astype(float)
    assert np.abs(back - flipped).mean() < 0.5 * np.abs(back - stored).mean()
    assert (
        client.get(f"/api/cases/{case_id}/slice.png", params={"plane": "axial", "index": 10_000}).status_code
        == 404
    )


def test_decisions_follow_formats_section_6_and_export(client: TestClient, service: ReviewService) -> None:
    case_id = service.cases[0]
    center = [float(v) / 2 for v in service.case_out(case_id).shape_zyx]
    steps = [
        {"action": "accept", "finding_id": "d1"},
        {"action": "reject", "finding_id": "d2"},
        {"action": "add", "center_zyx": center, "diameter_mm": 12.5},
        {"action": "accept", "finding_id": "d3"},
        {"action": "undo", "finding_id": "d3"},
    ]
    for body in steps:
        res = client.post(f"/api/cases/{case_id}/decisions", json=body, headers=WRITE)
        assert res.status_code == 200, res.text
    state = {f["finding_id"]: f for f in res.json()["findings"]}
    assert state["d1"]["decision"] == "accept" and state["d2"]["decision"] == "reject"
    assert state["d3"]["decision"] is None and state["a1"]["decision"] == "add"
    assert state["a1"]["diameter_mm"] == 12.5 and state["a1"]["probability"] is None
    with service.store.path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == REVIEW_COLUMNS
    assert [r[1:3] for r in rows[1:]] == [
        ["d1", "accept"],
        ["d2", "reject"],
        ["a1", "add"],
        ["d3", "accept"],
        ["d3", "undo"],
    ]
    d1 = service.findings[case_id][0]
    assert rows[1][3:6] == [f"{v:.3f}" for v in d1.center_xyz] and rows[1][7] == f"{d1.probability:.6f}"
    assert rows[3][7] == "" and all(r[8] == "dr. test" and r[9].endswith("Z") for r in rows[1:])
    summary = client.get("/api/cohort").json()["cases"][0]
    assert summary["status"] in ("in progress", "done") and summary["n_added"] == 1
    out = client.post("/api/export", json={}, headers=WRITE)
    assert out.status_code == 200
    exported = read_detections(service.settings.out_dir / "reviewed_dets.csv")
    assert len(exported) == 2
    probs = sorted(exported.probabilities.tolist())
    assert probs == [pytest.approx(d1.probability, abs=1e-6), 1.0]
    added_world = np.asarray(state["a1"]["center_xyz"])
    assert np.allclose(exported.centers_xyz[np.argmax(exported.probabilities == 1.0)], added_world, atol=1e-3)
    assert (service.settings.out_dir / "reviewed_dets.csv.json").is_file()


def test_bad_decisions_are_refused_without_a_trace(client: TestClient, service: ReviewService) -> None:
    case_id = service.cases[0]
    url = f"/api/cases/{case_id}/decisions"
    assert client.post(url, json={"action": "undo", "finding_id": "d1"}, headers=WRITE).status_code == 409
    assert client.post(url, json={"action": "accept", "finding_id": "d999"}, headers=WRITE).status_code == 409
    assert client.post(url, json={"action": "accept", "finding_id": "a1"}, headers=WRITE).status_code == 409
    assert (
        client.post(url, json={"action": "add", "center_zyx": [-50, 0, 0]}, headers=WRITE).status_code == 409
    )
    assert client.post(url, json={"action": "add"}, headers=WRITE).status_code == 409
    assert client.post(url, json={"action": "delete", "finding_id": "d1"}, headers=WRITE).status_code == 422
    assert client.post(url, json={"action": "accept", "finding_id": "../x"}, headers=WRITE).status_code == 422
    assert not service.store.path.exists()


def test_state_survives_a_restart_and_two_tabs_keep_both(review_run: ReviewRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _service(review_run, out)
    tab_a = TestClient(create_app(first, token=TOKEN), base_url=BASE)
    tab_b = TestClient(create_app(first, token=TOKEN), base_url=BASE)
    case_id = first.cases[1]
    n = len(first.findings[case_id])
    errors: list[int] = []

    def work(tab: TestClient, ids: range) -> None:
        for i in ids:
            res = tab.post(
                f"/api/cases/{case_id}/decisions",
                json={"action": "accept", "finding_id": f"d{i}"},
                headers=WRITE,
            )
            if res.status_code != 200:
                errors.append(res.status_code)

    threads = [
        threading.Thread(target=work, args=(tab_a, range(1, n + 1, 2))),
        threading.Thread(target=work, args=(tab_b, range(2, n + 1, 2))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(read_review(out / "review.csv")) == n
    again = _service(review_run, out)
    assert all(f.decision == "accept" for f in again.state(case_id).findings)
    assert again.summary(case_id).status == "done"


def test_review_log_of_other_detections_is_refused(review_run: ReviewRun, tmp_path: Path) -> None:
    out = tmp_path / "out"
    svc = _service(review_run, out)
    TestClient(create_app(svc, token=TOKEN), base_url=BASE).post(
        f"/api/cases/{svc.cases[0]}/decisions", json={"action": "accept", "finding_id": "d1"}, headers=WRITE
    )
    other = tmp_path / "other.csv"
    lines = review_run.dets.read_text().splitlines()
    other.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # without the first case's top detection
    with pytest.raises(InputError, match="review log"):
        ReviewService(ReviewSettings(review_run.cohort, other, out))


def test_large_volume_is_slab_averaged_with_a_notice() -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(-1000, 1000, size=(10, 6, 5)).astype(np.int16)
    vol = CTVolume.from_array(arr, spacing_zyx=(1.0, 0.8, 0.8), origin_xyz=(0.0, 0.0, 0.0))
    disp = make_display_volume(vol, max_voxels=100)
    assert (
        disp.factor == 3 and disp.array.shape == (3, 6, 5) and disp.notice and "last 1 slice" in disp.notice
    )
    assert np.array_equal(disp.array[1], np.round(arr[3:6].mean(axis=0, dtype=np.float32)).astype(np.int16))
    assert disp.to_zyx(vol.geometry.zyx_to_world(np.array([4.0, 2.0, 3.0]))) == pytest.approx((1.0, 2.0, 3.0))


# -- security --------------------------------------------------------------------------------------
def test_cross_site_form_post_is_refused(client: TestClient, service: ReviewService) -> None:
    url = f"/api/cases/{service.cases[0]}/decisions"
    form = client.post(
        url,
        data={"action": "accept", "finding_id": "d1"},
        headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert form.status_code == 415
    plain = client.post(
        url,
        content='{"action":"accept","finding_id":"d1"}',
        headers={"Content-Type": "text/plain", "X-Lymphcad-Token": TOKEN},
    )
    assert plain.status_code == 415
    cross = client.post(
        url, json={"action": "accept", "finding_id": "d1"}, headers={**WRITE, "Origin": "http://evil.example"}
    )
    assert cross.status_code == 403
    site = client.post(
        url, json={"action": "accept", "finding_id": "d1"}, headers={**WRITE, "Sec-Fetch-Site": "cross-site"}
    )
    assert site.status_code == 403
    assert client.post("/api/export", json={}, headers={**WRITE, "Origin": "null"}).status_code == 403
    assert not service.store.path.exists()
    assert not (service.settings.out_dir / "reviewed_dets.csv").exists()


def test_missing_or_wrong_token_is_refused(client: TestClient, service: ReviewService) -> None:
    url = f"/api/cases/{service.cases[0]}/decisions"
    body = {"action": "accept", "finding_id": "d1"}
    assert client.post(url, json=body).status_code == 403
    assert client.post(url, json=body, headers={**WRITE, "X-Lymphcad-Token": "guess"}).status_code == 403
    assert client.post("/api/export", json={}).status_code == 403
    assert not service.store.path.exists()
    page = client.get("/")
    assert f'<meta name="lymphcad-token" content="{TOKEN}">' in page.text
    assert client.post(url, json=body, headers={"X-Lymphcad-Token": TOKEN}).status_code == 200


def test_wrong_host_header_is_refused(client: TestClient, service: ReviewService) -> None:
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.nip.io"):
        assert client.get("/", headers={"Host": host}).status_code == 400
        assert client.get("/api/cohort", headers={"Host": host}).status_code == 400
        res = client.post(
            f"/api/cases/{service.cases[0]}/decisions",
            json={"action": "accept", "finding_id": "d1"},
            headers={**WRITE, "Host": host},
        )
        assert res.status_code == 400
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765"):
        assert client.get("/api/cohort", headers={"Host": host}).status_code == 200
    assert not service.store.path.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/api/cases/..%2fdataset.json",
        "/api/cases/..%2f..%2fetc%2fpasswd/volume",
        "/api/cases/%2e%2e%2fimages%2fphantom_0000/volume",
        "/api/cases/..%252fdataset.json/state",
        "/api/cases/phantom_0000%2f..%2f..%2fdataset.json",
        "/api/cases/..",
        "/static/..%2fapp.py",
        "/static/%2e%2e%2f%2e%2e%2fcohort.py",
        "/static/index.html",
        "/api/cases/phantom_9999",
    ],
)
def test_traversal_and_unknown_ids_are_not_found(client: TestClient, path: str) -> None:
    res = client.get(path)
    assert res.status_code == 404
    assert b"import" not in res.content and b"format_version" not in res.content


def test_security_headers_and_no_external_resources(client: TestClient) -> None:
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    for name in ("viewer.js", "viewer.css"):
        text = client.get(f"/static/{name}").text
        assert "http://" not in text and "https://" not in text
    assert "http" not in page.text.replace('content="width=device-width', "")


def test_host_option_warns_and_binds_loopback_by_default(
    review_run: ReviewRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[serve_server.Launch] = []

    def fake_serve(service: ReviewService, launch: serve_server.Launch, *, announce: object) -> bool:
        seen.append(launch)
        assert callable(announce)
        announce(launch.url)
        return False

    monkeypatch.setattr(serve_server, "serve", fake_serve)
    args = ["serve", str(review_run.cohort), "--dets", str(review_run.dets), "--out", str(tmp_path / "o")]
    assert main(args) == 0
    assert seen[-1].host == "127.0.0.1" and seen[-1].is_loopback
    first = capsys.readouterr()
    assert (
        "warning" not in first.err
        and first.out.count("http://") == 1
        and "http://127.0.0.1:8765/" in first.out
    )
    assert main([*args, "--host", "0.0.0.0"]) == 0
    assert not seen[-1].is_loopback and seen[-1].url == "http://127.0.0.1:8765/"
    assert "warning" in capsys.readouterr().err
    assert serve_server.plan_launch("192.168.1.5", 80).allowed_hosts[-1] == "192.168.1.5"


def test_cohort_without_detections_and_a_busy_port(review_run: ReviewRun, tmp_path: Path) -> None:
    svc = ReviewService(ReviewSettings(review_run.cohort, None, tmp_path / "out"))
    client = TestClient(create_app(svc, token=TOKEN), base_url=BASE)
    case = client.get(f"/api/cases/{svc.cases[0]}").json()
    assert case["findings"] == [] and len(case["truth"]) == len(svc.cohort.annotations_for(svc.cases[0]))
    assert client.post("/api/export", json={}, headers=WRITE).json()["n_accepted"] == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        launch = serve_server.plan_launch("127.0.0.1", busy.getsockname()[1])
        with pytest.raises(LymphcadError, match="cannot listen on 127.0.0.1 port"):
            serve_server.serve(svc, launch, announce=lambda _url: None)


def test_unreadable_image_is_one_clear_error(review_run: ReviewRun, tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    shutil.copytree(review_run.cohort, cohort)
    svc = ReviewService(ReviewSettings(cohort, review_run.dets, tmp_path / "out"))
    case_id = svc.cases[0]
    (cohort / "images" / f"{case_id}.nii.gz").write_bytes(b"\x1f\x8b truncated")
    res = TestClient(create_app(svc, token=TOKEN), base_url=BASE).get(f"/api/cases/{case_id}/volume")
    assert res.status_code == 422
    assert f"{case_id}.nii.gz" in res.json()["detail"] and "Traceback" not in res.text
