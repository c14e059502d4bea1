"""Licence and citations of the real CT backgrounds insertion writes into (../shared/data/real-ct,
SOURCES.md): they travel with every inserted cohort in its dataset.json."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from lymphcad.citations import TCIA_CITATION

CRLM_CITATION: Final = (
    "Simpson, A. L., Peoples, J., Creasy, J. M., Fichtinger, G., Gangai, N., Lasso, A., Keshava Murthy, K. N., Shia, J., "
    "D'Angelica, M. I., & Do, R. K. G. (2023). Preoperative CT and Survival Data for Patients Undergoing Resection of "
    "Colorectal Liver Metastases (Colorectal-Liver-Metastases) (Version 2) [Data set]. The Cancer Imaging Archive. "
    "https://doi.org/10.7937/QXK2-QG03"
)
LIDC_CITATION: Final = (
    "Armato SG III, McLennan G, Bidaut L, et al. Data from LIDC-IDRI [Data set]. The Cancer Imaging Archive. "
    "https://doi.org/10.7937/K9/TCIA.2015.LO9QL9SX"
)

CMB_CRC_CITATION: Final = (
    "Cancer Moonshot Biobank - Colorectal Cancer Collection (CMB-CRC) [Data set]. The Cancer Imaging Archive. "
    "https://doi.org/10.7937/djg7-gz87"
)
ACRIN_FLT_BREAST_CITATION: Final = (
    "Kinahan P, Perlman D, Wahl R, et al. (2017). Data from ACRIN-FLT-Breast [Data set]. The Cancer Imaging "
    "Archive. https://doi.org/10.7937/K9/TCIA.2017.ol20zmxg"
)

#: licence and citations by a path fragment of ../shared/data/real-ct (see its SOURCES.md)
BACKGROUND_SOURCES: Final = (
    (
        "cmb-crc",
        "CC BY 4.0 (TCIA CMB-CRC; https://creativecommons.org/licenses/by/4.0/)",
        [CMB_CRC_CITATION, TCIA_CITATION],
    ),
    (
        "acrin-flt-breast",
        "CC BY 3.0 (TCIA ACRIN-FLT-Breast; https://creativecommons.org/licenses/by/3.0/)",
        [ACRIN_FLT_BREAST_CITATION, TCIA_CITATION],
    ),
    (
        "crlm-ct",
        "CC BY 4.0 (TCIA Colorectal-Liver-Metastases; https://creativecommons.org/licenses/by/4.0/)",
        [CRLM_CITATION, TCIA_CITATION],
    ),
    (
        "totalsegmentator",
        "Apache-2.0 (wasserth/TotalSegmentator test data, repository licence)",
        [
            "Wasserthal J, Breit H-C, Meyer MT, et al. TotalSegmentator: robust segmentation of 104 anatomic structures in CT images. "
            "Radiol Artif Intell 2023;5(5):e230024. doi:10.1148/ryai.230024 (test data from github.com/wasserth/TotalSegmentator)"
        ],
    ),
    (
        "mirp-lidc-idri",
        "CC BY 3.0 (TCIA LIDC-IDRI, via oncoray/mirp test data)",
        [LIDC_CITATION, TCIA_CITATION],
    ),
    (
        "lungmask",
        "Apache-2.0 repository; pixel data from TCIA LIDC-IDRI (CC BY 3.0)",
        [LIDC_CITATION, TCIA_CITATION],
    ),
    (
        "dicom-numpy",
        "MIT by inclusion (innolitics/dicom-numpy test data; origin undocumented)",
        ["innolitics/dicom-numpy test data"],
    ),
    ("dcmqi", "BSD-3-Clause (QIICR/dcmqi test data; origin undocumented)", ["QIICR/dcmqi test data"]),
)


def background_source(path: Path) -> tuple[str, list[str]]:
    """Licence and citations of a background, from its location under shared/data/real-ct."""
    text = str(path.resolve())
    for key, lic, cites in BACKGROUND_SOURCES:
        if key in text:
            return lic, list(cites)
    return "unknown (see the background's own licence)", [f"background CT {path.name}"]
