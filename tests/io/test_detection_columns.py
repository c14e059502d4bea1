"""The optional formats.md 1.2 detection columns: written, read back, and absent from six-column files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lymphcad.errors import InputError
from lymphcad.io.detections import (
    DETECTION_COLUMNS,
    MEASUREMENT_COLUMNS,
    Detection,
    DetectionTable,
    read_detections,
    write_detections,
)

ROWS = [
    Detection("A", (1.0, 2.0, 3.0), 0.9, 14.0, 11.25, 18.5, 1.234, "mediastinal:4R", (10, 20, 30)),
    Detection("A", (4.0, 5.0, 6.0), 0.4, None, None, None, None, None, None),
    Detection("B", (-7.5, 8.0, -9.0), 0.7, 9.0, 8.0, 9.5, 0.31, "abdominal:paraaortic", None),
]


def test_new_columns_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "dets.csv"
    write_detections(path, ROWS)
    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert tuple(header) == DETECTION_COLUMNS + MEASUREMENT_COLUMNS
    back = read_detections(path).rows()
    assert sorted(back, key=lambda d: (d.case_id, -d.probability)) == sorted(
        ROWS, key=lambda d: (d.case_id, -d.probability)
    )


def test_six_column_files_still_read(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    path.write_text(
        "seriesuid,coordX,coordY,coordZ,probability,diameter_mm\nA,1,2,3,0.5,10\nB,4,5,6,0.25,\n",
        encoding="utf-8",
    )
    table = read_detections(path)
    assert len(table) == 2
    assert np.isnan(table.short_axis_mm).all() and np.isnan(table.volume_ml).all()
    assert table.locations.tolist() == ["", ""]
    assert (table.ijk == -1).all()
    assert all(not d.measured for d in table.rows())


def test_unmeasured_detections_write_six_columns(tmp_path: Path) -> None:
    """Old readers keep working: a file without measurements has exactly the six 1.1 columns."""
    path = tmp_path / "dets.csv"
    write_detections(path, [Detection("A", (1.0, 2.0, 3.0), 0.5, 10.0)])
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(DETECTION_COLUMNS)


def test_a_six_column_reader_ignores_the_new_columns(tmp_path: Path) -> None:
    """A reader that knows only the first six columns (csv.DictReader by name) still gets its values."""
    import csv

    path = tmp_path / "dets.csv"
    write_detections(path, ROWS)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["seriesuid"] for r in rows] == ["A", "A", "B"]
    assert [float(r["probability"]) for r in rows] == [0.9, 0.4, 0.7]


def test_old_constructor_without_measurements() -> None:
    t = DetectionTable(np.array(["A"]), np.zeros((1, 3)), np.array([0.5]), np.array([np.nan]))
    assert t.rows()[0] == Detection("A", (0.0, 0.0, 0.0), 0.5, None)


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ("-1,,,,,,", "short_axis_mm"),
        (",,abc,,,,", "volume_ml"),
        (",,,,1,2,", "i, j, k"),
        (",,,,1.5,2,3", "voxel index"),
    ],
)
def test_bad_measurement_cells_name_the_column(tmp_path: Path, cells: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        ",".join(DETECTION_COLUMNS + MEASUREMENT_COLUMNS) + f"\nA,1,2,3,0.5,10,{cells}\n", encoding="utf-8"
    )
    with pytest.raises(InputError, match=message) as info:
        read_detections(path)
    assert "bad.csv" in str(info.value) and "2" in str(info.value)
