"""A finding as a radiologist reads it (what ``show`` prints beside each detection)."""

from __future__ import annotations

from lymphcad.io.detections import Detection
from lymphcad.measure.run import finding_text


def test_finding_text_has_size_volume_and_station() -> None:
    d = Detection("A", (1.0, 2.0, 3.0), 0.912, 20.0, 14.2, 21.8, 2.345, "mediastinal:4R", (1, 2, 3))
    assert finding_text(d, 1) == "d1 p=0.91 · 14.2 × 21.8 mm · 2.35 ml · mediastinal:4R"


def test_finding_text_without_measurement_falls_back_to_the_detector_diameter() -> None:
    assert finding_text(Detection("A", (0.0, 0.0, 0.0), 0.5, 12.0)) == "p=0.50 · ⌀ 12.0 mm (detector)"
