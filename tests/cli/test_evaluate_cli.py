"""``lymphcad evaluate`` end to end: eval.json keys, matches.csv, the plot, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evaluate_fixtures import MASK_DETS, write_mask_cohort
from lymphcad.cli import main
from lymphcad.evaluate.settings import FP_RATE_KEYS

BLOCK_KEYS = [
    "n_cases",
    "n_nodes",
    "n_detections",
    "sensitivity_at_fp",
    "cpm",
    "cpm_ci95",
    "max_fp_per_volume",
    "ap_iou_0.1",
    "ap_iou_0.5",
]


def write_dets(
    path: Path, rows: list[str], header: str = "seriesuid,coordX,coordY,coordZ,probability,diameter_mm"
) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def det_lines() -> list[str]:
    return [f"{c},{x:.4f},{y:.4f},{z:.4f},{p},{d}" for c, (x, y, z), p, d in MASK_DETS]


def test_evaluate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_mask_cohort(tmp_path / "cohort")
    dets = write_dets(tmp_path / "dets.csv", det_lines())
    out = tmp_path / "res" / "eval.json"
    png = tmp_path / "res" / "froc.png"
    rc = main(
        [
            "evaluate",
            str(tmp_path / "cohort"),
            str(dets),
            "--out",
            str(out),
            "--plot",
            str(png),
            "--match",
            "mask",
            "--bootstrap",
            "50",
            "--seed",
            "1",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert list(res) == [
        "format_version",
        "rule",
        "citation",
        "pooled",
        "mediastinal",
        "abdominal",
        "by_size",
        "matches",
        # issue 16: size agreement (null without measured sizes) and calibration, after the formats.md keys
        "size_agreement",
        "calibration",
    ]
    assert res["size_agreement"] is None
    assert (
        res["format_version"] == "1.1"
        and res["citation"] == ["Cite: test"]
        and res["matches"] == "matches.csv"
    )
    for block in (res["pooled"], res["mediastinal"], res["abdominal"], *res["by_size"].values()):
        assert list(block) == BLOCK_KEYS
        assert list(block["sensitivity_at_fp"]) == list(FP_RATE_KEYS)
    assert list(res["by_size"]) == ["<10", "10-15", "15-20", ">=20"]
    assert res["pooled"]["cpm"] == pytest.approx(11 / 14)  # as in test_evaluate.test_mask_rules
    assert res["rule"]["match"] == "mask" and res["rule"]["bootstrap_seed"] == 1
    with (out.parent / "matches.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["outcome"] for r in rows] == ["tp", "fp", "fp", "tp"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "CPM" in text and "Cite: test" in text


def test_empty_detection_file(tmp_path: Path) -> None:
    write_mask_cohort(tmp_path / "cohort")
    for name, content in (
        ("empty.csv", ""),
        ("header.csv", "seriesuid,coordX,coordY,coordZ,probability,diameter_mm\n"),
    ):
        (tmp_path / name).write_text(content)
        out = tmp_path / name.replace(".csv", "") / "eval.json"
        assert main(["evaluate", str(tmp_path / "cohort"), str(tmp_path / name), "--out", str(out)]) == 0
        pooled = json.loads(out.read_text())["pooled"]
        assert pooled["cpm"] == 0.0 and pooled["n_detections"] == 0


@pytest.mark.parametrize(
    ("line", "header", "message"),
    [
        ("X,0,0,0,0.5,", None, "dets.csv:3: unknown case id 'X'"),
        ("M,0,0,0,nan,", None, "dets.csv:3: probability 'nan' is not finite"),
        ("M,0,0,0,1.5,", None, "dets.csv:3: probability 1.5 is outside [0, 1]"),
        ("M,0,0,0", "seriesuid,coordX,coordY,coordZ", "dets.csv:1: missing column(s) probability"),
    ],
)
def test_bad_detections_name_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, header: str | None, message: str
) -> None:
    write_mask_cohort(tmp_path / "cohort")
    rows = [det_lines()[0], line]
    dets = (
        write_dets(tmp_path / "dets.csv", rows, header) if header else write_dets(tmp_path / "dets.csv", rows)
    )
    rc = main(["evaluate", str(tmp_path / "cohort"), str(dets), "--out", str(tmp_path / "eval.json")])
    assert rc == 1
    assert message in " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert not (tmp_path / "eval.json").exists()


def test_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_mask_cohort(tmp_path / "cohort")
    dets = write_dets(tmp_path / "dets.csv", det_lines())
    for opts, msg in (
        (["--match", "box"], "--match must be one of"),
        (["--radius", "-3"], "--radius must be positive"),
    ):
        rc = main(["evaluate", str(tmp_path / "cohort"), str(dets), "--out", str(tmp_path / "e.json"), *opts])
        assert rc == 2
        assert msg in " ".join(capsys.readouterr().err.split())


def test_nndet_boxes_and_fixed_radius(tmp_path: Path) -> None:
    write_mask_cohort(tmp_path / "cohort")
    dets = write_dets(tmp_path / "dets.csv", det_lines())
    out = tmp_path / "eval.json"
    rc = main(
        [
            "evaluate",
            str(tmp_path / "cohort"),
            str(dets),
            "--out",
            str(out),
            "--radius",
            "5",
            "--match",
            "radius",
            "--duplicates",
            "fp",
            "--nndet-boxes",
            "--bootstrap",
            "0",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["rule"]["radius_mm"] == 5.0 and res["rule"]["box_convention"] == "nndetection-padded-voxel"
    assert res["pooled"]["cpm"] == pytest.approx(4 / 7)  # as test_mask_rules' radius case (R = 5 = auto here)
    assert res["pooled"]["cpm_ci95"] is None
