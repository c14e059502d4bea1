"""Location of a finding: region and IASLC 2009 station (chest) or abdominal group, by rules on landmarks.

Chest (IASLC 2009 map, Rusch et al. J Thorac Oncol 2009), with the landmarks of
:mod:`lymphcad.measure.landmarks` standing in for the map's boundaries:

* region: above the diaphragm dome of its side → ``mediastinal``, below → ``abdominal``;
* ``1R/1L`` (low cervical, supraclavicular): above the lung apices; side by the trachea's midline;
* above the carina (the trachea's wall taken ``TRACHEA_WALL_MM`` outside its air lumen's median radius):
  ``3a`` (prevascular) in front of the trachea's wall by more than ``PREVASCULAR_MM``, ``6`` (para-aortic)
  when also left of the ascending aorta between the arch's lower border (``ARCH_CALIBRE_MM`` below its top)
  and its top; ``3p`` (retrotracheal) behind the trachea's back wall within its width; otherwise
  paratracheal, right up to the trachea's *left* wall (the 2009 map's right/left border), left beyond it.
  Right: ``10R`` at the tracheobronchial angle below the azygos arch's lower border (taken ``AZYGOS_MM``
  above the carina; right of the trachea's centre), ``2R`` above the top of the aortic arch (the map uses the
  left brachiocephalic vein's caudal margin, which crosses the trachea at about the arch's top), ``4R``
  between. Left: ``10L`` below the left pulmonary artery's upper rim (taken ``LPA_MM`` above the carina),
  ``2L`` above the arch's top, ``5`` (subaortic, aortopulmonary window) below the arch's lower border and
  lateral to the ligamentum arteriosum (taken ``LIGAMENTUM_MM`` left of the trachea's centre), ``4L``
  otherwise;
* below the carina: ``10R/10L`` (hilar) beside a main bronchus (within ``HILAR_MM`` of its centreline),
  ``11R/11L`` (interlobar and beyond: 11–14 are reported as 11) farther out, ``7`` (subcarinal) between the
  bronchi down to ``SUBCARINAL_MM`` below the carina, ``8`` (paraoesophageal) below that, ``9`` is not
  separated from 8.

Abdomen (groups of the Japanese/AJCC conventions, by position to the aorta, whose right side the IVC
follows): ``retrocrural`` behind the aorta near the crura, ``coeliac`` / ``mesenteric`` in front of it by more
than ``MESENTERIC_FRONT_MM`` (upper / lower), ``portocaval`` right and in front, high, ``paraaortic`` left of
it, ``aortocaval`` between it and the IVC, ``paracaval`` right of the IVC, ``iliac`` below the bifurcation
(``mesenteric`` there when more than ``PELVIC_MESENTERY_MM`` in front of the aorta's end).

When a landmark a rule needs is missing, the answer is the region alone (``mediastinal:unknown``) or
``unknown``, with the reason in :attr:`Location.reason`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from lymphcad.measure.landmarks import Landmarks

#: prevascular (3a, 6): this far in front of the trachea's front wall (mm)
PREVASCULAR_MM: Final = 22.0
HILAR_MM: Final = 22.0
#: the trachea's wall beyond the air lumen (which the air threshold also narrows by partial volume) (mm)
TRACHEA_WALL_MM: Final = 3.5
#: the azygos arch's lower border (4R/10R) is taken this far above the carina (mm)
AZYGOS_MM: Final = 20.0
#: the left pulmonary artery's upper rim (4L/10L) is taken this far above the carina (mm)
LPA_MM: Final = 12.5
#: the ligamentum arteriosum (4L medial, 5 lateral) is taken this far left of the trachea's centre (mm)
LIGAMENTUM_MM: Final = 25.0
#: the arch's calibre: its lower border (top of 5, bottom of 6) lies this far below its upper border (mm)
ARCH_CALIBRE_MM: Final = 26.0
SUBCARINAL_MM: Final = 40.0
#: below the carina, findings within this distance of the descending aorta's wall (and behind the carina) are 8
PARAOESOPHAGEAL_MM: Final = 25.0
#: IVC centre assumed this far to the patient's right of the aortic centre (mm)
IVC_OFFSET_MM: Final = 28.0
#: retrocrural: within this height below the dome of the right side (mm)
CRURA_MM: Final = 60.0
#: coeliac / mesenteric roots: at least this far in front of the aorta's wall (nearer: aortocaval, para-aortic)
MESENTERIC_FRONT_MM: Final = 10.0
#: below the bifurcation, mesenteric when this far in front of the aorta's last centre (mm), iliac otherwise
PELVIC_MESENTERY_MM: Final = 25.0
#: coeliac vs mesenteric: within this height below the right dome (mm)
COELIAC_MM: Final = 90.0

#: IASLC stations and abdominal groups with their neighbours on the map (for "within an adjacent station")
ADJACENT: Final = {
    "1R": {"1L", "2R"},
    "1L": {"1R", "2L"},
    "2R": {"1R", "2L", "4R", "3a", "3p"},
    "2L": {"1L", "2R", "4L", "3a", "3p", "6"},
    "3a": {"2R", "2L", "4R", "6"},
    "3p": {"2R", "2L", "4R", "4L", "7", "8"},
    "4R": {"2R", "4L", "10R", "3a", "3p", "7"},
    "4L": {"2L", "4R", "5", "10L", "3p", "7"},
    "5": {"4L", "6", "10L"},
    "6": {"5", "2L", "3a"},
    "7": {"4R", "4L", "8", "10R", "10L", "3p"},
    "8": {"7", "9", "3p"},
    "9": {"8"},
    "10R": {"4R", "7", "11R"},
    "10L": {"4L", "5", "7", "11L"},
    "11R": {"10R"},
    "11L": {"10L"},
    # abdominal groups, neighbours around the aorta and IVC and down the mesenteric root
    "retrocrural": {"paraaortic", "aortocaval", "coeliac"},
    "coeliac": {"retrocrural", "mesenteric", "portocaval", "paraaortic", "aortocaval"},
    "portocaval": {"coeliac", "paracaval", "aortocaval"},
    "mesenteric": {"coeliac", "paraaortic", "aortocaval"},
    "paraaortic": {"aortocaval", "retrocrural", "coeliac", "mesenteric", "iliac"},
    "aortocaval": {"paraaortic", "paracaval", "retrocrural", "coeliac", "portocaval", "mesenteric", "iliac"},
    "paracaval": {"aortocaval", "portocaval", "iliac"},
    "iliac": {"paraaortic", "aortocaval", "paracaval"},
}


@dataclass(frozen=True)
class Location:
    """A finding's region (``mediastinal``, ``abdominal`` or ``""``), station/group (``""`` when unknown)
    and, where something is unknown, why."""

    region: str
    station: str
    reason: str = ""

    @property
    def label(self) -> str:
        """The ``location`` column of formats.md §3: ``region:station``, ``region:unknown`` or ``unknown``."""
        if not self.region:
            return "unknown"
        return f"{self.region}:{self.station or 'unknown'}"


def adjacent(a: str, b: str) -> bool:
    """True when two IASLC stations (or two abdominal groups) are the same or neighbours on the map."""
    return a == b or b in ADJACENT.get(a, set()) or a in ADJACENT.get(b, set())


def locate(lm: Landmarks, xyz: tuple[float, float, float]) -> Location:
    """Region and station/group of a world point (LPS mm) by the rules of the module docstring."""
    x, y, z = (float(v) for v in xyz)
    dome = _dome_under(lm, x)
    if dome is None and lm.carina_xyz is None:
        if len(lm.aorta) and lm.lung_top_z is None:
            return _abdominal(lm, x, y, z)
        return Location("", "", "no diaphragm, lungs or carina found: " + "; ".join(lm.notes))
    if dome is not None and z < dome:
        return _abdominal(lm, x, y, z)
    return _thoracic(lm, x, y, z)


def _dome_under(lm: Landmarks, x: float) -> float | None:
    right_side = x < lm.body_x_mm
    dome = lm.dome_right_z if right_side else lm.dome_left_z
    return dome if dome is not None else (lm.dome_left_z if right_side else lm.dome_right_z)


def _thoracic(lm: Landmarks, x: float, y: float, z: float) -> Location:
    region = "mediastinal"
    if lm.lung_top_z is not None and z > lm.lung_top_z:
        tr = lm.trachea_at(z)
        mid = tr[0] if tr is not None else lm.body_x_mm
        return Location(region, "1R" if x < mid else "1L")
    if lm.carina_xyz is None or len(lm.trachea) == 0:
        return Location(region, "", "no carina/trachea found: " + "; ".join(lm.notes))
    cx, _cy, cz = (float(v) for v in lm.carina_xyz)
    if z >= cz:
        tr = lm.trachea_at(z)
        assert tr is not None
        tx, ty, _r = tr
        # the lumen's calibre is steadier than one slice's (it narrows near the carina)
        wall = float(np.median(lm.trachea[:, 3])) + TRACHEA_WALL_MM
        arch_top = lm.arch_top_z
        if y < ty - wall - PREVASCULAR_MM:
            left_of_ascending = x > (lm.ascending_xy[0] if lm.ascending_xy is not None else tx + wall)
            if (
                arch_top is not None
                and arch_top - ARCH_CALIBRE_MM <= z <= arch_top + 5.0
                and left_of_ascending
            ):
                return Location(region, "6")
            return Location(region, "3a")
        if abs(x - tx) <= wall and y > ty + np.sqrt(wall**2 - (x - tx) ** 2):
            return Location(region, "3p")  # behind the trachea's back wall, within its width
        right = x <= tx + wall  # right up to the trachea's left wall
        if right and z < cz + AZYGOS_MM and x < tx:
            return Location(region, "10R")  # below the azygos arch, at the right tracheobronchial angle
        if not right and z < cz + LPA_MM:
            return Location(region, "10L")  # below the left pulmonary artery's upper rim
        if arch_top is None:
            return Location(
                region,
                "",
                f"paratracheal {'R' if right else 'L'}: top of the aortic arch not found ({'; '.join(lm.notes)})",
            )
        high = z > arch_top
        if right:
            return Location(region, "2R" if high else "4R")
        if high:
            return Location(region, "2L")
        if x - tx > LIGAMENTUM_MM and z < arch_top - ARCH_CALIBRE_MM:
            # lateral to the ligamentum arteriosum below the arch: the aortopulmonary window
            return Location(region, "5")
        return Location(region, "4L")
    # below the carina
    d_r = _distance_to(lm.bronchus_right, (x, y, z))
    d_l = _distance_to(lm.bronchus_left, (x, y, z))
    between = _between_bronchi(lm, x, z)
    if between and z >= cz - SUBCARINAL_MM:
        return Location(region, "7")
    if d_r is not None and d_r <= HILAR_MM and x < cx and not between:
        return Location(region, "10R")
    if d_l is not None and d_l <= HILAR_MM and x > cx and not between:
        return Location(region, "10L")
    if z >= cz - SUBCARINAL_MM and abs(x - cx) <= 20.0:
        return Location(region, "7")
    ao = lm.aorta_at(z)
    if (
        ao is not None
        and y > float(lm.carina_xyz[1])
        and np.hypot(x - ao[0], y - ao[1]) <= ao[2] + PARAOESOPHAGEAL_MM
    ):
        return Location(region, "8")  # beside the oesophagus and descending aorta, behind the hila
    if abs(x - cx) <= 35.0:
        return Location(region, "8")
    return Location(region, "11R" if x < cx else "11L")


def _distance_to(rows: np.ndarray, p: tuple[float, float, float]) -> float | None:
    if len(rows) == 0:
        return None
    d = np.linalg.norm(rows[:, :3] - np.asarray(p), axis=1) - rows[:, 3]
    return float(d.min())


def _between_bronchi(lm: Landmarks, x: float, z: float) -> bool:
    """Between the main bronchi's centrelines at height z (inside their medial walls)."""
    if len(lm.bronchus_right) == 0 or len(lm.bronchus_left) == 0:
        return False
    r = lm.bronchus_right[int(np.argmin(np.abs(lm.bronchus_right[:, 2] - z)))]
    left = lm.bronchus_left[int(np.argmin(np.abs(lm.bronchus_left[:, 2] - z)))]
    if z < min(lm.bronchus_right[:, 2].min(), lm.bronchus_left[:, 2].min()) - 10.0:
        return False
    return bool(r[0] + r[3] < x < left[0] - left[3])


