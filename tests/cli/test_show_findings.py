"""``show --dets`` prints each detection of the shown case with its size, volume and station."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluate_fixtures import world, write_mask_cohort
from lymphcad.cli import main
from lymphcad.io.detections import Detection, write_detections


def test_show_prints_size_and_station(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_mask_cohort(tmp_path / "c")
    write_detections(
        tmp_path / "dets.csv",
        [
            Detection("M", world((5, 10, 24)), 0.93, 10.0, 5.0, 13.0, 0.4, "mediastinal:4R"),
            Detection("M", world((7, 10, 15)), 0.42, 10.0),
            Detection("N", world((6, 12, 18)), 0.71, 10.0, 11.0, 15.0, 1.1, "abdominal:paraaortic"),
        ],
    )
    rc = main(
        [
            "show",
            str(tmp_path / "c"),
            "--out",
            str(tmp_path / "s.png"),
            "--case",
            "M",
            "--dets",
            str(tmp_path / "dets.csv"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "M: 2 detection(s)" in out
    assert "d1 p=0.93 · 5.0 × 13.0 mm · 0.40 ml · mediastinal:4R" in out
    assert "d2 p=0.42 · ⌀ 10.0 mm (detector)" in out
    assert "paraaortic" not in out  # another case's finding
