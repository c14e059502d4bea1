"""The IASLC 2009 station of a placed mediastinal node, read off the phantom's exact anatomy.

A node is *drawn* for a station (spec §4.2) and placed beside that station's anchors, but placement may end up
elsewhere: on any side of the anchor when the textbook side is full, at a fall-back station, in the fat room
nearby, or next to a cluster's seed. The station written to the truth is therefore the one of the map at the
node's final centre (Rusch et al., J Thorac Oncol 2009), with the boundaries taken from the anatomy the
phantom painted (frame mm, :mod:`lymphcad.phantom.anatomy`):

* carina: where the main bronchi's lumens part;
* right paratracheal: up to the trachea's *left* wall; ``2R`` above the caudal margin of the left
  brachiocephalic vein where it crosses the trachea, ``4R`` below it down to the lower border of the azygos
  arch, ``10R`` below that (right of the trachea's centre);
* left paratracheal: ``2L`` above the upper border of the aortic arch, ``4L`` below it down to the upper rim
  of the left pulmonary artery (``10L`` below), ``5`` (subaortic) instead of 4L lateral to the ligamentum
  arteriosum below the arch;
* ``3a`` in front of the great vessels (SVC, ascending aorta, arch, brachiocephalic vessels); ``6`` when also
  left of the ascending aorta's centre between the arch's lower and upper borders; ``3p`` behind the trachea
  within its width;
* below the carina: ``7`` between the main bronchi down to their lobar ends, ``10R/10L`` beside a main
  bronchus, ``8`` below the bronchi beside the oesophagus or descending aorta.

Abdominal nodes and nodes the anatomy cannot judge (an anchor outside the canvas) keep their drawn station.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from lymphcad.phantom.anatomy import Anatomy, Anchor

#: the airway wall's thickness painted around the lumens (mm): anchor radii include it
AIRWAY_WALL_MM: Final = 2.0
#: a node within this distance of a main bronchus's wall is hilar (10R/10L) (mm)
HILAR_MM: Final = 15.0
#: a node below the bronchi within this distance of the oesophagus or descending aorta is paraoesophageal (mm)
PARAOESOPHAGEAL_MM: Final = 25.0
#: the ligamentum arteriosum joins the left pulmonary artery this far along it from the trunk (mm)
LIGAMENTUM_MM: Final = 15.0
#: the great vessels whose front wall bounds the prevascular space (3a, 6)
GREAT_VESSELS: Final = ("svc", "asc_aorta", "arch", "lbcv", "bct", "lcca")
#: a node this far beside a great vessel's wall still counts as in front of it when in front of its centre (mm)
BESIDE_VESSEL_MM: Final = 10.0
#: anchors the rules need
NEEDED: Final = ("trachea", "r_bronchus", "l_bronchus", "arch", "asc_aorta", "lpa", "azygos_arch")


@dataclass(frozen=True)
class Boundaries:
    """The map's boundaries in one phantom body (frame mm)."""

    carina_z: float
    #: caudal margin of the left brachiocephalic vein at the trachea (2R/4R)
    bcv_z: float
    #: upper border of the aortic arch (2L/4L, 6's top)
    arch_top_z: float
    #: lower border of the aortic arch (5's top, 6's bottom)
    arch_bottom_z: float
    #: lower border of the azygos arch beside the trachea (4R/10R)
    azygos_z: float
    #: upper rim of the left pulmonary artery (4L/10L, 5's bottom)
    lpa_top_z: float
    #: x of the ligamentum arteriosum (4L/5)
    ligamentum_x: float
    #: lowest z of station 7 (the bronchi's lobar ends)
    subcarinal_bottom_z: float


def _tube_at(a: Anchor, z: float) -> tuple[float, float, float]:
    """(x, y, radius) of a mostly vertical tube at height z (clamped to its ends)."""
    order = np.argsort(a.pts[:, 2])
    zs = a.pts[order, 2]
    return (
        float(np.interp(z, zs, a.pts[order, 0])),
        float(np.interp(z, zs, a.pts[order, 1])),
        float(np.interp(z, zs, np.asarray(a.radius, dtype=float)[order])),
    )


def _radii(a: Anchor) -> NDArray[np.float64]:
    return np.broadcast_to(np.asarray(a.radius, dtype=float), (len(a.pts),)).astype(np.float64)