def _abdominal(lm: Landmarks, x: float, y: float, z: float) -> Location:
    region = "abdominal"
    if lm.bifurcation_z is not None and z < lm.bifurcation_z:
        # below the bifurcation: along the iliac vessels, unless well in front of them in the small bowel's
        # mesentery (which hangs into the pelvis)
        if len(lm.aorta) and y < float(lm.aorta[int(np.argmin(lm.aorta[:, 2])), 1]) - PELVIC_MESENTERY_MM:
            return Location(region, "mesenteric")
        return Location(region, "iliac")
    ao = lm.aorta_at(z)
    if ao is None:
        return Location(region, "", "abdominal aorta not found at this level: " + "; ".join(lm.notes))
    ax, ay, ar = ao
    dome = lm.dome_right_z
    if y > ay and abs(x - ax) < 40.0 and dome is not None and z > dome - CRURA_MM:
        return Location(region, "retrocrural")
    if y < ay - ar:  # in front of the aorta
        if x < ax - ar - 10.0 and dome is not None and z > dome - COELIAC_MM - 30.0:
            return Location(region, "portocaval")
        if abs(x - ax) < 35.0 and y < ay - ar - MESENTERIC_FRONT_MM:
            if dome is not None and z > dome - COELIAC_MM:
                return Location(region, "coeliac")
            return Location(region, "mesenteric")
        if y < ay - ar - 30.0:
            return Location(region, "mesenteric")
    if x > ax:
        return Location(region, "paraaortic")
    if x > ax - IVC_OFFSET_MM:
        return Location(region, "aortocaval")
    return Location(region, "paracaval")
