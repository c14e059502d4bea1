"""evaluate reports size agreement and calibration (hand-computed), matches.csv carries the sizes, and
``lymphcad calibrate`` fits a calibration from a cohort's detections."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from evaluate_fixtures import world, write_mask_cohort
from lymphcad.cli import main
from lymphcad.io.detections import Detection, write_detections
from lymphcad.measure.calibration import load_calibration

# A hits M's node (mask) first, B hits it again (duplicate), C hits N's node, D hits nothing
DETS = [
    Detection("M", world((5, 10, 24)), 0.93, 10.0, 5.0, 13.0, 0.4, "mediastinal:4R"),
    Detection("M", world((7, 10, 15)), 0.82, 10.0, 6.0, 9.0, 0.3, "mediastinal:4R"),
    Detection("N", world((6, 12, 18)), 0.71, 10.0, 11.0, 15.0, 1.1, "abdominal:paraaortic"),
    Detection("N", world((6, 12, 30)), 0.86, 10.0, 7.0, 8.0, 0.2, "abdominal:unknown"),
]


def test_size_agreement_calibration_and_match_columns(tmp_path: Path) -> None:
    write_mask_cohort(tmp_path / "c")
    write_detections(tmp_path / "dets.csv", DETS)
    out = tmp_path / "e" / "eval.json"
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "c"),
                str(tmp_path / "dets.csv"),
                "--out",
                str(out),
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    data = json.loads(out.read_text(encoding="utf-8"))
    short = data["size_agreement"]["short_axis"]
    # true positives A (5 vs 4: +1) and C (11 vs 12: -1); B is a duplicate, D a false positive
    assert short["n"] == 2
    assert short["mean_absolute_error_mm"] == pytest.approx(1.0)
    assert short["bias_mm"] == pytest.approx(0.0)
    lo, hi = short["bland_altman_limits_mm"]
    assert (lo, hi) == pytest.approx((-1.96 * np.sqrt(2.0), 1.96 * np.sqrt(2.0)))
    assert data["size_agreement"]["long_axis"]["n"] == 1  # N's node has no long axis
    cal = data["calibration"]
    # hits A, B (duplicate: still a node hit), C; miss D. Bins: 0.71 | 0.82, 0.86 | 0.93
    assert (cal["n_detections"], cal["n_hits"]) == (4, 3)
    assert cal["ece_10_bins"] == pytest.approx((0.29 + 2 * abs(0.5 - 0.84) + 0.07) / 4)
    assert (out.parent / "reliability.png").stat().st_size > 1000
    with (out.parent / "matches.csv").open(encoding="utf-8") as fh:
        rows = {r["probability"]: r for r in csv.DictReader(fh)}
    a = rows["0.930000"]
    assert (a["outcome"], a["short_axis_mm"], a["node_short_axis_mm"], a["location"]) == (
        "tp",
        "5.00",
        "4.00",
        "mediastinal:4R",
    )
    assert rows["0.860000"]["node_short_axis_mm"] == ""


def test_no_sizes_no_size_agreement(tmp_path: Path) -> None:
    write_mask_cohort(tmp_path / "c")
    write_detections(
        tmp_path / "dets.csv", [Detection(d.case_id, d.center_xyz, d.probability, 10.0) for d in DETS]
    )
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "c"),
                str(tmp_path / "dets.csv"),
                "--out",
                str(out),
                "--bootstrap",
                "0",
            ]
        )
        == 0
    )
    assert json.loads(out.read_text(encoding="utf-8"))["size_agreement"] is None


def _many(seed: int = 0) -> list[Detection]:
    """Hits near the two nodes with higher scores, misses far away with lower ones (plus overlap)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(30):
        case, zyx = ("M", (5, 10, 15)) if i % 2 else ("N", (6, 12, 16))
        rows.append(Detection(case, world(zyx), float(rng.uniform(0.3, 1.0)), 8.0))
        rows.append(Detection(case, world((1, 2, 3 + i % 20)), float(rng.uniform(0.0, 0.6)), 8.0))
    return rows


def test_calibrate_command(tmp_path: Path) -> None:
    write_mask_cohort(tmp_path / "c")
    write_detections(tmp_path / "dets.csv", _many())
    target = tmp_path / "cal.json"
    assert main(["calibrate", str(tmp_path / "c"), str(tmp_path / "dets.csv"), "--out", str(target)]) == 0
    cal = load_calibration(target)
    assert cal.method == "isotonic" and cal.n_detections == 60
    # under --duplicates ignore each node keeps one tp; the other hits are duplicates, still hits: 30 hits
    assert cal.n_hits == 30
    grid = np.linspace(0, 1, 101)
    assert np.all(np.diff(cal.apply(grid)) > 0)
    assert cal.apply(0.05) < 0.2 and cal.apply(0.95) > 0.8
    # exactly one of --model / --out; refuses calibrated detections
    assert main(["calibrate", str(tmp_path / "c"), str(tmp_path / "dets.csv")]) == 2
    (tmp_path / "dets.csv.json").write_text(
        json.dumps({"settings": {"measurement": {"probability": "calibrated: isotonic map"}}}),
        encoding="utf-8",
    )
    assert (
        main(
            ["calibrate", str(tmp_path / "c"), str(tmp_path / "dets.csv"), "--out", str(tmp_path / "x.json")]
        )
        == 1
    )
    assert not (tmp_path / "x.json").exists()
