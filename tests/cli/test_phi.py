"""No PHI is ever printed, logged or written: patient tags planted in a real CT series never appear in any
command's stdout, stderr (``--debug`` tracebacks included) or output files (NIfTI headers, CSV, JSON, PNG)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pydicom
import pytest

from cli_checks import run_cli
from lymphcad.cohort import ANNOTATION_COLUMNS
from lymphcad.io.reader import read_ct

PHI = {
    "PatientName": "DOE^JOHN^QUINCY",
    "PatientID": "MRN-8842913",
    "PatientBirthDate": "19450317",
    "PatientAddress": "12 Elm Street Springfield",
    "OtherPatientIDs": "ALT-55519",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "InstitutionName": "Saint Elsewhere Hospital",
    "InstitutionAddress": "1 Hospital Road Boston",
    "AccessionNumber": "ACC-7770001",
    "PatientTelephoneNumbers": "555-0199-321",
}
#: every value and its parts (a name split at ^, a date written with dashes)
TOKENS = sorted(
    {v for v in PHI.values()}
    | {part for v in PHI.values() for part in v.split("^") if len(part) > 3}
    | {"1945-03-17", "Springfield", "Elsewhere", "QUINCY", "GREGORY"}
)


def _leaks(text: str | bytes) -> list[str]:
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    return [t for t in TOKENS if t.encode() in data or t.upper().encode() in data]


def _file_leaks(root: Path) -> dict[str, list[str]]:
    found = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        data = f.read_bytes()
        if f.name.endswith(".gz"):
            data = gzip.decompress(data)
        leaks = _leaks(data)
        if leaks:
            found[str(f)] = leaks
    return found


@pytest.fixture(scope="module")
def phi_series(real_ct_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real 20-slice TotalSegmentator CT series with made-up PHI in every file's patient tags."""
    out = tmp_path_factory.mktemp("phi") / "PATIENT_SERIES"
    out.mkdir()
    for f in sorted((real_ct_dir / "totalsegmentator" / "example_ct_dicom").iterdir()):
        ds = pydicom.dcmread(f)
        for tag, value in PHI.items():
            setattr(ds, tag, value)
        ds.save_as(out / f.name)
    return out


def test_phi_is_planted(phi_series: Path) -> None:
    ds = pydicom.dcmread(next(phi_series.iterdir()))
    assert str(ds.PatientName) == PHI["PatientName"] and ds.PatientID == PHI["PatientID"]


def test_no_command_shows_or_writes_phi(
    capsys: pytest.CaptureFixture[str], phi_series: Path, real_ct_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    geom = read_ct(phi_series).geometry
    centre = geom.index_to_world([256, 256, 10])
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(
        ",".join(ANNOTATION_COLUMNS)
        + f"\nPATIENT_SERIES,1,{centre[0]:.2f},{centre[1]:.2f},{centre[2]:.2f},12,,abdominal,\n"
    )
    cohort = out / "cohort"
    small_ct = real_ct_dir / "totalsegmentator" / "example_ct_sm.nii.gz"  # a second case, for split
    runs = [
        ("info", phi_series),
        ("--debug", "convert", phi_series, out / "ct.nii.gz"),
        ("import", phi_series, small_ct, "--out", cohort, "--nodes", nodes),
        ("info", cohort),
        ("--debug", "detect", phi_series, "--out", out / "dets.csv", "--json", "--device", "cpu"),
        ("detect", cohort, "--out", out / "cohort_dets.csv", "--device", "cpu"),
        (
            "evaluate",
            cohort,
            out / "cohort_dets.csv",
            "--out",
            out / "eval.json",
            "--plot",
            out / "froc.png",
            "--bootstrap",
            "20",
        ),
        ("show", cohort, "--out", out / "show.png", "--dets", out / "cohort_dets.csv"),
        ("split", cohort, "--out", out / "splits.json", "--folds", "2"),
    ]
    for args in runs:
        code, stdout, stderr = run_cli(capsys, *args)
        assert code == 0, (args, stderr)
        assert not _leaks(stdout + stderr), (args, _leaks(stdout + stderr))
    assert {p.name for p in out.iterdir()} >= {
        "ct.nii.gz",
        "dets.csv",
        "dets.csv.json",
        "dets.json",
        "eval.json",
        "matches.csv",
        "froc.png",
        "show.png",
        "splits.json",
        "cohort",
    }
    assert _file_leaks(out) == {}


def test_debug_tracebacks_carry_no_phi(
    capsys: pytest.CaptureFixture[str], phi_series: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "BROKEN_SERIES"
    shutil.copytree(phi_series, broken)
    victim = sorted(broken.iterdir())[7]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # a truncated file mid-series
    for args in (
        ("--debug", "detect", broken, "--out", tmp_path / "d.csv", "--device", "cpu"),
        ("--debug", "convert", broken, tmp_path / "c.nii.gz"),
        ("--debug", "import", broken, "--out", tmp_path / "cohort"),
        ("--debug", "info", broken),
    ):
        code, stdout, stderr = run_cli(capsys, *args)
        assert code == (0 if args[1] == "info" else 1), (args, stderr)  # info: "only with --allow-gaps"
        assert "Traceback" in stderr or args[1] == "info", (args, stderr)
        warned = [line for line in stderr.splitlines() if line.startswith("warning:") and victim.name in line]
        assert len(warned) == 1 and "cannot be read (truncated or corrupt)" in warned[0]
        assert not _leaks(stdout + stderr), (args, _leaks(stdout + stderr))
    assert not (tmp_path / "cohort").exists()
