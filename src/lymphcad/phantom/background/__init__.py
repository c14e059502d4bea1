"""What a real CT background holds, for node insertion: a tissue map, landmarks and node stations.

* :mod:`.tissue_map`: the tissue classes of every voxel (:func:`classify_background`);
* :mod:`.landmarks`: spine, trachea, carina, aorta and aortic bifurcation (:func:`find_landmarks`);
* :mod:`.stations`: where nodes live, as voxel masks built from the landmarks (:func:`station_masks`).

Arrays are (z, y, x) with z increasing superior... only when the geometry says so: every direction here is
taken from the geometry (LPS world), never from the array order.
"""

from lymphcad.phantom.background.landmarks import Landmarks, find_landmarks
from lymphcad.phantom.background.stations import (
    STATION_BY_NAME,
    STATIONS,
    StationSpec,
    abdominal_slices,
    background_region,
    mediastinum,
    station_masks,
)
from lymphcad.phantom.background.tissue_map import (
    CLASS_NAMES,
    FORBIDDEN,
    NODE_HOST,
    THICK_RADIUS_MM,
    Tissue,
    classify_background,
    smooth_hu,
)

__all__ = [
    "CLASS_NAMES",
    "FORBIDDEN",
    "NODE_HOST",
    "STATIONS",
    "STATION_BY_NAME",
    "THICK_RADIUS_MM",
    "Landmarks",
    "StationSpec",
    "Tissue",
    "abdominal_slices",
    "background_region",
    "classify_background",
    "find_landmarks",
    "mediastinum",
    "smooth_hu",
    "station_masks",
]
