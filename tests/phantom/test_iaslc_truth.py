"""The phantom's truth station: the IASLC 2009 map read off a hand-built anatomy (frame mm: +x patient left,
+y back, +z head; carina near z = 0)."""

from __future__ import annotations

import numpy as np
import pytest

from lymphcad.phantom.anatomy import Anatomy, Anchor
from lymphcad.phantom.iaslc import boundaries, iaslc_station


def _tube(knots: list[tuple[float, float, float]], r: float, n: int = 40) -> Anchor:
    """A polyline anchor through the knots, densely sampled (as the builders' smooth paths are)."""
    k = np.asarray(knots, dtype=np.float64)
    t = np.linspace(0.0, 1.0, n)
    s = np.linspace(0.0, 1.0, len(k))
    pts = np.stack([np.interp(t, s, k[:, i]) for i in range(3)], axis=1)
    return Anchor(pts, np.full(n, r))


def anatomy() -> Anatomy:
    """Trachea on x = y = 0; aortic arch top at z = 62 (lower border 38); the left brachiocephalic vein's
    caudal margin crosses the trachea at z ≈ 58–60; azygos arch's lower border beside the trachea at z ≈ 10; left
    pulmonary artery's upper rim at z = 7, ligamentum arteriosum at x ≈ 23."""
    an = Anatomy()
    an.anchors.update(
        trachea=_tube([(0, 0, 0), (0, 0, 150)], 10.0),
        r_bronchus=_tube([(0, 0, 2), (-40, 5, -30)], 8.0),
        l_bronchus=_tube([(0, 0, 2), (45, 5, -40)], 7.5),
        arch=_tube([(-15, -35, 30), (0, -35, 50), (20, -15, 50), (25, 10, 35)], 12.0, n=61),
        asc_aorta=_tube([(-15, -35, -40), (-15, -35, 30)], 14.0),
        svc=_tube([(-40, -20, -20), (-40, -20, 60)], 9.0),
        lbcv=_tube([(-35, -25, 60), (0, -40, 66), (30, -30, 72)], 6.0, n=61),
        azygos_arch=_tube([(-15, 15, 10), (-22, 2, 20), (-32, -10, 22), (-40, -20, 18)], 4.0, n=31),
        lpa=_tube([(10, -20, -8), (30, -10, -2), (50, -5, -8)], 9.0),
        esophagus=_tube([(8, 12, -150), (8, 12, 150)], 8.0),
        desc_aorta=_tube([(25, 20, -150), (25, 20, 30)], 12.0),
    )
    return an


def test_boundaries_of_the_hand_built_body() -> None:
    b = boundaries(anatomy())
    assert b is not None
    assert b.arch_top_z == pytest.approx(62.0) and b.arch_bottom_z == pytest.approx(38.0)
    assert 58.0 <= b.bcv_z <= 60.0  # the sloping vein's lowest edge over the trachea's width
    assert b.azygos_z == pytest.approx(10.0, abs=1.0)
    assert b.lpa_top_z == pytest.approx(7.0, abs=0.5)
    assert 20.0 < b.ligamentum_x < 26.0
    assert -6.0 < b.carina_z < 0.0  # the lumens part a few mm below the bronchi's start


@pytest.mark.parametrize(
    ("point", "station"),
    [
        ((-15.0, 0.0, 70.0), "2R"),  # right, above the brachiocephalic vein's crossing
        ((-15.0, 0.0, 55.0), "4R"),  # below it (and below the arch's top)
        ((-15.0, 0.0, 5.0), "10R"),  # below the azygos arch: tracheobronchial angle
        ((-15.0, 0.0, 15.0), "4R"),  # above it
        ((5.0, -15.0, 5.0), "4R"),  # pretracheal inside the left wall, left of the centre: not hilar
        ((8.0, 0.0, 45.0), "4R"),  # left of the midline but inside the trachea's left wall
        ((15.0, 0.0, 70.0), "2L"),  # left, above the arch's top
        ((15.0, 0.0, 45.0), "4L"),
        ((30.0, 0.0, 20.0), "5"),  # below the arch, lateral to the ligamentum
        ((18.0, 0.0, 20.0), "4L"),  # medial to it
        ((30.0, 0.0, 45.0), "4L"),  # lateral but above the arch's lower border
        ((15.0, 0.0, 5.0), "10L"),  # below the left pulmonary artery's upper rim
        ((0.0, 14.0, 40.0), "3p"),  # behind the trachea's back wall
        ((-15.0, -55.0, 20.0), "3a"),  # in front of the ascending aorta
        (
            (5.0, -55.0, 45.0),
            "6",
        ),  # in front of the arch, left of the ascending aorta, within the arch's height
        ((2.0, 0.0, -15.0), "7"),  # between the main bronchi below the carina
        ((-35.0, 15.0, -20.0), "10R"),  # beside the right main bronchus
        ((8.0, 27.0, -80.0), "8"),  # low, beside the oesophagus
    ],
)
def test_station_of_a_point(point: tuple[float, float, float], station: str) -> None:
    assert iaslc_station(anatomy(), point, "drawn") == station


def test_the_carina_splits_right_paratracheal_and_subcarinal() -> None:
    b = boundaries(anatomy())
    assert b is not None
    assert iaslc_station(anatomy(), (-3.0, 6.0, b.carina_z + 1.0), "x") == "10R"  # right, below the azygos
    assert iaslc_station(anatomy(), (3.0, 6.0, b.carina_z + 1.0), "x") == "4R"  # left of the centre
    assert iaslc_station(anatomy(), (0.0, 6.0, b.carina_z - 8.0), "x") == "7"


def test_drawn_station_kept_when_the_anatomy_cannot_judge() -> None:
    an = anatomy()
    del an.anchors["azygos_arch"]  # e.g. outside the canvas
    assert boundaries(an) is None
    assert iaslc_station(an, (-15.0, 0.0, 5.0), "4R") == "4R"