def _arc_point(a: Anchor, length: float) -> NDArray[np.float64]:
    """The centreline point ``length`` mm along a tube from its first point."""
    seg = np.linalg.norm(np.diff(a.pts, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    return np.array([float(np.interp(length, s, a.pts[:, i])) for i in range(3)])


def _carina_z(an: Anatomy) -> float:
    """Highest z (searched downwards from the bronchi's start) where the two bronchial lumens no longer touch."""
    rb, lb = an.anchors["r_bronchus"], an.anchors["l_bronchus"]
    top = float(min(rb.pts[:, 2].max(), lb.pts[:, 2].max()))
    for z in np.arange(top, top - 40.0, -0.5):
        xr, yr, rr = _tube_at(rb, float(z))
        xl, yl, rl = _tube_at(lb, float(z))
        if np.hypot(xl - xr, yl - yr) > (rr - AIRWAY_WALL_MM) + (rl - AIRWAY_WALL_MM):
            return float(z)
    return top - 40.0


def boundaries(an: Anatomy) -> Boundaries | None:
    """The boundaries of one body, None when an anchor the rules need lies outside the canvas."""
    if any(n not in an.anchors for n in NEEDED):
        return None
    carina = _carina_z(an)
    arch = an.anchors["arch"]
    r_arch = _radii(arch)
    i_top = int(np.argmax(arch.pts[:, 2]))
    arch_top = float((arch.pts[:, 2] + r_arch).max())
    arch_bottom = float(arch.pts[i_top, 2] - r_arch[i_top])
    tr = an.anchors["trachea"]
    # the left brachiocephalic vein's lowest edge among its points in front of the trachea's width
    bcv_z = arch_top
    if "lbcv" in an.anchors:
        v = an.anchors["lbcv"]
        rv = _radii(v)
        over = [
            i
            for i, p in enumerate(v.pts)
            if abs(p[0] - _tube_at(tr, float(p[2]))[0]) <= _tube_at(tr, p[2])[2]
        ]
        if over:
            bcv_z = float(min(v.pts[i, 2] - rv[i] for i in over))
    # the azygos arch's lower border where it runs lateral to the trachea's right wall, in front of its back
    az = an.anchors["azygos_arch"]
    raz = _radii(az)
    beside = []
    for i, p in enumerate(az.pts):
        tx, ty, trr = _tube_at(tr, float(p[2]))
        if p[0] < tx - trr and p[1] < ty + trr:
            beside.append(float(p[2] - raz[i]))
    azygos = min(beside) if beside else float((az.pts[:, 2] - raz).min())
    lpa = an.anchors["lpa"]
    lpa_top = float((lpa.pts[:, 2] + _radii(lpa)).max())
    lig_x = float(_arc_point(lpa, LIGAMENTUM_MM)[0])
    rb, lb = an.anchors["r_bronchus"], an.anchors["l_bronchus"]
    sub_bottom = 0.5 * float(rb.pts[:, 2].min() + lb.pts[:, 2].min())
    return Boundaries(carina, bcv_z, arch_top, arch_bottom, azygos, lpa_top, lig_x, sub_bottom)


def _prevascular(an: Anatomy, x: float, y: float, z: float, trachea_front_y: float) -> bool:
    """In front of a great vessel at the point's height (of those in front of the trachea): of its front wall
    where the point lies within its width, of its centre where the point lies beside it."""
    for name in GREAT_VESSELS:
        a = an.anchors.get(name)
        if a is None:
            continue
        r = _radii(a)
        dz = a.pts[:, 2] - z
        sel = np.abs(dz) < r
        if not sel.any():
            continue
        chord = np.sqrt(np.maximum(r[sel] ** 2 - dz[sel] ** 2, 0.0))
        px, py = a.pts[sel, 0], a.pts[sel, 1]
        dx = np.abs(x - px)
        cover = (dx <= chord + BESIDE_VESSEL_MM) & (py < trachea_front_y)
        if cover.any():
            front = py[cover] - np.sqrt(np.maximum(chord[cover] ** 2 - dx[cover] ** 2, 0.0))
            if y < float(front.min()):
                return True
    return False


def _wall_distance(a: Anchor, p: NDArray[np.float64]) -> float:
    return float((np.linalg.norm(a.pts - p, axis=1) - _radii(a)).min())


def iaslc_station(
    an: Anatomy, frame_xyz: NDArray[np.float64] | tuple[float, float, float], drawn: str
) -> str:
    """The IASLC 2009 station of a mediastinal node centred at ``frame_xyz`` (see the module docstring)."""
    b = boundaries(an)
    if b is None:
        return drawn
    p = np.asarray(frame_xyz, dtype=np.float64)
    x, y, z = (float(v) for v in p)
    tx, ty, tr = _tube_at(an.anchors["trachea"], z)
    if z >= b.carina_z:
        if _prevascular(an, x, y, z, ty - tr):
            asc_x = _tube_at(an.anchors["asc_aorta"], z)[0]
            if b.arch_bottom_z <= z <= b.arch_top_z and x > asc_x:
                return "6"
            return "3a"
        if y > ty and abs(x - tx) <= tr and y > ty + np.sqrt(max(tr**2 - (x - tx) ** 2, 0.0)):
            return "3p"
        if x <= tx + tr:  # right: up to the trachea's left wall
            if z > b.bcv_z:
                return "2R"
            if z < b.azygos_z and x < tx:
                return "10R"
            return "4R"
        if z > b.arch_top_z:
            return "2L"
        if z < b.lpa_top_z:
            return "10L"
        if z < b.arch_bottom_z and x > b.ligamentum_x:
            return "5"
        return "4L"
    rb, lb = an.anchors["r_bronchus"], an.anchors["l_bronchus"]
    xr, _yr, rr = _tube_at(rb, z)
    xl, _yl, rl = _tube_at(lb, z)
    if z >= b.subcarinal_bottom_z and xr + rr < x < xl - rl:
        return "7"
    d_r, d_l = _wall_distance(rb, p), _wall_distance(lb, p)
    if min(d_r, d_l) <= HILAR_MM:
        return "10R" if d_r < d_l else "10L"
    if z < b.subcarinal_bottom_z:
        near = [_wall_distance(an.anchors[n], p) for n in ("esophagus", "desc_aorta") if n in an.anchors]
        if near and min(near) <= PARAOESOPHAGEAL_MM:
            return "8"
    if z >= b.subcarinal_bottom_z and xr < x < xl:
        return "7"
    return "10R" if x < tx else "10L"
