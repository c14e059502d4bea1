"""Station rules on hand-built landmark configurations (world LPS mm: +x patient left, +y back, +z head)."""

from __future__ import annotations

import numpy as np
import pytest

from lymphcad.measure.landmarks import Landmarks
from lymphcad.measure.stations import Location, adjacent, locate


def _rows(points: list[tuple[float, float, float]], r: float) -> np.ndarray:
    return np.array([[*p, r] for p in points], dtype=np.float64)


def chest(**changes: object) -> Landmarks:
    """A textbook chest: trachea on x = 0, y = 0 (radius 8) from z = 120 down to the carina at z = 0."""
    base = dict(
        body_x_mm=0.0,
        trachea=_rows([(0.0, 0.0, float(z)) for z in range(120, 0, -3)], 8.0),
        carina_xyz=np.array([0.0, 0.0, 0.0]),
        bronchus_right=_rows([(-6.0 - t, 2.0, -0.8 * t) for t in range(0, 40, 3)], 6.0),
        bronchus_left=_rows([(6.0 + t, 2.0, -t) for t in range(0, 45, 3)], 5.5),
        aorta=_rows([(25.0, 25.0, float(z)) for z in range(10, -300, -3)], 11.0),
        arch_top_z=60.0,
        ascending_xy=(-12.0, -40.0, 14.0),
        bifurcation_z=-300.0,
        spine=np.array([[0.0, 45.0, float(z)] for z in range(120, -300, -10)]),
        dome_right_z=-150.0,
        dome_left_z=-160.0,
        lung_top_z=150.0,
        z_range=(-320.0, 180.0),
        notes=(),
    )
    base.update(changes)
    return Landmarks(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("point", "station"),
    [
        ((-14.0, 0.0, 5.0 + 20.0), "4R"),  # right of the trachea, above the carina
        ((0.0, 4.0, -12.0), "7"),  # just below the carina, between the bronchi
        ((0.0, 4.0, 3.0), "4R"),  # just above the carina, on the midline: right (up to the left wall)
        ((-5.0, -12.0, 30.0), "4R"),  # right of the midline
        ((6.0, -12.0, 30.0), "4R"),  # left of the midline but inside the trachea's left wall: still right
        ((16.0, -2.0, 30.0), "4L"),  # beyond the left wall: left
        ((-14.0, 0.0, 80.0), "2R"),  # above the arch's top
        ((14.0, 0.0, 80.0), "2L"),
        ((-20.0, 0.0, 160.0), "1R"),  # above the lung apices
        ((20.0, 0.0, 160.0), "1L"),
        ((0.0, 16.0, 40.0), "3p"),  # behind the trachea
        ((-20.0, -45.0, 40.0), "3a"),  # well in front of it
        ((15.0, -45.0, 40.0), "6"),  # in front, left, at the arch: para-aortic
        ((40.0, -5.0, 20.0), "5"),  # far left below the arch: aortopulmonary window
        ((-30.0, 4.0, -22.0), "10R"),  # beside the right main bronchus
        ((36.0, 4.0, -30.0), "10L"),
        ((-8.0, 25.0, -80.0), "8"),  # low, near the midline
        ((-80.0, 0.0, -100.0), "11R"),
    ],
)
def test_chest_stations(point: tuple[float, float, float], station: str) -> None:
    loc = locate(chest(), point)
    assert loc == Location("mediastinal", station), loc
    assert loc.label == f"mediastinal:{station}"


def test_carina_level_splits_4r_and_7() -> None:
    """The same point 3 mm above and below the carina: right paratracheal vs subcarinal."""
    lm = chest()
    assert locate(lm, (0.0, 3.0, 3.0)).station == "4R"
    assert locate(lm, (0.0, 3.0, -3.0)).station == "7"


def test_trachea_midline_follows_the_trachea() -> None:
    """Left/right is judged against the trachea at the point's height, not against x = 0."""
    shifted = chest(trachea=_rows([(20.0, 0.0, float(z)) for z in range(120, 0, -3)], 8.0))
    assert locate(shifted, (16.0, 0.0, 30.0)).station == "4R"  # left of x = 0 but right of the trachea
    assert locate(shifted, (34.0, 0.0, 30.0)).station == "4L"


