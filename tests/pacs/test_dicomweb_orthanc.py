"""DICOMweb against a real Orthanc: QIDO listing, WADO pull + detect + STOW of SR/SEG, auth and bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from cli_checks import run_cli
from lymphcad.dicomout.seg import read_seg_segments
from lymphcad.dicomout.sr import read_sr_findings
from lymphcad.io.detections import read_detections
from lymphcad.pacs.auth import Credentials
from lymphcad.pacs.client import Pacs, PacsError
from orthanc_server import OrthancServer, orthanc, upload

pytestmark = pytest.mark.real

CT_SERIES = "crlm-ct/CRLM-CT-1004"  # GE LightSpeed16, 41 slices
LOCALIZER = "pylibjpeg-data/MAROTECH_CT_JP2Lossy.dcm"  # a coronal scout (CT modality, LOCALIZER)


def _uids(files: list[Path]) -> tuple[str, str, str]:
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.FrameOfReferenceUID)


@pytest.fixture(scope="module")
def pacs(
    real_ct_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OrthancServer, list[Path]]]:
    """An Orthanc holding one real CT series and one localizer (another study)."""
    files = sorted((real_ct_dir / CT_SERIES).iterdir())
    with orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        upload(server, [*files, real_ct_dir / LOCALIZER])
        yield server, files


@pytest.fixture(scope="module")
def secured(real_ct_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """An Orthanc with HTTP basic auth on, holding the same CT series."""
    with orthanc(tmp_path_factory.mktemp("orthanc-auth"), user="radiology", password="s3cret-Pw!") as server:
        upload(server, sorted((real_ct_dir / CT_SERIES).iterdir()))
        yield server


def test_pacs_ls_lists_studies_then_series_without_phi(
    pacs: tuple[OrthancServer, list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    server, files = pacs
    study, series, _ = _uids(files)
    code, out, err = run_cli(capsys, "pacs", "ls", server.dicomweb)
    assert code == 0, err
    assert study in out and "# 2 studies" in out
    code, out, err = run_cli(capsys, "pacs", "ls", server.dicomweb, "--study", study)
    assert code == 0, err
    assert f"{series}\tCT\t2\t41\t" in out
    name = str(pydicom.dcmread(files[0], stop_before_pixels=True).PatientName)
    assert name not in out + err


def test_series_choice_skips_localizers_and_says_why(
    pacs: tuple[OrthancServer, list[Path]], real_ct_dir: Path
) -> None:
    server, files = pacs
    client = Pacs(server.dicomweb)
    study, series, _ = _uids(files)
    choice = client.choose_series(study)
    assert choice.series.series_uid == series and choice.series.n_instances == len(files)
    assert "largest axial CT" in choice.reason
    scout = pydicom.dcmread(real_ct_dir / LOCALIZER, stop_before_pixels=True)
    with pytest.raises(PacsError, match="no axial CT image series.*localizer"):
        client.choose_series(str(scout.StudyInstanceUID))


def test_detect_over_dicomweb_stores_sr_and_seg_that_read_back(
    pacs: tuple[OrthancServer, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server, files = pacs
    study, series, frame = _uids(files)
    csv, sr_file = tmp_path / "d.csv", tmp_path / "sr.dcm"
    # a real CT without inserted nodes: the default model's calibrated peaks stay below 0.05 there
    code, _, err = run_cli(
        capsys, "detect", "--dicomweb", server.dicomweb, "--study", study, "--store",
        "--out", csv, "--sr", sr_file, "--sr-threshold", "0.02", "--threads", "1",
    )  # fmt: skip
    assert code == 0, err
    assert f"series {series}" in err and "largest axial CT" in err
    table = read_detections(csv)
    assert set(table.case_ids.tolist()) <= {series}  # the case id is the series UID
    n_findings = int((table.probabilities >= 0.02).sum())
    assert n_findings > 0, "the shipped model should find candidates on this abdomen CT"
    # query back (QIDO) and retrieve (WADO) what was stored
    client = DICOMwebClient(server.dicomweb)
    found = {
        s["00080060"]["Value"][0]: s["0020000E"]["Value"][0]
        for s in client.search_for_series(study_instance_uid=study)
    }
    assert set(found) == {"CT", "SR", "SEG"}
    stored_sr = client.retrieve_series(study, found["SR"])
    stored_seg = client.retrieve_series(study, found["SEG"])
    assert len(stored_sr) == len(stored_seg) == 1
    sr, seg = stored_sr[0], stored_seg[0]
    assert sr.StudyInstanceUID == seg.StudyInstanceUID == study
    assert {
        e.SeriesInstanceUID for e in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    } == {series}
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    assert seg.FrameOfReferenceUID == frame
    local = pydicom.dcmread(sr_file)
    assert sr.SOPInstanceUID == local.SOPInstanceUID
    assert read_sr_findings(sr) == read_sr_findings(local)
    back = read_sr_findings(sr)
    assert len(back) == n_findings
    assert [s.tracking_uid for s in read_seg_segments(seg)] == [f.tracking_uid for f in back]


def test_basic_auth(secured: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "pacs", "ls", secured.dicomweb)
    assert code == 1
    assert "401 Unauthorized" in err and secured.dicomweb in err and len(err.strip().splitlines()) == 1
    secret = tmp_path / "pw"
    secret.write_text("s3cret-Pw!\n")
    secret.chmod(0o600)
    code, out, err = run_cli(
        capsys, "pacs", "ls", secured.dicomweb, "--user", "radiology", "--password-file", secret
    )
    assert code == 0, err
    assert "# 1 study" in out and "s3cret-Pw!" not in out + err
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    code, out, err = run_cli(
        capsys, "pacs", "ls", secured.dicomweb, "--user", "radiology", "--password-file", wrong
    )
    assert code == 1 and "401" in err and "nope" not in err
    code, _, err = run_cli(capsys, "pacs", "ls", secured.dicomweb, "--token-file", wrong)
    assert code == 1 and "401" in err
    code, _, err = run_cli(
        capsys, "pacs", "ls", secured.dicomweb, "--user", "radiology", "--password-file", tmp_path / "missing"
    )
    assert code == 1 and "missing" in err and "cannot read the secret file" in err


def test_credentials_in_url_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "pacs", "ls", "http://user:pw@127.0.0.1:1/dicom-web")
    assert code == 1 and "credentials in the URL" in err and "pw@" not in err


def test_unreachable_server_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(
        capsys,
        "detect",
        "--dicomweb",
        "http://127.0.0.1:9/dicom-web",
        "--study",
        "1.2.3",
        "--out",
        tmp_path / "d.csv",
    )
    assert code == 1
    assert "cannot reach the DICOMweb server" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d.csv").exists()


def test_unknown_or_non_ct_study_fails_and_stores_nothing(
    pacs: tuple[OrthancServer, list[Path]],
    real_ct_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server, _ = pacs
    code, _, err = run_cli(
        capsys,
        "detect",
        "--dicomweb",
        server.dicomweb,
        "--study",
        "1.2.3.4.5",
        "--store",
        "--out",
        tmp_path / "d.csv",
    )
    assert code == 1 and "has no series" in err
    scout_study = str(pydicom.dcmread(real_ct_dir / LOCALIZER, stop_before_pixels=True).StudyInstanceUID)
    code, _, err = run_cli(
        capsys,
        "detect",
        "--dicomweb",
        server.dicomweb,
        "--study",
        scout_study,
        "--store",
        "--out",
        tmp_path / "d.csv",
    )
    assert code == 1 and "localizer" in err
    assert len(DICOMwebClient(server.dicomweb).search_for_series(study_instance_uid=scout_study)) == 1
    assert not (tmp_path / "d.csv").exists()


def test_series_too_large_for_memory_is_refused_before_download(
    pacs: tuple[OrthancServer, list[Path]], tmp_path: Path
) -> None:
    server, files = pacs
    client = Pacs(server.dicomweb, Credentials())
    study, _, _ = _uids(files)
    choice = client.choose_series(study)
    with pytest.raises(PacsError, match="too large for this machine's memory"):
        client.retrieve_series(study, choice, tmp_path / "dl", memory_limit_bytes=10 * 2**20)
    assert not (tmp_path / "dl").exists()
    assert client.retrieve_series(study, choice, tmp_path / "dl") == len(files)


def test_store_refuses_when_the_server_fails(pacs: tuple[OrthancServer, list[Path]]) -> None:
    server, files = pacs
    study, _, _ = _uids(files)
    broken = pydicom.dcmread(files[0])
    del broken.SOPInstanceUID  # Orthanc cannot store an instance without its UID
    with pytest.raises(PacsError):
        Pacs(server.dicomweb).store([broken], study)
