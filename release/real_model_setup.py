"""What the real-anatomy recipe, its model card and the realism benchmark share: the backgrounds, seeds and
where a run keeps its weights (one place, so the three scripts cannot disagree)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

REPO = Path(__file__).resolve().parents[1]
REAL_CT = Path(os.environ.get("LYMPHCAD_SHARED", str(REPO.parent / "shared"))) / "data" / "real-ct"

TRAIN_DIFFICULTIES: Final = (0.25, 0.5, 0.75)
TRAIN_SEEDS: Final = {0.25: 101, 0.5: 102, 0.75: 103}
#: every volumetric chest/abdominal CT in shared/data/real-ct that is neither holdout nor a test background
#: (name → path under real-ct). Not used: slabs thinner than a training patch (mirp-lidc-idri-0314: 24 mm,
#: a patch spans 64 mm), single or scattered slices (dcmqi, lungmask, dicom-numpy, cornerstone), head CT.
TRAIN_BACKGROUNDS: Final = {
    "crlm1004": "crlm-ct/CRLM-CT-1004",
    "ts_abdomen": "totalsegmentator/example_ct.nii.gz",
    "ts_upper_abdomen": "totalsegmentator/example_ct_dicom",
    "cmbcrc_chest": "cmb-crc/MSB-01068-chest",
    "acrin001_abdomen": "acrin-flt-breast/001-abdomen",
    "acrin001_chest": "acrin-flt-breast/001-chest",
    "acrin013_chest": "acrin-flt-breast/013-chest",
}
#: the realism benchmark's test backgrounds (never trained on): two chest (holdout/) and one abdomen
TEST_BACKGROUNDS: Final = {
    "ts_chest_pulmonary": "holdout/totalsegmentator-chest/pulmonary_ct_cropped.nii.gz",
    "ts_chest_aorta": "holdout/totalsegmentator-chest/aorta_ct_cropped.nii.gz",
    "crlm1006": "crlm-ct/CRLM-CT-1006",
}
#: the region each test background's nodes are inserted at (the holdout crops show little lung, so the
#: insertion's own region guess is not trusted for them)
TEST_REGIONS: Final = {
    "ts_chest_pulmonary": "mediastinal",
    "ts_chest_aorta": "mediastinal",
    "crlm1006": "abdominal",
}
#: chest backgrounds seen in training, tested with the insertion method and formation the model never saw
#: (held out two ways, not by background): the insertion finds no room for nodes in the holdout chest crops
SEEN_CHEST_TESTS: Final = {
    "cmbcrc_chest": "cmb-crc/MSB-01068-chest",
    "acrin013_chest": "acrin-flt-breast/013-chest",
}
TRAIN_FORMATION: Final = "additive"
#: the insertion placement of the training and calibration cohorts: the redraw-at-once placement drew the
#: cohorts of v5-v8, and reproducing them (release/reproduce_default_model.py) needs it; a next recipe turns
#: it on with new --data and --calibration folders (lymphcad.phantom.placement: sizes then follow the marks)
KEEP_SIZE: Final = False
INSERT_SEED: Final = 1200
PHANTOM_CASES: Final = 20
#: calibration cohorts: fresh nodes (both formations) in the training backgrounds and a fresh phantom
#: cohort, never trained on and disjoint from the realism benchmark's test data
CALIB_SEED: Final = 5200
CALIB_INSERT_CASES: Final = 4
CALIB_PHANTOM_CASES: Final = 12


def model_dir(run: Path, snapshot: int | None) -> Path:
    """The weights a call works on: the run's last (``run/model``) or a validated epoch's snapshot."""
    return run / "model" if snapshot is None else run / "snapshots" / f"epoch_{snapshot:04d}"
