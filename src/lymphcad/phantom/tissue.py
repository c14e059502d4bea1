"""Tissue classes of the phantom's tissue map (``extra/<case>_tissue.nii.gz``, uint8)."""

from __future__ import annotations

from typing import Final


class Tissue:
    """Tissue class ids (stable: they are written to files)."""

    AIR: Final = 0
    SKIN: Final = 1
    FAT_SUBCUT: Final = 2
    FAT_VISC: Final = 3  # mediastinal / retroperitoneal / mesenteric fat: where nodes live
    MUSCLE: Final = 4
    BONE_CORTEX: Final = 5
    BONE_TRAB: Final = 6
    LUNG: Final = 7
    AIRWAY_LUMEN: Final = 8
    AIRWAY_WALL: Final = 9
    ARTERY: Final = 10
    VEIN: Final = 11
    VEIN_POOR: Final = 12  # poorly enhanced small veins, azygos/hemiazygos, gonadal: node mimics
    HEART_BLOOD: Final = 13
    MYOCARDIUM: Final = 14
    ESOPHAGUS: Final = 15
    LIVER: Final = 16
    SPLEEN: Final = 17
    PANCREAS: Final = 18
    KIDNEY: Final = 19
    ADRENAL: Final = 20
    URETER: Final = 21
    BOWEL_WALL: Final = 22
    BOWEL_CONTENT: Final = 23
    BOWEL_COLLAPSED: Final = 24
    STOMACH: Final = 25
    BLADDER: Final = 26
    FLUID: Final = 27  # pericardial recess / free fluid
    THYMUS: Final = 28
    CSF: Final = 29
    DISC: Final = 30
    NODE: Final = 31  # enlarged node (measured SAD >= 10 mm)
    NODE_SMALL: Final = 32
    STRANDING: Final = 33
    METAL: Final = 34
    STOOL: Final = 35
    LUNG_VESSEL: Final = 36
    CRUS: Final = 37
    ARM: Final = 38


#: the short name node placement and image formation use
T = Tissue

NAMES: Final = {v: k.lower() for k, v in vars(Tissue).items() if not k.startswith("_") and isinstance(v, int)}

#: classes a node may occupy (it displaces fat only)
NODE_HOST: Final = (T.FAT_VISC, T.STRANDING)
#: classes of node-like soft tissue (for "nearest structure" and CNR bookkeeping)
SOFT_TISSUE: Final = (
    T.MUSCLE,
    T.VEIN_POOR,
    T.ESOPHAGUS,
    T.BOWEL_COLLAPSED,
    T.ADRENAL,
    T.URETER,
    T.CRUS,
    T.AIRWAY_WALL,
    T.BOWEL_WALL,
    T.MYOCARDIUM,
    T.PANCREAS,
)
