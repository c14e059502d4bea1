"""`lymphcad evaluate` says "n/a" with a reason, refuses missing truth and binary CSVs, warns on duplicates,
and prints its table whole when stdout is not a terminal."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_checks import assert_refused, cli_env, run_cli
from evaluate_fixtures import MASK_DETS, write_mask_cohort


def _dets(path: Path, *, diameter: bool = True, repeat: int = 0) -> Path:
    rows = [f"{c},{x:.4f},{y:.4f},{z:.4f},{p},{d if diameter else ''}" for c, (x, y, z), p, d in MASK_DETS]
    rows += rows[:repeat]
    path.write_text("seriesuid,coordX,coordY,coordZ,probability,diameter_mm\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    write_mask_cohort(tmp_path / "cohort")
    return tmp_path / "cohort"


def test_ap_without_diameters_is_na_with_reason(
    capsys: pytest.CaptureFixture[str], cohort: Path, tmp_path: Path
) -> None:
    dets = _dets(tmp_path / "dets.csv", diameter=False)
    code, out, err = run_cli(
        capsys, "evaluate", cohort, dets, "--out", tmp_path / "e.json", "--bootstrap", "0"
    )
    assert code == 0, err
    ap_rows = [line for line in out.splitlines() if "AP @IoU 0.1" in line and "n/a" in line]
    assert ap_rows and "0.000" not in ap_rows[0]
    assert re.search(
        r"AP n/a \(pooled, mediastinal, abdominal[^)]*\): no row of the detections CSV has diameter_mm", out
    )
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["pooled"]["ap_iou_0.1"] is None and data["pooled"]["ap_iou_0.5"] is None
    # with diameters the same cohort has a real AP
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        cohort,
        _dets(tmp_path / "d2.csv"),
        "--out",
        tmp_path / "e2.json",
        "--bootstrap",
        "0",
    )
    assert code == 0 and json.loads((tmp_path / "e2.json").read_text())["pooled"]["ap_iou_0.1"] is not None
    assert "diameter_mm" not in out


def test_missing_annotations_is_an_error(
    capsys: pytest.CaptureFixture[str], cohort: Path, tmp_path: Path
) -> None:
    (cohort / "annotations.csv").unlink()
    dets = _dets(tmp_path / "dets.csv")
    out = tmp_path / "e.json"
    assert_refused(
        capsys,
        ["evaluate", cohort, dets, "--out", out],
        code=1,
        names=[cohort / "annotations.csv"],
        problem="evaluate needs the cohort's ground-truth nodes",
        unchanged=[cohort, dets],
    )
    assert not out.exists()


def test_duplicated_rows_warn(capsys: pytest.CaptureFixture[str], cohort: Path, tmp_path: Path) -> None:
    dets = _dets(tmp_path / "dets.csv", repeat=2)
    code, _, err = run_cli(capsys, "evaluate", cohort, dets, "--out", tmp_path / "e.json", "--bootstrap", "0")
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and str(dets) in lines[0] and "2 row(s) repeat an earlier row" in lines[0]


def test_binary_file_as_csv_is_named(
    capsys: pytest.CaptureFixture[str], cohort: Path, tmp_path: Path
) -> None:
    binary = tmp_path / "dets.csv"
    shutil.copy(cohort / "images" / "M.nii.gz", binary)
    assert_refused(
        capsys,
        ["evaluate", cohort, binary, "--out", tmp_path / "e.json"],
        code=1,
        names=[binary],
        problem="not a",
        unchanged=[cohort, binary],
    )
    # an annotations.csv that is not text names that file, too
    shutil.copy(cohort / "images" / "M.nii.gz", cohort / "annotations.csv")
    code, _, err = run_cli(
        capsys, "evaluate", cohort, _dets(tmp_path / "ok.csv"), "--out", tmp_path / "e.json"
    )
    assert code == 1 and str(cohort / "annotations.csv") in err and "UnicodeDecodeError" not in err


def test_table_whole_when_stdout_is_a_pipe(cohort: Path, tmp_path: Path) -> None:
    dets = _dets(tmp_path / "dets.csv")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lymphcad",
            "evaluate",
            str(cohort),
            str(dets),
            "--out",
            str(tmp_path / "e.json"),
            "--bootstrap",
            "50",
        ],
        env=cli_env(COLUMNS="80"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "0.…" not in proc.stdout and "…│" not in proc.stdout.replace(" ", "")
    ci = json.loads((tmp_path / "e.json").read_text())["pooled"]["cpm_ci95"]
    assert f"{ci[0]:.2f}–{ci[1]:.2f}" in proc.stdout
