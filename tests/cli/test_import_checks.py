"""`lymphcad import` checks everything before it writes, refuses case-id clashes and prints the case ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cli_checks import assert_refused, run_cli
from lymphcad.cohort import ANNOTATION_COLUMNS, open_cohort
from lymphcad.geometry import CTVolume, Geometry
from lymphcad.importer import case_id_for
from lymphcad.io.nifti import write_ct


def _ct(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1000, 300, (20, 32, 32)).astype(np.int16)
    write_ct(path, CTVolume(arr, Geometry((20, 32, 32), (2.5, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))))
    return path


def test_bad_nodes_csv_leaves_no_cohort(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a, b = _ct(tmp_path / "a.nii.gz", 1), _ct(tmp_path / "b.nii.gz", 2)
    nodes = tmp_path / "nodes.csv"
    header = ",".join(ANNOTATION_COLUMNS)
    nodes.write_text(f"{header}\na,1,10,10,10,12,,,\nb,1,10,10,500,12,,,\n")
    out = tmp_path / "cohort"
    assert_refused(
        capsys,
        ["import", a, b, "--out", out, "--nodes", nodes],
        code=1,
        names=[nodes],
        problem="node 1 of case 'b' lies outside its volume",
        unchanged=[a, b, nodes],
    )
    assert not out.exists()  # nothing half-made
    nodes.write_text(f"{header}\nzzz,1,10,10,10,12,,,\n")
    assert_refused(
        capsys,
        ["import", a, b, "--out", out, "--nodes", nodes],
        code=1,
        names=[nodes],
        problem="zzz",
        unchanged=[a, b, nodes],
    )
    assert not out.exists()


def test_folder_without_ct_leaves_no_cohort(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    a = _ct(tmp_path / "a.nii.gz", 1)
    empty = tmp_path / "no_series"
    empty.mkdir()
    (empty / "notes.txt").write_text("not DICOM")
    out = tmp_path / "cohort"
    assert_refused(
        capsys,
        ["import", a, empty, "--out", out],
        code=1,
        names=[empty],
        problem="no CT image series found",
        unchanged=[a, empty],
    )
    assert not out.exists()


def test_case_id_clash_is_refused_by_content_hash(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    first = _ct(tmp_path / "x" / "scan.nii.gz", 1)
    other = _ct(tmp_path / "y" / "scan.nii.gz", 2)  # another scan whose name maps to the same case id
    out = tmp_path / "cohort"
    code, stdout, err = run_cli(capsys, "import", first, "--out", out)
    assert code == 0, err
    assert stdout.splitlines() == [f"scan: {first}"]
    # the same scan again: a resumed import, accepted, nothing rewritten
    before = (out / "images" / "scan.nii.gz").stat().st_mtime_ns
    code, _, err = run_cli(capsys, "import", first, "--out", out)
    assert code == 0, err
    assert (out / "images" / "scan.nii.gz").stat().st_mtime_ns == before
    assert_refused(
        capsys,
        ["import", other, "--out", out],
        code=1,
        names=[other, "'scan'"],
        problem="already holds with a different scan",
        unchanged=[out, first, other],
    )
    assert open_cohort(out).cases == ["scan"]


def test_case_ids_printed_and_non_ascii_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    names = ["Müller ÇT.nii.gz", "患者一.nii.gz", "患者二.nii.gz", "plain-1.nii.gz"]
    paths = [_ct(tmp_path / n, i) for i, n in enumerate(names)]
    ids = [case_id_for(p) for p in paths]
    assert ids[0] == "Muller_CT" and ids[3] == "plain-1"
    assert ids[1].startswith("case_") and ids[2].startswith("case_") and ids[1] != ids[2]
    code, out, err = run_cli(capsys, "import", *paths, "--out", tmp_path / "c")
    assert code == 0, err
    assert out.splitlines() == [f"{i}: {p}" for i, p in zip(ids, paths, strict=True)]
    assert open_cohort(tmp_path / "c").cases == sorted(ids)
