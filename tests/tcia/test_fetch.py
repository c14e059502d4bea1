"""``lymphcad fetch`` against a local NBIA server (no internet): layout, verification, faults, resume."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from lymphcad.errors import InputError
from lymphcad.tcia.api import DownloadError, NBIAClient, RetryPolicy
from lymphcad.tcia.archives import MASKS_NAME, ZipSlipError, extract_zip, safe_member_path
from lymphcad.tcia.fetch import LICENSE_NAME, MANIFEST_NAME, METADATA_COLUMNS, FetchOptions, fetch
from lymphcad.tcia.manifest import parse_manifest, write_manifest
from tcia_fixtures import PHI_BIRTHDATE, PHI_NAME, Faults, FixtureCollection, NBIAServer, build_collection

FAST = RetryPolicy(attempts=4, base_delay=0.001, max_delay=0.01, jitter=0.0)

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def coll(real_ct_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> FixtureCollection:
    return build_collection(real_ct_dir, tmp_path_factory.mktemp("tcia-fixture"))


def _opts(server: NBIAServer, out: Path, **kw: object) -> FetchOptions:
    masks_sha = hashlib.sha256(server.coll.archives[MASKS_NAME]).hexdigest()
    base = dict(
        out=out,
        api_url=server.api_url,
        annotations_url=server.archives_url,
        retry=FAST,
        workers=2,
        archive_sha256={MASKS_NAME: masks_sha},
    )
    base.update(kw)
    return FetchOptions(**base)  # type: ignore[arg-type]


def _no_tmp_left(out: Path) -> None:
    assert not (out / ".lymphcad-tmp").exists()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


def test_full_fetch_layout_metadata_manifest(coll: FixtureCollection, tmp_path: Path) -> None:
    out = tmp_path / "raw"
    shown: list[str] = []
    with NBIAServer(coll) as srv:
        res = fetch(_opts(srv, out), show=shown.append)
    assert "CC BY 3.0" in shown[0] and "10.7937/K9/TCIA.2015.AQIIDCNM" in shown[0]
    assert "identify or contact participants" in shown[0]
    assert len(res.downloaded) == len(coll.series) and not res.failed
    assert res.md5_layouts == {"md5hashes.csv": len(coll.series)}
    for s in coll.series:
        d = out / "CT Lymph Nodes" / s.patient_id / s.study_uid / s.series_uid
        files = sorted(d.iterdir())
        assert len(files) == len(s.files)
        assert sorted(hashlib.md5(p.read_bytes()).hexdigest() for p in files) == sorted(
            hashlib.md5(b).hexdigest() for b in s.files.values()
        )
        assert not any(p.name == "md5hashes.csv" for p in files)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    row = manifest["series"][coll.series[0].series_uid]
    assert row["status"] == "ok" and row["md5_verified"] is True
    assert {"files", "bytes", "zip_sha256", "time", "patient_id"} <= set(row)
    assert manifest["licence"]["license"].startswith("CC BY 3.0")
    assert "Clark K" in (out / LICENSE_NAME).read_text()
    with open(out / "metadata.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == METADATA_COLUMNS
        rows = list(reader)
    assert {r["Series UID"] for r in rows} == {s.series_uid for s in coll.series}
    assert {r["Modality"] for r in rows} == {"CT", "SEG"}
    # the three archives, masks checked against the expected SHA-256
    for name, data in coll.archives.items():
        assert (out / "annotations" / f"{name}.zip").read_bytes() == data
    assert res.archives[MASKS_NAME]["sha256_verified"] is True
    assert res.archives["MED_ABD_LYMPH_ANNOTATIONS"]["sha256_verified"] is None
    _no_tmp_left(out)
    # no PHI anywhere in what fetch writes besides the DICOM files themselves
    for p in (out / MANIFEST_NAME, out / "metadata.csv", out / LICENSE_NAME):
        text = p.read_text()
        assert "Doe" not in text and PHI_BIRTHDATE not in text


def test_resume_skips_finished_and_refetches_half_series(coll: FixtureCollection, tmp_path: Path) -> None:
    out = tmp_path / "raw"
    with NBIAServer(coll) as srv:
        fetch(_opts(srv, out, annotations=False))
        n_get = srv.count("getImageWithMD5Hash")
        assert n_get == len(coll.series)
        res = fetch(_opts(srv, out, annotations=False))
        assert srv.count("getImageWithMD5Hash") == n_get  # nothing downloaded again
        assert len(res.skipped) == len(coll.series)
        # an interrupted run: a temp folder left behind and one series folder missing a file
        victim = coll.series[0]
        d = out / "CT Lymph Nodes" / victim.patient_id / victim.study_uid / victim.series_uid
        next(iter(sorted(d.iterdir()))).unlink()
        (out / ".lymphcad-tmp" / "stale").mkdir(parents=True)
        res = fetch(_opts(srv, out, annotations=False))
        assert res.downloaded == [victim.series_uid]
        assert len(list(d.iterdir())) == len(victim.files)
    _no_tmp_left(out)


def test_connection_drop_mid_zip_is_retried(coll: FixtureCollection, tmp_path: Path) -> None:
    uid = coll.series[0].series_uid
    out = tmp_path / "raw"
    with NBIAServer(coll, Faults(drop={uid: 2})) as srv:
        res = fetch(_opts(srv, out, annotations=False))
        assert srv.count(uid) == 3
    assert not res.failed
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["series"][uid]["status"] == "ok"
    _no_tmp_left(out)


def test_run_cut_off_mid_zip_then_resumed(coll: FixtureCollection, tmp_path: Path) -> None:
    uid = coll.series[0].series_uid
    s = coll.series_by_uid()[uid]
    out = tmp_path / "raw"
    with NBIAServer(coll, Faults(drop={uid: FAST.attempts})) as srv:
        with pytest.raises(DownloadError, match="1 of"):
            fetch(_opts(srv, out, annotations=False))
        assert not (out / "CT Lymph Nodes" / s.patient_id / s.study_uid / uid).exists()
        _no_tmp_left(out)
        before = srv.count("getImageWithMD5Hash")
        res = fetch(_opts(srv, out, annotations=False))  # the connection is fine again
        assert res.downloaded == [uid] and len(res.skipped) == len(coll.series) - 1
        assert srv.count("getImageWithMD5Hash") == before + 1
    assert len(list((out / "CT Lymph Nodes" / s.patient_id / s.study_uid / uid).iterdir())) == len(s.files)


def test_corrupted_zip_retried_then_reported(coll: FixtureCollection, tmp_path: Path) -> None:
    uid = coll.series[2].series_uid
    s = coll.series_by_uid()[uid]
    with NBIAServer(coll, Faults(corrupt={uid: 1})) as srv:
        res = fetch(_opts(srv, tmp_path / "a", annotations=False))
    assert not res.failed and uid in res.downloaded
    out = tmp_path / "b"
    with NBIAServer(coll, Faults(corrupt={uid: -1})) as srv, pytest.raises(DownloadError, match="1 of"):
        fetch(_opts(srv, out, annotations=False))
    assert not (out / "CT Lymph Nodes" / s.patient_id / s.study_uid / uid).exists()
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert uid not in manifest["series"]
    _no_tmp_left(out)


def test_md5_mismatch_retried_then_never_kept(coll: FixtureCollection, tmp_path: Path) -> None:
    uid = coll.series[1].series_uid
    s = coll.series_by_uid()[uid]
    with NBIAServer(coll, Faults(bad_md5={uid: 1})) as srv:
        res = fetch(_opts(srv, tmp_path / "a", annotations=False))
        assert srv.count(uid) == 2
    assert not res.failed
    out = tmp_path / "b"
    with NBIAServer(coll, Faults(bad_md5={uid: -1})) as srv:
        with pytest.raises(DownloadError) as err:
            fetch(_opts(srv, out, annotations=False, verify_attempts=2))
        assert srv.count(uid) == 2
    assert "MD5 mismatch" in str(err.value)
    assert not (out / "CT Lymph Nodes" / s.patient_id / s.study_uid / uid).exists()
    _no_tmp_left(out)


def test_zip_slip_refused(coll: FixtureCollection, tmp_path: Path) -> None:
    uid = coll.series[0].series_uid
    out = tmp_path / "deep" / "raw"
    with (
        NBIAServer(coll, Faults(zipslip={uid})) as srv,
        pytest.raises(DownloadError, match="unsafe zip entry"),
    ):
        fetch(_opts(srv, out, annotations=False))
    assert not list(tmp_path.rglob("evil"))
    s = coll.series_by_uid()[uid]
    assert not (out / "CT Lymph Nodes" / s.patient_id / s.study_uid / uid).exists()
    _no_tmp_left(out)
    for bad in ("../../evil", "/etc/passwd", "C:\\x", "a/../../b", "..\\evil"):
        with pytest.raises(ZipSlipError):
            safe_member_path(bad)
    assert str(safe_member_path("./a/b.dcm")) == "a/b.dcm"


def test_extract_zip_refuses_slip(tmp_path: Path) -> None:
    z = tmp_path / "x.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../evil", "bad")
    with pytest.raises(ZipSlipError):
        extract_zip(z, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not (tmp_path / "evil").exists()


def test_429_then_success_and_list_retry(coll: FixtureCollection, tmp_path: Path) -> None:
    uid = coll.series[0].series_uid
    with NBIAServer(coll, Faults(status={uid: [429, 503]}, list_status=[429])) as srv:
        res = fetch(_opts(srv, tmp_path / "raw", annotations=False))
        assert srv.count(uid) == 3
        assert srv.count("getSeries") == 2
    assert not res.failed


def test_500_forever_fails_clearly_nothing_half_written(coll: FixtureCollection, tmp_path: Path) -> None:
    uid = coll.series[0].series_uid
    s = coll.series_by_uid()[uid]
    out = tmp_path / "raw"
    with NBIAServer(coll, Faults(status_forever={uid: 500})) as srv:
        with pytest.raises(DownloadError) as err:
            fetch(_opts(srv, out, annotations=False))
        assert srv.count(uid) == FAST.attempts
    msg = str(err.value)
    assert "1 of" in msg and "run the same command again" in msg
    assert not (out / "CT Lymph Nodes" / s.patient_id / s.study_uid / uid).exists()
    others = [x for x in coll.series if x.series_uid != uid]
    for o in others:
        assert (out / "CT Lymph Nodes" / o.patient_id / o.study_uid / o.series_uid).is_dir()
    _no_tmp_left(out)


def test_http_404_is_not_retried(tmp_path: Path, coll: FixtureCollection) -> None:
    with NBIAServer(coll) as srv:
        client = NBIAClient(srv.api_url, retry=FAST)
        with pytest.raises(DownloadError, match="HTTP 404"):
            client.download_series_zip("1.2.3", tmp_path / "x.zip")
        assert srv.count("1.2.3") == 1


def test_manifest_selection_and_patients(coll: FixtureCollection, tmp_path: Path) -> None:
    chosen = [coll.series[0].series_uid, coll.series[2].series_uid]
    man = tmp_path / "sel.tcia"
    write_manifest(man, chosen)
    with NBIAServer(coll) as srv:
        res = fetch(_opts(srv, tmp_path / "a", manifest=man, annotations=False))
        assert sorted(res.downloaded) == sorted(chosen)
        res = fetch(
            _opts(srv, tmp_path / "b", patients=["ABD_LYMPH_002"], modalities=["CT"], annotations=False)
        )
        assert res.downloaded == [coll.ct_series("ABD_LYMPH_002").series_uid]
        with pytest.raises(InputError, match="not in the collection"):
            fetch(_opts(srv, tmp_path / "c", patients=["ABD_LYMPH_999"], annotations=False))


def test_sidecar_md5_layout_and_get_image(coll: FixtureCollection, tmp_path: Path) -> None:
    with NBIAServer(coll, Faults(md5_layout="sidecar")) as srv:
        res = fetch(_opts(srv, tmp_path / "a", annotations=False))
    assert res.md5_layouts == {"per-file .md5": len(coll.series)}
    with NBIAServer(coll) as srv:
        res = fetch(_opts(srv, tmp_path / "b", annotations=False, md5=False))
        assert srv.count("getImage?") == len(coll.series)
    assert res.md5_layouts == {"none": len(coll.series)}
    s = coll.series[0]
    names = sorted(
        p.name
        for p in (tmp_path / "b" / "CT Lymph Nodes" / s.patient_id / s.study_uid / s.series_uid).iterdir()
    )
    assert names == sorted(s.files)


def test_masks_checksum_mismatch_not_kept(coll: FixtureCollection, tmp_path: Path) -> None:
    out = tmp_path / "raw"
    with NBIAServer(coll) as srv:
        opts = _opts(srv, out, patients=["ABD_LYMPH_002"])
        opts.archive_sha256 = {}  # the real published checksum: the fixture cannot match it
        with pytest.raises(DownloadError, match="1 annotation archive"):
            fetch(opts)
    assert not (out / "annotations" / f"{MASKS_NAME}.zip").exists()
    assert (out / "annotations" / "MED_ABD_LYMPH_ANNOTATIONS.zip").is_file()
    _no_tmp_left(out)


def test_parse_tcia_manifest() -> None:
    text = (
        "downloadServerUrl=https://public.cancerimagingarchive.net/nbia-download/servlet/DownloadServlet\r\n"
        "includeAnnotation=true\nnoOfrRetry=4\ndatabasketId=manifest-1680277513580.tcia\nmanifestVersion=3.0\n"
        "ListOfSeriesToDownload=\n61.7.1\n\n 61.7.2 \n61.7.1\n"
    )
    m = parse_manifest(text)
    assert m.series_uids == ["61.7.1", "61.7.2"]
    assert m.header["databasketId"] == "manifest-1680277513580.tcia"
    assert parse_manifest("1.2.3\n4.5.6\n").series_uids == ["1.2.3", "4.5.6"]
    with pytest.raises(InputError):
        parse_manifest("downloadServerUrl=x\nfoo=bar\n")
    with pytest.raises(InputError):
        parse_manifest("ListOfSeriesToDownload=\n../etc\n")


def test_cli_fetch_prints_licence_first_and_no_phi(
    coll: FixtureCollection,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lymphcad.cli import main

    monkeypatch.setenv("LYMPHCAD_RETRY_BASE_DELAY", "0.001")
    monkeypatch.setenv("LYMPHCAD_NO_PROGRESS", "1")
    with NBIAServer(coll) as srv:
        rc = main(
            [
                "fetch",
                "--out",
                str(tmp_path / "raw"),
                "--api-url",
                srv.api_url,
                "--no-annotations",
                "--workers",
                "2",
            ]
        )
    captured = capfd.readouterr()
    text = captured.out + captured.err
    assert rc == 0, text
    assert captured.err.index("CC BY 3.0") < len(captured.err)
    assert "Required citations" in captured.err
    assert f"{len(coll.series)} series downloaded" in captured.out
    for phi in (PHI_NAME, "Doe", PHI_BIRTHDATE):
        assert phi not in text
    assert os.path.isdir(tmp_path / "raw" / "CT Lymph Nodes")
