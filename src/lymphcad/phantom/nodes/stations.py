"""Lymph-node stations (spec §4.2): where along which anatomical anchors a station's nodes sit, on which side,
and how often (the weights draw a node's station within its region)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Station:
    """A node station: its anchors (centreline names of the anatomy), the side of the anchor its nodes lie on
    (frame x, y, z; zero: any side), the frame z range (mm) of anchor points it uses, and its draw weight."""

    name: str
    region: str
    weight: float
    anchors: tuple[str, ...]
    direction: tuple[float, float, float]
    zrange: tuple[float, float] | None = None
    mirror_x: bool = False  # the direction's x sign is drawn per node (left or right of the anchor)


STATIONS: Final = (
    Station("4R", "mediastinal", 0.22, ("trachea", "svc"), (-1.0, -0.3, 0.0), (2, 45)),
    Station("7", "mediastinal", 0.20, ("esophagus",), (-0.2, -1.0, 0.0), (-38, -6)),
    Station("4L", "mediastinal", 0.10, ("trachea",), (1.0, -0.1, 0.0), (2, 35)),
    Station("10R", "mediastinal", 0.10, ("r_bronchus", "rpa"), (0.0, -0.6, 0.8), None),
    Station("10L", "mediastinal", 0.08, ("l_bronchus", "lpa"), (0.0, 0.6, -0.8), None),
    Station("2R", "mediastinal", 0.07, ("trachea",), (-1.0, -0.4, 0.0), (45, 100)),
    Station("2L", "mediastinal", 0.03, ("trachea",), (1.0, -0.3, 0.0), (45, 100)),
    Station("5", "mediastinal", 0.06, ("lpa",), (0.5, 0.0, 1.0), None),
    Station("6", "mediastinal", 0.04, ("asc_aorta", "arch"), (0.6, -1.0, 0.0), (10, 55)),
    Station("3a", "mediastinal", 0.05, ("svc", "asc_aorta"), (0.0, -1.0, 0.0), (0, 50)),
    Station("8", "mediastinal", 0.04, ("esophagus", "desc_aorta"), (-1.0, 0.2, 0.0), (-100, -40)),
    Station("3p", "mediastinal", 0.01, ("trachea",), (-0.8, 1.0, 0.0), (10, 60)),
    Station("para_aortic_l", "abdominal", 0.20, ("abd_aorta",), (1.0, 0.0, 0.0), (-296, -235)),
    Station("aortocaval", "abdominal", 0.12, ("abd_aorta", "ivc_infra"), (-1.0, -0.2, 0.0), (-296, -225)),
    Station("mesenteric", "abdominal", 0.15, ("mesenteric", "smv", "sma"), (0.0, 0.0, 0.0), None),
    Station("portocaval", "abdominal", 0.10, ("portal",), (0.0, 1.0, 0.0), (-225, -175)),
    Station("paracaval", "abdominal", 0.08, ("ivc_infra", "ivc_supra"), (-1.0, 0.5, 0.0), (-300, -225)),
    Station("common_iliac", "abdominal", 0.08, ("iliac_a_l", "iliac_a_r"), (0.0, 0.0, 0.0), (-365, -300)),
    Station("external_iliac", "abdominal", 0.05, ("iliac_a_l", "iliac_a_r"), (0.0, 0.0, 0.0), (-470, -370)),
    Station("celiac", "abdominal", 0.06, ("celiac",), (0.0, 0.0, 0.0), None),
    Station("gastrohepatic", "abdominal", 0.05, ("portal", "celiac"), (0.0, -1.0, 0.3), (-200, -170)),
    Station("peripancreatic", "abdominal", 0.06, ("pancreas", "splenic_v"), (0.0, 0.0, 0.0), None),
    # behind the crura, beside (not into) the spine: posterolateral of the aorta, either side
    Station(
        "retrocrural", "abdominal", 0.05, ("desc_aorta", "abd_aorta"), (0.9, 0.7, 0.0), (-175, -120), True
    ),
)


def station_named(name: str) -> Station:
    """The station called ``name`` (KeyError when there is none)."""
    for st in STATIONS:
        if st.name == name:
            return st
    raise KeyError(name)
