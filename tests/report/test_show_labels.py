"""`show`: a detection's probability label is clipped to its panel, never drawn over the next one."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest

from lymphcad.geometry import Geometry
from lymphcad.report.show import render_rows

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _render(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dets: list) -> tuple[np.ndarray, list]:
    """Render one row and return the canvas pixels and the row's three axes (the figure is kept open)."""
    monkeypatch.setattr(plt, "close", lambda *_a, **_k: None)
    g = Geometry((40, 200, 200), (2.0, 1.0, 1.0), (-100.0, -100.0, 0.0))
    img = np.full(g.shape_zyx, -100, np.int16)
    p = np.array([0.0, 0.0, 40.0])
    render_rows(img, g, None, [p], ["node"], dets, tmp_path / "x.png")
    fig = plt.gcf()
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba()).copy()
    axes = fig.axes[:3]
    plt.close(fig)
    return pixels, axes


def test_probability_label_stays_inside_its_panel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # just beyond the zoom window's right edge (half FOV 60 mm), 20 mm off the coronal plane: only the
    # label could reach the coronal panel to the right
    det = (np.array([66.0, 20.0, 40.0]), 0.87, 10.0)
    base, _ = _render(monkeypatch, tmp_path, [])
    with_det, axes = _render(monkeypatch, tmp_path, [det])
    coronal = axes[2].get_window_extent()
    h = base.shape[0]
    rows = slice(int(h - coronal.y1), int(h - coronal.y0))
    cols = slice(int(coronal.x0) - 2, int(coronal.x1))
    assert np.array_equal(base[rows, cols], with_det[rows, cols])
    texts = [t for t in axes[1].texts if t.get_text() == "0.87"]
    assert texts and all(t.get_clip_on() for t in texts)
