"""Calibration: isotonic map is strictly increasing, recovers known hit frequencies, round-trips as JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lymphcad.errors import InputError
from lymphcad.measure.calibration import (
    expected_calibration_error,
    find_calibration,
    fit_isotonic,
    fit_temperature,
    load_calibration,
    pool_adjacent_violators,
    reliability,
)


def _miscalibrated(n: int = 20000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose true hit frequency is score² (over-confident in the middle)."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.0, 1.0, n)
    return s, (rng.random(n) < s**2).astype(float)


def test_isotonic_maps_scores_to_their_true_frequencies() -> None:
    s, h = _miscalibrated()
    cal = fit_isotonic(s, h)
    grid = np.linspace(0.05, 0.95, 19)
    np.testing.assert_allclose(cal.apply(grid), grid**2, atol=0.05)  # a step function's local noise
    # over each tenth of the score range the calibrated probabilities average to the observed hit frequency,
    # and that to the true frequency within its sampling error (~0.011 for 2000 draws)
    for lo in np.arange(0.0, 1.0, 0.1):
        inside = (s >= lo) & (s < lo + 0.1)
        assert cal.apply(s[inside]).mean() == pytest.approx(h[inside].mean(), abs=0.012)
        assert cal.apply(s[inside]).mean() == pytest.approx((s[inside] ** 2).mean(), abs=0.035)
    assert expected_calibration_error(s, h) > 0.1
    s2, h2 = _miscalibrated(seed=2)  # fresh data: the map generalises
    assert expected_calibration_error(cal.apply(s2), h2) < 0.02


def test_isotonic_is_strictly_increasing_so_ranking_is_kept() -> None:
    s, h = _miscalibrated(3000)
    cal = fit_isotonic(s, h)
    grid = np.linspace(0.0, 1.0, 2001)
    assert np.all(np.diff(cal.apply(grid)) > 0)
    order = np.argsort(s)
    assert np.array_equal(np.argsort(cal.apply(s)), order)


def test_pav_on_a_textbook_example() -> None:
    vals, wts, ends = pool_adjacent_violators(np.array([1.0, 3.0, 2.0, 4.0, 3.0, 5.0]), np.ones(6))
    np.testing.assert_allclose(vals, [1.0, 2.5, 3.5, 5.0])
    np.testing.assert_allclose(wts, [1, 2, 2, 1])
    assert ends.tolist() == [0, 2, 4, 5]


def test_temperature_scaling_fixes_a_scaled_logit() -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(0.0, 2.0, 20000)
    h = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(float)
    overconfident = 1 / (1 + np.exp(-2.5 * z))
    cal = fit_temperature(overconfident, h)
    assert cal.temperature == pytest.approx(2.5, rel=0.08)
    assert expected_calibration_error(cal.apply(overconfident), h) < 0.02


def test_reliability_bins_count_everything() -> None:
    p = np.array([0.05, 0.15, 0.15, 0.95, 1.0])
    h = np.array([0, 0, 1, 1, 1])
    r = reliability(p, h)
    assert r.counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert r.hit_rate[1] == pytest.approx(0.5)
    assert r.ece == pytest.approx((1 * 0.05 + 2 * abs(0.5 - 0.15) + 2 * abs(1 - 0.975)) / 5)


def test_too_few_hits_is_refused() -> None:
    with pytest.raises(ValueError, match="hits"):
        fit_isotonic(np.linspace(0, 1, 50), np.r_[np.zeros(48), np.ones(2)])


def test_saved_beside_the_model_and_found(tmp_path: Path) -> None:
    s, h = _miscalibrated(2000)
    cal = fit_isotonic(s, h, source="test")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.pt").write_bytes(b"")
    assert find_calibration(model / "model.pt") is None
    cal.save(model / "calibration.json")
    back = find_calibration(model / "model.pt")
    assert back == cal
    (model / "calibration.json").write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(InputError, match="calibration"):
        load_calibration(model / "calibration.json")