@pytest.mark.parametrize(
    ("point", "group"),
    [
        ((40.0, 25.0, -200.0), "paraaortic"),
        ((5.0, 25.0, -200.0), "aortocaval"),
        ((-30.0, 25.0, -200.0), "paracaval"),
        ((25.0, -30.0, -200.0), "coeliac"),
        ((25.0, -30.0, -260.0), "mesenteric"),
        ((25.0, 45.0, -170.0), "retrocrural"),
        ((-10.0, 0.0, -180.0), "portocaval"),
        ((30.0, 20.0, -320.0), "iliac"),
    ],
)
def test_abdominal_groups(point: tuple[float, float, float], group: str) -> None:
    assert locate(chest(), point) == Location("abdominal", group)


def test_unknown_with_a_reason_when_landmarks_are_missing() -> None:
    lm = chest(carina_xyz=None, trachea=np.zeros((0, 4)), notes=("airway: no trachea found",))
    loc = locate(lm, (-14.0, 0.0, 25.0))
    assert loc.region == "mediastinal" and loc.station == ""
    assert loc.label == "mediastinal:unknown" and "no trachea" in loc.reason
    no_arch = chest(arch_top_z=None, notes=("aorta: no enhanced lumen",))
    loc = locate(no_arch, (-14.0, 0.0, 80.0))
    assert loc.label == "mediastinal:unknown" and "enhanced lumen" in loc.reason
    nothing = chest(
        carina_xyz=None,
        trachea=np.zeros((0, 4)),
        dome_right_z=None,
        dome_left_z=None,
        lung_top_z=None,
        aorta=np.zeros((0, 4)),
        notes=("lungs: none",),
    )
    assert locate(nothing, (0.0, 0.0, 0.0)).label == "unknown"


def test_adjacency_is_symmetric() -> None:
    assert adjacent("4R", "10R") and adjacent("10R", "4R")
    assert adjacent("7", "7")
    assert not adjacent("2R", "7")


@pytest.mark.parametrize(
    ("point", "station"),
    [
        ((-14.0, 0.0, 15.0), "10R"),  # right, below the azygos arch (20 mm above the carina): hilar
        ((-14.0, 0.0, 25.0), "4R"),  # above it
        ((4.0, -14.0, 15.0), "4R"),  # pretracheal left of the trachea's centre: not the right hilum
        ((16.0, 0.0, 8.0), "10L"),  # left, below the left pulmonary artery's upper rim (12.5 mm)
        ((16.0, 0.0, 18.0), "4L"),
        ((30.0, 0.0, 20.0), "5"),  # lateral to the ligamentum (25 mm), below the arch's lower border (34)
        ((20.0, -20.0, 20.0), "4L"),  # in front of the trachea but medial to the ligamentum: not 5
        ((30.0, 0.0, 45.0), "4L"),  # lateral but beside the arch (above its lower border): not 5
        ((-9.0, 9.0, 40.0), "3p"),  # behind the back wall near its right edge (wall 8 + 3.5 mm)
        ((-14.0, 9.0, 40.0), "4R"),  # beside the wall, behind the centre: paratracheal
        ((-5.0, -45.0, 45.0), "6"),  # in front, left of the ascending aorta (x = -12) at the arch's height
        ((-5.0, -45.0, 20.0), "3a"),  # the same below the arch's lower border
    ],
)
def test_iaslc_boundaries_above_the_carina(point: tuple[float, float, float], station: str) -> None:
    """The map's boundaries between the trachea's stations and the hila, the AP window and the vessels."""
    assert locate(chest(), point) == Location("mediastinal", station)


def test_trachea_wall_from_the_median_lumen() -> None:
    """A lumen that narrows near the carina (partial volume) does not move the right/left border."""
    rows = [(0.0, 0.0, float(z)) for z in range(120, 0, -3)]
    radii = [8.0 if z > 12 else 3.0 for _x, _y, z in rows]
    narrowing = chest(trachea=np.array([[*p, r] for p, r in zip(rows, radii, strict=True)]))
    assert locate(narrowing, (9.0, 0.0, 25.0)).station == "4R"  # inside the 8 + 3.5 mm wall
    assert locate(narrowing, (9.0, -12.0, 14.0)).station == "4R"  # at the narrowing too
