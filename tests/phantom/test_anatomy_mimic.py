"""The anatomy's node mimics as typed records: validated, moved from the frame to the world exactly."""

from __future__ import annotations

import numpy as np
import pytest

from lymphcad.phantom.anatomy import Mimic


def test_shifted_moves_the_centre_and_keeps_the_rest() -> None:
    m = Mimic("azygos", (-14.0, 20.5, 3.25), 8.4)
    w = m.shifted(np.array([10.0, -20.0, -300.125]))
    assert w == Mimic("azygos", (-4.0, 0.5, -296.875), 8.4)
    assert all(type(v) is float for v in w.center_xyz)
    assert m.center_xyz == (-14.0, 20.5, 3.25)  # frozen: the frame record is untouched


@pytest.mark.parametrize(
    ("center", "size", "message"),
    [
        ((0.0, float("nan"), 0.0), 5.0, "centre must be finite"),
        ((0.0, 0.0, float("inf")), 5.0, "centre must be finite"),
        ((0.0, 0.0, 0.0), 0.0, "size must be > 0 mm"),
        ((0.0, 0.0, 0.0), -3.0, "size must be > 0 mm"),
        ((0.0, 0.0, 0.0), float("nan"), "size must be > 0 mm"),
    ],
)
def test_invalid_mimics_are_refused(center: tuple[float, float, float], size: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Mimic("crus", center, size)
