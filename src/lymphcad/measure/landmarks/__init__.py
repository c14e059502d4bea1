"""Anatomical landmarks found in the CT itself by image analysis (no model): the body, the airway (trachea,
carina, main bronchi) from air, the aorta (descending, arch top, abdominal course, bifurcation) from the
contrast-enhanced lumen, the spine and the diaphragm domes.

The CT is first viewed on a world-aligned LPS grid at about ``WORK_MM`` in-plane (array axes = world z, y, x,
increasing towards head, posterior and patient left): an axial or permuted/flipped grid is transposed and
flipped by :func:`lymphcad.geometry.reorient_to_lps` (no interpolation), an oblique one is resampled. Every landmark is returned in world LPS mm.
A landmark that is not found is None and :attr:`Landmarks.notes` says why; the station rules then say
"unknown" for what depends on it.

Modules: :mod:`.view` (the working view, the :class:`Landmarks` record and the shared helpers), :mod:`.airway`,
:mod:`.aorta`, :mod:`.skeleton` (spine, lungs, diaphragm domes) and :mod:`.find` (all of them for one CT).
"""

from lymphcad.measure.landmarks.airway import AIR_LUMEN_HU, BRONCHUS_LENGTH_MM, TRACHEA_AREA_MM2
from lymphcad.measure.landmarks.aorta import (
    ABDOMINAL_AORTA_MM,
    AORTA_CORE_MM,
    AORTA_GAP_SLICES,
    AORTA_MIN_R_MM,
    AORTA_STEP_MM,
    ASCENDING_LEFT_MM,
    ENHANCED_HU,
    SEED_STEP_MM,
    SHORT_TRACK_MM,
    WEAK_ENHANCED_HU,
)
from lymphcad.measure.landmarks.find import find_landmarks
from lymphcad.measure.landmarks.skeleton import BONE_HU, DOME_LATERAL_MM
from lymphcad.measure.landmarks.view import (
    BODY_HU,
    WORK_MM,
    WORK_Z_MM,
    AxialView,
    FloatArray,
    Landmarks,
    axial_view,
)

__all__ = [
    "ABDOMINAL_AORTA_MM",
    "AIR_LUMEN_HU",
    "AORTA_CORE_MM",
    "AORTA_GAP_SLICES",
    "AORTA_MIN_R_MM",
    "AORTA_STEP_MM",
    "ASCENDING_LEFT_MM",
    "BODY_HU",
    "BONE_HU",
    "BRONCHUS_LENGTH_MM",
    "DOME_LATERAL_MM",
    "ENHANCED_HU",
    "SEED_STEP_MM",
    "SHORT_TRACK_MM",
    "TRACHEA_AREA_MM2",
    "WEAK_ENHANCED_HU",
    "WORK_MM",
    "WORK_Z_MM",
    "AxialView",
    "FloatArray",
    "Landmarks",
    "axial_view",
    "find_landmarks",
]
